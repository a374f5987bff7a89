//! openraft storage (the storage-v2 traits) over one sled `Db`.
//!
//! Trees: `logs` (big-endian index -> JSON entry), `meta` (vote, committed, last purged) and `sm`
//! (the latest snapshot). The state machine lives in memory behind a lock that the node reads
//! from; on open it is restored from the latest snapshot and openraft re-applies the committed
//! log after it. sled flushes lazily, so every write that openraft or a client relies on is
//! followed by `flush_async().await` before it is reported done.

// openraft's traits dictate `StorageError` (a large type) as the error of every storage call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::SnapshotSignature;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::model::{self, State};
use crate::{NodeId, Request, Response, TypeConfig, WharfNode};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const SNAPSHOT: &[u8] = b"snapshot";

/// Opens (or creates) the sled database under `dir` and returns the log store and the state
/// machine, both backed by it.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), crate::Error> {
    let db = sled::Config::new().path(dir).open()?;
    let logs = LogStore {
        db: db.clone(),
        logs: db.open_tree("logs")?,
        meta: db.open_tree("meta")?,
    };
    let sm = StateMachineStore::open(db)?;
    Ok((logs, sm))
}

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn snapshot_err(
    sig: Option<SnapshotSignature<NodeId>>,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(sig, AnyError::new(&e)).into()
}

impl LogStore {
    fn get_meta<T: for<'de> Deserialize<'de>>(&self, k: &[u8]) -> StorageResult<Option<T>> {
        match self.meta.get(k).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: Serialize>(&self, k: &[u8], v: &T) -> StorageResult<()> {
        let bytes = serde_json::to_vec(v).map_err(write_err)?;
        self.meta.insert(k, bytes).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.logs.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(&v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

fn bound_key(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let range = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        self.logs
            .range(range)
            .map(|kv| {
                let (_, v) = kv.map_err(read_err)?;
                serde_json::from_slice(&v).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(write_err)?;
            batch.insert(&e.log_id.index.to_be_bytes(), bytes);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        // openraft may count the entries towards a quorum once the callback fires: they must be
        // on disk by then.
        let res = self.db.flush_async().await.map(|_| ());
        let io = res
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        res.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for kv in self.logs.range(log_id.index.to_be_bytes()..) {
            batch.remove(kv.map_err(read_err)?.0);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge point first: a crash half-way leaves extra entries, never a hole.
        self.put_meta(LAST_PURGED, &log_id).await?;
        let mut batch = sled::Batch::default();
        for kv in self.logs.range(..=log_id.index.to_be_bytes()) {
            batch.remove(kv.map_err(read_err)?.0);
        }
        self.logs.apply_batch(batch).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }
}

/// The applied state: the model plus what openraft needs to know about it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, WharfNode>,
    pub state: State,
}

/// A read handle on the applied state, shared with the node.
pub type SharedState = Arc<RwLock<Applied>>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, WharfNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: sled::Db,
    tree: sled::Tree,
    applied: SharedState,
}

impl StateMachineStore {
    fn open(db: sled::Db) -> Result<Self, crate::Error> {
        let tree = db.open_tree("sm")?;
        let applied = match tree.get(SNAPSHOT)? {
            Some(v) => {
                let snap: StoredSnapshot = serde_json::from_slice(&v)?;
                serde_json::from_slice(&snap.data)?
            }
            None => Applied::default(),
        };
        Ok(Self {
            db,
            tree,
            applied: Arc::new(RwLock::new(applied)),
        })
    }

    pub fn shared(&self) -> SharedState {
        self.applied.clone()
    }

    fn read_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        match self.tree.get(SNAPSHOT).map_err(|e| snapshot_err(None, e))? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| snapshot_err(None, e))?,
            )),
            None => Ok(None),
        }
    }

    async fn save_snapshot(&self, snap: &StoredSnapshot) -> StorageResult<()> {
        let err = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::write_snapshot(Some(snap.meta.signature()), AnyError::error(e)).into()
        };
        let bytes = serde_json::to_vec(snap).map_err(|e| err(&e))?;
        self.tree.insert(SNAPSHOT, bytes).map_err(|e| err(&e))?;
        self.db.flush_async().await.map_err(|e| err(&e))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_applied, last_membership) = {
            let a = self.applied.read().expect("lock poisoned");
            let data = serde_json::to_vec(&*a)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            (data, a.last_applied, a.last_membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("none-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let snap = StoredSnapshot { meta, data };
        self.save_snapshot(&snap).await?;
        Ok(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(snap.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, WharfNode>)> {
        let a = self.applied.read().expect("lock poisoned");
        Ok((a.last_applied, a.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.applied.write().expect("lock poisoned");
        let mut out = Vec::new();
        for e in entries {
            a.last_applied = Some(e.log_id);
            let r = match e.payload {
                EntryPayload::Blank => Ok(model::Outcome::Done),
                EntryPayload::Normal(Request(cmd)) => {
                    let r = model::apply(&mut a.state, cmd);
                    if let Err(err) = &r {
                        tracing::debug!(index = e.log_id.index, %err, "command refused");
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    // The founding node's id never went through AllocateNodeId: the ids a
                    // membership names are used, so a joiner can never be handed one of them.
                    let highest = m.nodes().map(|(id, _)| *id).max().unwrap_or(0);
                    model::note_member_ids(&mut a.state, highest);
                    a.last_membership = StoredMembership::new(Some(e.log_id), m);
                    Ok(model::Outcome::Done)
                }
            };
            out.push(Response(r));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, WharfNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied =
            serde_json::from_slice(&data).map_err(|e| snapshot_err(Some(meta.signature()), e))?;
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&snap).await?;
        *self.applied.write().expect("lock poisoned") = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
