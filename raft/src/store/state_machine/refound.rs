//! `refound`: a restored backup's state made the state of a new one-node cluster (see
//! `wharf cluster restore`).

use openraft::StoredMembership;

use super::{StateMachineStore, TreeKv, MEMBERSHIP};
use crate::codec;
use crate::kv::{KvMut, Overlay};
use crate::model::{self, State};
use crate::{NodeId, WharfNode};

impl StateMachineStore {
    /// Makes the state, as a restored backup left it, the state of a new one-node cluster
    /// founded by `founder` at `node`: `cmds` (the old cluster's leftovers: its nodes and join
    /// tokens) apply outside the log, with no events or audit records; the founder is noted
    /// as a member; the membership becomes the founder alone, at the applied log id.
    pub fn refound(
        &self,
        cmds: Vec<model::Command>,
        founder: NodeId,
        node: WharfNode,
    ) -> Result<(), crate::Error> {
        let (applied, _) = self.inner.applied()?;
        let base = TreeKv::for_apply(self.inner.db.state.clone(), self.inner.hints.clone());
        let mut state = State::new(Overlay::new(base.clone()));
        for cmd in cmds {
            // A leftover already gone (a token expired, a node removed) is nothing to undo.
            let _ = model::apply(&mut state, cmd);
        }
        model::note_member_ids(&mut state, founder);
        model::note_members(
            &mut state,
            &[(founder, node.peer_addr.clone(), node.http_addr.clone())],
        );
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([founder])],
            std::collections::BTreeMap::from([(founder, node)]),
        );
        let stored = StoredMembership::new(applied, membership);
        state.kv_mut().put(MEMBERSHIP, codec::encode(&stored));
        if let Some(e) = base.take_error() {
            return Err(e.into());
        }
        let (writes, read) = state.into_kv().into_parts();
        self.inner.commit(writes, read)?;
        Ok(())
    }
}
