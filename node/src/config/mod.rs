//! The node's one configuration: embedded defaults, overridden by a TOML file, then by
//! environment variables (`section.key` -> `WHARF_SECTION_KEY`), then by command-line flags.

mod auth;
mod cluster;
mod data;
mod node;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use auth::AuthConfig;
pub use cluster::{ClusterConfig, RaftConfig};
pub use data::{
    AuditConfig, EventsConfig, ScanConfig, StoreConfig, StoreKind, TiersConfig, TrashConfig,
    UploadConfig, VersionsConfig,
};
pub use node::{
    HttpConfig, LogConfig, LogFormat, MetricsConfig, NodeConfig, OtlpProtocol, QuicConfig,
    RateConfig, TracingConfig,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub upload: UploadConfig,
    pub raft: RaftConfig,
    pub tiers: TiersConfig,
    pub scan: ScanConfig,
    pub http: HttpConfig,
    pub quic: QuicConfig,
    pub rate: RateConfig,
    pub events: EventsConfig,
    pub versions: VersionsConfig,
    pub trash: TrashConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

impl Config {
    /// Defaults, then the TOML file (if any), then `WHARF_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut table = toml::Table::try_from(Config::default())?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let from_file: Config = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            table = toml::Table::try_from(from_file)?;
        }
        overlay_env(&mut table, "WHARF", &|k| std::env::var(k).ok())?;
        let config: Config = table.try_into().context("applying environment variables")?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node.id == 0 {
            bail!("node.id must be at least 1");
        }
        self.cluster.routes()?;
        self.metrics.listen_addr()?;
        // S3 parts must be at least 5 MiB; the local store takes smaller chunks.
        let floor = if self.store.kind == StoreKind::S3 {
            5 * MIB
        } else {
            64 * 1024
        };
        if self.upload.min_chunk_size < floor || self.upload.min_chunk_size > 4 * GIB {
            bail!(
                "upload.min_chunk_size must be between {} KiB and 4 GiB (5 MiB with S3: its part limits)",
                floor / 1024
            );
        }
        if self.store.kind == StoreKind::S3 && self.store.bucket.is_empty() {
            bail!("store.kind = \"s3\" needs store.bucket (WHARF_STORE_BUCKET)");
        }
        if self.store.request_timeout_secs == 0 || self.store.presign_ttl_secs == 0 {
            bail!("store.request_timeout_secs and store.presign_ttl_secs must be positive");
        }
        if self.store.presign_max_ttl_secs == 0 || self.store.presign_max_ttl_secs > 7 * 24 * 3600 {
            bail!("store.presign_max_ttl_secs is between 1 second and 7 days (S3's limit)");
        }
        if self.store.presign_ttl_secs > self.store.presign_max_ttl_secs {
            bail!(
                "store.presign_ttl_secs ({}) is more than store.presign_max_ttl_secs ({})",
                self.store.presign_ttl_secs,
                self.store.presign_max_ttl_secs
            );
        }
        if !["", "required", "optional", "off"].contains(&self.scan.policy.as_str()) {
            bail!("scan.policy is required, optional or off");
        }
        if !["move", "delete"].contains(&self.scan.quarantine.as_str()) {
            bail!("scan.quarantine is move or delete");
        }
        if !(self.scan.clamd.is_empty()
            || self.scan.clamd.starts_with("tcp://")
            || self.scan.clamd.starts_with("unix:"))
        {
            bail!("scan.clamd is tcp://HOST:PORT or unix:/PATH");
        }
        if !(self.scan.clamd_probe.starts_with("tcp://")
            || self.scan.clamd_probe.starts_with("unix:"))
        {
            bail!("scan.clamd_probe is tcp://HOST:PORT or unix:/PATH");
        }
        if self.scan.probe_secs == 0 {
            bail!("scan.probe_secs must be positive");
        }
        if self.scan.lease_secs == 0 || self.scan.poll_ms == 0 || self.scan.timeout_secs == 0 {
            bail!("scan.lease_secs, scan.poll_ms and scan.timeout_secs must be positive");
        }
        self.http.cors_origins()?;
        if self.versions.keep == 0 {
            bail!("versions.keep must be at least 1 (the current version)");
        }
        if self.upload.offload_concurrency == 0 {
            bail!("upload.offload_concurrency must be at least 1");
        }
        if self.upload.expiry_secs == 0 || self.upload.sweep_interval_secs == 0 {
            bail!("upload.expiry_secs and upload.sweep_interval_secs must be positive");
        }
        if self.upload.single_request_max > 64 * MIB {
            bail!("upload.single_request_max is at most 64 MiB (a body is held in memory)");
        }
        if self.upload.max_staging_bytes < self.upload.single_request_max {
            bail!(
                "upload.max_staging_bytes must hold at least one upload.single_request_max \
                 (a one-request body is staged until it is stored)"
            );
        }
        let r = &self.raft;
        if r.cache_capacity < MIB {
            bail!("raft.cache_capacity must be at least 1 MiB");
        }
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            bail!("raft.election_timeout_min_ms must be above raft.heartbeat_ms");
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            bail!("raft.election_timeout_max_ms must be above raft.election_timeout_min_ms");
        }
        let has_token = !self.cluster.token.is_empty() || !self.cluster.token_file.is_empty();
        if self.cluster.join.is_empty() == has_token {
            bail!(
                "cluster.join and a join token go together (--join ADDR with --token-file FILE \
                 or WHARF_CLUSTER_TOKEN)"
            );
        }
        if !self.cluster.token.is_empty() && !self.cluster.token_file.is_empty() {
            bail!("cluster.token and cluster.token_file are exclusive");
        }
        if self.cluster.sign_wait_secs == 0 {
            bail!("cluster.sign_wait_secs must be positive");
        }
        if self.cluster.staging_grace_secs == 0 {
            bail!("cluster.staging_grace_secs must be positive");
        }
        let h = &self.http;
        if h.header_timeout_secs == 0
            || h.body_idle_secs == 0
            || h.idle_secs == 0
            || h.tcp_keepalive_secs == 0
            || h.max_connections == 0
            || h.max_connections_per_ip == 0
            || h.json_body_max == 0
        {
            bail!(
                "http.header_timeout_secs, body_idle_secs, idle_secs, tcp_keepalive_secs, \
                 max_connections, max_connections_per_ip and json_body_max must be positive"
            );
        }
        let q = &self.quic;
        if q.hello_timeout_secs == 0
            || q.max_connections == 0
            || q.max_connections_per_user == 0
            || q.max_connections_per_ip == 0
        {
            bail!(
                "quic.hello_timeout_secs, max_connections, max_connections_per_user and \
                 max_connections_per_ip must be positive"
            );
        }
        if self.audit.retention_secs == 0 || self.audit.download_flush_ms == 0 {
            bail!("audit.retention_secs and audit.download_flush_ms must be positive");
        }
        if self.events.retention_secs == 0 || self.events.keepalive_secs == 0 {
            bail!("events.retention_secs and events.keepalive_secs must be positive");
        }
        if self.rate.premium_factor == 0 {
            bail!("rate.premium_factor must be at least 1");
        }
        let n = &self.node;
        if n.tls_cert.is_empty() != n.tls_key.is_empty() {
            bail!("node.tls_cert and node.tls_key go together");
        }
        if !["", "cluster"].contains(&n.tls.as_str()) {
            bail!("node.tls is \"cluster\" or empty");
        }
        if n.tls == "cluster" && !n.tls_cert.is_empty() {
            bail!("node.tls = \"cluster\" and node.tls_cert exclude each other");
        }
        self.auth.validate()?;
        Ok(())
    }

    pub fn objects_dir(&self) -> PathBuf {
        if self.store.path.is_empty() {
            self.node.data_dir.join("objects")
        } else {
            PathBuf::from(&self.store.path)
        }
    }
}

