//! A PATCH's bytes, cut into the upload's chunks.
//!
//! The body is read once, in order. For the chunk the offset falls in, the node feeds the
//! uploads actor that chunk's tail (the bytes an earlier PATCH left in the object store) and
//! then the body's bytes up to the chunk's end: a whole chunk is staged as any chunk is; a
//! body that ends first leaves its bytes as the chunk's new tail (`TusTail`). So a PATCH that
//! breaks off keeps what arrived, and the next one continues from there on any node.
//!
//! Once a chunk's last byte is handed on, the next chunk's bytes are received while it is
//! fsynced and recorded (two chunks at most): the body never waits for a disk flush or a Raft
//! commit, yet the answer still waits for every chunk it carried.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use wharf_raft::model::{self, UploadState};

use super::headers::Expected;
use crate::actors::uploads::{ChunkPut, Received, Tail};
use crate::api::http::AppState;
use crate::error::{Error, Result};
use crate::store::ByteStream;

/// Where a PATCH is after its bytes were taken in.
pub(super) struct Patched {
    pub offset: u64,
    pub expires_at: u64,
}

/// `PATCH /files/{id}` at `offset`: refuses a wrong offset (409) or a body longer than the
/// upload's rest (413) before a byte is kept; with `Upload-Checksum`, the body is held in
/// staging until its digest is checked (460 on a mismatch: nothing kept, the offset unchanged).
pub(super) async fn patch(
    s: &AppState,
    owner: &str,
    id: &str,
    offset: u64,
    length: Option<u64>,
    checksum: Option<Expected>,
    body: ByteStream,
) -> Result<Patched> {
    let (applied, up, tus) = super::live_upload(s, owner, id).await?;
    if matches!(
        applied.concat(owner, id),
        Some(model::concat::Concat::Final { .. })
    ) {
        return Err(Error::Forbidden(
            "a final upload is made of its partial uploads: PATCH them, not it".into(),
        ));
    }
    let at = model::tus::offset(&up, Some(&tus));
    if offset != at {
        return Err(Error::OffsetMismatch { offset: at });
    }
    if length.is_some_and(|n| n > up.size - offset) {
        return Err(past_the_end(up.size - offset));
    }
    if up.state == UploadState::Stored {
        // Every byte is here: an empty PATCH at the end is answered, anything else refused.
        return Ok(Patched {
            offset,
            expires_at: up.expires_at,
        });
    }
    // Until its length is declared, an upload is never whole: its size is only a bound.
    let deferred = applied.tus_length_deferred(owner, id);
    drop(applied);
    let tail = tus.tail;
    match checksum {
        None => receive(s, &up, deferred, tail, offset, body).await,
        Some(c) => {
            let rest = up.size - offset;
            if length.is_some_and(|n| n > CHECKSUMMED_BODY_MAX) {
                return Err(checksummed_too_large());
            }
            // The spooled body counts against staging like a chunk, at the most it may be.
            let bound = length.unwrap_or(rest).min(CHECKSUMMED_BODY_MAX);
            let Some(_room) = s.uploads.spool_room(bound) else {
                return Err(Error::Unavailable(
                    "staging is full (bytes wait for the object store); retry later".into(),
                ));
            };
            let spool = Spool::new(s).await?;
            spool.fill(body, &c, rest).await?;
            let file = tokio::fs::File::open(&spool.path).await?;
            let body: ByteStream = Box::pin(tokio_util::io::ReaderStream::new(file));
            let done = receive(s, &up, deferred, tail, offset, body).await;
            spool.remove().await;
            done
        }
    }
}

/// A PATCH with `Upload-Checksum` is held in staging until its digest is checked: at most this
/// much of it (tus clients that send checksums cut their PATCHes much smaller).
const CHECKSUMMED_BODY_MAX: u64 = 256 << 20;

fn checksummed_too_large() -> Error {
    Error::BodyTooLarge(format!(
        "a PATCH with Upload-Checksum carries at most {CHECKSUMMED_BODY_MAX} bytes: send the \
         upload in smaller PATCHes"
    ))
}

fn past_the_end(rest: u64) -> Error {
    Error::BodyTooLarge(format!(
        "the body runs past Upload-Length: {rest} bytes of the upload are left"
    ))
}

