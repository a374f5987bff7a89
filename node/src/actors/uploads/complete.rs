//! Completing an upload (every chunk offloaded, the whole-file BLAKE3 checked, the file
//! recorded) and aborting one.

use std::time::{Duration, Instant};

use wharf_proto::hash;
use wharf_raft::model::concat::Concat;
use wharf_raft::model::{Chunk, Command, File, Upload, UploadState};
use wharf_raft::Outcome;

use crate::actors::uploads::gauge::remove_upload_dir;
use crate::actors::uploads::Ctx;
use crate::error::{Error, Result};
use crate::meta::now_ms;

/// Completes an upload: waits until every chunk is in the object store, checks the whole-file
/// BLAKE3 (combined from the chunks' subtree hashes), completes the multipart object and
/// records the file.
pub(super) async fn complete(ctx: &Ctx, owner: &str, upload_id: &str) -> Result<File> {
    let deadline = Instant::now() + Duration::from_secs(ctx.config.complete_wait_secs);
    let mut first = true;
    let up = loop {
        let (up, concat) = {
            let applied = if first {
                ctx.meta.linearizable().await?
            } else {
                ctx.meta.local()
            };
            let state = &applied;
            let up = state.upload(owner, upload_id).ok_or(Error::NotFound)?;
            let concat = first.then(|| state.concat(owner, upload_id)).flatten();
            match up.state {
                UploadState::Uploading => (up, concat),
                UploadState::Stored => {
                    let fid = up.file_id.as_deref().unwrap_or_default();
                    return state.file(owner, fid).ok_or(Error::NotFound);
                }
                other => {
                    return Err(Error::conflict(
                        "upload_not_active",
                        format!("upload is {}", other.as_str()),
                    ))
                }
            }
        };
        first = false;
        match concat {
            Some(Concat::Final { .. }) => {
                return super::concat::complete_final(ctx, owner, upload_id).await
            }
            Some(Concat::Partial { .. }) => {
                return Err(Error::bad_request(
                    "invalid_concat",
                    "a tus partial upload becomes a file only through a final upload",
                ))
            }
            None => {}
        }
        let missing = up.missing();
        if !missing.is_empty() {
            return Err(Error::MissingChunks(missing));
        }
        if up
            .chunks
            .iter()
            .all(|c| matches!(c, Chunk::Offloaded { .. }))
        {
            break up;
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(
                "chunks are still being moved to the object store; retry".into(),
            ));
        }
        ctx.meta.changed(Duration::from_millis(500)).await;
    };
    let mut parts = Vec::with_capacity(up.chunks.len());
    let mut hashes = Vec::with_capacity(up.chunks.len());
    for (i, c) in (1u32..).zip(&up.chunks) {
        if let Chunk::Offloaded {
            etag, blake3, cv, ..
        } = c
        {
            parts.push((i, etag.clone()));
            hashes.push((blake3.as_str(), cv.as_str()));
        }
    }
    let whole = hash::whole_file(&hashes).map_err(Error::Internal)?;
    if let Some(expected) = &up.expected_blake3 {
        if *expected != whole {
            return Err(Error::ChecksumMismatch(format!(
                "the file's BLAKE3 is {whole}, the upload declared {expected}"
            )));
        }
    }
    // A one-chunk file went in whole with PutObject when it was offloaded.
    if parts.len() > 1 {
        if let Some(f) = complete_object(ctx, &up, &parts).await? {
            return Ok(f);
        }
    }
    let cmd = Command::CompleteUpload {
        owner: owner.to_string(),
        upload_id: upload_id.to_string(),
        file_id: uuid::Uuid::now_v7().to_string(),
        blake3: whole,
        scan: ctx.scanner.is_some(),
        now: now_ms(),
    };
    record_file(ctx, cmd, &[upload_id]).await
}

/// Completes `up`'s multipart object from `parts`. `Some(file)`: another completion of the same
/// upload (on another node, or one a tus HEAD started) finished the object first, and its file
/// is this call's answer too.
pub(super) async fn complete_object(
    ctx: &Ctx,
    up: &Upload,
    parts: &[(u32, String)],
) -> Result<Option<File>> {
    let multipart_id = up
        .multipart_id
        .as_deref()
        .ok_or_else(|| Error::Internal("offloaded upload has no multipart id".into()))?;
    match ctx
        .store
        .complete_multipart(&up.object_key, multipart_id, parts)
        .await
    {
        Ok(()) => Ok(None),
        Err(e) => match stored_file(ctx, &up.owner, &up.id).await {
            Some(f) => Ok(Some(f)),
            None => Err(e.into()),
        },
    }
}

/// Proposes the command that records a completed upload's file, wakes the scanner and frees
/// the staging of the uploads whose chunks made it.
pub(super) async fn record_file(ctx: &Ctx, cmd: Command, staged: &[&str]) -> Result<File> {
    let out = ctx.quota.propose(cmd).await?;
    if let Some(s) = &ctx.scanner {
        s.kick();
    }
    for id in staged {
        remove_upload_dir(&ctx.staged, &ctx.staging.join(id)).await;
    }
    match out {
        Outcome::File(f) => Ok(f),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

/// The file of the upload, if it is stored by now (as the leader knows it).
async fn stored_file(ctx: &Ctx, owner: &str, upload_id: &str) -> Option<File> {
    let applied = ctx.meta.linearizable().await.ok()?;
    let up = applied.upload_record(owner, upload_id)?;
    if up.state != UploadState::Stored {
        return None;
    }
    applied.file(owner, up.file_id.as_deref()?)
}

pub(super) async fn abort(ctx: &Ctx, owner: &str, upload_id: &str) -> Result<Upload> {
    let out = ctx
        .quota
        .propose(Command::AbortUpload {
            owner: owner.to_string(),
            upload_id: upload_id.to_string(),
            now: now_ms(),
        })
        .await?;
    // The object and multipart upload go to the garbage collector; staging is freed here.
    remove_upload_dir(&ctx.staged, &ctx.staging.join(upload_id)).await;
    match out {
        Outcome::Upload(u) => Ok(u),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}
