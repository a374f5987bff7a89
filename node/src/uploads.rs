//! The upload-session actor: stages chunks durably, offloads them to the object store in the
//! background, completes and aborts uploads, and sweeps (expiry, garbage, stale staging).
//!
//! The actor owns the bookkeeping (chunks in flight, the offload queue, completions running);
//! the slow work (disk, object store, Raft) runs in tasks it spawns, which report back on an
//! unbounded channel so that no two bounded channels wait on each other.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wharf_raft::model::{Chunk, Command, File, Upload, UploadState};
use wharf_raft::Outcome;

use crate::config::UploadConfig;
use crate::error::{Error, Result};
use crate::meta::{now_ms, Metadata};
use crate::objstore::{sync_dir, ByteStream, ObjectStore};
use crate::quota::QuotaHandle;
use wharf_proto::hash::{self, ChunkHasher};

const MAILBOX: usize = 256;
const WRITE_BUF: usize = 1 << 20;

/// One chunk as it arrives: who sends it, which chunk, the checksums to verify, the bytes.
pub struct ChunkPut {
    pub owner: String,
    pub upload_id: String,
    pub index: u32,
    /// The declared body length, when the transport knows it up front.
    pub content_length: Option<u64>,
    pub blake3: Option<[u8; 32]>,
    pub sha256: Option<[u8; 32]>,
    pub body: ByteStream,
}

enum Msg {
    Put {
        put: ChunkPut,
        reply: oneshot::Sender<Result<()>>,
    },
    Complete {
        owner: String,
        upload_id: String,
        reply: oneshot::Sender<Result<File>>,
    },
    Abort {
        owner: String,
        upload_id: String,
        reply: oneshot::Sender<Result<Upload>>,
    },
}

type ChunkKey = (String, u32);

/// What spawned tasks report back to the actor.
enum Done {
    Chunk {
        key: ChunkKey,
        owner: String,
        staged: bool,
    },
    Offload {
        key: ChunkKey,
        owner: String,
        ok: bool,
    },
    RetryOffload {
        key: ChunkKey,
        owner: String,
    },
    Complete {
        upload_id: String,
    },
    Rescan,
}

/// What every task needs; cheap to share.
pub struct Ctx {
    pub meta: Metadata,
    pub store: Arc<dyn ObjectStore>,
    pub quota: QuotaHandle,
    pub staging: PathBuf,
    pub config: UploadConfig,
    /// See `cluster.staging_grace_secs`.
    pub staging_grace: Duration,
    /// Bytes in staging now (chunks received, not yet in the object store).
    pub staged_bytes: std::sync::atomic::AtomicU64,
    /// New blobs wait for this scanner; without one they are stored unscanned.
    pub scanner: Option<crate::scanner::ScanHandle>,
}

impl Ctx {
    fn unstage(&self, len: u64) {
        use std::sync::atomic::Ordering;
        let _ = self
            .staged_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(len))
            });
    }

    fn chunk_len_hint(&self, owner: &str, upload_id: &str, index: u32) -> u64 {
        self.meta
            .local()
            .state
            .upload(owner, upload_id)
            .map(|u| u.chunk_len(index))
            .unwrap_or(0)
    }
}

/// Bytes of the files under `dir` (the staging directory), for the staging limit.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[derive(Clone)]
pub struct UploadsHandle {
    tx: mpsc::Sender<Msg>,
}

impl UploadsHandle {
    pub fn spawn(ctx: Arc<Ctx>, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let actor = UploadsActor {
            ctx: ctx.clone(),
            rx,
            done_tx: done_tx.clone(),
            done_rx,
            in_flight: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            offloading: 0,
            attempts: HashMap::new(),
            completing: HashSet::new(),
        };
        tokio::spawn(actor.run(stop.clone()));
        tokio::spawn(sweeper(ctx, done_tx, stop));
        Self { tx }
    }

    async fn call<T>(&self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> Msg) -> Result<T> {
        crate::actor::call(&self.tx, msg).await
    }

    /// Resolves once the chunk is fsynced in staging and `ChunkStaged` is committed.
    pub async fn put_chunk(&self, put: ChunkPut) -> Result<()> {
        self.call(|reply| Msg::Put { put, reply }).await
    }

