//! `Metadata`: a node's handle on the replicated metadata. Writes go to the leader (forwarded
//! over gRPC when this node is not it); reads that decide are linearizable (read index from
//! the leader, then wait for this node to apply up to it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use wharf_proto::cluster::{AddNodeRequest, Empty, ForwardRequest, NodeIdRequest, NodeStatus};
use wharf_raft::{
    Command, LogStore, NodeId, Outcome, Raft, Request, Response, StateMachineStore, StateView,
    WharfNode,
};

use crate::batch::Proposer;
use crate::network::{GrpcNetwork, Peers};
use crate::Error;

/// How long a write or a decisive read keeps trying while a leader is elected or reached.
const PATIENCE: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(100);
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// A clean shutdown's flush of the metadata store (two 8 MiB memtables at most); what it does
/// not finish, the journal replays at the next start.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(10);

pub struct RaftOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every: u64,
    /// The metadata store's block caches, in bytes.
    pub cache_capacity: u64,
}

#[derive(Clone)]
pub struct Metadata {
    pub raft: Raft,
    pub node_id: NodeId,
    pub peers: Peers,
    /// Proposes on this node's Raft, grouping concurrent proposals.
    pub proposer: Proposer,
    sm: StateMachineStore,
    log: LogStore,
}

impl Metadata {
    /// Opens the log in `dir` and starts Raft (not yet part of any cluster if the log is new).
    pub async fn open(
        node_id: NodeId,
        dir: &Path,
        opts: &RaftOptions,
        peers: Peers,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let store = wharf_raft::Options::for_node(node_id, opts.cache_capacity);
        let (log, sm) = wharf_raft::open(dir, &store)
            .map_err(|e| Error::Unavailable(format!("opening the metadata store: {e}")))?;
        let (state, log_handle) = (sm.clone(), log.clone());
        let config = openraft::Config {
            cluster_name: "wharf".into(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_timeout_min_ms,
            election_timeout_max: opts.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            max_in_snapshot_log_to_keep: opts.snapshot_every.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Unavailable(format!("raft configuration: {e}")))?;
        let network = GrpcNetwork {
            peers: peers.clone(),
        };
        let raft = Raft::new(node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| Error::Unavailable(format!("starting raft: {e}")))?;
        Ok(Self {
            proposer: Proposer::spawn(raft.clone()),
            raft,
            node_id,
            peers,
            sm: state,
            log: log_handle,
        })
    }

    /// Stops Raft (waiting at most `within`), then writes the store's memtables out as tables
    /// so that the next start has little journal to replay (a restart took up to 2.2 s
    /// replaying 64 MB journals; see `LogStore::flush_for_restart`).
    pub async fn shutdown(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.raft.shutdown()).await;
        let log = self.log.clone();
        let flushed = tokio::task::spawn_blocking(move || log.flush_for_restart());
        match tokio::time::timeout(FLUSH_AT_SHUTDOWN, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing the metadata store"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the metadata store"),
            Err(_) => {
                tracing::warn!("flushing the metadata store took too long; left to the journal")
            }
        }
    }

    pub async fn is_initialized(&self) -> Result<bool, Error> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// Makes this node a one-node cluster (first start of a new cluster only).
    pub async fn initialize(&self, me: WharfNode) -> Result<(), Error> {
        self.raft
            .initialize(BTreeMap::from([(self.node_id, me)]))
            .await
            .map_err(|e| Error::Unavailable(format!("initialising the cluster: {e}")))
    }

    /// Waits (up to `timeout` in all) for a leader and for this node to apply what is
    /// committed.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| Error::Unavailable(format!("waiting for a leader: {e}")))?;
        // A node that restarts far behind may need longer than one read waits (snapshots to
        // receive and install): it asks again, with a new read index, until the deadline.
        loop {
            match self.linearizable().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "not caught up with the cluster yet; waiting");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The applied state as this node has it (may lag the leader).
    pub fn local(&self) -> StateView {
        self.sm.view()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    fn leader_addr(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node.peer_addr))
    }

    /// A watch of what this node has applied, for readers that follow the log (event streams).
    pub fn applied_watch(&self) -> AppliedWatch {
        AppliedWatch(self.raft.metrics())
    }

    /// Resolves after the next change of the Raft metrics (an applied entry, for example).
    pub async fn changed(&self, within: Duration) {
        let mut rx = self.raft.metrics();
        let _ = tokio::time::timeout(within, rx.changed()).await;
    }

    /// Proposes a command on the leader and returns what the state machine answered, once it
    /// is committed (flushed on a quorum) and applied.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, Error> {
        let cmd = crate::origin::wrap(cmd);
        let started = Instant::now();
        let span = tracing::info_span!("propose");
        let out = tracing::Instrument::instrument(self.propose_timed(cmd), span).await;
        let result = match &out {
            Ok(_) => "committed",
            Err(Error::Model(_)) => "refused",
            Err(_) => "unavailable",
        };
        metrics::histogram!("wharf_raft_proposal_duration_seconds", "result" => result)
            .record(started.elapsed().as_secs_f64());
        out
    }

    async fn propose_timed(&self, cmd: Command) -> Result<Outcome, Error> {
        // One request id for every try: a try whose outcome was lost may still commit, and
        // the state machine then answers the next try with its outcome instead of applying
        // the command twice.
        let cmd = if cmd.answers_its_own_retries() {
            cmd
        } else {
            Command::Once {
                id: request_id(),
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                cmd: Box::new(cmd),
            }
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Without a quorum a write never commits: answer "unavailable" rather than hang.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(RETRY);
            let written = tokio::time::timeout(left, self.proposer.write(cmd.clone()));
            let Ok(written) = written.await else {
                return Err(Error::Unavailable(
                    "the write was not committed in time (no quorum?); it may still commit".into(),
                ));
            };
            let err = match written {
                Ok(answer) => return answer.map_err(Error::Model),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(node) => {
                            let forwarded = self.forward(&node.peer_addr, &cmd);
                            match tokio::time::timeout(left, forwarded).await {
                                Ok(Ok(Response(r))) => return r.map_err(Error::Model),
                                Ok(Err(e)) => e,
                                Err(_) => Error::Unavailable(
                                    "the leader did not commit the write in time".into(),
                                ),
                            }
                        }
                        None => Error::Unavailable("no leader is elected yet".into()),
                    }
                }
                Err(e) => return Err(Error::Unavailable(format!("metadata unavailable: {e}"))),
            };
            if Instant::now() > deadline {
                return Err(err);
            }
            tracing::debug!(error = %err, "write not accepted yet; retrying");
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn forward(&self, addr: &str, cmd: &Command) -> Result<Response, Error> {
        let mut req = tonic::Request::new(ForwardRequest {
            command_json: serde_json::to_vec(&Request(cmd.clone()))
                .map_err(|e| Error::Unavailable(e.to_string()))?,
        });
        crate::trace::inject(req.metadata_mut());
        let reply = self
            .peers
            .cluster_client(addr)?
            .forward(req)
            .await
            .map_err(Error::from_status)?;
        serde_json::from_slice(&reply.into_inner().response_json)
            .map_err(|e| Error::Unavailable(format!("bad forward reply: {e}")))
    }

    /// A snapshot of this node's state machine that holds every write committed before the
    /// call (a backup): after a linearizable read, a snapshot is built until one covers the
    /// index applied then; it is read from the file Raft keeps as its current snapshot.
    pub async fn fresh_snapshot(
        &self,
    ) -> Result<openraft::storage::Snapshot<wharf_raft::TypeConfig>, Error> {
        let target = self.linearizable().await?.applied_index();
        let covered = |m: &openraft::RaftMetrics<NodeId, WharfNode>| {
            m.snapshot.is_some_and(|s| s.index >= target)
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while !covered(&self.raft.metrics().borrow()) {
            if Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "no snapshot could be built in time".into(),
                ));
            }
            // A trigger while a build runs is dropped: ask again until one covers `target`.
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| Error::Unavailable(format!("building a snapshot: {e}")))?;
            let _ = self
                .raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| covered(m), "a snapshot covering the backup")
                .await;
        }
        self.raft
            .get_snapshot()
            .await
            .map_err(|e| Error::Unavailable(format!("reading the snapshot: {e}")))?
            .ok_or_else(|| Error::Unavailable("no snapshot to read".into()))
    }

    /// The applied state once it includes every write committed before this call: the leader
    /// confirms its leadership and names a read index, this node waits until it applied it.
    pub async fn linearizable(&self) -> Result<StateView, Error> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let err = match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(self.local()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(node) => match self.read_index(&node.peer_addr).await {
                            Ok(index) => {
                                self.raft
                                    .wait(Some(PATIENCE))
                                    .applied_index_at_least(Some(index), "read index")
                                    .await
                                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                                return Ok(self.local());
                            }
                            Err(e) => e,
                        },
                        None => Error::Unavailable("no leader is elected yet".into()),
                    }
                }
                Err(RaftError::APIError(e)) => Error::Unavailable(e.to_string()),
                Err(e) => return Err(Error::Unavailable(format!("metadata unavailable: {e}"))),
            };
            if Instant::now() > deadline {
                return Err(err);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn read_index(&self, addr: &str) -> Result<u64, Error> {
        let mut req = tonic::Request::new(Empty {});
        req.set_timeout(Duration::from_secs(5));
        let reply = self
            .peers
            .cluster_client(addr)?
            .read_index(req)
            .await
            .map_err(Error::from_status)?;
        Ok(reply.into_inner().index)
    }

    /// This node's own view, as the Status RPC reports it.
    pub fn node_status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let me = m
            .membership_config
            .membership()
            .get_node(&self.node_id)
            .cloned()
            .unwrap_or_default();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        // The index and the digest from the same read of the applied state.
        let (applied_index, state_digest) = self.sm.applied_digest();
        NodeStatus {
            id: self.node_id,
            role: role.into(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index,
            leader: m.current_leader.unwrap_or(0),
            http_addr: me.http_addr,
            peer_addr: me.peer_addr,
            state_digest,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Every member's status (asked over gRPC, a second at most each).
    pub async fn cluster_status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let asks = membership.nodes().map(|(id, node)| {
            let (id, node) = (*id, node.clone());
            let voter = voters.contains(&id);
            async move {
                let status = if id == self.node_id {
                    Some(self.node_status())
                } else {
                    self.ask_status(&node.peer_addr).await
                };
                NodeReport {
                    id,
                    voter,
                    reachable: status.is_some(),
                    role: status
                        .as_ref()
                        .map(|s| s.role.clone())
                        .unwrap_or_else(|| "unreachable".into()),
                    term: status.as_ref().map(|s| s.term),
                    last_log_index: status.as_ref().map(|s| s.last_log_index),
                    applied_index: status.as_ref().map(|s| s.applied_index),
                    snapshot_index: status.as_ref().map(|s| s.snapshot_index),
                    purged_index: status.as_ref().map(|s| s.purged_index),
                    state_digest: status.as_ref().map(|s| s.state_digest.clone()),
                    http_addr: node.http_addr,
                    peer_addr: node.peer_addr,
                }
            }
        });
        ClusterStatus {
            leader: m.current_leader,
            term: m.current_term,
            nodes: futures::future::join_all(asks).await,
        }
    }

    async fn ask_status(&self, addr: &str) -> Option<NodeStatus> {
        let mut req = tonic::Request::new(Empty {});
        req.set_timeout(STATUS_TIMEOUT);
        let mut client = self.peers.cluster_client(addr).ok()?;
        let r = tokio::time::timeout(STATUS_TIMEOUT, client.status(req)).await;
        r.ok()?.ok().map(|r| r.into_inner())
    }

    /// Adds a node as a learner (which waits for it to catch up), then as a voter unless asked
    /// not to. Runs on the leader; other nodes pass it on.
    pub async fn add_node(&self, id: NodeId, node: WharfNode, learner: bool) -> Result<(), Error> {
        if let Some(addr) = self.leader_elsewhere().await? {
            let req = AddNodeRequest {
                node_id: id,
                peer_addr: node.peer_addr,
                http_addr: node.http_addr,
                learner,
            };
            self.peers
                .cluster_client(&addr)?
                .add_node(req)
                .await
                .map_err(Error::from_status)?;
            return Ok(());
        }
        let what = format!("adding node {id} as a learner");
        membership_change(&what, || self.raft.add_learner(id, node.clone(), true)).await?;
        if !learner {
            self.promote(id).await?;
        }
        Ok(())
    }

    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        if let Some(addr) = self.leader_elsewhere().await? {
            self.peers
                .cluster_client(&addr)?
                .promote(NodeIdRequest { node_id: id })
                .await
                .map_err(Error::from_status)?;
            return Ok(());
        }
        membership_change(&format!("promoting node {id}"), || {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        })
        .await?;
        Ok(())
    }

    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        if let Some(addr) = self.leader_elsewhere().await? {
            self.peers
                .cluster_client(&addr)?
                .remove(NodeIdRequest { node_id: id })
                .await
                .map_err(Error::from_status)?;
            return Ok(());
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            // Admitted (it holds a certificate) but never added: its certificate is revoked.
            if self.local().node(id).is_some_and(|n| !n.removed) {
                self.propose(Command::RemoveNode { node: id }).await?;
                return Ok(());
            }
            return Err(Error::Membership(format!("node {id} is not a member")));
        }
        if id == self.node_id && membership.voter_ids().count() == 1 {
            return Err(Error::Membership(format!(
                "node {id} is the cluster's only voter"
            )));
        }
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let what = format!("removing node {id}");
        let change_membership =
            || membership_change(&what, || self.raft.change_membership(change.clone(), false));
        if id == self.node_id {
            // The leader removes itself: its followers must keep taking its entries until the
            // membership change commits; its certificate is revoked after, through the next
            // leader.
            change_membership().await?;
            self.propose(Command::RemoveNode { node: id }).await?;
        } else {
            // Its certificate is refused first, on every node as it applies this, so that the
            // node being removed cannot act during the membership change.
            self.propose(Command::RemoveNode { node: id }).await?;
            change_membership().await?;
        }
        Ok(())
    }

    /// `None` when this node leads; the leader's address otherwise (waiting for an election).
    async fn leader_elsewhere(&self) -> Result<Option<String>, Error> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.is_leader() {
                return Ok(None);
            }
            if let Some((_, addr)) = self.leader_addr() {
                return Ok(Some(addr));
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable("no leader is elected".into()));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Whether the node `id`, named by the certificate `der` a call came with, may act in the
    /// cluster. A node with a record must not be removed, and must present a certificate for
    /// the key it was issued one for (when one is recorded). A node without a record is trusted when the
    /// membership names it (clusters older than records), when it was in the `seed` this node
    /// joined with, or when its id is above every id this node knows was handed out (a node
    /// admitted after what this node has applied); a removed node always has a record.
    pub fn peer_trusted(&self, id: NodeId, der: &[u8], seed: &crate::tls::Seed) -> bool {
        let state = self.local();
        match state.node(id) {
            Some(n) if n.removed => false,
            Some(n) => match &n.cert_pem {
                Some(pem) => crate::tls::same_key(pem, der),
                None => true,
            },
            None => {
                id > state.last_node_id().max(seed.floor)
                    || seed.peers.contains(&id)
                    || self
                        .raft
                        .metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .is_some()
            }
        }
    }

    /// Whether `id` is in the membership (as a voter or a learner).
    /// Whether this node's latest membership names `id` (as a voter, when `voter`).
    pub fn membership_names(&self, id: NodeId, voter: bool) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if voter {
            membership.voter_ids().any(|v| v == id)
        } else {
            membership.get_node(&id).is_some()
        }
    }

    /// The peer address of the leader this node knows of, if any.
    pub fn leader_peer_addr(&self) -> Option<String> {
        self.leader_addr().map(|(_, addr)| addr)
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// The nodes the cluster trusts now (not removed), for a joiner's seed.
    pub fn trusted_ids(&self) -> Vec<NodeId> {
        self.local()
            .nodes()
            .into_iter()
            .filter(|n| !n.removed)
            .map(|n| n.id)
            .collect()
    }

    /// The smallest node id above every id the membership has ever shown this node.
    pub fn next_node_id_floor(&self) -> u64 {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().nodes().map(|(id, _)| *id).max().unwrap_or(0) + 1
    }
}

