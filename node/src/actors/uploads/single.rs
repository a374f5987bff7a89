//! A small file in one request: stream the body into staging while hashing, fsync, store it as
//! a whole object, then one `StoreFile` command reserves nothing, checks the quota and records
//! blob, file and upload at once. Nothing is recorded unless every check passed.

use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use wharf_proto::CreateUpload;
use wharf_raft::model::{Command, File, Tier};
use wharf_raft::Outcome;

use crate::actors::uploads::Ctx;
use crate::error::{Error, Result};
use crate::meta::now_ms;
use crate::store::ByteStream;

/// Where bodies of one-request uploads are received (a name no upload id can have, so the
/// staging sweep leaves it alone).
pub(super) const SINGLE_DIR: &str = ".single";

/// A whole file sent in one request.
pub struct SmallFile {
    pub owner: String,
    /// The folder and name policy the request asked for (none: the root, names kept both).
    pub placement: Option<wharf_raft::model::folders::Placement>,
    pub tier: Tier,
    pub name: String,
    pub mime: Option<String>,
    /// Whole-file BLAKE3 the client declared (query or `x-wharf-blake3`).
    pub blake3: Option<[u8; 32]>,
    /// From `Content-Digest: sha-256=:…:`.
    pub sha256: Option<[u8; 32]>,
    pub idempotency_key: Option<String>,
    pub content_length: Option<u64>,
    pub body: ByteStream,
    /// Another user (an editor) sends this new version of `owner`'s file: the state machine
    /// checks their role when it applies the store.
    pub editor: Option<Editor>,
}

/// Who sends a new version of a file shared with them, and which file.
pub struct Editor {
    pub actor: String,
    pub file_id: String,
}

fn too_large(max: u64) -> Error {
    Error::FileTooLarge(format!(
        "a one-request upload takes at most {max} bytes (upload.single_request_max); use an \
         upload session (POST /v1/uploads) for larger files"
    ))
}

pub(super) async fn store_small(ctx: &Ctx, f: SmallFile) -> Result<File> {
    let max = ctx.config.single_request_max;
    if f.content_length.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    // Before a byte moves: refuse what cannot fit (the length is known up front, or bounded).
    let declared = CreateUpload {
        name: f.name.clone(),
        size: f.content_length.unwrap_or(0),
        blake3: f.blake3.map(hex::encode),
        mime: f.mime.clone(),
        idempotency_key: f.idempotency_key.clone(),
        folder: None,
        on_conflict: None,
    };
    ctx.quota.check(f.owner.clone(), f.tier, declared).await?;
    // The body is staged until it is in the object store: it counts against
    // `upload.max_staging_bytes` like a chunk, at its declared length (or the most it may be),
    // for as long as this request holds `_room`.
    let bound = f.content_length.unwrap_or(max);
    let Some(_room) = ctx.staged.reserve(bound) else {
        let mut body = f.body;
        return Err(super::staging::staging_full(ctx, &mut body, bound).await);
    };

    let dir = ctx.staging.join(SINGLE_DIR);
    tokio::fs::create_dir_all(&dir).await?;
    let upload_id = uuid::Uuid::now_v7().to_string();
    let tmp = dir.join(&upload_id);
    let received = receive(&tmp, f.body, f.content_length, max).await;
    let (size, plain, sha) = match received {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let checked = (|| {
        if let Some(want) = f.blake3 {
            if hex::encode(want) != plain {
                return Err(Error::ChecksumMismatch(format!(
                    "the body's BLAKE3 is {plain}, the request declared {}",
                    hex::encode(want)
                )));
            }
        }
        if let Some(want) = f.sha256 {
            if sha != want {
                return Err(Error::ChecksumMismatch(
                    "the body's SHA-256 does not match Content-Digest".into(),
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = checked {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let object_key = format!("uploads/{upload_id}");
    let stored = ctx.store.put_object(&object_key, &tmp).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    stored?;
    let limits = ctx.quota.limits(f.tier);
    let store = Command::StoreFile {
        upload_id: upload_id.clone(),
        file_id: uuid::Uuid::now_v7().to_string(),
        owner: f.owner.clone(),
        tier: f.tier,
        limits,
        name: f.name,
        mime: f.mime,
        size,
        blake3: plain,
        idempotency_key: f.idempotency_key,
        object_key: object_key.clone(),
        scan: ctx.scanner.is_some(),
        now: now_ms(),
    };
    let owner = f.owner.clone();
    let cmd = match f.placement {
        Some(placement) => Command::Placed {
            placement,
            cmd: Box::new(store),
        },
        None => store,
    };
    let cmd = match f.editor {
        Some(e) => Command::AsUser {
            actor: e.actor,
            owner,
            file: e.file_id,
            need: wharf_raft::model::shares::Role::Editor,
            cmd: Box::new(cmd),
        },
        None => cmd,
    };
    let res = ctx.quota.propose(cmd).await;
    match res {
        Ok(Outcome::File(file)) => {
            if file.upload_id != upload_id {
                // A repeated idempotency key answered with the file it made before: nothing
                // points at this copy. (Same content stored before is the model's garbage.)
                let _ = ctx.store.delete(&object_key).await;
            }
            if let Some(s) = &ctx.scanner {
                s.kick();
            }
            Ok(file)
        }
        Ok(other) => Err(Error::Internal(format!("unexpected {other:?}"))),
        // Refused for certain: nothing points at the object. (If the outcome is unknown, keep
        // it: the command may still commit.)
        Err(e) if !matches!(e, Error::Unavailable(_)) => {
            let _ = ctx.store.delete(&object_key).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Streams the body into `path`, at most `max` bytes (exactly `declared` when given), fsyncs
/// it, and returns its length, BLAKE3 (hex) and SHA-256.
async fn receive(
    path: &std::path::Path,
    mut body: ByteStream,
    declared: Option<u64>,
    max: u64,
) -> Result<(u64, String, [u8; 32])> {
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await?);
    let mut hasher = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut written = 0u64;
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| super::staging::body_error(&e, written))?;
        written += frame.len() as u64;
        if written > max {
            return Err(too_large(max));
        }
        if declared.is_some_and(|d| written > d) {
            return Err(Error::bad_request(
                "length_mismatch",
                "the body is longer than its Content-Length",
            ));
        }
        hasher.update(&frame);
        sha.update(&frame);
        file.write_all(&frame).await?;
    }
    if let Some(d) = declared {
        if written != d {
            return Err(Error::bad_request(
                "incomplete_body",
                format!("the body ended after {written} of {d} bytes"),
            ));
        }
    }
    file.flush().await?;
    file.get_mut().sync_all().await?;
    Ok((
        written,
        hasher.finalize().to_hex().to_string(),
        sha.finalize().into(),
    ))
}
