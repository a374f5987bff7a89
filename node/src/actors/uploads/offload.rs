//! Offloading: moving staged chunks into the upload's object in the object store.

use wharf_raft::model::{Chunk, Command, UploadState};
use wharf_raft::Outcome;

use crate::actors::uploads::staging::staged_path;
use crate::actors::uploads::Ctx;
use crate::error::{Error, Result};

/// Moves one staged chunk into the upload's multipart object, records its ETag, then frees the
/// staged copy.
pub(super) async fn offload(ctx: &Ctx, owner: &str, upload_id: &str, index: u32) -> Result<()> {
    let path = staged_path(&ctx.staging, upload_id, index);
    let (key, multipart_id, whole) = {
        // Linearizable: on a follower, the ChunkStaged just committed through the leader may
        // not be applied here yet, and the chunk would wait for the next sweep.
        let applied = ctx.meta.linearizable().await?;
        let Some(up) = applied.upload_record(owner, upload_id) else {
            return Ok(());
        };
        let staged_here = matches!(applied.chunk(owner, upload_id, index),
            Chunk::Staged { node, .. } if node == ctx.meta.node_id);
        if up.state != UploadState::Uploading || !staged_here {
            return Ok(());
        }
        (
            up.object_key.clone(),
            up.multipart_id.clone(),
            up.chunk_count() == 1,
        )
    };
    let etag = if whole {
        // A one-chunk file is the whole object: one PutObject, no multipart upload.
        ctx.store.put_object(&key, &path).await?
    } else {
        let multipart_id = ensure_multipart(ctx, owner, upload_id, &key, multipart_id).await?;
        ctx.store
            .upload_part(&key, &multipart_id, index + 1, &path)
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
            Ok(())
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
