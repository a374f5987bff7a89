//! Cluster trust against real node processes: join tokens that admit as many nodes as they
//! say, revoked and expired tokens, certificates that name their node and stop working the
//! moment the node's removal commits, a certificate that cannot act as another node, joiners
//! that never hold the CA key (and wait for an offline signature), tokens kept out of logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wharf_proto::cluster::cluster_service_client::ClusterServiceClient;
use wharf_proto::cluster::raft_service_client::RaftServiceClient;
use wharf_proto::cluster::{AddNodeRequest, Empty, ForwardRequest, RaftRequest};
use wharf_raft::model::Command as ModelCommand;

/// A join token made through the node whose data dir is `dir`.
fn token(dir: &Path, args: &[&str]) -> String {
    let d = dir.display().to_string();
    let mut all = vec!["cluster", "token", "--data-dir", &d];
    all.extend_from_slice(args);
    wharf_cli(&all).trim().to_string()
}

/// A gRPC channel to `peer_addr` presenting the certificate in `data_dir` (a node's own).
async fn channel_as(data_dir: &Path, peer_addr: &str) -> Channel {
    let read = |f: &str| std::fs::read_to_string(data_dir.join("tls").join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("node.pem"), read("node.key")))
        .domain_name("wharf-node");
    Endpoint::from_shared(format!("https://{peer_addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn forward(cmd: ModelCommand) -> ForwardRequest {
    ForwardRequest {
        command_json: serde_json::to_vec(&wharf_raft::Request(cmd)).unwrap(),
    }
}

/// A vote request as node `candidate` in `term` would send it.
fn vote_as(candidate: u64, term: u64) -> RaftRequest {
    let v = json!({
        "vote": {"leader_id": {"term": term, "node_id": candidate}, "committed": false},
        "last_log_id": null
    });
    RaftRequest {
        json: serde_json::to_vec(&v).unwrap(),
    }
}

fn chunk_staged_by(node: u64) -> ModelCommand {
    ModelCommand::ChunkStaged {
        owner: "nobody".into(),
        upload_id: "none".into(),
        index: 0,
        node,
        len: 1,
        blake3: "00".repeat(32),
        cv: "00".repeat(32),
        now: 1,
    }
}

/// Nodes a, b and c of one cluster under `dir`, all voters and caught up.
fn three_nodes(dir: &Path) -> [Node; 3] {
    let a = Node::start(&dir.join("a"));
    let t = token(&a.data_dir, &["--uses", "2"]);
    let join = |name: &str| {
        Node::spawn(
            &dir.join(name),
            &[],
            &["--join", &a.peer_addr, "--token", &t],
        )
    };
    let (b, c) = (join("b"), join("c"));
    let dd = a.data_dir.display().to_string();
    wharf_cli(&["cluster", "status", "--wait", "3", "--data-dir", &dd]);
    [a, b, c]
}

#[test]
fn a_join_token_admits_as_many_nodes_as_it_says_and_a_revoked_or_expired_one_none() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(&dir.path().join("a"));
    let once = token(&a.data_dir, &[]);
    let join = |name: &str, t: &str| {
        let d = dir.path().join(name);
        Node::spawn(&d, &[], &["--join", &a.peer_addr, "--token", t])
    };
    let refused = |name: &str, t: &str| {
        let d = dir.path().join(name);
        let err = start_must_fail(&d, &[], &["--join", &a.peer_addr, "--token", t]);
        assert!(
            !d.join("tls").exists(),
            "a refused node kept an identity: {err}"
        );
        err
    };
    // A token used twice joins once.
    let b = join("b", &once);
    assert_eq!(b.node_id, 2);
    let err = refused("c", &once);
    assert!(err.contains("not valid for this cluster"), "{err}");

    // `--uses 2`: two joins, then no more; the list shows what is left.
    let twice = token(&a.data_dir, &["--uses", "2"]);
    let listed = |a: &Node| -> Value {
        let d = a.data_dir.display().to_string();
        serde_json::from_str(&wharf_cli(&[
            "cluster",
            "token",
            "list",
            "--json",
            "--data-dir",
            &d,
        ]))
        .unwrap()
    };
    let tokens = listed(&a);
    let tokens = tokens["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["uses_left"], 2);
    let id = tokens[0]["id"].as_str().unwrap().to_string();
    assert!(twice.contains(&id));
    assert!(
        !serde_json::to_string(tokens)
            .unwrap()
            .contains(twice.split('.').nth(2).unwrap()),
        "the list shows a token's secret"
    );
    let c = join("c2", &twice);
    assert_eq!(listed(&a)["tokens"][0]["uses_left"], 1);
    let d = join("d", &twice);
    assert_eq!(listed(&a)["tokens"].as_array().unwrap().len(), 0);
    refused("e", &twice);

    // A revoked token admits nobody.
    let revoked = token(&a.data_dir, &["--uses", "5"]);
    let rid = revoked.split('.').nth(1).unwrap().to_string();
    let dd = a.data_dir.display().to_string();
    wharf_cli(&["cluster", "token", "revoke", &rid, "--data-dir", &dd]);
    let err = refused("f", &revoked);
    assert!(err.contains("not valid"), "{err}");

    // An expired one neither.
    let short = token(&a.data_dir, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let err = refused("g", &short);
    assert!(err.contains("expired"), "{err}");

    // Every admitted node is a voter of the cluster.
    let s: Value = serde_json::from_str(&wharf_cli(&[
        "cluster",
        "status",
        "--json",
        "--wait",
        "4",
        "--data-dir",
        &dd,
    ]))
    .unwrap();
    let voters = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["voter"] == true)
        .count();
    assert_eq!(voters, 4, "{s}");
    drop((b, c, d));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_nodes_certificate_is_refused_by_every_node_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = three_nodes(dir.path());
    let dd = a.data_dir.display().to_string();

    // While it is a member, node 3's certificate is accepted by the others.
    for n in [&a, &b] {
        let ch = channel_as(&c.data_dir, &n.peer_addr).await;
        let st = ClusterServiceClient::new(ch).status(Empty {}).await;
        assert!(st.is_ok(), "node {}: {st:?}", n.node_id);
    }
    let removed_id = c.node_id.to_string();
    wharf_cli(&["cluster", "remove", &removed_id, "--data-dir", &dd]);
    let committed = Instant::now();
    for n in [&a, &b] {
        let ch = channel_as(&c.data_dir, &n.peer_addr).await;
        loop {
            let st = ClusterServiceClient::new(ch.clone()).status(Empty {}).await;
            match st {
                Err(e) if e.code() == tonic::Code::PermissionDenied => break,
                other => assert!(
                    committed.elapsed() < Duration::from_secs(1),
                    "node {} still accepts the removed node after {:?}: {other:?}",
                    n.node_id,
                    committed.elapsed()
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Raft, Forward and AddNode are refused as well.
        let raft = RaftServiceClient::new(ch.clone())
            .vote(vote_as(c.node_id, 99))
            .await
            .unwrap_err();
        assert_eq!(raft.code(), tonic::Code::PermissionDenied, "{raft}");
        let fwd = ClusterServiceClient::new(ch.clone())
            .forward(forward(ModelCommand::SetQuota {
                user: "mallory".into(),
                quota: u64::MAX / 2,
            }))
            .await
            .unwrap_err();
        assert_eq!(fwd.code(), tonic::Code::PermissionDenied, "{fwd}");
        let add = ClusterServiceClient::new(ch)
            .add_node(AddNodeRequest {
                node_id: c.node_id,
                peer_addr: c.peer_addr.clone(),
                http_addr: "127.0.0.1:1".into(),
                learner: false,
            })
            .await
            .unwrap_err();
        assert_eq!(add.code(), tonic::Code::PermissionDenied, "{add}");
    }
    eprintln!(
        "refused by every node {:?} after the removal",
        committed.elapsed()
    );
    // The quota the removed node tried to set was never set.
    let admin = a.token("admin", wharf_raft::model::Tier::Admin);
    let s = a.get(&admin, "/v1/cluster/status").send().await.unwrap();
    assert_eq!(s.status(), 200);
    let alice = a.token("mallory", wharf_raft::model::Tier::Basic);
    assert_ne!(a.usage(&alice).await["quota"], u64::MAX / 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_certificate_cannot_act_as_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = three_nodes(dir.path());
    let dd = a.data_dir.display().to_string();

    let ch = channel_as(&b.data_dir, &a.peer_addr).await;
    let cant = |e: tonic::Status| {
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.message().contains("cannot act as node 3"), "{e}");
    };
    // Node 2 asking to add node 3, voting as node 3, staging a chunk as node 3: refused.
    cant(
        ClusterServiceClient::new(ch.clone())
            .add_node(AddNodeRequest {
                node_id: c.node_id,
                peer_addr: c.peer_addr.clone(),
                http_addr: "127.0.0.1:1".into(),
                learner: true,
            })
            .await
            .unwrap_err(),
    );
    cant(
        RaftServiceClient::new(ch.clone())
            .vote(vote_as(c.node_id, 99))
            .await
            .unwrap_err(),
    );
    cant(
        ClusterServiceClient::new(ch.clone())
            .forward(forward(chunk_staged_by(c.node_id)))
            .await
            .unwrap_err(),
    );
    // As itself, node 2's forward passes the check (the model then refuses the unknown
    // upload, inside the reply).
    let own = ClusterServiceClient::new(ch)
        .forward(forward(chunk_staged_by(b.node_id)))
        .await;
    assert!(own.is_ok(), "{own:?}");
    // A certificate the CA signs for node 2's id, with another key (what a stolen CA key
    // would make): refused, because node 2's record names the certificate it was issued.
    let forged = dir.path().join("forged");
    std::fs::create_dir_all(forged.join("tls")).unwrap();
    let (csr, key) = wharf_cluster::tls::new_key_and_csr().unwrap();
    let ca_key = std::fs::read_to_string(a.data_dir.join("tls/ca.key")).unwrap();
    let cert = wharf_cluster::tls::sign_csr(&ca_key, &csr, b.node_id).unwrap();
    std::fs::copy(a.data_dir.join("tls/ca.pem"), forged.join("tls/ca.pem")).unwrap();
    std::fs::write(forged.join("tls/node.pem"), cert).unwrap();
    std::fs::write(forged.join("tls/node.key"), key).unwrap();
    let ch = channel_as(&forged, &a.peer_addr).await;
    let st = ClusterServiceClient::new(ch)
        .status(Empty {})
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st}");

    // A fourth node joins through a follower (node 2), which relays its AddNode.
    let t4 = token(&a.data_dir, &[]);
    let d = Node::spawn(
        &dir.path().join("d"),
        &[],
        &["--join", &b.peer_addr, "--token", &t4],
    );
    assert_eq!(d.node_id, 4);
    // The cluster has its four voters and a leader.
    let s: Value = serde_json::from_str(&wharf_cli(&[
        "cluster",
        "status",
        "--json",
        "--wait",
        "4",
        "--data-dir",
        &dd,
    ]))
    .unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 4, "{s}");
}

#[test]
fn a_joiner_never_holds_the_ca_key_and_waits_for_an_offline_signature() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let ad = a_dir.display().to_string();
    let t = wharf_cli(&["cluster", "init", "--uses", "2", "--data-dir", &ad])
        .trim()
        .to_string();
    // The CA key goes offline: the running cluster cannot sign anything.
    let offline = dir.path().join("offline-ca.key");
    std::fs::rename(a_dir.join("tls/ca.key"), &offline).unwrap();
    let a = Node::start(&a_dir);
    let b_dir = dir.path().join("b");
    let peer = a.peer_addr.clone();
    let requests = || -> Vec<Value> {
        let v: Value = serde_json::from_str(&wharf_cli(&[
            "cluster",
            "requests",
            "--json",
            "--data-dir",
            &ad,
        ]))
        .unwrap();
        v["requests"].as_array().cloned().unwrap_or_default()
    };
    let wait_request = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = requests().first() {
                assert!(r["csr_pem"]
                    .as_str()
                    .unwrap()
                    .contains("CERTIFICATE REQUEST"));
                return r["node_id"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "no request showed up");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // A first run of the joiner waits, listed as a request, and is killed while it waits.
    let mut first = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "node",
            "start",
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--peer-addr",
            "127.0.0.1:0",
            "--join",
            &peer,
            "--token",
            &t,
            "--data-dir",
        ])
        .arg(&b_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first_id = wait_request();
    assert!(
        first.try_wait().unwrap().is_none(),
        "the joiner did not wait"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Started again with the same (single-use, used) token: the same request, the same node.
    let (bd, tt, pp) = (b_dir.clone(), t.clone(), peer.clone());
    let joiner =
        std::thread::spawn(move || Node::spawn(&bd, &[], &["--join", &pp, "--token", &tt]));
    std::thread::sleep(Duration::from_secs(1));
    let node_id = wait_request();
    assert_eq!(node_id, first_id);
    assert_eq!(
        requests().len(),
        1,
        "the restarted joiner made a second request"
    );
    assert!(
        !joiner.is_finished(),
        "the joiner did not wait for its certificate"
    );
    let key = offline.display().to_string();
    let id = node_id.to_string();
    wharf_cli(&[
        "cluster",
        "sign-csr",
        &id,
        "--ca-key",
        &key,
        "--data-dir",
        &ad,
    ]);
    let b = joiner.join().unwrap();
    assert_eq!(b.node_id, node_id);
    wharf_cli(&["cluster", "status", "--wait", "2", "--data-dir", &ad]);
    // No private key of the CA anywhere on the joiner; its own key only in tls/node.key.
    assert!(!b_dir.join("tls/ca.key").exists());
    for e in walk(&b_dir) {
        let text = std::fs::read(&e).unwrap_or_default();
        let has_key = String::from_utf8_lossy(&text).contains("PRIVATE KEY");
        let own = e.ends_with("tls/node.key");
        assert!(!has_key || own, "{} holds a private key", e.display());
    }
    // The certificate names the node.
    let cert = std::fs::read_to_string(b_dir.join("tls/node.pem")).unwrap();
    assert_eq!(wharf_cluster::tls::pem_node_id(&cert), Some(node_id));
    assert!(std::fs::read_to_string(a_dir.join("tls/node.pem")).unwrap() != cert);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A node process with its whole log in a file, at debug level.
fn start_logged(data_dir: &Path, log: &Path, args: &[&str]) -> (Child, String) {
    let f = std::fs::File::create(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "node",
            "start",
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
        ])
        .args(["--peer-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("WHARF_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(f)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    let peer = line
        .split_whitespace()
        .skip_while(|w| *w != "(peer")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    (child, peer)
}

#[test]
fn join_tokens_never_appear_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let ad = a_dir.display().to_string();
    let first = wharf_cli(&["cluster", "init", "--data-dir", &ad])
        .trim()
        .to_string();
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (mut a, peer) = start_logged(&a_dir, &a_log, &[]);
    // The token from a file: nothing on the command line.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &first).unwrap();
    let tf = token_file.display().to_string();
    let (mut b, _) = start_logged(&b_dir, &b_log, &["--join", &peer, "--token-file", &tf]);
    let second = token(&a_dir, &["--uses", "3"]);
    let id = second.split('.').nth(1).unwrap().to_string();
    wharf_cli(&["cluster", "token", "revoke", &id, "--data-dir", &ad]);
    // A refused join logs nothing of the token either.
    let c_dir = dir.path().join("c");
    let err = start_must_fail(&c_dir, &[], &["--join", &peer, "--token", &second]);
    assert!(!err.contains(second.split('.').nth(2).unwrap()), "{err}");
    let _ = (a.kill(), b.kill(), a.wait(), b.wait());
    let logs = std::fs::read_to_string(&a_log).unwrap() + &std::fs::read_to_string(&b_log).unwrap();
    assert!(logs.contains("admitted a joining node"), "{logs}");
    for t in [&first, &second] {
        let secret = t.split('.').nth(2).unwrap();
        assert!(!logs.contains(secret), "a token's secret is in a log");
    }
    // Nor is it on disk, other than in the file it was given in.
    for f in walk(dir.path()) {
        if f == token_file {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        for t in [&first, &second] {
            let secret = t.split('.').nth(2).unwrap();
            assert!(
                !text.contains(secret),
                "{} holds a token's secret",
                f.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_ca_is_rotated_with_the_nodes_stopped_and_the_old_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = three_nodes(dir.path());
    let dd = a.data_dir.display().to_string();
    let user = a.token("ria", wharf_raft::model::Tier::Basic);
    let file = a.upload(&user, "kept.bin", b"before the rotation").await;
    // Node 2's identity under the old CA, kept to try it afterwards.
    let old_b = dir.path().join("old-b");
    std::fs::create_dir_all(old_b.join("tls")).unwrap();
    for f in ["ca.pem", "node.pem", "node.key"] {
        std::fs::copy(b.data_dir.join("tls").join(f), old_b.join("tls").join(f)).unwrap();
    }

    // Every node stopped; a new CA; each node's certificate made again under it.
    let dirs: Vec<_> = [a, b, c].into_iter().map(Node::kill9).collect();
    let ca = dir.path().join("new-ca").display().to_string();
    wharf_cli(&["cluster", "new-ca", "--out", &ca]);
    for d in [
        &dir.path().join("a"),
        &dir.path().join("b"),
        &dir.path().join("c"),
    ] {
        let ds = d.display().to_string();
        wharf_cli(&["cluster", "reissue", "--ca-dir", &ca, "--data-dir", &ds]);
    }
    let new_ca = std::fs::read_to_string(dir.path().join("new-ca/ca.pem")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a/tls/ca.pem")).unwrap(),
        new_ca
    );
    assert!(!dir.path().join("b/tls/ca.key").exists());
    // Started together: none is ready before a quorum is back.
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let started: Vec<_> = dirs
            .into_iter()
            .map(|d| s.spawn(move || d.restart()))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    wharf_cli(&["cluster", "status", "--wait", "3", "--data-dir", &dd]);
    let id = file["id"].as_str().unwrap();
    assert_eq!(nodes[0].download(&user, id).await, b"before the rotation");
    // A certificate of the old CA no longer gets through: the nodes trust the new CA only.
    let read = |f: &str| std::fs::read_to_string(old_b.join("tls").join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&new_ca))
        .identity(Identity::from_pem(read("node.pem"), read("node.key")))
        .domain_name("wharf-node");
    let refused = match Endpoint::from_shared(format!("https://{}", nodes[0].peer_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(ch) => ClusterServiceClient::new(ch)
            .status(Empty {})
            .await
            .is_err(),
    };
    assert!(refused, "a certificate of the old CA was accepted");
    // The same key under the new CA is still node 2 (its record pins the key).
    let ch = channel_as(&dir.path().join("b"), &nodes[0].peer_addr).await;
    assert!(ClusterServiceClient::new(ch).status(Empty {}).await.is_ok());
}
