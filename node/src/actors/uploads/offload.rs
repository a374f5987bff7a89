//! Offloading: moving staged chunks into the upload's object in the object store.

use wharf_raft::model::concat::Concat;
use wharf_raft::model::{Chunk, Command, UploadState};
use wharf_raft::Outcome;

use crate::actors::uploads::staging::staged_path;
use crate::actors::uploads::Ctx;
use crate::error::{Error, Result};

/// What an offload did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offloaded {
    /// The chunk is in the object store (or needs to be nowhere any more).
    Done,
    /// The chunk belongs to a tus partial upload no final upload has named yet: it stays
    /// staged until one does (then it becomes a part of the final's object).
    Parked,
}

/// Moves one staged chunk into the upload's multipart object (a partial upload's chunk: into
/// its final's), records its ETag, then frees the staged copy.
pub(super) async fn offload(
    ctx: &Ctx,
    owner: &str,
    upload_id: &str,
    index: u32,
) -> Result<Offloaded> {
    let path = staged_path(&ctx.staging, upload_id, index);
    let (target, key, multipart_id, part, whole) = {
        // Linearizable: on a follower, the ChunkStaged just committed through the leader may
        // not be applied here yet, and the chunk would wait for the next sweep.
        let applied = ctx.meta.linearizable().await?;
        let Some(up) = applied.upload_record(owner, upload_id) else {
            return Ok(Offloaded::Done);
        };
        let staged_here = matches!(applied.chunk(owner, upload_id, index),
            Chunk::Staged { node, .. } if node == ctx.meta.node_id);
        if up.state != UploadState::Uploading || !staged_here {
            return Ok(Offloaded::Done);
        }
        match applied.concat(owner, upload_id) {
            Some(Concat::Partial { into: None }) => return Ok(Offloaded::Parked),
            Some(Concat::Partial { into: Some(claim) }) => {
                let Some(fin) = applied.upload_record(owner, &claim.final_id) else {
                    return Ok(Offloaded::Done);
                };
                if fin.state != UploadState::Uploading {
                    return Ok(Offloaded::Done);
                }
                (
                    claim.final_id.clone(),
                    fin.object_key,
                    fin.multipart_id,
                    claim.first_part + index + 1,
                    false,
                )
            }
            _ => (
                upload_id.to_string(),
                up.object_key.clone(),
                up.multipart_id.clone(),
                index + 1,
                up.chunk_count() == 1,
            ),
        }
    };
    let etag = if whole {
        // A one-chunk file is the whole object: one PutObject, no multipart upload.
        ctx.store.put_object(&key, &path).await?
    } else {
        let multipart_id = ensure_multipart(ctx, owner, &target, &key, multipart_id).await?;
        ctx.store
            .upload_part(&key, &multipart_id, part, &path)
            .await?
    };
    let res = ctx
        .meta
        .propose(Command::ChunkOffloaded {
            owner: owner.to_string(),
            upload_id: upload_id.to_string(),
            index,
            etag,
            node: ctx.meta.node_id,
        })
        .await
        .map_err(Error::from);
    match res {
        Ok(_) | Err(Error::Conflict { .. }) => {
            let len = ctx.chunk_len_hint(owner, upload_id, index);
            ctx.staged.remove_staged(&path, len).await;
            Ok(Offloaded::Done)
        }
        Err(e) => Err(e),
    }
}

/// The upload's multipart upload in the object store: the one recorded in Raft, or a new one
/// (if another node recorded one first, that one wins and ours is dropped).
async fn ensure_multipart(
    ctx: &Ctx,
    owner: &str,
    upload_id: &str,
    key: &str,
    recorded: Option<String>,
) -> Result<String> {
    Ok(match recorded {
        Some(id) => id,
        None => {
            let mine = ctx.store.create_multipart(key).await?;
            let cmd = Command::MultipartCreated {
                owner: owner.to_string(),
                upload_id: upload_id.to_string(),
                multipart_id: mine.clone(),
            };
            match ctx.meta.propose(cmd).await.map_err(Error::from)? {
                Outcome::MultipartId(id) => {
                    if id != mine {
                        // Another offload recorded its multipart upload first.
                        ctx.store.abort_multipart(key, &mine).await?;
                    }
                    id
                }
                other => return Err(Error::Internal(format!("unexpected {other:?}"))),
            }
        }
    })
}
