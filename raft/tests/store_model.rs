//! The same random command sequences applied to the in-memory store and to the on-disk state
//! machine (in random batches, with a snapshot built and installed on a third store half-way):
//! every answer and the final digests must agree. Some batches go in as one entry, a
//! `Command::Batch`, as the leader's proposer groups concurrent proposals: its answers must be
//! those of the same commands applied one by one.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use proptest::prelude::*;
use wharf_raft::kv::{Kv, MemKv};
use wharf_raft::model::concat::Concat;
use wharf_raft::model::folders::{EntryKind, OnConflict, Placement};
use wharf_raft::model::shares::Role;
use wharf_raft::model::{
    blob_id, Command, Outcome, ScanState, ScanVerdict, State, Tier, TierLimits, UploadState,
};
use wharf_raft::{Options, Request, StateMachineStore, TypeConfig};

const OWNERS: [&str; 2] = ["ann", "bob"];
const LIMITS: TierLimits = TierLimits {
    quota: 1_000,
    max_file_size: 400,
    max_concurrent_uploads: 3,
};

#[path = "store_model/invariants.rs"]
mod invariants;
#[path = "store_model/ops.rs"]
mod ops;

use invariants::*;
use ops::*;

fn entry(i: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(Request(cmd)),
    }
}

async fn install_copy(from: &mut StateMachineStore, into: &mut StateMachineStore) {
    let snap = from
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = into.begin_receiving_snapshot().await.unwrap();
    let mut src = snap.snapshot;
    tokio::io::copy(&mut src, &mut *data).await.unwrap();
    into.install_snapshot(&snap.meta, data).await.unwrap();
}

/// Applies the pending commands to both on-disk stores as one batch of entries (or, when
/// `grouped`, as one entry holding a `Command::Batch`) and compares the answers with the
/// in-memory model's, which applied them one by one.
async fn flush(
    pending: &mut Vec<(Command, wharf_raft::Response)>,
    index: &mut u64,
    disk: &mut StateMachineStore,
    copy: &mut StateMachineStore,
    grouped: bool,
) -> Result<(), TestCaseError> {
    if pending.is_empty() {
        return Ok(());
    }
    let entries: Vec<_> = if grouped {
        *index += 1;
        let cmds = pending.iter().map(|(c, _)| c.clone()).collect();
        vec![entry(*index, Command::Batch { cmds })]
    } else {
        pending
            .iter()
            .map(|(c, _)| {
                *index += 1;
                entry(*index, c.clone())
            })
            .collect()
    };
    let ungroup = |answers: Vec<wharf_raft::Response>| -> Vec<wharf_raft::Response> {
        if !grouped {
            return answers;
        }
        match answers.into_iter().next() {
            Some(wharf_raft::Response(Ok(Outcome::Batch(v)))) => {
                v.into_iter().map(wharf_raft::Response).collect()
            }
            other => panic!("a batch was answered {other:?}"),
        }
    };
    let got = ungroup(disk.apply(entries.clone()).await.unwrap());
    let got_copy = ungroup(copy.apply(entries).await.unwrap());
    prop_assert_eq!(got.len(), pending.len());
    prop_assert_eq!(got_copy.len(), pending.len());
    for (((cmd, expected), g), gc) in pending.iter().zip(&got).zip(&got_copy) {
        prop_assert_eq!(
            g,
            expected,
            "the on-disk store answered {:?} differently",
            cmd
        );
        prop_assert_eq!(
            gc,
            expected,
            "the installed copy answered {:?} differently",
            cmd
        );
    }
    pending.clear();
    Ok(())
}

async fn run(ops: Vec<Op>, batches: Vec<(usize, bool)>) -> Result<(), TestCaseError> {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_l1, mut disk) = wharf_raft::open(dirs.0.path(), &Options::default()).unwrap();
    let (_l2, mut copy) = wharf_raft::open(dirs.1.path(), &Options::default()).unwrap();
    let mut mem = State::new(MemKv::default());
    let mut now = 10_000;
    let mut index = 0;
    let mut once: Option<u8> = None;
    let mut pending: Vec<(Command, wharf_raft::Response)> = Vec::new();
    let mut batch_sizes = batches.into_iter().cycle();
    let (mut want, mut grouped) = batch_sizes.next().unwrap_or((1, false));
    let half = ops.len() / 2;
    for (n, op) in ops.iter().enumerate() {
        if let Op::Expire { advance, .. } = op {
            now += advance;
        }
        now += 1;
        if let Op::Once { id } = op {
            once = Some(*id);
            continue;
        }
        let Some(mut cmd) = command(op, &mem, now) else {
            continue;
        };
        if let Some(id) = once.take() {
            cmd = Command::Once {
                id: format!("r{id}"),
                at: now,
                cmd: Box::new(cmd),
            };
        }
        // The in-memory model numbers entries as the stores will: events carry the index.
        if !grouped || pending.is_empty() {
            mem.begin_entry(index + pending.len() as u64 + 1);
        }
        // A write by another user lands only if their role allows it where it is applied.
        let role_before = match &cmd {
            Command::AsUser {
                actor, owner, file, ..
            } => Some(mem.file_role(owner, file, actor)),
            _ => None,
        };
        // A download through a link counts only while the link lives: never after its revoke.
        let link_before = match &cmd {
            Command::LinkDownloaded { token, now } => {
                Some(mem.link(token).filter(|l| l.live(*now)).is_some())
            }
            _ => None,
        };
        let answer = wharf_raft::Response(wharf_raft::apply(&mut mem, cmd.clone()));
        if let (Some(role), Ok(_)) = (role_before, &answer.0) {
            prop_assert_eq!(role, Some(Role::Editor), "{:?} applied", cmd);
        }
        if let (Some(live), Ok(_)) = (link_before, &answer.0) {
            prop_assert!(live, "{:?} counted through a dead link", cmd);
        }
        shares_mirror(&mem, &cmd)?;
        reservations_add_up(&mem, &cmd)?;
        folders_hold(&mem, &cmd)?;
        usage_adds_up(&mem, &cmd)?;
        usage_totals_add_up(&mem, &cmd)?;
        pending.push((cmd, answer));
        if pending.len() >= want || n == half {
            flush(&mut pending, &mut index, &mut disk, &mut copy, grouped).await?;
            (want, grouped) = batch_sizes.next().unwrap_or((1, false));
            prop_assert_eq!(disk.view().digest(), mem.digest());
            if n == half {
                // The copy takes the on-disk store's state by snapshot and goes on from there.
                install_copy(&mut disk, &mut copy).await;
                prop_assert_eq!(copy.view().digest(), mem.digest());
            }
        }
    }
    flush(&mut pending, &mut index, &mut disk, &mut copy, grouped).await?;
    prop_assert_eq!(disk.view().digest(), mem.digest());
    prop_assert_eq!(copy.view().digest(), mem.digest());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_on_disk_store_answers_every_command_as_the_in_memory_model_does(
        ops in proptest::collection::vec(op(), 1..160),
        batches in proptest::collection::vec((1..8usize, any::<bool>()), 1..10),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, batches))?;
    }
}
