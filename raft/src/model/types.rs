//! The entities of the model: users, uploads and their chunks, blobs, files, garbage.

use serde::{Deserialize, Serialize};

/// S3 allows at most 10,000 parts in a multipart upload; a chunk is a part.
pub const MAX_CHUNKS: u64 = 10_000;
/// The largest object S3 stores (5 TiB); no tier may allow more.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// A chunk is at most 4 GiB (S3's part limit is 5 GiB and chunk sizes are powers of two).
pub const MAX_CHUNK_SIZE: u64 = 4 << 30;

/// Milliseconds since the Unix epoch, as read by the proposer.
pub type Millis = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Basic,
    Premium,
    Admin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Basic => "basic",
            Tier::Premium => "premium",
            Tier::Admin => "admin",
        }
    }
}

/// The limits of a tier, as configured on the proposing node. They travel inside the command so
/// that `apply` never reads configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLimits {
    /// Quota given to a user the first time they are seen.
    pub quota: u64,
    pub max_file_size: u64,
    pub max_concurrent_uploads: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tier: Tier,
    pub quota: u64,
    /// Set once an admin chose the quota; tier defaults no longer raise it.
    pub quota_set_by_admin: bool,
    pub used: u64,
    pub reserved: u64,
    pub active_uploads: u32,
}

impl User {
    /// The quota once the tier's default applies: a tier can raise a quota (which never breaks
    /// `used + reserved <= quota`) but not lower it, and an admin's choice stands.
    pub fn quota_under(&self, limits: &TierLimits) -> u64 {
        if self.quota_set_by_admin {
            self.quota
        } else {
            self.quota.max(limits.quota)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chunk {
    Missing,
    /// Durable in the staging directory of `node`, not yet in the object store.
    Staged {
        node: u64,
        len: u64,
        blake3: String,
        cv: String,
    },
    /// A part of the upload's multipart object.
    Offloaded {
        node: u64,
        len: u64,
        blake3: String,
        cv: String,
        etag: String,
    },
}

impl Chunk {
    pub fn blake3(&self) -> Option<&str> {
        match self {
            Chunk::Missing => None,
            Chunk::Staged { blake3, .. } | Chunk::Offloaded { blake3, .. } => Some(blake3),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    Uploading,
    Stored,
    Aborted,
    Expired,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Uploading => "uploading",
            UploadState::Stored => "stored",
            UploadState::Aborted => "aborted",
            UploadState::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub mime: Option<String>,
    pub size: u64,
    pub chunk_size: u64,
    pub expected_blake3: Option<String>,
    pub idempotency_key: Option<String>,
    /// Server-made, never derived from the client's file name.
    pub object_key: String,
    /// The object store's multipart upload id, shared by every node that offloads a part.
    pub multipart_id: Option<String>,
    /// Per-chunk state, read from the chunk records (only chunks some node holds are stored);
    /// empty in the stored upload record and once the upload ends.
    pub chunks: Vec<Chunk>,
    pub state: UploadState,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Idle time after which the upload expires; each staged chunk pushes `expires_at` out.
    pub ttl_ms: u64,
    pub file_id: Option<String>,
    /// When it stopped uploading (stored, aborted, expired): retention counts from here.
    #[serde(default)]
    pub ended_at: Option<Millis>,
}

impl Upload {
    pub fn chunk_count(&self) -> u32 {
        chunk_count(self.size, self.chunk_size)
    }

    /// The exact length chunk `index` must have.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.chunk_size;
        self.size.saturating_sub(start).min(self.chunk_size)
    }

    /// Indexes of the chunks no node holds.
    pub fn missing(&self) -> Vec<u32> {
        indexes(&self.chunks, |c| matches!(c, Chunk::Missing))
    }

    /// Indexes of the chunks some node holds (staged or offloaded).
    pub fn received(&self) -> Vec<u32> {
        indexes(&self.chunks, |c| !matches!(c, Chunk::Missing))
    }
}

fn indexes(chunks: &[Chunk], pred: impl Fn(&Chunk) -> bool) -> Vec<u32> {
    (0u32..)
        .zip(chunks)
        .filter(|(_, c)| pred(c))
        .map(|(i, _)| i)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanState {
    /// Scanning is off (`scan.policy = off`, or no scanner): served as unscanned.
    Unscanned,
    /// Waiting for a scanner.
    Pending,
    /// Leased by node `holder` until `until`; another node may take it after that.
    Scanning {
        holder: u64,
        until: Millis,
    },
    Clean {
        at: Millis,
    },
    Infected {
        signature: String,
        at: Millis,
    },
    /// The scanner could not scan it (too large for the scanner, unreadable).
    Error {
        message: String,
        at: Millis,
    },
}

impl ScanState {
    /// The name clients see: pending, clean, infected, unscanned or error.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScanState::Unscanned => "unscanned",
            ScanState::Pending | ScanState::Scanning { .. } => "pending",
            ScanState::Clean { .. } => "clean",
            ScanState::Infected { .. } => "infected",
            ScanState::Error { .. } => "error",
        }
    }

    /// Whether a scanner may take it at `now`.
    pub fn leasable(&self, now: Millis) -> bool {
        match self {
            ScanState::Pending => true,
            ScanState::Scanning { until, .. } => *until <= now,
            _ => false,
        }
    }
}

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanVerdict {
    Clean,
    Infected {
        signature: String,
    },
    Error {
        message: String,
    },
    /// The holder gives the blob back unscanned (its scanner became unreachable).
    Released,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub owner: String,
    pub blake3: String,
    pub object_key: String,
    pub size: u64,
    pub refcount: u64,
    pub scan: ScanState,
    /// An infected blob's object has been moved out of reach (or deleted).
    #[serde(default)]
    pub quarantined: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub size: u64,
    pub blake3: String,
    pub mime: Option<String>,
    pub object_key: String,
    pub upload_id: String,
    pub created_at: Millis,
}

/// An object (or an unfinished multipart upload) that no record points to any more; the node's
/// garbage collector deletes it and then proposes `ObjectDeleted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Garbage {
    pub object_key: String,
    pub multipart_id: Option<String>,
    pub since: Millis,
}

/// Number of chunks of a file: at least one (an empty file is one empty chunk).
pub fn chunk_count(size: u64, chunk_size: u64) -> u32 {
    u32::try_from(size.div_ceil(chunk_size).max(1)).unwrap_or(u32::MAX)
}

/// The chunk size for a file: a power of two, at least `min`, large enough that the file fits in
/// `MAX_CHUNKS` chunks. `min` is rounded up to a power of two.
pub fn chunk_size_for(size: u64, min: u64) -> u64 {
    let mut c = min.max(1).next_power_of_two();
    while size.div_ceil(c) > MAX_CHUNKS && c < MAX_CHUNK_SIZE {
        c *= 2;
    }
    c
}
