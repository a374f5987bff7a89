//! openraft storage (the storage-v2 traits) over one fjall database, format version 2.
//!
//! Keyspaces: `log` (big-endian index -> entry) and `raft` (format version, vote, committed,
//! last purged, the current snapshot and an install marker) in one database, `store/`; `state`
//! (the model's records, plus the last applied log id and membership under keys starting with
//! `0xff`) in another, `state/`, so that applying entries never waits for the log's fsync
//! (fjall syncs a journal under the lock its writers take). Snapshots are files under
//! `snapshots/`. Every value is postcard ([`crate::codec`]). A write batch goes to its
//! database's journal (the OS's buffers); every write that openraft or a client relies on is
//! followed by a journal fsync ([`Db::persist`]) before it is reported done. Applied state needs
//! no fsync of its own: the log it was applied from was synced first, and the state's journal
//! recovers a prefix of its batches.

// openraft's traits dictate `StorageError` (a large type) as the error of every storage call.
#![allow(clippy::result_large_err)]

pub mod backup;
mod migrate;
mod snapshot;
mod state_machine;
mod writeback;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use fjall::config::{CompressionPolicy, PartitioningPolicy};
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};
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

/// The directory of the database with the `log` and `raft` keyspaces, under the data dir's
/// `raft/`.
pub const STORE_DIR: &str = "store";
/// The directory of the database with the `state` keyspace.
pub const STATE_DIR: &str = "state";

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// fjall's block caches, in bytes (three quarters for the state, the rest for the log).
    /// With the memtables (`memtable_bytes` per keyspace) and the index and filter blocks
    /// fjall keeps pinned, this bounds the memory the metadata uses, whatever the number of
    /// records.
    pub cache_capacity: u64,
    /// A keyspace's write buffer ([`MEMTABLE`] by default), fixed when the keyspace is made.
    pub memtable_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_capacity: 32 << 20,
            memtable_bytes: MEMTABLE,
        }
    }
}

impl Options {
    /// The options of node `node_id`: nodes that apply the same log fill their write buffers at
    /// the same pace, so each gets a slightly different size (8, 10 or 12 MiB) and they do not
    /// all write them out, and compact, at the same moment on shared cores.
    pub fn for_node(node_id: u64, cache_capacity: u64) -> Self {
        Self {
            cache_capacity,
            memtable_bytes: MEMTABLE + (node_id % 3) * (2 << 20),
        }
    }
}

/// A keyspace's write buffer: the unit fjall writes out as a table. What is in it at a crash is
/// replayed from the journal at the next start, so it also bounds the restart time.
pub const MEMTABLE: u64 = 8 << 20;
/// The journal's size at which fjall writes out the oldest memtables (its smallest allowed).
const MAX_JOURNAL: u64 = 64 << 20;

/// The two databases and their three keyspaces.
#[derive(Clone)]
pub(crate) struct Db {
    /// Holds `log` and `raft`.
    pub db: Database,
    /// Holds `state`.
    pub state_db: Database,
    pub log: Keyspace,
    pub raft: Keyspace,
    pub state: Keyspace,
    /// Hands `state`'s journal to the disk in the background ([`writeback`]).
    _writeback: writeback::Writeback,
}

fn open_db(path: &Path, cache: u64) -> fjall::Result<Database> {
    Database::builder(path)
        .cache_size(cache)
        .max_journaling_size(MAX_JOURNAL)
        .open()
}

fn keyspace(db: &Database, name: &str, memtable: u64) -> fjall::Result<Keyspace> {
    db.keyspace(name, || {
        // fjall leaves its first two levels uncompressed; wharf's records are full of hex
        // hashes and ids, and LZ4 on every level took bytes per file from 2,005 to 1,646 at
        // 100,000 files. Only keyspaces created from now on get it.
        //
        // Index and filter blocks are partitioned on every level (fjall partitions only from L3):
        // a table writer holds its whole unpartitioned index until the table is done, and each
        // entry's key still points into the compacted block it came from, so a 64 MiB table's
        // compaction held ~44 MiB of input blocks at 400,000 files. Partitioned, the writer
        // holds one partition, and only a table's top-level index and filter index stay pinned
        // in memory (the partitions go through the block cache like data blocks).
        KeyspaceCreateOptions::default()
            .max_memtable_size(memtable)
            .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
            .index_block_partitioning_policy(PartitioningPolicy::all(true))
            .filter_block_partitioning_policy(PartitioningPolicy::all(true))
    })
}

