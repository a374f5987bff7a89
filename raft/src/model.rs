//! The metadata model: a pure, deterministic state machine.
//!
//! `apply(state, command)` reads no clock, does no I/O and draws no random numbers: the proposer
//! puts the time and every new id into the command. That makes the model replayable from the Raft
//! log and testable against a simple reference model (see `tests/model.rs`).
//!
//! Every entity is keyed by its owner (`"{owner}/{id}"`), so that lookups with another user's id
//! find nothing, and so that users can later be hashed to several Raft groups.

use std::collections::BTreeMap;

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
#[serde(tag = "state", rename_all = "snake_case")]
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
    /// Per-chunk state; emptied once the upload ends to keep the state small.
    pub chunks: Vec<Chunk>,
    pub state: UploadState,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Idle time after which the upload expires; each staged chunk pushes `expires_at` out.
    pub ttl_ms: u64,
    pub file_id: Option<String>,
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
#[serde(tag = "state", rename_all = "snake_case")]
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
#[serde(tag = "verdict", rename_all = "snake_case")]
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub users: BTreeMap<String, User>,
    /// Keyed by `"{owner}/{upload_id}"`.
    pub uploads: BTreeMap<String, Upload>,
    /// `"{owner}/{idempotency_key}"` -> upload id.
    pub idempotency: BTreeMap<String, String>,
    /// Keyed by `"{owner}/{blake3}"`: one blob per content per owner.
    pub blobs: BTreeMap<String, Blob>,
    /// Keyed by `"{owner}/{file_id}"`; file ids are time-ordered, so this is also the listing order.
    pub files: BTreeMap<String, File>,
    /// Keyed by object key.
    pub garbage: BTreeMap<String, Garbage>,
    /// The highest node id ever handed out.
    pub last_node_id: u64,
    /// Outcomes of recently applied [`Command::Once`] requests, by request id, so that a
    /// retried proposal is not applied twice.
    #[serde(default)]
    pub requests: BTreeMap<String, (Millis, Outcome)>,
    /// The same ids as `"{at:020}/{id}"` (so oldest first), for forgetting them.
    #[serde(default)]
    pub request_times: std::collections::BTreeSet<String>,
}

/// How long a request id is remembered: much longer than a proposal is ever retried.
pub const REQUEST_MEMORY_MS: Millis = 10 * 60 * 1000;

