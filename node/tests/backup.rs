//! Backup and restore of the metadata: `wharf admin backup` from a running node, `wharf
//! cluster restore` into a new data dir, a new cluster that serves every file byte-identical
//! and that another node joins; damaged backups and used data dirs are refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_raft::model::Tier;

/// `wharf` with `args` and `env`: (success, stdout, stderr).
fn wharf(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run wharf");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file of `user` on `node`, by name: its bytes.
async fn files(node: &Node, user: &str) -> BTreeMap<String, Vec<u8>> {
    let t = node.token(user, Tier::Basic);
    let (st, list) = json(node.get(&t, "/v1/files?limit=1000").send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let mut out = BTreeMap::new();
    for f in list["files"].as_array().unwrap() {
        let id = f["id"].as_str().unwrap();
        out.insert(
            f["name"].as_str().unwrap().to_string(),
            node.download(&t, id).await,
        );
    }
    out
}

fn restore(from: &Path, data_dir: &Path, env: &[(String, String)]) -> (bool, String, String) {
    wharf(
        &[
            "cluster",
            "restore",
            "--from",
            &from.display().to_string(),
            "--data-dir",
            &data_dir.display().to_string(),
        ],
        env,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restored_into_a_new_cluster_serves_every_file_byte_identical() {
    let s3 = s3::S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let probe = no_clamd(dir.path());
    let extra = [("WHARF_SCAN_CLAMD_PROBE", probe.as_str())];
    let a = spawn_with(&dir.path().join("a"), &s3.env(), &extra, &[]);
    let ann = a.token("ann", Tier::Basic);
    let bob = a.token("bob", Tier::Basic);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    a.upload(&ann, "big.bin", &big).await;
    let shared = a.upload(&ann, "shared.txt", b"for bob").await;
    a.upload(&bob, "bob.txt", b"bob's own").await;
    let (st, _) = json(
        a.post(
            &ann,
            &format!("/v1/files/{}/shares", shared["id"].as_str().unwrap()),
        )
        .json(&json!({"user": "bob", "role": "viewer"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let want_ann = files(&a, "ann").await;
    let want_bob = files(&a, "bob").await;
    assert_eq!(want_ann.len(), 2);

    let backup = dir.path().join("meta.wharfbak");
    let admin = a.token("root", Tier::Admin);
    let (ok, out, err) = wharf(
        &[
            "admin",
            "backup",
            "--node",
            &a.url(""),
            "--token",
            &admin,
            "--out",
            &backup.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("log index"), "{out}");
    // Written after the backup: not in it.
    a.upload(&ann, "later.txt", b"after the backup").await;
    let _gone = a.kill9();

    // A damaged copy is refused, and so is a data dir in use.
    let mut bytes = std::fs::read(&backup).unwrap();
    let damaged = dir.path().join("damaged.wharfbak");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let (ok, _, err) = restore(&damaged, &dir.path().join("x"), &[]);
    assert!(!ok && err.contains("not a whole wharf backup"), "{err}");
    let (ok, _, err) = restore(&backup, &dir.path().join("a"), &[]);
    assert!(!ok && err.contains("already holds a node"), "{err}");

    // The restore: a new one-node cluster at fixed addresses.
    let (http, peer) = (
        format!("127.0.0.1:{}", stable_port()),
        format!("127.0.0.1:{}", stable_port()),
    );
    let mut env = s3.env();
    env.push(("WHARF_NODE_HTTP_ADDR".into(), http.clone()));
    env.push(("WHARF_CLUSTER_PEER_ADDR".into(), peer.clone()));
    let b_dir = dir.path().join("b");
    let (ok, out, err) = restore(&backup, &b_dir, &env);
    assert!(ok, "{err}");
    assert!(out.contains("restored the metadata"), "{out}");
    let s3_env = s3.env();
    let mut b_env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b_env.extend_from_slice(&extra);
    let b = Node::spawn_at(&b_dir, &b_env, &[], &http, &peer);
    assert_eq!(files(&b, "ann").await, want_ann);
    assert_eq!(files(&b, "bob").await, want_bob);
    let bob_b = b.token("bob", Tier::Basic);
    let (_, with_me) = json(b.get(&bob_b, "/v1/shared-with-me").send().await.unwrap()).await;
    assert_eq!(with_me["entries"][0]["name"], "shared.txt", "{with_me}");
    let ann_b = b.token("ann", Tier::Basic);
    assert_eq!(b.usage(&ann_b).await["used"], big.len() + 7);
    // It takes writes, and a node joins it and serves the restored files too.
    b.upload(&ann_b, "new.txt", b"written after the restore")
        .await;
    let join = join_args(&b);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let c = spawn_with(&dir.path().join("c"), &s3.env(), &extra, &join);
    let on_c = files(&c, "ann").await;
    assert_eq!(on_c.len(), 3, "{:?}", on_c.keys());
    assert_eq!(on_c["big.bin"], big);
    assert!(!on_c.contains_key("later.txt"));
}
