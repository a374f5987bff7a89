//! tus concatenation: partial uploads that become the parts of one final object.
//!
//! A partial upload is an upload session like any other, except that its chunks stay staged
//! until a final upload names it. The final claims its partials in order and numbers their
//! chunks as the parts of ONE multipart upload of its own object: chunk `i` of a partial is part
//! `first_part + i + 1`. Each node then offloads the partials' chunks it holds straight into that
//! object (the local store hard-links them), so no byte is copied to stitch the file together.
//!
//! A claimed partial and its final live and end together: aborting or expiring either ends the
//! others, and completing the final ends its partials (they are not files of their own). The
//! partials hold the reservation (each reserved its length when it was made); the final holds
//! none and is not counted as an upload in progress, so that nothing is counted twice.

use serde::{Deserialize, Serialize};

use super::events::EventKind;
use super::files::{record_file, ContentOf};
use super::state::keys;
use super::uploads::{self, check_size};
use super::{ApplyResult, Chunk, Millis, ModelError, Outcome, State, TierLimits, Upload};
use super::{UploadState, MAX_CHUNKS, MAX_CHUNK_SIZE};
use crate::kv::KvMut;

/// The most partial uploads one final may name.
pub const MAX_PARTIALS: usize = 1_000;
/// S3's smallest part but the last: a partial's chunk size is chosen so that its last chunk is
/// whole or at least this long (see [`partial_chunk_size`]).
pub const MIN_PART: u64 = 5 << 20;

/// What concatenation adds to an upload (key `tc/{owner}/{upload_id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Concat {
    /// A partial upload; `into` once a final names it.
    Partial { into: Option<Claim> },
    /// A final upload: its partials in order, and `Upload-Concat` as the client sent it.
    Final {
        partials: Vec<String>,
        header: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub final_id: String,
    /// Chunk `i` of the partial is part `first_part + i + 1` of the final's object.
    pub first_part: u32,
}

/// What a `CreateTusFinal` asks for.
pub(super) struct NewFinal {
    pub upload_id: String,
    pub owner: String,
    pub limits: TierLimits,
    pub name: String,
    pub mime: Option<String>,
    pub metadata: Option<String>,
    pub partials: Vec<String>,
    pub header: String,
    pub ttl_ms: u64,
    pub now: Millis,
}

/// The chunk size of a partial upload of `size` bytes: the usual one (at least `min`), doubled
/// while the last chunk would be shorter than [`MIN_PART`] and not empty, so that every chunk
/// of a partial can be a part of a final object but its last one.
pub fn partial_chunk_size(size: u64, min: u64) -> u64 {
    let mut c = super::chunk_size_for(size, min);
    // One chunk as long as the partial is as good as it gets.
    while c < MAX_CHUNK_SIZE && c < size && !size.is_multiple_of(c) && size % c < MIN_PART {
        c *= 2;
    }
    c
}

pub(super) fn get<K: KvMut>(state: &State<K>, owner: &str, upload_id: &str) -> Option<Concat> {
    state.read_at(&keys::concat(owner, upload_id))
}

pub(super) fn is_final<K: KvMut>(state: &State<K>, owner: &str, upload_id: &str) -> bool {
    matches!(get(state, owner, upload_id), Some(Concat::Final { .. }))
}

/// A tus partial upload: a tus upload whose chunks wait for a final.
pub(super) fn create_partial<K: KvMut>(
    state: &mut State<K>,
    create: super::Command,
    metadata: Option<String>,
) -> ApplyResult {
    let super::Command::CreateUpload {
        upload_id, owner, ..
    } = &create
    else {
        return Err(ModelError::Invalid(
            "a partial upload is made by a CreateUpload".into(),
        ));
    };
    let (owner, upload_id) = (owner.clone(), upload_id.clone());
    let existed = state.upload_record(&owner, &upload_id).is_some();
    let out = super::tus::create(state, create, metadata)?;
    if !existed {
        if let Outcome::Upload(up) = &out {
            if up.id == upload_id {
                state.write_at(
                    &keys::concat(&owner, &upload_id),
                    &Concat::Partial { into: None },
                );
            }
        }
    }
    Ok(out)
}

