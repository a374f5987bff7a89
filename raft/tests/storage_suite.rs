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
fn sled_store_passes_openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(SledBuilder)
}
