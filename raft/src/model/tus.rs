//! tus uploads: what the tus protocol adds to an upload session.
//!
//! A tus client sends bytes at an offset, cut wherever it likes; wharf's chunks have a fixed
//! size. The node stages every whole chunk as usual; the bytes of the next chunk received so
//! far (the tail) go to the object store as one object, recorded here, so that the next PATCH
//! continues from the same offset on any node. The offset is derived, never stored: the chunks
//! held from the start, plus the tail when it belongs to the first chunk not held.

use serde::{Deserialize, Serialize};

use super::state::keys;
use super::uploads::{self, bump_expiry, check_quota, NewUpload};
use super::{ApplyResult, Command, Garbage, Millis, ModelError, Outcome, State, Upload};
use crate::kv::KvMut;

/// The tus side of an upload session (key `tu/{owner}/{upload_id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusUpload {
    /// `Upload-Metadata` as the client sent it (echoed back by HEAD).
    pub metadata: Option<String>,
    /// The bytes of chunk `tail.index` received so far, when that chunk is not whole yet.
    pub tail: Option<TusTail>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusTail {
    pub index: u32,
    /// Bytes from the chunk's start: less than the chunk's length.
    pub len: u64,
    /// The object holding them ([`tail_key`]).
    pub object_key: String,
}

/// The object key of a tail: one per PATCH (`nonce`), so that a newer tail never overwrites
/// one that a reader may still read, nor a racing PATCH's copy the one that was recorded.
pub fn tail_key(upload_id: &str, index: u32, len: u64, nonce: &str) -> String {
    format!("{}{index}-{len}-{nonce}", tails_prefix(upload_id))
}

/// The tus offset of `up` (with its chunks): the bytes held from the start.
pub fn offset(up: &Upload, tus: Option<&TusUpload>) -> u64 {
    let Some(first_missing) = up.missing().first().copied() else {
        return up.size;
    };
    let held = u64::from(first_missing) * up.chunk_size;
    match tus.and_then(|t| t.tail.as_ref()) {
        Some(t) if t.index == first_missing => held + t.len,
        _ => held,
    }
}

pub(super) fn create<K: KvMut>(
    state: &mut State<K>,
    create: Command,
    metadata: Option<String>,
) -> ApplyResult {
    let Command::CreateUpload { upload_id, .. } = &create else {
        return Err(ModelError::Invalid(
            "a tus upload is made by a CreateUpload".into(),
        ));
    };
    let upload_id = upload_id.clone();
    let out = super::apply(state, create)?;
    if let Outcome::Upload(up) = &out {
        let key = keys::tus(&up.owner, &up.id);
        // An idempotency key may answer with an upload made before, not through tus: only the
        // upload this command names becomes a tus upload.
        if up.id == upload_id && state.read_at::<TusUpload>(&key).is_none() {
            state.write_at(
                &key,
                &TusUpload {
                    metadata,
                    tail: None,
                },
            );
        }
    }
    Ok(out)
}

/// A tus upload whose length the client will declare later (creation-defer-length).
pub(super) fn create_deferred<K: KvMut>(
    state: &mut State<K>,
    create: Command,
    metadata: Option<String>,
) -> ApplyResult {
    let Some(n) = NewUpload::of(create, true) else {
        return Err(ModelError::Invalid(
            "a tus upload is made by a CreateUpload".into(),
        ));
    };
    if n.idempotency_key.is_some() {
        // The key would answer a retry with a size that is only a bound.
        return Err(ModelError::Invalid(
            "a deferred-length upload takes no idempotency key".into(),
        ));
    }
    let (owner, upload_id) = (n.owner.clone(), n.upload_id.clone());
    let existed = state.upload_record(&owner, &upload_id).is_some();
    let out = uploads::create(state, n)?;
    if !existed {
        state.write_at(
            &keys::tus(&owner, &upload_id),
            &TusUpload {
                metadata,
                tail: None,
            },
        );
    }
    Ok(out)
}

