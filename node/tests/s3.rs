//! The S3 object store against a real S3-compatible server (moto), checked with an independent
//! client (boto3).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::s3::S3;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_raft::model::Tier;

fn start_node(dir: &std::path::Path, s3: &S3, extra: &[(&str, &str)], args: &[&str]) -> Node {
    spawn_with(dir, &s3.env(), extra, args)
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_from_three_nodes_become_one_s3_object() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let n0 = start_node(&dir.path().join("n0"), &s3, &[], &[]);
    let join = join_args(&n0);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let n1 = start_node(&dir.path().join("n1"), &s3, &[], &join);
    let n2 = start_node(&dir.path().join("n2"), &s3, &[], &join);
    let nodes = [&n0, &n1, &n2];

    let t = n0.token("alice", Tier::Basic);
    let data = random_bytes(2 * 8 * MIB + 99_999, 11);
    let (st, up) = n0
        .create(&t, json!({"name": "s3.bin", "size": data.len()}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let id = up["upload_id"].as_str().unwrap();
    for (i, chunk) in data.chunks(8 * MIB).enumerate() {
        assert_eq!(
            nodes[i].put_chunk(&t, id, i, chunk).await,
            StatusCode::NO_CONTENT
        );
    }
    let (st, file) = n1.complete(&t, id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    let fid = file["id"].as_str().unwrap();

    // One object, read back with boto3, equal to the source; no multipart upload left.
    assert_eq!(s3.object_keys(), vec![format!("uploads/{id}")]);
    let copy = s3.object_bytes(&format!("uploads/{id}"), &dir.path().join("copy.bin"));
    assert!(copy == data, "the S3 object differs from the source");
    assert_eq!(s3.multipart_uploads(), 0);

    // Download through a node, with Range passed through, and through a presigned URL.
    assert!(n2.download(&t, fid).await == data);
    let r = n2
        .get(&t, &format!("/v1/files/{fid}/content"))
        .header("Range", "bytes=8388600-8388700")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), &data[8_388_600..=8_388_700]);
    let (st, link) = json(
        n0.get(&t, &format!("/v1/files/{fid}/download-url"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{link}");
    let url = link["url"].as_str().unwrap();
    let out = dir.path().join("presigned.bin");
    let curl = Command::new("curl")
        .args(["-sf", url, "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(curl.success(), "curl of the presigned URL failed");
    assert!(std::fs::read(&out).unwrap() == data);
    // Another user gets no URL for it.
    let other = n0.token("mallory", Tier::Basic);
    let r = n0
        .get(&other, &format!("/v1/files/{fid}/download-url"))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 404, "not_found");

    // A one-chunk file is a single PutObject.
    let small = n2.upload(&t, "small", b"tiny file").await;
    assert!(n0.download(&t, small["id"].as_str().unwrap()).await == b"tiny file");
    assert_eq!(s3.multipart_uploads(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_and_expiry_leave_no_multipart_upload_behind() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), &s3, &[("WHARF_UPLOAD_EXPIRY_SECS", "3")], &[]);
    let t = node.token("bob", Tier::Basic);
    let data = random_bytes(3 * 8 * MIB, 3);
    let mut ids = Vec::new();
    for name in ["aborted", "expired"] {
        let (_, up) = node
            .create(&t, json!({"name": name, "size": data.len()}))
            .await;
        let id = up["upload_id"].as_str().unwrap().to_string();
        assert_eq!(
            node.put_chunk(&t, &id, 0, &data[..8 * MIB]).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            node.put_chunk(&t, &id, 1, &data[8 * MIB..16 * MIB]).await,
            StatusCode::NO_CONTENT
        );
        ids.push(id);
    }
    // Both uploads have parts in S3 once their chunks are offloaded.
    wait_until("two multipart uploads in S3", 20, || {
        s3.multipart_uploads() == 2
    })
    .await;

    let r = node
        .delete(&t, &format!("/v1/uploads/{}", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_until("the aborted upload's multipart upload to go", 20, || {
        s3.multipart_uploads() == 1
    })
    .await;
    wait_until("the expired upload's multipart upload to go", 30, || {
        s3.multipart_uploads() == 0
    })
    .await;
    assert_eq!(node.status(&t, &ids[1]).await.1["state"], "expired");
    assert!(s3.object_keys().is_empty());
    assert_eq!(node.usage(&t).await["reserved"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_nothing_records_is_aborted_and_a_recorded_one_kept() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    // What a node killed between CreateMultipartUpload and recording its id leaves behind.
    s3.boto(&format!(
        "s3.create_multipart_upload(Bucket={:?}, Key='uploads/orphan')",
        s3.bucket
    ));
    let node = start_node(
        dir.path(),
        &s3,
        &[("WHARF_UPLOAD_ORPHAN_GRACE_SECS", "2")],
        &[],
    );
    let t = node.token("bob", Tier::Basic);
    let data = random_bytes(2 * 8 * MIB, 4);
    let (_, up) = node
        .create(&t, json!({"name": "kept", "size": data.len()}))
        .await;
    let id = up["upload_id"].as_str().unwrap().to_string();
    assert_eq!(
        node.put_chunk(&t, &id, 0, &data[..8 * MIB]).await,
        StatusCode::NO_CONTENT
    );
    wait_until("the orphan to be aborted, the recorded one kept", 30, || {
        let keys = s3.boto(&format!(
            "print(sorted(u['Key'] for u in s3.list_multipart_uploads(Bucket={:?}).get('Uploads', [])))",
            s3.bucket
        ));
        keys.trim() == format!("['uploads/{id}']")
    })
    .await;
    assert_eq!(
        node.put_chunk(&t, &id, 1, &data[8 * MIB..]).await,
        StatusCode::NO_CONTENT
    );
    let (st, file) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    assert_eq!(node.download(&t, file["id"].as_str().unwrap()).await, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_during_an_upload_is_survived() {
    // A moto of our own: the test freezes it (SIGSTOP), as a network black hole would.
    let s3 = S3::own();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        dir.path(),
        &s3,
        &[
            ("WHARF_STORE_REQUEST_TIMEOUT_SECS", "2"),
            ("WHARF_UPLOAD_MAX_STAGING_BYTES", &(12 * MIB).to_string()),
        ],
        &[],
    );
    let t = node.token("carl", Tier::Basic);
    let data = random_bytes(3 * 8 * MIB - 5, 21);
    let (_, up) = node
        .create(
            &t,
            json!({"name": "outage.bin", "size": data.len(),
                            "blake3": blake3::hash(&data).to_hex().to_string()}),
        )
        .await;
    let id = up["upload_id"].as_str().unwrap().to_string();
    let chunks: Vec<&[u8]> = data.chunks(8 * MIB).collect();
    assert_eq!(
        node.put_chunk(&t, &id, 0, chunks[0]).await,
        StatusCode::NO_CONTENT
    );
    wait_until("chunk 0 in S3", 20, || s3.multipart_uploads() == 1).await;

    s3.signal("-STOP");
    // Chunks are still staged and acknowledged while S3 is away...
    assert_eq!(
        node.put_chunk(&t, &id, 1, chunks[1]).await,
        StatusCode::NO_CONTENT
    );
    // ...until the staging limit: then 503 with Retry-After, and nothing recorded.
    let r = node
        .put(&t, &format!("/v1/uploads/{id}/chunks/2"))
        .body(chunks[2].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_error(&json(r).await, 503, "unavailable");
    assert_eq!(node.status(&t, &id).await.1["received"], json!([0, 1]));
    tokio::time::sleep(Duration::from_secs(3)).await;

    s3.signal("-CONT");
    // Offload resumes; the client's retry of chunk 2 gets in once staging drains.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        node.try_put_chunk(&t, &id, 2, chunks[2]).await,
        Ok(StatusCode::NO_CONTENT)
    ) {
        assert!(
            Instant::now() < deadline,
            "chunk 2 never accepted after S3 came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (st, file) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    assert!(node.download(&t, file["id"].as_str().unwrap()).await == data);
    let copy = s3.object_bytes(&format!("uploads/{id}"), &dir.path().join("copy.bin"));
    assert!(copy == data, "the S3 object differs after the outage");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_bucket_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("WHARF_STORE_KIND", "s3"),
        ("WHARF_STORE_ENDPOINT", endpoint.as_str()),
        ("WHARF_STORE_BUCKET", "no-such-bucket"),
        ("WHARF_STORE_FORCE_PATH_STYLE", "true"),
        ("WHARF_STORE_REQUEST_TIMEOUT_SECS", "2"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let err = start_must_fail(dir.path(), &env, &[]);
    assert!(
        err.contains("cannot use S3 bucket \"no-such-bucket\""),
        "{err}"
    );
}
