//! The upload-session actor: stages chunks durably, offloads them to the object store in the
//! background, completes and aborts uploads, and sweeps (expiry, garbage, stale staging).
//!
//! The actor owns the bookkeeping (chunks in flight, the offload queue, completions running);
//! the slow work (disk, object store, Raft) runs in tasks it spawns, which report back on an
//! unbounded channel so that no two bounded channels wait on each other.
//!
//! The work itself is in the submodules: `staging` receives a chunk into staging,
//! `offload` moves staged chunks to the object store, `complete` completes and aborts
//! uploads, `sweep` is the periodic sweeper.

mod complete;
mod concat;
mod gauge;
mod offload;
mod single;
mod staging;
mod sweep;
mod tail;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wharf_raft::model::{Chunk, File, Upload};

use crate::actors::quota::QuotaHandle;
use crate::config::UploadConfig;
use crate::error::{Error, Result};
use crate::meta::Metadata;
use crate::store::{ByteStream, ObjectStore};
use complete::{abort, complete};
pub use gauge::{staged_chunk_bytes, StagingGauge};
use offload::{offload, Offloaded};
use single::store_small;
pub use single::{Editor, SmallFile};
use staging::stage_chunk;
pub use sweep::clean_partial_chunks;
use sweep::sweeper;
pub use tail::Tail;

const MAILBOX: usize = 256;

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
    /// A body that ends before the chunk is whole is kept (tus: the bytes of a PATCH that broke
    /// off, or that ended mid-chunk, are not lost) instead of refused.
    pub keep_short: bool,
}

/// What became of a chunk's body.
#[derive(Debug)]
pub enum Received {
    /// Whole, fsynced in staging, and `ChunkStaged` committed.
    Staged,
    /// The body ended after `len` bytes, before the chunk was whole (only with `keep_short`):
    /// they are in the file at `path` (not staged, not fsynced), which the caller now owns.
    Short { path: PathBuf, len: u64 },
}

enum Msg {
    Put {
        put: ChunkPut,
        reply: oneshot::Sender<Result<Received>>,
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
    Store {
        file: SmallFile,
        reply: oneshot::Sender<Result<File>>,
    },
    KeepTail {
        tail: Tail,
        reply: oneshot::Sender<Result<()>>,
    },
}

type ChunkKey = (String, u32);

/// What spawned tasks report back to the actor.
enum Done {
    /// A chunk was received (or refused). The actor replies, after it forgot the chunk was in
    /// flight: a client that retries on the answer never finds it still "in progress".
    Chunk {
        key: ChunkKey,
        owner: String,
        res: Result<Received>,
        reply: oneshot::Sender<Result<Received>>,
    },
    Offload {
        key: ChunkKey,
        owner: String,
        ok: bool,
        /// A tus partial upload's chunk that waits for a final upload to name it.
        parked: bool,
    },
    /// This node applied more of the log (at most every [`APPLIED_EVERY`]).
    Applied,
    RetryOffload {
        key: ChunkKey,
        owner: String,
    },
    Complete {
        upload_id: String,
        res: Result<File>,
        reply: oneshot::Sender<Result<File>>,
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
    /// How long ended uploads (and their idempotency keys) are kept.
    pub upload_retention_ms: u64,
    /// `events.retention_secs`, in milliseconds.
    pub event_retention_ms: u64,
    /// `trash.retention_secs`, in milliseconds.
    pub trash_retention_ms: u64,
    /// `audit.retention_secs`, in milliseconds.
    pub audit_retention_ms: u64,
    /// Bytes in staging now (chunks received or being received, not yet in the object store).
    pub staged: StagingGauge,
    /// New blobs wait for this scanner; without one they are stored unscanned.
    pub scanner: Option<crate::scanner::ScanHandle>,
}

impl Ctx {
    fn chunk_len_hint(&self, owner: &str, upload_id: &str, index: u32) -> u64 {
        self.meta
            .local()
            .upload_record(owner, upload_id)
            .map(|u| u.chunk_len(index))
            .unwrap_or(0)
    }
}

#[derive(Clone)]
pub struct UploadsHandle {
    tx: mpsc::Sender<crate::actors::Envelope<Msg>>,
    /// Where request bodies wait before they become a chunk or a file (swept when stale).
    spool: Arc<PathBuf>,
    /// Shared with the actor: the staging gauge that spooled bodies count against.
    ctx: Arc<Ctx>,
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
            in_flight: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            offloading: 0,
            attempts: HashMap::new(),
            completing: HashSet::new(),
            parked: HashMap::new(),
        };
        let spool = Arc::new(ctx.staging.join(single::SINGLE_DIR));
        tokio::spawn(actor.run(stop.clone()));
        tokio::spawn(watch_applied(ctx.clone(), done_tx.clone(), stop.clone()));
        tokio::spawn(sweeper(ctx.clone(), done_tx, stop));
        Self { tx, spool, ctx }
    }