/// Takes the body in from `offset` (already checked against the committed state), and
/// completes the upload when its last byte arrived (never while its length is `deferred`).
pub(super) async fn receive(
    s: &AppState,
    up: &model::Upload,
    deferred: bool,
    mut tail: Option<model::tus::TusTail>,
    offset: u64,
    body: ByteStream,
) -> Result<Patched> {
    let (owner, id) = (up.owner.as_str(), up.id.as_str());
    let src = Arc::new(Mutex::new(Source {
        body,
        leftover: None,
        failed: None,
        ended: false,
    }));
    let mut pos = offset;
    if up.size == 0 {
        // An empty file is one empty chunk, whole as soon as the upload exists.
        let put = ChunkPut {
            owner: owner.to_string(),
            upload_id: id.to_string(),
            index: 0,
            content_length: Some(0),
            blake3: None,
            sha256: None,
            body: Box::pin(futures::stream::empty()),
            keep_short: false,
        };
        s.uploads.put_chunk_part(put).await?;
    }
    // The chunk before this one: its bytes are all in, and it is being made durable and
    // recorded while this one's bytes arrive (the body is never idle waiting for an fsync).
    let mut behind: Option<JoinHandle<Result<Received>>> = None;
    while pos < up.size {
        let index = (pos / up.chunk_size) as u32;
        let within = pos % up.chunk_size;
        if at_end(&src).await {
            break;
        }
        let tail_failed = Arc::new(AtomicBool::new(false));
        let prefix: ByteStream = match tail.as_ref() {
            _ if within == 0 => Box::pin(futures::stream::empty()),
            Some(t) if t.index == index && t.len == within => exactly(
                s.store.get(&t.object_key, 0, within).await?,
                within,
                tail_failed.clone(),
            ),
            // The offset was checked against the committed state: its tail is this one.
            _ => return Err(Error::Internal("a tus upload's tail went missing".into())),
        };
        let chunk_len = up.chunk_len(index);
        let taken = Arc::new(Notify::new());
        let put = ChunkPut {
            owner: owner.to_string(),
            upload_id: id.to_string(),
            index,
            content_length: None,
            blake3: None,
            sha256: None,
            body: Box::pin(prefix.chain(take(src.clone(), chunk_len - within, taken.clone()))),
            keep_short: true,
        };
        let uploads = s.uploads.clone();
        let mut task = tokio::spawn(async move { uploads.put_chunk_part(put).await });
        let finished = tokio::select! {
            r = &mut task => Some(r),
            () = taken.notified() => None,
        };
        // Answers in order: the chunk before this one first.
        if let Some(prev) = behind.take() {
            if let Err(e) = joined(prev).await {
                if let Some(Ok(Ok(Received::Short { path, .. }))) = &finished {
                    let _ = tokio::fs::remove_file(path).await;
                }
                return Err(e);
            }
        }
        let Some(received) = finished else {
            // Every byte of this chunk is in: the next one's may come while it is recorded.
            behind = Some(task);
            pos = u64::from(index) * up.chunk_size + chunk_len;
            tail = None;
            continue;
        };
        let received = received
            .map_err(|e| Error::Internal(format!("receiving chunk {index} failed: {e}")))?;
        if tail_failed.load(Ordering::Relaxed) {
            // Nothing of this chunk was kept (its body failed): the client may retry.
            return Err(Error::Unavailable(format!(
                "the stored bytes of chunk {index} could not be read back whole; retry"
            )));
        }
        match received? {
            Received::Staged => {
                pos = u64::from(index) * up.chunk_size + chunk_len;
                tail = None;
            }
            Received::Short { path, len } => {
                let kept = if len > within {
                    let tail = Tail {
                        owner: owner.to_string(),
                        upload_id: id.to_string(),
                        index,
                        len,
                        path: path.clone(),
                    };
                    s.uploads.keep_tail(tail).await
                } else {
                    Ok(())
                };
                let _ = tokio::fs::remove_file(&path).await;
                kept?;
                pos = u64::from(index) * up.chunk_size + len;
                break;
            }
        }
    }
    if let Some(prev) = behind.take() {
        joined(prev).await?;
    }
    // Bytes that arrived before the body failed are kept; the failure is still the answer.
    if let Some(e) = src.lock().await.failed.take() {
        return Err(body_error(&e));
    }
    if pos < up.size || deferred {
        let expires_at = s
            .meta
            .local()
            .upload_record(owner, id)
            .map_or(up.expires_at, |u| u.expires_at);
        return Ok(Patched {
            offset: pos,
            expires_at,
        });
    }
    if !at_end(&src).await {
        // Every chunk is held; HEAD completes the upload if the client does not come back.
        return Err(past_the_end(0));
    }
    complete_or_join(s, owner, id).await?;
    Ok(Patched {
        offset: pos,
        expires_at: up.expires_at,
    })
}

