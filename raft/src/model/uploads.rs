//! Upload sessions: create, chunks staged and offloaded, complete, abort, expiry, retention.

use super::events::EventKind;
use super::files::{record_file, ContentOf};
use super::{chunk_count, UploadState, MAX_CHUNKS, MAX_CHUNK_SIZE, MAX_OBJECT_SIZE};
use super::{ApplyResult, Chunk, Millis, ModelError, Outcome, State, Tier, TierLimits, Upload};
use super::{Garbage, User};
use crate::kv::KvMut;

/// How many ended uploads one `ExpireUploads` forgets at most: bounds the cost of one apply.
pub const FORGET_PER_TICK: usize = 1_000;

pub(super) struct NewUpload {
    pub upload_id: String,
    pub owner: String,
    pub tier: Tier,
    pub limits: TierLimits,
    pub name: String,
    pub mime: Option<String>,
    pub size: u64,
    pub chunk_size: u64,
    pub blake3: Option<String>,
    pub idempotency_key: Option<String>,
    pub ttl_ms: u64,
    pub now: Millis,
    /// A tus upload of a length not declared yet: `size` is only a bound, and nothing is
    /// reserved at creation (see `tus::create_deferred`).
    pub deferred: bool,
}

impl NewUpload {
    /// The upload a `CreateUpload` asks for; `None` for any other command.
    pub(super) fn of(cmd: super::Command, deferred: bool) -> Option<Self> {
        let super::Command::CreateUpload {
            upload_id,
            owner,
            tier,
            limits,
            name,
            mime,
            size,
            chunk_size,
            blake3,
            idempotency_key,
            ttl_ms,
            now,
        } = cmd
        else {
            return None;
        };
        Some(Self {
            upload_id,
            owner,
            tier,
            limits,
            name,
            mime,
            size,
            chunk_size,
            blake3,
            idempotency_key,
            ttl_ms,
            now,
            deferred,
        })
    }
}

/// The user as a new upload or file sees them: created on first sight, tier and quota brought
/// up to date with the limits the proposer sent.
pub(super) fn user_for<K: KvMut>(
    state: &State<K>,
    owner: &str,
    tier: Tier,
    limits: &TierLimits,
) -> User {
    let mut user = state.user(owner).unwrap_or_else(|| User {
        id: owner.to_string(),
        tier,
        quota: limits.quota,
        quota_set_by_admin: false,
        used: 0,
        reserved: 0,
        active_uploads: 0,
    });
    user.tier = tier;
    user.quota = user.quota_under(limits);
    user
}

pub(super) fn check_size(size: u64, limits: &TierLimits) -> Result<(), ModelError> {
    let max = limits.max_file_size.min(MAX_OBJECT_SIZE);
    if size > max {
        return Err(ModelError::FileTooLarge { size, max });
    }
    Ok(())
}

pub(super) fn check_quota(user: &User, size: u64) -> Result<(), ModelError> {
    let available = user
        .quota
        .saturating_sub(user.used.saturating_add(user.reserved));
    if size > available {
        return Err(ModelError::QuotaExceeded {
            requested: size,
            available,
        });
    }
    Ok(())
}

