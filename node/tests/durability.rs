//! Durability is proven by SIGKILL, not by reading code.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_raft::model::Tier;

#[tokio::test]
async fn sigkill_mid_upload_then_resume_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(3 * 8 * MIB - 1000, 42);
    let (st, up) = node
        .create(
            &t,
            json!({"name": "resume.bin", "size": data.len(),
                   "blake3": blake3::hash(&data).to_hex().to_string()}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let id = up["upload_id"].as_str().unwrap().to_string();
    let chunks: Vec<&[u8]> = data.chunks(8 * MIB).collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        node.put_chunk(&t, &id, 0, chunks[0]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        node.put_chunk(&t, &id, 2, chunks[2]).await,
        StatusCode::NO_CONTENT
    );

    // Killed at once after the acknowledgements: no graceful anything.
    let node = node.kill9().restart();
    let (st, status) = node.status(&t, &id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(status["state"], "uploading");
    assert_eq!(
        status["received"],
        json!([0, 2]),
        "acknowledged chunks lost: {status}"
    );
    assert_eq!(status["missing"], json!([1]));

    assert_eq!(
        node.put_chunk(&t, &id, 1, chunks[1]).await,
        StatusCode::NO_CONTENT
    );
    let (st, file) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    let fid = file["id"].as_str().unwrap().to_string();
    assert!(
        node.download(&t, &fid).await == data,
        "bytes differ after resume"
    );

    // A completion acknowledgement survives SIGKILL too, and a restart keeps everything.
    let node = node.kill9().restart();
    assert!(
        node.download(&t, &fid).await == data,
        "bytes differ after restart"
    );
    let (_, list) = json(node.get(&t, "/v1/files").send().await.unwrap()).await;
    assert_eq!(list["files"][0]["id"], fid.as_str());
    let usage = node.usage(&t).await;
    assert_eq!(usage["used"], data.len() as u64);
    assert_eq!(usage["reserved"], 0);
    // Completing again answers with the same file, not a second one.
    let (st, again) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(again["id"], fid.as_str());
}

#[tokio::test]
async fn completed_files_survive_restarts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot every 20 entries so that the log is purged and restarts load a snapshot.
    let env = [("WHARF_RAFT_SNAPSHOT_EVERY", "20")];
    let node = Node::start_with(dir.path(), &env);
    let t = node.token("frank", Tier::Basic);
    let mut files = Vec::new();
    for i in 0..12u64 {
        let data = random_bytes(1000 + i as usize * 7919, i);
        let f = node.upload(&t, &format!("file-{i}"), &data).await;
        files.push((f["id"].as_str().unwrap().to_string(), data));
    }
    drop(node); // SIGKILL on drop
    let node = Node::start_with(dir.path(), &env);
    let (_, list) = json(node.get(&t, "/v1/files?limit=1000").send().await.unwrap()).await;
    assert_eq!(list["files"].as_array().unwrap().len(), files.len());
    for (id, data) in &files {
        assert!(node.download(&t, id).await == *data, "file {id} differs");
    }
    // Graceful stop and start again.
    let pid = node.pid();
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(node);
    let node = Node::start_with(dir.path(), &env);
    for (id, data) in &files {
        assert!(node.download(&t, id).await == *data, "file {id} differs");
    }
}