/// Completes the upload, or waits for the completion already running (a HEAD that found every
/// byte here may have started one on this node): either way the PATCH answers once it is done.
async fn complete_or_join(s: &AppState, owner: &str, id: &str) -> Result<()> {
    if s.meta.local().concat(owner, id).is_some() {
        // A partial upload is no file of its own: its final (if one names it yet) may be whole.
        super::concat::partial_whole(s, owner, id).await;
        return Ok(());
    }
    match s.uploads.complete(owner.to_string(), id.to_string()).await {
        Err(Error::Conflict {
            code: "upload_completing",
            ..
        }) => {}
        other => return other.map(|_| ()),
    }
    let deadline = tokio::time::Instant::now() + COMPLETION_WAIT;
    loop {
        let applied = s.meta.linearizable().await?;
        match applied.upload_record(owner, id).map(|u| u.state) {
            Some(UploadState::Stored) => return Ok(()),
            Some(UploadState::Uploading) if tokio::time::Instant::now() < deadline => {}
            Some(UploadState::Uploading) => {
                return Err(Error::Unavailable(
                    "the upload is still being completed; HEAD it again shortly".into(),
                ))
            }
            Some(other) => super::gone_unless_live(other)
                .and_then(|()| Err(Error::conflict("upload_not_active", other.as_str())))?,
            None => return Err(Error::NotFound),
        }
        drop(applied);
        s.meta.changed(Duration::from_millis(500)).await;
    }
}

/// How long a PATCH waits for a completion another request started.
const COMPLETION_WAIT: Duration = Duration::from_secs(120);

/// `stream`, which must carry exactly `len` bytes: fewer (a store that lost or cut an object),
/// more, or an error of its own fail the stream and raise `failed`, so that the chunk it
/// begins is refused whole instead of taking the body's bytes at the wrong offsets.
fn exactly(stream: ByteStream, len: u64, failed: Arc<AtomicBool>) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (Some(stream), 0u64),
        move |(stream, seen)| {
            let failed = failed.clone();
            async move {
                let mut stream = stream?;
                let fail = |msg: String| {
                    failed.store(true, Ordering::Relaxed);
                    Some((Err(io::Error::other(msg)), (None, seen)))
                };
                match stream.next().await {
                    Some(Ok(b)) if seen + b.len() as u64 <= len => {
                        let seen = seen + b.len() as u64;
                        Some((Ok(b), (Some(stream), seen)))
                    }
                    Some(Ok(_)) => fail(format!("a stored tail is longer than its {len} bytes")),
                    Some(Err(e)) => fail(format!("reading a stored tail: {e}")),
                    None if seen == len => None,
                    None => fail(format!("a stored tail has {seen} of its {len} bytes")),
                }
            }
        },
    ))
}

fn body_error(e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut => Error::BodyTimeout(format!(
            "the body stalled ({e}); the bytes before it were kept (HEAD gives the offset)"
        )),
        _ => Error::bad_request(
            "incomplete_body",
            format!("the body ended with an error ({e}); the bytes before it were kept"),
        ),
    }
}

/// The PATCH body, shared by the chunks it is cut into (one at a time).
struct Source {
    body: ByteStream,
    /// Bytes read past the end of the previous chunk.
    leftover: Option<Bytes>,
    /// The body broke off: what came before it is kept, and this is the answer.
    failed: Option<io::Error>,
    ended: bool,
}

/// Whether the body has no more bytes (reads ahead one frame to know).
async fn at_end(src: &Arc<Mutex<Source>>) -> bool {
    let mut s = src.lock().await;
    while s.leftover.as_ref().is_none_or(Bytes::is_empty) {
        if s.ended {
            return true;
        }
        match s.body.next().await {
            Some(Ok(b)) => s.leftover = Some(b),
            Some(Err(e)) => {
                s.failed = Some(e);
                s.ended = true;
            }
            None => s.ended = true,
        }
    }
    false
}