    async fn call<T>(&self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> Msg) -> Result<T> {
        crate::actors::call(&self.tx, msg).await
    }

    /// The directory for request bodies held before they are taken in (a tus PATCH with a
    /// checksum); what a crash leaves there is removed by the staging sweep.
    /// Bytes held in staging now (chunks and spooled bodies).
    pub fn staging_bytes(&self) -> u64 {
        self.ctx.staged.bytes()
    }

    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool
    }

    /// Room in staging (`upload.max_staging_bytes`) for a spooled body of up to `len` bytes,
    /// held while the reservation lives; `None` when staging is full.
    pub fn spool_room(&self, len: u64) -> Option<gauge::Reservation<'_>> {
        self.ctx.staged.reserve(len)
    }

    /// Resolves once the chunk is fsynced in staging and `ChunkStaged` is committed.
    pub async fn put_chunk(&self, put: ChunkPut) -> Result<()> {
        self.put_chunk_part(put).await.map(drop)
    }

    /// [`put_chunk`](Self::put_chunk), and with `keep_short` the bytes of a body that ended
    /// before the chunk was whole.
    pub async fn put_chunk_part(&self, put: ChunkPut) -> Result<Received> {
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

    /// A whole small file in one request (see `single`).
    pub async fn store_file(&self, file: SmallFile) -> Result<File> {
        self.call(|reply| Msg::Store { file, reply }).await
    }

    /// A tus upload's bytes of a chunk not yet whole become its tail (see `tail`).
    pub async fn keep_tail(&self, tail: Tail) -> Result<()> {
        self.call(|reply| Msg::KeepTail { tail, reply }).await
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
    rx: mpsc::Receiver<crate::actors::Envelope<Msg>>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Chunks being received on this node. A second sender of the same chunk waits; it takes
    /// over when the first makes no progress for `upload.takeover_ms` (a client that vanished).
    in_flight: HashMap<ChunkKey, Flight>,
    /// Staged chunks waiting for the object store, and the set for de-duplication.
    queue: VecDeque<(ChunkKey, String)>,
    queued: HashSet<ChunkKey>,
    offloading: usize,
    attempts: HashMap<ChunkKey, u32>,
    completing: HashSet<String>,
    /// Chunks of tus partial uploads that no final upload has named yet, with their owners:
    /// looked at again as the log moves on, and offloaded once a final claims them.
    parked: HashMap<ChunkKey, String>,
}

impl UploadsActor {
    async fn run(mut self, stop: CancellationToken) {
        self.rescan();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some((origin, span, m)) => span.in_scope(|| {
                        wharf_cluster::origin::sync_scope(origin, || self.handle(m))
                    }),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => self.finished(done),
            }
            self.pump();
            metrics::gauge!("wharf_offload_queue").set(self.queue.len() as f64);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Put { put, reply } => {
                let key = (put.upload_id.clone(), put.index);
                match self.in_flight.get_mut(&key) {
                    None => {
                        let flight = self.receive(key.clone(), put, reply);
                        self.in_flight.insert(key, flight);
                    }
                    Some(f) if f.waiting.is_none() => {
                        f.waiting = Some((put, reply));
                        tokio::spawn(watch_stall(
                            f.progress.clone(),
                            f.cancel.clone(),
                            Duration::from_millis(self.ctx.config.takeover_ms),
                        ));
                    }
                    Some(_) => {
                        let _ = reply.send(Err(Error::conflict(
                            "chunk_in_progress",
                            format!("chunk {} is being received right now; retry", put.index),
                        )));
                    }
                }
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
                wharf_cluster::origin::spawn(async move {
                    let res = complete(&ctx, &owner, &upload_id).await;
                    let _ = done.send(Done::Complete {
                        upload_id,
                        res,
                        reply,
                    });
                });
            }
            Msg::Abort {
                owner,
                upload_id,
                reply,
            } => {
                let ctx = self.ctx.clone();
                wharf_cluster::origin::spawn(async move {
                    let res = abort(&ctx, &owner, &upload_id).await;
                    let _ = reply.send(res);
                });
            }
            Msg::KeepTail { tail, reply } => {
                let ctx = self.ctx.clone();
                wharf_cluster::origin::spawn(async move {
                    let _ = reply.send(tail::keep_tail(&ctx, tail).await);
                });
            }
            Msg::Store { file, reply } => {
                let ctx = self.ctx.clone();
                wharf_cluster::origin::spawn(async move {
                    let _ = reply.send(store_small(&ctx, file).await);
                });
            }
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Chunk {
                key,
                owner,
                res,
                reply,
            } => {
                let waiting = self.in_flight.remove(&key).and_then(|f| f.waiting);
                let staged = matches!(res, Ok(Received::Staged));
                let _ = reply.send(res);
                if let Some((put, reply)) = waiting {
                    // The next sender's turn: the same bytes again are acknowledged at once.
                    let flight = self.receive(key.clone(), put, reply);
                    self.in_flight.insert(key.clone(), flight);
                }
                if staged {
                    self.enqueue(key, owner);
                }
            }
            Done::Offload {
                key,
                owner,
                ok,
                parked,
            } => {
                self.offloading -= 1;
                self.queued.remove(&key);
                if parked {
                    self.parked.insert(key, owner);
                } else if ok {
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
            Done::Complete {
                upload_id,
                res,
                reply,
            } => {
                self.completing.remove(&upload_id);
                let _ = reply.send(res);
            }
            Done::Rescan => self.rescan(),
            Done::Applied => self.unpark(),
        }
    }

    /// Queues the parked chunks whose partial upload a final upload has named since (or that
    /// ended: the offload then frees them).
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let ready: Vec<ChunkKey> = {
            let applied = self.ctx.meta.local();
            self.parked
                .iter()
                .filter(|((id, _), owner)| {
                    let waiting = matches!(
                        applied.concat(owner, id),
                        Some(wharf_raft::model::concat::Concat::Partial { into: None })
                    );
                    let open = applied
                        .upload_record(owner, id)
                        .is_some_and(|u| u.state == wharf_raft::model::UploadState::Uploading);
                    !(waiting && open)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in ready {
            if let Some(owner) = self.parked.remove(&key) {
                self.enqueue(key, owner);
            }
        }
    }

    /// Starts receiving a chunk; its body reports progress and ends when `cancel` fires.
    fn receive(
        &self,
        key: ChunkKey,
        mut put: ChunkPut,
        reply: oneshot::Sender<Result<Received>>,
    ) -> Flight {
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(now_ms()));
        let cancel = CancellationToken::new();
        put.body = Box::pin(Watched {
            inner: put.body,
            progress: progress.clone(),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
            done: false,
        });
        let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let owner = put.owner.clone();
            let res = stage_chunk(&ctx, put).await;
            let _ = done.send(Done::Chunk {
                key,
                owner,
                res,
                reply,
            });
        });
        Flight {
            progress,
            cancel,
            waiting: None,
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
                .open_uploads(usize::MAX)
                .iter()
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
            if !self.in_flight.contains_key(&key) {
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
                match &res {
                    Ok(Offloaded::Done) => {
                        metrics::counter!("wharf_chunks_offloaded_total").increment(1)
                    }
                    Ok(Offloaded::Parked) => {}
                    Err(e) => {
                        metrics::counter!("wharf_offload_failures_total").increment(1);
                        tracing::warn!(upload = %key.0, chunk = key.1, error = %e, "offload failed; will retry");
                    }
                }
                let _ = done.send(Done::Offload {
                    key,
                    owner,
                    ok: res.is_ok(),
                    parked: matches!(res, Ok(Offloaded::Parked)),
                });
            });
        }
    }
}

