//! Prometheus metrics: the process's recorder and the help text of every metric (the route
//! `GET /metrics` and the request-counting middleware are in `api/http/metrics.rs`); and the
//! OTLP export of traces ([`traces`]).
//!
//! Code anywhere records through the `metrics` facade (`counter!`, `gauge!`, `histogram!`),
//! without a handle passed around; until [`install`] runs (in a library test, say) those calls
//! do nothing. Names start with `wharf_`; docs/OPERATIONS.md lists them with their meaning.
//! Labels are bounded sets (a route's pattern, never its path; an error code; a verdict), so
//! the number of series never grows with traffic.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from a cached read to a slow whole-chunk upload.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once: several nodes in one test process share it) and
/// returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder installed first (an embedding program's): ours then renders
            // nothing, and /metrics says so by being empty.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already: /metrics stays empty");
            }
            describe();
            // Histograms keep their samples until upkeep folds them into buckets: run it
            // often enough that memory stays flat whatever the traffic.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

/// The help text of every metric wharf records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "wharf_http_requests_total",
        "HTTP requests answered, by method, route pattern and status"
    );
    describe_histogram!(
        "wharf_http_request_duration_seconds",
        Unit::Seconds,
        "time from a request's head to its answer's head, by method and route pattern"
    );
    describe_counter!(
        "wharf_http_errors_total",
        "error answers by stable error code (rate_limited counts rate-limit refusals)"
    );
    describe_gauge!("wharf_http_connections", "HTTP connections open");
    describe_counter!(
        "wharf_quic_requests_total",
        "QUIC requests (one a stream) by operation and result (ok or the error code)"
    );
    describe_histogram!(
        "wharf_quic_request_duration_seconds",
        Unit::Seconds,
        "time from a QUIC request's frame to its reply, by operation"
    );
    describe_counter!(
        "wharf_http_connections_refused_total",
        "HTTP connections refused at the connection limits"
    );
    describe_counter!(
        "wharf_chunks_staged_total",
        "chunks received whole, fsynced and recorded in Raft on this node"
    );
    describe_counter!(
        "wharf_chunk_bytes_received_total",
        Unit::Bytes,
        "bytes of chunks staged on this node (tus tails included)"
    );
    describe_counter!(
        "wharf_chunks_failed_total",
        "chunk receptions that kept nothing, by error code"
    );
    describe_counter!(
        "wharf_chunks_offloaded_total",
        "staged chunks moved into the object store by this node"
    );
    describe_counter!(
        "wharf_offload_failures_total",
        "offload attempts that failed (retried later)"
    );
    describe_gauge!(
        "wharf_offload_queue",
        "staged chunks on this node waiting for the object store"
    );
    describe_gauge!(
        "wharf_staging_bytes",
        Unit::Bytes,
        "bytes held in this node's staging directory"
    );
    describe_counter!(
        "wharf_download_bytes_total",
        Unit::Bytes,
        "bytes of file content this node answered with"
    );
    describe_counter!(
        "wharf_scans_total",
        "scans finished on this node, by verdict"
    );
    describe_gauge!("wharf_scans_running", "scans this node is running now");
    describe_gauge!(
        "wharf_scans_waiting",
        "blobs in the cluster waiting for a scan or being scanned (counted up to 10,000)"
    );
    describe_histogram!(
        "wharf_scan_duration_seconds",
        Unit::Seconds,
        "time to stream one object through clamd"
    );
    describe_gauge!("wharf_raft_term", "the Raft term this node is in");
    describe_gauge!(
        "wharf_raft_leader",
        "the node id of the leader this node follows"
    );
    describe_gauge!("wharf_raft_is_leader", "1 on the leader, 0 elsewhere");
    describe_gauge!(
        "wharf_raft_last_log_index",
        "the last index in this node's log"
    );
    describe_gauge!(
        "wharf_raft_applied_index",
        "the last index applied to this node's state"
    );
    describe_gauge!(
        "wharf_raft_snapshot_index",
        "the index of this node's last snapshot"
    );
    describe_gauge!(
        "wharf_raft_purged_index",
        "the last log index this node purged"
    );
    describe_gauge!(
        "wharf_raft_log_entries",
        "entries in this node's log (last index minus purged index)"
    );
    describe_histogram!(
        "wharf_raft_proposal_duration_seconds",
        Unit::Seconds,
        "time from a proposal to its committed outcome, by result"
    );
    describe_counter!(
        "wharf_raft_snapshots_built_total",
        "snapshots this node built"
    );
    describe_histogram!(
        "wharf_raft_snapshot_build_seconds",
        Unit::Seconds,
        "time to build one snapshot"
    );
}

/// The metrics in Prometheus text format; `None` until [`install`] ran.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// The layer that exports spans over OTLP/HTTP to `tracing.otlp_endpoint` (none when it is
/// empty), as service `wharf`, instance `instance` (the node's HTTP address). The W3C trace
/// context (`traceparent`) is the propagator: requests and node-to-node forwards continue the
/// caller's trace.
pub fn traces<S>(
    config: &crate::config::TracingConfig,
    instance: &str,
) -> anyhow::Result<Option<impl tracing_subscriber::Layer<S>>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    if config.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let base = config.otlp_endpoint.trim_end_matches('/');
    let endpoint = if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    };
    let protocol = match config.otlp_protocol {
        crate::config::OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        crate::config::OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("tracing.otlp_endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("wharf")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance.to_string(),
        ))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("wharf");
    let _ = TRACER_PROVIDER.set(provider);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// Sends the spans still batched (at the node's exit).
pub fn shutdown_traces() {
    if let Some(p) = TRACER_PROVIDER.get() {
        let _ = p.shutdown();
    }
}
