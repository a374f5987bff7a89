//! wharf-cluster: how wharf nodes form a cluster and talk to each other.
//!
//! - [`tls`]: the cluster CA, node certificates that name their node, join tokens.
//! - [`network`]: openraft's transport over gRPC with mutual TLS, and the peer channel pool.
//! - [`peer`]: who a call comes from (the certificate's node id) and whether it is trusted.
//! - [`server`]: the gRPC services (Raft RPCs; join, forward, read index, status, membership).
//! - [`batch`]: group commit above Raft (concurrent proposals share one entry).
//! - [`meta`]: `Metadata`, a node's handle for writes (forwarded to the leader) and
//!   linearizable reads.

pub mod batch;
pub mod meta;
pub mod network;
pub mod origin;
pub mod peer;
pub mod server;
pub mod tls;
pub mod trace;

pub use meta::{ClusterStatus, Metadata, NodeReport, RaftOptions};
pub use network::Peers;
pub use tls::Identity;

use tonic::transport::{Certificate, ClientTlsConfig};
use wharf_proto::cluster::cluster_service_client::ClusterServiceClient;
use wharf_proto::cluster::{AddNodeRequest, JoinReply, JoinRequest, JoinStatusRequest};
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
            Error::Model(ModelError::JoinRefused(m)) => {
                tonic::Status::permission_denied(format!("join refused: {m}"))
            }
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

/// How long a joining node keeps trying a member that does not answer yet (not started, or
/// still electing a leader), so that nodes started together may start in any order.
pub const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks the node at `addr` to admit this one, retrying for [`JOIN_WAIT`] while it cannot be
/// reached or has no leader yet; a refused token fails at once. TLS checks the node against the
/// CA certificate that the token carries; the node checks the token. When no node that holds
/// the CA key can sign the request at once, waits for the certificate (`sign_wait`).
pub async fn join(
    addr: &str,
    token: &str,
    peer_addr: &str,
    http_addr: &str,
    csr_pem: &str,
    sign_wait: std::time::Duration,
) -> Result<JoinReply, Error> {
    let deadline = std::time::Instant::now() + JOIN_WAIT;
    let mut said = false;
    let mut reply = loop {
        match join_once(addr, token, peer_addr, http_addr, csr_pem).await {
            Err(Attempt::NotUpYet(e)) if std::time::Instant::now() < deadline => {
                if !said {
                    tracing::info!(%addr, "waiting for the cluster to answer: {e}");
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(Attempt::NotUpYet(e) | Attempt::Failed(e)) => return Err(e),
            Ok(reply) => break reply,
        }
    };
    let deadline = std::time::Instant::now() + sign_wait;
    if reply.pending {
        tracing::info!(
            node_id = reply.node_id,
            "admitted; waiting for a holder of the CA key to sign this node's certificate \
             (`wharf cluster sign-csr`)"
        );
    }
    while reply.pending {
        if std::time::Instant::now() > deadline {
            return Err(Error::JoinRefused(format!(
                "admitted as node {}, but no certificate was signed within {sign_wait:?}; \
                 start again with the same token to keep waiting",
                reply.node_id
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        match join_status_once(addr, token, reply.node_id).await {
            Ok(r) => reply = r,
            Err(Attempt::NotUpYet(e)) => tracing::debug!("asking for the certificate: {e}"),
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Ok(reply)
}

/// One join attempt's failure: worth waiting out, or final.
enum Attempt {
    /// Nothing listens yet, or the member has no leader yet.
    NotUpYet(Error),
    Failed(Error),
}

async fn client_for(
    addr: &str,
    token: &str,
) -> Result<ClusterServiceClient<tonic::transport::Channel>, Attempt> {
    let ca_pem = tls::parse_join_token(token)
        .and_then(|t| t.ca_pem())
        .map_err(Attempt::Failed)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(tls::SERVER_NAME);
    let channel = network::endpoint(addr, tls)
        .map_err(Attempt::Failed)?
        .connect()
        .await
        .map_err(|e| {
            let refused = nothing_listens(&e);
            let e = Error::Unavailable(format!("cannot reach {addr}: {e}"));
            if refused {
                Attempt::NotUpYet(e)
            } else {
                Attempt::Failed(e)
            }
        })?;
    Ok(ClusterServiceClient::new(channel))
}

fn attempt(s: tonic::Status) -> Attempt {
    match s.code() {
        tonic::Code::Unavailable => Attempt::NotUpYet(Error::from_status(s)),
        _ => Attempt::Failed(Error::from_status(s)),
    }
}

async fn join_once(
    addr: &str,
    token: &str,
    peer_addr: &str,
    http_addr: &str,
    csr_pem: &str,
) -> Result<JoinReply, Attempt> {
    let reply = client_for(addr, token)
        .await?
        .join(JoinRequest {
            token: token.to_string(),
            peer_addr: peer_addr.to_string(),
            http_addr: http_addr.to_string(),
            csr_pem: csr_pem.to_string(),
        })
        .await
        .map_err(attempt)?;
    Ok(reply.into_inner())
}

async fn join_status_once(addr: &str, token: &str, node_id: u64) -> Result<JoinReply, Attempt> {
    let reply = client_for(addr, token)
        .await?
        .join_status(JoinStatusRequest {
            token: token.to_string(),
            node_id,
        })
        .await
        .map_err(attempt)?;
    Ok(reply.into_inner())
}

/// A refused TCP connection: the member is not listening yet. (A TLS failure is final.)
fn nothing_listens(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    false
}

/// The cluster's HS256 secret for user tokens, asked with this node's new certificate.
pub async fn fetch_secrets(peers: &Peers, addr: &str) -> Result<String, Error> {
    let reply = peers
        .cluster_client(addr)?
        .secrets(wharf_proto::cluster::Empty {})
        .await
        .map_err(Error::from_status)?;
    Ok(reply.into_inner().jwt_secret)
}

/// Asks the cluster (through the node at `addr`) to add this node, now that it serves Raft;
/// retrying for [`JOIN_WAIT`] while the cluster cannot be reached or has no leader. The answer
/// can be lost after the change was made (the node asked dies before it answers): this node's
/// own log then names it, and that is an answer too. Later attempts go to the leader this
/// node has learned of, if any.
pub async fn add_self(
    meta: &meta::Metadata,
    peers: &Peers,
    addr: &str,
    node_id: u64,
    node: &wharf_raft::WharfNode,
    learner: bool,
) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + JOIN_WAIT;
    let mut target = addr.to_string();
    loop {
        let asked = peers
            .cluster_client(&target)?
            .add_node(AddNodeRequest {
                node_id,
                peer_addr: node.peer_addr.clone(),
                http_addr: node.http_addr.clone(),
                learner,
            })
            .await;
        let status = match asked {
            Ok(_) => return Ok(()),
            Err(s) => s,
        };
        if meta.membership_names(node_id, !learner) {
            tracing::info!(
                node_id,
                "the cluster added this node (its answer was lost: {status})"
            );
            return Ok(());
        }
        let worth_retrying = matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        );
        if !worth_retrying || std::time::Instant::now() > deadline {
            return Err(Error::from_status(status));
        }
        tracing::info!(node_id, "asking {target} to add this node again: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if let Some(leader) = meta.leader_peer_addr() {
            target = leader;
        }
    }
}
