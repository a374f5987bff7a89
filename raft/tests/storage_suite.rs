//! openraft's storage conformance suite against the sled store, each case on a fresh database.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use wharf_raft::{LogStore, NodeId, StateMachineStore, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = wharf_raft::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("storage suite failed: {e}");
    }
}

#[tokio::test]
async fn snapshot_restores_the_state_after_reopen() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
    use wharf_raft::model::Command;
    use wharf_raft::Request;

    let dir = tempfile::tempdir().unwrap();
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
    {
        let (_log, mut sm) = wharf_raft::open(dir.path()).unwrap();
        let entries = (1..=3).map(|i| Entry::<TypeConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Normal(Request(Command::SetQuota {
                user: format!("u{i}"),
                quota: i * 100,
            })),
        });
        sm.apply(entries).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(3)));
    }
    let (_log, mut sm) = wharf_raft::open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3)));
    let state = sm.shared();
    let a = state.read().unwrap();
    assert_eq!(a.state.users.len(), 3);
    assert_eq!(a.state.users["u2"].quota, 200);
}

#[tokio::test]
async fn a_joiner_never_gets_an_id_that_a_membership_already_names() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
    use std::collections::{BTreeMap, BTreeSet};
    use wharf_raft::model::{Command, Outcome};
    use wharf_raft::{Request, WharfNode};

    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = wharf_raft::open(dir.path()).unwrap();
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
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