pub fn key(owner: &str, id: &str) -> String {
    format!("{owner}/{id}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateUpload {
        upload_id: String,
        owner: String,
        tier: Tier,
        limits: TierLimits,
        name: String,
        mime: Option<String>,
        size: u64,
        chunk_size: u64,
        blake3: Option<String>,
        idempotency_key: Option<String>,
        ttl_ms: u64,
        now: Millis,
    },
    MultipartCreated {
        owner: String,
        upload_id: String,
        multipart_id: String,
    },
    ChunkStaged {
        owner: String,
        upload_id: String,
        index: u32,
        node: u64,
        len: u64,
        blake3: String,
        cv: String,
        now: Millis,
    },
    ChunkOffloaded {
        owner: String,
        upload_id: String,
        index: u32,
        etag: String,
    },
    /// The object is complete in the object store; `blake3` is the whole-file hash the proposer
    /// combined from the chunks' subtree hashes.
    CompleteUpload {
        owner: String,
        upload_id: String,
        file_id: String,
        blake3: String,
        /// Whether the new blob waits for a scan (`scan.policy` is not off).
        scan: bool,
        now: Millis,
    },
    AbortUpload {
        owner: String,
        upload_id: String,
        now: Millis,
    },
    /// Proposed by the leader on a timer: every upload idle past its expiry ends.
    ExpireUploads {
        now: Millis,
    },
    DeleteFile {
        owner: String,
        file_id: String,
        now: Millis,
    },
    /// `cmd`, applied at most once under the request id `id`: a proposal retried after its
    /// outcome was lost (the leader changed, a forward's reply never came) gets the first
    /// outcome back instead of being applied again. `at` is the proposer's clock.
    Once {
        id: String,
        at: Millis,
        cmd: Box<Command>,
    },
    /// A file's new name (validated by the proposer, like a new upload's).
    RenameFile {
        owner: String,
        file_id: String,
        name: String,
    },
    SetQuota {
        user: String,
        quota: u64,
    },
    ObjectDeleted {
        object_key: String,
    },
    /// A new node id for a joining node: never one used before, and at least `min` (the
    /// proposer passes one above every id in the membership).
    AllocateNodeId {
        min: u64,
    },
    /// `node` has been unreachable longer than the staging grace time: the chunks only it holds
    /// count as missing again, so that clients re-send them elsewhere.
    NodeLost {
        node: u64,
    },
    /// A scanner takes a blob (keyed `owner/blake3`) until `until`.
    LeaseScan {
        blob: String,
        holder: u64,
        now: Millis,
        until: Millis,
    },
    /// The lease holder's verdict. An infected blob's files are no longer counted as usage.
    ScanFinished {
        blob: String,
        holder: u64,
        verdict: ScanVerdict,
        now: Millis,
    },
    /// The infected blob's object was moved to `object_key` (or deleted, then empty).
    BlobQuarantined {
        blob: String,
        object_key: String,
    },
    /// Scan again (new signatures): one file (by id), or every clean, errored or unscanned blob.
    Rescan {
        file: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Upload(Upload),
    File(File),
    User(User),
    MultipartId(String),
    Expired(Vec<String>),
    NodeId(u64),
    /// Chunks that became missing again.
    ChunksLost(u64),
    Blob(Blob),
    /// Blobs queued for a scan again.
    Requeued(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ModelError {
    #[error("not found")]
    NotFound,
    #[error("quota exceeded: {requested} bytes requested, {available} available")]
    QuotaExceeded { requested: u64, available: u64 },
    #[error("file of {size} bytes is over the tier's limit of {max} bytes")]
    FileTooLarge { size: u64, max: u64 },
    #[error("{max} uploads are already in progress")]
    TooManyUploads { max: u32 },
    #[error("upload is {state}, not uploading")]
    UploadNotActive { state: String },
    #[error("chunk index {index} is out of range (the upload has {count} chunks)")]
    ChunkOutOfRange { index: u32, count: u32 },
    #[error("chunk {index} has length {got}, expected {expected}")]
    ChunkLength { index: u32, got: u64, expected: u64 },
    #[error("chunk {index} was already received with different content")]
    ChunkConflict { index: u32 },
    #[error("chunks not yet in the object store: {0:?}")]
    MissingChunks(Vec<u32>),
    #[error("whole-file BLAKE3 {actual} does not match the declared {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("idempotency key was used for a different upload")]
    IdempotencyConflict,
    #[error("quota {quota} is below the user's used + reserved bytes ({committed})")]
    QuotaBelowUsage { quota: u64, committed: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("the scan lease is held by node {holder}")]
    LeaseHeld { holder: u64 },
}

pub type ApplyResult = Result<Outcome, ModelError>;

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

/// Applies one command: the whole of the model's behaviour.
/// A committed membership names node ids up to `highest`: none of them is handed out again.
pub fn note_member_ids(state: &mut State, highest: u64) {
    state.last_node_id = state.last_node_id.max(highest);
}

pub fn apply(state: &mut State, cmd: Command) -> ApplyResult {
    match cmd {
        Command::Once { id, at, cmd } => {
            if let Some((_, outcome)) = state.requests.get(&id) {
                return Ok(outcome.clone());
            }
            // A refused command changed nothing, so applying it again is harmless: only
            // successes are remembered.
            let outcome = apply(state, *cmd)?;
            while let Some(first) = state.request_times.first() {
                let (t, old) = first.split_once('/').unwrap_or(("0", ""));
                if t.parse::<Millis>()
                    .unwrap_or(0)
                    .saturating_add(REQUEST_MEMORY_MS)
                    > at
                {
                    break;
                }
                state.requests.remove(old);
                state.request_times.pop_first();
            }
            state.request_times.insert(format!("{at:020}/{id}"));
            state.requests.insert(id, (at, outcome.clone()));
            Ok(outcome)
        }
        Command::CreateUpload {
            upload_id,
            owner,
            tier,
            limits,
            name,
            mime,
            size,
            chunk_size,
            blake3,
            idempotency_key,
            ttl_ms,
            now,
        } => {
            if let Some(k) = &idempotency_key {
                if let Some(existing) = state.idempotency.get(&key(&owner, k)) {
                    let up = &state.uploads[&key(&owner, existing)];
                    if up.name != name || up.size != size {
                        return Err(ModelError::IdempotencyConflict);
                    }
                    return Ok(Outcome::Upload(up.clone()));
                }
            }
            if !chunk_size.is_power_of_two() || chunk_size > MAX_CHUNK_SIZE {
                return Err(ModelError::Invalid(
                    "chunk size must be a power of two".into(),
                ));
            }
            if size.div_ceil(chunk_size) > MAX_CHUNKS {
                return Err(ModelError::Invalid("too many chunks".into()));
            }
            let max = limits.max_file_size.min(MAX_OBJECT_SIZE);
            if size > max {
                return Err(ModelError::FileTooLarge { size, max });
            }
            if let Some(up) = state.uploads.get(&key(&owner, &upload_id)) {
                // The same proposal applied twice (a forward retried after a lost reply).
                if up.name == name && up.size == size && up.created_at == now {
                    return Ok(Outcome::Upload(up.clone()));
                }
                return Err(ModelError::Invalid("upload id already used".into()));
            }
            let user = state.users.entry(owner.clone()).or_insert_with(|| User {
                id: owner.clone(),
                tier,
                quota: limits.quota,
                quota_set_by_admin: false,
                used: 0,
                reserved: 0,
                active_uploads: 0,
            });
            user.tier = tier;
            user.quota = user.quota_under(&limits);
            if user.active_uploads >= limits.max_concurrent_uploads {
                return Err(ModelError::TooManyUploads {
                    max: limits.max_concurrent_uploads,
                });
            }
            let available = user.quota.saturating_sub(user.used + user.reserved);
            if size > available {
                return Err(ModelError::QuotaExceeded {
                    requested: size,
                    available,
                });
            }
            user.reserved += size;
            user.active_uploads += 1;
            let upload = Upload {
                id: upload_id.clone(),
                owner: owner.clone(),
                name,
                mime,
                size,
                chunk_size,
                expected_blake3: blake3,
                idempotency_key: idempotency_key.clone(),
                object_key: format!("uploads/{upload_id}"),
                multipart_id: None,
                chunks: vec![Chunk::Missing; chunk_count(size, chunk_size) as usize],
                state: UploadState::Uploading,
                created_at: now,
                expires_at: now.saturating_add(ttl_ms),
                ttl_ms,
                file_id: None,
            };
            if let Some(k) = idempotency_key {
                state.idempotency.insert(key(&owner, &k), upload_id.clone());
            }
            state
                .uploads
                .insert(key(&owner, &upload_id), upload.clone());
            Ok(Outcome::Upload(upload))
        }

        Command::MultipartCreated {
            owner,
            upload_id,
            multipart_id,
        } => {
            let up = active_upload(state, &owner, &upload_id)?;
            // The first recorded id wins; a node that raced sees it and drops its own.
            let id = up.multipart_id.get_or_insert(multipart_id).clone();
            Ok(Outcome::MultipartId(id))
        }

        Command::ChunkStaged {
            owner,
            upload_id,
            index,
            node,
            len,
            blake3,
            cv,
            now,
        } => {
            let up = active_upload(state, &owner, &upload_id)?;
            let count = up.chunk_count();
            if index >= count {
                return Err(ModelError::ChunkOutOfRange { index, count });
            }
            let expected = up.chunk_len(index);
            if len != expected {
                return Err(ModelError::ChunkLength {
                    index,
                    got: len,
                    expected,
                });
            }
            let chunk = &mut up.chunks[index as usize];
            match chunk.blake3() {
                None => {
                    *chunk = Chunk::Staged {
                        node,
                        len,
                        blake3,
                        cv,
                    }
                }
                Some(h) if h == blake3 => {}
                // A refused command changes nothing, the expiry included.
                Some(_) => return Err(ModelError::ChunkConflict { index }),
            }
            up.expires_at = now.saturating_add(up.ttl_ms).max(up.expires_at);
            Ok(Outcome::Upload(up.clone()))
        }

        Command::ChunkOffloaded {
            owner,
            upload_id,
            index,
            etag,
        } => {
            let up = active_upload(state, &owner, &upload_id)?;
            let count = up.chunk_count();
            let chunk = up
                .chunks
                .get_mut(index as usize)
                .ok_or(ModelError::ChunkOutOfRange { index, count })?;
            match chunk {
                Chunk::Staged {
                    node,
                    len,
                    blake3,
                    cv,
                } => {
                    *chunk = Chunk::Offloaded {
                        node: *node,
                        len: *len,
                        blake3: std::mem::take(blake3),
                        cv: std::mem::take(cv),
                        etag,
                    };
                    Ok(Outcome::Done)
                }
                Chunk::Offloaded { .. } => Ok(Outcome::Done),
                Chunk::Missing => Err(ModelError::MissingChunks(vec![index])),
            }
        }

        Command::CompleteUpload {
            owner,
            upload_id,
            file_id,
            blake3,
            scan,
            now,
        } => {
            let k = key(&owner, &upload_id);
            let up = state.uploads.get_mut(&k).ok_or(ModelError::NotFound)?;
            if up.state == UploadState::Stored {
                // A retried completion answers with the file it already made.
                let fid = up.file_id.clone().unwrap_or_default();
                return state
                    .files
                    .get(&key(&owner, &fid))
                    .cloned()
                    .map(Outcome::File)
                    .ok_or(ModelError::NotFound);
            }
            if up.state != UploadState::Uploading {
                return Err(ModelError::UploadNotActive {
                    state: up.state.as_str().into(),
                });
            }
            let pending = indexes(&up.chunks, |c| !matches!(c, Chunk::Offloaded { .. }));
            if !pending.is_empty() {
                return Err(ModelError::MissingChunks(pending));
            }
            if let Some(expected) = &up.expected_blake3 {
                if *expected != blake3 {
                    return Err(ModelError::ChecksumMismatch {
                        expected: expected.clone(),
                        actual: blake3,
                    });
                }
            }
            if state.files.contains_key(&key(&owner, &file_id)) {
                return Err(ModelError::Invalid("file id already used".into()));
            }
            up.state = UploadState::Stored;
            up.file_id = Some(file_id.clone());
            up.chunks = Vec::new();
            let (size, object_key) = (up.size, up.object_key.clone());
            let file = File {
                id: file_id.clone(),
                owner: owner.clone(),
                name: up.name.clone(),
                size,
                blake3: blake3.clone(),
                mime: up.mime.clone(),
                object_key: object_key.clone(),
                upload_id,
                created_at: now,
            };
            let infected = state
                .blobs
                .get(&key(&owner, &blake3))
                .is_some_and(|b| matches!(b.scan, ScanState::Infected { .. }));
            let user = state.users.get_mut(&owner).ok_or(ModelError::NotFound)?;
            user.reserved -= size;
            if !infected {
                user.used += size;
            }
            user.active_uploads -= 1;
            match state.blobs.get_mut(&key(&owner, &blake3)) {
                Some(blob) => {
                    // Same content already stored: point at that object, drop the new one.
                    blob.refcount += 1;
                    let file = File {
                        object_key: blob.object_key.clone(),
                        ..file
                    };
                    state.garbage.insert(
                        object_key.clone(),
                        Garbage {
                            object_key,
                            multipart_id: None,
                            since: now,
                        },
                    );
                    state.files.insert(key(&owner, &file_id), file.clone());
                    Ok(Outcome::File(file))
                }
                None => {
                    state.blobs.insert(
                        key(&owner, &blake3),
                        Blob {
                            owner: owner.clone(),
                            blake3,
                            object_key,
                            size,
                            refcount: 1,
                            scan: if scan {
                                ScanState::Pending
                            } else {
                                ScanState::Unscanned
                            },
                            quarantined: false,
                        },
                    );
                    state.files.insert(key(&owner, &file_id), file.clone());
                    Ok(Outcome::File(file))
                }
            }
        }

        Command::AbortUpload {
            owner,
            upload_id,
            now,
        } => {
            let k = key(&owner, &upload_id);
            active_upload(state, &owner, &upload_id)?;
            let up = end_upload(state, &k, UploadState::Aborted, now);
            Ok(Outcome::Upload(up))
        }

        Command::ExpireUploads { now } => {
            let due: Vec<String> = state
                .uploads
                .iter()
                .filter(|(_, u)| u.state == UploadState::Uploading && u.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            let ids = due
                .iter()
                .map(|k| end_upload(state, k, UploadState::Expired, now).id)
                .collect();
            Ok(Outcome::Expired(ids))
        }

        Command::RenameFile {
            owner,
            file_id,
            name,
        } => {
            let file = state
                .files
                .get_mut(&key(&owner, &file_id))
                .ok_or(ModelError::NotFound)?;
            file.name = name;
            Ok(Outcome::File(file.clone()))
        }
        Command::DeleteFile {
            owner,
            file_id,
            now,
        } => {
            let file = state
                .files
                .remove(&key(&owner, &file_id))
                .ok_or(ModelError::NotFound)?;
            let bk = key(&owner, &file.blake3);
            let infected = state
                .blobs
                .get(&bk)
                .is_some_and(|b| matches!(b.scan, ScanState::Infected { .. }));
            if let Some(user) = state.users.get_mut(&owner) {
                if !infected {
                    user.used -= file.size;
                }
            }
            if let Some(blob) = state.blobs.get_mut(&bk) {
                blob.refcount -= 1;
                if blob.refcount == 0 {
                    let blob = state.blobs.remove(&bk).expect("present");
                    if blob.object_key.is_empty() {
                        // A quarantined blob whose object was already deleted.
                        return Ok(Outcome::File(file));
                    }
                    state.garbage.insert(
                        blob.object_key.clone(),
                        Garbage {
                            object_key: blob.object_key,
                            multipart_id: None,
                            since: now,
                        },
                    );
                }
            }
            Ok(Outcome::File(file))
        }

        Command::SetQuota { user, quota } => {
            let u = state.users.entry(user.clone()).or_insert_with(|| User {
                id: user,
                tier: Tier::Basic,
                quota: 0,
                quota_set_by_admin: true,
                used: 0,
                reserved: 0,
                active_uploads: 0,
            });
            let committed = u.used + u.reserved;
            if quota < committed {
                return Err(ModelError::QuotaBelowUsage { quota, committed });
            }
            u.quota = quota;
            u.quota_set_by_admin = true;
            Ok(Outcome::User(u.clone()))
        }

        Command::ObjectDeleted { object_key } => {
            state.garbage.remove(&object_key);
            Ok(Outcome::Done)
        }

        Command::AllocateNodeId { min } => {
            let id = min.max(state.last_node_id + 1);
            state.last_node_id = id;
            Ok(Outcome::NodeId(id))
        }

        Command::LeaseScan {
            blob,
            holder,
            now,
            until,
        } => {
            let b = state.blobs.get_mut(&blob).ok_or(ModelError::NotFound)?;
            if !b.scan.leasable(now) {
                return match &b.scan {
                    ScanState::Scanning { holder, .. } => {
                        Err(ModelError::LeaseHeld { holder: *holder })
                    }
                    other => Err(ModelError::Invalid(format!(
                        "blob is {}, not waiting for a scan",
                        other.as_str()
                    ))),
                };
            }
            b.scan = ScanState::Scanning { holder, until };
            Ok(Outcome::Blob(b.clone()))
        }

        Command::ScanFinished {
            blob,
            holder,
            verdict,
            now,
        } => {
            let b = state.blobs.get_mut(&blob).ok_or(ModelError::NotFound)?;
            match b.scan {
                ScanState::Scanning { holder: h, .. } if h == holder => {}
                ScanState::Scanning { holder: h, .. } => {
                    return Err(ModelError::LeaseHeld { holder: h })
                }
                _ => return Err(ModelError::Invalid("no scan lease on this blob".into())),
            }
            b.scan = match verdict {
                ScanVerdict::Released => ScanState::Pending,
                ScanVerdict::Clean => ScanState::Clean { at: now },
                ScanVerdict::Error { message } => ScanState::Error { message, at: now },
                ScanVerdict::Infected { signature } => ScanState::Infected { signature, at: now },
            };
            let b = b.clone();
            if matches!(b.scan, ScanState::Infected { .. }) {
                // Quarantined files no longer count against their owner.
                let size: u64 = state
                    .files
                    .values()
                    .filter(|f| f.owner == b.owner && f.blake3 == b.blake3)
                    .map(|f| f.size)
                    .sum();
                if let Some(user) = state.users.get_mut(&b.owner) {
                    user.used -= size;
                }
            }
            Ok(Outcome::Blob(b))
        }

        Command::BlobQuarantined { blob, object_key } => {
            let b = state.blobs.get_mut(&blob).ok_or(ModelError::NotFound)?;
            if !matches!(b.scan, ScanState::Infected { .. }) {
                return Err(ModelError::Invalid(
                    "only infected blobs are quarantined".into(),
                ));
            }
            b.quarantined = true;
            b.object_key = object_key.clone();
            for f in state.files.values_mut() {
                if f.owner == b.owner && f.blake3 == b.blake3 {
                    f.object_key = object_key.clone();
                }
            }
            Ok(Outcome::Done)
        }

        Command::Rescan { file } => {
            let targets: Vec<String> = match file {
                Some(file_id) => {
                    let f = state
                        .files
                        .values()
                        .find(|f| f.id == file_id)
                        .ok_or(ModelError::NotFound)?;
                    vec![key(&f.owner, &f.blake3)]
                }
                None => state.blobs.keys().cloned().collect(),
            };
            let mut n = 0;
            for k in targets {
                if let Some(b) = state.blobs.get_mut(&k) {
                    if matches!(
                        b.scan,
                        ScanState::Clean { .. } | ScanState::Error { .. } | ScanState::Unscanned
                    ) {
                        b.scan = ScanState::Pending;
                        n += 1;
                    }
                }
            }
            Ok(Outcome::Requeued(n))
        }

        Command::NodeLost { node } => {
            let mut lost = 0;
            for up in state.uploads.values_mut() {
                if up.state != UploadState::Uploading {
                    continue;
                }
                for c in &mut up.chunks {
                    if matches!(c, Chunk::Staged { node: n, .. } if *n == node) {
                        *c = Chunk::Missing;
                        lost += 1;
                    }
                }
            }
            Ok(Outcome::ChunksLost(lost))
        }
    }
}

fn active_upload<'a>(
    state: &'a mut State,
    owner: &str,
    upload_id: &str,
) -> Result<&'a mut Upload, ModelError> {
    let up = state
        .uploads
        .get_mut(&key(owner, upload_id))
        .ok_or(ModelError::NotFound)?;
    if up.state != UploadState::Uploading {
        return Err(ModelError::UploadNotActive {
            state: up.state.as_str().into(),
        });
    }
    Ok(up)
}

/// Ends an uploading session without a file: releases its reservation exactly once and hands
/// its object (and multipart upload) to the garbage collector.
fn end_upload(state: &mut State, k: &str, to: UploadState, now: Millis) -> Upload {
    let up = state.uploads.get_mut(k).expect("caller checked");
    debug_assert_eq!(up.state, UploadState::Uploading);
    up.state = to;
    up.chunks = Vec::new();
    let snapshot = up.clone();
    if let Some(user) = state.users.get_mut(&up.owner) {
        user.reserved -= up.size;
        user.active_uploads -= 1;
    }
    state.garbage.insert(
        up.object_key.clone(),
        Garbage {
            object_key: up.object_key.clone(),
            multipart_id: up.multipart_id.clone(),
            since: now,
        },
    );
    snapshot
}

impl State {
    /// BLAKE3 of the whole state's canonical JSON (every map is ordered): two nodes that
    /// applied the same log have the same digest.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("the state serializes");
        blake3::hash(&json).to_hex().to_string()
    }

    pub fn upload(&self, owner: &str, upload_id: &str) -> Option<&Upload> {
        self.uploads.get(&key(owner, upload_id))
    }

    pub fn file(&self, owner: &str, file_id: &str) -> Option<&File> {
        self.files.get(&key(owner, file_id))
    }

    /// A page of `owner`'s uploads in creation order (upload ids are time-ordered), starting
    /// after `cursor` (an upload id), only those in `only` when given.
    pub fn uploads_page(
        &self,
        owner: &str,
        only: Option<UploadState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Vec<&Upload> {
        use std::ops::Bound;
        let prefix = format!("{owner}/");
        let start = match cursor {
            Some(c) => Bound::Excluded(key(owner, c)),
            None => Bound::Included(prefix.clone()),
        };
        self.uploads
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, u)| u)
            .filter(|u| only.is_none_or(|s| u.state == s))
            .take(limit)
            .collect()
    }

    /// A page of `owner`'s files in creation order, starting after `cursor` (a file id).
    pub fn files_page(&self, owner: &str, cursor: Option<&str>, limit: usize) -> Vec<&File> {
        use std::ops::Bound;
        let prefix = format!("{owner}/");
        let start = match cursor {
            Some(c) => Bound::Excluded(key(owner, c)),
            None => Bound::Included(prefix.clone()),
        };
        self.files
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit)
            .map(|(_, f)| f)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_is_a_power_of_two_and_fits_max_chunks() {
        const MIB: u64 = 1 << 20;
        assert_eq!(chunk_size_for(0, 8 * MIB), 8 * MIB);
        assert_eq!(chunk_size_for(10 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(chunk_size_for(10_000 * 8 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(chunk_size_for(10_000 * 8 * MIB + 1, 8 * MIB), 16 * MIB);
        assert_eq!(chunk_size_for(5 << 40, 8 * MIB), 1 << 30);
        assert_eq!(chunk_size_for(1, 5 * MIB), 8 * MIB);
        assert_eq!(chunk_count(0, 8), 1);
        assert_eq!(chunk_count(17, 8), 3);
    }
}
