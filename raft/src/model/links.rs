//! Share links: an unguessable token that lets anyone download one of its owner's files,
//! without an account, until it expires, is revoked, or has served its downloads.
//!
//! A link is found by its token alone (`lk/{token}`, the one record not keyed by its owner:
//! whoever holds a link has no account to name), with the owner's index `lo/{owner}/{token}`
//! and the file's `lf/{owner}/{file_id}/{token}`, so that deleting the file ends its links.
//!
//! A folder link shares a folder and everything under it: its `file_id` holds the folder's id
//! (ids are UUIDs, so the `lf/` index serves folders too) and `lkf/{token}` marks it, which
//! keeps the encoding of `Link` as it was.

use serde::{Deserialize, Serialize};

use super::state::keys;
use super::{ApplyResult, Millis, ModelError, Outcome, State};
use crate::kv::KvMut;

/// The most links one file may have.
pub const MAX_LINKS_PER_FILE: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub token: String,
    pub owner: String,
    pub file_id: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    /// An argon2 hash (PHC string) of the link's password, made by the proposer.
    pub password_hash: Option<String>,
    pub max_downloads: Option<u64>,
    pub downloads: u64,
}

impl Link {
    /// Whether the link still serves at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|t| now < t)
            && self.max_downloads.is_none_or(|m| self.downloads < m)
    }
}

/// What a `CreateLink` asks for.
pub(super) struct NewLink {
    pub token: String,
    pub owner: String,
    pub file_id: String,
    pub expires_at: Option<Millis>,
    pub password_hash: Option<String>,
    pub max_downloads: Option<u64>,
    pub now: Millis,
    /// `file_id` is a folder's id.
    pub folder: bool,
}

pub(super) fn create<K: KvMut>(state: &mut State<K>, n: NewLink) -> ApplyResult {
    if let Some(l) = state.link(&n.token) {
        // The same proposal applied twice answers with the link it made.
        if l.owner == n.owner && l.file_id == n.file_id && l.created_at == n.now {
            return Ok(Outcome::Link(l));
        }
        return Err(ModelError::Invalid("link token already used".into()));
    }
    // Nothing in the trash is shared.
    let target_exists = if n.folder {
        state.live_folder(&n.owner, &n.file_id).is_some()
    } else {
        state.live_file(&n.owner, &n.file_id).is_some()
    };
    if !target_exists {
        return Err(ModelError::NotFound);
    }
    let of_file = keys::links_of_file(&n.owner, &n.file_id);
    if state.keys_under(&of_file, MAX_LINKS_PER_FILE + 1).len() >= MAX_LINKS_PER_FILE {
        return Err(ModelError::Invalid(format!(
            "a file has at most {MAX_LINKS_PER_FILE} links: revoke one first"
        )));
    }
    let link = Link {
        token: n.token,
        owner: n.owner,
        file_id: n.file_id,
        created_at: n.now,
        expires_at: n.expires_at,
        password_hash: n.password_hash,
        max_downloads: n.max_downloads,
        downloads: 0,
    };
    state.write_at(&keys::link(&link.token), &link);
    if n.folder {
        state.write_at(&keys::folder_link(&link.token), &());
    }
    state.write_at(&keys::link_of_owner(&link.owner, &link.token), &());
    state.write_at(
        &keys::link_of_file(&link.owner, &link.file_id, &link.token),
        &(),
    );
    Ok(Outcome::Link(link))
}

/// Revokes one of `owner`'s links (another user's token is as unknown as a made-up one).
pub(super) fn revoke<K: KvMut>(state: &mut State<K>, owner: &str, token: &str) -> ApplyResult {
    let link = state
        .link(token)
        .filter(|l| l.owner == owner)
        .ok_or(ModelError::NotFound)?;
    remove(state, &link);
    Ok(Outcome::Done)
}

fn remove<K: KvMut>(state: &mut State<K>, link: &Link) {
    // A public file's link revoked: the file is private again.
    let public = public_key(&link.owner, &link.file_id);
    if state.read_at::<String>(&public).as_deref() == Some(link.token.as_str()) {
        state.delete_at(&public);
    }
    state.delete_at(&keys::link(&link.token));
    state.delete_at(&keys::folder_link(&link.token));
    state.delete_at(&keys::link_of_owner(&link.owner, &link.token));
    state.delete_at(&keys::link_of_file(&link.owner, &link.file_id, &link.token));
}

/// A public file's permanent link: `lpv/{owner}/{file_id}` holds its token.
fn public_key(owner: &str, file_id: &str) -> Vec<u8> {
    format!("lpv/{owner}/{file_id}").into_bytes()
}

impl<K: crate::kv::Kv> State<K> {
    /// The permanent link of a public file (`visibility: public`), if it is public.
    pub fn public_link(&self, owner: &str, file_id: &str) -> Option<Link> {
        let token: String = self.read_at(&public_key(owner, file_id))?;
        self.link(&token)
    }
}