/// The bytes a tus upload of a length not declared yet holds reserved; `None` once its length
/// is known (or for any other upload).
pub(super) fn deferred<K: KvMut>(state: &State<K>, owner: &str, upload_id: &str) -> Option<u64> {
    state.read_at(&keys::tus_deferred(owner, upload_id))
}

pub(super) fn put_deferred<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    reserved: u64,
) {
    state.write_at(&keys::tus_deferred(owner, upload_id), &reserved);
}

/// A chunk ending at byte `end` is about to be recorded: an upload of a length not declared
/// yet reserves every byte up to it now, or the chunk is refused (`QuotaExceeded`) with
/// nothing changed. A chunk staged again after its node was lost reserves nothing twice.
pub(super) fn reserve_deferred<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    end: u64,
) -> Result<(), ModelError> {
    let Some(reserved) = deferred(state, owner, upload_id) else {
        return Ok(());
    };
    let more = end.saturating_sub(reserved);
    if more == 0 {
        return Ok(());
    }
    let mut user = state.user(owner).ok_or(ModelError::NotFound)?;
    check_quota(&user, more)?;
    user.reserved += more;
    state.put_user(&user);
    put_deferred(state, owner, upload_id, end);
    Ok(())
}

/// The client declares the length of a deferred upload (`Upload-Length` on a PATCH or HEAD's
/// answer to it). It must hold every byte received so far and fit under the bound set at
/// creation; the rest of its bytes are reserved now.
pub(super) fn declare_length<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    size: u64,
    now: Millis,
) -> ApplyResult {
    let up = uploads::active(state, owner, upload_id)?;
    let Some(reserved) = deferred(state, owner, upload_id) else {
        // Declared before: the same length again is a retry; another one is refused.
        if up.size == size {
            return Ok(Outcome::Upload(up));
        }
        return Err(ModelError::Invalid(format!(
            "the upload's length is {} already",
            up.size
        )));
    };
    if size > up.size {
        return Err(ModelError::FileTooLarge { size, max: up.size });
    }
    let with_chunks = state.upload(owner, upload_id).ok_or(ModelError::NotFound)?;
    let received = offset(&with_chunks, state.tus(owner, upload_id).as_ref());
    // Every chunk held must be whole under the new length (chunks only come after the offset).
    let past_end = state
        .held_chunks(owner, upload_id)
        .iter()
        .any(|(i, _)| (u64::from(*i) + 1) * up.chunk_size > size);
    if size < received || past_end {
        return Err(ModelError::Invalid(format!(
            "Upload-Length {size} is less than the {received} bytes received"
        )));
    }
    // From now on the upload holds exactly `size` reserved: more than the chunks so far, or
    // less when chunks reserved before were lost with their node and the length ends earlier.
    let mut user = state.user(owner).ok_or(ModelError::NotFound)?;
    let rest = size.saturating_sub(reserved);
    check_quota(&user, rest)?;
    user.reserved = user.reserved - reserved.min(user.reserved) + size;
    state.put_user(&user);
    state.kv_mut().delete(&keys::tus_deferred(owner, upload_id));
    let before = up.clone();
    let mut declared = up;
    declared.size = size;
    declared.expires_at = now.saturating_add(declared.ttl_ms).max(declared.expires_at);
    state.save_upload(Some(&before), &declared);
    Ok(Outcome::Upload(declared))
}

pub(super) fn tail<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    new: TusTail,
    now: Millis,
) -> ApplyResult {
    let up = uploads::active(state, owner, upload_id)?;
    if super::concat::is_final(state, owner, upload_id) {
        return Err(ModelError::Invalid(
            "a final upload takes no bytes of its own".into(),
        ));
    }
    let key = keys::tus(owner, upload_id);
    let mut tus: TusUpload = state.read_at(&key).ok_or(ModelError::NotFound)?;
    let count = up.chunk_count();
    if new.index >= count {
        return Err(ModelError::ChunkOutOfRange {
            index: new.index,
            count,
        });
    }
    let chunk_len = up.chunk_len(new.index);
    if new.len == 0 || new.len >= chunk_len {
        return Err(ModelError::ChunkLength {
            index: new.index,
            got: new.len,
            expected: chunk_len,
        });
    }
    if state.chunk(owner, upload_id, new.index).blake3().is_some() {
        // The whole chunk is already held: this tail adds nothing (a racing PATCH).
        return Err(ModelError::ChunkConflict { index: new.index });
    }
    if let Some(old) = &tus.tail {
        if old.index == new.index && old.len >= new.len {
            // Offsets only grow: a PATCH that started from an older offset lost the race.
            return Err(ModelError::ChunkConflict { index: new.index });
        }
        drop_tail(state, old, now);
    }
    tus.tail = Some(new);
    state.write_at(&key, &tus);
    bump_expiry(state, up, now);
    super::concat::touch_final(state, owner, upload_id, now);
    state.emit_progress(owner, upload_id, now);
    Ok(Outcome::Done)
}

