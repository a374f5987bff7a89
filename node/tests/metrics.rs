//! `GET /metrics` on a real node process: Prometheus text whose counters move with the traffic
//! of the test, by exactly what the test did.

mod common;

use std::time::{Duration, Instant};

use common::prometheus::{parse, scrape, value};
use common::quic::{call, connect, hello, ok_json};
use common::*;
use reqwest::StatusCode;
use wharf_proto::quic::{request::Op, UploadRef};
use wharf_raft::model::Tier;

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    // Something recorded before the first scrape, so that the families exist.
    let _ = node.upload(&t, "warm-up.bin", b"warm").await;
    let before = scrape(&node).await;
    assert_eq!(value(&before, "wharf_raft_is_leader", &[]), 1.0);
    assert!(value(&before, "wharf_raft_term", &[]) >= 1.0);
    assert!(value(&before, "wharf_raft_applied_index", &[]) > 0.0);
    assert!(
        value(&before, "wharf_raft_last_log_index", &[])
            >= value(&before, "wharf_raft_applied_index", &[])
    );

    // Three chunks (8 MiB, 8 MiB, 1 byte), a download, a 404.
    let data = random_bytes(16 * MIB + 1, 7);
    let file = node.upload(&t, "three-chunks.bin", &data).await;
    let id = file["id"].as_str().unwrap();
    assert!(node.download(&t, id).await == data);
    let missing = "0190f5a4-0000-7000-8000-000000000000";
    let r = node
        .get(&t, &format!("/v1/files/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Over QUIC: a status request for an upload that does not exist.
    let conn = connect(&node).await;
    ok_json(hello(&conn, &t).await);
    let upload_id = missing.to_string();
    let r = call(&conn, Op::Status(UploadRef { upload_id }), None)
        .await
        .unwrap();
    assert_eq!(r.code, "not_found");

    // Offload is counted once its record committed, just after the completion saw it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = scrape(&node).await;
        let offloaded = value(&now, "wharf_chunks_offloaded_total", &[])
            - value(&before, "wharf_chunks_offloaded_total", &[]);
        if offloaded >= 3.0 || Instant::now() > deadline {
            assert_eq!(offloaded, 3.0, "chunks offloaded");
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(delta("wharf_chunks_staged_total", &[]), 3.0);
    assert_eq!(
        delta("wharf_chunk_bytes_received_total", &[]),
        data.len() as f64
    );
    assert_eq!(delta("wharf_download_bytes_total", &[]), data.len() as f64);
    let route = |method, route, status| [("method", method), ("route", route), ("status", status)];
    assert_eq!(
        delta(
            "wharf_http_requests_total",
            &route("POST", "/v1/uploads", "201")
        ),
        1.0
    );
    assert_eq!(
        delta(
            "wharf_http_requests_total",
            &route("PUT", "/v1/uploads/{id}/chunks/{index}", "204")
        ),
        3.0
    );
    assert_eq!(
        delta(
            "wharf_http_requests_total",
            &route("GET", "/v1/files/{id}", "404")
        ),
        1.0
    );
    assert_eq!(
        delta("wharf_http_errors_total", &[("code", "not_found")]),
        1.0
    );
    assert_eq!(
        delta(
            "wharf_quic_requests_total",
            &[("op", "status"), ("result", "not_found")]
        ),
        1.0
    );
    // No series is named after an id: the route label is the pattern.
    assert!(after.iter().all(|s| s
        .labels
        .values()
        .all(|v| !v.contains(missing) && !v.contains(id))));
    // Every request is in the latency histogram, and its +Inf bucket counts them all.
    let put = [
        ("method", "PUT"),
        ("route", "/v1/uploads/{id}/chunks/{index}"),
    ];
    assert_eq!(
        delta("wharf_http_request_duration_seconds_count", &put),
        3.0
    );
    assert_eq!(
        delta(
            "wharf_http_request_duration_seconds_bucket",
            &[put[0], put[1], ("le", "+Inf")]
        ),
        3.0
    );
    // The create, three chunks staged, three offloaded and the completion were committed.
    assert!(
        delta(
            "wharf_raft_proposal_duration_seconds_count",
            &[("result", "committed")]
        ) >= 8.0
    );
    assert!(
        value(&after, "wharf_raft_applied_index", &[])
            > value(&before, "wharf_raft_applied_index", &[])
    );
    assert!(value(&after, "wharf_http_connections", &[]) >= 1.0);
}

#[tokio::test]
async fn metrics_listen_serves_only_metrics_on_a_second_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let node = Node::start_with(dir.path(), &[("WHARF_METRICS_LISTEN", addr.as_str())]);
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let samples = parse(&r.text().await.unwrap());
    assert_eq!(value(&samples, "wharf_raft_is_leader", &[]), 1.0);
    // Nothing but the metrics there: the API stays on the HTTP address.
    let t = node.token("alice", Tier::Basic);
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/v1/files"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = node.get(&t, "/v1/files").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn a_metrics_listen_that_is_no_address_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = start_must_fail(dir.path(), &[("WHARF_METRICS_LISTEN", "everywhere")], &[]);
    assert!(err.contains("metrics.listen"), "{err}");
}
