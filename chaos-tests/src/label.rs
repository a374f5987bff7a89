//! How reports name nodes: the node in slot `slot` (0-based in the code) is n1..nN everywhere
//! a person or a tool reads it (schedule.json, the history, the summary, verdict.json, the
//! timeline, log and namespace names). A module of its own, below both the cluster and the
//! network namespaces that use it.

/// The number a report gives the node in slot `slot`.
pub fn node_number(slot: usize) -> usize {
    slot + 1
}

/// `n<number>`: the node in slot `slot`, as the timeline and messages name it.
pub fn node_label(slot: usize) -> String {
    format!("n{}", node_number(slot))
}