    pub async fn complete(&self, owner: String, upload_id: String) -> Result<File> {
        self.call(|reply| Msg::Complete {
            owner,
            upload_id,
            reply,
        })
        .await
    }

    pub async fn abort(&self, owner: String, upload_id: String) -> Result<Upload> {
        self.call(|reply| Msg::Abort {
            owner,
            upload_id,
            reply,
        })
        .await
    }
}

struct UploadsActor {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<Msg>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Chunks being received on this node: a second copy of the same chunk waits its turn.
    in_flight: HashSet<ChunkKey>,
    /// Staged chunks waiting for the object store, and the set for de-duplication.
    queue: VecDeque<(ChunkKey, String)>,
    queued: HashSet<ChunkKey>,
    offloading: usize,
    attempts: HashMap<ChunkKey, u32>,
    completing: HashSet<String>,
}

impl UploadsActor {
    async fn run(mut self, stop: CancellationToken) {
        self.rescan();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => self.finished(done),
            }
            self.pump();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Put { put, reply } => {
                let key = (put.upload_id.clone(), put.index);
                if !self.in_flight.insert(key.clone()) {
                    let _ = reply.send(Err(Error::conflict(
                        "chunk_in_progress",
                        format!("chunk {} is being received right now; retry", put.index),
                    )));
                    return;
                }
                let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
                tokio::spawn(async move {
                    let owner = put.owner.clone();
                    let res = stage_chunk(&ctx, put).await;
                    let staged = res.is_ok();
                    let _ = reply.send(res);
                    let _ = done.send(Done::Chunk { key, owner, staged });
                });
            }
            Msg::Complete {
                owner,
                upload_id,
                reply,
            } => {
                if !self.completing.insert(upload_id.clone()) {
                    let _ = reply.send(Err(Error::conflict(
                        "upload_completing",
                        "a completion of this upload is already running; retry",
                    )));
                    return;
                }
                let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
                tokio::spawn(async move {
                    let res = complete(&ctx, &owner, &upload_id).await;
                    let _ = reply.send(res);
                    let _ = done.send(Done::Complete { upload_id });
                });
            }
            Msg::Abort {
                owner,
                upload_id,
                reply,
            } => {
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    let res = abort(&ctx, &owner, &upload_id).await;
                    let _ = reply.send(res);
                });
            }
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Chunk { key, owner, staged } => {
                self.in_flight.remove(&key);
                if staged {
                    self.enqueue(key, owner);
                }
            }
            Done::Offload { key, owner, ok } => {
                self.offloading -= 1;
                self.queued.remove(&key);
                if ok {
                    self.attempts.remove(&key);
                } else {
                    // Exponential backoff with jitter, capped at a minute.
                    let n = self.attempts.entry(key.clone()).or_insert(0);
                    *n += 1;
                    let base = 250u64 << (*n).min(8);
                    let delay = Duration::from_millis(base.min(60_000) / 2 + rand_below(base / 2));
                    self.queued.insert(key.clone());
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = done.send(Done::RetryOffload { key, owner });
                    });
                }
            }
            Done::RetryOffload { key, owner } => {
                self.queued.remove(&key);
                self.enqueue(key, owner);
            }
            Done::Complete { upload_id } => {
                self.completing.remove(&upload_id);
            }
            Done::Rescan => self.rescan(),
        }
    }

    fn enqueue(&mut self, key: ChunkKey, owner: String) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back((key, owner));
        }
    }

    /// Queues every chunk staged on this node and not yet offloaded (after a restart, or when
    /// an offload was lost).
    fn rescan(&mut self) {
        let me = self.ctx.meta.node_id;
        let staged: Vec<(ChunkKey, String)> = {
            let applied = self.ctx.meta.local();
            applied
                .state
                .uploads
                .values()
                .filter(|u| u.state == UploadState::Uploading)
                .flat_map(|u| {
                    (0u32..).zip(&u.chunks).filter_map(move |(i, c)| match c {
                        Chunk::Staged { node, .. } if *node == me => {
                            Some(((u.id.clone(), i), u.owner.clone()))
                        }
                        _ => None,
                    })
                })
                .collect()
        };
        for (key, owner) in staged {
            if !self.in_flight.contains(&key) {
                self.enqueue(key, owner);
            }
        }
    }

    fn pump(&mut self) {
        while self.offloading < self.ctx.config.offload_concurrency {
            let Some((key, owner)) = self.queue.pop_front() else {
                break;
            };
            self.offloading += 1;
            let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
            tokio::spawn(async move {
                let res = offload(&ctx, &owner, &key.0, key.1).await;
                if let Err(e) = &res {
                    tracing::warn!(upload = %key.0, chunk = key.1, error = %e, "offload failed; will retry");
                }
                let _ = done.send(Done::Offload {
                    key,
                    owner,
                    ok: res.is_ok(),
                });
            });
        }
    }
}