/// Runs a membership change, waiting while another one (a concurrent join) is in progress.
async fn membership_change<T, Fut>(what: &str, change: impl Fn() -> Fut) -> Result<T, Error>
where
    Fut: std::future::Future<
        Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, WharfNode>>>,
    >,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match change().await {
            Ok(v) => return Ok(v),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if Instant::now() < deadline => tokio::time::sleep(RETRY).await,
            Err(e) => return Err(Error::Membership(format!("{what}: {e}"))),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub nodes: Vec<NodeReport>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub id: NodeId,
    /// `leader`, `follower`, `learner`, `candidate`, or `unreachable`.
    pub role: String,
    pub voter: bool,
    pub reachable: bool,
    pub http_addr: String,
    pub peer_addr: String,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last log index in this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// The last log index this node has purged (entries before a snapshot).
    pub purged_index: Option<u64>,
    /// BLAKE3 of the state machine at `applied_index`: equal on nodes that applied the same log.
    pub state_digest: Option<String>,
}

/// A random request id (128 bits, hex).
fn request_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// This node's applied index, and a way to wait for it to move.
pub struct AppliedWatch(tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, WharfNode>>);

impl AppliedWatch {
    /// The index applied now; [`AppliedWatch::changed`] then waits for anything newer.
    pub fn applied(&mut self) -> u64 {
        self.0
            .borrow_and_update()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Resolves once the Raft metrics changed since the last [`AppliedWatch::applied`] (or
    /// never, once Raft has shut down).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
