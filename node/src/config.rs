//! The node's one configuration: embedded defaults, overridden by a TOML file, then by
//! environment variables (`section.key` -> `WHARF_SECTION_KEY`), then by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use wharf_raft::model::{Tier, TierLimits};

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
}

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where this node serves gRPC to its peers (mutual TLS).
    pub peer_addr: SocketAddr,
    /// What peers dial to reach this node; empty means the bound `peer_addr`.
    pub advertise_addr: String,
    /// A member's peer address to join through on first start (with `token`).
    pub join: String,
    /// The join token (`wharf cluster token`). Prefer `token_file` or `WHARF_CLUSTER_TOKEN`:
    /// a command-line argument is visible to every user of the machine.
    pub token: String,
    /// A file holding the join token.
    pub token_file: String,
    /// How long a joining node waits for a holder of the CA key to sign its certificate.
    pub sign_wait_secs: u64,
    /// Join as a learner and stay one until `wharf cluster promote`.
    pub learner: bool,
    /// A chunk staged only on a node unreachable for this long counts as missing again.
    pub staging_grace_secs: u64,
    /// Peers dialled through another address: `advertised=dial,…` (NAT, or the chaos
    /// harness's fault-injection proxies). Empty: dial what peers advertise.
    pub peer_routes: String,
}

impl ClusterConfig {
    /// The join token, from `token` or read from `token_file`.
    pub fn join_token(&self) -> anyhow::Result<String> {
        if !self.token_file.is_empty() {
            let t = std::fs::read_to_string(&self.token_file)
                .with_context(|| format!("reading the join token from {}", self.token_file))?;
            return Ok(t.trim().to_string());
        }
        Ok(self.token.trim().to_string())
    }

