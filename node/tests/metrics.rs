//! `GET /metrics` on a real node process: Prometheus text whose counters move with the traffic
//! of the test, by exactly what the test did.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::quic::{call, connect, hello, ok_json};
use common::*;
use reqwest::StatusCode;
use wharf_proto::quic::{request::Op, UploadRef};
use wharf_raft::model::Tier;

/// One sample: its name and labels, and its value.
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch a malformed exposition: every
/// sample line is `name{label="value",...} number`, and every sample belongs to a family that
/// was declared with `# TYPE` before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a family name").to_string();
            let kind = parts.next().expect("a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.push(name);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(&name);
        assert!(
            typed.iter().any(|t| t == family),
            "{name} has no # TYPE line"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none yet).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(node: &Node) -> Vec<Sample> {
    let r = reqwest::get(node.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let kind = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    parse(&r.text().await.unwrap())
}

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
