//! The Raft transport: openraft's RPCs over gRPC with mutual TLS, and the channel pool that the
//! cluster calls (forward, read index, status, membership) share with it.

// openraft's network trait dictates `RPCError` (a large type) as the error of every call.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use wharf_proto::cluster::cluster_service_client::ClusterServiceClient;
use wharf_proto::cluster::raft_service_client::RaftServiceClient;
use wharf_proto::cluster::{RaftRequest, SnapshotChunk};
use wharf_raft::{NodeId, TypeConfig, WharfNode};

use crate::Error;

/// gRPC messages may carry snapshot chunks and batches of log entries.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Channels to peers by address (one HTTP/2 connection each, multiplexed), and when each peer
/// last answered a Raft call.
#[derive(Clone)]
pub struct Peers {
    tls: ClientTlsConfig,
    /// Peer addresses dialled through another address (NAT, a fault-injection proxy).
    routes: Arc<HashMap<String, String>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    contacts: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Peers {
    pub fn new(tls: ClientTlsConfig) -> Self {
        Self {
            tls,
            routes: Arc::default(),
            channels: Arc::default(),
            contacts: Arc::default(),
        }
    }

    /// Dials each `advertised` address of `routes` at its `dial` address instead.
    pub fn with_routes(mut self, routes: HashMap<String, String>) -> Self {
        self.routes = Arc::new(routes);
        self
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("lock");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let dial = self.routes.get(addr).map_or(addr, String::as_str);
        let channel = endpoint(dial, self.tls.clone())?.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn cluster_client(&self, addr: &str) -> Result<ClusterServiceClient<Channel>, Error> {
        Ok(ClusterServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    fn touch(&self, node: NodeId) {
        self.contacts
            .lock()
            .expect("lock")
            .insert(node, Instant::now());
    }

    /// How long ago `node` last answered a Raft call from this node, if it ever did.
    pub fn since_contact(&self, node: NodeId) -> Option<Duration> {
        self.contacts
            .lock()
            .expect("lock")
            .get(&node)
            .map(|t| t.elapsed())
    }
}

pub fn endpoint(addr: &str, tls: ClientTlsConfig) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| Error::Unavailable(format!("bad peer address {addr:?}: {e}")))?
        .tls_config(tls)
        .map_err(|e| Error::Tls(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10)))
}

/// openraft's network factory: one [`PeerConn`] per target.
pub struct GrpcNetwork {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &WharfNode) -> PeerConn {
        PeerConn {
            target,
            addr: node.peer_addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

pub struct PeerConn {
    target: NodeId,
    addr: String,
    peers: Peers,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, WharfNode, E>>;

impl PeerConn {
    fn client<E: std::error::Error>(&self) -> RpcResult<RaftServiceClient<Channel>, E> {
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Decodes a peer's `Result<T, RaftError<E>>` reply.
    fn decode<T, E>(&self, json: &[u8]) -> RpcResult<T, RaftError<NodeId, E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.peers.touch(self.target);
        let r: Result<T, RaftError<NodeId, E>> =
            serde_json::from_slice(json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn request<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(option.hard_ttl());
    r
}

fn json<T: serde::Serialize, E: std::error::Error>(v: &T) -> RpcResult<Vec<u8>, E> {
    serde_json::to_vec(v).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// A peer that cannot be reached makes openraft back off; anything else is retried at once.
fn status_error<E: std::error::Error>(s: tonic::Status) -> RPCError<NodeId, WharfNode, E> {
    let e = Error::Unavailable(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let req = RaftRequest { json: json(&rpc)? };
        let reply = self
            .client()?
            .append_entries(request(req, &option))
            .await
            .map_err(status_error)?;
        self.decode(&reply.into_inner().json)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let chunk = SnapshotChunk {
            vote_json: json(&rpc.vote)?,
            meta_json: json(&rpc.meta)?,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let reply = self
            .client()?
            .install_snapshot(request(chunk, &option))
            .await
            .map_err(status_error)?;
        self.decode(&reply.into_inner().json)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let req = RaftRequest { json: json(&rpc)? };
        let reply = self
            .client()?
            .vote(request(req, &option))
            .await
            .map_err(status_error)?;
        self.decode(&reply.into_inner().json)
    }
}