    /// `peer_routes` as a map from advertised address to dialled address.
    pub fn routes(&self) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let mut routes = std::collections::HashMap::new();
        for pair in self
            .peer_routes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((from, to)) = pair.split_once('=') else {
                bail!("cluster.peer_routes: {pair:?} is not advertised=dial");
            };
            routes.insert(from.trim().to_string(), to.trim().to_string());
        }
        Ok(routes)
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peer_addr: "127.0.0.1:7080".parse().expect("valid address"),
            advertise_addr: String::new(),
            join: String::new(),
            token: String::new(),
            token_file: String::new(),
            sign_wait_secs: 600,
            learner: false,
            staging_grace_secs: 300,
            peer_routes: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// `required` (downloads wait for a clean scan), `optional` (files are scanned but served
    /// before their verdict, with a header saying so) or `off`; empty: `required` when
    /// `scan.clamd` is set or a clamd has answered at `scan.clamd_probe` (on this node or any
    /// other of the cluster), else files are stored and served unscanned while the node keeps
    /// looking. See docs/SECURITY.md.
    pub policy: String,
    /// The clamd to use, `tcp://host:port` or `unix:/path`. Set (or with `policy = required`),
    /// files wait `pending` for it, however long it is away.
    pub clamd: String,
    /// Where a node with no `scan.clamd` looks for one (Debian's socket by default), every
    /// `scan.probe_secs`; once one answers, scanning is on for good.
    pub clamd_probe: String,
    /// How often a node that has not found a clamd looks for one.
    pub probe_secs: u64,
    /// Scans this node runs at once.
    pub concurrency: usize,
    /// How long a scan lease lasts; a crashed scanner's blob is taken over after it.
    pub lease_secs: u64,
    /// How often the scanner looks for blobs waiting for a scan.
    pub poll_ms: u64,
    /// Must not exceed clamd's StreamMaxLength; larger objects end in the `error` state.
    pub stream_max_bytes: u64,
    /// `move` (under `quarantine/`) or `delete` infected objects.
    pub quarantine: String,
    /// A scan that gets no answer from clamd for this long fails (and is retried).
    pub timeout_secs: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            policy: String::new(),
            clamd: String::new(),
            clamd_probe: crate::actors::scanner::clamd::DEFAULT_SOCKET.into(),
            probe_secs: 5,
            concurrency: 2,
            lease_secs: 300,
            poll_ms: 1000,
            stream_max_bytes: 25 * MIB,
            quarantine: "move".into(),
            timeout_secs: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Local,
    S3,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Root of the local object store; empty means `<data_dir>/objects`.
    pub path: String,
    /// S3: endpoint URL for S3-compatible servers; empty means AWS.
    pub endpoint: String,
    /// S3: region; empty means the AWS chain's (`AWS_REGION`, profile).
    pub region: String,
    pub bucket: String,
    /// S3: `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub force_path_style: bool,
    /// S3: prepended to every object key.
    pub prefix: String,
    /// S3: one attempt of one request gives up after this long.
    pub request_timeout_secs: u64,
    /// Lifetime of presigned download URLs; at most `presign_max_ttl_secs`.
    pub presign_ttl_secs: u64,
    /// The longest a presigned URL may live: a URL cannot be revoked, only its object moved.
    pub presign_max_ttl_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Local,
            path: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            force_path_style: false,
            prefix: String::new(),
            request_timeout_secs: 60,
            presign_ttl_secs: 300,
            presign_max_ttl_secs: 900,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for client tokens; empty means the one generated into `<data_dir>/jwt_secret`.
    /// Verifies nothing when a JWKS is configured.
    pub jwt_secret: String,
    /// An external identity provider's public keys (a JWKS JSON file). Set (or `jwks_url`):
    /// user tokens are RS256, ES256 or EdDSA from that provider, and HS256 tokens are refused.
    pub jwks_file: String,
    /// The same fetched over HTTP(S), e.g. Keycloak's `…/protocol/openid-connect/certs`.
    pub jwks_url: String,
    /// How often the key set is read again; a token with an unknown `kid` also rereads it (at
    /// most once every few seconds), so a rotated key is taken at once.
    pub jwks_refresh_secs: u64,
    /// With a JWKS: the `iss` a token must carry; empty: not checked.
    pub issuer: String,
    /// With a JWKS: a value the token's `aud` must include; empty: not checked.
    pub audience: String,
    /// With a JWKS: the claim that carries the tier, a dotted path (`realm_access.roles`); a
    /// key that itself holds dots (`https://example.com/roles`) is matched whole first.
    pub tier_claim: String,
    /// With a JWKS: the claim's values (a string or an array of strings) to wharf tiers,
    /// `{ "wharf-admin" = "admin" }`; the highest wins, `basic` when none maps. Empty: values
    /// that name a tier (`basic`, `premium`, `admin`) are taken as they are.
    pub tier_map: std::collections::BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            issuer: String::new(),
            audience: String::new(),
            tier_claim: "tier".into(),
            tier_map: Default::default(),
        }
    }
}

