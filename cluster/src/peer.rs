//! Who a gRPC call comes from: [`PeerCheck`], the interceptor in front of both services,
//! reads the node id from the caller's certificate and refuses it, before the message is
//! decoded, unless the cluster trusts that node ([`Metadata::peer_trusted`]); and the checks
//! that a call acting for a node comes from that node.

use std::sync::Arc;

use openraft::Vote;
use tonic::{Request, Status};
use wharf_raft::model::Command;
use wharf_raft::NodeId;

use crate::meta::Metadata;
use crate::tls;

/// The node a call comes from, as its certificate names it (set by [`PeerCheck`]).
#[derive(Clone, Copy, Debug)]
pub struct PeerNode(pub NodeId);

/// Checks the certificate a call comes with, before its message is decoded: rustls has
/// checked it against the cluster CA; here it must name a node the cluster trusts.
#[derive(Clone)]
pub struct PeerCheck {
    meta: Metadata,
    seed: Arc<tls::Seed>,
    /// Refuse calls without a certificate here (every Raft RPC), rather than in the handler
    /// (the cluster service, whose Join and JoinStatus come without one).
    certificate_required: bool,
}

impl PeerCheck {
    pub fn new(meta: Metadata, seed: tls::Seed, certificate_required: bool) -> Self {
        Self {
            meta,
            seed: Arc::new(seed),
            certificate_required,
        }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<Option<NodeId>, Status> {
        let cert = req.peer_certs().and_then(|c| c.first().cloned());
        let Some(cert) = cert else {
            if self.certificate_required {
                return Err(Status::unauthenticated(
                    "a certificate signed by the cluster CA is required",
                ));
            }
            return Ok(None);
        };
        let id = tls::cert_node_id(cert.as_ref()).ok_or_else(|| {
            Status::unauthenticated("the certificate names no node of this cluster")
        })?;
        if !self.meta.peer_trusted(id, cert.as_ref(), &self.seed) {
            return Err(Status::permission_denied(format!(
                "node {id} is not a member of this cluster (removed, or never admitted)"
            )));
        }
        Ok(Some(id))
    }
}

impl tonic::service::Interceptor for PeerCheck {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(id) = self.check(&req)? {
            req.extensions_mut().insert(PeerNode(id));
        }
        Ok(req)
    }
}

/// The calling node; calls without a (trusted) certificate are refused.
pub(crate) fn peer<T>(req: &Request<T>) -> Result<NodeId, Status> {
    req.extensions()
        .get::<PeerNode>()
        .map(|p| p.0)
        .ok_or_else(|| {
            Status::unauthenticated("a certificate signed by the cluster CA is required")
        })
}

/// A call that acts for `claimed` must come from that node's certificate.
pub(crate) fn acting_as(from: NodeId, claimed: Option<NodeId>) -> Result<(), Status> {
    match claimed {
        Some(c) if c != from => Err(Status::permission_denied(format!(
            "node {from}'s certificate cannot act as node {c}"
        ))),
        _ => Ok(()),
    }
}

/// The node a command is on behalf of, when it names one.
pub(crate) fn command_node(cmd: &Command) -> Option<NodeId> {
    match cmd {
        Command::Once { cmd, .. } => command_node(cmd),
        // The node that took the request is the one forwarding it; a command for another
        // node inside names two nodes, and no caller is both.
        Command::Via { origin, cmd } => match command_node(cmd) {
            Some(n) if n != origin.node => Some(NodeId::MAX),
            _ => Some(origin.node),
        },
        Command::ChunkStaged { node, .. }
        | Command::ChunkOffloaded { node, .. }
        | Command::RecordDownloads { node, .. } => Some(*node),
        Command::LeaseScan { holder, .. } | Command::ScanFinished { holder, .. } => Some(*holder),
        _ => None,
    }
}

pub(crate) fn vote_node(v: &Vote<NodeId>) -> Option<NodeId> {
    v.leader_id().voted_for()
}
