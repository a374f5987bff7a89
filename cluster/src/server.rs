//! The gRPC services a node serves to its peers: Raft's RPCs and the cluster service.
//!
//! Every call but Join and JoinStatus comes with a certificate signed by the cluster CA that
//! names a node (see [`crate::tls`]); [`PeerCheck`] (in [`crate::peer`]) refuses it unless the
//! cluster trusts that node, before the message is decoded. Calls that act for a node (Raft's
//! RPCs as a leader or candidate, a command naming a node, AddNode) must name the
//! certificate's node.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use wharf_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use wharf_proto::cluster::raft_service_server::{RaftService, RaftServiceServer};
use wharf_proto::cluster::{
    AddNodeRequest, Empty, ForwardReply, ForwardRequest, JoinReply, JoinRequest, JoinStatusRequest,
    NodeIdRequest, NodeStatus, RaftReply, RaftRequest, ReadIndexReply, SecretsReply, SnapshotChunk,
};
use wharf_raft::model::{Command, NodeRecord};
use wharf_raft::{NodeId, Outcome, Raft, Request as LogRequest, TypeConfig, WharfNode};

use crate::meta::Metadata;
use crate::network::MAX_MESSAGE;
use crate::peer::{acting_as, command_node, peer, vote_node};
pub use crate::peer::{PeerCheck, PeerNode};
use crate::tls::{self, Identity};
use crate::Error;

/// The largest cluster-service message (a forwarded command, a join request). Raft's own
/// messages may be larger ([`MAX_MESSAGE`]); they are decoded only after the peer check.
pub const MAX_CLUSTER_MESSAGE: usize = 8 << 20;

