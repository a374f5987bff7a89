//! Virus scanning with a real clamd (a test signature database made here: EICAR), including a
//! scanner that dies holding its lease, a clamd that goes away, a node that starts before its
//! clamd and a lease stuck on a hung scanner.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::clamd::{probe_env, scan_env, Clamd, EICAR};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_raft::model::Tier;

fn start(dir: &Path, env: &[(String, String)], extra: &[(&str, &str)], args: &[&str]) -> Node {
    spawn_with(dir, env, extra, args)
}

async fn file(node: &Node, t: &str, id: &str) -> Value {
    json(
        node.get(t, &format!("/v1/files/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .1
}

async fn wait_scan(node: &Node, t: &str, id: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let f = file(node, t, id).await;
        if f["scan"] == want {
            return f;
        }
        assert!(Instant::now() < deadline, "scan never became {want}: {f}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn content_status(node: &Node, t: &str, id: &str) -> (StatusCode, Value) {
    let r = node
        .get(t, &format!("/v1/files/{id}/content"))
        .send()
        .await
        .unwrap();
    let st = r.status();
    if st.is_success() {
        return (st, Value::Null);
    }
    json(r).await
}

#[tokio::test(flavor = "multi_thread")]
async fn eicar_is_infected_and_quarantined_and_a_clean_file_becomes_downloadable() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &scan_env(&clamd.addr()), &[], &[]);
    let t = node.token("ann", Tier::Basic);

    let bad = node.upload(&t, "eicar.com", EICAR).await;
    let bad_id = bad["id"].as_str().unwrap();
    let good_data = random_bytes(3 * MIB, 1);
    let good = node.upload(&t, "good.bin", &good_data).await;
    let good_id = good["id"].as_str().unwrap();

    let f = wait_scan(&node, &t, bad_id, "infected", 30).await;
    assert_eq!(f["signature"], "Eicar-Test-Signature.UNOFFICIAL");
    assert_error(&content_status(&node, &t, bad_id).await, 403, "infected");
    // Quarantined: moved out of uploads/, and no longer counted as usage.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("objects/quarantine").exists() {
        assert!(
            Instant::now() < deadline,
            "the infected object was not quarantined"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(node.usage(&t).await["used"], good_data.len() as u64);

    wait_scan(&node, &t, good_id, "clean", 30).await;
    let r = node
        .get(&t, &format!("/v1/files/{good_id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-wharf-scan"], "clean");
    assert!(r.bytes().await.unwrap() == good_data);
    // The node's metrics saw both verdicts, and nothing waits for a scan any more.
    let m = common::prometheus::scrape(&node).await;
    let scans =
        |verdict| common::prometheus::value(&m, "wharf_scans_total", &[("verdict", verdict)]);
    assert_eq!((scans("infected"), scans("clean")), (1.0, 1.0));
    assert_eq!(
        common::prometheus::value(&m, "wharf_scan_duration_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        common::prometheus::value(&m, "wharf_scans_waiting", &[]),
        0.0
    );

    // A rescan (new signatures) puts the clean file through the scanner again.
    let d = dir.path().display().to_string();
    let out = wharf_cli(&[
        "admin",
        "rescan",
        "--file",
        good_id,
        "--node",
        &node.base,
        "--data-dir",
        &d,
    ]);
    assert!(out.starts_with("1 file"), "{out}");
    wait_scan(&node, &t, good_id, "clean", 30).await;
    let out = wharf_cli(&[
        "admin",
        "rescan",
        "--all",
        "--node",
        &node.base,
        "--data-dir",
        &d,
    ]);
    assert!(out.contains("queued"), "{out}");
    let r = node
        .post(&t, "/v1/admin/rescan")
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 403, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_wait_for_the_scan_and_scans_wait_for_clamd() {
    let mut clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &scan_env(&clamd.addr()), &[], &[]);
    let t = node.token("ben", Tier::Basic);

    // clamd goes away: files stay pending (never clean without a scan) and are not served.
    clamd.stop();
    let data = random_bytes(MIB, 2);
    let f = node.upload(&t, "waiting.bin", &data).await;
    let id = f["id"].as_str().unwrap();
    assert_eq!(f["scan"], "pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(file(&node, &t, id).await["scan"], "pending");
    assert_error(&content_status(&node, &t, id).await, 409, "scan_pending");

    // It comes back: the scan resumes and the file is served.
    clamd.spawn();
    wait_scan(&node, &t, id, "clean", 30).await;
    assert!(node.download(&t, id).await == data);
}

/// A fake clamd that answers PING and VERSION but never finishes a scan: a scanner that
/// hangs holding its lease.
async fn tarpit() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut cmd = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != 0 {
                    cmd.push(b[0]);
                }
                match cmd.as_slice() {
                    b"zPING" => drop(s.write_all(b"PONG\0").await),
                    b"zVERSION" => drop(s.write_all(b"ClamAV tarpit\0").await),
                    _ => {
                        let mut sink = vec![0u8; 65536];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_held_by_a_killed_node_is_taken_over_after_it_expires() {
    let clamd = Clamd::start();
    let pit = tarpit().await;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects").display().to_string();
    let shared = [
        ("WHARF_STORE_PATH", objects.as_str()),
        ("WHARF_SCAN_LEASE_SECS", "3"),
    ];
    let real = scan_env(&clamd.addr());
    let stuck = scan_env(&format!("tcp://127.0.0.1:{pit}"));

    // While the real clamd is frozen, only node A (whose clamd hangs mid-scan) takes leases.
    clamd.signal("-STOP");
    let a = start(&dir.path().join("a"), &stuck, &shared, &[]);
    let join = join_args(&a);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let b = start(&dir.path().join("b"), &real, &shared, &join);
    let c = start(&dir.path().join("c"), &real, &shared, &join);

    let t = b.token("cy", Tier::Basic);
    let data = random_bytes(2 * MIB, 3);
    let f = b.upload(&t, "leased.bin", &data).await;
    let id = f["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = file(&b, &t, &id).await;
        if f["scan_node"].as_u64() == Some(a.node_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node A never leased the blob: {f}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A dies holding the lease; the real clamd comes back; B or C takes over once it expires.
    let _dead = a.kill9();
    clamd.signal("-CONT");
    let f = wait_scan(&c, &t, &id, "clean", 40).await;
    assert!(f.get("scan_node").is_none());
    assert!(c.download(&t, &id).await == data);
    drop(b);
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

/// A QUIC ranged read of the first byte: its reply's (code, status).
async fn quic_read(node: &Node, t: &str, id: &str) -> (String, u32) {
    use common::quic::{call, connect, hello, ok_json};
    use wharf_proto::quic::{request::Op, Read};
    let conn = connect(node).await;
    ok_json(hello(&conn, t).await);
    let op = Op::Read(Read {
        file_id: id.into(),
        offset: 0,
        length: 1,
    });
    let r = call(&conn, op, None).await.unwrap();
    (r.code, r.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_before_its_clamd_scans_what_it_stored_unscanned_once_clamd_answers() {
    // No clamd configured; where the node looks for one, nothing answers yet.
    let mut clamd = Clamd::unstarted();
    let dir = tempfile::tempdir().unwrap();
    let env = probe_env(&clamd.addr());
    let node = start(dir.path(), &env, &[], &[]);
    let t = node.token("dee", Tier::Basic);

    let data = random_bytes(MIB, 5);
    let good = node.upload(&t, "early.bin", &data).await;
    let good_id = good["id"].as_str().unwrap();
    let bad = node.upload(&t, "early-eicar.com", EICAR).await;
    let bad_id = bad["id"].as_str().unwrap();
    assert_eq!(good["scan"], "unscanned");
    assert_eq!(bad["scan"], "unscanned");
    // With no scanner anywhere, files are served unscanned, and said to be...
    let r = node
        .get(&t, &format!("/v1/files/{good_id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-wharf-scan"], "unscanned");
    // ...but get no presigned URL (checked before the local store says it cannot make one).
    assert_error(&download_url(&node, &t, good_id).await, 409, "not_scanned");

    // clamd comes up: the node finds it and scans what it stored unscanned.
    clamd.spawn();
    wait_scan(&node, &t, good_id, "clean", 30).await;
    let f = wait_scan(&node, &t, bad_id, "infected", 30).await;
    assert_eq!(f["signature"], "Eicar-Test-Signature.UNOFFICIAL");
    assert_error(&content_status(&node, &t, bad_id).await, 403, "infected");
    assert!(node.download(&t, good_id).await == data);

    // From now on, new files wait for a scan, and only clean ones are served: also while clamd
    // is away, and after a restart that finds it still away.
    clamd.stop();
    let later = node.upload(&t, "later.bin", &random_bytes(MIB, 6)).await;
    let later_id = later["id"].as_str().unwrap().to_string();
    assert_eq!(later["scan"], "pending");
    assert_error(
        &content_status(&node, &t, &later_id).await,
        409,
        "scan_pending",
    );
    let node = node.kill9().restart();
    let after = node.upload(&t, "after.bin", &random_bytes(MIB, 7)).await;
    assert_eq!(after["scan"], "pending");
    assert_error(
        &content_status(&node, &t, &later_id).await,
        409,
        "scan_pending",
    );
    assert_eq!(file(&node, &t, &later_id).await["scan"], "pending");
    clamd.spawn();
    wait_scan(&node, &t, &later_id, "clean", 30).await;
    wait_scan(&node, &t, after["id"].as_str().unwrap(), "clean", 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_configured_clamd_down_at_start_nothing_is_served_before_a_clean_verdict() {
    let mut clamd = Clamd::unstarted();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &scan_env(&clamd.addr()), &[], &[]);
    let t = node.token("eve", Tier::Basic);

    let data = random_bytes(2 * MIB, 8);
    let f = node.upload(&t, "held.bin", &data).await;
    let id = f["id"].as_str().unwrap();
    // Waiting for the configured clamd, never unscanned, and refused on every path.
    assert_eq!(f["scan"], "pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(file(&node, &t, id).await["scan"], "pending");
    assert_error(&content_status(&node, &t, id).await, 409, "scan_pending");
    assert_error(&download_url(&node, &t, id).await, 409, "scan_pending");
    assert_eq!(
        quic_read(&node, &t, id).await,
        ("scan_pending".to_string(), 409)
    );

    clamd.spawn();
    wait_scan(&node, &t, id, "clean", 30).await;
    assert!(node.download(&t, id).await == data);
    assert_eq!(quic_read(&node, &t, id).await, (String::new(), 200));
    // Clean: past the scan check, the local store says it has no URLs to give.
    assert_error(&download_url(&node, &t, id).await, 501, "not_supported");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescan_takes_a_blob_back_from_a_scanner_stuck_holding_its_lease() {
    let clamd = Clamd::start();
    let pit = tarpit().await;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects").display().to_string();
    // A lease long enough that only a rescan frees the blob within the test.
    let shared = [
        ("WHARF_STORE_PATH", objects.as_str()),
        ("WHARF_SCAN_LEASE_SECS", "600"),
    ];
    let real = scan_env(&clamd.addr());
    let stuck = scan_env(&format!("tcp://127.0.0.1:{pit}"));

    clamd.signal("-STOP");
    let a = start(&dir.path().join("a"), &stuck, &shared, &[]);
    let join = join_args(&a);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let b = start(&dir.path().join("b"), &real, &shared, &join);
    let t = b.token("fay", Tier::Basic);
    let data = random_bytes(MIB, 9);
    let f = b.upload(&t, "stuck.bin", &data).await;
    let id = f["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while file(&b, &t, &id).await["scan_node"].as_u64() != Some(a.node_id) {
        assert!(Instant::now() < deadline, "node A never leased the blob");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clamd.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A's scan hangs, holding a lease for ten minutes.
    assert_eq!(
        file(&b, &t, &id).await["scan_node"].as_u64(),
        Some(a.node_id)
    );

    let admin = b.token("root", Tier::Admin);
    let r = b
        .post(&admin, "/v1/admin/rescan")
        .json(&json!({ "file": id }))
        .send()
        .await
        .unwrap();
    let (st, body) = json(r).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["requeued"], 1);
    // B takes it (A does not take again a blob its own hung scan holds) and finds it clean.
    let f = wait_scan(&b, &t, &id, "clean", 30).await;
    assert!(f.get("scan_node").is_none());
    assert!(b.download(&t, &id).await == data);
}