/// A final upload: claims its partials (each uploading, a partial, not claimed before) and
/// numbers their chunks as the parts of its object.
pub(super) fn create_final<K: KvMut>(state: &mut State<K>, f: NewFinal) -> ApplyResult {
    let owner = f.owner.as_str();
    if let Some(up) = state.upload_record(owner, &f.upload_id) {
        // The same proposal applied twice (a forward retried after a lost reply).
        let same = matches!(get(state, owner, &f.upload_id),
            Some(Concat::Final { partials, .. }) if partials == f.partials);
        if same && up.created_at == f.now {
            return Ok(Outcome::Upload(up));
        }
        return Err(ModelError::Invalid("upload id already used".into()));
    }
    if f.partials.is_empty() || f.partials.len() > MAX_PARTIALS {
        return Err(ModelError::Invalid(format!(
            "a final upload names 1 to {MAX_PARTIALS} partial uploads"
        )));
    }
    let mut size = 0u64;
    let mut parts = 0u64;
    let mut claims = Vec::with_capacity(f.partials.len());
    for (i, id) in f.partials.iter().enumerate() {
        if f.partials[..i].contains(id) {
            return Err(ModelError::Invalid(format!(
                "partial upload {id} is named twice"
            )));
        }
        let up = uploads::active(state, owner, id)?;
        match get(state, owner, id) {
            Some(Concat::Partial { into: None }) => {}
            Some(Concat::Partial { into: Some(c) }) => {
                return Err(ModelError::PartialTaken {
                    partial: id.clone(),
                    final_id: c.final_id,
                })
            }
            _ => {
                return Err(ModelError::NotPartial(format!(
                    "upload {id} was not made with Upload-Concat: partial"
                )))
            }
        }
        claims.push((
            id.clone(),
            Claim {
                final_id: f.upload_id.clone(),
                first_part: u32::try_from(parts).unwrap_or(u32::MAX),
            },
        ));
        size = size.saturating_add(up.size);
        parts += u64::from(up.chunk_count());
    }
    check_size(size, &f.limits)?;
    if parts > MAX_CHUNKS {
        return Err(ModelError::Invalid(format!(
            "the partial uploads have {parts} chunks; one object holds at most {MAX_CHUNKS}"
        )));
    }
    for (id, claim) in claims {
        state.write_at(
            &keys::concat(owner, &id),
            &Concat::Partial { into: Some(claim) },
        );
    }
    let up = Upload {
        id: f.upload_id.clone(),
        owner: owner.to_string(),
        name: f.name,
        mime: f.mime,
        size,
        // The final holds no chunk of its own: one nominal chunk keeps the record well formed.
        chunk_size: MAX_CHUNK_SIZE,
        expected_blake3: None,
        idempotency_key: None,
        object_key: format!("uploads/{}", f.upload_id),
        multipart_id: None,
        chunks: Vec::new(),
        state: UploadState::Uploading,
        created_at: f.now,
        expires_at: f.now.saturating_add(f.ttl_ms),
        ttl_ms: f.ttl_ms,
        file_id: None,
        ended_at: None,
    };
    state.save_upload(None, &up);
    state.write_at(
        &keys::tus(owner, &up.id),
        &super::tus::TusUpload {
            metadata: f.metadata,
            tail: None,
        },
    );
    state.write_at(
        &keys::concat(owner, &up.id),
        &Concat::Final {
            partials: f.partials,
            header: f.header,
        },
    );
    state.emit(
        owner,
        EventKind::UploadCreated {
            upload_id: up.id.clone(),
            name: up.name.clone(),
            size: up.size,
        },
    );
    Ok(Outcome::Upload(up))
}

/// Bytes arrived for a claimed partial: its final lives as long as its partials do.
pub(super) fn touch_final<K: KvMut>(state: &mut State<K>, owner: &str, partial: &str, now: Millis) {
    if let Some(Concat::Partial { into: Some(c) }) = get(state, owner, partial) {
        if let Ok(up) = uploads::active(state, owner, &c.final_id) {
            uploads::bump_expiry(state, up, now);
        }
    }
}

