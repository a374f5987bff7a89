//! Versions: a file's earlier contents, kept when an upload replaces it (`on_conflict =
//! replace`) or an earlier version is restored (as a new version, as Drive does).
//!
//! Records: the current version is the file record itself (its `upload_id` is the version's
//! id); each earlier one at `fv/{owner}/{file_id}/{created_at:020}-{version_id}` (oldest first
//! in key order), with its file-of-blob entry `fb/{owner}/{blake3}/{file_id}/{version_id}`
//! (its size) beside the current version's `fb/{owner}/{blake3}/{file_id}`. So a blob's
//! refcount counts the versions that point at it, usage counts every kept version's bytes,
//! and an infected verdict releases the bytes of every version of that content.
//! `fvt/{owner}/{file_id}`: when the current version was made (absent: the file's
//! `created_at`). A file with one version has no record here.

use serde::{Deserialize, Serialize};

use super::files;
use super::uploads::check_quota;
use super::{blob_id, ApplyResult, File, Millis, ModelError, Outcome, ScanState, State, User};
use crate::kv::{Kv, KvMut};

/// Versions a file keeps by default (`versions.keep`), the current one included.
pub const DEFAULT_KEEP: u32 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The upload that made it (or the restore that brought it back).
    pub id: String,
    pub size: u64,
    pub blake3: String,
    pub mime: Option<String>,
    pub created_at: Millis,
}

fn versions_prefix(owner: &str, file_id: &str) -> Vec<u8> {
    format!("fv/{owner}/{file_id}/").into_bytes()
}

fn version_key(owner: &str, file_id: &str, v: &Version) -> Vec<u8> {
    format!("fv/{owner}/{file_id}/{:020}-{}", v.created_at, v.id).into_bytes()
}

fn version_of_blob(owner: &str, file_id: &str, v: &Version) -> Vec<u8> {
    format!("fb/{owner}/{}/{file_id}/{}", v.blake3, v.id).into_bytes()
}

fn current_since_key(owner: &str, file_id: &str) -> Vec<u8> {
    format!("fvt/{owner}/{file_id}").into_bytes()
}

impl<K: Kv> State<K> {
    /// A file's earlier versions, oldest first (the current one is the file record).
    pub fn old_versions(&self, owner: &str, file_id: &str) -> Vec<Version> {
        let prefix = versions_prefix(owner, file_id);
        let mut out = Vec::new();
        self.kv().scan(&prefix, None, &mut |_, v| {
            if let Ok(v) = crate::codec::decode(v) {
                out.push(v);
            }
            true
        });
        out
    }

    /// The version a file's record holds now.
    pub fn current_version(&self, f: &File) -> Version {
        Version {
            id: f.upload_id.clone(),
            size: f.size,
            blake3: f.blake3.clone(),
            mime: f.mime.clone(),
            created_at: self
                .read_at(&current_since_key(&f.owner, &f.id))
                .unwrap_or(f.created_at),
        }
    }

    /// Every version of a file, newest (the current one) first.
    pub fn versions(&self, owner: &str, file_id: &str) -> Option<Vec<Version>> {
        let f = self.file(owner, file_id)?;
        let mut all = vec![self.current_version(&f)];
        all.extend(self.old_versions(owner, file_id).into_iter().rev());
        Some(all)
    }
}

/// New content for a file, its blob referenced already.
pub(super) struct NewContent {
    pub version_id: String,
    pub size: u64,
    pub blake3: String,
    pub mime: Option<String>,
    pub object_key: String,
    pub now: Millis,
}

/// `file` gets `new` as its current version; its current one becomes an earlier version, and
/// the oldest beyond `keep` are pruned (their bytes released, their blobs unreferenced). The
/// caller saves `user`.
pub(super) fn add<K: KvMut>(
    state: &mut State<K>,
    user: &mut User,
    mut file: File,
    new: NewContent,
    keep: u32,
) -> File {
    let owner = file.owner.clone();
    let old = state.current_version(&file);
    state.delete_at(&super::state::keys::file_of_blob(
        &owner,
        &file.blake3,
        &file.id,
    ));
    state.write_at(&version_key(&owner, &file.id, &old), &old);
    state.write_at(&version_of_blob(&owner, &file.id, &old), &old.size);
    file.size = new.size;
    file.blake3 = new.blake3;
    file.mime = new.mime;
    file.object_key = new.object_key;
    file.upload_id = new.version_id;
    state.put_file(&file);
    state.write_at(&current_since_key(&owner, &file.id), &new.now);
    let mut old = state.old_versions(&owner, &file.id);
    let keep = keep.max(1) as usize;
    while old.len() + 1 > keep {
        let v = old.remove(0);
        forget(state, Some(&mut *user), &owner, &file.id, &v, new.now);
    }
    file
}