fn drop_tail<K: KvMut>(state: &mut State<K>, t: &TusTail, now: Millis) {
    state.put_garbage(&Garbage {
        object_key: t.object_key.clone(),
        multipart_id: None,
        since: now,
    });
}

/// Chunk `index` of the upload is now held: a tail of it is not needed any more.
pub(super) fn chunk_held<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
    index: u32,
    now: Millis,
) {
    let key = keys::tus(owner, upload_id);
    let Some(mut tus) = state.read_at::<TusUpload>(&key) else {
        return;
    };
    if let Some(t) = tus.tail.take_if(|t| t.index == index) {
        drop_tail(state, &t, now);
        state.write_at(&key, &tus);
    }
}

/// The upload ended (stored, aborted, expired): its tail goes to the garbage collector, and so
/// does everything under its tails' prefix (a tail stored by a PATCH whose node died before
/// recording it); the record stays (HEAD still answers with the metadata) until the upload is
/// forgotten.
pub(super) fn ended<K: KvMut>(state: &mut State<K>, owner: &str, upload_id: &str, now: Millis) {
    state.kv_mut().delete(&keys::tus_deferred(owner, upload_id));
    let key = keys::tus(owner, upload_id);
    let Some(mut tus) = state.read_at::<TusUpload>(&key) else {
        return;
    };
    if let Some(t) = tus.tail.take() {
        drop_tail(state, &t, now);
        state.write_at(&key, &tus);
    }
    state.put_garbage(&Garbage {
        object_key: tails_prefix(upload_id),
        multipart_id: None,
        since: now,
    });
}

