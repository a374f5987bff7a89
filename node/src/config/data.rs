//! What the node stores and how: `store`, `upload`, `scan`, `tiers`, `events`.

use serde::{Deserialize, Serialize};
use wharf_raft::model::{Tier, TierLimits};

use super::{GIB, MIB};

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
    /// would close it otherwise; at most half of `http.idle_secs`).
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

/// The audit log (`GET /v1/admin/audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long audit records are kept before the leader drops them.
    pub retention_secs: u64,
    /// Downloads are committed to the audit log in batches at least this often.
    pub download_flush_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_secs: 90 * 24 * 3600,
            download_flush_ms: 1000,
        }
    }
}

/// A file's versions (`on_conflict=replace`, `PUT /v1/files/{id}/content`, restore).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VersionsConfig {
    /// Versions a file keeps, the current one included; older ones are pruned as new ones
    /// come (and their bytes leave the owner's usage).
    pub keep: u32,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        Self {
            keep: wharf_raft::model::versions::DEFAULT_KEEP,
        }
    }
}

/// The trash (`DELETE` of a file or folder; `/v1/trash`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrashConfig {
    /// How long a deleted file or folder stays in the trash before the leader purges it.
    pub retention_secs: u64,
}

impl Default for TrashConfig {
    fn default() -> Self {
        Self {
            retention_secs: 30 * 24 * 3600,
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
