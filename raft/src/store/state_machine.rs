//! The state machine: the model's records in the sled tree `state`.
//!
//! A batch of entries is applied through an [`Overlay`] over the tree; its writes, the new
//! last-applied log id, membership and digest then commit as one sled batch, so a crash never
//! shows a state between two of them. Readers (the node) get a [`StateView`] over the tree.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};

use super::snapshot::{self, Pointer, Track};
use super::StorageResult;
use crate::codec;
use crate::kv::{scan_start, BaseReads, Kv, KvMut, Overlay, SetHash, Writes};
use crate::model::{self, keys, State};
use crate::{NodeId, Request, Response, TypeConfig, WharfNode};

pub(crate) const APPLIED: &[u8] = b"\xffapplied";
pub(crate) const MEMBERSHIP: &[u8] = b"\xffmembership";
pub(crate) const DIGEST: &[u8] = b"\xffdigest";
/// In the `raft` tree.
pub(crate) const SNAPSHOT: &[u8] = b"snapshot";
pub(crate) const INSTALLING: &[u8] = b"installing";

/// Read access to the `state` tree. A read error is logged and reads as absent (the node's
/// readers have no better answer); the apply path checks [`TreeKv::take_error`].
#[derive(Clone)]
pub struct TreeKv {
    tree: sled::Tree,
    error: Arc<Mutex<Option<sled::Error>>>,
}

impl TreeKv {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            error: Arc::default(),
        }
    }

    fn failed(&self, e: sled::Error) {
        tracing::error!(error = %e, "reading the metadata store");
        *self.error.lock().expect("lock poisoned") = Some(e);
    }

    fn take_error(&self) -> Option<sled::Error> {
        self.error.lock().expect("lock poisoned").take()
    }
}

