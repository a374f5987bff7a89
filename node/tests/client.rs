//! The client commands (`wharf put/get/ls/rm/status`) and the SDK behind them, against real
//! nodes, over HTTP and over QUIC: resume after a killed client, failover when a node dies.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use wharf_raft::model::Tier;

fn wharf(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "wharf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    Quic,
}

/// The node's address for `transport`, as `--node` and WHARF_ADDR take it.
fn addr(node: &Node, transport: Transport) -> String {
    match transport {
        Transport::Http => node.base.clone(),
        Transport::Quic => format!("quic://{}", node.quic_addr),
    }
}

/// The cluster CA to pin (every node of a cluster has the same).
fn ca(node: &Node) -> String {
    node.data_dir.join("tls/ca.pem").display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_ls_rm_round_trip_over_http() {
    round_trip(Transport::Http).await
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_ls_rm_round_trip_over_quic() {
    round_trip(Transport::Quic).await
}

async fn round_trip(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let token = node.token("pia", Tier::Basic);
    let state = dir.path().join("state").display().to_string();
    let (node_addr, ca) = (addr(&node, transport), ca(&node));
    let env = [
        ("WHARF_TOKEN", token.as_str()),
        ("WHARF_ADDR", node_addr.as_str()),
        ("WHARF_STATE_DIR", state.as_str()),
        ("WHARF_CA", ca.as_str()),
    ];
    let src = dir.path().join("photo.raw");
    let data = random_bytes(17 * MIB + 3, 8);
    std::fs::write(&src, &data).unwrap();

    let out = ok(&wharf(&["put", src.to_str().unwrap()], &env));
    let id = out.lines().last().unwrap().trim().to_string();
    let json_out = ok(&wharf(&["put", "--json", src.to_str().unwrap()], &env));
    let record: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(record["size"], data.len() as u64);
    assert_eq!(record["blake3"], blake3::hash(&data).to_hex().to_string());

    let listing = ok(&wharf(&["ls"], &env));
    assert!(
        listing.contains(&id) && listing.contains("photo.raw"),
        "{listing}"
    );
    let copy = dir.path().join("copy.raw");
    ok(&wharf(&["get", &id, "-o", copy.to_str().unwrap()], &env));
    assert!(std::fs::read(&copy).unwrap() == data);
    ok(&wharf(&["rm", &id], &env));
    assert!(!ok(&wharf(&["ls"], &env)).contains(&id));

    // Errors are clear and exit non-zero.
    let missing = wharf(&["get", &id, "-o", "x"], &env);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404 not_found"));
    let no_token = wharf(
        &["ls"],
        &[("WHARF_ADDR", node_addr.as_str()), ("WHARF_TOKEN", "")],
    );
    assert!(!no_token.status.success());
}

/// Waits until the upload recorded in the resume state has at least `n` chunks received.
async fn wait_received(node: &Node, token: &str, state: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(bytes) = std::fs::read(state.join("uploads.json")) {
            let map: std::collections::BTreeMap<String, Value> =
                serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(id) = map.values().next().and_then(|p| p["upload_id"].as_str()) {
                let (_, s) = node.status(token, id).await;
                if s["received"].as_array().map(|a| a.len()).unwrap_or(0) >= n {
                    return id.to_string();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the client never got {n} chunks in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sent_chunks(stderr: &[u8]) -> (u32, u32) {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains("sent "))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "sent").unwrap();
    (
        words[at + 1].parse().unwrap(),
        words[at + 3].parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_resumes_without_resending_acknowledged_chunks_over_http() {
    killed_client_resumes(Transport::Http).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_client_resumes_without_resending_acknowledged_chunks_over_quic() {
    killed_client_resumes(Transport::Quic).await
}

async fn killed_client_resumes(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let token = node.token("quin", Tier::Basic);
    let state = dir.path().join("state");
    let state_s = state.display().to_string();
    let (node_addr, ca) = (addr(&node, transport), ca(&node));
    let env = [
        ("WHARF_TOKEN", token.as_str()),
        ("WHARF_ADDR", node_addr.as_str()),
        ("WHARF_STATE_DIR", state_s.as_str()),
        ("WHARF_CA", ca.as_str()),
    ];
    let src = dir.path().join("big.bin");
    let data = random_bytes(12 * 8 * MIB, 9);
    std::fs::write(&src, &data).unwrap();

    let mut first = Command::new(env!("CARGO_BIN_EXE_wharf"));
    first.args(["put", "--parallel", "1", src.to_str().unwrap()]);
    for (k, v) in env {
        first.env(k, v);
    }
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_received(&node, &token, &state, 3).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, s) = node.status(&token, &id).await;
    let received = s["received"].as_array().unwrap().len() as u32;
    assert!(received < 12, "the client finished before it was killed");

    let out = wharf(&["put", "--parallel", "4", src.to_str().unwrap()], &env);
    ok(&out);
    let (sent, total) = sent_chunks(&out.stderr);
    assert_eq!(total, 12);
    assert_eq!(
        sent,
        total - received,
        "acknowledged chunks were sent again"
    );
    let (_, s) = node.status(&token, &id).await;
    assert_eq!(s["state"], "stored");
    let fid = s["file_id"].as_str().unwrap();
    assert!(node.download(&token, fid).await == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_fails_over_when_a_node_dies_mid_upload_over_http() {
    fails_over(Transport::Http).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_fails_over_when_a_node_dies_mid_upload_over_quic() {
    fails_over(Transport::Quic).await
}

async fn fails_over(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects").display().to_string();
    // Short grace and completion waits, so that chunks left on the dead node count as missing
    // soon and the client sends them again.
    let env = [
        ("WHARF_STORE_PATH", objects.as_str()),
        ("WHARF_CLUSTER_STAGING_GRACE_SECS", "2"),
        ("WHARF_UPLOAD_COMPLETE_WAIT_SECS", "3"),
        ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
    ];
    let a = Node::start_with(&dir.path().join("a"), &env);
    let join = join_args(&a);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let b = Node::spawn(&dir.path().join("b"), &env, &join);
    let c = Node::spawn(&dir.path().join("c"), &env, &join);

    let t = a.token("ray", Tier::Basic);
    let state = dir.path().join("state");
    let state_s = state.display().to_string();
    let src = dir.path().join("f.bin");
    let data = random_bytes(10 * 8 * MIB, 10);
    std::fs::write(&src, &data).unwrap();
    let mut put = Command::new(env!("CARGO_BIN_EXE_wharf"));
    put.args([
        "put",
        "--parallel",
        "2",
        "--node",
        &addr(&b, transport),
        "--node",
        &addr(&c, transport),
        "--node",
        &addr(&a, transport),
    ])
    .arg(&src)
    .env("WHARF_CA", ca(&a))
    .env("WHARF_TOKEN", &t)
    .env("WHARF_STATE_DIR", &state_s)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = put.spawn().unwrap();
    wait_received(&a, &t, &state, 2).await;
    // Node b dies with the client's chunks in flight; the rest go to c and a.
    let _dead = b.kill9();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = ok(&out);
    let fid = stdout.lines().last().unwrap().trim();
    assert!(c.download(&t, fid).await == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_with_ranges_across_part_boundaries_are_byte_identical_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let token = node.token("ren", Tier::Basic);
    let src = dir.path().join("scan.tiff");
    // Three 8 MiB parts and a short fourth.
    let data = random_bytes(3 * 8 * MIB + 12_345, 21);
    std::fs::write(&src, &data).unwrap();
    let ca = ca(&node);
    let state = dir.path().join("state").display().to_string();
    let env = |a: &str| {
        vec![
            ("WHARF_TOKEN", token.clone()),
            ("WHARF_ADDR", a.to_string()),
            ("WHARF_STATE_DIR", state.clone()),
            ("WHARF_CA", ca.clone()),
        ]
    };
    let http = env(&addr(&node, Transport::Http));
    let out = wharf_env(&["put", src.to_str().unwrap()], &http);
    let id = ok(&out).lines().last().unwrap().trim().to_string();
    for transport in [Transport::Http, Transport::Quic] {
        let e = env(&addr(&node, transport));
        // Odd sizes cross every part boundary; one range larger than the file.
        for range in [MIB + 1, 3 * MIB + 5, 8 * MIB + 1, data.len() + 10] {
            let copy = dir.path().join(format!("copy-{transport:?}-{range}"));
            let range_arg = range.to_string();
            let args = [
                "get",
                &id,
                "-o",
                copy.to_str().unwrap(),
                "--range-size",
                &range_arg,
            ];
            ok(&wharf_env(&args, &e));
            assert!(
                std::fs::read(&copy).unwrap() == data,
                "{transport:?} with {range}-byte ranges"
            );
        }
    }
    // A range size of zero is refused by the command line, before any request.
    let zero = wharf_env(&["get", &id, "-o", "x", "--range-size", "0"], &http);
    assert!(!zero.status.success());
}

fn wharf_env(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    wharf(args, &env)
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_uploads_are_listed_and_aborted_from_the_command_line_over_http() {
    lost_uploads_listed_and_aborted(Transport::Http).await
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_uploads_are_listed_and_aborted_from_the_command_line_over_quic() {
    lost_uploads_listed_and_aborted(Transport::Quic).await
}

async fn lost_uploads_listed_and_aborted(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let token = node.token("gus", Tier::Basic);
    let mut ids = Vec::new();
    for name in ["one.bin", "two.bin"] {
        let (_, up) = node
            .create(&token, serde_json::json!({"name": name, "size": 20}))
            .await;
        ids.push(up["upload_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        node.put_chunk(&token, &ids[0], 0, &[7u8; 20]).await,
        reqwest::StatusCode::NO_CONTENT
    );
    let (node_addr, ca) = (addr(&node, transport), ca(&node));
    let env = [
        ("WHARF_TOKEN", token.as_str()),
        ("WHARF_ADDR", node_addr.as_str()),
        ("WHARF_CA", ca.as_str()),
    ];
    let table = ok(&wharf(&["uploads"], &env));
    assert!(
        table.contains(&ids[0]) && table.contains(&ids[1]),
        "{table}"
    );
    assert!(table.contains("1/1") && table.contains("0/1"), "{table}");
    ok(&wharf(&["abort", &ids[1]], &env));
    let table = ok(&wharf(&["uploads"], &env));
    assert!(
        table.contains(&ids[0]) && !table.contains(&ids[1]),
        "{table}"
    );
    let all: Value =
        serde_json::from_str(&ok(&wharf(&["uploads", "--all", "--json"], &env))).unwrap();
    let states: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["upload_id"].as_str().unwrap(),
                u["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(ids[0].as_str(), "uploading"), (ids[1].as_str(), "aborted")]
    );
    let again = wharf(&["abort", &ids[1]], &env);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("upload_not_active"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A TCP proxy to `target` that lets the first `POST /v1/uploads` through to the node and
/// cuts the connection instead of passing the node's answer back (a reply lost on the way);
/// every other connection is passed through. Returns its address and how many it cut.
async fn reply_dropping_proxy(
    target: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = std::sync::Arc::new(AtomicU32::new(0));
    let counter = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (target, cut) = (target.clone(), counter.clone());
            tokio::spawn(async move {
                let mut node = tokio::net::TcpStream::connect(&target).await.unwrap();
                // The request head (and whatever body came with it).
                let mut buf = vec![0u8; 64 << 10];
                let n = client.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                node.write_all(&buf[..n]).await.unwrap();
                let is_create = buf[..n].starts_with(b"POST /v1/uploads ");
                if is_create && cut.load(Ordering::SeqCst) == 0 {
                    // The node answers; the client never hears it.
                    let got = node.read(&mut buf).await.unwrap_or(0);
                    assert!(got > 0, "the node did not answer the create");
                    cut.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            });
        }
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_reply_is_lost_and_that_is_retried_reserves_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("lou", Tier::Basic);
    let target = node.base.trim_start_matches("http://").to_string();
    let (proxy, cut) = reply_dropping_proxy(target).await;
    let client = wharf_client::Client::new(vec![format!("http://{proxy}")], t.clone()).unwrap();
    let size = 3 * 8 * 1024 * 1024 + 5;
    let created = client
        .create(&wharf_proto::CreateUpload {
            name: "twice.bin".into(),
            size,
            blake3: None,
            mime: None,
            idempotency_key: None,
            folder: None,
            on_conflict: None,
        })
        .await
        .unwrap();
    assert_eq!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no reply was lost"
    );
    // One upload, one reservation: the retry got the first create's upload back.
    let usage = node.usage(&t).await;
    assert_eq!(usage["reserved"], size, "{usage}");
    let (st, list) = json(
        node.get(&t, "/v1/uploads?state=uploading")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    let ups = list["uploads"].as_array().unwrap();
    assert_eq!(ups.len(), 1, "{list}");
    let wharf_proto::CreateAnswer::Upload(created) = created else {
        panic!("a create of new content answered {created:?}");
    };
    assert_eq!(ups[0]["upload_id"], created.upload_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn wharf_put_killed_while_its_create_was_on_its_way_resumes_that_upload() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let t = node.token("kim", Tier::Basic);
    let data = random_bytes(2 * 8 * 1024 * 1024 + 17, 21);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let state = dir.path().join("state");
    // What a run killed after sending its create left: the key, and an upload it never saw.
    let key = "create-killed-run";
    let (st, up) = node
        .create(
            &t,
            serde_json::json!({"name": "big.bin", "size": data.len(), "idempotency_key": key}),
        )
        .await;
    assert_eq!(st, 201, "{up}");
    let meta = std::fs::metadata(&file).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let entry = format!(
        "{}|{}|{}",
        std::fs::canonicalize(&file).unwrap().display(),
        meta.len(),
        mtime
    );
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("uploads.json"),
        serde_json::to_vec(&serde_json::json!({ entry: {"idempotency_key": key} })).unwrap(),
    )
    .unwrap();
    let s = state.display().to_string();
    let out = ok(&wharf(
        &["put", "--json", file.to_str().unwrap()],
        &[
            ("WHARF_ADDR", node.base.as_str()),
            ("WHARF_TOKEN", t.as_str()),
            ("WHARF_STATE_DIR", s.as_str()),
        ],
    ));
    let put: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(put["size"], data.len(), "{put}");
    // The upload the killed run created is the one that was stored; no other was made.
    let (_, list) = json(node.get(&t, "/v1/uploads").send().await.unwrap()).await;
    let ups = list["uploads"].as_array().unwrap();
    assert_eq!(ups.len(), 1, "{list}");
    assert_eq!(ups[0]["upload_id"], up["upload_id"], "{list}");
    assert_eq!(ups[0]["state"], "stored", "{list}");
    assert_eq!(node.usage(&t).await["reserved"], 0);
    assert_eq!(node.usage(&t).await["used"], data.len());
}
