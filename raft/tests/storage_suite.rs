//! openraft's storage conformance suite against the fjall store, each case on a fresh
//! database, and the store's own guarantees: snapshots as files that are exactly the state at
//! their log id (even while writes go on), installs that replace the state, refused unknown
//! formats, data dirs of the sled formats migrated.

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use wharf_raft::kv::MemKv;
use wharf_raft::model::{Command, Outcome};
use wharf_raft::{LogStore, NodeId, Options, Request, State, StateMachineStore, TypeConfig};

struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for FjallBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = wharf_raft::open(dir.path(), &Options::default()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_store_passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(FjallBuilder) {
        panic!("storage suite failed: {e}");
    }
}

fn log_id(i: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), i)
}

fn set_quota(i: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(i),
        payload: EntryPayload::Normal(Request(Command::SetQuota {
            user: format!("u{:06}", i % 5_000),
            quota: i * 100,
        })),
    }
}

/// Opens the store, waiting for a previous open of the same dir to let go of it: background
/// threads may hold the database (and its lock) a moment after the last handle drops.
fn open(dir: &std::path::Path) -> (LogStore, StateMachineStore) {
    retry(|| wharf_raft::open(dir, &Options::default()))
}

/// The store's fjall database, opened directly (to write what a crashed process left).
fn fjall_open(dir: &std::path::Path) -> fjall::Database {
    retry(|| fjall::Database::builder(dir.join(wharf_raft::store::STORE_DIR)).open())
}

fn keyspace(db: &fjall::Database, name: &str) -> fjall::Keyspace {
    db.keyspace(name, fjall::KeyspaceCreateOptions::default)
        .unwrap()
}

/// A snapshot of `sm` built now: its meta and the file's bytes.
async fn built_snapshot(
    sm: &mut StateMachineStore,
) -> (
    openraft::SnapshotMeta<NodeId, wharf_raft::WharfNode>,
    Vec<u8>,
) {
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let mut from = snap.snapshot;
    tokio::io::AsyncReadExt::read_to_end(&mut from, &mut bytes)
        .await
        .unwrap();
    (snap.meta, bytes)
}

fn retry<T, E: std::fmt::Display>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e)
                if e.to_string().to_lowercase().contains("lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("opening the store: {e}"),
        }
    }
}

/// The digest of the state the first `n` of `set_quota` entries make, computed in memory.
fn expected_digest(n: u64) -> String {
    digest_with_events_from(n, 1)
}

/// The same, with events (numbered by entry) only from entry `from` on: a data dir migrated
/// from before events has none for the entries it held.
fn digest_with_events_from(n: u64, from: u64) -> String {
    let mut s = State::new(MemKv::default());
    for i in 1..=n {
        if i >= from {
            s.begin_entry(i);
        }
        if let EntryPayload::Normal(Request(cmd)) = set_quota(i).payload {
            wharf_raft::apply(&mut s, cmd).unwrap();
        }
    }
    s.digest()
}

/// Streams a built snapshot into another store and installs it there.
async fn install(snap: openraft::storage::Snapshot<TypeConfig>, into: &mut StateMachineStore) {
    let mut data = into.begin_receiving_snapshot().await.unwrap();
    let mut from = snap.snapshot;
    tokio::io::copy(&mut from, &mut *data).await.unwrap();
    into.install_snapshot(&snap.meta, data).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_installed_on_another_store_gives_the_same_state() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_la, mut sa) = open(a.path());
    sa.apply((1..=300).map(set_quota)).await.unwrap();
    let snap = sa
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(300)));

    let (_lb, mut sb) = open(b.path());
    install(snap, &mut sb).await;
    let (applied, _) = sb.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(300)));
    assert_eq!(sb.view().digest(), sa.view().digest());
    assert_eq!(sb.view().digest(), expected_digest(300));
    assert_eq!(sb.view().user("u000002").unwrap().quota, 200);

    // The state and the snapshot survive a reopen.
    drop((sb, _lb));
    let (_lb, mut sb) = open(b.path());
    assert_eq!(sb.view().digest(), expected_digest(300));
    let current = sb
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(current.meta.last_log_id, Some(log_id(300)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_writes_go_on_is_the_state_at_its_log_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_l, mut sm) = open(dir.path());
    // Enough records that the walk takes a while; the same users are then rewritten while it
    // runs, and new ones appear.
    sm.apply((1..=20_000).map(set_quota)).await.unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await.unwrap() });
    let mut next = 20_001;
    while !build.is_finished() {
        sm.apply((next..next + 50).map(set_quota)).await.unwrap();
        next += 50;
        tokio::task::yield_now().await;
    }
    let snap = build.await.unwrap();
    let at = snap.meta.last_log_id.unwrap().index;
    assert!(next > 20_001, "no write happened during the build");
    eprintln!("snapshot at {at}; writes went on to {}", next - 1);

    let other = tempfile::tempdir().unwrap();
    let (_lo, mut so) = open(other.path());
    install(snap, &mut so).await;
    assert_eq!(so.view().digest(), expected_digest(at));
    // And the store that kept writing has the state of everything it applied.
    assert_eq!(sm.view().digest(), expected_digest(next - 1));
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_the_state_kept() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_la, mut sa) = open(a.path());
    sa.apply((1..=50).map(set_quota)).await.unwrap();
    let (meta, bytes) = built_snapshot(&mut sa).await;

    let (_lb, mut sb) = open(b.path());
    sb.apply((1..=7).map(set_quota)).await.unwrap();
    let before = sb.view().digest();
    for (what, damaged) in [
        ("flipped byte", {
            let mut d = bytes.clone();
            d[40] ^= 1;
            d
        }),
        ("unknown version", {
            let mut d = bytes.clone();
            d[8] = 9;
            d
        }),
        ("truncated", bytes[..bytes.len() - 10].to_vec()),
    ] {
        let mut into = sb.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *into, &damaged)
            .await
            .unwrap();
        let err = sb.install_snapshot(&meta, into).await.unwrap_err();
        eprintln!("{what}: {err}");
        assert_eq!(sb.view().digest(), before, "{what} changed the state");
    }
}

