//! Files and the blobs they point at (one blob per content per owner).

use super::events::EventKind;
use super::uploads::{check_quota, check_size, user_for};
use super::{blob_id, ApplyResult, Blob, File, Garbage, Millis, ModelError, Outcome, State};
use super::{ScanState, Tier, TierLimits, Upload, UploadState, User};
use crate::kv::KvMut;

pub(super) struct ContentOf<'a> {
    pub upload: &'a Upload,
    pub file_id: &'a str,
    pub blake3: String,
    pub scan: bool,
    pub now: Millis,
}

/// Records the file an upload made and its blob: the same content already stored means the
/// file points at that object and the new one becomes garbage. Counts the bytes as `user`'s
/// usage unless the content is known to be infected. An upload placed with `replace` whose
/// name is a file's in its folder becomes that file's new version instead (the file answered
/// is that one). The caller saves `user`.
pub(super) fn record_file<K: KvMut>(
    state: &mut State<K>,
    user: &mut User,
    c: ContentOf<'_>,
) -> File {
    let up = c.upload;
    let placement = super::folders::take_placement(state, &up.owner, &up.id);
    let object_key = reference_blob(
        state,
        user,
        Content {
            owner: &up.owner,
            blake3: &c.blake3,
            size: up.size,
            object_key: &up.object_key,
            scan: c.scan,
            now: c.now,
        },
    );
    if let Some((target, keep)) = placement
        .as_ref()
        .and_then(|p| super::folders::replace_target(state, &up.owner, p, &up.name))
    {
        return super::versions::add(
            state,
            user,
            target,
            super::versions::NewContent {
                version_id: up.id.clone(),
                size: up.size,
                blake3: c.blake3,
                mime: up.mime.clone(),
                object_key,
                now: c.now,
            },
            keep,
        );
    }
    let mut file = File {
        id: c.file_id.to_string(),
        owner: up.owner.clone(),
        name: up.name.clone(),
        size: up.size,
        blake3: c.blake3,
        mime: up.mime.clone(),
        object_key,
        upload_id: up.id.clone(),
        created_at: c.now,
    };
    super::folders::place_new_file(state, &mut file, placement);
    state.put_file(&file);
    file
}

pub(super) struct Content<'a> {
    pub owner: &'a str,
    pub blake3: &'a str,
    pub size: u64,
    /// Where the uploaded bytes are.
    pub object_key: &'a str,
    pub scan: bool,
    pub now: Millis,
}

/// A new version of `c`'s content references its blob (made now, or found: then the uploaded
/// object is garbage) and counts its bytes in `user`'s usage unless the content is infected.
/// Answers the object the version reads.
pub(super) fn reference_blob<K: KvMut>(
    state: &mut State<K>,
    user: &mut User,
    c: Content<'_>,
) -> String {
    let bid = blob_id(c.owner, c.blake3);
    match state.blob(&bid) {
        Some(mut blob) => {
            if !matches!(blob.scan, ScanState::Infected { .. }) {
                user.used += c.size;
            }
            blob.refcount += 1;
            state.save_blob(&blob);
            state.put_garbage(&Garbage {
                object_key: c.object_key.to_string(),
                multipart_id: None,
                since: c.now,
            });
            blob.object_key
        }
        None => {
            user.used += c.size;
            // Once the cluster has had a scanner, a node that has none (yet) stores new
            // content as waiting for one: never as unscanned.
            let scan = c.scan || state.scanner_found();
            state.save_blob(&Blob {
                owner: c.owner.to_string(),
                blake3: c.blake3.to_string(),
                object_key: c.object_key.to_string(),
                size: c.size,
                refcount: 1,
                scan: if scan {
                    ScanState::Pending
                } else {
                    ScanState::Unscanned
                },
                quarantined: false,
            });
            c.object_key.to_string()
        }
    }
}

/// A version of `size` bytes of the content `blake3` is gone: its bytes leave `user`'s usage
/// (unless the content is infected: they left it then), and the blob, once nothing points at
/// it, leaves with its object.
pub(super) fn unreference_blob<K: KvMut>(
    state: &mut State<K>,
    user: Option<&mut User>,
    owner: &str,
    blake3: &str,
    size: u64,
    now: Millis,
) {
    let blob = state.blob(&blob_id(owner, blake3));
    let infected = blob
        .as_ref()
        .is_some_and(|b| matches!(b.scan, ScanState::Infected { .. }));
    if let Some(user) = user {
        if !infected {
            super::release(&mut user.used, size);
        }
    }
    if let Some(mut blob) = blob {
        super::release(&mut blob.refcount, 1);
        if blob.refcount > 0 {
            state.save_blob(&blob);
        } else {
            state.remove_blob(&blob);
            // A quarantined blob whose object was already deleted has no object left.
            if !blob.object_key.is_empty() {
                state.put_garbage(&Garbage {
                    object_key: blob.object_key,
                    multipart_id: None,
                    since: now,
                });
            }
        }
    }
}

pub(super) struct NewFile {
    pub upload_id: String,
    pub file_id: String,
    pub owner: String,
    pub tier: Tier,
    pub limits: TierLimits,
    pub name: String,
    pub mime: Option<String>,
    pub size: u64,
    pub blake3: String,
    pub idempotency_key: Option<String>,
    pub object_key: String,
    pub scan: bool,
    pub now: Millis,
}

