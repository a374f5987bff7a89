//! The state machine: the model's records in the fjall keyspace `state`.
//!
//! A batch of entries is applied through an [`Overlay`] over the keyspace; its writes, the new
//! last-applied log id, membership and digest then commit as one fjall batch, so a crash never
//! shows a state between two of them. Readers (the node) get a [`StateView`] over the
//! keyspace. A snapshot is the state as of the moment its build began, read page by page from
//! the live keyspace while applies go on: a commit first saves the old value of every key the
//! build has not read yet ([`Building`]), and the build reads those saved values instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Keyspace, Readable};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};

mod build;
mod refound;

use build::{before_image, Building};

use super::snapshot::{self, Pointer};
use super::{Db, StorageResult};
use crate::codec;
use crate::kv::{scan_start, BaseReads, Kv, KvMut, Overlay, SetHash, Writes};
use crate::model::{self, keys, State};
use crate::{NodeId, Request, Response, TypeConfig, WharfNode};

pub(crate) const APPLIED: &[u8] = b"\xffapplied";
pub(crate) const MEMBERSHIP: &[u8] = b"\xffmembership";
pub(crate) const DIGEST: &[u8] = b"\xffdigest";
/// Before-images saved for a snapshot build: `UNDO` + key (see [`Building`]). In the `state`
/// keyspace itself, beside the records they belong to: a keyspace of their own, cleared after
/// each build, would hold fjall's journals back (fjall deletes a journal once every keyspace
/// that had writes in it shows a table at least as new, and a cleared keyspace has none).
const UNDO: &[u8] = b"\xffundo/";
/// Just past every `UNDO` key.
const UNDO_END: &[u8] = b"\xffundo0";
/// Before-images removed per batch when a build ends.
const UNDO_CLEAR_BATCH: usize = 4096;
/// In the `raft` keyspace.
pub(crate) const SNAPSHOT: &[u8] = b"snapshot";
pub(crate) const INSTALLING: &[u8] = b"installing";
/// Records loaded per batch when a snapshot is installed.
const LOAD_BATCH: usize = 4096;

/// Where the live records under a prefix begin, as far as the apply path has seen: a removed
/// key stays in an LSM tree as a tombstone until compaction drops it, so a scan from the start
/// of a prefix used as a queue (request ids by time, the scan queue, expiry indexes) would walk
/// every record removed from its front since then, and forgetting old request ids scans one
/// on every apply. A hint is a key below which the prefix holds no live record; removals keep
/// it true, and every commit lowers it below any key it writes under that prefix.
#[derive(Default)]
struct Hints(HashMap<Vec<u8>, Start>);

#[derive(Clone)]
enum Start {
    /// No live record under the prefix sorts below this key.
    At(Vec<u8>),
    /// The prefix holds no live record.
    Empty,
}

/// Prefixes tracked at most (then forgotten all at once; a hint only saves work).
const MAX_HINTS: usize = 4096;

impl Hints {
    /// Only prefixes ending in `/` are tracked: [`Hints::written`] finds them at a key's `/`s.
    fn tracks(prefix: &[u8]) -> bool {
        prefix.last() == Some(&b'/')
    }

    fn note(&mut self, prefix: &[u8], start: Start) {
        if self.0.len() >= MAX_HINTS && !self.0.contains_key(prefix) {
            self.0.clear();
        }
        self.0.insert(prefix.to_vec(), start);
    }

    /// A key is about to be written: no hint may stay above it.
    fn written(&mut self, key: &[u8]) {
        if self.0.is_empty() {
            return;
        }
        for (i, b) in key.iter().enumerate() {
            if *b != b'/' {
                continue;
            }
            if let Some(h) = self.0.get_mut(&key[..=i]) {
                let above = match h {
                    Start::At(k) => key < k.as_slice(),
                    Start::Empty => true,
                };
                if above {
                    *h = Start::At(key.to_vec());
                }
            }
        }
    }
}