fn decode<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json).map_err(|e| Status::invalid_argument(format!("bad request: {e}")))
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<RaftReply>, Status> {
    let json = serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { json }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct RaftSvc {
    meta: Metadata,
}

#[tonic::async_trait]
impl RaftService for RaftSvc {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let from = peer(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().json)?;
        acting_as(from, vote_node(&rpc.vote))?;
        reply(&self.meta.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let from = peer(&req)?;
        let rpc: VoteRequest<NodeId> = decode(&req.into_inner().json)?;
        acting_as(from, vote_node(&rpc.vote))?;
        reply(&self.meta.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<SnapshotChunk>,
    ) -> Result<Response<RaftReply>, Status> {
        let from = peer(&req)?;
        let c = req.into_inner();
        let rpc = InstallSnapshotRequest {
            vote: decode(&c.vote_json)?,
            meta: decode(&c.meta_json)?,
            offset: c.offset,
            data: c.data,
            done: c.done,
        };
        acting_as(from, vote_node(&rpc.vote))?;
        reply(&receive_snapshot_chunk(self.meta.raft.clone(), rpc).await?)
    }
}

type ChunkResult = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Hands a snapshot chunk to openraft on a task of its own, so that the chunk is written whole
/// even when its sender gives up on the call. A leader gives up on a chunk at openraft's
/// `install_snapshot_timeout`, and tonic then drops this handler's future. Dropped between
/// the two writes that a chunk above tokio's 2 MiB file buffer takes, openraft's receiver
/// would have written part of the chunk without counting it, and the same chunk sent again
/// would land after that part: a corrupt snapshot, which stops Raft on this node.
async fn receive_snapshot_chunk(
    raft: Raft,
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<ChunkResult, Status> {
    tokio::spawn(async move { raft.install_snapshot(rpc).await })
        .await
        .map_err(|e| Status::internal(format!("receiving a snapshot chunk: {e}")))
}

pub struct ClusterSvc {
    meta: Metadata,
    identity: Identity,
    /// Handed to joiners; empty when user tokens are checked with a JWKS instead.
    jwt_secret: String,
}

impl ClusterSvc {
    /// What a joiner gets for its admitted record: its certificate (signed here and now when
    /// this node holds the CA key), the CA certificate, the nodes to trust.
    async fn join_reply(&self, mut node: NodeRecord) -> Result<Response<JoinReply>, Status> {
        if node.cert_pem.is_none() {
            if let (Some(ca_key), Some(csr)) = (&self.identity.ca_key_pem, &node.csr_pem) {
                let cert_pem = tls::sign_csr(ca_key, csr, node.id).map_err(|e| e.to_status())?;
                self.meta
                    .propose(Command::NodeCertIssued {
                        node: node.id,
                        cert_pem,
                    })
                    .await
                    .map_err(|e| e.to_status())?;
                // Another signer may have been first: the committed certificate is the one.
                let state = self.meta.linearizable().await.map_err(|e| e.to_status())?;
                node = state
                    .node(node.id)
                    .ok_or_else(|| Status::internal("an admitted node has no record"))?;
            }
        }
        let pending = node.cert_pem.is_none();
        Ok(Response::new(JoinReply {
            node_id: node.id,
            ca_pem: self.identity.ca_pem.clone(),
            cert_pem: node.cert_pem.unwrap_or_default(),
            seed_peers: self.meta.trusted_ids(),
            pending,
            seed_floor: self.meta.local().last_node_id(),
        }))
    }
}

/// A request's secret hash against a record's, in constant time.
fn same_hash(a: &str, b: &str) -> bool {
    match (blake3::Hash::from_hex(a), blake3::Hash::from_hex(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterSvc {
    /// Admits a node that presents a join token: one use of the token is consumed by a
    /// committed command, and the node's signing request is recorded (and signed here when
    /// this node holds the CA key). The token itself is never logged.
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        let token = tls::parse_join_token(&req.token).map_err(|e| e.to_status())?;
        if req.peer_addr.is_empty() || req.http_addr.is_empty() || req.csr_pem.is_empty() {
            return Err(Status::invalid_argument(
                "peer_addr, http_addr and csr_pem are required",
            ));
        }
        if req.csr_pem.len() > 16 << 10 {
            return Err(Status::invalid_argument(
                "the certificate signing request is too large",
            ));
        }
        if req.peer_addr.len() > 256 || req.http_addr.len() > 256 {
            return Err(Status::invalid_argument("an address is too long"));
        }
        tls::check_csr(&req.csr_pem).map_err(|e| e.to_status())?;
        // The token is checked before anything is proposed: a caller without a valid one
        // cannot write to the log. (The committed AdmitNode checks it again, and consumes it.)
        let hash = token.secret_hash();
        let state = self.meta.linearizable().await.map_err(|e| e.to_status())?;
        if wharf_raft::model::admitted_by(&state, &token.id, &hash, &req.csr_pem).is_none() {
            wharf_raft::model::check_token(&state, &token.id, &hash, now_ms())
                .map_err(|e| Error::Model(e).to_status())?;
        }
        let floor = self.meta.next_node_id_floor();
        let node_id = match self
            .meta
            .propose(Command::AdmitNode {
                token_id: token.id.clone(),
                secret_hash: hash,
                min: floor,
                peer_addr: req.peer_addr.clone(),
                http_addr: req.http_addr,
                csr_pem: req.csr_pem,
                now: now_ms(),
            })
            .await
            .map_err(|e| e.to_status())?
        {
            Outcome::NodeId(id) => id,
            other => return Err(Status::internal(format!("unexpected {other:?}"))),
        };
        tracing::info!(node_id, peer = %req.peer_addr, "admitted a joining node");
        let state = self.meta.linearizable().await.map_err(|e| e.to_status())?;
        let node = state
            .node(node_id)
            .ok_or_else(|| Status::internal("an admitted node has no record"))?;
        self.join_reply(node).await
    }

    /// A joiner waiting for its certificate, asking with the token it joined with.
    async fn join_status(
        &self,
        req: Request<JoinStatusRequest>,
    ) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        let token = tls::parse_join_token(&req.token).map_err(|e| e.to_status())?;
        let state = self.meta.linearizable().await.map_err(|e| e.to_status())?;
        let node = state
            .node(req.node_id)
            .filter(|n| {
                !n.removed
                    && n.token_id.as_deref() == Some(token.id.as_str())
                    && n.token_hash
                        .as_deref()
                        .is_some_and(|h| same_hash(h, &token.secret_hash()))
            })
            .ok_or_else(|| {
                Status::permission_denied("join refused: no node was admitted with this token")
            })?;
        self.join_reply(node).await
    }

    /// A node adds itself (with the certificate it was admitted with) to the membership, or a
    /// member relays that request to the leader for a node admitted and not yet a member.
    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<Empty>, Status> {
        let from = peer(&req)?;
        let r = req.into_inner();
        let joining = !self.meta.is_member(r.node_id)
            && self
                .meta
                .local()
                .node(r.node_id)
                .is_some_and(|n| !n.removed && n.cert_pem.is_some());
        if !(joining && self.meta.is_member(from)) {
            acting_as(from, Some(r.node_id))?;
        }
        let node = WharfNode {
            peer_addr: r.peer_addr,
            http_addr: r.http_addr,
        };
        self.meta
            .add_node(r.node_id, node, r.learner)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Empty {}))
    }

    /// The cluster's HS256 secret for user tokens, to the holder of a trusted node's
    /// certificate (a joiner, once signed): it never travels in a join reply.
    async fn secrets(&self, req: Request<Empty>) -> Result<Response<SecretsReply>, Status> {
        peer(&req)?;
        Ok(Response::new(SecretsReply {
            jwt_secret: self.jwt_secret.clone(),
        }))
    }

    async fn promote(&self, req: Request<NodeIdRequest>) -> Result<Response<Empty>, Status> {
        peer(&req)?;
        self.meta
            .promote(req.into_inner().node_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, req: Request<NodeIdRequest>) -> Result<Response<Empty>, Status> {
        peer(&req)?;
        self.meta
            .remove(req.into_inner().node_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Empty {}))
    }

    /// A write from a node that is not the leader. Only the leader proposes it; anyone else
    /// answers Unavailable and the sender looks for the leader again.
    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let from = peer(&req)?;
        // The write's trace goes on here (the follower's span is its parent).
        let span = tracing::info_span!("forward", from);
        crate::trace::continue_from(&span, req.metadata());
        let cmd: LogRequest = decode(&req.into_inner().command_json)?;
        acting_as(from, command_node(&cmd.0))?;
        // Only the leader's own proposer groups commands: a peer forwards them one by one.
        if matches!(cmd.0, Command::Batch { .. }) {
            return Err(Status::invalid_argument("a batch is not forwarded"));
        }
        let answer = tracing::Instrument::instrument(self.meta.proposer.write(cmd.0), span)
            .await
            .map_err(|e| Status::unavailable(format!("not accepted here: {e}")))?;
        let response_json = serde_json::to_vec(&wharf_raft::Response(answer))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ForwardReply { response_json }))
    }

    async fn read_index(&self, req: Request<Empty>) -> Result<Response<ReadIndexReply>, Status> {
        peer(&req)?;
        let read = self
            .meta
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| Status::unavailable(format!("not the leader: {e}")))?;
        Ok(Response::new(ReadIndexReply {
            index: read.map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn status(&self, req: Request<Empty>) -> Result<Response<NodeStatus>, Status> {
        peer(&req)?;
        Ok(Response::new(self.meta.node_status()))
    }
}

/// Signs, on a node that holds the CA key, the requests of nodes admitted through a node that
/// does not; until `stop` resolves.
pub async fn sign_pending_requests(
    meta: Metadata,
    identity: Identity,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(ca_key) = identity.ca_key_pem.clone() else {
        return;
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        // Every holder of the key signs (a second signature of a request is ignored).
        {
            for n in meta.local().nodes() {
                let (None, Some(csr), false) = (&n.cert_pem, &n.csr_pem, n.removed) else {
                    continue;
                };
                match tls::sign_csr(&ca_key, csr, n.id) {
                    Ok(cert_pem) => {
                        let cmd = Command::NodeCertIssued {
                            node: n.id,
                            cert_pem,
                        };
                        if let Err(e) = meta.propose(cmd).await {
                            tracing::warn!(node = n.id, error = %e, "recording a signed certificate");
                        } else {
                            tracing::info!(node = n.id, "signed a joining node's certificate");
                        }
                    }
                    Err(e) => tracing::warn!(node = n.id, error = %e, "cannot sign a request"),
                }
            }
        }
        // At most one pass every half second: a pass reads every node record, and the metrics
        // change with every applied write (on every write, the passes took half of a busy
        // leader's CPU).
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(SIGN_PASS_EVERY) => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = meta.changed(Duration::from_secs(1)) => {}
        }
    }
}

/// The shortest time between two passes of [`sign_pending_requests`].
const SIGN_PASS_EVERY: Duration = Duration::from_millis(500);

/// Accepted connections without Nagle's algorithm: Raft's small messages must not wait for
/// delayed acknowledgements (it cost 40 ms per write on loopback).
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Serves both services on `listener` with mutual TLS until `shutdown` resolves. `seed`: the
/// nodes a joiner trusts before its log names any.
pub async fn serve(
    listener: tokio::net::TcpListener,
    meta: Metadata,
    identity: Identity,
    jwt_secret: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let raft = InterceptedService::new(
        RaftServiceServer::new(RaftSvc { meta: meta.clone() })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        PeerCheck::new(meta.clone(), identity.seed.clone(), true),
    );
    let check = PeerCheck::new(meta.clone(), identity.seed.clone(), false);
    let tls = identity.server_tls();
    let cluster = InterceptedService::new(
        ClusterServiceServer::new(ClusterSvc {
            meta,
            identity,
            jwt_secret,
        })
        .max_decoding_message_size(MAX_CLUSTER_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
        check,
    );
    tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| Error::Tls(e.to_string()))?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(raft)
        .add_service(cluster)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("gRPC server: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use tokio::io::AsyncReadExt;
    use wharf_raft::model::Command;

    use super::*;
    use crate::meta::RaftOptions;
    use crate::network::Peers;

    async fn yields(n: u32) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    /// A snapshot of `users` users with long names, as a leader would send it. The names are
    /// hex digits of a hash, so the compressed file still has about 25 KB per user (the user
    /// record, the `quota.changed` event's two records, and the audit record and its index,
    /// which name the user too).
    async fn snapshot_of(
        dir: &std::path::Path,
        users: u64,
    ) -> (openraft::SnapshotMeta<NodeId, WharfNode>, Vec<u8>, String) {
        let (_log, mut sm) = wharf_raft::open(dir, &wharf_raft::Options::default()).unwrap();
        let entries = (1..=users).map(|i| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(LogRequest(Command::SetQuota {
                user: {
                    let mut name = vec![0u8; 5_000];
                    blake3::Hasher::new()
                        .update(&i.to_le_bytes())
                        .finalize_xof()
                        .fill(&mut name);
                    hex::encode(name)
                },
                quota: i,
            })),
        });
        sm.apply(entries).await.unwrap();
        let mut snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut bytes = Vec::new();
        snap.snapshot.read_to_end(&mut bytes).await.unwrap();
        (snap.meta, bytes, sm.view().digest())
    }

    /// A leader whose call outlives its deadline gives up on it (tonic then drops the
    /// handler's future) and sends the same chunk again. The chunk given up on must not leave
    /// the file written past the offset openraft counts, or the retry lands after it and the
    /// received snapshot is corrupt, which stops Raft on the receiver.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_chunk_given_up_on_by_its_sender_and_sent_again_is_received_whole() {
        let src = tempfile::tempdir().unwrap();
        let (meta, bytes, digest) = snapshot_of(src.path(), 200).await;
        // Two chunks: the first above tokio's 2 MiB file buffer, so it takes two writes
        // (openraft's default chunk is 3 MiB).
        const CHUNK: usize = 3 << 20;
        assert!(
            bytes.len() > CHUNK && bytes.len() < 2 * CHUNK,
            "snapshot of {} bytes",
            bytes.len()
        );
        let chunk = |i: usize| InstallSnapshotRequest {
            vote: Vote::new_committed(1, 1),
            meta: meta.clone(),
            offset: (i * CHUNK) as u64,
            data: bytes.chunks(CHUNK).nth(i).unwrap().to_vec(),
            done: i == 1,
        };
        let opts = RaftOptions {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150_000,
            election_timeout_max_ms: 300_000,
            snapshot_every: 1_000_000,
            cache_capacity: 16 << 20,
        };
        // Each try on a new receiver, the first chunk given up on after a different number
        // of polls: some of them land between its two writes.
        for polls in [
            1, 4, 16, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096,
        ] {
            let dst = tempfile::tempdir().unwrap();
            let peers = Peers::new(tonic::transport::ClientTlsConfig::new());
            let node = Metadata::open(2, dst.path(), &opts, peers).await.unwrap();
            tokio::select! {
                biased;
                _ = receive_snapshot_chunk(node.raft.clone(), chunk(0)) => {}
                _ = yields(polls) => {}
            }
            for i in [0, 1] {
                let answer = receive_snapshot_chunk(node.raft.clone(), chunk(i)).await;
                assert!(
                    matches!(answer, Ok(Ok(_))),
                    "given up after {polls} polls, chunk {i} sent again: {answer:?}"
                );
            }
            let index = meta.last_log_id.map(|l| l.index);
            node.raft
                .wait(Some(Duration::from_secs(20)))
                .applied_index_at_least(index, "the snapshot installed")
                .await
                .unwrap_or_else(|e| panic!("given up after {polls} polls: {e}"));
            assert_eq!(
                node.local().digest(),
                digest,
                "given up after {polls} polls"
            );
            node.raft.shutdown().await.unwrap();
        }
    }
}
