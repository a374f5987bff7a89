//! The node's own section and its client front ends: `node`, `http`, `quic`, `rate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{GIB, MIB};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id; never reuse one.
    pub id: u64,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    /// The client QUIC endpoint (UDP).
    pub quic_addr: SocketAddr,
    /// HTTPS for the HTTP API: a PEM certificate chain and its key (both, or neither).
    pub tls_cert: String,
    pub tls_key: String,
    /// `"cluster"`: serve HTTPS with this node's cluster certificate (clients trust the
    /// cluster CA, `tls/ca.pem`, with `--ca`); empty: plain HTTP unless `tls_cert` is set.
    pub tls: String,
    /// On SIGTERM: stop accepting, let requests in flight finish for at most this long, exit.
    pub drain_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: PathBuf::from("./wharf-data"),
            http_addr: "127.0.0.1:7070".parse().expect("valid address"),
            quic_addr: "127.0.0.1:7071".parse().expect("valid address"),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls: String::new(),
            drain_secs: 10,
        }
    }
}

/// Limits of the HTTP front end against slow, idle and greedy clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive whole within this long (slow-header clients).
    pub header_timeout_secs: u64,
    /// A request body (a chunk, a one-request file) that makes no progress for this long is
    /// dropped, and its chunk freed for another sender at once.
    pub body_idle_secs: u64,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idle_secs: u64,
    /// TCP keepalive probes after this long of silence (finds peers that vanished).
    pub tcp_keepalive_secs: u64,
    /// Open connections at most; beyond it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address at most (503 beyond it): one client cannot
    /// take every place.
    pub max_connections_per_ip: usize,
    /// The largest JSON request body (413 beyond it).
    pub json_body_max: u64,
    /// An error answered before the request body was read: up to this many body bytes are
    /// read and dropped first, so the client sees the answer instead of a broken pipe.
    pub linger_max_bytes: u64,
    /// Browser pages on these origins (comma-separated, e.g. `https://app.example.com`; `*`
    /// for any) may call the API and tus: CORS. Empty (the default): same origin only.
    pub cors_origins: String,
}

impl HttpConfig {
    /// `cors_origins` as a list, each checked to be `*` or `scheme://host[:port]`.
    pub fn cors_origins(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for o in self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.split_once("://").is_some_and(|(_, rest)| {
                        !rest.is_empty()
                            && !rest.contains('/')
                            && rest.bytes().all(|b| b.is_ascii_graphic())
                    }));
            if !ok {
                bail!("http.cors_origins: {o:?} is not * or scheme://host[:port] (no path)");
            }
            out.push(o.to_string());
        }
        Ok(out)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 20,
            body_idle_secs: 20,
            idle_secs: 60,
            tcp_keepalive_secs: 30,
            max_connections: 1024,
            max_connections_per_ip: 256,
            json_body_max: 64 * 1024,
            linger_max_bytes: 64 * MIB,
            cors_origins: String::new(),
        }
    }
}

/// Limits of the client QUIC endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// A connection that has not sent a valid Hello within this long is closed.
    pub hello_timeout_secs: u64,
    /// Open connections at most (new ones are refused beyond it).
    pub max_connections: usize,
    /// Open connections per user at most (the Hello beyond it is refused).
    pub max_connections_per_user: usize,
    /// Open connections from one client address at most, Hello or not.
    pub max_connections_per_ip: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            hello_timeout_secs: 5,
            max_connections: 1024,
            max_connections_per_user: 32,
            max_connections_per_ip: 256,
        }
    }
}

/// Node-local rate limits (token buckets; each node counts on its own). Requests are counted
/// per user and per client IP; chunk bodies by bytes per user instead. 0 turns a limit off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Requests per second from one client IP (bursts of twice it).
    pub ip_requests_per_sec: u32,
    /// Requests per second of one basic user (premium and admin: `premium_factor` times it).
    pub user_requests_per_sec: u32,
    /// Chunk and file body bytes per second of one basic user (premium: times the factor).
    pub user_bytes_per_sec: u64,
    /// Upload sessions (and one-request files) one basic user may create per second.
    pub user_creates_per_sec: u32,
    /// How many times the basic limits premium and admin users get.
    pub premium_factor: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            ip_requests_per_sec: 1000,
            user_requests_per_sec: 500,
            user_bytes_per_sec: GIB,
            user_creates_per_sec: 100,
            premium_factor: 4,
        }
    }
}

/// `GET /metrics` (Prometheus text) is served on the HTTP address; `listen` serves it on a
/// second, plain-HTTP address as well (the scraper's network, say), with nothing else there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`, or empty for none.
    pub listen: String,
}

impl MetricsConfig {
    /// The second address, if one is set.
    pub fn listen_addr(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "metrics.listen must be host:port, such as 127.0.0.1:9100 (got {:?})",
                self.listen
            )
        })
    }
}

/// Traces: spans of each request (and of its forward to the leader) exported over OTLP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// An OTLP/HTTP collector (`http://collector:4318`, or its full `/v1/traces` URL); empty:
    /// no traces are exported.
    pub otlp_endpoint: String,
    /// `http/protobuf` (the default) or `http/json`.
    pub otlp_protocol: OtlpProtocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// How the node writes its logs (their level is the `WHARF_LOG` variable).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message, fields and the current span.
    Json,
}