/// Read access to the `state` keyspace, live or as of a point in time. A read error is logged
/// and reads as absent (the node's readers have no better answer); the apply path checks
/// [`TreeKv::take_error`].
#[derive(Clone)]
pub struct TreeKv {
    ks: Keyspace,
    at: Option<fjall::Snapshot>,
    /// The apply path's, which alone writes the keyspace (between its scans, never during).
    hints: Option<Arc<Mutex<Hints>>>,
    error: Arc<Mutex<Option<fjall::Error>>>,
}

impl TreeKv {
    pub(crate) fn new(ks: Keyspace) -> Self {
        Self {
            ks,
            at: None,
            hints: None,
            error: Arc::default(),
        }
    }

    /// The keyspace as it is in `snapshot`, whatever is written after.
    fn at(ks: Keyspace, snapshot: fjall::Snapshot) -> Self {
        Self {
            at: Some(snapshot),
            ..Self::new(ks)
        }
    }

    /// The live keyspace, read by the apply path with its scan hints.
    fn for_apply(ks: Keyspace, hints: Arc<Mutex<Hints>>) -> Self {
        Self {
            hints: Some(hints),
            ..Self::new(ks)
        }
    }

    fn failed(&self, e: fjall::Error) {
        tracing::error!(error = %e, "reading the metadata store");
        *self.error.lock().expect("lock poisoned") = Some(e);
    }

    fn take_error(&self) -> Option<fjall::Error> {
        self.error.lock().expect("lock poisoned").take()
    }

    fn read(&self, key: &[u8]) -> fjall::Result<Option<fjall::Slice>> {
        match &self.at {
            Some(s) => s.get(&self.ks, key),
            None => self.ks.get(key),
        }
    }

    fn iter(&self, range: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>)) -> fjall::Iter {
        match &self.at {
            Some(s) => s.range(&self.ks, range),
            None => self.ks.range(range),
        }
    }
}

impl Kv for TreeKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.read(key) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                self.failed(e);
                None
            }
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        use std::ops::Bound;
        let mut start = scan_start(prefix, after);
        // With a hint, a scan that would begin at or below it begins at it, and what it finds
        // first becomes the new hint.
        let hints = self.hints.as_ref().filter(|_| Hints::tracks(prefix));
        let mut learn = false;
        if let Some(h) = hints {
            let below = |k: &[u8]| match &start {
                Bound::Included(s) | Bound::Excluded(s) => s.as_slice() < k,
                Bound::Unbounded => true,
            };
            match h.lock().expect("lock poisoned").0.get(prefix) {
                Some(Start::Empty) => return,
                Some(Start::At(k)) if below(k) => {
                    start = Bound::Included(k.clone());
                    learn = true;
                }
                Some(Start::At(_)) => {}
                None => learn = after.is_none(),
            }
        }
        let mut first = true;
        for g in self.iter((start, Bound::Unbounded)) {
            match g.into_inner() {
                Ok((k, v)) => {
                    let inside = k.starts_with(prefix);
                    if learn && first {
                        let at = if inside {
                            Start::At(k.to_vec())
                        } else {
                            Start::Empty
                        };
                        if let Some(h) = hints {
                            h.lock().expect("lock poisoned").note(prefix, at);
                        }
                    }
                    first = false;
                    if !inside || !visit(&k, &v) {
                        return;
                    }
                }
                Err(e) => {
                    self.failed(e);
                    return;
                }
            }
        }
        if learn && first {
            if let Some(h) = hints {
                h.lock().expect("lock poisoned").note(prefix, Start::Empty);
            }
        }
    }

    fn digest(&self) -> Option<SetHash> {
        Some(SetHash::from_bytes(&self.get(DIGEST).unwrap_or_default()))
    }
}

/// The last applied log id and membership.
pub type AppliedState = (Option<LogId<NodeId>>, StoredMembership<NodeId, WharfNode>);