pub(super) fn create<K: KvMut>(state: &mut State<K>, n: NewUpload) -> ApplyResult {
    let owner = n.owner.as_str();
    if let Some(k) = &n.idempotency_key {
        if let Some(existing) = state.idempotent_upload(owner, k) {
            let up = state.upload(owner, &existing).ok_or(ModelError::NotFound)?;
            let ended_without_file =
                matches!(up.state, UploadState::Aborted | UploadState::Expired);
            // A key whose upload was aborted or expired is free again: a new upload takes it.
            if !ended_without_file {
                if up.name != n.name
                    || up.size != n.size
                    || up.expected_blake3 != n.blake3
                    || up.mime != n.mime
                {
                    return Err(ModelError::IdempotencyConflict);
                }
                return Ok(Outcome::Upload(up));
            }
        }
    }
    if !n.chunk_size.is_power_of_two() || n.chunk_size > MAX_CHUNK_SIZE {
        return Err(ModelError::Invalid(
            "chunk size must be a power of two".into(),
        ));
    }
    if n.size.div_ceil(n.chunk_size) > MAX_CHUNKS {
        return Err(ModelError::Invalid("too many chunks".into()));
    }
    check_size(n.size, &n.limits)?;
    if let Some(up) = state.upload(owner, &n.upload_id) {
        // The same proposal applied twice (a forward retried after a lost reply).
        if up.name == n.name && up.size == n.size && up.created_at == n.now {
            return Ok(Outcome::Upload(up));
        }
        return Err(ModelError::Invalid("upload id already used".into()));
    }
    let mut user = user_for(state, owner, n.tier, &n.limits);
    if user.active_uploads >= n.limits.max_concurrent_uploads {
        return Err(ModelError::TooManyUploads {
            max: n.limits.max_concurrent_uploads,
        });
    }
    let reserve = if n.deferred { 0 } else { n.size };
    check_quota(&user, reserve)?;
    user.reserved += reserve;
    user.active_uploads += 1;
    state.put_user(&user);
    let upload = Upload {
        id: n.upload_id.clone(),
        owner: owner.to_string(),
        name: n.name,
        mime: n.mime,
        size: n.size,
        chunk_size: n.chunk_size,
        expected_blake3: n.blake3,
        idempotency_key: n.idempotency_key.clone(),
        object_key: format!("uploads/{}", n.upload_id),
        multipart_id: None,
        chunks: vec![Chunk::Missing; chunk_count(n.size, n.chunk_size) as usize],
        state: UploadState::Uploading,
        created_at: n.now,
        expires_at: n.now.saturating_add(n.ttl_ms),
        ttl_ms: n.ttl_ms,
        file_id: None,
        ended_at: None,
    };
    if let Some(k) = &n.idempotency_key {
        state.put_idempotency(owner, k, &n.upload_id);
    }
    state.save_upload(None, &upload);
    if n.deferred {
        super::tus::put_deferred(state, owner, &upload.id, 0);
    }
    state.emit(
        owner,
        EventKind::UploadCreated {
            upload_id: upload.id.clone(),
            name: upload.name.clone(),
            // Unknown yet: the declaration of the length is what says it.
            size: if n.deferred { 0 } else { upload.size },
        },
    );
    Ok(Outcome::Upload(upload))
}

/// The upload's record, if it is still uploading.
pub(super) fn active<K: KvMut>(
    state: &State<K>,
    owner: &str,
    upload_id: &str,
) -> Result<Upload, ModelError> {
    let up = state
        .upload_record(owner, upload_id)
        .ok_or(ModelError::NotFound)?;
    if up.state != UploadState::Uploading {
        return Err(ModelError::UploadNotActive {
            state: up.state.as_str().into(),
        });
    }
    Ok(up)
}

pub(super) fn multipart_created<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    multipart_id: String,
) -> ApplyResult {
    let mut up = active(state, owner, upload_id)?;
    // The first recorded id wins; a node that raced sees it and drops its own.
    if let Some(id) = &up.multipart_id {
        return Ok(Outcome::MultipartId(id.clone()));
    }
    let before = up.clone();
    up.multipart_id = Some(multipart_id.clone());
    state.save_upload(Some(&before), &up);
    Ok(Outcome::MultipartId(multipart_id))
}

