//! wharf-raft: the metadata model and its Raft storage.
//!
//! - [`model`]: the deterministic state machine (`apply` is a pure function over [`kv`]).
//! - [`kv`]: the storage interface the model reads and writes through, and an in-memory store.
//! - [`store`]: openraft's storage-v2 traits over one fjall database; snapshots as files.
//! - [`codec`]: the versioned encoding of everything written.
//!
//! This crate knows nothing of HTTP, QUIC, S3, gRPC or actors.

pub mod codec;
pub mod kv;
pub mod model;
pub mod store;

use serde::{Deserialize, Serialize};

pub use model::{apply, Command, ModelError, Outcome, State};
pub use store::{open, LogStore, Options, StateMachineStore, StateView};

pub type NodeId = u64;

/// A command in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Command);

/// What applying a log entry answered; a refused command is a normal answer, not a Raft error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Result<Outcome, ModelError>);

/// What the cluster knows of a node: where peers dial it, and its HTTP API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WharfNode {
    pub peer_addr: String,
    pub http_addr: String,
}

impl std::fmt::Display for WharfNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} http {}", self.peer_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// wharf's openraft type configuration. Snapshots are files, streamed in both directions.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = WharfNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata database: {0}")]
    Store(#[from] fjall::Error),
    #[error("metadata database of format version 1: {0}")]
    Sled(#[from] sled::Error),
    #[error("metadata file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt metadata record: {0}")]
    Decode(#[from] postcard::Error),
    #[error("unreadable version-0 metadata: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Format(String),
}
