//! Cluster bookkeeping kept in the model: node ids and records (admitted, certified,
//! removed), join tokens, and chunks lost with a node.

use serde::{Deserialize, Serialize};

use super::{ApplyResult, Chunk, Millis, ModelError, Outcome, State};
use crate::kv::{Kv, KvMut};

/// A committed membership names node ids up to `highest`: none of them is handed out again.
pub fn note_member_ids<K: KvMut>(state: &mut State<K>, highest: u64) {
    if highest > state.last_node_id() {
        state.set_last_node_id(highest);
    }
}

pub(super) fn allocate_id<K: KvMut>(state: &mut State<K>, min: u64) -> ApplyResult {
    let id = min.max(state.last_node_id() + 1);
    state.set_last_node_id(id);
    Ok(Outcome::NodeId(id))
}

/// The chunks only `node` held count as missing again.
pub(super) fn lost<K: KvMut>(state: &mut State<K>, node: u64) -> ApplyResult {
    let mut lost = 0;
    for (owner, id) in state.open_upload_ids(None, usize::MAX) {
        for (index, c) in state.held_chunks(&owner, &id) {
            if matches!(c, Chunk::Staged { node: n, .. } if n == node) {
                state.put_chunk(&owner, &id, index, &Chunk::Missing);
                lost += 1;
            }
        }
    }
    Ok(Outcome::ChunksLost(lost))
}

/// A join token as the cluster keeps it: the BLAKE3 of its secret, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    /// Hex BLAKE3 of the token's secret part.
    pub secret_hash: String,
    /// Joins it still admits.
    pub uses_left: u32,
    pub expires_at: Millis,
    pub created_at: Millis,
}

/// A node the cluster admitted (by a join token) or found in a membership (the founder).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub peer_addr: String,
    pub http_addr: String,
    /// When a join admitted it; 0 for a node first seen in a membership.
    pub admitted_at: Millis,
    /// The token it joined with, and that token's secret hash (what lets the joiner ask for
    /// its certificate later).
    pub token_id: Option<String>,
    pub token_hash: Option<String>,
    /// Its certificate signing request (kept: a retried join is recognised by it).
    pub csr_pem: Option<String>,
    /// The certificate it was issued: the only one accepted for it.
    pub cert_pem: Option<String>,
    /// Removed from the cluster: its certificate is refused from then on, on every node.
    pub removed: bool,
}

impl<K: Kv> State<K> {
    pub fn join_token(&self, id: &str) -> Option<JoinToken> {
        self.read_at(&token_key(id))
    }

    pub fn join_tokens(&self) -> Vec<JoinToken> {
        self.keys_under(TOKENS, usize::MAX)
            .iter()
            .filter_map(|k| self.read_at(k))
            .collect()
    }

    pub fn node(&self, id: u64) -> Option<NodeRecord> {
        self.read_at(&node_key(id))
    }

    /// Every node record, by id.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.keys_under(NODES, usize::MAX)
            .iter()
            .filter_map(|k| self.read_at(k))
            .collect()
    }
}

const TOKENS: &[u8] = b"jt/";
const NODES: &[u8] = b"nd/";

fn token_key(id: &str) -> Vec<u8> {
    format!("jt/{id}").into_bytes()
}

fn node_key(id: u64) -> Vec<u8> {
    format!("nd/{id:020}").into_bytes()
}