#[tokio::test]
async fn a_snapshot_file_of_version_1_uncompressed_still_installs() {
    // Nodes before compressed snapshots wrote version 1: the same records, not compressed.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_la, mut sa) = open(a.path());
    sa.apply((1..=50).map(set_quota)).await.unwrap();
    let (meta, v2) = built_snapshot(&mut sa).await;
    assert_eq!(
        &v2[8..12],
        &2u32.to_le_bytes(),
        "snapshots are written as version 2"
    );
    let mut v1 = v2[..8].to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    let body = zstd::decode_all(&v2[12..]).unwrap();
    // The records and the end mark, without version 2's checksum; version 1's covers its own
    // header.
    v1.extend_from_slice(&body[..body.len() - 32]);
    let sum = *blake3::hash(&v1).as_bytes();
    v1.extend_from_slice(&sum);
    assert!(v1.len() > v2.len(), "version 2 is compressed");

    let (_lb, mut sb) = open(b.path());
    let mut into = sb.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *into, &v1)
        .await
        .unwrap();
    sb.install_snapshot(&meta, into).await.unwrap();
    assert_eq!(sb.view().digest(), sa.view().digest());
}

fn refusal(dir: &std::path::Path) -> String {
    loop {
        match wharf_raft::open(dir, &Options::default()) {
            Err(e) if e.to_string().to_lowercase().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => break e.to_string(),
            Ok(_) => panic!("a data dir of an unknown format version was opened"),
        }
    }
}

#[tokio::test]
async fn a_data_dir_of_an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = fjall_open(dir.path());
        keyspace(&db, "raft")
            .insert("format", 7u32.to_le_bytes())
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let msg = refusal(dir.path());
    assert!(msg.contains("format version 7"), "{msg}");
    assert!(msg.contains("reads version 2"), "{msg}");
}

#[tokio::test]
async fn a_sled_data_dir_of_an_unknown_format_version_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("raft")
            .unwrap()
            .insert("format", &7u32.to_le_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let msg = refusal(dir.path());
    assert!(msg.contains("format version 7"), "{msg}");
    assert!(dir.path().join("conf").exists(), "the old data stays");
}

/// A data dir as wharf's format version 1 left it: sled (with its default 512 KiB segments,
/// as the oldest such data dirs have), a vote, log entries `1..=entries` and the state they
/// made, applied up to `applied`.
fn sled_v1_data_dir(dir: &std::path::Path, entries: u64, applied: u64) {
    use wharf_raft::codec::encode;
    let db = sled::open(dir).unwrap();
    let raft = db.open_tree("raft").unwrap();
    raft.insert("format", &1u32.to_le_bytes()).unwrap();
    raft.insert(
        "vote",
        encode(&openraft::Vote::<NodeId>::new_committed(4, 1)),
    )
    .unwrap();
    let log = db.open_tree("log").unwrap();
    for i in 1..=entries {
        log.insert(i.to_be_bytes(), encode(&set_quota(i))).unwrap();
    }
    let mut s = State::new(MemKv::default());
    for i in 1..=applied {
        if let EntryPayload::Normal(Request(cmd)) = set_quota(i).payload {
            wharf_raft::apply(&mut s, cmd).unwrap();
        }
    }
    let state = db.open_tree("state").unwrap();
    let mut digest = wharf_raft::kv::SetHash::default();
    for (k, v) in s.into_kv().0 {
        digest.add(&k, &v);
        state.insert(k, v).unwrap();
    }
    state
        .insert(b"\xffapplied", encode(&Some(log_id(applied))))
        .unwrap();
    state
        .insert(b"\xffdigest", digest.to_bytes().to_vec())
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_sled_data_dir_of_version_1_is_migrated_and_its_sled_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    sled_v1_data_dir(dir.path(), 120, 100);
    {
        let (mut log, mut sm) = open(dir.path());
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(openraft::Vote::new_committed(4, 1))
        );
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(120)));
        let entries = log.try_get_log_entries(1..=120).await.unwrap();
        assert_eq!(entries.len(), 120);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(100)));
        assert_eq!(sm.view().digest(), digest_with_events_from(100, 101));
        // It goes on from there.
        sm.apply((101..=120).map(set_quota)).await.unwrap();
    }
    for f in ["conf", "db", "blobs"] {
        assert!(!dir.path().join(f).exists(), "sled's {f} is left");
    }
    let (_log, sm) = open(dir.path());
    assert_eq!(sm.view().digest(), digest_with_events_from(120, 101));
}