/// The uploads that end with `up` (its final, or its partials), still uploading.
pub(super) fn ending_with<K: KvMut>(state: &State<K>, up: &Upload) -> Vec<Upload> {
    let ids = match get(state, &up.owner, &up.id) {
        Some(Concat::Partial { into: Some(c) }) => vec![c.final_id],
        Some(Concat::Final { partials, .. }) => partials,
        _ => return Vec::new(),
    };
    ids.iter()
        .filter_map(|id| uploads::active(state, &up.owner, id).ok())
        .collect()
}

/// Completes a final upload: every chunk of every partial is a part of its object, which the
/// proposer completed and hashed (`blake3`). The partials end (their reservation becomes the
/// file's usage) and the final records the file.
pub(super) fn complete_final<K: KvMut>(
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
    if let Some(answer) = uploads::stored_answer(state, &up) {
        return answer;
    }
    let up = uploads::active(state, owner, upload_id)?;
    let Some(Concat::Final { partials, .. }) = get(state, owner, upload_id) else {
        return Err(ModelError::NotPartial(format!(
            "upload {upload_id} is not a final upload"
        )));
    };
    let mut ended = Vec::with_capacity(partials.len());
    for id in &partials {
        let p = uploads::active(state, owner, id)?;
        let held = state.held_chunks(owner, id);
        let whole = held.len() == p.chunk_count() as usize
            && held
                .iter()
                .all(|(_, c)| matches!(c, Chunk::Offloaded { .. }));
        if !whole {
            return Err(ModelError::Invalid(format!(
                "partial upload {id} is not whole in the object store yet"
            )));
        }
        ended.push(p);
    }
    if state.file(owner, &file_id).is_some() || state.file_owner(&file_id).is_some() {
        return Err(ModelError::Invalid("file id already used".into()));
    }
    let mut user = state.user(owner).ok_or(ModelError::NotFound)?;
    let count = u32::try_from(ended.len()).unwrap_or(u32::MAX);
    if user.reserved < up.size || user.active_uploads < count {
        return Err(ModelError::Invalid(format!(
            "the user's reservation ({} bytes, {} uploads) does not hold this upload's {} bytes",
            user.reserved, user.active_uploads, up.size
        )));
    }
    user.reserved -= up.size;
    user.active_uploads -= count;
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
    for p in ended {
        // A partial is not a file of its own: stored, with no file (HEAD answers 404).
        let mut done = p.clone();
        done.state = UploadState::Stored;
        done.ended_at = Some(now);
        state.clear_chunks(owner, &p.id);
        super::tus::ended(state, owner, &p.id, now);
        state.save_upload(Some(&p), &done);
        state.forget_progress(owner, &p.id);
    }
    let mut done = up.clone();
    done.state = UploadState::Stored;
    done.file_id = Some(file.id.clone());
    done.ended_at = Some(now);
    super::tus::ended(state, owner, upload_id, now);
    state.save_upload(Some(&up), &done);
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

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, Tier};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 10_000,
        max_file_size: 5_000,
        max_concurrent_uploads: 8,
    };

    fn partial(id: &str, size: u64) -> Command {
        Command::CreateTusPartial {
            create: Box::new(Command::CreateUpload {
                upload_id: id.into(),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: "part".into(),
                mime: None,
                size,
                chunk_size: 64,
                blake3: None,
                idempotency_key: None,
                ttl_ms: 10_000,
                now: 1,
            }),
            metadata: None,
        }
    }

    fn plain(id: &str, size: u64) -> Command {
        let Command::CreateTusPartial { create, metadata } = partial(id, size) else {
            unreachable!()
        };
        Command::CreateTusUpload { create, metadata }
    }

    fn final_of(id: &str, partials: &[&str], now: u64) -> Command {
        Command::CreateTusFinal {
            upload_id: id.into(),
            owner: "ann".into(),
            limits: LIMITS,
            name: "whole.bin".into(),
            mime: Some("application/octet-stream".into()),
            metadata: Some("filename d2hvbGUuYmlu".into()),
            partials: partials.iter().map(|p| p.to_string()).collect(),
            header: format!("final;{}", partials.join(" ")),
            ttl_ms: 10_000,
            now,
        }
    }

    fn stage_and_offload(s: &mut State, id: &str, index: u32, len: u64) {
        apply(
            s,
            Command::ChunkStaged {
                owner: "ann".into(),
                upload_id: id.into(),
                index,
                node: 1,
                len,
                blake3: format!("h{id}{index}"),
                cv: "cv".into(),
                now: 5,
            },
        )
        .unwrap();
        apply(
            s,
            Command::ChunkOffloaded {
                owner: "ann".into(),
                upload_id: id.into(),
                index,
                etag: format!("e{id}{index}"),
                node: 1,
            },
        )
        .unwrap();
    }

    fn complete(id: &str) -> Command {
        Command::CompleteTusFinal {
            owner: "ann".into(),
            upload_id: id.into(),
            file_id: "file".into(),
            blake3: "whole".into(),
            scan: false,
            now: 9,
        }
    }

    fn user(s: &State) -> (u64, u64, u32) {
        let u = s.user("ann").unwrap();
        (u.used, u.reserved, u.active_uploads)
    }

    #[test]
    fn partials_become_the_parts_of_one_final_file() {
        let mut s: State = State::default();
        apply(&mut s, partial("a", 100)).unwrap();
        apply(&mut s, partial("b", 50)).unwrap();
        assert_eq!(user(&s), (0, 150, 2));
        let out = apply(&mut s, final_of("f", &["a", "b"], 2)).unwrap();
        assert!(matches!(out, Outcome::Upload(u) if u.size == 150));
        // The final reserves nothing more and is not one more upload in progress.
        assert_eq!(user(&s), (0, 150, 2));
        let claim = |id: &str| match s.concat("ann", id) {
            Some(Concat::Partial { into: Some(c) }) => (c.final_id, c.first_part),
            other => panic!("{other:?}"),
        };
        assert_eq!(claim("a"), ("f".to_string(), 0));
        assert_eq!(
            claim("b"),
            ("f".to_string(), 2),
            "a has two chunks: parts 1 and 2"
        );
        // Not whole yet: refused, nothing changed.
        stage_and_offload(&mut s, "a", 0, 64);
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, complete("f")),
            Err(ModelError::Invalid(_))
        ));
        assert_eq!(s, before);
        stage_and_offload(&mut s, "a", 1, 36);
        stage_and_offload(&mut s, "b", 0, 50);
        let out = apply(&mut s, complete("f")).unwrap();
        assert!(matches!(&out, Outcome::File(f) if f.size == 150 && f.object_key == "uploads/f"));
        assert_eq!(user(&s), (150, 0, 0));
        for p in ["a", "b"] {
            let up = s.upload_record("ann", p).unwrap();
            assert_eq!((up.state, up.file_id), (UploadState::Stored, None));
        }
        // Completed again (a retry): the same file.
        assert_eq!(apply(&mut s, complete("f")).unwrap(), out);
    }

    #[test]
    fn a_final_refuses_what_is_not_a_free_partial_and_changes_nothing() {
        let mut s: State = State::default();
        apply(&mut s, partial("a", 100)).unwrap();
        apply(&mut s, partial("b", 100)).unwrap();
        apply(&mut s, plain("p", 10)).unwrap();
        apply(&mut s, final_of("f", &["a"], 2)).unwrap();
        let before = s.clone();
        let refused = [
            (final_of("g", &["a", "b"], 3), "taken"),
            (final_of("g", &["p"], 3), "not partial"),
            (final_of("g", &["zz"], 3), "unknown"),
            (final_of("g", &["b", "b"], 3), "twice"),
            (final_of("g", &[], 3), "empty"),
            (final_of("f", &["b"], 3), "id used"),
        ];
        for (cmd, why) in refused {
            let r = apply(&mut s, cmd);
            assert!(r.is_err(), "{why}: {r:?}");
            assert_eq!(s, before, "{why}: a refused final wrote something");
        }
        assert!(matches!(
            apply(&mut s, final_of("g", &["a"], 3)),
            Err(ModelError::PartialTaken { .. })
        ));
        // Too large for the tier when summed.
        apply(&mut s, partial("c", 4_000)).unwrap();
        apply(&mut s, partial("d", 4_000)).unwrap();
        assert!(matches!(
            apply(&mut s, final_of("g", &["c", "d"], 3)),
            Err(ModelError::FileTooLarge { size: 8_000, .. })
        ));
        // The final takes no bytes, and a partial is no file of its own.
        let stage_final = Command::ChunkStaged {
            owner: "ann".into(),
            upload_id: "f".into(),
            index: 0,
            node: 1,
            len: 100,
            blake3: "h".into(),
            cv: "cv".into(),
            now: 4,
        };
        assert!(apply(&mut s, stage_final).is_err());
        let complete_partial = Command::CompleteUpload {
            owner: "ann".into(),
            upload_id: "b".into(),
            file_id: "x".into(),
            blake3: "h".into(),
            scan: false,
            now: 4,
        };
        assert!(matches!(
            apply(&mut s, complete_partial),
            Err(ModelError::NotPartial(_))
        ));
        // Applied twice (a retry), the final answers the same upload.
        let again = apply(&mut s, final_of("f", &["a"], 2)).unwrap();
        assert!(matches!(again, Outcome::Upload(u) if u.id == "f"));
    }

    #[test]
    fn a_final_and_its_partials_end_together() {
        let mut s: State = State::default();
        apply(&mut s, partial("a", 100)).unwrap();
        apply(&mut s, partial("b", 50)).unwrap();
        apply(&mut s, partial("c", 10)).unwrap();
        apply(&mut s, final_of("f", &["a", "b"], 2)).unwrap();
        let abort = |id: &str| Command::AbortUpload {
            owner: "ann".into(),
            upload_id: id.into(),
            now: 3,
        };
        // Terminating the final ends its partials and gives back what they reserved.
        apply(&mut s, abort("f")).unwrap();
        for id in ["f", "a", "b"] {
            assert_eq!(
                s.upload_record("ann", id).unwrap().state,
                UploadState::Aborted
            );
        }
        assert_eq!(user(&s), (0, 10, 1), "c is untouched");
        // A partial that expires takes its final and the other partials with it.
        apply(&mut s, partial("d", 20)).unwrap();
        apply(&mut s, final_of("g", &["c", "d"], 4)).unwrap();
        stage_and_offload(&mut s, "d", 0, 20);
        // d's chunk at 5 kept the final alive too; c, idle since 1, is due at 10,001.
        let out = apply(
            &mut s,
            Command::ExpireUploads {
                now: 10_002,
                retention_ms: None,
            },
        )
        .unwrap();
        assert!(matches!(&out, Outcome::Expired(ids) if ids == &["c".to_string()]));
        for id in ["c", "d", "g"] {
            assert_eq!(
                s.upload_record("ann", id).unwrap().state,
                UploadState::Expired,
                "{id}"
            );
        }
        assert_eq!(user(&s), (0, 0, 0));
    }

    #[test]
    fn a_partials_chunks_are_whole_or_at_least_an_s3_part_but_the_last() {
        const MIB: u64 = 1 << 20;
        assert_eq!(partial_chunk_size(16 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(partial_chunk_size(10 * MIB, 8 * MIB), 16 * MIB);
        assert_eq!(partial_chunk_size(13 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(partial_chunk_size(20 * MIB, 8 * MIB), 32 * MIB);
        assert_eq!(partial_chunk_size(150_000, 65_536), 262_144, "one chunk");
        for size in [1, 5 * MIB, 7 * MIB + 3, 100 * MIB + 1, 3 << 30] {
            let c = partial_chunk_size(size, 8 * MIB);
            assert!(c.is_power_of_two(), "{size}: {c}");
            let last = size % c;
            assert!(
                last == 0 || last >= MIN_PART || size < MIN_PART,
                "{size}: {c}"
            );
        }
    }
}
