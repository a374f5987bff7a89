//! wharf-node: the `wharf` binary's library. Config, actors, the HTTP front end, the object
//! store and auth; see docs/ARCHITECTURE.md for the map.
//!
//! Modules: [`api`] (HTTP and QUIC front ends), [`actors`] (quota, uploads, scanner),
//! [`store`] (object stores: local, S3), [`cli`] (the `wharf` command), and [`auth`],
//! [`config`], [`error`], [`meta`], [`planted`]. This file makes or joins a cluster and runs a
//! node ([`run`]).

pub mod actors;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod meta;
pub mod planted;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;
use wharf_cluster::{Identity, Metadata, Peers, RaftOptions};
use wharf_raft::WharfNode;

use crate::actors::scanner;
use crate::actors::{quota, uploads};
use crate::api::{http, quic};
use crate::config::{Config, StoreKind};
use crate::store::local::LocalStore;
use crate::store::{s3, ObjectStore};

const NODE_ID_FILE: &str = "node_id";
/// Present when the node entered its cluster by joining (its content: the address joined).
const JOINED_FILE: &str = "joined";
/// A joining node's key and certificate request until it has its certificate.
const PENDING_JOIN_FILE: &str = "pending-join.json";

/// The addresses a running node serves, kept in `<data-dir>/listen.json` so that the operator
/// commands find the node from its data dir (its ports may be 0, or anything a config chose).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listening {
    /// HTTP, `host:port`.
    pub http: String,
    /// QUIC (UDP), `host:port`.
    pub quic: String,
    /// The peer (gRPC) address other nodes dial.
    pub peer: String,
}

impl Listening {
    const FILE: &'static str = "listen.json";