pub(super) fn chunk_staged<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    index: u32,
    staged: Chunk,
    now: Millis,
) -> ApplyResult {
    let up = active(state, owner, upload_id)?;
    if super::concat::is_final(state, owner, upload_id) {
        return Err(ModelError::Invalid(
            "a final upload takes no bytes of its own (its partial uploads hold them)".into(),
        ));
    }
    let count = up.chunk_count();
    if index >= count {
        return Err(ModelError::ChunkOutOfRange { index, count });
    }
    let expected = up.chunk_len(index);
    let Chunk::Staged { len, blake3, .. } = &staged else {
        return Err(ModelError::Invalid("not a staged chunk".into()));
    };
    if *len != expected {
        return Err(ModelError::ChunkLength {
            index,
            got: *len,
            expected,
        });
    }
    let new = match state.chunk(owner, upload_id, index).blake3() {
        None => {
            // A tus upload of a length not declared yet reserves its bytes chunk by chunk.
            super::tus::reserve_deferred(
                state,
                owner,
                upload_id,
                u64::from(index) * up.chunk_size + *len,
            )?;
            state.put_chunk(owner, upload_id, index, &staged);
            super::tus::chunk_held(state, owner, upload_id, index, now);
            true
        }
        Some(h) if h == blake3 => false,
        // A refused command changes nothing, the expiry included.
        Some(_) => return Err(ModelError::ChunkConflict { index }),
    };
    bump_expiry(state, up, now);
    if new {
        super::concat::touch_final(state, owner, upload_id, now);
        state.emit_progress(owner, upload_id, now);
    }
    Ok(Outcome::Done)
}

/// Bytes arrived for an upload at `now`: it expires `ttl_ms` after the last of them.
pub(super) fn bump_expiry<K: KvMut>(state: &mut State<K>, mut up: Upload, now: Millis) {
    let expires_at = now.saturating_add(up.ttl_ms).max(up.expires_at);
    if expires_at != up.expires_at {
        let before = up.clone();
        up.expires_at = expires_at;
        state.save_upload(Some(&before), &up);
    }
}

pub(super) fn chunk_offloaded<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    index: u32,
    etag: String,
    by: u64,
) -> ApplyResult {
    let up = active(state, owner, upload_id)?;
    let count = up.chunk_count();
    if index >= count {
        return Err(ModelError::ChunkOutOfRange { index, count });
    }
    match state.chunk(owner, upload_id, index) {
        Chunk::Staged { node, .. } if by != 0 && node != by => {
            Err(ModelError::ChunkConflict { index })
        }
        Chunk::Staged {
            node,
            len,
            blake3,
            cv,
        } => {
            let c = Chunk::Offloaded {
                node,
                len,
                blake3,
                cv,
                etag,
            };
            state.put_chunk(owner, upload_id, index, &c);
            Ok(Outcome::Done)
        }
        Chunk::Offloaded { .. } => Ok(Outcome::Done),
        Chunk::Missing => Err(ModelError::MissingChunks(vec![index])),
    }
}

