//! Real multi-process clusters: formed with the CLI, spread uploads, leader loss, catch-up by
//! snapshot, membership changes, and refusals of intruders.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// Nodes sharing one local object store directory (one host), with fast timers.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Node>>,
    extra_env: Vec<(String, String)>,
}

const ENV: &[(&str, &str)] = &[
    ("WHARF_RAFT_HEARTBEAT_MS", "100"),
    ("WHARF_RAFT_ELECTION_TIMEOUT_MIN_MS", "400"),
    ("WHARF_RAFT_ELECTION_TIMEOUT_MAX_MS", "800"),
    ("WHARF_RAFT_SNAPSHOT_EVERY", "30"),
    ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
];

impl Cluster {
    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}"))
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "WHARF_STORE_PATH".into(),
            self.dir.path().join("objects").display().to_string(),
        ));
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn spawn(&self, i: usize, args: &[&str]) -> Node {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Node::spawn(&self.data_dir(i), &env, args)
    }

    /// Node 0 starts a cluster; the others join it at the same time, with a token from the CLI.
    fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    fn start_with(n: usize, env: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let first = c.spawn(0, &[]);
        let token = c.token();
        let seed = first.peer_addr.clone();
        c.nodes.push(Some(first));
        let joined: Vec<Node> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..n)
                .map(|i| {
                    let (c, seed, token) = (&c, &seed, &token);
                    s.spawn(move || c.spawn(i, &["--join", seed, "--token", token]))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        c.nodes.extend(joined.into_iter().map(Some));
        c
    }

    fn token(&self) -> String {
        let d = self.data_dir(0).display().to_string();
        wharf_cli(&["cluster", "token", "--uses", "16", "--data-dir", &d])
            .trim()
            .to_string()
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    fn status_cli(&self, via: usize) -> Value {
        let d = self.data_dir(via).display().to_string();
        let out = wharf_cli(&[
            "cluster",
            "status",
            "--json",
            "--node",
            &self.node(via).base,
            "--data-dir",
            &d,
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// Waits until a node reports a leader among the running nodes; returns its index.
    fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, _) in self.live() {
                let s = self.status_cli(i);
                if let Some(l) = s["leader"].as_u64() {
                    if let Some((j, _)) = self.live().find(|(_, n)| n.node_id == l) {
                        return j;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn chunks_of(data: &[u8], size: usize) -> Vec<&[u8]> {
    data.chunks(size).collect()
}

async fn create(node: &Node, t: &str, name: &str, data: &[u8]) -> (String, usize) {
    let (st, up) = node
        .create(
            t,
            json!({"name": name, "size": data.len(),
                   "blake3": blake3::hash(data).to_hex().to_string()}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    (
        up["upload_id"].as_str().unwrap().to_string(),
        up["chunk_size"].as_u64().unwrap() as usize,
    )
}

/// Retries a chunk PUT while the cluster elects a new leader.
async fn put_until_ok(node: &Node, t: &str, id: &str, i: usize, data: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = node.try_put_chunk(t, id, i, data).await;
        if matches!(st, Ok(StatusCode::NO_CONTENT)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chunk {i} never accepted: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_uploads_survive_leader_loss_and_catch_up_by_snapshot() {
    let mut c = Cluster::start(3);
    let s = c.status_cli(1);
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{s}");
    assert!(
        nodes
            .iter()
            .all(|n| n["reachable"] == true && n["voter"] == true),
        "{s}"
    );
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "leader").count(),
        1,
        "{s}"
    );
    let mut ids: Vec<u64> = nodes.iter().map(|n| n["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3], "node ids are allocated once each");

    // Chunks spread over all three nodes; completion through any of them.
    let t = c.node(0).token("alice", Tier::Basic);
    let data = random_bytes(2 * 8 * MIB + 777, 5);
    let (id, cs) = create(c.node(0), &t, "spread.bin", &data).await;
    for (i, chunk) in chunks_of(&data, cs).iter().enumerate() {
        assert_eq!(
            c.node(i).put_chunk(&t, &id, i, chunk).await,
            StatusCode::NO_CONTENT
        );
    }
    let (_, status) = c.node(2).status(&t, &id).await;
    assert_eq!(status["received"], json!([0, 1, 2]));
    let (st, file) = c.node(1).complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    let fid = file["id"].as_str().unwrap().to_string();
    for (_, n) in c.live() {
        assert!(
            n.download(&t, &fid).await == data,
            "download through node {} differs",
            n.node_id
        );
    }

    // SIGKILL the leader in the middle of an upload; finish it through the survivors.
    let data2 = random_bytes(3 * 8 * MIB, 6);
    let (id2, cs) = create(c.node(0), &t, "during-failover.bin", &data2).await;
    let parts = chunks_of(&data2, cs);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    assert_eq!(
        c.node(follower).put_chunk(&t, &id2, 0, parts[0]).await,
        StatusCode::NO_CONTENT
    );
    let before_kill = c.status_cli(leader);
    let dead_last_log = before_kill["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(c.node(leader).node_id))
        .unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    let dead = c.nodes[leader].take().unwrap().kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    put_until_ok(c.node(survivors[0]), &t, &id2, 1, parts[1]).await;
    put_until_ok(c.node(survivors[1]), &t, &id2, 2, parts[2]).await;
    let (st, file2) = c.node(survivors[1]).complete(&t, &id2).await;
    assert_eq!(st, StatusCode::OK, "{file2}");
    let fid2 = file2["id"].as_str().unwrap().to_string();
    assert!(c.node(survivors[0]).download(&t, &fid2).await == data2);

    // More writes while the node is down, enough for the log to be purged past it.
    let mut small = Vec::new();
    for i in 0..15u64 {
        let f = c
            .node(survivors[i as usize % 2])
            .upload(&t, &format!("s{i}"), &random_bytes(1000, i))
            .await;
        small.push(f["id"].as_str().unwrap().to_string());
    }
    // A leader purges only entries that no replication in flight still reads (openraft), and
    // its retries to the dead node keep one in flight much of the time: under load the purge
    // after a snapshot can wait for a later write. Keep writing (a bounded number) until it is
    // done, so that the restarted node can only catch up by snapshot.
    let new_leader = c.leader();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 15..60u64 {
        let s = c.status_cli(new_leader);
        let purged = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["role"] == "leader")
            .and_then(|n| n["purged_index"].as_u64());
        if purged.is_some_and(|p| p > dead_last_log) {
            break;
        }
        assert!(
            i < 59 && Instant::now() < deadline,
            "the leader kept the log the dead node needs, so no snapshot would be sent: {s}"
        );
        let f = c
            .node(survivors[i as usize % 2])
            .upload(&t, &format!("s{i}"), &random_bytes(1000, i))
            .await;
        small.push(f["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The dead node comes back and catches up (by snapshot: the entries it lacks are gone).
    c.nodes[leader] = Some(dead.restart());
    let back = c.node(leader).node_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status_cli(new_leader);
        let nodes = s["nodes"].as_array().unwrap();
        let leader_applied =
            nodes.iter().find(|n| n["role"] == "leader").unwrap()["applied_index"].as_u64();
        let me = nodes
            .iter()
            .find(|n| n["id"].as_u64() == Some(back))
            .unwrap();
        if me["reachable"] == true && me["applied_index"].as_u64() >= leader_applied {
            assert!(
                me["snapshot_index"].as_u64().unwrap() > dead_last_log,
                "{s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {back} never caught up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let back_node = c.node(leader);
    assert!(back_node.download(&t, &fid2).await == data2);
    let (_, list) = json(
        back_node
            .get(&t, "/v1/files?limit=100&consistency=stale")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        list["files"].as_array().unwrap().len(),
        2 + small.len(),
        "{list}"
    );

    // Every node, the one restored from a snapshot included, ends with the same state: the
    // same applied index and the same digest of the state machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status_cli(new_leader);
        let seen: Vec<(Value, Value)> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["applied_index"].clone(), n["state_digest"].clone()))
            .collect();
        if seen.iter().all(|x| *x == seen[0]) {
            assert_eq!(seen.len(), 3);
            assert_eq!(seen[0].1.as_str().unwrap().len(), 64, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "states never converged: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn intruders_are_refused_a_bad_join_token_and_a_client_without_certificate() {
    let c = Cluster::start(1);
    let good = c.token();
    let seed = c.node(0).peer_addr.clone();

    // A token with a forged secret, and one made for another cluster.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = "A".repeat(43);
    let forged = parts.join(".");
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().display().to_string();
    let foreign = wharf_cli(&["cluster", "init", "--data-dir", &other])
        .trim()
        .to_string();
    for (token, why) in [(&forged, "not valid"), (&foreign, "")] {
        let dir = tempfile::tempdir().unwrap();
        let err = start_must_fail(dir.path(), &[], &["--join", &seed, "--token", token]);
        assert!(err.contains("joining the cluster"), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(
            !dir.path().join("tls").exists(),
            "a refused node kept an identity"
        );
    }
    // An expired token.
    let d0 = c.data_dir(0).display().to_string();
    let short = wharf_cli(&["cluster", "token", "--data-dir", &d0, "--ttl", "1s"])
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let err = start_must_fail(dir.path(), &[], &["--join", &seed, "--token", &short]);
    assert!(err.contains("expired"), "{err}");

    // gRPC without a client certificate: TLS connects (the CA is known) but every call but
    // Join is refused.
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    use wharf_proto::cluster::cluster_service_client::ClusterServiceClient;
    use wharf_proto::cluster::raft_service_client::RaftServiceClient;
    let ca = std::fs::read_to_string(c.data_dir(0).join("tls/ca.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .domain_name("wharf-node");
    let channel = Endpoint::from_shared(format!("https://{seed}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = ClusterServiceClient::new(channel.clone())
        .status(wharf_proto::cluster::Empty {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = RaftServiceClient::new(channel.clone())
        .vote(wharf_proto::cluster::RaftRequest {
            json: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // A message above the size limit, without a certificate: refused for the certificate,
    // before the node reads (and decodes) it.
    let err = RaftServiceClient::new(channel.clone())
        .max_encoding_message_size(128 << 20)
        .append_entries(wharf_proto::cluster::RaftRequest {
            json: vec![b' '; 70 << 20],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // The cluster service (where Join comes without a certificate) decodes at most 8 MiB.
    let err = ClusterServiceClient::new(channel)
        .max_encoding_message_size(128 << 20)
        .forward(wharf_proto::cluster::ForwardRequest {
            command_json: vec![b' '; 9 << 20],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{err}"
    );

    // A certificate from another cluster's CA does not get past the TLS handshake.
    let foreign_cert = std::fs::read_to_string(other_dir.path().join("tls/node.pem")).unwrap();
    let foreign_key = std::fs::read_to_string(other_dir.path().join("tls/node.key")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(foreign_cert, foreign_key))
        .domain_name("wharf-node");
    let refused = async {
        let channel = Endpoint::from_shared(format!("https://{seed}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        ClusterServiceClient::new(channel)
            .status(wharf_proto::cluster::Empty {})
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(refused.is_err(), "a foreign certificate was accepted");
    assert!(Path::new(&c.data_dir(0)).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_node_keeps_the_cluster_writable() {
    let mut c = Cluster::start(3);
    let d0 = c.data_dir(0).display().to_string();
    let gone = c.node(2).node_id;
    let out = wharf_cli(&[
        "cluster",
        "remove",
        &gone.to_string(),
        "--node",
        &c.node(1).base,
        "--data-dir",
        &d0,
    ]);
    assert!(out.contains("removed"), "{out}");
    let s = c.status_cli(0);
    let ids: Vec<u64> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{s}");
    assert!(!ids.contains(&gone), "{s}");
    drop(c.nodes[2].take());
    let t = c.node(0).token("bo", Tier::Basic);
    for (i, n) in [c.node(0), c.node(1)].iter().enumerate() {
        let data = random_bytes(5000, i as u64);
        let f = n.upload(&t, &format!("after-remove-{i}"), &data).await;
        assert!(n.download(&t, f["id"].as_str().unwrap()).await == data);
    }
    // Non-admins cannot change membership.
    let r = c
        .node(0)
        .delete(&t, "/v1/cluster/nodes/2")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 403, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_staged_on_a_node_down_past_the_grace_time_are_missing_again() {
    let mut c = Cluster::start_with(3, &[("WHARF_CLUSTER_STAGING_GRACE_SECS", "2")]);
    // The object store refuses new multipart uploads for a while, so chunks stay staged.
    let mp = c.dir.path().join("objects/.multipart");
    let parked = c.dir.path().join("objects/.multipart.parked");
    std::fs::rename(&mp, &parked).unwrap();
    std::fs::write(&mp, b"not a directory").unwrap();

    let t = c.node(0).token("gina", Tier::Basic);
    let data = random_bytes(8 * MIB + 4321, 9);
    let (id, cs) = create(c.node(0), &t, "grace.bin", &data).await;
    let parts = chunks_of(&data, cs);
    // Node 2 holds chunk 0; nodes 0 and 1 keep a quorum without it.
    let (holder, live) = (2, 1);
    assert_eq!(
        c.node(holder).put_chunk(&t, &id, 0, parts[0]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.node(0).put_chunk(&t, &id, 1, parts[1]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.node(0).status(&t, &id).await.1["received"], json!([0, 1]));
    let _dead = c.nodes[holder].take().unwrap().kill9();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = c.node(0).status(&t, &id).await;
        if s["missing"] == json!([0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chunk 0 never reported missing: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (st, body) = c.node(0).complete(&t, &id).await;
    assert_error(&(st, body), 409, "missing_chunks");

    // The store recovers; the client re-sends the lost chunk to a live node and completes.
    std::fs::remove_file(&mp).unwrap();
    std::fs::rename(&parked, &mp).unwrap();
    put_until_ok(c.node(live), &t, &id, 0, parts[0]).await;
    let (st, file) = c.node(0).complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    assert!(
        c.node(live)
            .download(&t, file["id"].as_str().unwrap())
            .await
            == data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_killed_again_and_again_under_writes_and_snapshot_installs_loses_nothing() {
    // Snapshots every 30 entries: a follower that was down a moment needs one to catch up,
    // and it is killed again while it receives and installs it.
    let mut c = Cluster::start(3);
    let t = c.node(0).token("alice", Tier::Basic);
    let leader = c.leader();
    let victim = (leader + 1) % 3;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (base, http, t, stop) = (
                c.node(leader).base.clone(),
                c.node(leader).http.clone(),
                t.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let data = random_bytes(200 + (i % 5) as usize, w * 100_000 + i);
                    let r = http
                        .post(format!("{base}/v1/files?name=w{w}-{i}"))
                        .bearer_auth(&t)
                        .body(data.clone())
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if r.status() == StatusCode::CREATED {
                            let v: Value = r.json().await.unwrap();
                            acked.push((v["id"].as_str().unwrap().to_string(), data));
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let mut kills = 0;
    for round in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let dir = c.nodes[victim].take().unwrap().kill9();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let back = dir.restart();
        // Killed again soon after it came back: often while a snapshot is on its way or
        // being installed.
        tokio::time::sleep(Duration::from_millis(150 + 100 * round)).await;
        c.nodes[victim] = Some(back);
        if round < 4 {
            let dir = c.nodes[victim].take().unwrap().kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.nodes[victim] = Some(dir.restart());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );

    // Every node ends with the same applied index and digest.
    let writes_ended = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = c.status_cli(leader);
        let seen: Vec<(Value, Value, Value)> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["applied_index"].clone(),
                    n["state_digest"].clone(),
                    n["reachable"].clone(),
                )
            })
            .collect();
        if seen.len() == 3 && seen.iter().all(|x| *x == seen[0] && x.2 == true) {
            break s;
        }
        assert!(Instant::now() < deadline, "states never converged: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let victim_status = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(c.node(victim).node_id))
        .cloned()
        .unwrap();
    eprintln!(
        "{} acknowledged files, {kills} SIGKILLs of node {}; converged {:?} after the writes: \
         {victim_status}",
        acked.len(),
        victim + 1,
        writes_ended.elapsed()
    );

    // Nothing acknowledged is lost, on the leader and on the node that was killed.
    for via in [leader, victim] {
        let listed = c.node(via).file_ids(&t, true).await;
        let lost = acked.iter().filter(|(id, _)| !listed.contains(id)).count();
        assert_eq!(
            lost,
            0,
            "node {}: {lost} acknowledged files missing",
            via + 1
        );
    }
    for (id, data) in acked.iter().step_by(25) {
        assert!(
            c.node(victim).download(&t, id).await == *data,
            "{id} differs"
        );
    }
}