/// Secret hashes compared in constant time (BLAKE3's `Hash` equality is).
fn same_hash(a: &str, b: &str) -> bool {
    match (blake3::Hash::from_hex(a), blake3::Hash::from_hex(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn refused(msg: &str) -> ModelError {
    ModelError::JoinRefused(msg.to_string())
}

pub(super) fn create_token<K: KvMut>(state: &mut State<K>, t: JoinToken) -> ApplyResult {
    if t.id.is_empty() || t.id.contains('/') || blake3::Hash::from_hex(&t.secret_hash).is_err() {
        return Err(ModelError::Invalid("malformed join token".into()));
    }
    if state.join_token(&t.id).is_some() {
        return Err(ModelError::Invalid(
            "a join token with this id exists".into(),
        ));
    }
    if t.uses_left == 0 {
        return Err(ModelError::Invalid(
            "a join token admits at least one join".into(),
        ));
    }
    state.write_at(&token_key(&t.id), &t);
    Ok(Outcome::Done)
}

pub(super) fn revoke_token<K: KvMut>(state: &mut State<K>, id: &str) -> ApplyResult {
    if state.join_token(id).is_none() {
        return Err(ModelError::NotFound);
    }
    state.delete_at(&token_key(id));
    Ok(Outcome::Done)
}

/// Checks a join token (its secret hash, expiry and uses) without consuming it.
pub fn check_token<K: Kv>(
    state: &State<K>,
    id: &str,
    secret_hash: &str,
    now: Millis,
) -> Result<JoinToken, ModelError> {
    let t = state
        .join_token(id)
        .ok_or_else(|| refused("the join token is not valid for this cluster"))?;
    if !same_hash(&t.secret_hash, secret_hash) {
        return Err(refused("the join token is not valid for this cluster"));
    }
    if t.expires_at <= now {
        return Err(refused("the join token has expired"));
    }
    if t.uses_left == 0 {
        return Err(refused("the join token has been used up"));
    }
    Ok(t)
}

pub(super) struct Admission {
    pub token_id: String,
    pub secret_hash: String,
    pub min: u64,
    pub peer_addr: String,
    pub http_addr: String,
    pub csr_pem: String,
    pub now: Millis,
}

/// The node a join with this token and signing request already admitted (a join retried
/// after its answer was lost, or a joiner restarted while it waited for its certificate).
pub fn admitted_by<K: Kv>(
    state: &State<K>,
    token_id: &str,
    secret_hash: &str,
    csr_pem: &str,
) -> Option<NodeRecord> {
    state.nodes().into_iter().find(|n| {
        !n.removed
            && n.token_id.as_deref() == Some(token_id)
            && n.token_hash
                .as_deref()
                .is_some_and(|h| same_hash(h, secret_hash))
            && n.csr_pem.as_deref() == Some(csr_pem)
    })
}

/// Consumes one use of a join token and admits a new node under a new id; the same join
/// again gets the same node, and consumes nothing.
pub(super) fn admit<K: KvMut>(state: &mut State<K>, a: Admission) -> ApplyResult {
    if let Some(n) = admitted_by(state, &a.token_id, &a.secret_hash, &a.csr_pem) {
        return Ok(Outcome::NodeId(n.id));
    }
    let mut t = check_token(state, &a.token_id, &a.secret_hash, a.now)?;
    t.uses_left -= 1;
    if t.uses_left == 0 {
        state.delete_at(&token_key(&t.id));
    } else {
        state.write_at(&token_key(&t.id), &t);
    }
    let Ok(Outcome::NodeId(id)) = allocate_id(state, a.min) else {
        unreachable!("allocating an id cannot fail");
    };
    let record = NodeRecord {
        id,
        peer_addr: a.peer_addr,
        http_addr: a.http_addr,
        admitted_at: a.now,
        token_id: Some(a.token_id),
        token_hash: Some(a.secret_hash),
        csr_pem: Some(a.csr_pem),
        cert_pem: None,
        removed: false,
    };
    state.write_at(&node_key(id), &record);
    Ok(Outcome::NodeId(id))
}

/// The certificate a holder of the CA key signed for an admitted node.
pub(super) fn cert_issued<K: KvMut>(
    state: &mut State<K>,
    node: u64,
    cert_pem: String,
) -> ApplyResult {
    let Some(mut n) = state.node(node) else {
        return Err(ModelError::NotFound);
    };
    if n.removed {
        return Err(refused("the node was removed from the cluster"));
    }
    if n.cert_pem.is_none() {
        n.cert_pem = Some(cert_pem);
        state.write_at(&node_key(node), &n);
    }
    Ok(Outcome::Done)
}

/// Marks a node removed: from this entry on, every node refuses its certificate.
pub(super) fn remove<K: KvMut>(state: &mut State<K>, node: u64) -> ApplyResult {
    let mut n = state.node(node).unwrap_or(NodeRecord {
        id: node,
        ..NodeRecord::default()
    });
    n.removed = true;
    n.csr_pem = None;
    state.write_at(&node_key(node), &n);
    note_member_ids(state, node);
    Ok(Outcome::Done)
}

/// The nodes a membership names get a record if they have none (the founder, and nodes of
/// clusters made before records existed); a removed node stays removed.
pub fn note_members<K: KvMut>(state: &mut State<K>, members: &[(u64, String, String)]) {
    for (id, peer_addr, http_addr) in members {
        if state.node(*id).is_none() {
            let n = NodeRecord {
                id: *id,
                peer_addr: peer_addr.clone(),
                http_addr: http_addr.clone(),
                ..NodeRecord::default()
            };
            state.write_at(&node_key(*id), &n);
        }
    }
}