#[tokio::test]
async fn entries_and_vote_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open(dir.path());
        let vote = openraft::Vote::new_committed(3, 1);
        log.save_vote(&vote).await.unwrap();
        sm.apply((1..=3).map(set_quota)).await.unwrap();
    }
    let (mut log, mut sm) = open(dir.path());
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(3, 1))
    );
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3)));
    assert_eq!(sm.view().digest(), expected_digest(3));
}

#[tokio::test]
async fn a_joiner_never_gets_an_id_that_a_membership_already_names() {
    use openraft::Membership;
    use std::collections::{BTreeMap, BTreeSet};
    use wharf_raft::WharfNode;

    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(dir.path());
    let node = WharfNode {
        peer_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
    };
    // A founding node 1 (initialize), and a joiner asking with a stale floor of 1, as a node
    // whose metrics have not seen the membership yet would.
    let founders = Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(1, node.clone())]),
    );
    let out = sm
        .apply([
            Entry::<TypeConfig> {
                log_id: log_id(1),
                payload: EntryPayload::Membership(founders),
            },
            Entry::<TypeConfig> {
                log_id: log_id(2),
                payload: EntryPayload::Normal(Request(Command::AllocateNodeId { min: 1 })),
            },
            Entry::<TypeConfig> {
                log_id: log_id(3),
                payload: EntryPayload::Normal(Request(Command::AllocateNodeId { min: 1 })),
            },
        ])
        .await
        .unwrap();
    let ids: Vec<_> = out
        .into_iter()
        .skip(1)
        .map(|r| match r.0 {
            Ok(Outcome::NodeId(id)) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![2, 3]);
}

/// A data dir whose log holds entries `1..=last`, written straight into the database, and
/// the purge point `last_purged` when given: as a process that died there left it.
fn data_dir_with_log(dir: &std::path::Path, last: u64, last_purged: Option<u64>) {
    drop(open(dir));
    let db = fjall_open(dir);
    let log = keyspace(&db, "log");
    for i in 1..=last {
        log.insert(i.to_be_bytes(), wharf_raft::codec::encode(&set_quota(i)))
            .unwrap();
    }
    if let Some(p) = last_purged {
        keyspace(&db, "raft")
            .insert("last_purged", wharf_raft::codec::encode(&log_id(p)))
            .unwrap();
    }
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test]
async fn a_purge_cut_short_by_a_crash_leaves_the_log_ending_at_the_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    // Entries 1..=5 were appended; a purge up to 8 (a snapshot installed at 8) recorded its
    // point, and the process died before the entries went.
    data_dir_with_log(dir.path(), 5, Some(8));
    let (mut log, _sm) = open(dir.path());
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(8)));
    assert_eq!(
        st.last_log_id,
        Some(log_id(8)),
        "the log ends before its purge point"
    );
}

#[tokio::test]
async fn a_purge_of_more_entries_than_one_batch_removes_them_all_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_log(dir.path(), 3_000, None);
    let (mut log, _sm) = open(dir.path());
    log.purge(log_id(2_500)).await.unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(2_500)));
    assert_eq!(st.last_log_id, Some(log_id(3_000)));
    let left = log.try_get_log_entries(0..=3_000).await.unwrap();
    let indexes: Vec<u64> = left.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (2_501..=3_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_log_is_never_purged_past_the_current_snapshot() {
    // openraft purges what a snapshot it installs covers without waiting for the install: a
    // crash in between must not leave the log purged past the snapshot the store has.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(dir.path());
    sm.apply((1..=5).map(set_quota)).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(5)));
    log.purge(log_id(8)).await.unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(5)));
    log.purge(log_id(3)).await.unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        st.last_purged_log_id,
        Some(log_id(5)),
        "a purge never moves back"
    );
}