/// The applied state as the node reads it.
pub type StateView = State<TreeKv>;

struct Inner {
    db: Db,
    snapshots: PathBuf,
    hints: Arc<Mutex<Hints>>,
    /// Held while a batch commits, and while a snapshot build reads a page; holds the build
    /// under way, if any.
    commit: Mutex<Option<Building>>,
    /// One snapshot is built or installed at a time.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Held while the current snapshot changes (pointer written, old file removed) and while
    /// it is opened, so that a reader never opens a file that was just removed.
    swap: Mutex<()>,
    receiving: Mutex<Option<PathBuf>>,
    seq: AtomicU64,
}

#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)).into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::new(&e)).into()
}

impl StateMachineStore {
    pub(crate) fn open(db: Db, dir: &Path) -> Result<Self, crate::Error> {
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots)?;
        let inner = Inner {
            db,
            snapshots,
            hints: Arc::default(),
            commit: Mutex::new(None),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            swap: Mutex::new(()),
            receiving: Mutex::new(None),
            seq: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
            ),
        };
        // An install that a crash interrupted is done again from its (complete) file.
        if let Some(v) = inner.db.raft.get(INSTALLING)? {
            let ptr: Pointer = codec::decode(&v)?;
            tracing::warn!(snapshot = %ptr.meta.snapshot_id, "finishing an interrupted snapshot install");
            inner.load(&ptr)?;
        }
        // Leftovers of builds and transfers that never finished.
        let current = inner.pointer()?.map(|p| p.file);
        for e in std::fs::read_dir(&inner.snapshots)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if Some(&name) != current.as_ref() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The applied state, read straight from the keyspace (what this node has applied so far).
    pub fn view(&self) -> StateView {
        State::new(TreeKv::new(self.inner.db.state.clone()))
    }

    /// The last applied log index and the state's digest, read together (as of one instant).
    pub fn applied_digest(&self) -> (u64, String) {
        let kv = TreeKv::at(
            self.inner.db.state.clone(),
            self.inner.db.state_db.snapshot(),
        );
        let index = applied_in(&kv)
            .ok()
            .and_then(|(l, _)| l)
            .map(|l| l.index)
            .unwrap_or(0);
        (index, State::new(kv).digest())
    }

    /// The last applied log id and membership, as committed with the state.
    pub fn applied(&self) -> Result<AppliedState, crate::Error> {
        applied_in(&TreeKv::new(self.inner.db.state.clone()))
    }
}

/// The last applied log id and membership in `kv`.
impl StateView {
    /// The index of the last entry applied to this state (0 before any).
    pub fn applied_index(&self) -> u64 {
        applied_in(self.kv())
            .ok()
            .and_then(|(l, _)| l)
            .map_or(0, |l| l.index)
    }
}