pub(super) fn complete<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    file_id: String,
    blake3: String,
    scan: bool,
    now: Millis,
) -> ApplyResult {
    let up = state
        .upload_record(owner, upload_id)
        .ok_or(ModelError::NotFound)?;
    if let Some(answer) = stored_answer(state, &up) {
        return answer;
    }
    if up.state != UploadState::Uploading {
        return Err(ModelError::UploadNotActive {
            state: up.state.as_str().into(),
        });
    }
    if super::tus::deferred(state, owner, upload_id).is_some() {
        return Err(ModelError::Invalid(
            "the upload's length is not declared yet (Upload-Length)".into(),
        ));
    }
    if state.concat(owner, upload_id).is_some() {
        return Err(ModelError::NotPartial(
            "a tus partial upload becomes a file only through a final upload".into(),
        ));
    }
    let held = state.held_chunks(owner, upload_id);
    let offloaded: Vec<bool> = {
        let mut v = vec![false; up.chunk_count() as usize];
        for (i, c) in &held {
            if let (Some(slot), Chunk::Offloaded { .. }) = (v.get_mut(*i as usize), c) {
                *slot = true;
            }
        }
        v
    };
    let pending: Vec<u32> = (0u32..)
        .zip(&offloaded)
        .filter(|(_, done)| !**done)
        .map(|(i, _)| i)
        .collect();
    if !pending.is_empty() {
        return Err(ModelError::MissingChunks(pending));
    }
    if let Some(expected) = &up.expected_blake3 {
        if *expected != blake3 {
            return Err(ModelError::ChecksumMismatch {
                expected: expected.clone(),
                actual: blake3,
            });
        }
    }
    if state.file(owner, &file_id).is_some() || state.file_owner(&file_id).is_some() {
        return Err(ModelError::Invalid("file id already used".into()));
    }
    let mut user = state.user(owner).ok_or(ModelError::NotFound)?;
    if user.reserved < up.size || user.active_uploads == 0 {
        // Accounting that lost this upload's reservation: refused, and nothing written.
        return Err(ModelError::Invalid(format!(
            "the user's reservation ({} bytes, {} uploads) does not hold this upload's {} bytes",
            user.reserved, user.active_uploads, up.size
        )));
    }
    user.reserved -= up.size;
    user.active_uploads -= 1;
    let file = record_file(
        state,
        &mut user,
        ContentOf {
            upload: &up,
            file_id: &file_id,
            blake3,
            scan,
            now,
        },
    );
    state.put_user(&user);
    let before = up.clone();
    let mut done = up;
    done.state = UploadState::Stored;
    // A new version of a file already there is answered as that file.
    done.file_id = Some(file.id.clone());
    done.ended_at = Some(now);
    state.clear_chunks(owner, upload_id);
    super::tus::ended(state, owner, upload_id, now);
    state.save_upload(Some(&before), &done);
    state.forget_progress(owner, upload_id);
    state.emit(
        owner,
        EventKind::UploadCompleted {
            upload_id: upload_id.to_string(),
            file_id: file.id.clone(),
            name: file.name.clone(),
            size: file.size,
        },
    );
    Ok(Outcome::File(file))
}

/// A retried completion of an upload that is stored answers with the file it made.
pub(super) fn stored_answer<K: KvMut>(state: &State<K>, up: &Upload) -> Option<ApplyResult> {
    (up.state == UploadState::Stored).then(|| {
        let fid = up.file_id.clone().unwrap_or_default();
        state
            .file(&up.owner, &fid)
            .map(Outcome::File)
            .ok_or(ModelError::NotFound)
    })
}

pub(super) fn abort<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    now: Millis,
) -> ApplyResult {
    let up = active(state, owner, upload_id)?;
    Ok(Outcome::Upload(end(state, up, UploadState::Aborted, now)))
}

/// Ends an uploading session without a file: releases its reservation exactly once and hands
/// its object (and multipart upload) to the garbage collector.
fn end<K: KvMut>(state: &mut State<K>, up: Upload, to: UploadState, now: Millis) -> Upload {
    debug_assert_eq!(up.state, UploadState::Uploading);
    // A final upload holds nothing (its partials do); a tus upload of a length not declared
    // yet holds only what its chunks reserved.
    if !super::concat::is_final(state, &up.owner, &up.id) {
        let reserved = super::tus::deferred(state, &up.owner, &up.id).unwrap_or(up.size);
        if let Some(mut user) = state.user(&up.owner) {
            super::release(&mut user.reserved, reserved);
            user.active_uploads = user.active_uploads.saturating_sub(1);
            state.put_user(&user);
        }
    }
    state.put_garbage(&Garbage {
        object_key: up.object_key.clone(),
        multipart_id: up.multipart_id.clone(),
        since: now,
    });
    state.clear_chunks(&up.owner, &up.id);
    super::tus::ended(state, &up.owner, &up.id, now);
    let mut ended = up.clone();
    ended.state = to;
    ended.ended_at = Some(now);
    ended.chunks = Vec::new();
    state.save_upload(Some(&up), &ended);
    state.forget_progress(&up.owner, &up.id);
    state.emit(
        &up.owner,
        EventKind::UploadEnded {
            upload_id: up.id.clone(),
            state: to,
        },
    );
    // A final and its partials end together (each is saved as ended before the next looks).
    for other in super::concat::ending_with(state, &up) {
        end(state, other, to, now);
    }
    ended
}