    /// What the node at `data_dir` last recorded, if anything.
    pub fn read(data_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(data_dir.join(Self::FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces the record whole (a reader never sees half of one).
    fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let tmp = data_dir.join(format!("{}.tmp", Self::FILE));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, data_dir.join(Self::FILE))
    }
}

/// The file in `<data-dir>/tls` holding a join token made before the cluster's log existed
/// (`wharf cluster init`): the founding node records it in Raft on first start.
const BOOTSTRAP_TOKEN_FILE: &str = "tls/bootstrap-token";

/// A join token to make: how many joins it admits and how long it lives.
#[derive(Clone, Copy, Debug)]
pub struct TokenSpec {
    pub uses: u32,
    pub ttl: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BootstrapToken {
    id: String,
    secret_hash: String,
    uses: u32,
    expires_at: u64,
    created_at: u64,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Makes a new cluster's identity in `data_dir` (CA, node certificate, and the HS256 secret
/// for user tokens unless they are checked with a JWKS) and, with `token`, a first join
/// token, returned (it is shown once: only its hash is kept).
pub fn init_cluster(
    data_dir: &Path,
    node_id: u64,
    auth: &config::AuthConfig,
    token: Option<TokenSpec>,
) -> anyhow::Result<Option<String>> {
    if Identity::exists(data_dir) {
        bail!("{} already belongs to a cluster", data_dir.display());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    if !auth.external() {
        auth::load_or_create_secret(&auth.jwt_secret, data_dir)?;
    }
    write_durably(data_dir, NODE_ID_FILE, &node_id.to_string())?;
    let identity = Identity::new_cluster(node_id)?;
    let shown = match token {
        Some(spec) => {
            std::fs::create_dir_all(data_dir.join("tls"))?;
            let t = wharf_cluster::tls::new_join_token(&identity.ca_pem);
            let now = now_ms();
            let record = BootstrapToken {
                id: t.id,
                secret_hash: t.secret_hash,
                uses: spec.uses,
                expires_at: now.saturating_add(spec.ttl.as_millis() as u64),
                created_at: now,
            };
            wharf_cluster::tls::write_file(
                &data_dir.join(BOOTSTRAP_TOKEN_FILE),
                &serde_json::to_string(&record)?,
                true,
            )?;
            Some(t.token)
        }
        None => None,
    };
    identity.save(data_dir)?;
    Ok(shown)
}

/// Writes `name` in `dir` whole and durably: a temporary file, fsynced, renamed, and the
/// directory fsynced so that the name survives a crash.
fn write_durably(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    wharf_cluster::tls::write_file(&dir.join(name), contents, false)?;
    wharf_cluster::tls::sync_dir(dir)?;
    Ok(())
}

/// Records a join token made by `wharf cluster init` in Raft, once this node leads its new
/// cluster, and forgets the file.
async fn record_bootstrap_token(meta: &Metadata, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let t: BootstrapToken =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let cmd = wharf_raft::Command::CreateJoinToken {
        id: t.id.clone(),
        secret_hash: t.secret_hash,
        uses: t.uses,
        expires_at: t.expires_at,
        now: t.created_at,
    };
    match meta.propose(cmd).await {
        Ok(_) => {}
        // Recorded before a crash kept the file.
        Err(wharf_cluster::Error::Model(wharf_raft::ModelError::Invalid(_)))
            if meta.local().join_token(&t.id).is_some() => {}
        Err(e) => return Err(e).context("recording the first join token"),
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Records this node's certificate as the only one its peers accept for it, when its record
/// has none yet (the founder; nodes of clusters older than records).
async fn pin_own_certificate(meta: &Metadata, identity: &Identity, node_id: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match meta.local().node(node_id) {
            Some(n) if n.cert_pem.is_some() || n.removed => return,
            Some(_) => {
                let cmd = wharf_raft::Command::NodeCertIssued {
                    node: node_id,
                    cert_pem: identity.cert_pem.clone(),
                };
                match meta.propose(cmd).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(error = %e, "recording this node's certificate"),
                }
            }
            // Its record comes with the membership entry that names it.
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes a join token and records it in Raft: returns the token (shown once) and its record.
pub async fn create_join_token(
    meta: &Metadata,
    ca_pem: &str,
    spec: TokenSpec,
) -> Result<(String, wharf_raft::model::JoinToken), wharf_cluster::Error> {
    let t = wharf_cluster::tls::new_join_token(ca_pem);
    let now = now_ms();
    let expires_at = now.saturating_add(spec.ttl.as_millis() as u64);
    meta.propose(wharf_raft::Command::CreateJoinToken {
        id: t.id.clone(),
        secret_hash: t.secret_hash.clone(),
        uses: spec.uses,
        expires_at,
        now,
    })
    .await?;
    let record = wharf_raft::model::JoinToken {
        id: t.id,
        secret_hash: t.secret_hash,
        uses_left: spec.uses,
        expires_at,
        created_at: now,
    };
    Ok((t.token, record))
}

/// Joins the cluster through `addr`: gets a node id and a certificate for a key made here
/// (it never leaves this node), and the cluster's user-token secret unless a JWKS is used.
async fn join_cluster(
    data_dir: &Path,
    addr: &str,
    token: &str,
    me: &WharfNode,
    sign_wait: Duration,
) -> anyhow::Result<(Identity, u64)> {
    let parsed = wharf_cluster::tls::parse_join_token(token)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    // The key and request are kept before the join is sent: a joiner restarted (or whose
    // answer was lost) sends the same request again and is the same admitted node.
    let pending = data_dir.join(PENDING_JOIN_FILE);
    let (csr_pem, key_pem) = match std::fs::read_to_string(&pending)
        .ok()
        .and_then(|t| serde_json::from_str::<(String, String)>(&t).ok())
    {
        Some(kept) => kept,
        None => {
            let made = wharf_cluster::tls::new_key_and_csr()?;
            wharf_cluster::tls::write_file(&pending, &serde_json::to_string(&made)?, true)?;
            made
        }
    };
    let reply = wharf_cluster::join(
        addr,
        token,
        &me.peer_addr,
        &me.http_addr,
        &csr_pem,
        sign_wait,
    )
    .await
    .with_context(|| format!("joining the cluster through {addr}"))?;
    if !wharf_cluster::tls::same_certificate(&reply.ca_pem, &parsed.ca_pem()?) {
        bail!("the cluster answered with a CA other than the one its join token names");
    }
    if wharf_cluster::tls::pem_node_id(&reply.cert_pem) != Some(reply.node_id) {
        bail!(
            "the cluster sent a certificate that does not name node {}",
            reply.node_id
        );
    }
    let identity = Identity {
        ca_pem: reply.ca_pem,
        ca_key_pem: None,
        cert_pem: reply.cert_pem,
        key_pem,
        seed: wharf_cluster::tls::Seed {
            peers: reply.seed_peers,
            floor: reply.seed_floor,
        },
    };
    // The user-token secret comes to the holder of the new certificate only.
    let secret = wharf_cluster::fetch_secrets(&Peers::new(identity.client_tls()), addr)
        .await
        .with_context(|| format!("asking {addr} for the cluster's secrets"))?;
    if !secret.is_empty() {
        auth::store_secret(data_dir, &secret)?;
    }
    write_durably(data_dir, NODE_ID_FILE, &reply.node_id.to_string())?;
    write_durably(data_dir, JOINED_FILE, addr)?;
    // Saved last: a complete identity is what says "this data dir belongs to a cluster".
    identity.save(data_dir)?;
    let _ = std::fs::remove_file(&pending);
    tracing::info!(node_id = reply.node_id, "joined the cluster through {addr}");
    Ok((identity, reply.node_id))
}

fn read_node_id(data_dir: &Path) -> anyhow::Result<u64> {
    let path = data_dir.join(NODE_ID_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no node id", path.display()))
}

/// This node's identity from its data dir; a certificate made before certificates named
/// their node is made again, when this node holds the CA key.
fn load_identity(data_dir: &Path, node_id: u64) -> anyhow::Result<Identity> {
    let mut identity = Identity::load(data_dir)?;
    match identity.node_id() {
        Some(id) if id == node_id => {}
        Some(id) => bail!(
            "{}: the node certificate names node {id}, the data dir node {node_id}",
            data_dir.display()
        ),
        None => {
            identity.reissue_own(node_id)?;
            identity.save(data_dir)?;
            tracing::info!(
                node_id,
                "made this node's certificate again, naming its node id"
            );
        }
    }
    Ok(identity)
}

/// Makes a directory readable by its owner only (mode 0700): what is under it stays private
/// whatever mode its files have.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// The HTTPS acceptor `node.tls_cert`/`node.tls_key` or `node.tls = "cluster"` ask for.
fn http_tls(
    config: &Config,
    identity: &Identity,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let n = &config.node;
    if n.tls == "cluster" {
        return http::server::tls_acceptor(
            identity.cert_pem.as_bytes(),
            identity.key_pem.as_bytes(),
        )
        .map(Some);
    }
    if n.tls_cert.is_empty() {
        return Ok(None);
    }
    let cert = std::fs::read(&n.tls_cert).with_context(|| format!("reading {}", n.tls_cert))?;
    let key = std::fs::read(&n.tls_key).with_context(|| format!("reading {}", n.tls_key))?;
    http::server::tls_acceptor(&cert, &key).map(Some)
}

/// Runs a node until `shutdown` resolves, then stops the front ends, the actors and Raft.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    // Metadata, secrets, staged chunks: for this node's user only.
    private_dir(data_dir)?;

    // Bind first: with port 0, the bound ports are what this node advertises.
    let http_listener = tokio::net::TcpListener::bind(config.node.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {}", config.node.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    let peer_listener = tokio::net::TcpListener::bind(config.cluster.peer_addr)
        .await
        .with_context(|| format!("binding gRPC to {}", config.cluster.peer_addr))?;
    let peer_addr = peer_listener.local_addr()?;
    let me = WharfNode {
        peer_addr: match config.cluster.advertise_addr.as_str() {
            "" => peer_addr.to_string(),
            a => a.to_string(),
        },
        http_addr: http_addr.to_string(),
    };

    let join = &config.cluster.join;
    let (identity, node_id) = if Identity::exists(data_dir) {
        let node_id = read_node_id(data_dir)?;
        (load_identity(data_dir, node_id)?, node_id)
    } else if !join.is_empty() {
        let token = config.cluster.join_token()?;
        let wait = Duration::from_secs(config.cluster.sign_wait_secs);
        join_cluster(data_dir, join, &token, &me, wait).await?
    } else {
        init_cluster(data_dir, config.node.id, &config.auth, None)?;
        tracing::info!(
            "made a new cluster (its CA in {})",
            data_dir.join("tls").display()
        );
        let id = Identity::load(data_dir)?;
        (id, config.node.id)
    };
    // The cluster's HS256 secret: what the cluster service hands to joining nodes. With a
    // JWKS configured, user tokens are checked with the identity provider's public keys
    // instead, and the secret verifies nothing here.
    // With a JWKS no node holds (or hands a joiner) a key that can mint user tokens.
    let secret = if config.auth.external() {
        String::new()
    } else {
        auth::load_or_create_secret(&config.auth.jwt_secret, data_dir)?
    };
    let provider = if config.auth.external() {
        Some(auth::jwks::Provider::start(&config.auth).await?)
    } else {
        None
    };
    let keys = match &provider {
        Some(p) => auth::Keys::external(p.clone()),
        None => auth::Keys::new(secret.as_bytes()),
    };

    let peers = Peers::new(identity.client_tls()).with_routes(config.cluster.routes()?);
    let rc = &config.raft;
    let raft_opts = RaftOptions {
        heartbeat_ms: rc.heartbeat_ms,
        election_timeout_min_ms: rc.election_timeout_min_ms,
        election_timeout_max_ms: rc.election_timeout_max_ms,
        snapshot_every: rc.snapshot_every,
        cache_capacity: rc.cache_capacity,
    };
    let meta = Metadata::open(node_id, &data_dir.join("raft"), &raft_opts, peers.clone()).await?;
    let stop = CancellationToken::new();
    if let Some(p) = &provider {
        p.spawn_refresh(stop.clone());
    }
    let initialized = meta.is_initialized().await?;
    let joined_through = std::fs::read_to_string(data_dir.join(JOINED_FILE)).ok();
    if !initialized && joined_through.is_none() {
        // A new cluster: its first join token is in Raft before any joiner can ask.
        meta.initialize(me.clone()).await?;
        tracing::info!(node_id, "initialised a new single-node cluster");
        meta.wait_ready(Duration::from_secs(60)).await?;
        record_bootstrap_token(&meta, data_dir).await?;
    }
    // Peers must reach this node before it is added, and while it catches up.
    let grpc = tokio::spawn(wharf_cluster::server::serve(
        peer_listener,
        meta.clone(),
        identity.clone(),
        secret,
        stop.clone().cancelled_owned(),
    ));
    if let (false, Some(addr)) = (initialized, joined_through) {
        let addr = if join.is_empty() { addr } else { join.clone() };
        tracing::info!(node_id, "asking the cluster to add this node");
        wharf_cluster::add_self(&meta, &peers, &addr, node_id, &me, config.cluster.learner)
            .await
            .with_context(|| format!("asking {addr} to add node {node_id}"))?;
    }
    meta.wait_ready(Duration::from_secs(60)).await?;
    record_bootstrap_token(&meta, data_dir).await?;
    {
        let (meta, identity) = (meta.clone(), identity.clone());
        tokio::spawn(async move { pin_own_certificate(&meta, &identity, node_id).await });
    }
    if identity.ca_key_pem.is_some() {
        tokio::spawn(wharf_cluster::server::sign_pending_requests(
            meta.clone(),
            identity.clone(),
            stop.clone().cancelled_owned(),
        ));
    }

    let store: Arc<dyn ObjectStore> = match config.store.kind {
        StoreKind::Local => {
            let root = config.objects_dir();
            Arc::new(
                LocalStore::open(&root)
                    .with_context(|| format!("opening the object store at {}", root.display()))?,
            )
        }
        StoreKind::S3 => Arc::new(s3::S3Store::connect(&config.store).await?),
    };
    let (policy, scanner) = scanner::start(&config.scan, &meta, &store, &stop).await;
    let staging = data_dir.join("staging");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    match uploads::clean_partial_chunks(&staging) {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed chunks a crash left half-written"),
        Err(e) => tracing::warn!(error = %e, "cleaning half-written chunks failed"),
    }
    let quota = quota::QuotaHandle::spawn(meta.clone(), config.clone(), stop.clone());
    let ctx = Arc::new(uploads::Ctx {
        meta: meta.clone(),
        store: store.clone(),
        quota: quota.clone(),
        config: config.upload.clone(),
        staging_grace: Duration::from_secs(config.cluster.staging_grace_secs),
        upload_retention_ms: config.upload.retention_secs.saturating_mul(1000),
        event_retention_ms: config.events.retention_secs.saturating_mul(1000),
        trash_retention_ms: config.trash.retention_secs.saturating_mul(1000),
        audit_retention_ms: config.audit.retention_secs.saturating_mul(1000),
        staged: uploads::StagingGauge::new(
            config.upload.max_staging_bytes,
            uploads::staged_chunk_bytes(&staging),
        ),
        staging,
        scanner,
    });
    let uploads = uploads::UploadsHandle::spawn(ctx, stop.clone());
    // Cancelled when the HTTP server begins to drain: endless responses (event streams) end.
    let http_stop = CancellationToken::new();
    let downloads = crate::actors::audit::DownloadLog::spawn(
        &meta,
        quota.clone(),
        config.node.data_dir.clone(),
        Duration::from_millis(config.audit.download_flush_ms),
        stop.clone(),
    );
    let webhooks = crate::actors::webhooks::Status::default();
    crate::actors::webhooks::spawn(meta.clone(), quota.clone(), webhooks.clone(), stop.clone());
    let app_state = http::AppState {
        keys,
        meta: meta.clone(),
        quota,
        uploads,
        store,
        presign_ttl_secs: config.store.presign_ttl_secs,
        ca_pem: Arc::new(identity.ca_pem.clone()),
        scan_policy: policy,
        rate: Arc::new(limits::RateLimits::new(&config.rate)),
        http: Arc::new(config.http.clone()),
        single_request_max: config.upload.single_request_max,
        events: Arc::new(config.events.clone()),
        trash_retention_secs: config.trash.retention_secs,
        webhooks,
        downloads,
        stopping: http_stop.clone(),
    };
    {
        // Full buckets are forgotten now and then: the tables stay small under many clients.
        let (rate, stop) = (app_state.rate.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => rate.retain_recent(),
                }
            }
        });
    }
    let quic = quic::bind(config.node.quic_addr, &identity)?;
    let quic_addr = quic.local_addr()?;
    let quic_drained = tokio::spawn(quic::serve(
        quic.clone(),
        app_state.clone(),
        quic::Limits::new(&config.quic, config.node.drain_secs),
    ));
    crate::telemetry::install();
    if let Some(addr) = config.metrics.listen_addr()? {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.listen {addr}"))?;
        let bound = listener.local_addr()?;
        let (routes, stop) = (http::metrics_router(app_state.clone()), stop.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, routes)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the metrics listener failed");
            }
        });
        tracing::info!(%bound, "metrics listening");
    }
    let app = http::router(app_state);
    let tls = http_tls(&config, &identity)?;
    let scheme = if tls.is_some() { "https" } else { "http" };

    tracing::info!(node_id, %http_addr, peer = %me.peer_addr, data_dir = %data_dir.display(), "wharf node listening");
    Listening {
        http: http_addr.to_string(),
        quic: quic_addr.to_string(),
        peer: me.peer_addr.clone(),
    }
    .write(data_dir)
    .with_context(|| format!("recording the addresses in {}", data_dir.display()))?;
    // Tests and scripts read this line to learn the bound addresses.
    println!(
        "wharf node {node_id} listening on {scheme}://{http_addr} quic://{quic_addr} (peer {})",
        me.peer_addr
    );

    {
        let (http_stop, server_stop) = (http_stop.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = server_stop.cancelled() => {}
            }
            http_stop.cancel();
        });
    }
    let limits = http::server::Limits::new(&config.http, config.node.drain_secs);
    // Both front ends drain at once: HTTP here, QUIC in its own task (each bounded by
    // node.drain_secs); the actors and Raft stay up until both are done.
    http::server::serve(http_listener, app, tls, limits, http_stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(config.node.drain_secs), quic_drained).await;
    tracing::info!("shutting down");
    stop.cancel();
    quic.close(quic::SHUTTING_DOWN, b"shutting down");
    // Peers may hold their connections open: what is left after a moment is cut.
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc).await;
    meta.shutdown(Duration::from_secs(3)).await;
    Ok(())
}