/// A file made public gets a permanent link (no expiry, password or download count: `token`,
/// made by the proposer) and answers it; made private, that link ends. Public again: the same
/// link.
pub(super) fn set_visibility<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    file_id: &str,
    public: bool,
    token: String,
    now: Millis,
) -> ApplyResult {
    state
        .live_file(owner, file_id)
        .ok_or(ModelError::NotFound)?;
    let current = state.public_link(owner, file_id);
    match (public, current) {
        (true, Some(l)) => Ok(Outcome::Link(l)),
        (true, None) => {
            let out = create(
                state,
                NewLink {
                    token: token.clone(),
                    owner: owner.to_string(),
                    file_id: file_id.to_string(),
                    expires_at: None,
                    password_hash: None,
                    max_downloads: None,
                    now,
                    folder: false,
                },
            )?;
            state.write_at(&public_key(owner, file_id), &token);
            Ok(out)
        }
        (false, Some(l)) => {
            remove(state, &l);
            Ok(Outcome::Done)
        }
        (false, None) => Ok(Outcome::Done),
    }
}

/// One download through a link that counts its downloads: refused (`NotFound`, as for a link
/// that never was) once it has served them all or expired.
pub(super) fn downloaded<K: KvMut>(state: &mut State<K>, token: &str, now: Millis) -> ApplyResult {
    let mut link = state
        .link(token)
        .filter(|l| l.live(now))
        .ok_or(ModelError::NotFound)?;
    link.downloads += 1;
    state.write_at(&keys::link(token), &link);
    Ok(Outcome::Link(link))
}

/// The file (or folder) is gone: so are its links.
pub(super) fn file_deleted<K: KvMut>(state: &mut State<K>, owner: &str, file_id: &str) {
    let prefix = keys::links_of_file(owner, file_id);
    for k in state.keys_under(&prefix, usize::MAX) {
        let token = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(link) = state.link(&token) {
            remove(state, &link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, Tier, TierLimits};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 1_000,
        max_file_size: 500,
        max_concurrent_uploads: 4,
    };

    fn store(owner: &str, file: &str) -> Command {
        Command::StoreFile {
            upload_id: format!("u-{file}"),
            file_id: file.into(),
            owner: owner.into(),
            tier: Tier::Basic,
            limits: LIMITS,
            name: "a.txt".into(),
            mime: None,
            size: 10,
            blake3: format!("h{file}"),
            idempotency_key: None,
            object_key: format!("uploads/u-{file}"),
            scan: false,
            now: 1,
        }
    }

    fn link(token: &str, owner: &str, file: &str, max: Option<u64>) -> Command {
        Command::CreateLink {
            token: token.into(),
            owner: owner.into(),
            file_id: file.into(),
            expires_at: Some(1_000),
            password_hash: None,
            max_downloads: max,
            now: 5,
        }
    }

    fn download(token: &str, now: Millis) -> Command {
        Command::LinkDownloaded {
            token: token.into(),
            now,
        }
    }

    #[test]
    fn a_link_serves_until_it_expires_is_revoked_or_has_served_its_downloads() {
        let mut s: State = State::default();
        apply(&mut s, store("ann", "f")).unwrap();
        let before = s.clone();
        assert!(matches!(
            apply(&mut s, link("t0", "ann", "nope", None)),
            Err(ModelError::NotFound)
        ));
        assert!(matches!(
            apply(&mut s, link("t0", "bob", "f", None)),
            Err(ModelError::NotFound)
        ));
        assert_eq!(s, before, "a refused link wrote something");
        apply(&mut s, link("t1", "ann", "f", Some(2))).unwrap();
        apply(&mut s, link("t2", "ann", "f", None)).unwrap();
        assert_eq!(s.links_of("ann", None, 10).len(), 2);
        // Counted downloads: two, then none.
        apply(&mut s, download("t1", 6)).unwrap();
        apply(&mut s, download("t1", 7)).unwrap();
        assert!(matches!(
            apply(&mut s, download("t1", 8)),
            Err(ModelError::NotFound)
        ));
        // Expired at 1,000.
        assert!(s.link("t2").unwrap().live(999));
        assert!(!s.link("t2").unwrap().live(1_000));
        assert!(apply(&mut s, download("t2", 1_000)).is_err());
        // Only its owner revokes a link.
        let revoke = |owner: &str| Command::RevokeLink {
            owner: owner.into(),
            token: "t2".into(),
        };
        assert!(matches!(
            apply(&mut s, revoke("bob")),
            Err(ModelError::NotFound)
        ));
        apply(&mut s, revoke("ann")).unwrap();
        assert!(s.link("t2").is_none());
        // Deleting the file ends its links.
        apply(
            &mut s,
            Command::DeleteFile {
                owner: "ann".into(),
                file_id: "f".into(),
                now: 9,
            },
        )
        .unwrap();
        assert!(s.link("t1").is_none());
        assert!(s.links_of("ann", None, 10).is_empty());
    }
}
