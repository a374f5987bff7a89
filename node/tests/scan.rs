//! Virus scanning with a real clamd (a test signature database made here: EICAR), including a
//! scanner that dies holding its lease and a clamd that goes away.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_raft::model::Tier;

/// The standard 68-byte EICAR test file.
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A clamd of this test's own on a loopback TCP port, with a database holding only EICAR.
struct Clamd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Clamd {
    fn start() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        // sigtool --md5 of the EICAR file; a .hdb line is md5:size:name.
        std::fs::write(
            dir.path().join("db/test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        let mut c = Clamd {
            port: free_port(),
            dir,
            child: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let conf = format!(
            "Foreground yes\nDatabaseDirectory {}\nTCPSocket {}\nTCPAddr 127.0.0.1\n\
             LogFile {}\nPidFile {}\nStreamMaxLength 100M\n",
            d.join("db").display(),
            self.port,
            d.join("clamd.log").display(),
            d.join("clamd.pid").display()
        );
        std::fs::write(d.join("clamd.conf"), conf).unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(d.join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd is not installed: run scripts/test, which installs clamav-daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "clamd did not start: see {}",
                d.join("clamd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 5];
    s.write_all(b"zPING\0").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"PONG\0"
}

fn scan_env(clamd: &str) -> Vec<(String, String)> {
    [
        ("WHARF_SCAN_CLAMD", clamd),
        ("WHARF_SCAN_POLL_MS", "200"),
        ("WHARF_SCAN_TIMEOUT_SECS", "30"),
        ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

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