/// A chunk received while the next one's bytes arrived: it must have been staged whole.
async fn joined(task: JoinHandle<Result<Received>>) -> Result<()> {
    match task.await {
        Ok(Ok(Received::Staged)) => Ok(()),
        Ok(Ok(Received::Short { path, .. })) => {
            // Cannot be: all of its bytes were taken from the body.
            let _ = tokio::fs::remove_file(&path).await;
            Err(Error::Internal("a whole chunk was received short".into()))
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::Internal(format!("receiving a chunk failed: {e}"))),
    }
}

/// The next `n` bytes of the body; `taken` is told once the last of them was handed on. A
/// body that fails ends here instead: the bytes before the failure are good, and the chunk
/// receiver keeps them.
fn take(src: Arc<Mutex<Source>>, n: u64, taken: Arc<Notify>) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (src, n, taken),
        |(src, left, taken)| async move {
            if left == 0 {
                return None;
            }
            let mut s = src.lock().await;
            let mut b = match s.leftover.take() {
                Some(b) => b,
                None if s.ended => return None,
                None => match s.body.next().await {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        s.failed = Some(e);
                        s.ended = true;
                        return None;
                    }
                    None => {
                        s.ended = true;
                        return None;
                    }
                },
            };
            if b.len() as u64 > left {
                s.leftover = Some(b.split_off(left as usize));
            }
            let rest = left - b.len() as u64;
            drop(s);
            if rest == 0 {
                taken.notify_one();
            }
            Some((Ok(b), (src, rest, taken)))
        },
    ))
}

/// A PATCH body held in staging until its checksum is verified.
struct Spool {
    path: std::path::PathBuf,
}

impl Spool {
    async fn new(s: &AppState) -> Result<Self> {
        let dir = s.uploads.spool_dir();
        tokio::fs::create_dir_all(dir).await?;
        Ok(Self {
            path: dir.join(uuid::Uuid::now_v7().simple().to_string()),
        })
    }

    /// Writes the body (at most `max` bytes) and checks it against the checksum expected.
    async fn fill(&self, mut body: ByteStream, expected: &Expected, max: u64) -> Result<()> {
        let filled = async {
            let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(&self.path).await?);
            let mut hashers = expected.hashers();
            let mut n = 0u64;
            while let Some(frame) = body.next().await {
                let frame = frame.map_err(|e| body_error(&e))?;
                n += frame.len() as u64;
                if n > max {
                    return Err(past_the_end(max));
                }
                if n > CHECKSUMMED_BODY_MAX {
                    return Err(checksummed_too_large());
                }
                for h in &mut hashers {
                    h.update(&frame);
                }
                file.write_all(&frame).await?;
            }
            file.flush().await?;
            let c = expected.checksum()?;
            let digest = hashers
                .into_iter()
                .find(|h| h.algorithm() == c.algorithm)
                .map(|h| h.finish());
            if digest.as_deref() != Some(c.digest.as_slice()) {
                return Err(Error::TusChecksumMismatch(format!(
                    "the body's {} digest is not the one in Upload-Checksum; nothing was kept",
                    c.algorithm.name()
                )));
            }
            Ok(())
        }
        .await;
        if filled.is_err() {
            self.remove_ref().await;
        }
        filled
    }

    async fn remove_ref(&self) {
        let _ = tokio::fs::remove_file(&self.path).await;
    }

    async fn remove(self) {
        self.remove_ref().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(s: ByteStream) -> (u64, bool) {
        let mut s = s;
        let mut n = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => n += b.len() as u64,
                Err(_) => return (n, true),
            }
        }
        (n, false)
    }

    fn of(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn a_stored_tail_must_carry_exactly_its_length() {
        for (parts, len, want_err) in [
            (&[b"abc" as &[u8], b"de"][..], 5, false),
            (&[b"abc" as &[u8]][..], 5, true),
            (&[b"abc" as &[u8], b"def"][..], 5, true),
        ] {
            let failed = Arc::new(AtomicBool::new(false));
            let (_, err) = drain(exactly(of(parts), len, failed.clone())).await;
            assert_eq!(err, want_err, "{parts:?} as {len} bytes");
            assert_eq!(failed.load(Ordering::Relaxed), want_err);
        }
    }
}