/// Where every tail of an upload is stored: `tus/{upload_id}/`.
pub fn tails_prefix(upload_id: &str) -> String {
    format!("tus/{upload_id}/")
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, ModelError, Outcome, State, Tier, TierLimits};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 10_000,
        max_file_size: 5_000,
        max_concurrent_uploads: 4,
    };

    fn create(id: &str, size: u64) -> Command {
        Command::CreateTusUpload {
            create: Box::new(Command::CreateUpload {
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
            }),
            metadata: Some("filename eA==".into()),
        }
    }

    fn tail(index: u32, len: u64, now: u64) -> Command {
        Command::TusTail {
            owner: "ann".into(),
            upload_id: "a".into(),
            index,
            len,
            object_key: tail_key("a", index, len, "n"),
            now,
        }
    }

    fn stage(index: u32, len: u64) -> Command {
        Command::ChunkStaged {
            owner: "ann".into(),
            upload_id: "a".into(),
            index,
            node: 1,
            len,
            blake3: format!("h{index}"),
            cv: "cv".into(),
            now: 5,
        }
    }

    fn offset_of(s: &State) -> u64 {
        let up = s.upload("ann", "a").unwrap();
        offset(&up, s.tus("ann", "a").as_ref())
    }

    #[test]
    fn the_offset_is_the_chunks_held_from_the_start_plus_the_tail() {
        let mut s: State = State::default();
        apply(&mut s, create("a", 150)).unwrap();
        assert_eq!(
            s.tus("ann", "a").unwrap().metadata.as_deref(),
            Some("filename eA==")
        );
        assert_eq!(offset_of(&s), 0);
        apply(&mut s, tail(0, 10, 2)).unwrap();
        assert_eq!(offset_of(&s), 10);
        apply(&mut s, tail(0, 30, 3)).unwrap();
        assert_eq!(offset_of(&s), 30);
        // The older, shorter tail is garbage now.
        assert!(s
            .garbage(10)
            .iter()
            .any(|g| g.object_key == tail_key("a", 0, 10, "n")));
        // Offsets only grow: a shorter or equal tail lost a race and is refused.
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, tail(0, 30, 4)),
            Err(ModelError::ChunkConflict { index: 0 })
        ));
        assert_eq!(s, before);
        apply(&mut s, stage(0, 64)).unwrap();
        assert_eq!(offset_of(&s), 64);
        assert!(s.tus("ann", "a").unwrap().tail.is_none());
        assert!(s
            .garbage(10)
            .iter()
            .any(|g| g.object_key == tail_key("a", 0, 30, "n")));
        // A tail of a chunk already held, or as long as the chunk, is refused.
        assert!(apply(&mut s, tail(0, 5, 6)).is_err());
        assert!(apply(&mut s, tail(1, 64, 6)).is_err());
        // The last chunk is 22 bytes long.
        apply(&mut s, tail(2, 21, 6)).unwrap();
        assert_eq!(
            offset_of(&s),
            64,
            "a tail after a missing chunk is not counted"
        );
        apply(&mut s, stage(1, 64)).unwrap();
        assert_eq!(offset_of(&s), 149);
        apply(&mut s, stage(2, 22)).unwrap();
        assert_eq!(offset_of(&s), 150);
    }

    #[test]
    fn an_upload_that_ends_hands_its_tail_to_the_garbage_collector() {
        let mut s: State = State::default();
        apply(&mut s, create("a", 150)).unwrap();
        apply(&mut s, tail(0, 10, 2)).unwrap();
        let out = apply(
            &mut s,
            Command::AbortUpload {
                owner: "ann".into(),
                upload_id: "a".into(),
                now: 3,
            },
        )
        .unwrap();
        assert!(matches!(out, Outcome::Upload(_)));
        assert!(s.tus("ann", "a").unwrap().tail.is_none());
        assert!(s
            .garbage(10)
            .iter()
            .any(|g| g.object_key == tail_key("a", 0, 10, "n")));
        assert!(matches!(
            apply(&mut s, tail(0, 20, 4)),
            Err(ModelError::UploadNotActive { .. })
        ));
    }

    #[test]
    fn a_tus_create_is_a_create_upload_and_nothing_else() {
        let mut s: State = State::default();
        let r = apply(
            &mut s,
            Command::CreateTusUpload {
                create: Box::new(Command::ScannerFound),
                metadata: None,
            },
        );
        assert!(matches!(r, Err(ModelError::Invalid(_))));
        // Applied twice (a retry), it answers the same upload and keeps the first metadata.
        apply(&mut s, create("a", 10)).unwrap();
        let again = apply(&mut s, create("a", 10)).unwrap();
        assert!(matches!(again, Outcome::Upload(u) if u.id == "a"));
    }

    fn create_deferred(id: &str) -> Command {
        let Command::CreateTusUpload { create, metadata } = create(id, LIMITS.max_file_size) else {
            unreachable!()
        };
        Command::CreateDeferredTusUpload { create, metadata }
    }

    fn declare(size: u64) -> Command {
        Command::DeclareTusLength {
            owner: "ann".into(),
            upload_id: "a".into(),
            size,
            now: 7,
        }
    }

    fn abort() -> Command {
        Command::AbortUpload {
            owner: "ann".into(),
            upload_id: "a".into(),
            now: 9,
        }
    }

    fn reserved(s: &State) -> u64 {
        s.user("ann").unwrap().reserved
    }

    #[test]
    fn a_deferred_length_reserves_chunk_by_chunk_then_the_rest_when_declared() {
        let mut s: State = State::default();
        apply(&mut s, create_deferred("a")).unwrap();
        assert_eq!(
            reserved(&s),
            0,
            "nothing is reserved before the length is known"
        );
        apply(&mut s, stage(0, 64)).unwrap();
        apply(&mut s, tail(1, 10, 6)).unwrap();
        assert_eq!((reserved(&s), offset_of(&s)), (64, 74));
        // Completing before the length is declared is refused.
        let complete = Command::CompleteUpload {
            owner: "ann".into(),
            upload_id: "a".into(),
            file_id: "f".into(),
            blake3: "h".into(),
            scan: false,
            now: 8,
        };
        assert!(matches!(
            apply(&mut s, complete),
            Err(ModelError::Invalid(_))
        ));
        // Less than what arrived, or more than the bound: refused, nothing changed.
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, declare(73)),
            Err(ModelError::Invalid(_))
        ));
        assert!(matches!(
            apply(&mut s, declare(LIMITS.max_file_size + 1)),
            Err(ModelError::FileTooLarge { .. })
        ));
        assert_eq!(s, before);
        let out = apply(&mut s, declare(100)).unwrap();
        assert!(matches!(out, Outcome::Upload(u) if u.size == 100 && u.chunk_count() == 2));
        assert_eq!((reserved(&s), offset_of(&s)), (100, 74));
        // Declared again with the same length: a retry; with another: refused.
        apply(&mut s, declare(100)).unwrap();
        assert!(apply(&mut s, declare(120)).is_err());
        apply(&mut s, stage(1, 36)).unwrap();
        assert_eq!((reserved(&s), offset_of(&s)), (100, 100));
    }

    #[test]
    fn a_deferred_upload_is_held_to_the_quota_as_its_chunks_and_its_length_come() {
        let mut s: State = State::default();
        // 10,000 bytes of quota: another upload takes 9,950 of them.
        apply(&mut s, create("b", 4_990)).unwrap();
        apply(&mut s, create("c", 4_960)).unwrap();
        apply(&mut s, create_deferred("a")).unwrap();
        assert_eq!(reserved(&s), 9_950);
        // The first chunk's 64 bytes do not fit in the 50 left: refused, nothing kept.
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, stage(0, 64)),
            Err(ModelError::QuotaExceeded { .. })
        ));
        assert_eq!(s, before);
        apply(&mut s, tail(0, 40, 6)).unwrap();
        assert!(matches!(
            apply(&mut s, declare(60)),
            Err(ModelError::QuotaExceeded {
                requested: 60,
                available: 50
            })
        ));
        apply(&mut s, declare(50)).unwrap();
        assert_eq!(reserved(&s), 10_000);
        // Aborted, it gives back exactly what it held.
        apply(&mut s, abort()).unwrap();
        assert_eq!(reserved(&s), 9_950);
    }

    #[test]
    fn an_aborted_deferred_upload_releases_only_the_chunks_it_reserved() {
        let mut s: State = State::default();
        apply(&mut s, create_deferred("a")).unwrap();
        apply(&mut s, stage(0, 64)).unwrap();
        apply(&mut s, abort()).unwrap();
        let u = s.user("ann").unwrap();
        assert_eq!((u.reserved, u.active_uploads), (0, 0));
        assert!(matches!(
            apply(&mut s, declare(64)),
            Err(ModelError::UploadNotActive { .. })
        ));
    }

    #[test]
    fn a_deferred_chunk_lost_with_its_node_is_reserved_once_and_released_by_a_shorter_length() {
        let mut s: State = State::default();
        apply(&mut s, create_deferred("a")).unwrap();
        apply(&mut s, stage(0, 64)).unwrap();
        apply(&mut s, Command::NodeLost { node: 1 }).unwrap();
        assert_eq!((reserved(&s), offset_of(&s)), (64, 0));
        // Staged again: the same bytes, reserved once.
        apply(&mut s, stage(0, 64)).unwrap();
        assert_eq!(reserved(&s), 64);
        apply(&mut s, Command::NodeLost { node: 1 }).unwrap();
        // The client now says the file is 10 bytes: the upload holds 10, not the 64 it had.
        apply(&mut s, declare(10)).unwrap();
        let u = s.user("ann").unwrap();
        assert_eq!((u.reserved, u.active_uploads), (10, 1));
        apply(&mut s, abort()).unwrap();
        assert_eq!(reserved(&s), 0);
    }
}