/// An earlier version leaves: its records go and its blob loses a reference.
fn forget<K: KvMut>(
    state: &mut State<K>,
    user: Option<&mut User>,
    owner: &str,
    file_id: &str,
    v: &Version,
    now: Millis,
) {
    state.delete_at(&version_key(owner, file_id, v));
    state.delete_at(&version_of_blob(owner, file_id, v));
    files::unreference_blob(state, user, owner, &v.blake3, v.size, now);
}

/// A file is deleted: every earlier version with it. The caller saves `user`.
pub(super) fn file_deleted<K: KvMut>(
    state: &mut State<K>,
    mut user: Option<&mut User>,
    file: &File,
    now: Millis,
) {
    for v in state.old_versions(&file.owner, &file.id) {
        forget(state, user.as_deref_mut(), &file.owner, &file.id, &v, now);
    }
    state.delete_at(&current_since_key(&file.owner, &file.id));
}

/// An earlier version becomes the current one again, as a new version (`new_version_id`):
/// its bytes count once more against the quota, and the oldest beyond `keep` are pruned.
pub(super) fn restore<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    file_id: &str,
    version_id: &str,
    new_version_id: String,
    keep: u32,
    now: Millis,
) -> ApplyResult {
    let file = state
        .live_file(owner, file_id)
        .ok_or(ModelError::NotFound)?;
    // Applied again (a retry), or the current version asked for: nothing to do.
    if file.upload_id == new_version_id || file.upload_id == version_id {
        return Ok(Outcome::File(file));
    }
    let v = state
        .old_versions(owner, file_id)
        .into_iter()
        .find(|v| v.id == version_id)
        .ok_or(ModelError::NotFound)?;
    let mut blob = state
        .blob(&blob_id(owner, &v.blake3))
        .ok_or(ModelError::NotFound)?;
    let mut user = state.user(owner).ok_or(ModelError::NotFound)?;
    let infected = matches!(blob.scan, ScanState::Infected { .. });
    if !infected {
        check_quota(&user, v.size)?;
        user.used += v.size;
    }
    blob.refcount += 1;
    state.save_blob(&blob);
    let file = add(
        state,
        &mut user,
        file,
        NewContent {
            version_id: new_version_id,
            size: v.size,
            blake3: v.blake3,
            mime: v.mime,
            object_key: blob.object_key,
            now,
        },
        keep,
    );
    state.put_user(&user);
    state.emit(
        owner,
        super::events::EventKind::FileVersionRestored {
            file_id: file.id.clone(),
            version_id: version_id.to_string(),
        },
    );
    Ok(Outcome::File(file))
}

