//! Completing a tus final upload: its partial uploads' chunks, offloaded by the nodes that hold
//! them as parts of the final's multipart upload, become its object; the object is read back
//! once for its BLAKE3 and the file is recorded.

use std::time::{Duration, Instant};

use futures::StreamExt;
use wharf_raft::model::concat::Concat;
use wharf_raft::model::{Chunk, Command, File, UploadState};

use crate::actors::uploads::complete::{complete_object, record_file};
use crate::actors::uploads::Ctx;
use crate::error::{Error, Result};
use crate::meta::now_ms;

/// Completes the final upload `final_id` once every byte of its partials is in the object
/// store (waiting up to `upload.complete_wait_secs` for the offloads under way).
pub(super) async fn complete_final(ctx: &Ctx, owner: &str, final_id: &str) -> Result<File> {
    let deadline = Instant::now() + Duration::from_secs(ctx.config.complete_wait_secs);
    let mut first = true;
    let (up, partials, parts) = loop {
        {
            let applied = if first {
                ctx.meta.linearizable().await?
            } else {
                ctx.meta.local()
            };
            first = false;
            let up = applied
                .upload_record(owner, final_id)
                .ok_or(Error::NotFound)?;
            match up.state {
                UploadState::Uploading => {}
                UploadState::Stored => {
                    let fid = up.file_id.as_deref().unwrap_or_default();
                    return applied.file(owner, fid).ok_or(Error::NotFound);
                }
                other => {
                    return Err(Error::conflict(
                        "upload_not_active",
                        format!("upload is {}", other.as_str()),
                    ))
                }
            }
            let Some(Concat::Final { partials, .. }) = applied.concat(owner, final_id) else {
                return Err(Error::Internal(format!("{final_id} is not a final upload")));
            };
            let mut parts = Vec::new();
            let (mut offloading, mut unfinished) = (false, Vec::new());
            for id in &partials {
                let p = applied.upload(owner, id).ok_or(Error::NotFound)?;
                let Some(Concat::Partial { into: Some(claim) }) = applied.concat(owner, id) else {
                    return Err(Error::Internal(format!(
                        "{id} is not claimed by {final_id}"
                    )));
                };
                if p.state != UploadState::Uploading {
                    return Err(Error::conflict(
                        "upload_not_active",
                        format!("partial upload {id} is {}", p.state.as_str()),
                    ));
                }
                for (i, c) in (0u32..).zip(&p.chunks) {
                    match c {
                        Chunk::Offloaded { etag, .. } => {
                            parts.push((claim.first_part + i + 1, etag.clone()))
                        }
                        Chunk::Staged { .. } => offloading = true,
                        Chunk::Missing => {
                            if !unfinished.contains(id) {
                                unfinished.push(id.clone());
                            }
                        }
                    }
                }
            }
            if !unfinished.is_empty() {
                return Err(Error::conflict(
                    "partials_unfinished",
                    format!(
                        "partial uploads {} still miss bytes; the final completes when they are whole",
                        unfinished.join(", ")
                    ),
                ));
            }
            if !offloading {
                break (up, partials, parts);
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(
                "chunks are still being moved to the object store; retry".into(),
            ));
        }
        ctx.meta.changed(Duration::from_millis(500)).await;
    };
    if parts.is_empty() {
        // Partials of no bytes at all: an empty object.
        let spool = ctx.staging.join(super::single::SINGLE_DIR);
        tokio::fs::create_dir_all(&spool).await?;
        let empty = spool.join(format!("{final_id}.empty"));
        tokio::fs::write(&empty, b"").await?;
        let put = ctx.store.put_object(&up.object_key, &empty).await;
        let _ = tokio::fs::remove_file(&empty).await;
        put?;
    } else if let Some(f) = complete_object(ctx, &up, &parts).await? {
        return Ok(f);
    }
    // The chunks' hashes were taken at their offsets in the partials, not in the final: the
    // whole file's BLAKE3 is read back from the object, once.
    let blake3 = hash_object(ctx, &up.object_key, up.size).await?;
    let cmd = Command::CompleteTusFinal {
        owner: owner.to_string(),
        upload_id: final_id.to_string(),
        file_id: uuid::Uuid::now_v7().to_string(),
        blake3,
        scan: ctx.scanner.is_some(),
        now: now_ms(),
    };
    let partials: Vec<&str> = partials.iter().map(String::as_str).collect();
    record_file(ctx, cmd, &partials).await
}

/// The BLAKE3 of the object at `key`, which must be `size` bytes long.
async fn hash_object(ctx: &Ctx, key: &str, size: u64) -> Result<String> {
    let mut body = ctx.store.get(key, 0, size).await?;
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    while let Some(bytes) = body.next().await {
        let bytes = bytes?;
        read += bytes.len() as u64;
        hasher.update(&bytes);
    }
    if read != size {
        return Err(Error::Internal(format!(
            "the concatenated object {key} has {read} bytes, not {size}"
        )));
    }
    Ok(hasher.finalize().to_hex().to_string())
}
