//! The node's handle on the metadata: the openraft instance over the sled store, and the applied
//! state it reads from.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

use anyhow::Context;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, SnapshotPolicy};
use wharf_raft::{Applied, Command, NodeId, Outcome, Raft, Request, SharedState, TypeConfig};

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Metadata {
    pub raft: Raft,
    pub node_id: NodeId,
    state: SharedState,
}

impl Metadata {
    /// Opens the Raft log under `<data_dir>/raft`; initialises a one-node cluster on first start.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let dir = config.node.data_dir.join("raft");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (log, sm) = wharf_raft::open(&dir)
            .with_context(|| format!("opening the metadata store in {}", dir.display()))?;
        let state = sm.shared();
        let rc = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "wharf".into(),
            heartbeat_interval: rc.heartbeat_ms,
            election_timeout_min: rc.election_timeout_min_ms,
            election_timeout_max: rc.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(rc.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .context("raft configuration")?;
        let node_id = config.node.id;
        let raft = Raft::new(node_id, Arc::new(raft_config), NoPeers, log, sm)
            .await
            .context("starting raft")?;
        if !raft.is_initialized().await? {
            let members = BTreeMap::from([(
                node_id,
                BasicNode {
                    addr: config.node.http_addr.to_string(),
                },
            )]);
            raft.initialize(members)
                .await
                .context("initialising the cluster")?;
            tracing::info!(node_id, "initialised a new single-node cluster");
        }
        let meta = Self {
            raft,
            node_id,
            state,
        };
        meta.wait_ready(Duration::from_secs(30)).await?;
        Ok(meta)
    }

    /// Waits for a leader and for the state machine to catch up with the committed log.
    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .context("waiting for a raft leader")?;
        self.raft
            .ensure_linearizable()
            .await
            .context("catching up with the log")?;
        Ok(())
    }

    /// Proposes a command and returns what the state machine answered once it is committed and
    /// applied (and so flushed to disk on a quorum).
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        match self.raft.client_write(Request(cmd)).await {
            Ok(resp) => resp.data.0.map_err(Error::from),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                Error::Unavailable(format!("not the leader (leader: {:?})", f.leader_id)),
            ),
            Err(e) => Err(Error::Unavailable(format!("metadata unavailable: {e}"))),
        }
    }

    /// The applied state as this node has it (may lag the leader in a cluster).
    pub fn local(&self) -> RwLockReadGuard<'_, Applied> {
        self.state.read().expect("state lock poisoned")
    }

    /// The applied state after confirming leadership and catching up: reads that decide.
    pub async fn linearizable(&self) -> Result<RwLockReadGuard<'_, Applied>> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| Error::Unavailable(format!("metadata unavailable: {e}")))?;
        Ok(self.local())
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Resolves after the next change of the Raft metrics (an applied entry, for example).
    pub async fn changed(&self, within: Duration) {
        let mut rx = self.raft.metrics();
        let _ = tokio::time::timeout(within, rx.changed()).await;
    }
}

/// The network of a one-node cluster: there is nobody to call. The cluster issue replaces it
/// with gRPC over mutual TLS.
pub struct NoPeers;

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this node runs without peers")]
struct NoPeer(NodeId);

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NoPeerClient(target)
    }
}

pub struct NoPeerClient(NodeId);

impl NoPeerClient {
    fn err<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeer(self.0)))
    }
}

impl RaftNetwork<TypeConfig> for NoPeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.err())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.err())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Network(NetworkError::new(&NoPeer(self.0))))
    }
}

/// Milliseconds since the Unix epoch: the proposer's clock, which commands carry.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