pub(super) fn store<K: KvMut>(state: &mut State<K>, n: NewFile) -> ApplyResult {
    let owner = n.owner.as_str();
    if let Some(k) = &n.idempotency_key {
        if let Some(existing) = state.idempotent_upload(owner, k) {
            let up = state
                .upload_record(owner, &existing)
                .ok_or(ModelError::NotFound)?;
            let ended_without_file =
                matches!(up.state, UploadState::Aborted | UploadState::Expired);
            // A key whose upload was aborted or expired is free again: this file takes it.
            if !ended_without_file {
                if up.name != n.name
                    || up.size != n.size
                    || up.expected_blake3.as_deref().is_some_and(|b| b != n.blake3)
                    || up.mime != n.mime
                {
                    return Err(ModelError::IdempotencyConflict);
                }
                return match (up.state, &up.file_id) {
                    (UploadState::Stored, Some(f)) => state
                        .file(owner, f)
                        .map(Outcome::File)
                        .ok_or(ModelError::NotFound),
                    _ => Err(ModelError::UploadNotActive {
                        state: up.state.as_str().into(),
                    }),
                };
            }
        }
    }
    check_size(n.size, &n.limits)?;
    if state.upload_record(owner, &n.upload_id).is_some() || state.file_owner(&n.file_id).is_some()
    {
        // The same proposal applied twice answers with the file it made (or the file it
        // gave a new version).
        if let Some(f) = state.file(owner, &n.file_id) {
            if f.name == n.name && f.size == n.size && f.created_at == n.now {
                return Ok(Outcome::File(f));
            }
        }
        if let Some(up) = state.upload_record(owner, &n.upload_id) {
            if up.state == UploadState::Stored && up.created_at == n.now {
                if let Some(f) = up.file_id.and_then(|f| state.file(owner, &f)) {
                    return Ok(Outcome::File(f));
                }
            }
        }
        return Err(ModelError::Invalid("upload or file id already used".into()));
    }
    let mut user = user_for(state, owner, n.tier, &n.limits);
    check_quota(&user, n.size)?;
    let upload = Upload {
        id: n.upload_id.clone(),
        owner: owner.to_string(),
        name: n.name,
        mime: n.mime,
        size: n.size,
        chunk_size: n.size.max(1).next_power_of_two(),
        expected_blake3: Some(n.blake3.clone()),
        idempotency_key: n.idempotency_key.clone(),
        object_key: n.object_key,
        multipart_id: None,
        chunks: Vec::new(),
        state: UploadState::Stored,
        created_at: n.now,
        expires_at: n.now,
        ttl_ms: 0,
        file_id: Some(n.file_id.clone()),
        ended_at: Some(n.now),
    };
    let file = record_file(
        state,
        &mut user,
        ContentOf {
            upload: &upload,
            file_id: &n.file_id,
            blake3: n.blake3,
            scan: n.scan,
            now: n.now,
        },
    );
    state.put_user(&user);
    // The upload record of a one-request file serves only its idempotency key (no client
    // ever sees its upload id): without a key, the file, its blob and their indexes are all
    // that is kept, half the records of a small file.
    // A new version keeps it too: a retry finds the file by it (the file id is not new).
    if let Some(k) = &n.idempotency_key {
        state.put_idempotency(owner, k, &n.upload_id);
    }
    if n.idempotency_key.is_some() || file.id != n.file_id {
        let mut upload = upload;
        upload.file_id = Some(file.id.clone());
        state.save_upload(None, &upload);
    }
    state.emit(
        owner,
        EventKind::UploadCompleted {
            upload_id: n.upload_id,
            file_id: file.id.clone(),
            name: file.name.clone(),
            size: file.size,
        },
    );
    Ok(Outcome::File(file))
}

pub(super) fn rename<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    file_id: &str,
    name: String,
) -> ApplyResult {
    let mut file = state
        .live_file(owner, file_id)
        .ok_or(ModelError::NotFound)?;
    super::folders::file_renamed(state, &file, &name);
    file.name = name;
    state.put_file(&file);
    state.emit(
        owner,
        EventKind::FileRenamed {
            file_id: file.id.clone(),
            name: file.name.clone(),
        },
    );
    Ok(Outcome::File(file))
}

pub(super) fn delete<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    file_id: &str,
    now: Millis,
) -> ApplyResult {
    let file = state.file(owner, file_id).ok_or(ModelError::NotFound)?;
    state.remove_file(&file);
    // Deleted for good from the trash too (a `DeleteFile` of a trashed file, or a purge).
    super::trash::file_gone(state, owner, file_id);
    super::folders::file_removed(state, &file);
    super::links::file_deleted(state, owner, file_id);
    super::shares::target_deleted(state, owner, file_id);
    let mut user = state.user(owner);
    super::versions::file_deleted(state, user.as_mut(), &file, now);
    unreference_blob(state, user.as_mut(), owner, &file.blake3, file.size, now);
    if let Some(user) = &user {
        state.put_user(user);
    }
    state.emit(
        owner,
        EventKind::FileDeleted {
            file_id: file.id.clone(),
        },
    );
    Ok(Outcome::File(file))
}