fn rand_below(n: u64) -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(0..n.max(1))
}

fn staged_path(staging: &Path, upload_id: &str, index: u32) -> PathBuf {
    staging.join(upload_id).join(index.to_string())
}

/// Receives one chunk: stream to a temporary file while hashing, fsync, verify, rename, record
/// `ChunkStaged` in Raft. Nothing is recorded unless every check passed.
async fn stage_chunk(ctx: &Ctx, put: ChunkPut) -> Result<()> {
    let ChunkPut {
        owner,
        upload_id,
        index,
        content_length,
        blake3,
        sha256,
        mut body,
    } = put;
    // This node may not have applied the upload's creation yet: then ask the leader.
    if ctx.meta.local().state.upload(&owner, &upload_id).is_none() {
        drop(ctx.meta.linearizable().await?);
    }
    let (expected_len, offset, already) = {
        let applied = ctx.meta.local();
        let up = applied
            .state
            .upload(&owner, &upload_id)
            .ok_or(Error::NotFound)?;
        if up.state != UploadState::Uploading {
            return Err(Error::conflict(
                "upload_not_active",
                format!("upload is {}", up.state.as_str()),
            ));
        }
        let count = up.chunk_count();
        if index >= count {
            return Err(Error::bad_request(
                "chunk_index_out_of_range",
                format!("chunk index {index} is out of range (the upload has {count} chunks)"),
            ));
        }
        (
            up.chunk_len(index),
            u64::from(index) * up.chunk_size,
            up.chunks[index as usize].blake3().map(str::to_owned),
        )
    };
    if let Some(len) = content_length {
        if len != expected_len {
            return Err(length_mismatch(index, len, expected_len));
        }
    }
    let staged = ctx.staged_bytes.load(std::sync::atomic::Ordering::Relaxed);
    if already.is_none() && staged + expected_len > ctx.config.max_staging_bytes {
        // Read the (bounded) body first: a client still sending would otherwise see a broken
        // pipe instead of this retryable answer.
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.next().await {
            seen += frame.len() as u64;
            if seen > expected_len {
                break;
            }
        }
        return Err(Error::Unavailable(format!(
            "staging is full ({staged} bytes wait for the object store); retry later"
        )));
    }

    let dir = ctx.staging.join(&upload_id);
    tokio::fs::create_dir_all(&dir).await?;
    let tmp = dir.join(format!("{index}.part-{}", uuid::Uuid::now_v7().simple()));
    let received = async {
        let mut file =
            tokio::io::BufWriter::with_capacity(WRITE_BUF, tokio::fs::File::create(&tmp).await?);
        let mut hasher = ChunkHasher::new(offset);
        let mut sha = sha256.map(|_| sha2::Sha256::new());
        let mut written = 0u64;
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| {
                Error::bad_request(
                    "incomplete_body",
                    format!("the chunk body ended with an error after {written} bytes: {e}"),
                )
            })?;
            written += frame.len() as u64;
            if written > expected_len {
                return Err(length_mismatch(index, written, expected_len));
            }
            hasher.update(&frame);
            if let Some(s) = sha.as_mut() {
                s.update(&frame);
            }
            file.write_all(&frame).await?;
        }
        if written != expected_len {
            return Err(length_mismatch(index, written, expected_len));
        }
        file.flush().await?;
        file.get_mut().sync_all().await?;
        let (plain, cv) = hasher.finish();
        if let Some(want) = blake3 {
            if hex::encode(want) != plain {
                return Err(Error::ChecksumMismatch(format!(
                    "chunk {index}: BLAKE3 is {plain}, x-wharf-blake3 says {}",
                    hex::encode(want)
                )));
            }
        }
        if let (Some(want), Some(s)) = (sha256, sha) {
            if s.finalize().as_slice() != want {
                return Err(Error::ChecksumMismatch(format!(
                    "chunk {index}: SHA-256 does not match Content-Digest"
                )));
            }
        }
        Ok((written, plain, cv))
    }
    .await;
    let (len, plain, cv) = match received {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if let Some(have) = already {
        // Already received: the same bytes again are a no-op, other bytes a conflict.
        let _ = tokio::fs::remove_file(&tmp).await;
        return if have == plain {
            Ok(())
        } else {
            Err(Error::conflict(
                "chunk_conflict",
                format!("chunk {index} was already received with different content"),
            ))
        };
    }
    let path = staged_path(&ctx.staging, &upload_id, index);
    tokio::fs::rename(&tmp, &path).await?;
    sync_dir(&dir).await?;
    ctx.staged_bytes
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    let staged = Command::ChunkStaged {
        owner,
        upload_id,
        index,
        node: ctx.meta.node_id,
        len,
        blake3: plain,
        cv,
        now: now_ms(),
    };
    if crate::planted::active(crate::planted::Bug::AckBeforeCommit) {
        // Planted bug: the chunk is acknowledged now and recorded later, if ever.
        let meta = ctx.meta.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = meta.propose(staged).await;
        });
        return Ok(());
    }
    let res = ctx.meta.propose(staged).await.map_err(Error::from);
    match res {
        Ok(_) => Ok(()),
        // Refused for certain: this copy is not needed. (If the outcome is unknown, keep it:
        // the command may still commit, and the rescan then offloads it.)
        Err(e) if !matches!(e, Error::Unavailable(_)) => {
            if tokio::fs::remove_file(&path).await.is_ok() {
                ctx.unstage(len);
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn length_mismatch(index: u32, got: u64, expected: u64) -> Error {
    Error::bad_request(
        "chunk_length_mismatch",
        format!("chunk {index} must be exactly {expected} bytes, got {got}"),
    )
}

/// Moves one staged chunk into the upload's multipart object, records its ETag, then frees the
/// staged copy.
async fn offload(ctx: &Ctx, owner: &str, upload_id: &str, index: u32) -> Result<()> {
    let path = staged_path(&ctx.staging, upload_id, index);
    let (key, multipart_id, whole) = {
        // Linearizable: on a follower, the ChunkStaged just committed through the leader may
        // not be applied here yet, and the chunk would wait for the next sweep.
        let applied = ctx.meta.linearizable().await?;
        let Some(up) = applied.state.upload(owner, upload_id) else {
            return Ok(());
        };
        let staged_here = matches!(up.chunks.get(index as usize),
            Some(Chunk::Staged { node, .. }) if *node == ctx.meta.node_id);
        if up.state != UploadState::Uploading || !staged_here {
            return Ok(());
        }
        (
            up.object_key.clone(),
            up.multipart_id.clone(),
            up.chunk_count() == 1,
        )
    };
    let etag = if whole {
        // A one-chunk file is the whole object: one PutObject, no multipart upload.
        ctx.store.put_object(&key, &path).await?
    } else {
        let multipart_id = ensure_multipart(ctx, owner, upload_id, &key, multipart_id).await?;
        ctx.store
            .upload_part(&key, &multipart_id, index + 1, &path)
            .await?
    };
    let res = ctx
        .meta
        .propose(Command::ChunkOffloaded {
            owner: owner.to_string(),
            upload_id: upload_id.to_string(),
            index,
            etag,
        })
        .await
        .map_err(Error::from);
    match res {
        Ok(_) | Err(Error::Conflict { .. }) => {
            if tokio::fs::remove_file(&path).await.is_ok() {
                ctx.unstage(ctx.chunk_len_hint(owner, upload_id, index));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The upload's multipart upload in the object store: the one recorded in Raft, or a new one
/// (if another node recorded one first, that one wins and ours is dropped).
async fn ensure_multipart(
    ctx: &Ctx,
    owner: &str,
    upload_id: &str,
    key: &str,
    recorded: Option<String>,
) -> Result<String> {
    Ok(match recorded {
        Some(id) => id,
        None => {
            let mine = ctx.store.create_multipart(key).await?;
            let cmd = Command::MultipartCreated {
                owner: owner.to_string(),
                upload_id: upload_id.to_string(),
                multipart_id: mine.clone(),
            };
            match ctx.meta.propose(cmd).await.map_err(Error::from)? {
                Outcome::MultipartId(id) => {
                    if id != mine {
                        // Another offload recorded its multipart upload first.
                        ctx.store.abort_multipart(key, &mine).await?;
                    }
                    id
                }
                other => return Err(Error::Internal(format!("unexpected {other:?}"))),
            }
        }
    })
}

/// Completes an upload: waits until every chunk is in the object store, checks the whole-file
/// BLAKE3 (combined from the chunks' subtree hashes), completes the multipart object and
/// records the file.
async fn complete(ctx: &Ctx, owner: &str, upload_id: &str) -> Result<File> {
    let deadline = Instant::now() + Duration::from_secs(ctx.config.complete_wait_secs);
    let mut first = true;
    let up = loop {
        let up = {
            let applied = if first {
                ctx.meta.linearizable().await?
            } else {
                ctx.meta.local()
            };
            let state = &applied.state;
            let up = state.upload(owner, upload_id).ok_or(Error::NotFound)?;
            match up.state {
                UploadState::Uploading => up.clone(),
                UploadState::Stored => {
                    let fid = up.file_id.as_deref().unwrap_or_default();
                    return state.file(owner, fid).cloned().ok_or(Error::NotFound);
                }
                other => {
                    return Err(Error::conflict(
                        "upload_not_active",
                        format!("upload is {}", other.as_str()),
                    ))
                }
            }
        };
        first = false;
        let missing = up.missing();
        if !missing.is_empty() {
            return Err(Error::MissingChunks(missing));
        }
        if up
            .chunks
            .iter()
            .all(|c| matches!(c, Chunk::Offloaded { .. }))
        {
            break up;
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(
                "chunks are still being moved to the object store; retry".into(),
            ));
        }
        ctx.meta.changed(Duration::from_millis(500)).await;
    };
    let mut parts = Vec::with_capacity(up.chunks.len());
    let mut hashes = Vec::with_capacity(up.chunks.len());
    for (i, c) in (1u32..).zip(&up.chunks) {
        if let Chunk::Offloaded {
            etag, blake3, cv, ..
        } = c
        {
            parts.push((i, etag.clone()));
            hashes.push((blake3.as_str(), cv.as_str()));
        }
    }
    let whole = hash::whole_file(&hashes).map_err(Error::Internal)?;
    if let Some(expected) = &up.expected_blake3 {
        if *expected != whole {
            return Err(Error::ChecksumMismatch(format!(
                "the file's BLAKE3 is {whole}, the upload declared {expected}"
            )));
        }
    }
    // A one-chunk file went in whole with PutObject when it was offloaded.
    if parts.len() > 1 {
        let multipart_id = up
            .multipart_id
            .as_deref()
            .ok_or_else(|| Error::Internal("offloaded upload has no multipart id".into()))?;
        ctx.store
            .complete_multipart(&up.object_key, multipart_id, &parts)
            .await?;
    }
    let out = ctx
        .quota
        .propose(Command::CompleteUpload {
            owner: owner.to_string(),
            upload_id: upload_id.to_string(),
            file_id: uuid::Uuid::now_v7().to_string(),
            blake3: whole,
            scan: ctx.scanner.is_some(),
            now: now_ms(),
        })
        .await?;
    if let Some(s) = &ctx.scanner {
        s.kick();
    }
    let _ = tokio::fs::remove_dir_all(ctx.staging.join(upload_id)).await;
    match out {
        Outcome::File(f) => Ok(f),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

async fn abort(ctx: &Ctx, owner: &str, upload_id: &str) -> Result<Upload> {
    let out = ctx
        .quota
        .propose(Command::AbortUpload {
            owner: owner.to_string(),
            upload_id: upload_id.to_string(),
            now: now_ms(),
        })
        .await?;
    // The object and multipart upload go to the garbage collector; staging is freed here.
    let _ = tokio::fs::remove_dir_all(ctx.staging.join(upload_id)).await;
    match out {
        Outcome::Upload(u) => Ok(u),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

/// Periodic work: the leader expires idle uploads and collects garbage objects; every node frees
/// staging of uploads that ended and re-queues staged chunks whose offload was lost.
async fn sweeper(ctx: Arc<Ctx>, done: mpsc::UnboundedSender<Done>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(ctx.config.sweep_interval_secs));
    // When this node, as leader, first looked at each peer: a peer never heard from since is
    // given the grace time from then.
    let mut leader_since: HashMap<u64, Instant> = HashMap::new();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if ctx.meta.is_leader() {
            match ctx
                .quota
                .propose(Command::ExpireUploads { now: now_ms() })
                .await
            {
                Ok(Outcome::Expired(ids)) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), ?ids, "expired idle uploads");
                }
                Err(e) => tracing::warn!(error = %e, "expiring uploads failed"),
                _ => {}
            }
            collect_garbage(&ctx).await;
            declare_lost_nodes(&ctx, &mut leader_since).await;
        } else {
            leader_since.clear();
        }
        if let Err(e) = sweep_staging(&ctx).await {
            tracing::warn!(error = %e, "sweeping staging failed");
        }
        // Recount from the disk: the running count is only kept between sweeps.
        let staging = ctx.staging.clone();
        if let Ok(bytes) = tokio::task::spawn_blocking(move || dir_bytes(&staging)).await {
            ctx.staged_bytes
                .store(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = done.send(Done::Rescan);
    }
}

/// Chunks staged only on a node that has not answered for the grace time count as missing
/// again, so that clients re-send them to a live node.
async fn declare_lost_nodes(ctx: &Ctx, leader_since: &mut HashMap<u64, Instant>) {
    let holders: HashSet<u64> = ctx
        .meta
        .local()
        .state
        .uploads
        .values()
        .filter(|u| u.state == UploadState::Uploading)
        .flat_map(|u| u.chunks.iter())
        .filter_map(|c| match c {
            Chunk::Staged { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    for node in holders {
        if node == ctx.meta.node_id {
            continue;
        }
        let first_look = *leader_since.entry(node).or_insert_with(Instant::now);
        let silent_for = ctx
            .meta
            .peers
            .since_contact(node)
            .unwrap_or_else(|| first_look.elapsed())
            .min(first_look.elapsed());
        if silent_for < ctx.staging_grace {
            continue;
        }
        match ctx.meta.propose(Command::NodeLost { node }).await {
            Ok(Outcome::ChunksLost(n)) if n > 0 => {
                tracing::warn!(node, chunks = n, "node unreachable past the staging grace time: its staged chunks are missing again");
            }
            Err(e) => tracing::warn!(node, error = %e, "declaring a node's chunks lost failed"),
            _ => {}
        }
    }
}

async fn collect_garbage(ctx: &Ctx) {
    let garbage: Vec<_> = ctx.meta.local().state.garbage.values().cloned().collect();
    for g in garbage {
        let res = async {
            if let Some(mp) = &g.multipart_id {
                ctx.store.abort_multipart(&g.object_key, mp).await?;
            }
            ctx.store.delete(&g.object_key).await?;
            ctx.meta
                .propose(Command::ObjectDeleted {
                    object_key: g.object_key.clone(),
                })
                .await
                .map_err(Error::from)
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(key = %g.object_key, error = %e, "garbage collection failed; will retry");
        }
    }
}

/// Removes the staging directories of uploads that are no longer uploading.
async fn sweep_staging(ctx: &Ctx) -> std::io::Result<()> {
    let active: HashSet<String> = ctx
        .meta
        .local()
        .state
        .uploads
        .values()
        .filter(|u| u.state == UploadState::Uploading)
        .map(|u| u.id.clone())
        .collect();
    let mut dir = tokio::fs::read_dir(&ctx.staging).await?;
    while let Some(entry) = dir.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !active.contains(&name) {
            tokio::fs::remove_dir_all(entry.path()).await?;
        }
    }
    Ok(())
}
