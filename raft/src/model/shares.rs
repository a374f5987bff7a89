//! Sharing with users: an owner gives another user a role on a file or a folder (inherited by
//! everything under it): a viewer reads, an editor also renames files and adds versions (the
//! owner's quota pays). Revoking takes effect from its commit; a purge ends a target's shares.
//!
//! Records: `sh/{owner}/{target}/{user}` (the owner's, listed per target) and its mirror
//! `sg/{user}/{owner}/{target}` (what was shared with a user). Access is checked from a
//! file up through its folders, so a share on a folder reaches what is moved into it later and
//! stops reaching what is moved out.

use serde::{Deserialize, Serialize};

use super::folders::EntryKind;
use super::{ApplyResult, Millis, ModelError, Outcome, State};
use crate::kv::{Kv, KvMut};

/// The most users one file or folder may be shared with.
pub const MAX_SHARES_PER_TARGET: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    Editor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub owner: String,
    pub target: String,
    pub kind: EntryKind,
    pub user: String,
    pub role: Role,
    pub created_at: Millis,
}

fn share_key(owner: &str, target: &str, user: &str) -> Vec<u8> {
    format!("sh/{owner}/{target}/{user}").into_bytes()
}

fn target_prefix(owner: &str, target: &str) -> Vec<u8> {
    format!("sh/{owner}/{target}/").into_bytes()
}

fn granted_key(user: &str, owner: &str, target: &str) -> Vec<u8> {
    format!("sg/{user}/{owner}/{target}").into_bytes()
}

fn granted_prefix(user: &str) -> Vec<u8> {
    format!("sg/{user}/").into_bytes()
}

impl<K: Kv> State<K> {
    pub fn share(&self, owner: &str, target: &str, user: &str) -> Option<Share> {
        self.read_at(&share_key(owner, target, user))
    }

    /// The users a file or folder is shared with.
    pub fn shares_of(&self, owner: &str, target: &str) -> Vec<Share> {
        self.values(&target_prefix(owner, target), None, usize::MAX, |_| true)
    }

    /// Up to `limit` shares made with `user`, in (owner, target) order after `after`
    /// (`{owner}/{target}`).
    pub fn shared_with(&self, user: &str, after: Option<&str>, limit: usize) -> Vec<Share> {
        let prefix = granted_prefix(user);
        let from = after.map(|a| [prefix.as_slice(), a.as_bytes()].concat());
        self.values(&prefix, from.as_deref(), limit, |_| true)
    }

    /// `user`'s role on `owner`'s file `file_id` (the owner's is `Editor` and more: callers
    /// compare owners first): its own share or the strongest of its folders'. Nothing in the
    /// trash is shared.
    pub fn file_role(&self, owner: &str, file_id: &str, user: &str) -> Option<Role> {
        self.live_file(owner, file_id)?;
        let own = self.share(owner, file_id, user).map(|s| s.role);
        let inherited = self
            .file_folder(owner, file_id)
            .and_then(|f| self.folder_role(owner, &f, user));
        own.max(inherited)
    }

    /// `user`'s role on `owner`'s folder `folder` (inherited from the folders above it).
    pub fn folder_role(&self, owner: &str, folder: &str, user: &str) -> Option<Role> {
        self.live_folder(owner, folder)?;
        let mut best = None;
        let mut at = Some(folder.to_string());
        while let Some(id) = at {
            best = best.max(self.share(owner, &id, user).map(|s| s.role));
            at = self.folder(owner, &id).and_then(|f| f.parent);
        }
        best
    }
}

pub(super) struct NewShare {
    pub owner: String,
    pub target: String,
    pub kind: EntryKind,
    pub user: String,
    pub role: Role,
    pub now: Millis,
}

