//! The gRPC services a node serves to its peers: Raft's RPCs and the cluster service.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use tonic::{Request, Response, Status};
use wharf_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use wharf_proto::cluster::raft_service_server::{RaftService, RaftServiceServer};
use wharf_proto::cluster::{
    AddNodeRequest, Empty, ForwardReply, ForwardRequest, JoinReply, JoinRequest, NodeIdRequest,
    NodeStatus, RaftReply, RaftRequest, ReadIndexReply, SnapshotChunk,
};
use wharf_raft::model::Command;
use wharf_raft::{NodeId, Outcome, Raft, Request as LogRequest, TypeConfig, WharfNode};

use crate::meta::Metadata;
use crate::network::MAX_MESSAGE;
use crate::tls::Identity;
use crate::{now_secs, Error};

/// Calls other than Join must come from a holder of a cluster certificate. rustls has already
/// checked any certificate presented against the cluster CA; here we insist one was.
fn require_peer<T>(req: &Request<T>) -> Result<(), Status> {
    match req.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(()),
        _ => Err(Status::unauthenticated(
            "a certificate signed by the cluster CA is required",
        )),
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json).map_err(|e| Status::invalid_argument(format!("bad request: {e}")))
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<RaftReply>, Status> {
    let json = serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { json }))
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
        require_peer(&req)?;
        let rpc = decode(&req.into_inner().json)?;
        reply(&self.meta.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        require_peer(&req)?;
        let rpc = decode(&req.into_inner().json)?;
        reply(&self.meta.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<SnapshotChunk>,
    ) -> Result<Response<RaftReply>, Status> {
        require_peer(&req)?;
        let c = req.into_inner();
        let rpc = InstallSnapshotRequest {
            vote: decode(&c.vote_json)?,
            meta: decode(&c.meta_json)?,
            offset: c.offset,
            data: c.data,
            done: c.done,
        };
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
    jwt_secret: String,
}

#[tonic::async_trait]
impl ClusterService for ClusterSvc {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        self.identity
            .verify_join_token(&req.token, now_secs())
            .map_err(|e| e.to_status())?;
        if req.peer_addr.is_empty() || req.http_addr.is_empty() {
            return Err(Status::invalid_argument(
                "peer_addr and http_addr are required",
            ));
        }
        let floor = self.meta.next_node_id_floor();
        let node_id = match self
            .meta
            .propose(Command::AllocateNodeId { min: floor })
            .await
            .map_err(|e| e.to_status())?
        {
            Outcome::NodeId(id) => id,
            other => return Err(Status::internal(format!("unexpected {other:?}"))),
        };
        let (cert_pem, key_pem) = self.identity.issue_node_cert().map_err(|e| e.to_status())?;
        tracing::info!(node_id, peer = %req.peer_addr, "admitted a joining node");
        Ok(Response::new(JoinReply {
            node_id,
            ca_pem: self.identity.ca_pem.clone(),
            ca_key_pem: self.identity.ca_key_pem.clone(),
            cert_pem,
            key_pem,
            jwt_secret: self.jwt_secret.clone(),
            join_key: self.identity.join_key.to_vec(),
        }))
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<Empty>, Status> {
        require_peer(&req)?;
        let r = req.into_inner();
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

    async fn promote(&self, req: Request<NodeIdRequest>) -> Result<Response<Empty>, Status> {
        require_peer(&req)?;
        self.meta
            .promote(req.into_inner().node_id)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, req: Request<NodeIdRequest>) -> Result<Response<Empty>, Status> {
        require_peer(&req)?;
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
        require_peer(&req)?;
        let cmd: LogRequest = decode(&req.into_inner().command_json)?;
        let resp = self
            .meta
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| Status::unavailable(format!("not accepted here: {e}")))?;
        let response_json =
            serde_json::to_vec(&resp.data).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ForwardReply { response_json }))
    }

    async fn read_index(&self, req: Request<Empty>) -> Result<Response<ReadIndexReply>, Status> {
        require_peer(&req)?;
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
        require_peer(&req)?;
        Ok(Response::new(self.meta.node_status()))
    }
}

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

/// Serves both services on `listener` with mutual TLS until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    meta: Metadata,
    identity: Identity,
    jwt_secret: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let raft = RaftServiceServer::new(RaftSvc { meta: meta.clone() })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let tls = identity.server_tls();
    let cluster = ClusterServiceServer::new(ClusterSvc {
        meta,
        identity,
        jwt_secret,
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
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

    /// A snapshot of `users` users with long names, as a leader would send it.
    async fn snapshot_of(
        dir: &std::path::Path,
        users: u64,
    ) -> (openraft::SnapshotMeta<NodeId, WharfNode>, Vec<u8>, String) {
        let (_log, mut sm) = wharf_raft::open(dir, &wharf_raft::Options::default()).unwrap();
        let entries = (1..=users).map(|i| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(LogRequest(Command::SetQuota {
                user: format!("{i:0>2000}"),
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
        let (meta, bytes, digest) = snapshot_of(src.path(), 900).await;
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
