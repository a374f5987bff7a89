//! A tus upload's tail: the bytes of a chunk not yet whole (a PATCH ended or broke off inside
//! it), kept in the object store and recorded by `TusTail`, so that the next PATCH continues
//! from them on any node.

use std::path::PathBuf;

use wharf_raft::model::{self, Command};

use crate::actors::uploads::Ctx;
use crate::error::Result;
use crate::meta::now_ms;

/// The first `len` bytes of chunk `index`, in the file at `path` (the caller's to remove).
pub struct Tail {
    pub owner: String,
    pub upload_id: String,
    pub index: u32,
    pub len: u64,
    pub path: PathBuf,
}

/// Stores the tail under a key of its own (the tail it replaces may still be read) and records
/// it. Refused (a racing PATCH recorded a longer one first), the copy is deleted again.
pub(super) async fn keep_tail(ctx: &Ctx, t: Tail) -> Result<()> {
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    let object_key = model::tus::tail_key(&t.upload_id, t.index, t.len, &nonce);
    ctx.store.put_object(&object_key, &t.path).await?;
    let recorded = ctx
        .meta
        .propose(Command::TusTail {
            owner: t.owner,
            upload_id: t.upload_id,
            index: t.index,
            len: t.len,
            object_key: object_key.clone(),
            now: now_ms(),
        })
        .await;
    match recorded {
        Ok(_) => Ok(()),
        // Refused for certain: nothing points at the copy. (With the outcome unknown it may
        // have committed: then it stays, and the upload's end hands it to the collector.)
        Err(wharf_cluster::Error::Model(e)) => {
            let _ = ctx.store.delete(&object_key).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
