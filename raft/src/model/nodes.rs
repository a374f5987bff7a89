//! Cluster bookkeeping kept in the model: node ids, and chunks lost with a node.

use super::{ApplyResult, Chunk, Outcome, State};
use crate::kv::KvMut;

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
