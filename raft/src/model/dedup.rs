//! Dedup: an upload that declares the BLAKE3 of content its owner already stores (and that is
//! not infected) becomes a file at once, with no byte sent. Per owner only: a declared hash
//! never finds another user's content (that would tell anyone whether a file exists), and
//! each file counts its logical size in its owner's usage.

use super::files::{self, NewFile};
use super::uploads::{self, NewUpload};
use super::{blob_id, ApplyResult, Command, ModelError, ScanState, State, UploadState};
use crate::kv::KvMut;

/// `create` (a `CreateUpload`) as a file of the content already stored, when its owner stores
/// content of the declared hash and size that is not infected; as an upload session otherwise.
/// A retry, or a create whose idempotency key names an upload, is answered as before: with the
/// upload session while it is open, with the file once it is stored.
pub(super) fn create_or_dedup<K: KvMut>(
    state: &mut State<K>,
    create: Command,
    file_id: String,
) -> ApplyResult {
    let Some(n) = NewUpload::of(create, false) else {
        return Err(ModelError::Invalid(
            "a dedup create wraps a CreateUpload".into(),
        ));
    };
    if !stored_already(state, &n) {
        return uploads::create(state, n);
    }
    let blake3 = n.blake3.clone().unwrap_or_default();
    files::store(
        state,
        NewFile {
            object_key: format!("uploads/{}", n.upload_id),
            upload_id: n.upload_id,
            file_id,
            owner: n.owner,
            tier: n.tier,
            limits: n.limits,
            name: n.name,
            mime: n.mime,
            size: n.size,
            blake3,
            idempotency_key: n.idempotency_key,
            // The blob exists: its scan state is the file's.
            scan: false,
            now: n.now,
        },
    )
}

/// Whether `n` is answered with a file: the retry of a create that made one, a create whose
/// idempotency key names a stored upload, or new content its owner stores already.
fn stored_already<K: KvMut>(state: &State<K>, n: &NewUpload) -> bool {
    let Some(h) = &n.blake3 else {
        return false;
    };
    // Applied before (a retry): answered as the first time, upload or file.
    if let Some(up) = state.upload_record(&n.owner, &n.upload_id) {
        return up.state == UploadState::Stored;
    }
    let keyed = n
        .idempotency_key
        .as_ref()
        .and_then(|k| state.idempotent_upload(&n.owner, k))
        .and_then(|id| state.upload_record(&n.owner, &id));
    match keyed.map(|up| up.state) {
        Some(UploadState::Stored) => return true,
        Some(UploadState::Uploading) => return false,
        // The key of an aborted or expired upload is free again.
        _ => {}
    }
    state.blob(&blob_id(&n.owner, h)).is_some_and(|b| {
        b.refcount > 0
            && b.size == n.size
            && !b.quarantined
            && !matches!(b.scan, ScanState::Infected { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Outcome, Tier, TierLimits};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 1_000,
        max_file_size: 500,
        max_concurrent_uploads: 4,
    };

    fn store(owner: &str, file: &str, size: u64, hash: &str) -> Command {
        Command::StoreFile {
            upload_id: format!("u-{file}"),
            file_id: file.into(),
            owner: owner.into(),
            tier: Tier::Basic,
            limits: LIMITS,
            name: "a.txt".into(),
            mime: None,
            size,
            blake3: hash.into(),
            idempotency_key: None,
            object_key: format!("uploads/u-{file}"),
            scan: false,
            now: 1,
        }
    }

    fn dedup(owner: &str, up: &str, size: u64, hash: &str, key: Option<&str>) -> Command {
        Command::CreateOrDedup {
            create: Box::new(Command::CreateUpload {
                upload_id: up.into(),
                owner: owner.into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: "b.txt".into(),
                mime: None,
                size,
                chunk_size: 64,
                blake3: Some(hash.into()),
                idempotency_key: key.map(str::to_string),
                ttl_ms: 1_000,
                now: 5,
            }),
            file_id: format!("f-{up}"),
        }
    }

    #[test]
    fn a_declared_hash_its_owner_stores_makes_a_file_at_once() {
        let mut s: State = State::default();
        apply(&mut s, store("ann", "f1", 100, "h")).unwrap();
        let out = apply(&mut s, dedup("ann", "u2", 100, "h", Some("k"))).unwrap();
        let Outcome::File(f) = out.clone() else {
            panic!("{out:?}")
        };
        assert_eq!((f.size, f.object_key.as_str()), (100, "uploads/u-f1"));
        let u = s.user("ann").unwrap();
        assert_eq!(
            (u.used, u.reserved, u.active_uploads),
            (200, 0, 0),
            "logical size"
        );
        assert_eq!(s.blob(&blob_id("ann", "h")).unwrap().refcount, 2);
        // Applied again (a retry) or asked again with its key: the same file.
        assert_eq!(
            apply(&mut s, dedup("ann", "u2", 100, "h", Some("k"))).unwrap(),
            out
        );
        assert_eq!(
            apply(&mut s, dedup("ann", "u3", 100, "h", Some("k"))).unwrap(),
            out
        );
    }

    #[test]
    fn another_users_content_another_size_or_infected_content_is_uploaded() {
        let mut s: State = State::default();
        apply(&mut s, store("ann", "f1", 100, "h")).unwrap();
        for cmd in [
            dedup("bob", "u2", 100, "h", None),
            dedup("ann", "u3", 99, "h", None),
            dedup("ann", "u4", 100, "other", None),
        ] {
            assert!(matches!(apply(&mut s, cmd), Ok(Outcome::Upload(_))));
        }
        // Content found infected is never a dedup's source.
        let mut infected = store("ann", "f9", 100, "bad");
        if let Command::StoreFile { scan, .. } = &mut infected {
            *scan = true;
        }
        apply(&mut s, infected).unwrap();
        let blob = blob_id("ann", "bad");
        apply(
            &mut s,
            Command::LeaseScan {
                blob: blob.clone(),
                holder: 1,
                now: 6,
                until: 100,
            },
        )
        .unwrap();
        apply(
            &mut s,
            Command::ScanFinished {
                blob,
                holder: 1,
                verdict: super::super::ScanVerdict::Infected {
                    signature: "Eicar".into(),
                },
                now: 7,
            },
        )
        .unwrap();
        let out = apply(&mut s, dedup("ann", "u5", 100, "bad", None));
        assert!(matches!(out, Ok(Outcome::Upload(_))), "{out:?}");
        // Over the quota, a dedup is refused like any new file (nothing changes).
        let mut s: State = State::default();
        apply(&mut s, store("ann", "f1", 400, "h")).unwrap();
        apply(&mut s, store("ann", "f2", 400, "g")).unwrap();
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, dedup("ann", "u6", 400, "h", None)),
            Err(ModelError::QuotaExceeded { .. })
        ));
        assert_eq!(s, before);
    }
}
