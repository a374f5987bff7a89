//! How the node finds and trusts its cluster, and its Raft: `cluster`, `raft`.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::MIB;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where this node serves gRPC to its peers (mutual TLS).
    pub peer_addr: SocketAddr,
    /// What peers dial to reach this node; empty means the bound `peer_addr`.
    pub advertise_addr: String,
    /// A member's peer address to join through on first start (with `token`).
    pub join: String,
    /// The join token (`wharf cluster token`). Prefer `token_file` or `WHARF_CLUSTER_TOKEN`:
    /// a command-line argument is visible to every user of the machine.
    pub token: String,
    /// A file holding the join token.
    pub token_file: String,
    /// How long a joining node waits for a holder of the CA key to sign its certificate.
    pub sign_wait_secs: u64,
    /// Join as a learner and stay one until `wharf cluster promote`.
    pub learner: bool,
    /// A chunk staged only on a node unreachable for this long counts as missing again.
    pub staging_grace_secs: u64,
    /// Peers dialled through another address: `advertised=dial,…` (NAT, or the chaos
    /// harness's fault-injection proxies). Empty: dial what peers advertise.
    pub peer_routes: String,
}

impl ClusterConfig {
    /// The join token, from `token` or read from `token_file`.
    pub fn join_token(&self) -> anyhow::Result<String> {
        if !self.token_file.is_empty() {
            let t = std::fs::read_to_string(&self.token_file)
                .with_context(|| format!("reading the join token from {}", self.token_file))?;
            return Ok(t.trim().to_string());
        }
        Ok(self.token.trim().to_string())
    }

    /// `peer_routes` as a map from advertised address to dialled address.
    pub fn routes(&self) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let mut routes = std::collections::HashMap::new();
        for pair in self
            .peer_routes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((from, to)) = pair.split_once('=') else {
                bail!("cluster.peer_routes: {pair:?} is not advertised=dial");
            };
            routes.insert(from.trim().to_string(), to.trim().to_string());
        }
        Ok(routes)
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peer_addr: "127.0.0.1:7080".parse().expect("valid address"),
            advertise_addr: String::new(),
            join: String::new(),
            token: String::new(),
            token_file: String::new(),
            sign_wait_secs: 600,
            learner: false,
            staging_grace_secs: 300,
            peer_routes: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) after this many entries. A snapshot
    /// reads the whole state: not too often.
    pub snapshot_every: u64,
    /// The metadata store's block caches, in bytes: with its 8 MiB write buffers per
    /// keyspace, what bounds the metadata's memory.
    pub cache_capacity: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_every: 100_000,
            cache_capacity: 32 * MIB,
        }
    }
}