/// Replaces every leaf `a.b_c` of `table` whose variable `PREFIX_A_B_C` is set, parsing the
/// value as the leaf's type. Walking the known keys (rather than the environment) keeps the
/// mapping unambiguous although keys contain underscores.
fn overlay_env(
    table: &mut toml::Table,
    prefix: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    for (key, value) in table.iter_mut() {
        let name = format!("{prefix}_{}", key.to_uppercase());
        if let toml::Value::Table(t) = value {
            overlay_env(t, &name, get)?;
            continue;
        }
        let Some(raw) = get(&name) else { continue };
        *value = match value {
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .with_context(|| format!("{name}={raw:?} is not an integer"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                raw.trim()
                    .parse()
                    .with_context(|| format!("{name}={raw:?} is not true or false"))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                raw.trim()
                    .parse()
                    .with_context(|| format!("{name}={raw:?} is not a number"))?,
            ),
            _ => toml::Value::String(raw),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_readme() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.node.http_addr.to_string(), "127.0.0.1:7070");
        assert_eq!(c.node.data_dir, PathBuf::from("./wharf-data"));
        assert_eq!(c.upload.min_chunk_size, 8 * MIB);
    }

    #[test]
    fn env_overrides_nested_keys_with_underscores() {
        let mut table = toml::Table::try_from(Config::default()).unwrap();
        let env = |k: &str| match k {
            "WHARF_STORE_KIND" => Some("local".to_string()),
            "WHARF_UPLOAD_MIN_CHUNK_SIZE" => Some("16777216".to_string()),
            "WHARF_TIERS_BASIC_QUOTA" => Some("1000".to_string()),
            "WHARF_NODE_HTTP_ADDR" => Some("127.0.0.1:9000".to_string()),
            _ => None,
        };
        overlay_env(&mut table, "WHARF", &env).unwrap();
        let c: Config = table.try_into().unwrap();
        assert_eq!(c.upload.min_chunk_size, 16 * MIB);
        assert_eq!(c.tiers.basic.quota, 1000);
        assert_eq!(c.node.http_addr.port(), 9000);
    }

    #[test]
    fn bad_env_value_is_a_clear_error() {
        let mut table = toml::Table::try_from(Config::default()).unwrap();
        let env = |k: &str| (k == "WHARF_UPLOAD_EXPIRY_SECS").then(|| "soon".to_string());
        let err = overlay_env(&mut table, "WHARF", &env).unwrap_err();
        assert!(
            err.to_string().contains("WHARF_UPLOAD_EXPIRY_SECS"),
            "{err}"
        );
    }

    #[test]
    fn staging_must_hold_a_one_request_body() {
        let mut c = Config::default();
        c.upload.max_staging_bytes = c.upload.single_request_max - 1;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("max_staging_bytes"), "{err}");
        c.upload.max_staging_bytes = c.upload.single_request_max;
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<Config>("[store]\nkynd = \"local\"\n").is_err());
        let c: Config = toml::from_str("[upload]\nexpiry_secs = 60\n").unwrap();
        assert_eq!(c.upload.expiry_secs, 60);
        assert_eq!(c.upload.min_chunk_size, 8 * MIB);
    }
}
