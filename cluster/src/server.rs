//! The gRPC services a node serves to its peers: Raft's RPCs and the cluster service.

use std::time::Duration;

use openraft::raft::InstallSnapshotRequest;
use tonic::{Request, Response, Status};
use wharf_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use wharf_proto::cluster::raft_service_server::{RaftService, RaftServiceServer};
use wharf_proto::cluster::{
    AddNodeRequest, Empty, ForwardReply, ForwardRequest, JoinReply, JoinRequest, NodeIdRequest,
    NodeStatus, RaftReply, RaftRequest, ReadIndexReply, SnapshotChunk,
};
use wharf_raft::model::Command;
use wharf_raft::{Outcome, Request as LogRequest, WharfNode};

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
        reply(&self.meta.raft.install_snapshot(rpc).await)
    }
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