pub(super) fn expire<K: KvMut>(
    state: &mut State<K>,
    now: Millis,
    retention_ms: Option<u64>,
) -> ApplyResult {
    // `ux/` keys sort by expiry: everything before `now + 1` is due.
    let due = state.open_upload_ids(Some(now.saturating_add(1)), usize::MAX);
    let mut ids = Vec::with_capacity(due.len());
    for (owner, id) in due {
        // One that ended with another (a final and its partials) ended already.
        match state.upload_record(&owner, &id) {
            Some(up) if up.state == UploadState::Uploading => {
                ids.push(end(state, up, UploadState::Expired, now).id)
            }
            _ => {}
        }
    }
    if let Some(keep) = retention_ms {
        let cutoff = now.saturating_sub(keep);
        for (owner, id) in state.ended_upload_ids(cutoff, FORGET_PER_TICK) {
            if let Some(up) = state.upload_record(&owner, &id) {
                state.remove_upload(&up);
            }
        }
    }
    Ok(Outcome::Expired(ids))
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, ModelError, State, Tier, TierLimits};

    const LIMITS: TierLimits = TierLimits {
        quota: 1_000,
        max_file_size: 500,
        max_concurrent_uploads: 4,
    };

    fn create(id: &str, size: u64) -> Command {
        Command::CreateUpload {
            upload_id: id.into(),
            owner: "ann".into(),
            tier: Tier::Basic,
            limits: LIMITS,
            name: "x".into(),
            mime: None,
            size,
            chunk_size: 64,
            blake3: None,
            idempotency_key: None,
            ttl_ms: 10_000,
            now: 1,
        }
    }

    /// A state whose accounting lost a reservation (a bug) neither wraps a counter to ~2^64,
    /// which would lock the user out, nor completes an upload it cannot account for.
    #[test]
    fn accounting_that_lost_a_reservation_stops_at_zero_and_refuses_to_complete() {
        let mut s: State = State::default();
        apply(&mut s, create("a", 10)).unwrap();
        apply(&mut s, create("b", 10)).unwrap();
        let mut u = s.user("ann").unwrap();
        u.reserved = 3;
        s.put_user(&u);
        apply(
            &mut s,
            Command::AbortUpload {
                owner: "ann".into(),
                upload_id: "a".into(),
                now: 2,
            },
        )
        .unwrap();
        let u = s.user("ann").unwrap();
        assert_eq!((u.reserved, u.active_uploads), (0, 1));

        // Upload b, staged and offloaded whole, cannot complete against a reservation of 0.
        apply(
            &mut s,
            Command::ChunkStaged {
                owner: "ann".into(),
                upload_id: "b".into(),
                index: 0,
                node: 1,
                len: 10,
                blake3: "c".into(),
                cv: "cv".into(),
                now: 3,
            },
        )
        .unwrap();
        apply(
            &mut s,
            Command::ChunkOffloaded {
                owner: "ann".into(),
                upload_id: "b".into(),
                index: 0,
                etag: "e".into(),
                node: 1,
            },
        )
        .unwrap();
        let before = s.clone();
        let r = apply(
            &mut s,
            Command::CompleteUpload {
                owner: "ann".into(),
                upload_id: "b".into(),
                file_id: "f".into(),
                blake3: "c".into(),
                scan: false,
                now: 4,
            },
        );
        assert!(matches!(r, Err(ModelError::Invalid(_))), "{r:?}");
        assert_eq!(s, before, "a refused complete wrote something");
        assert_eq!(s.user("ann").unwrap().used, 0);
    }
}
