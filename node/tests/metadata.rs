//! Metadata at scale, seen from outside: one-request small files, retention, a data dir of the
//! previous format migrated, and acknowledged writes surviving SIGKILL.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use wharf_raft::model::Tier;

async fn post_file(node: &Node, t: &str, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
    json(
        node.post(t, &format!("/v1/files?{query}"))
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_small_file_is_stored_in_one_request_and_checked_like_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("WHARF_UPLOAD_SINGLE_REQUEST_MAX", "65536"),
            ("WHARF_TIERS_BASIC_QUOTA", "60000"),
        ],
    );
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(4096, 7);
    let hash = blake3::hash(&data).to_hex().to_string();

    let r = node
        .post(
            &t,
            "/v1/files?name=report%20%281%29.pdf&mime=application%2Fpdf",
        )
        .header("x-wharf-blake3", &hash)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let location = r.headers().get("location").cloned();
    let (st, file) = json(r).await;
    assert_eq!(st, StatusCode::CREATED, "{file}");
    assert_eq!(file["name"], "report (1).pdf");
    assert_eq!(file["mime"], "application/pdf");
    assert_eq!(file["size"], 4096);
    assert_eq!(file["blake3"], hash);
    let id = file["id"].as_str().unwrap().to_string();
    assert_eq!(location.unwrap(), format!("/v1/files/{id}").as_str());
    assert!(node.download(&t, &id).await == data);
    let usage = node.usage(&t).await;
    assert_eq!(usage["used"], 4096);
    assert_eq!(usage["reserved"], 0);

    // A retry with the same idempotency key answers with the same file, counted once.
    let again = |n: &'static str| post_file(&node, &t, n, data.clone());
    let (st, a) = again("name=a.bin&idempotency_key=k1").await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = again("name=a.bin&idempotency_key=k1").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(a["id"], b["id"]);
    assert_eq!(node.usage(&t).await["used"], 8192);
    // The same key for another file is a conflict.
    let (st, c) = post_file(&node, &t, "name=other.bin&idempotency_key=k1", vec![1; 10]).await;
    assert_eq!(st, StatusCode::CONFLICT, "{c}");

    // An empty file is a file.
    let (st, empty) = post_file(&node, &t, "name=empty", Vec::new()).await;
    assert_eq!(st, StatusCode::CREATED, "{empty}");
    assert_eq!(empty["size"], 0);

    // The same errors as the multi-step path, and nothing is kept.
    assert_error(
        &post_file(&node, &t, "mime=text%2Fplain", vec![1]).await,
        400,
        "invalid_request",
    );
    assert_error(
        &post_file(&node, &t, "name=..%2F..%2Fetc%2Fpasswd", vec![1]).await,
        400,
        "invalid_name",
    );
    let wrong = "0".repeat(64);
    let r = node
        .post(&t, "/v1/files?name=x.bin")
        .header("x-wharf-blake3", &wrong)
        .body(vec![5u8; 100])
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 422, "checksum_mismatch");
    assert_error(
        &post_file(&node, &t, "name=big.bin", vec![0; 65537]).await,
        413,
        "file_too_large",
    );
    // Without a Content-Length the limit holds while the body streams in.
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(vec![0u8; 8192])),
    ));
    let r = node
        .post(&t, "/v1/files?name=streamed.bin")
        .body(chunked)
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 413, "file_too_large");
    assert_error(
        &post_file(&node, &t, "name=q.bin", vec![0; 60_000]).await,
        507,
        "quota_exceeded",
    );
    let r = node
        .post("forged.token.here", "/v1/files?name=x")
        .body(vec![1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (st, list) = json(node.get(&t, "/v1/files").send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["report (1).pdf", "a.bin", "empty"]);
    assert_eq!(node.usage(&t).await["used"], 8192);
    // Nothing but the three files' objects stays in the store (refused bodies are dropped).
    let objects = std::fs::read_dir(dir.path().join("objects/uploads"))
        .unwrap()
        .count();
    assert_eq!(
        objects, 3,
        "objects of refused or repeated requests were kept"
    );
}

#[tokio::test]
async fn wharf_put_sends_small_files_in_one_request_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let work = tempfile::tempdir().unwrap();
    for (i, addr) in [node.base.clone(), format!("quic://{}", node.quic_addr)]
        .iter()
        .enumerate()
    {
        let path = work.path().join(format!("small-{i}.txt"));
        let data = random_bytes(100_000 + i, i as u64);
        std::fs::write(&path, &data).unwrap();
        let out = wharf_cli(&[
            "put",
            "--node",
            addr,
            "--token",
            &t,
            "--ca",
            node.data_dir.join("tls/ca.pem").to_str().unwrap(),
            "--json",
            path.to_str().unwrap(),
        ]);
        let file: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
        assert_eq!(file["size"], data.len());
        let id = file["id"].as_str().unwrap();
        assert!(node.download(&t, id).await == data, "over {addr}");
    }
    // No upload session was made for them: one request each.
    let (_, uploads) = json(
        node.get(&t, "/v1/uploads?state=uploading")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(uploads["uploads"].as_array().unwrap().len(), 0);
    let (_, all) = json(
        node.get(&t, "/v1/uploads?state=stored")
            .send()
            .await
            .unwrap(),
    )
    .await;
    for u in all["uploads"].as_array().unwrap() {
        assert_eq!(u["chunk_count"], 1, "{u}");
    }
}

#[tokio::test]
async fn a_data_dir_of_format_version_0_is_migrated_and_every_file_reads_back() {
    // JSON in sled: migrated to version 1 in sled, then into fjall.
    migrated_fixture_reads_back("v0-datadir.tar.gz", &[]).await;
}

#[tokio::test]
async fn a_data_dir_of_format_version_1_is_migrated_and_every_file_reads_back() {
    // Written by the wharf before fjall (the version-0 fixture, migrated by it, and one more
    // file stored through it).
    migrated_fixture_reads_back(
        "v1-datadir.tar.gz",
        &[("v1-file.txt", "written by format version 1")],
    )
    .await;
}

/// Starts a node on the data dir in `fixture` and reads back every file it holds: the
/// version-0 fixture's, then `more` (name, content).
async fn migrated_fixture_reads_back(fixture: &str, more: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let st = std::process::Command::new("tar")
        .args(["xzf", &fixture, "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let data_dir = dir.path().join("data");
    let node = Node::start(&data_dir);
    let alice = node.token("alice", Tier::Basic);
    let (st, list) = json(node.get(&alice, "/v1/files").send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let files = list["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let mut want_names = vec![
        "doc-1.txt",
        "renamed.txt",
        "doc-4.txt",
        "doc-5.txt",
        "doc-6.txt",
        "doc-7.txt",
        "doc-8.txt",
        "same-as-1.txt",
    ];
    want_names.extend(more.iter().map(|(n, _)| *n));
    assert_eq!(names, want_names);
    for f in files {
        let name = f["name"].as_str().unwrap();
        let want = match name {
            "renamed.txt" => "content of document 2".to_string(),
            "same-as-1.txt" => "content of document 1".to_string(),
            n if more.iter().any(|(m, _)| *m == n) => {
                more.iter().find(|(m, _)| *m == n).unwrap().1.to_string()
            }
            n => format!(
                "content of document {}",
                n.trim_start_matches("doc-").trim_end_matches(".txt")
            ),
        };
        let got = node.download(&alice, f["id"].as_str().unwrap()).await;
        assert_eq!(String::from_utf8_lossy(&got), want, "{f}");
    }
    for f in ["conf", "db", "blobs"] {
        assert!(
            !data_dir.join("raft").join(f).exists(),
            "sled's {f} is left"
        );
    }
    let usage = node.usage(&alice).await;
    let more_bytes: usize = more.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(usage["used"], 8 * 21 + more_bytes);
    assert_eq!(
        usage["reserved"], 12,
        "the open upload keeps its reservation"
    );
    let (_, open) = json(
        node.get(&alice, "/v1/uploads?state=uploading")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(open["uploads"][0]["name"], "open.bin", "{open}");
    let bob = node.token("bob", Tier::Basic);
    let (_, bl) = json(node.get(&bob, "/v1/files").send().await.unwrap()).await;
    let bf = &bl["files"][0];
    assert_eq!(bf["name"], "bob.txt");
    assert_eq!(
        node.download(&bob, bf["id"].as_str().unwrap()).await,
        b"bob file"
    );
    assert_eq!(node.usage(&bob).await["quota"], 12345, "an admin's quota");
    // Files stored before the name index existed are found once the leader has indexed them
    // (`IndexEntries`, at its first sweep).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, found) = json(node.get(&alice, "/v1/search?q=renam").send().await.unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{found}");
        if found["files"][0]["name"] == "renamed.txt" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old files were never indexed: {found}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The old users are counted into the admin's usage totals (`CountUsage`, at the leader's
    // first sweep).
    let admin = node.token("root", Tier::Admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let totals = loop {
        let (st, totals) = json(node.get(&admin, "/v1/admin/usage").send().await.unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{totals}");
        if totals["complete"] == true {
            break totals;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old users were never counted: {totals}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let bob_usage = node.usage(&bob).await;
    assert_eq!(
        totals["used"],
        usage["used"].as_u64().unwrap() + bob_usage["used"].as_u64().unwrap(),
        "{totals}"
    );
    assert_eq!(totals["files"], 9 + more.len(), "{totals}");
    assert_eq!(totals["reserved"], 12, "{totals}");

    // The migrated node takes new writes, and everything survives a restart.
    let (st, f) = post_file(&node, &alice, "name=after.txt", b"after".to_vec()).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let node = node.kill9().restart();
    let (_, list) = json(node.get(&alice, "/v1/files").send().await.unwrap()).await;
    assert_eq!(list["files"].as_array().unwrap().len(), 9 + more.len());
    assert_eq!(
        node.download(&alice, f["id"].as_str().unwrap()).await,
        b"after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_small_files_survive_repeated_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every few hundred entries, so kills also land during snapshot builds.
    let env = [("WHARF_RAFT_SNAPSHOT_EVERY", "300")];
    let mut node = Node::start_with(dir.path(), &env);
    let t = node.token("alice", Tier::Basic);
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..4u64 {
        let base = node.base.clone();
        let http = node.http.clone();
        let token = t.clone();
        // Writers run until the node dies under them.
        let writers: Vec<_> = (0..16u64)
            .map(|w| {
                let (base, http, token) = (base.clone(), http.clone(), token.clone());
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    for i in 0u64.. {
                        let data = random_bytes(
                            64 + (i % 7) as usize * 100,
                            round * 1_000_000 + w * 10_000 + i,
                        );
                        let r = http
                            .post(format!("{base}/v1/files?name=r{round}-w{w}-{i}"))
                            .bearer_auth(&token)
                            .body(data.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == StatusCode::CREATED => {
                                let v: Value = r.json().await.unwrap();
                                done.push((v["id"].as_str().unwrap().to_string(), data));
                            }
                            _ => break,
                        }
                    }
                    done
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(1500 + round * 300)).await;
        let dead = node.kill9();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        node = dead.restart();
    }
    assert!(
        acknowledged.len() > 200,
        "only {} writes",
        acknowledged.len()
    );
    let listed = node.file_ids(&t, false).await;
    for (id, data) in acknowledged.iter().step_by(17) {
        assert!(listed.contains(id), "acknowledged file {id} lost");
        assert!(node.download(&t, id).await == *data, "file {id} differs");
    }
    let missing = acknowledged
        .iter()
        .filter(|(id, _)| !listed.contains(id))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged files lost",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged files, all listed after 4 SIGKILLs",
        acknowledged.len()
    );
}
