//! The S3 object store against a real S3-compatible server (moto), checked with an independent
//! client (boto3).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::clamd::{scan_env, Clamd};
use common::s3::S3;
use common::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
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
    // No clamd where the nodes look for one.
    let probe = format!("unix:{}", dir.path().join("no-clamd.ctl").display());
    let extra = [("WHARF_SCAN_CLAMD_PROBE", probe.as_str())];
    let n0 = start_node(&dir.path().join("n0"), &s3, &extra, &[]);
    let join = join_args(&n0);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let n1 = start_node(&dir.path().join("n1"), &s3, &extra, &join);
    let n2 = start_node(&dir.path().join("n2"), &s3, &extra, &join);
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
    // No scanner has checked it (none anywhere): served unscanned, but no presigned URL (see
    // the scanning tests below for URLs of clean files).
    let link = json(
        n0.get(&t, &format!("/v1/files/{fid}/download-url"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&link, 409, "not_scanned");
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
    // Long enough that both uploads have parts in S3 before the second expires, even on a
    // loaded machine; each upload's multipart upload is then watched by its key.
    let node = start_node(dir.path(), &s3, &[("WHARF_UPLOAD_EXPIRY_SECS", "12")], &[]);
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
    let has = |id: &str| s3.multipart_keys().iter().any(|k| k.ends_with(id));
    // Both uploads have parts in S3 once their chunks are offloaded.
    wait_until("two multipart uploads in S3", 20, || {
        has(&ids[0]) && has(&ids[1])
    })
    .await;

    let r = node
        .delete(&t, &format!("/v1/uploads/{}", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_until("the aborted upload's multipart upload to go", 20, || {
        !has(&ids[0])
    })
    .await;
    wait_until("the expired upload's multipart upload to go", 40, || {
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

async fn download_url(node: &Node, t: &str, id: &str) -> (StatusCode, Value) {
    json(
        node.get(t, &format!("/v1/files/{id}/download-url"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn wait_scan(node: &Node, t: &str, id: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, f) = json(
            node.get(t, &format!("/v1/files/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if f["scan"] == want {
            return f;
        }
        assert!(Instant::now() < deadline, "scan never became {want}: {f}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs `url` with curl (no credentials): the HTTP status and, if 200, the body.
fn curl(url: &str, out: &std::path::Path) -> (u16, Option<Vec<u8>>) {
    let _ = std::fs::remove_file(out);
    let o = Command::new("curl")
        .args(["-s", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", url])
        .output()
        .unwrap();
    let code: u16 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    (code, (code == 200).then(|| std::fs::read(out).unwrap()))
}

/// The `X-Amz-Expires` of a presigned URL.
fn expires_secs(url: &str) -> u64 {
    let q = url.split_once('?').unwrap().1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Expires="))
        .unwrap_or_else(|| panic!("no X-Amz-Expires in {url}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_urls_are_only_for_clean_files_and_die_with_a_quarantined_object() {
    let s3 = S3::shared();
    let mut clamd = Clamd::unstarted();
    let dir = tempfile::tempdir().unwrap();
    let mut env = s3.env();
    env.extend(scan_env(&clamd.addr()));
    let node = spawn_with(&dir.path().join("n"), &env, &[], &[]);
    let t = node.token("gus", Tier::Basic);

    // clamd is down: the file waits, and no URL is handed out for it.
    let data = random_bytes(MIB + 7, 31);
    let f = node.upload(&t, "later-bad.bin", &data).await;
    let id = f["id"].as_str().unwrap().to_string();
    assert_eq!(f["scan"], "pending");
    assert_error(&download_url(&node, &t, &id).await, 409, "scan_pending");

    // Clean: a URL, living store.presign_ttl_secs (300 s), at most the 15-minute cap.
    clamd.spawn();
    wait_scan(&node, &t, &id, "clean", 30).await;
    let (st, link) = download_url(&node, &t, &id).await;
    assert_eq!(st, StatusCode::OK, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    assert_eq!(expires_secs(&url), 300);
    let out = dir.path().join("presigned.bin");
    let (code, body) = curl(&url, &out);
    assert_eq!(code, 200);
    assert!(
        body.unwrap() == data,
        "the presigned URL served other bytes"
    );
    let keys = s3.object_keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].clone();
    assert!(key.starts_with("uploads/"), "{key}");

    // New signatures find it infected: quarantined, the URL handed out before stops working.
    clamd.stop();
    clamd.add_signature(&data, "Wharf-Test-Signature");
    clamd.spawn();
    let admin = node.token("root", Tier::Admin);
    let r = node
        .post(&admin, "/v1/admin/rescan")
        .json(&json!({ "file": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await.1["requeued"], 1);
    let f = wait_scan(&node, &t, &id, "infected", 30).await;
    assert_eq!(f["signature"], "Wharf-Test-Signature.UNOFFICIAL");
    let moved = format!("quarantine/{key}");
    wait_until("the object to move under quarantine/", 20, || {
        s3.object_keys() == vec![moved.clone()]
    })
    .await;
    let (code, _) = curl(&url, &out);
    assert!(code == 404 || code == 403, "the old URL answered {code}");
    assert!(s3.object_bytes(&moved, &dir.path().join("q.bin")) == data);
    assert_error(&download_url(&node, &t, &id).await, 403, "infected");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lifetime_of_presigned_urls_is_capped() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let base = s3.env();
    let base: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut e = base.clone();
        e.extend_from_slice(extra);
        e
    };
    // Over the default cap (15 minutes), or a cap over S3's 7 days: refused at start.
    let err = start_must_fail(
        &dir.path().join("a"),
        &with(&[("WHARF_STORE_PRESIGN_TTL_SECS", "901")]),
        &[],
    );
    assert!(err.contains("store.presign_max_ttl_secs (900)"), "{err}");
    let err = start_must_fail(
        &dir.path().join("b"),
        &with(&[("WHARF_STORE_PRESIGN_MAX_TTL_SECS", "604801")]),
        &[],
    );
    assert!(err.contains("store.presign_max_ttl_secs"), "{err}");

    // Within the cap, the URL lives what the config says (scanning off: unscanned files get
    // URLs too).
    let node = Node::spawn(
        &dir.path().join("c"),
        &with(&[
            ("WHARF_SCAN_POLICY", "off"),
            ("WHARF_STORE_PRESIGN_MAX_TTL_SECS", "120"),
            ("WHARF_STORE_PRESIGN_TTL_SECS", "120"),
        ]),
        &[],
    );
    let t = node.token("hal", Tier::Basic);
    let f = node.upload(&t, "off.bin", b"scanning is off").await;
    assert_eq!(f["scan"], "unscanned");
    let (st, link) = download_url(&node, &t, f["id"].as_str().unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{link}");
    let url = link["url"].as_str().unwrap();
    assert_eq!(expires_secs(url), 120);
    let (code, body) = curl(url, &dir.path().join("off.bin"));
    assert_eq!(
        (code, body.as_deref()),
        (200, Some(&b"scanning is off"[..]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_chunks_cannot_all_pass_the_staging_limit() {
    // A moto of our own, frozen once the node is up: nothing leaves staging.
    let s3 = S3::own();
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        dir.path(),
        &s3,
        &[
            ("WHARF_STORE_REQUEST_TIMEOUT_SECS", "2"),
            ("WHARF_UPLOAD_MAX_STAGING_BYTES", &(2 * 8 * MIB).to_string()),
        ],
        &[],
    );
    let t = node.token("dora", Tier::Basic);
    let data = random_bytes(8 * 8 * MIB, 33);
    let (_, up) = node
        .create(&t, json!({"name": "many.bin", "size": data.len()}))
        .await;
    let id = up["upload_id"].as_str().unwrap().to_string();
    s3.signal("-STOP");
    // Eight chunks at once against room for two: the check and the count are one step.
    let sends = data
        .chunks(8 * MIB)
        .enumerate()
        .map(|(i, c)| node.try_put_chunk(&t, &id, i, c));
    let answers = futures::future::join_all(sends).await;
    let accepted = answers
        .iter()
        .filter(|a| matches!(a, Ok(StatusCode::NO_CONTENT)))
        .count();
    let full = answers
        .iter()
        .filter(|a| matches!(a, Ok(StatusCode::SERVICE_UNAVAILABLE)))
        .count();
    s3.signal("-CONT");
    assert!(
        (1..=2).contains(&accepted) && accepted + full == 8,
        "{answers:?}"
    );
    let staged = staged_bytes(&dir.path().join("staging"));
    assert!(staged <= 2 * 8 * MIB as u64, "{staged} bytes staged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_being_received_still_counts_when_staging_is_recounted() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    // Room for one chunk and a little; staging is recounted from the disk every second.
    let node = start_node(
        dir.path(),
        &s3,
        &[
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
            (
                "WHARF_UPLOAD_MAX_STAGING_BYTES",
                &(8 * MIB + 64 * 1024).to_string(),
            ),
        ],
        &[],
    );
    let t = node.token("ezra", Tier::Basic);
    let data = random_bytes(2 * 8 * MIB, 34);
    let (_, up) = node
        .create(&t, json!({"name": "two.bin", "size": data.len()}))
        .await;
    let id = up["upload_id"].as_str().unwrap().to_string();
    // Chunk 0 sends one byte, then stalls through several recounts (its `.part` holds a byte).
    let first = data[..8 * MIB].to_vec();
    let slow = node
        .put(&t, &format!("/v1/uploads/{id}/chunks/0"))
        .header("content-length", (8 * MIB).to_string())
        .header("x-wharf-blake3", blake3::hash(&first).to_hex().to_string())
        .body(stalled_body(&first, Duration::from_millis(3500)))
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        node.try_put_chunk(&t, &id, 1, &data[8 * MIB..])
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a recount forgot the chunk being received"
    );
    assert_eq!(
        slow.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // Once chunk 0 is in the object store, its room is given back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = node
            .try_put_chunk(&t, &id, 1, &data[8 * MIB..])
            .await
            .unwrap();
        if st == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "staging never made room again");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (st, f) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["blake3"], blake3::hash(&data).to_hex().as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_bodies_count_against_the_staging_limit() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    // Room for one 8 MiB body and a little.
    let node = start_node(
        dir.path(),
        &s3,
        &[(
            "WHARF_UPLOAD_MAX_STAGING_BYTES",
            &(8 * MIB + 64 * 1024).to_string(),
        )],
        &[],
    );
    let t = node.token("fay", Tier::Basic);
    // A one-request upload of 8 MiB sends one byte, then stalls for 5 s: the checks below
    // run in that window.
    let big = random_bytes(8 * MIB, 35);
    let slow = node
        .post(&t, "/v1/files?name=big.bin")
        .header("content-length", (8 * MIB).to_string())
        .body(stalled_body(&big, Duration::from_millis(5000)))
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // While its body is staged, neither a chunk nor another one-request body fits.
    let small = random_bytes(MIB, 36);
    let r = node
        .post(&t, "/v1/files?name=small.bin")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_error(&json(r).await, 503, "unavailable");
    let chunk = random_bytes(64 * 1024 + 1, 37);
    let (_, up) = node
        .create(&t, json!({"name": "chunked.bin", "size": chunk.len()}))
        .await;
    let id = up["upload_id"].as_str().unwrap().to_string();
    assert_eq!(
        node.try_put_chunk(&t, &id, 0, &chunk).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a chunk passed the staging limit while a one-request body was staged"
    );

    let (st, f) = json(slow.await.unwrap().unwrap()).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(f["blake3"], blake3::hash(&big).to_hex().as_str());
    // Stored, its room is given back: both now get in.
    let r = node
        .post(&t, "/v1/files?name=small.bin")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", json(r).await);
    assert_eq!(
        node.try_put_chunk(&t, &id, 0, &chunk).await.unwrap(),
        StatusCode::NO_CONTENT
    );
    let (st, f) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{f}");
}

/// A request body that sends `data`'s first byte, waits `stall`, then sends the rest.
fn stalled_body(data: &[u8], stall: Duration) -> reqwest::Body {
    let (head, rest) = (data[..1].to_vec(), data[1..].to_vec());
    let frames =
        futures::stream::iter([head, rest])
            .enumerate()
            .then(move |(i, frame)| async move {
                if i == 1 {
                    tokio::time::sleep(stall).await;
                }
                Ok::<_, std::io::Error>(frame)
            });
    reqwest::Body::wrap_stream(frames)
}

fn staged_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        n += if p.is_dir() {
            staged_bytes(&p)
        } else {
            e.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    n
}