impl Kv for TreeKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.tree.get(key) {
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
        let range = (scan_start(prefix, after), std::ops::Bound::Unbounded);
        for kv in self.tree.range::<Vec<u8>, _>(range) {
            match kv {
                Ok((k, v)) => {
                    if !k.starts_with(prefix) || !visit(&k, &v) {
                        break;
                    }
                }
                Err(e) => {
                    self.failed(e);
                    break;
                }
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
    db: sled::Db,
    tree: sled::Tree,
    meta: sled::Tree,
    snapshots: PathBuf,
    /// Held while a batch commits, and while a snapshot's walk reads a page.
    track: Mutex<Option<Track>>,
    /// One snapshot is built or installed at a time.
    gate: tokio::sync::Mutex<()>,
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
    pub(crate) fn open(db: sled::Db, dir: &Path) -> Result<Self, crate::Error> {
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots)?;
        let inner = Inner {
            tree: db.open_tree("state")?,
            meta: db.open_tree("raft")?,
            db,
            snapshots,
            track: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
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
        if let Some(v) = inner.meta.get(INSTALLING)? {
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

    /// The applied state, read straight from the tree (what this node has applied so far).
    pub fn view(&self) -> StateView {
        State::new(TreeKv::new(self.inner.tree.clone()))
    }

    /// The last applied log index and the state's digest, read together (between commits).
    pub fn applied_digest(&self) -> (u64, String) {
        let _commits = self.inner.track.lock().expect("lock poisoned");
        let index = self
            .inner
            .applied()
            .ok()
            .and_then(|(l, _)| l)
            .map(|l| l.index)
            .unwrap_or(0);
        (index, self.view().digest())
    }

    /// The last applied log id and membership, as committed with the state.
    pub fn applied(&self) -> Result<AppliedState, crate::Error> {
        self.inner.applied()
    }
}

impl Inner {
    fn applied(&self) -> Result<AppliedState, crate::Error> {
        let applied = match self.tree.get(APPLIED)? {
            Some(v) => codec::decode(&v)?,
            None => None,
        };
        let membership = match self.tree.get(MEMBERSHIP)? {
            Some(v) => codec::decode(&v)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn pointer(&self) -> Result<Option<Pointer>, crate::Error> {
        Ok(match self.meta.get(SNAPSHOT)? {
            Some(v) => Some(codec::decode(&v)?),
            None => None,
        })
    }

    fn next_name(&self, ext: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.snapshots.join(format!("snap-{n}.{ext}"))
    }

    /// Commits a batch of buffered writes, keeping the digest and any snapshot walk in step.
    /// `read`: values the batch read from the tree (as they are until this commit), so that
    /// the old values of the keys it writes need not be read again.
    fn commit(&self, mut writes: Writes, read: BaseReads) -> sled::Result<()> {
        let mut track = self.track.lock().expect("lock poisoned");
        if let Some(t) = track.as_mut() {
            t.before_write(&self.tree, writes.keys(), &read)?;
        }
        let mut digest = SetHash::from_bytes(&self.tree.get(DIGEST)?.unwrap_or_default());
        let mut batch = sled::Batch::default();
        writes.remove(DIGEST);
        for (k, v) in writes {
            if k.first() != Some(&keys::STORE) {
                let old = match read.get(&k) {
                    Some(old) => old.clone(),
                    None => self.tree.get(&k)?.map(|v| v.to_vec()),
                };
                if let Some(old) = old {
                    digest.remove(&k, &old);
                }
                if let Some(new) = &v {
                    digest.add(&k, new);
                }
            }
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(DIGEST, digest.to_bytes().to_vec());
        self.tree.apply_batch(batch)
    }

    /// Replaces the state with a snapshot file's records (already checked), then records the
    /// snapshot as current and drops the install marker.
    fn load(&self, ptr: &Pointer) -> Result<(), crate::Error> {
        let path = self.snapshots.join(&ptr.file);
        self.tree.clear()?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut digest = SetHash::default();
        snapshot::read_file(&path, |k, v| {
            digest.add(&k, &v);
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == 4096 {
                self.tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(std::io::Error::other)?;
                in_batch = 0;
            }
            Ok(())
        })?;
        batch.insert(APPLIED, codec::encode(&ptr.meta.last_log_id));
        batch.insert(MEMBERSHIP, codec::encode(&ptr.meta.last_membership));
        batch.insert(DIGEST, digest.to_bytes().to_vec());
        self.tree.apply_batch(batch)?;
        let _swap = self.swap.lock().expect("lock poisoned");
        let old = self.pointer()?;
        let mut meta = sled::Batch::default();
        meta.insert(SNAPSHOT, codec::encode(ptr));
        meta.remove(INSTALLING);
        self.meta.apply_batch(meta)?;
        self.db.flush()?;
        if let Some(old) = old.filter(|o| o.file != ptr.file) {
            let _ = std::fs::remove_file(self.snapshots.join(old.file));
        }
        Ok(())
    }

    /// Builds a snapshot file of the state as of now, while applies go on.
    fn build(&self) -> Result<Pointer, crate::Error> {
        let (last_log_id, last_membership) = {
            let mut track = self.track.lock().expect("lock poisoned");
            *track = Some(Track::default());
            self.applied()?
        };
        // Stop tracking however this ends.
        struct Stop<'a>(&'a Mutex<Option<Track>>);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                *self.0.lock().expect("lock poisoned") = None;
            }
        }
        let _stop = Stop(&self.track);
        // The logs this snapshot covers may be purged once it is current: the state at its
        // log id must be on disk first.
        self.db.flush()?;
        let path = self.next_name("part");
        let started = std::time::Instant::now();
        let n = snapshot::write_file(&path, || {
            let mut track = self.track.lock().expect("lock poisoned");
            let t = track.as_mut().expect("tracking during a build");
            t.next_page(&self.tree).map_err(std::io::Error::other)
        })?;
        drop(_stop);
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
            self.meta.insert(SNAPSHOT, codec::encode(&ptr))?;
            self.db.flush()?;
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
        let _gate = self.inner.gate.lock().await;
        let inner = self.inner.clone();
        let ptr = tokio::task::spawn_blocking(move || inner.build())
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
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
        let base = TreeKv::new(self.inner.tree.clone());
        let mut state = State::new(Overlay::new(base.clone()));
        let mut out = Vec::new();
        for e in entries {
            state.kv_mut().put(APPLIED, codec::encode(&Some(e.log_id)));
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
        let _gate = self.inner.gate.lock().await;
        let inner = self.inner.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), crate::Error> {
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
            inner.meta.insert(INSTALLING, codec::encode(&ptr))?;
            inner.db.flush()?;
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