/// How often at most the actor hears that the log moved on (parked chunks look again).
const APPLIED_EVERY: Duration = Duration::from_millis(100);

/// Tells the actor whenever this node applied more of the log, at most every
/// [`APPLIED_EVERY`]: a final upload committed anywhere frees the parked chunks held here.
async fn watch_applied(ctx: Arc<Ctx>, done: mpsc::UnboundedSender<Done>, stop: CancellationToken) {
    let mut watch = ctx.meta.applied_watch();
    loop {
        watch.applied();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = watch.changed() => {}
        }
        if done.send(Done::Applied).is_err() {
            return;
        }
        tokio::time::sleep(APPLIED_EVERY).await;
    }
}

/// A chunk being received, and the sender waiting to send it next (if any).
struct Flight {
    /// When the body last brought bytes (ms since the epoch).
    progress: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
    waiting: Option<(ChunkPut, oneshot::Sender<Result<Received>>)>,
}

/// Milliseconds on a monotonic clock: a wall-clock step must not look like a stall.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Cancels a receive once its body has brought nothing for `bound` (a sender waits for it).
async fn watch_stall(
    progress: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
    bound: Duration,
) {
    use std::sync::atomic::Ordering;
    let bound_ms = bound.as_millis() as u64;
    loop {
        let idle = now_ms().saturating_sub(progress.load(Ordering::Relaxed));
        if idle >= bound_ms {
            cancel.cancel();
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis((bound_ms - idle).max(50))) => {}
        }
    }
}

/// A chunk body that records progress and fails once another sender took the chunk over.
struct Watched {
    inner: ByteStream,
    progress: Arc<std::sync::atomic::AtomicU64>,
    cancelled: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    done: bool,
}

impl futures::Stream for Watched {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "another sender took this chunk over after this one stalled",
            ))));
        }
        let r = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &r {
            self.progress
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

fn rand_below(n: u64) -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(0..n.max(1))
}