impl Db {
    fn open(dir: &Path, opts: &Options) -> Result<Self, crate::Error> {
        let log_cache = (opts.cache_capacity / 4).max(1 << 20);
        let db = open_db(&dir.join(STORE_DIR), log_cache)?;
        let state_db = open_db(
            &dir.join(STATE_DIR),
            opts.cache_capacity.saturating_sub(log_cache).max(1 << 20),
        )?;
        Ok(Self {
            log: keyspace(&db, "log", opts.memtable_bytes)?,
            raft: keyspace(&db, "raft", opts.memtable_bytes)?,
            state: keyspace(&state_db, "state", opts.memtable_bytes)?,
            _writeback: writeback::Writeback::start(dir.join(STATE_DIR)),
            db,
            state_db,
        })
    }

    /// Makes every write to `log` and `raft` so far durable: one fsync of their journal,
    /// however many batches.
    pub fn persist(&self) -> fjall::Result<()> {
        self.db.persist(PersistMode::SyncData)
    }

    /// The same for `state`.
    pub fn persist_state(&self) -> fjall::Result<()> {
        self.state_db.persist(PersistMode::SyncData)
    }

    /// [`Db::persist`] on tokio's blocking pool.
    pub async fn persist_async(&self) -> fjall::Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.persist(PersistMode::SyncData)).await {
            Ok(r) => r,
            Err(e) => Err(fjall::Error::Io(std::io::Error::other(e))),
        }
    }
}

/// Opens (or creates) the metadata database under `dir` and returns the log store and the
/// state machine, both backed by it. A data dir of an older format (sled: version 0, JSON, or
/// version 1) is migrated first; one of a newer version is refused.
pub fn open(dir: &Path, opts: &Options) -> Result<(LogStore, StateMachineStore), crate::Error> {
    std::fs::create_dir_all(dir)?;
    let db = Db::open(dir, opts)?;
    migrate::prepare(&db, dir)?;
    let logs = LogStore { db: db.clone() };
    let sm = StateMachineStore::open(db, dir)?;
    Ok((logs, sm))
}

/// Log entries removed per batch when the log is purged.
const PURGE_BATCH: usize = 1024;

#[derive(Clone)]
pub struct LogStore {
    db: Db,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    /// Writes every keyspace's memtable out as a table and waits for it, for a quick next
    /// start: fjall replays its journals at every start, up to 64 MB of them per database,
    /// but skips what is already in tables instead of inserting it again. Called at a clean
    /// shutdown, after Raft stopped; a crash only makes the next start slower.
    pub fn flush_for_restart(&self) -> fjall::Result<()> {
        // `rotate_memtable_and_wait` is public but hidden in fjall's docs; what it does (seal
        // the active memtable, flush it, wait) is what a clean close should do.
        for ks in [&self.db.log, &self.db.raft, &self.db.state] {
            ks.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    fn get_meta<T: DeserializeOwned>(&self, k: &[u8]) -> StorageResult<Option<T>> {
        match self.db.raft.get(k).map_err(read_err)? {
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: Serialize>(&self, k: &[u8], v: &T) -> StorageResult<()> {
        self.db
            .raft
            .insert(k, codec::encode(v))
            .map_err(write_err)?;
        self.db.persist_async().await.map_err(write_err)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.db.log.last_key_value() {
            Some(g) => {
                let v = g.value().map_err(read_err)?;
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
        self.db
            .log
            .range(range)
            .map(|g| {
                let v = g.value().map_err(read_err)?;
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
        self.db
            .raft
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
        // they share one batch and one fsync.
        let mut batch = self.db.db.batch();
        for e in entries {
            batch.insert(
                &self.db.log,
                e.log_id.index.to_be_bytes(),
                codec::encode(&e),
            );
        }
        batch.commit().map_err(write_err)?;
        // openraft may count the entries towards a quorum once the callback fires: they must be
        // on disk by then.
        let res = self.db.persist_async().await;
        let io = res
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        res.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = self.db.db.batch();
        for g in self.db.log.range(log_id.index.to_be_bytes()..) {
            batch.remove(&self.db.log, g.key().map_err(read_err)?);
        }
        batch.commit().map_err(write_err)?;
        self.db.persist_async().await.map_err(write_err)?;
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
            let mut batch = self.db.db.batch();
            let mut n = 0;
            for g in self
                .db
                .log
                .range(..=log_id.index.to_be_bytes())
                .take(PURGE_BATCH)
            {
                batch.remove(&self.db.log, g.key().map_err(read_err)?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            batch.commit().map_err(write_err)?;
        }
        self.db.persist_async().await.map_err(write_err)?;
        Ok(())
    }
}