#[cfg(test)]
mod tests {
    use super::super::folders::{OnConflict, Placement};
    use super::super::{apply, Command, Tier, TierLimits};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 100,
        max_file_size: 50,
        max_concurrent_uploads: 8,
    };

    /// A one-request file "a.txt" in the root of `size` bytes of content `hash`, replacing
    /// the file of that name if there is one (keeping 3 versions).
    fn put(upload: &str, size: u64, hash: &str, now: u64) -> Command {
        Command::Placed {
            placement: Placement {
                folder: None,
                on_conflict: OnConflict::Replace { keep: 3 },
            },
            cmd: Box::new(Command::StoreFile {
                upload_id: upload.into(),
                file_id: format!("f-{upload}"),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: "a.txt".into(),
                mime: None,
                size,
                blake3: hash.into(),
                idempotency_key: None,
                object_key: format!("o/{upload}"),
                scan: false,
                now,
            }),
        }
    }

    fn restore(version: &str, new: &str) -> Command {
        Command::RestoreVersion {
            owner: "ann".into(),
            file_id: "f-u1".into(),
            version_id: version.into(),
            new_version_id: new.into(),
            keep: 3,
            now: 50,
        }
    }

    fn used(s: &State) -> u64 {
        s.user("ann").unwrap().used
    }

    fn refs(s: &State, hash: &str) -> u64 {
        s.blob(&blob_id("ann", hash)).map_or(0, |b| b.refcount)
    }

    fn ids(s: &State) -> Vec<String> {
        let v = s.versions("ann", "f-u1").unwrap();
        v.into_iter().map(|v| v.id).collect()
    }

    #[test]
    fn a_replacing_upload_is_a_new_version_of_the_file_and_usage_counts_every_version() {
        let mut s: State = State::default();
        apply(&mut s, put("u1", 10, "h1", 1)).unwrap();
        let out = apply(&mut s, put("u2", 20, "h2", 2)).unwrap();
        let Outcome::File(f) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (f.id.as_str(), f.size, f.upload_id.as_str()),
            ("f-u1", 20, "u2")
        );
        assert_eq!(ids(&s), ["u2", "u1"]);
        assert_eq!(s.versions("ann", "f-u1").unwrap()[0].created_at, 2);
        assert_eq!((used(&s), refs(&s, "h1"), refs(&s, "h2")), (30, 1, 1));
        assert!(s.file("ann", "f-u2").is_none(), "no second file");
        // The same proposal applied again answers the same file, and adds nothing.
        assert_eq!(apply(&mut s, put("u2", 20, "h2", 2)).unwrap(), out);
        assert_eq!((ids(&s).len(), used(&s)), (2, 30));
    }

    #[test]
    fn a_restore_is_a_new_version_and_the_oldest_beyond_keep_are_pruned() {
        let mut s: State = State::default();
        apply(&mut s, put("u1", 10, "h1", 1)).unwrap();
        apply(&mut s, put("u2", 20, "h2", 2)).unwrap();
        apply(&mut s, restore("u1", "r1")).unwrap();
        assert_eq!(ids(&s), ["r1", "u2", "u1"]);
        assert_eq!((used(&s), refs(&s, "h1")), (40, 2));
        // Applied again: nothing new.
        apply(&mut s, restore("u1", "r1")).unwrap();
        assert_eq!(ids(&s).len(), 3);
        // A fourth version: the oldest (u1) goes; its content stays, r1 points at it.
        apply(&mut s, put("u3", 5, "h3", 60)).unwrap();
        assert_eq!(ids(&s), ["u3", "r1", "u2"]);
        assert_eq!((used(&s), refs(&s, "h1")), (35, 1));
        apply(&mut s, put("u4", 5, "h4", 61)).unwrap();
        apply(&mut s, put("u5", 5, "h5", 62)).unwrap();
        // u2 and r1 pruned: their blobs are gone and their objects are garbage.
        assert_eq!((refs(&s, "h1"), refs(&s, "h2")), (0, 0));
        assert!(s.garbage(100).iter().any(|g| g.object_key == "o/u1"));
        assert!(s.garbage(100).iter().any(|g| g.object_key == "o/u2"));
        assert_eq!(used(&s), 15);
        // Unknown versions: 404.
        assert!(matches!(
            apply(&mut s, restore("u1", "r2")),
            Err(ModelError::NotFound)
        ));
    }

    #[test]
    fn a_restore_over_the_quota_is_refused_and_changes_nothing() {
        let mut s: State = State::default();
        apply(&mut s, put("u1", 45, "h1", 1)).unwrap();
        apply(&mut s, put("u2", 45, "h2", 2)).unwrap();
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, restore("u1", "r1")),
            Err(ModelError::QuotaExceeded { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn deleting_a_file_releases_every_version() {
        let mut s: State = State::default();
        apply(&mut s, put("u1", 10, "h1", 1)).unwrap();
        apply(&mut s, put("u2", 20, "h2", 2)).unwrap();
        apply(&mut s, restore("u1", "r1")).unwrap();
        apply(
            &mut s,
            Command::DeleteFile {
                owner: "ann".into(),
                file_id: "f-u1".into(),
                now: 70,
            },
        )
        .unwrap();
        assert_eq!((used(&s), refs(&s, "h1"), refs(&s, "h2")), (0, 0, 0));
        assert!(s.old_versions("ann", "f-u1").is_empty());
        assert!(s.kv().get(b"fvt/ann/f-u1").is_none());
    }

    #[test]
    fn replace_never_makes_a_folder_a_file() {
        let mut s: State = State::default();
        apply(
            &mut s,
            Command::CreateFolder {
                owner: "ann".into(),
                folder_id: "d".into(),
                name: "a.txt".into(),
                parent: None,
                on_conflict: OnConflict::Fail,
                now: 1,
            },
        )
        .unwrap();
        assert!(matches!(
            apply(&mut s, put("u1", 10, "h1", 2)),
            Err(ModelError::NameTaken { .. })
        ));
    }
}
