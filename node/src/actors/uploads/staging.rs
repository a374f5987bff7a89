//! Receiving a chunk: stream it into staging while hashing, verify it, record `ChunkStaged`.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use wharf_proto::hash::ChunkHasher;
use wharf_raft::model::{Command, UploadState};

use crate::actors::uploads::{ChunkPut, Ctx, Received};
use crate::error::{Error, Result};
use crate::meta::now_ms;
use crate::store::{sync_dir, ByteStream};

const WRITE_BUF: usize = 1 << 20;

pub(super) fn staged_path(staging: &Path, upload_id: &str, index: u32) -> PathBuf {
    staging.join(upload_id).join(index.to_string())
}

/// Receives one chunk: stream to a temporary file while hashing, fsync, verify, rename, record
/// `ChunkStaged` in Raft. Nothing is recorded unless every check passed.
pub(super) async fn stage_chunk(ctx: &Ctx, put: ChunkPut) -> Result<Received> {
    let (owner, upload_id) = (put.owner.clone(), put.upload_id.clone());
    let received = match receive_chunk(ctx, put).await {
        // An abort or expiry that removed the upload's staging directory under this chunk.
        Err(Error::Store(e)) => match ctx.meta.local().upload(&owner, &upload_id) {
            Some(up) if up.state != UploadState::Uploading => Err(Error::conflict(
                "upload_not_active",
                format!("upload is {}", up.state.as_str()),
            )),
            None => Err(Error::NotFound),
            _ => Err(Error::Store(e)),
        },
        other => other,
    };
    // Counted by the code the client is answered with.
    if let Err(e) = &received {
        let (_, code) = e.status_and_code();
        metrics::counter!("wharf_chunks_failed_total", "code" => code).increment(1);
    }
    received
}

/// What a failed body read means for the client: it stalled, was taken over, or broke off.
pub(super) fn body_error(e: &std::io::Error, written: u64) -> Error {
    match e.kind() {
        std::io::ErrorKind::TimedOut => Error::BodyTimeout(format!(
            "the body stalled after {written} bytes ({e}); nothing of it was kept"
        )),
        std::io::ErrorKind::Interrupted => Error::conflict("chunk_taken_over", e.to_string()),
        _ => Error::bad_request(
            "incomplete_body",
            format!("the body ended with an error after {written} bytes: {e}"),
        ),
    }
}

/// The answer to a body that found no room in staging (503, retryable), once up to `len` bytes
/// of it were read: a client still sending would otherwise see a broken pipe instead.
pub(super) async fn staging_full(ctx: &Ctx, body: &mut ByteStream, len: u64) -> Error {
    let staged = ctx.staged.bytes();
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.next().await {
        seen += frame.len() as u64;
        if seen > len {
            break;
        }
    }
    Error::Unavailable(format!(
        "staging is full ({staged} bytes wait for the object store); retry later"
    ))
}

/// What the body brought: the whole chunk (its length and hashes) or fewer bytes.
enum Got {
    Whole(u64, String, String),
    Short(u64),
}

