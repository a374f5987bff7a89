//! openraft storage (the storage-v2 traits) over one sled `Db`, format version 1.
//!
//! Trees: `log` (big-endian index -> entry), `raft` (format version, vote, committed, last
//! purged, the current snapshot and an install marker) and `state` (the model's records, plus
//! the last applied log id and membership under keys starting with `0xff`). Snapshots are
//! files under `snapshots/`. Every value is postcard ([`crate::codec`]). sled flushes lazily,
//! so every write that openraft or a client relies on is followed by `flush_async().await`
//! before it is reported done; applied state needs no flush of its own, since the log it was
//! applied from was flushed first and sled recovers a prefix of its writes.

// openraft's traits dictate `StorageError` (a large type) as the error of every storage call.
#![allow(clippy::result_large_err)]

mod migrate;
mod snapshot;
mod state_machine;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::{NodeId, TypeConfig};
pub use snapshot::SNAPSHOT_MAGIC;
pub use state_machine::{StateMachineStore, StateView, TreeKv};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// sled's page cache, in bytes: the bound on the memory the metadata uses, whatever the
    /// number of records (sled may use a few times this: measure it).
    pub cache_capacity: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_capacity: 32 << 20,
        }
    }
}

/// Opens (or creates) the sled database under `dir` and returns the log store and the state
/// machine, both backed by it. A data dir of format version 0 (JSON) is migrated first; one of
/// a newer version is refused.
pub fn open(dir: &Path, opts: &Options) -> Result<(LogStore, StateMachineStore), crate::Error> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_capacity)
        .segment_size(segment_size(dir))
        .open()?;
    migrate::prepare(&db, dir)?;
    let logs = LogStore {
        db: db.clone(),
        logs: db.open_tree("log")?,
        meta: db.open_tree("raft")?,
    };
    let sm = StateMachineStore::open(db, dir)?;
    Ok((logs, sm))
}

/// sled's segment size for a new database. sled frees a segment only once at most half of it
/// is live, and its pages are rewritten often, so small segments hold much dead data: with
/// 8 MiB instead of sled's 512 KiB, 40,000 one-request files took about 40% less disk (sled
/// alone, the same records). sled accepts at most 16 MiB.
const SEGMENT_SIZE: usize = 8 << 20;

/// Log entries removed per sled batch when the log is purged.
const PURGE_BATCH: usize = 1024;

/// The segment size of the database in `dir`: sled refuses to open a database with another
/// one than it was created with, so an existing database keeps its own (sled's 512 KiB
/// before this default).
fn segment_size(dir: &Path) -> usize {
    // The file ends in a binary checksum: read it as bytes.
    let Ok(conf) = std::fs::read(dir.join("conf")) else {
        return SEGMENT_SIZE;
    };
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: ")?.trim().parse().ok())
        .unwrap_or(SEGMENT_SIZE)
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

impl LogStore {
    fn get_meta<T: DeserializeOwned>(&self, k: &[u8]) -> StorageResult<Option<T>> {
        match self.meta.get(k).map_err(read_err)? {
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: Serialize>(&self, k: &[u8], v: &T) -> StorageResult<()> {
        self.meta.insert(k, codec::encode(v)).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.logs.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = codec::decode(&v).map_err(read_err)?;
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
                codec::decode(&v).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED)?;
        // A purge records its point before it removes the entries: after a crash between the
        // two, entries at or below it may remain, and the last log id is the purge point.
        let last = self.last_entry_log_id()?.max(last_purged);
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
        // A hint for a faster restart, not a promise (openraft re-learns what is committed):
        // it goes to disk with the next append's flush instead of costing a flush of its own.
        self.meta
            .insert(COMMITTED, codec::encode(&committed))
            .map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Group commit: openraft hands over every entry proposed since the last append, and
        // they share one batch and one flush.
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&e.log_id.index.to_be_bytes(), codec::encode(&e));
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
        // openraft asks for the purge of what a snapshot it is installing covers right away,
        // without waiting for the install to be done: a crash in between would leave the log
        // purged past the snapshot the state machine has. Purge no further than the current
        // snapshot; the rest goes with the next purge.
        let current: Option<snapshot::Pointer> = self.get_meta(state_machine::SNAPSHOT)?;
        let log_id = match current.and_then(|p| p.meta.last_log_id) {
            Some(snap) if snap.index < log_id.index => snap,
            _ => log_id,
        };
        if self.get_meta::<LogId<NodeId>>(LAST_PURGED)? >= Some(log_id) {
            return Ok(());
        }
        // Record the purge point first: a crash half-way leaves extra entries, never a hole.
        self.put_meta(LAST_PURGED, &log_id).await?;
        // Oldest first, a batch at a time: a crash between batches leaves a suffix of the
        // purged entries (harmless, as above), and no batch holds the whole purge (a purge
        // after a snapshot covers up to `snapshot_every` entries).
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in self
                .logs
                .range(..=log_id.index.to_be_bytes())
                .keys()
                .take(PURGE_BATCH)
            {
                batch.remove(k.map_err(read_err)?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.logs.apply_batch(batch).map_err(write_err)?;
        }
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }
}
