//! `GET /metrics` (Prometheus text) and the middleware that counts every HTTP request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// `wharf_scans_waiting` counts at most this many blobs.
const SCAN_BACKLOG_COUNTED: usize = 10_000;

/// `GET /metrics`: Prometheus text format. Like etcd's and MinIO's (by default), it takes no
/// token: put it behind the network's own access rules.
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let st = s.meta.node_status();
    let set = |name: &'static str, v: u64| metrics::gauge!(name).set(v as f64);
    set("wharf_raft_term", st.term);
    set("wharf_raft_leader", st.leader);
    set("wharf_raft_is_leader", u64::from(st.role == "leader"));
    set("wharf_raft_last_log_index", st.last_log_index);
    set("wharf_raft_applied_index", st.applied_index);
    set("wharf_raft_snapshot_index", st.snapshot_index);
    set("wharf_raft_purged_index", st.purged_index);
    set(
        "wharf_raft_log_entries",
        st.last_log_index.saturating_sub(st.purged_index),
    );
    set("wharf_staging_bytes", s.uploads.staging_bytes());
    // Counted up to a bound: a scrape never walks a huge backlog.
    let waiting = s.meta.local().scan_queue(SCAN_BACKLOG_COUNTED).len();
    set("wharf_scans_waiting", waiting as u64);
    // Rendered after the gauges above were set, so that the first scrape has them too.
    let Some(text) = crate::telemetry::render() else {
        return (StatusCode::NOT_FOUND, "metrics are not installed\n").into_response();
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Counts every request by method, route pattern (`/v1/files/{id}`, never the id) and status,
/// with its latency.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    // The request's span, continuing the caller's trace (`traceparent`) when it sent one.
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty
    );
    wharf_cluster::trace::continue_from_headers(&span, req.headers());
    let started = Instant::now();
    let resp = tracing::Instrument::instrument(next.run(req), span).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(
        "wharf_http_request_duration_seconds",
        "method" => method.clone(),
        "route" => route.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "wharf_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status
    )
    .increment(1);
    resp
}