async fn receive_chunk(ctx: &Ctx, put: ChunkPut) -> Result<Received> {
    let ChunkPut {
        owner,
        upload_id,
        index,
        content_length,
        blake3,
        sha256,
        mut body,
        keep_short,
    } = put;
    // This node may not have applied the upload's creation yet: then ask the leader.
    if ctx.meta.local().upload_record(&owner, &upload_id).is_none() {
        drop(ctx.meta.linearizable().await?);
    }
    let (expected_len, offset, already) = {
        let applied = ctx.meta.local();
        let up = applied.upload(&owner, &upload_id).ok_or(Error::NotFound)?;
        if up.state != UploadState::Uploading {
            return Err(Error::conflict(
                "upload_not_active",
                format!("upload is {}", up.state.as_str()),
            ));
        }
        let count = up.chunk_count();
        if index >= count {
            return Err(Error::bad_request(
                "chunk_index_out_of_range",
                format!("chunk index {index} is out of range (the upload has {count} chunks)"),
            ));
        }
        (
            up.chunk_len(index),
            u64::from(index) * up.chunk_size,
            up.chunks[index as usize].blake3().map(str::to_owned),
        )
    };
    if let Some(len) = content_length {
        if len != expected_len {
            return Err(length_mismatch(index, len, expected_len));
        }
    }
    // The chunk's bytes are counted in staging before it is received (check and count in one
    // step: concurrent chunks cannot all pass a check made before any of them counted).
    let reserved = match already {
        Some(_) => None,
        None => ctx.staged.reserve(expected_len),
    };
    if already.is_none() && reserved.is_none() {
        return Err(staging_full(ctx, &mut body, expected_len).await);
    }

    let dir = ctx.staging.join(&upload_id);
    if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        tokio::fs::create_dir_all(&dir).await?;
        // The new directory's name must survive a crash with the chunk acknowledged in it.
        sync_dir(&ctx.staging).await?;
    }
    let tmp = dir.join(format!("{index}.part-{}", uuid::Uuid::now_v7().simple()));
    let received = async {
        let mut file =
            tokio::io::BufWriter::with_capacity(WRITE_BUF, tokio::fs::File::create(&tmp).await?);
        let mut hasher = ChunkHasher::new(offset);
        let mut sha = sha256.map(|_| sha2::Sha256::new());
        let mut written = 0u64;
        let mut behind = WriteBehind::default();
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| body_error(&e, written))?;
            written += frame.len() as u64;
            if written > expected_len {
                return Err(length_mismatch(index, written, expected_len));
            }
            hasher.update(&frame);
            if let Some(s) = sha.as_mut() {
                s.update(&frame);
            }
            file.write_all(&frame).await?;
            behind.wrote(file.get_ref(), written).await?;
        }
        behind.finish().await?;
        if written != expected_len {
            if keep_short {
                // It becomes a tus tail, acknowledged once recorded: durable first (the local
                // store hard-links it as it is).
                file.flush().await?;
                file.get_mut().sync_all().await?;
                return Ok(Got::Short(written));
            }
            return Err(length_mismatch(index, written, expected_len));
        }
        file.flush().await?;
        file.get_mut().sync_all().await?;
        let (plain, cv) = hasher.finish();
        if let Some(want) = blake3 {
            if hex::encode(want) != plain {
                return Err(Error::ChecksumMismatch(format!(
                    "chunk {index}: BLAKE3 is {plain}, x-wharf-blake3 says {}",
                    hex::encode(want)
                )));
            }
        }
        if let (Some(want), Some(s)) = (sha256, sha) {
            if s.finalize().as_slice() != want {
                return Err(Error::ChecksumMismatch(format!(
                    "chunk {index}: SHA-256 does not match Content-Digest"
                )));
            }
        }
        Ok(Got::Whole(written, plain, cv))
    }
    .await;
    let (len, plain, cv) = match received {
        Ok(Got::Whole(len, plain, cv)) => (len, plain, cv),
        // The caller owns the file now; `reserved` (dropped) frees its count in staging.
        Ok(Got::Short(len)) => return Ok(Received::Short { path: tmp, len }),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if let Some(have) = already {
        // Already received: the same bytes again are a no-op, other bytes a conflict.
        let _ = tokio::fs::remove_file(&tmp).await;
        return if have == plain {
            Ok(Received::Staged)
        } else {
            Err(Error::conflict(
                "chunk_conflict",
                format!("chunk {index} was already received with different content"),
            ))
        };
    }
    let path = staged_path(&ctx.staging, &upload_id, index);
    tokio::fs::rename(&tmp, &path).await?;
    sync_dir(&dir).await?;
    // The staged file now holds the bytes counted for it.
    if let Some(r) = reserved {
        r.keep();
    }
    let staged = Command::ChunkStaged {
        owner,
        upload_id,
        index,
        node: ctx.meta.node_id,
        len,
        blake3: plain,
        cv,
        now: now_ms(),
    };
    if crate::planted::active(crate::planted::Bug::AckBeforeCommit) {
        // Planted bug: the chunk is acknowledged now and recorded later, if ever.
        let meta = ctx.meta.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = meta.propose(staged).await;
        });
        return Ok(Received::Staged);
    }
    let res = ctx.meta.propose(staged).await.map_err(Error::from);
    match res {
        Ok(_) => {
            metrics::counter!("wharf_chunks_staged_total").increment(1);
            metrics::counter!("wharf_chunk_bytes_received_total").increment(len);
            Ok(Received::Staged)
        }
        // Refused for certain: this copy is not needed. (If the outcome is unknown, keep it:
        // the command may still commit, and the rescan then offloads it.)
        Err(e) if !matches!(e, Error::Unavailable(_)) => {
            ctx.staged.remove_staged(&path, len).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Flushes a chunk's bytes to disk while more of them arrive, so that the fsync that
/// acknowledges the chunk finds little left to write (the body does not wait for the disk).
#[derive(Default)]
struct WriteBehind {
    /// Bytes written when the last flush began.
    started_at: u64,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl WriteBehind {
    /// Bytes written between two flushes.
    const EVERY: u64 = 4 << 20;

    async fn wrote(&mut self, file: &tokio::fs::File, written: u64) -> std::io::Result<()> {
        if written - self.started_at < Self::EVERY {
            return Ok(());
        }
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        self.finish().await?;
        let clone = file.try_clone().await?.into_std().await;
        self.running = Some(tokio::task::spawn_blocking(move || clone.sync_data()));
        self.started_at = written;
        Ok(())
    }

    /// Waits for the flush running, if any (its error is the chunk's).
    async fn finish(&mut self) -> std::io::Result<()> {
        match self.running.take() {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

fn length_mismatch(index: u32, got: u64, expected: u64) -> Error {
    Error::bad_request(
        "chunk_length_mismatch",
        format!("chunk {index} must be exactly {expected} bytes, got {got}"),
    )
}
