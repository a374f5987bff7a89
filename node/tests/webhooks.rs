//! Webhooks: every event of a workload reaches the receiver exactly once by its id (the log
//! index), in log order, signed, while the leader is SIGKILLed twice and the receiver fails
//! for a while; the admin routes validate and show the lag.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use wharf_raft::model::Tier;

const SECRET: &str = "a-webhook-secret-of-some-length";

/// What the receiver got: each POST's body, and whether it answered 2xx.
#[derive(Default)]
struct Received {
    posts: Vec<(Value, bool)>,
    bad_signatures: usize,
}

/// A receiver that answers 500 until `fail_until`, then 200; it checks every signature.
async fn receiver(fail_until: Instant) -> (String, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let sig = headers
                    .get("x-wharf-signature")
                    .and_then(|v| v.to_str().ok());
                let mut s = state.lock().unwrap();
                if sig != Some(want.as_str()) {
                    s.bad_signatures += 1;
                    return AxumStatus::UNAUTHORIZED;
                }
                let ok = Instant::now() >= fail_until;
                s.posts.push((serde_json::from_slice(&body).unwrap(), ok));
                if ok {
                    AxumStatus::OK
                } else {
                    AxumStatus::INTERNAL_SERVER_ERROR
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// The index (in `nodes`) of the leader the running nodes agree on.
async fn leader(nodes: &[Option<Node>], admin: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let Ok(r) = n.get(&admin[i], "/v1/cluster/status").send().await else {
                continue;
            };
            let (_, st) = json(r).await;
            if let Some(l) = st["leader"].as_u64() {
                if let Some(j) = nodes
                    .iter()
                    .position(|m| m.as_ref().is_some_and(|m| m.node_id == l))
                {
                    return j;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/files` to the running nodes in turn until one answers 201.
async fn put_file(nodes: &[Option<Node>], tokens: &[String], name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let i = attempt % nodes.len();
        if let Some(n) = &nodes[i] {
            let r = n
                .post(&tokens[i], "/v1/files")
                .query(&[("name", name), ("idempotency_key", name)])
                .body(name.as_bytes().to_vec())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(r) = r {
                let (st, f) = json(r).await;
                if st == StatusCode::CREATED {
                    return f;
                }
            }
        }
        assert!(Instant::now() < deadline, "{name} was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_completion_reaches_the_receiver_once_through_leader_kills_and_receiver_errors() {
    let s3 = s3::S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Option<Node>> = three_nodes_over_s3(dir.path(), &s3, &[])
        .into_iter()
        .map(Some)
        .collect();
    let admin: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().token("root", Tier::Admin))
        .collect();
    let ann: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().token("ann", Tier::Basic))
        .collect();
    let n0 = nodes[0].as_ref().unwrap();

    // Bad webhooks are refused.
    for (body, code) in [
        (json!({"url": "ftp://x/hook"}), "invalid_request"),
        (json!({"url": "not a url"}), "invalid_request"),
        (
            json!({"url": "http://x/hook", "events": ["upload.exploded"]}),
            "invalid_request",
        ),
        (
            json!({"url": "http://x/hook", "secret": "short"}),
            "invalid_request",
        ),
    ] {
        let got = json(
            n0.post(&admin[0], "/v1/admin/webhooks")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(&got, 400, code);
    }
    let got = json(
        n0.post(&ann[0], "/v1/admin/webhooks")
            .json(&json!({"url": "http://127.0.0.1:1/hook"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 403, "forbidden");

    // An event from before the webhook is not its own.
    let (st, _) = json(
        n0.post(&ann[0], "/v1/files")
            .query(&[("name", "before.txt")])
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The receiver fails for the first 3 seconds.
    let (url, got) = receiver(Instant::now() + Duration::from_secs(3)).await;
    let (st, hook) = json(
        n0.post(&admin[0], "/v1/admin/webhooks")
            .json(&json!({"url": url, "events": ["upload.completed", "file.renamed"], "secret": SECRET}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    assert_eq!(hook["secret"], SECRET);
    let hook_id = hook["id"].as_str().unwrap().to_string();

    // The workload: files stored (one event each) and renamed (another), with the leader
    // killed (and restarted) twice on the way.
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            let f = put_file(&nodes, &ann, &format!("r{round}-f{i}.txt")).await;
            acknowledged.push(f["id"].as_str().unwrap().to_string());
        }
        let renamed = &acknowledged[acknowledged.len() - 1];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let i = (deadline - Instant::now()).as_millis() as usize % 3;
            if let Some(n) = &nodes[i] {
                let r = n
                    .http
                    .patch(n.url(&format!("/v1/files/{renamed}")))
                    .bearer_auth(&ann[i])
                    .json(&json!({"name": format!("renamed-{round}.txt")}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "rename never went through");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if round < 2 {
            let l = leader(&nodes, &admin).await;
            let dead = nodes[l].take().unwrap().kill9();
            // Writes go on while it is down; then it comes back.
            let f = put_file(&nodes, &ann, &format!("r{round}-while-down.txt")).await;
            acknowledged.push(f["id"].as_str().unwrap().to_string());
            nodes[l] = Some(dead.restart());
        }
    }

    // Every event delivered: the webhook's lag drains to 0.
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let l = leader(&nodes, &admin).await;
        let n = nodes[l].as_ref().unwrap();
        let (st, v) = json(
            n.get(&admin[l], &format!("/v1/admin/webhooks/{hook_id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["pending"] == 0 && v["delivered"].as_u64() >= Some(acknowledged.len() as u64 + 3) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never caught up: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(view["dropped"], 0, "{view}");

    let got = std::mem::take(&mut *got.lock().unwrap());
    assert_eq!(got.bad_signatures, 0);
    assert!(
        got.posts.iter().any(|(_, ok)| !ok),
        "the receiver's errors were never retried"
    );
    // Accepted deliveries, by event id: each event's body is the same every time it came.
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (body, _) in got.posts.iter().filter(|(_, ok)| *ok) {
        let id = body["id"].as_str().unwrap().to_string();
        if let Some(first) = by_id.get(&id) {
            assert_eq!(first, body, "event {id} changed between deliveries");
        } else {
            by_id.insert(id.clone(), body.clone());
            order.push(id);
        }
    }
    // Only an event whose acknowledgement died with its leader comes twice: at most one per
    // leader killed.
    let accepted = got.posts.iter().filter(|(_, ok)| *ok).count();
    assert!(
        accepted - by_id.len() <= 2,
        "{} events delivered again after their acknowledgement was committed",
        accepted - by_id.len()
    );
    // Log order: ids (index-seq) grow.
    let key = |id: &str| -> (u64, u64) {
        let (i, s) = id.split_once('-').unwrap();
        (i.parse().unwrap(), s.parse().unwrap())
    };
    assert!(
        order.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "events out of log order: {order:?}"
    );
    // Exactly the workload's events: one completion per stored file (the one stored before
    // the webhook aside), one rename per round.
    let completed: BTreeSet<String> = by_id
        .values()
        .filter(|b| b["type"] == "upload.completed")
        .map(|b| b["file_id"].as_str().unwrap().to_string())
        .collect();
    let completions = by_id
        .values()
        .filter(|b| b["type"] == "upload.completed")
        .count();
    assert_eq!(completions, completed.len(), "a file completed twice");
    let want: BTreeSet<String> = acknowledged.iter().cloned().collect();
    assert_eq!(completed, want);
    let renames: Vec<&Value> = by_id
        .values()
        .filter(|b| b["type"] == "file.renamed")
        .collect();
    assert_eq!(renames.len(), 3, "{renames:?}");
    assert!(by_id.values().all(|b| b["user"] == "ann"));
    assert_eq!(
        view["delivered"].as_u64(),
        Some(by_id.len() as u64),
        "{view}"
    );

    // Deleted: gone from the list.
    let l = leader(&nodes, &admin).await;
    let n = nodes[l].as_ref().unwrap();
    let st = n
        .delete(&admin[l], &format!("/v1/admin/webhooks/{hook_id}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, list) = json(n.get(&admin[l], "/v1/admin/webhooks").send().await.unwrap()).await;
    assert_eq!(list["webhooks"], json!([]));
}