impl AuthConfig {
    /// Whether user tokens come from an external identity provider (a JWKS is configured).
    pub fn external(&self) -> bool {
        !self.jwks_file.is_empty() || !self.jwks_url.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            bail!("auth.jwt_secret must be at least 32 characters");
        }
        if !self.external() {
            if !self.issuer.is_empty()
                || !self.audience.is_empty()
                || !self.tier_map.is_empty()
                || self.tier_claim != "tier"
            {
                bail!(
                    "auth.issuer, auth.audience, auth.tier_claim and auth.tier_map apply to \
                     tokens from an identity provider: set auth.jwks_file or auth.jwks_url"
                );
            }
            return Ok(());
        }
        if !self.jwks_file.is_empty() && !self.jwks_url.is_empty() {
            bail!("auth.jwks_file and auth.jwks_url exclude each other");
        }
        if !self.jwks_url.is_empty() {
            let ok = reqwest::Url::parse(&self.jwks_url)
                .is_ok_and(|u| ["http", "https"].contains(&u.scheme()) && u.has_host());
            if !ok {
                bail!("auth.jwks_url must be an http:// or https:// URL");
            }
        }
        if self.jwks_refresh_secs == 0 {
            bail!("auth.jwks_refresh_secs must be positive");
        }
        for (key, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if !value.is_empty() && value.trim().is_empty() {
                bail!("auth.{key} is blank: leave it empty or give the value tokens carry");
            }
        }
        if self.tier_claim.trim().is_empty() {
            bail!("auth.tier_claim must name a claim (default \"tier\")");
        }
        for (from, to) in &self.tier_map {
            if from.is_empty() {
                bail!("auth.tier_map: a key is empty");
            }
            if !["basic", "premium", "admin"].contains(&to.as_str()) {
                bail!(
                    "auth.tier_map: {from:?} maps to {to:?}, which is not basic, premium or admin"
                );
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Smallest chunk size handed out (rounded up to a power of two).
    pub min_chunk_size: u64,
    /// An upload with no new chunk for this long is aborted.
    pub expiry_secs: u64,
    /// How often the leader looks for expired uploads and garbage.
    pub sweep_interval_secs: u64,
    /// Staged chunks offloaded to the object store at once.
    pub offload_concurrency: usize,
    /// How long `complete` waits for staged chunks to reach the object store.
    pub complete_wait_secs: u64,
    /// Bytes of chunks a node keeps staged at most (while the object store lags or is away);
    /// beyond it chunk uploads answer 503 with Retry-After.
    pub max_staging_bytes: u64,
    /// How long an ended upload (stored, aborted, expired) and its idempotency key are kept.
    pub retention_secs: u64,
    /// The largest file `POST /v1/files` takes in one request (larger ones use upload sessions).
    pub single_request_max: u64,
    /// A second sender of a chunk being received takes it over once the first has sent
    /// nothing for this long (its client vanished: a killed process, a dead QUIC path).
    pub takeover_ms: u64,
    /// A multipart upload in the object store that no upload records (its node died between
    /// creating and recording it) is aborted once it is this old.
    pub orphan_grace_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            min_chunk_size: 8 * MIB,
            expiry_secs: 24 * 3600,
            sweep_interval_secs: 30,
            offload_concurrency: 4,
            complete_wait_secs: 120,
            max_staging_bytes: 16 * GIB,
            retention_secs: 7 * 24 * 3600,
            single_request_max: 8 * MIB,
            takeover_ms: 750,
            orphan_grace_secs: 3600,
        }
    }
}

/// `GET /v1/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// How long events are kept: a client reconnecting with an older `Last-Event-ID` is told
    /// to re-list (`reset`).
    pub retention_secs: u64,
    /// A stream with nothing to say sends a comment this often (proxies and the idle timeout
    /// would close it otherwise).
    pub keepalive_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_secs: 3600,
            keepalive_secs: 15,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) after this many entries. A snapshot
    /// reads the whole state: not too often.
    pub snapshot_every: u64,
    /// The metadata store's block caches, in bytes: with its 8 MiB write buffers per
    /// keyspace, what bounds the metadata's memory.
    pub cache_capacity: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_every: 100_000,
            cache_capacity: 32 * MIB,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    pub basic: TierLimits,
    pub premium: TierLimits,
    pub admin: TierLimits,
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            basic: TierLimits {
                quota: 10 * GIB,
                max_file_size: 5 * GIB,
                max_concurrent_uploads: 8,
            },
            premium: TierLimits {
                quota: 1024 * GIB,
                max_file_size: 256 * GIB,
                max_concurrent_uploads: 32,
            },
            admin: TierLimits {
                quota: 1024 * GIB,
                max_file_size: 1024 * GIB,
                max_concurrent_uploads: 64,
            },
        }
    }
}

impl TiersConfig {
    pub fn limits(&self, tier: Tier) -> TierLimits {
        match tier {
            Tier::Basic => self.basic,
            Tier::Premium => self.premium,
            Tier::Admin => self.admin,
        }
    }
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
        if self.events.retention_secs == 0 || self.events.keepalive_secs == 0 {
            bail!("events.retention_secs and events.keepalive_secs must be positive");
        }
        if self.events.keepalive_secs >= self.http.idle_secs {
            bail!(
                "events.keepalive_secs must be below http.idle_secs (an idle event stream \
                 would be closed between keepalives)"
            );
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
