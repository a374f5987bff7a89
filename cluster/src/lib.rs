//! wharf-cluster: how wharf nodes form a cluster and talk to each other.
//!
//! - [`tls`]: the cluster CA, node certificates, join tokens.
//! - [`network`]: openraft's transport over gRPC with mutual TLS, and the peer channel pool.
//! - [`server`]: the gRPC services (Raft RPCs; join, forward, read index, status, membership).
//! - [`meta`]: `Metadata`, a node's handle for writes (forwarded to the leader) and
//!   linearizable reads.

pub mod meta;
pub mod network;
pub mod server;
pub mod tls;

pub use meta::{ClusterStatus, Metadata, NodeReport, RaftOptions};
pub use network::Peers;
pub use tls::Identity;

use tonic::transport::{Certificate, ClientTlsConfig};
use wharf_proto::cluster::cluster_service_client::ClusterServiceClient;
use wharf_proto::cluster::{AddNodeRequest, JoinReply, JoinRequest};
use wharf_raft::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Unavailable(String),
    #[error("join refused: {0}")]
    JoinRefused(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Membership(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The one mapping of cluster errors to gRPC status codes.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            Error::Model(ModelError::NotFound) => tonic::Status::not_found(msg),
            Error::Model(_) => tonic::Status::failed_precondition(msg),
            Error::Unavailable(_) | Error::Io(_) => tonic::Status::unavailable(msg),
            Error::JoinRefused(_) => tonic::Status::permission_denied(msg),
            Error::Tls(_) => tonic::Status::unauthenticated(msg),
            Error::Membership(_) => tonic::Status::failed_precondition(msg),
        }
    }

    /// A peer's refusal, read back.
    pub fn from_status(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::PermissionDenied => Error::JoinRefused(s.message().to_string()),
            tonic::Code::Unauthenticated => Error::Tls(s.message().to_string()),
            tonic::Code::FailedPrecondition => Error::Membership(s.message().to_string()),
            _ => Error::Unavailable(format!("peer: {}: {}", s.code(), s.message())),
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Asks the node at `addr` to admit this one. TLS checks the node against the CA certificate
/// that the token carries; the node checks the token.
pub async fn join(
    addr: &str,
    token: &str,
    peer_addr: &str,
    http_addr: &str,
) -> Result<JoinReply, Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(tls::token_ca_pem(token)?))
        .domain_name(tls::SERVER_NAME);
    let channel = network::endpoint(addr, tls)?
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach {addr}: {e}")))?;
    let reply = ClusterServiceClient::new(channel)
        .join(JoinRequest {
            token: token.to_string(),
            peer_addr: peer_addr.to_string(),
            http_addr: http_addr.to_string(),
        })
        .await
        .map_err(Error::from_status)?;
    Ok(reply.into_inner())
}

/// Asks the cluster (through the node at `addr`) to add this node, now that it serves Raft.
pub async fn add_self(
    peers: &Peers,
    addr: &str,
    node_id: u64,
    node: &wharf_raft::WharfNode,
    learner: bool,
) -> Result<(), Error> {
    peers
        .cluster_client(addr)?
        .add_node(AddNodeRequest {
            node_id,
            peer_addr: node.peer_addr.clone(),
            http_addr: node.http_addr.clone(),
            learner,
        })
        .await
        .map_err(Error::from_status)?;
    Ok(())
}
