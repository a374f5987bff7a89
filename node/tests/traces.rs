//! Traces: with `tracing.otlp_endpoint`, nodes export spans over OTLP/HTTP; a write sent to a
//! follower is one trace, from the caller's `traceparent` through the follower's request span
//! to the leader's span for the forwarded write. The collector is in the test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// A span as the collector got it: its service instance (the node's HTTP address), name, ids.
#[derive(Clone, Debug)]
struct Span {
    instance: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

/// An OTLP/HTTP (JSON) collector: the spans of every export request.
async fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut got = sink.lock().unwrap();
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    let instance = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.instance.id")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for s in ss["spans"].as_array().into_iter().flatten() {
                            let field = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
                            got.push(Span {
                                instance: instance.clone(),
                                name: field("name"),
                                trace: field("traceId"),
                                id: field("spanId"),
                                parent: field("parentSpanId"),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_to_a_follower_is_one_trace_through_the_leader() {
    let (endpoint, spans) = collector().await;
    let s3 = s3::S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WHARF_TRACING_OTLP_ENDPOINT", endpoint.as_str()),
        ("WHARF_TRACING_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("WHARF_LOG_FORMAT", "json"),
    ];
    let nodes = three_nodes_over_s3(dir.path(), &s3, &env);
    // The leader, as the first node reports it.
    let admin = nodes[0].token("root", Tier::Admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let (_, st) = json(
            nodes[0]
                .get(&admin, "/v1/cluster/status")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if let Some(l) = st["leader"].as_u64() {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let follower = nodes.iter().find(|n| n.node_id != leader).unwrap();
    let leader_node = nodes.iter().find(|n| n.node_id == leader).unwrap();

    // The caller's own trace: the follower takes the request, the leader commits it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let t = follower.token("ann", Tier::Basic);
    let r = follower
        .post(&t, "/v1/folders")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"name": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (http, forward) = loop {
        let got: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        let http = got
            .iter()
            .find(|s| s.name == "http" && s.instance == follower.http_addr())
            .cloned();
        let forward = got
            .iter()
            .find(|s| s.name == "forward" && s.instance == leader_node.http_addr())
            .cloned();
        if let (Some(h), Some(f)) = (http, forward) {
            break (h, f);
        }
        if Instant::now() >= deadline {
            let all = spans.lock().unwrap().clone();
            panic!(
                "the trace never reached the collector whole: {got:#?}; of all {} spans: {:#?}",
                all.len(),
                &all[..all.len().min(8)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The follower's request span continues the caller's span; the leader's forward span
    // descends from the follower's spans.
    assert_eq!(http.parent, "00f067aa0ba902b7");
    let follower_spans: Vec<Span> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace == trace && s.instance == follower.http_addr())
        .cloned()
        .collect();
    assert!(
        follower_spans.iter().any(|s| s.id == forward.parent),
        "the leader's span {forward:?} does not descend from the follower's {follower_spans:#?}"
    );
}