fn applied_in(kv: &TreeKv) -> Result<AppliedState, crate::Error> {
    let applied = match kv.read(APPLIED)? {
        Some(v) => codec::decode(&v)?,
        None => None,
    };
    let membership = match kv.read(MEMBERSHIP)? {
        Some(v) => codec::decode(&v)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

impl Inner {
    fn applied(&self) -> Result<AppliedState, crate::Error> {
        applied_in(&TreeKv::new(self.db.state.clone()))
    }

    fn pointer(&self) -> Result<Option<Pointer>, crate::Error> {
        Ok(match self.db.raft.get(SNAPSHOT)? {
            Some(v) => Some(codec::decode(&v)?),
            None => None,
        })
    }

    fn next_name(&self, ext: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.snapshots.join(format!("snap-{n}.{ext}"))
    }

    /// Commits a batch of buffered writes, keeping the digest in step. `read`: values the
    /// batch read from the keyspace (as they are until this commit), so that the old values
    /// of the keys it writes need not be read again.
    fn commit(&self, mut writes: Writes, read: BaseReads) -> fjall::Result<()> {
        let building = self.commit.lock().expect("lock poisoned");
        let state = &self.db.state;
        let mut digest = SetHash::from_bytes(&state.get(DIGEST)?.unwrap_or_default());
        let mut batch = self.db.state_db.batch();
        writes.remove(DIGEST);
        let mut hints = self.hints.lock().expect("lock poisoned");
        for (k, v) in writes {
            if v.is_some() {
                hints.written(&k);
            }
            if k.first() != Some(&keys::STORE) {
                let old = match read.get(&k) {
                    Some(old) => old.clone(),
                    None => state.get(&k)?.map(|v| v.to_vec()),
                };
                if let Some(old) = &old {
                    digest.remove(&k, old);
                }
                if let Some(new) = &v {
                    digest.add(&k, new);
                }
                if building.as_ref().is_some_and(|b| b.unread(&k)) {
                    let saved = [UNDO, &k].concat();
                    if state.get(&saved)?.is_none() {
                        batch.insert(state, saved, before_image(old.as_deref()));
                    }
                }
            }
            match v {
                Some(v) => batch.insert(state, k, v),
                None => batch.remove(state, k),
            }
        }
        batch.insert(state, DIGEST, digest.to_bytes().to_vec());
        batch.commit()
    }

    /// Replaces the state with a snapshot file's records (already checked), then records the
    /// snapshot as current and drops the install marker.
    fn load(&self, ptr: &Pointer) -> Result<(), crate::Error> {
        let path = self.snapshots.join(&ptr.file);
        let state = &self.db.state;
        let _commit = self.commit.lock().expect("lock poisoned");
        self.hints.lock().expect("lock poisoned").0.clear();
        state.clear()?;
        let mut batch = self.db.state_db.batch();
        let mut digest = SetHash::default();
        snapshot::read_file(&path, |k, v| {
            digest.add(&k, &v);
            batch.insert(state, k, v);
            if batch.len() == LOAD_BATCH {
                std::mem::replace(&mut batch, self.db.state_db.batch())
                    .commit()
                    .map_err(std::io::Error::other)?;
            }
            Ok(())
        })?;
        batch.insert(state, APPLIED, codec::encode(&ptr.meta.last_log_id));
        batch.insert(state, MEMBERSHIP, codec::encode(&ptr.meta.last_membership));
        batch.insert(state, DIGEST, digest.to_bytes().to_vec());
        batch.commit()?;
        // The state first: the log it replaces may be purged once the snapshot is current.
        self.db.persist_state()?;
        let _swap = self.swap.lock().expect("lock poisoned");
        let old = self.pointer()?;
        let mut meta = self.db.db.batch();
        meta.insert(&self.db.raft, SNAPSHOT, codec::encode(ptr));
        meta.remove(&self.db.raft, INSTALLING);
        meta.commit()?;
        self.db.persist()?;
        if let Some(old) = old.filter(|o| o.file != ptr.file) {
            let _ = std::fs::remove_file(self.snapshots.join(old.file));
        }
        Ok(())
    }

    /// Builds a snapshot file of the state as of now, while applies go on ([`Building`]).
    fn build(&self) -> Result<Pointer, crate::Error> {
        /// Ends the build however this function is left (an error, a panic).
        struct Ending<'a>(&'a Inner);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                self.0.end_build();
            }
        }
        let ending = Ending(self);
        let (last_log_id, last_membership) = self.begin_build()?;
        let path = self.next_name("part");
        let started = std::time::Instant::now();
        let written = self
            .db
            // The logs this snapshot covers may be purged once it is current: the state at
            // its log id must be on disk first.
            .persist_state()
            .map_err(crate::Error::from)
            .and_then(|()| {
                snapshot::write_file(&path, || self.build_page(snapshot::PAGE))
                    .map_err(crate::Error::from)
            });
        drop(ending);
        let n = written?;
        let final_path = path.with_extension("snap");
        std::fs::rename(&path, &final_path)?;
        std::fs::File::open(&self.snapshots)?.sync_all()?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, n),
            None => format!("none-{n}"),
        };
        let ptr = Pointer {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            },
            file: final_path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned(),
        };
        {
            let _swap = self.swap.lock().expect("lock poisoned");
            let old = self.pointer()?;
            self.db.raft.insert(SNAPSHOT, codec::encode(&ptr))?;
            self.db.persist()?;
            if let Some(old) = old.filter(|o| o.file != ptr.file) {
                let _ = std::fs::remove_file(self.snapshots.join(old.file));
            }
        }
        tracing::info!(
            records = n,
            ms = started.elapsed().as_millis() as u64,
            snapshot = %ptr.meta.snapshot_id,
            "built a snapshot"
        );
        Ok(ptr)
    }

    /// The current snapshot, opened (an open file stays readable after a newer snapshot
    /// replaces it).
    fn current_snapshot(&self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let _swap = self.swap.lock().expect("lock poisoned");
        let Some(ptr) = self.pointer().map_err(|e| snap_err(ErrorVerb::Read, e))? else {
            return Ok(None);
        };
        let file = std::fs::File::open(self.snapshots.join(&ptr.file))
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: ptr.meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }

    /// The snapshot just built, opened.
    fn open_built(&self, ptr: &Pointer) -> StorageResult<Snapshot<TypeConfig>> {
        let _swap = self.swap.lock().expect("lock poisoned");
        let file = std::fs::File::open(self.snapshots.join(&ptr.file))
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Snapshot {
            meta: ptr.meta.clone(),
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // The blocking build holds the gate itself: were this future dropped, an install must
        // still wait for the build to finish.
        let gate = self.inner.gate.clone().lock_owned().await;
        let inner = self.inner.clone();
        let started = std::time::Instant::now();
        let ptr = tokio::task::spawn_blocking(move || {
            let _gate = gate;
            inner.build()
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        metrics::counter!("wharf_raft_snapshots_built_total").increment(1);
        metrics::histogram!("wharf_raft_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        self.inner.open_built(&ptr)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, WharfNode>)> {
        self.inner.applied().map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let base = TreeKv::for_apply(self.inner.db.state.clone(), self.inner.hints.clone());
        let mut state = State::new(Overlay::new(base.clone()));
        let mut out = Vec::new();
        for e in entries {
            state.kv_mut().put(APPLIED, codec::encode(&Some(e.log_id)));
            state.begin_entry(e.log_id.index);
            let r = match e.payload {
                EntryPayload::Blank => Ok(model::Outcome::Done),
                EntryPayload::Normal(Request(cmd)) => {
                    let r = model::apply(&mut state, cmd);
                    if let Err(err) = &r {
                        tracing::debug!(index = e.log_id.index, %err, "command refused");
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    // The founding node's id never went through AllocateNodeId: the ids a
                    // membership names are used, so a joiner can never be handed one of them.
                    let highest = m.nodes().map(|(id, _)| *id).max().unwrap_or(0);
                    model::note_member_ids(&mut state, highest);
                    let members: Vec<_> = m
                        .nodes()
                        .map(|(id, n)| (*id, n.peer_addr.clone(), n.http_addr.clone()))
                        .collect();
                    model::note_members(&mut state, &members);
                    let stored = StoredMembership::new(Some(e.log_id), m);
                    state.kv_mut().put(MEMBERSHIP, codec::encode(&stored));
                    Ok(model::Outcome::Done)
                }
            };
            out.push(Response(r));
        }
        if let Some(e) = base.take_error() {
            return Err(sm_err(ErrorVerb::Read, e));
        }
        let (writes, read) = state.into_kv().into_parts();
        self.inner
            .commit(writes, read)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let path = self.inner.next_name("incoming");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        if let Some(old) = self
            .inner
            .receiving
            .lock()
            .expect("lock poisoned")
            .replace(path)
        {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, WharfNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        let err = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(e)).into()
        };
        // The data may be the file `begin_receiving_snapshot` made or any other: it is copied,
        // as a stream, into a file of this store's own before it is checked and loaded.
        let mut snapshot = snapshot;
        let received = self.inner.next_name("installing");
        {
            use tokio::io::AsyncSeekExt;
            snapshot
                .seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| err(&e))?;
            let mut to = tokio::fs::File::create(&received)
                .await
                .map_err(|e| err(&e))?;
            tokio::io::copy(&mut *snapshot, &mut to)
                .await
                .map_err(|e| err(&e))?;
            to.sync_all().await.map_err(|e| err(&e))?;
        }
        drop(snapshot);
        if let Some(incoming) = self.inner.receiving.lock().expect("lock poisoned").take() {
            let _ = std::fs::remove_file(incoming);
        }
        let gate = self.inner.gate.clone().lock_owned().await;
        let inner = self.inner.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), crate::Error> {
            let _gate = gate;
            // Check the whole file before anything of the current state is touched.
            if let Err(e) = snapshot::read_file(&received, |_, _| Ok(())) {
                let _ = std::fs::remove_file(&received);
                return Err(e.into());
            }
            let final_path = received.with_extension("snap");
            std::fs::rename(&received, &final_path)?;
            std::fs::File::open(&inner.snapshots)?.sync_all()?;
            let ptr = Pointer {
                meta,
                file: final_path
                    .file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned(),
            };
            inner.db.raft.insert(INSTALLING, codec::encode(&ptr))?;
            inner.db.persist()?;
            inner.load(&ptr)
        })
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.inner.current_snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sm: &StateMachineStore, puts: &[&str], deletes: &[&str]) {
        let mut w = Writes::new();
        for k in puts {
            w.insert(k.as_bytes().to_vec(), Some(b"v".to_vec()));
        }
        for k in deletes {
            w.insert(k.as_bytes().to_vec(), None);
        }
        sm.inner.commit(w, BaseReads::new()).unwrap();
    }

    fn scan(sm: &StateMachineStore, prefix: &str) -> Vec<String> {
        let kv = TreeKv::for_apply(sm.inner.db.state.clone(), sm.inner.hints.clone());
        let mut out = Vec::new();
        kv.scan(prefix.as_bytes(), None, &mut |k, _| {
            out.push(String::from_utf8_lossy(k).into_owned());
            true
        });
        out
    }

    #[test]
    fn scan_hints_never_hide_a_record_written_below_them() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = super::super::open(dir.path(), &Default::default()).unwrap();
        commit(&sm, &["q/5", "q/6", "r/1"], &[]);
        assert_eq!(scan(&sm, "q/"), ["q/5", "q/6"]);
        commit(&sm, &[], &["q/5"]);
        assert_eq!(scan(&sm, "q/"), ["q/6"]);
        // Below the hint (q/6) now.
        commit(&sm, &["q/1"], &[]);
        assert_eq!(scan(&sm, "q/"), ["q/1", "q/6"]);
        commit(&sm, &[], &["q/1", "q/6"]);
        assert!(scan(&sm, "q/").is_empty());
        // Into a prefix known to be empty.
        commit(&sm, &["q/3"], &[]);
        assert_eq!(scan(&sm, "q/"), ["q/3"]);
        assert_eq!(scan(&sm, "r/"), ["r/1"]);
        // A longer prefix under a tracked one has hints of its own, lowered alike.
        assert_eq!(scan(&sm, "q/a/"), Vec::<String>::new());
        commit(&sm, &["q/a/1"], &[]);
        assert_eq!(scan(&sm, "q/a/"), ["q/a/1"]);
        assert_eq!(scan(&sm, "q/"), ["q/3", "q/a/1"]);
    }
}