/// Shares a file or folder with `user` as `role` (a share that exists takes the new role).
pub(super) fn create<K: KvMut>(state: &mut State<K>, n: NewShare) -> ApplyResult {
    if n.user == n.owner || n.user.is_empty() {
        return Err(ModelError::Invalid(
            "a file is shared with another user".into(),
        ));
    }
    let exists = match n.kind {
        EntryKind::File => state.live_file(&n.owner, &n.target).is_some(),
        EntryKind::Folder => state.live_folder(&n.owner, &n.target).is_some(),
    };
    if !exists {
        return Err(ModelError::NotFound);
    }
    let prior = state.share(&n.owner, &n.target, &n.user);
    if prior.is_none()
        && state
            .keys_under(&target_prefix(&n.owner, &n.target), MAX_SHARES_PER_TARGET)
            .len()
            >= MAX_SHARES_PER_TARGET
    {
        return Err(ModelError::Invalid(format!(
            "a file or folder is shared with at most {MAX_SHARES_PER_TARGET} users"
        )));
    }
    let share = Share {
        created_at: prior.map_or(n.now, |p| p.created_at),
        owner: n.owner,
        target: n.target,
        kind: n.kind,
        user: n.user,
        role: n.role,
    };
    state.write_at(&share_key(&share.owner, &share.target, &share.user), &share);
    state.write_at(
        &granted_key(&share.user, &share.owner, &share.target),
        &share,
    );
    Ok(Outcome::Share(share))
}

/// Ends `user`'s share of a file or folder.
pub(super) fn revoke<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    target: &str,
    user: &str,
) -> ApplyResult {
    let share = state
        .share(owner, target, user)
        .ok_or(ModelError::NotFound)?;
    remove(state, &share);
    Ok(Outcome::Share(share))
}

fn remove<K: KvMut>(state: &mut State<K>, s: &Share) {
    state.delete_at(&share_key(&s.owner, &s.target, &s.user));
    state.delete_at(&granted_key(&s.user, &s.owner, &s.target));
}

/// `cmd` (a rename, a new version, a restored version of `owner`'s file `file`) made by
/// `actor`, another user: applied only if their role on the file, at this command's place in
/// the log, is at least `need` (so that nothing a revoke ended slips in after it): refused
/// with `NotFound` without a role, `Forbidden` with a weaker one.
pub(super) fn as_user<K: KvMut>(
    state: &mut State<K>,
    actor: &str,
    owner: &str,
    file: &str,
    need: Role,
    cmd: super::Command,
) -> ApplyResult {
    use super::Command as C;
    let names_the_file = match &cmd {
        C::MoveEntry {
            owner: o,
            id,
            kind: EntryKind::File,
            parent: None,
            ..
        }
        | C::RestoreVersion {
            owner: o,
            file_id: id,
            ..
        } => o == owner && id == file,
        C::Placed { cmd, .. } => {
            matches!(cmd.as_ref(), C::StoreFile { owner: o, .. } if o == owner)
        }
        _ => false,
    };
    if !names_the_file {
        return Err(ModelError::Invalid(
            "another user may only rename a file, or add or restore its versions".into(),
        ));
    }
    match state.file_role(owner, file, actor) {
        None => Err(ModelError::NotFound),
        Some(r) if r < need => Err(ModelError::Forbidden),
        Some(_) => super::apply(state, cmd),
    }
}

/// A file or folder is deleted for good: its shares end.
pub(super) fn target_deleted<K: KvMut>(state: &mut State<K>, owner: &str, target: &str) {
    for s in state.shares_of(owner, target) {
        remove(state, &s);
    }
}

#[cfg(test)]
mod tests {
    use super::super::folders::{OnConflict, Placement};
    use super::super::{apply, Command, Tier, TierLimits};
    use super::*;

    const LIMITS: TierLimits = TierLimits {
        quota: 1_000,
        max_file_size: 500,
        max_concurrent_uploads: 4,
    };

    fn mkdir(s: &mut State, id: &str, parent: Option<&str>) {
        let cmd = Command::CreateFolder {
            owner: "ann".into(),
            folder_id: id.into(),
            name: id.into(),
            parent: parent.map(Into::into),
            on_conflict: OnConflict::Fail,
            now: 1,
        };
        apply(s, cmd).unwrap();
    }

    fn store(s: &mut State, id: &str, folder: Option<&str>) {
        let cmd = Command::Placed {
            placement: Placement {
                folder: folder.map(Into::into),
                on_conflict: OnConflict::Fail,
            },
            cmd: Box::new(Command::StoreFile {
                upload_id: format!("u-{id}"),
                file_id: id.into(),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: id.into(),
                mime: None,
                size: 1,
                blake3: id.into(),
                idempotency_key: None,
                object_key: format!("o/{id}"),
                scan: false,
                now: 2,
            }),
        };
        apply(s, cmd).unwrap();
    }

    fn share(target: &str, kind: EntryKind, role: Role) -> Command {
        Command::CreateShare {
            owner: "ann".into(),
            target: target.into(),
            kind,
            user: "bob".into(),
            role,
            now: 3,
        }
    }

    fn revoke(target: &str) -> Command {
        Command::RevokeShare {
            owner: "ann".into(),
            target: target.into(),
            user: "bob".into(),
        }
    }

    #[test]
    fn a_folder_share_reaches_what_is_under_it_and_ends_with_its_revoke() {
        let mut s: State = State::default();
        mkdir(&mut s, "d", None);
        mkdir(&mut s, "e", Some("d"));
        store(&mut s, "f", Some("e"));
        store(&mut s, "g", None);
        assert_eq!(s.file_role("ann", "f", "bob"), None);
        apply(&mut s, share("d", EntryKind::Folder, Role::Viewer)).unwrap();
        assert_eq!(s.file_role("ann", "f", "bob"), Some(Role::Viewer));
        assert_eq!(s.folder_role("ann", "e", "bob"), Some(Role::Viewer));
        assert_eq!(s.file_role("ann", "g", "bob"), None);
        // The file's own share is stronger: the strongest wins.
        apply(&mut s, share("f", EntryKind::File, Role::Editor)).unwrap();
        assert_eq!(s.file_role("ann", "f", "bob"), Some(Role::Editor));
        assert_eq!(s.shared_with("bob", None, 10).len(), 2);
        apply(&mut s, revoke("f")).unwrap();
        assert_eq!(s.file_role("ann", "f", "bob"), Some(Role::Viewer));
        apply(&mut s, revoke("d")).unwrap();
        assert_eq!(s.file_role("ann", "f", "bob"), None);
        assert!(s.shared_with("bob", None, 10).is_empty());
        assert!(matches!(
            apply(&mut s, revoke("d")),
            Err(ModelError::NotFound)
        ));
    }

    #[test]
    fn nothing_in_the_trash_is_shared_and_a_purge_ends_the_shares() {
        let mut s: State = State::default();
        mkdir(&mut s, "d", None);
        store(&mut s, "f", Some("d"));
        apply(&mut s, share("d", EntryKind::Folder, Role::Editor)).unwrap();
        let trash = Command::Trash {
            owner: "ann".into(),
            id: "d".into(),
            kind: EntryKind::Folder,
            now: 4,
        };
        apply(&mut s, trash).unwrap();
        assert_eq!(s.file_role("ann", "f", "bob"), None);
        assert!(matches!(
            apply(&mut s, share("f", EntryKind::File, Role::Viewer)),
            Err(ModelError::NotFound)
        ));
        let purge = Command::PurgeTrash {
            owner: "ann".into(),
            id: "d".into(),
            now: 5,
        };
        apply(&mut s, purge).unwrap();
        assert!(s.shared_with("bob", None, 10).is_empty());
        assert!(s.shares_of("ann", "d").is_empty());
    }

    #[test]
    fn a_share_with_oneself_or_of_nothing_is_refused() {
        let mut s: State = State::default();
        store(&mut s, "f", None);
        let mut own = share("f", EntryKind::File, Role::Viewer);
        if let Command::CreateShare { user, .. } = &mut own {
            *user = "ann".into();
        }
        assert!(matches!(apply(&mut s, own), Err(ModelError::Invalid(_))));
        assert!(matches!(
            apply(&mut s, share("nope", EntryKind::File, Role::Viewer)),
            Err(ModelError::NotFound)
        ));
    }
}
