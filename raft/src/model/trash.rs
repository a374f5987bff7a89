//! Trash: deleting a file or folder moves it here, with everything under it; a restore puts it
//! back, a purge deletes it for good, and the leader purges what has been in the trash longer
//! than `trash.retention_secs`. Trashed bytes count against the quota until purged.
//!
//! Records: `tr/{owner}/{id}` for each entry trashed by itself, and
//! `tt/{trashed_at:020}/{owner}/{id}` (the order automatic purges take). A trashed entry leaves
//! its folder's indexes (and a file the name search index); what lies under a trashed folder
//! stays indexed under it, hidden by that folder's record here: [`State::live_file`] and
//! [`State::live_folder`] walk up the parents, and every read or command that serves or
//! changes an entry goes through them.

use serde::{Deserialize, Serialize};

use super::folders::{self, EntryKind, Folder};
use super::{ApplyResult, File, Millis, ModelError, Outcome, State};
use crate::kv::{Kv, KvMut};

/// Entries (files and folders) one purge command deletes at most: bounds one apply, whatever
/// the size of a trashed folder; the proposer repeats it until it answers `Purged(true)`.
pub const PURGE_PER_COMMAND: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub id: String,
    pub owner: String,
    pub kind: EntryKind,
    pub name: String,
    /// The folder it was in (`None`: the root): where a restore puts it back.
    pub parent: Option<String>,
    pub trashed_at: Millis,
}

fn entry_key(owner: &str, id: &str) -> Vec<u8> {
    format!("tr/{owner}/{id}").into_bytes()
}

fn entries_prefix(owner: &str) -> Vec<u8> {
    format!("tr/{owner}/").into_bytes()
}

fn time_key(e: &TrashEntry) -> Vec<u8> {
    format!("tt/{:020}/{}/{}", e.trashed_at, e.owner, e.id).into_bytes()
}

const BY_TIME: &[u8] = b"tt/";

impl<K: Kv> State<K> {
    pub fn trash_entry(&self, owner: &str, id: &str) -> Option<TrashEntry> {
        self.read_at(&entry_key(owner, id))
    }

    /// Up to `limit` of the owner's trash entries after `cursor` (an id), in id order.
    pub fn trash_page(&self, owner: &str, cursor: Option<&str>, limit: usize) -> Vec<TrashEntry> {
        let prefix = entries_prefix(owner);
        let after = cursor.map(|c| entry_key(owner, c));
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv().scan(&prefix, after.as_deref(), &mut |_, v| {
            if let Ok(e) = crate::codec::decode(v) {
                out.push(e);
            }
            out.len() < limit
        });
        out
    }

    /// Whether `folder` is in the trash, by itself or under a trashed folder.
    pub fn folder_trashed(&self, owner: &str, folder: &str) -> bool {
        let mut at = Some(folder.to_string());
        while let Some(id) = at {
            if self.kv().get(&entry_key(owner, &id)).is_some() {
                return true;
            }
            at = self.folder(owner, &id).and_then(|f| f.parent);
        }
        false
    }

    /// The owner's file, unless it is in the trash (by itself or under a trashed folder).
    pub fn live_file(&self, owner: &str, id: &str) -> Option<File> {
        self.file(owner, id).filter(|f| self.live(f))
    }

    /// Up to `limit` of the owner's files after `cursor` (an id) in creation order, those in
    /// the trash left out.
    pub fn live_files_page(&self, owner: &str, cursor: Option<&str>, limit: usize) -> Vec<File> {
        let after = cursor.map(|c| super::state::keys::file(owner, c));
        self.values(
            &super::state::keys::files_of(owner),
            after.as_deref(),
            limit,
            |f: &File| self.live(f),
        )
    }

    /// Whether `f` is out of the trash.
    fn live(&self, f: &File) -> bool {
        if self.kv().get(&entry_key(&f.owner, &f.id)).is_some() {
            return false;
        }
        match self.file_folder(&f.owner, &f.id) {
            Some(d) => !self.folder_trashed(&f.owner, &d),
            None => true,
        }
    }

    /// The owner's folder, unless it is in the trash.
    pub fn live_folder(&self, owner: &str, id: &str) -> Option<Folder> {
        let f = self.folder(owner, id)?;
        (!self.folder_trashed(owner, id)).then_some(f)
    }

    /// Up to `limit` trash entries (of every owner) trashed before `before`, oldest first.
    pub fn trash_expired(&self, before: Millis, limit: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv().scan(BY_TIME, None, &mut |k, _| {
            let tail = String::from_utf8_lossy(&k[BY_TIME.len()..]).into_owned();
            let mut parts = tail.splitn(3, '/');
            let (Some(at), Some(owner), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                return true;
            };
            if at.parse::<Millis>().map_or(true, |at| at >= before) {
                return false;
            }
            out.push((owner.to_string(), id.to_string()));
            out.len() < limit
        });
        out
    }
}

/// A file or folder (with all under it) goes to the trash.
pub(super) fn trash<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    id: &str,
    kind: EntryKind,
    now: Millis,
) -> ApplyResult {
    let (name, parent) = match kind {
        EntryKind::File => {
            let f = state.live_file(owner, id).ok_or(ModelError::NotFound)?;
            (f.name.clone(), state.file_folder(owner, id))
        }
        EntryKind::Folder => {
            let f = state.live_folder(owner, id).ok_or(ModelError::NotFound)?;
            (f.name, f.parent)
        }
    };
    folders::unindex(state, owner, parent.as_deref(), &name, id);
    if kind == EntryKind::File {
        if let Some(f) = state.file(owner, id) {
            super::search::unindex(state, &f);
        }
    }
    let e = TrashEntry {
        id: id.to_string(),
        owner: owner.to_string(),
        kind,
        name,
        parent,
        trashed_at: now,
    };
    state.write_at(&entry_key(owner, id), &e);
    state.write_at(&time_key(&e), &());
    state.emit(
        owner,
        super::events::EventKind::EntryTrashed {
            id: id.to_string(),
            folder: kind == EntryKind::Folder,
        },
    );
    Ok(Outcome::Trashed(e))
}

/// A file is deleted: its trash entry, if any, with it.
pub(super) fn file_gone<K: KvMut>(state: &mut State<K>, owner: &str, id: &str) {
    if let Some(e) = state.trash_entry(owner, id) {
        forget_entry(state, &e);
    }
}

fn forget_entry<K: KvMut>(state: &mut State<K>, e: &TrashEntry) {
    state.delete_at(&entry_key(&e.owner, &e.id));
    state.delete_at(&time_key(e));
}

/// A trashed entry goes back to its folder (the root when that folder is gone or in the trash
/// itself), under its name or the first free "name (n).ext".
pub(super) fn restore<K: KvMut>(state: &mut State<K>, owner: &str, id: &str) -> ApplyResult {
    let e = state.trash_entry(owner, id).ok_or(ModelError::NotFound)?;
    let parent = e
        .parent
        .clone()
        .filter(|p| state.live_folder(owner, p).is_some());
    let name =
        folders::free_name_in(state, owner, parent.as_deref(), &e.name).ok_or_else(|| {
            ModelError::NameTaken {
                name: e.name.clone(),
            }
        })?;
    forget_entry(state, &e);
    let out = match e.kind {
        EntryKind::File => {
            let mut f = state.file(owner, id).ok_or(ModelError::NotFound)?;
            folders::put_back_file(state, &f, parent.as_deref(), &name);
            if f.name != name {
                f.name = name;
                // The name index follows (the old name was unindexed when trashed).
                super::search::unindex(state, &f);
            }
            state.put_file(&f);
            super::search::index(state, &f);
            Outcome::File(f)
        }
        EntryKind::Folder => {
            let mut f = state.folder(owner, id).ok_or(ModelError::NotFound)?;
            f.name = name;
            f.parent = parent;
            folders::put_back_folder(state, &f);
            Outcome::Folder(f)
        }
    };
    state.emit(
        owner,
        super::events::EventKind::EntryRestored {
            id: id.to_string(),
            folder: e.kind == EntryKind::Folder,
        },
    );
    Ok(out)
}

/// A trashed entry is deleted for good, at most [`PURGE_PER_COMMAND`] entries of it per
/// command: `Purged(true)` once it is gone, `Purged(false)` while some is left.
pub(super) fn purge<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    id: &str,
    now: Millis,
) -> ApplyResult {
    let e = state.trash_entry(owner, id).ok_or(ModelError::NotFound)?;
    let mut budget = PURGE_PER_COMMAND;
    Ok(Outcome::Purged(purge_entry(state, &e, &mut budget, now)))
}

/// Whether all of `e` is gone (within `budget`).
fn purge_entry<K: KvMut>(
    state: &mut State<K>,
    e: &TrashEntry,
    budget: &mut usize,
    now: Millis,
) -> bool {
    let done = match e.kind {
        EntryKind::File => {
            delete_file(state, &e.owner, &e.id, now);
            *budget = budget.saturating_sub(1);
            true
        }
        EntryKind::Folder => purge_tree(state, &e.owner, &e.id, budget, now),
    };
    if done {
        forget_entry(state, e);
    }
    done
}

fn delete_file<K: KvMut>(state: &mut State<K>, owner: &str, id: &str, now: Millis) {
    // Found first: the delete cannot be refused then (a refused command writes nothing, and
    // this one has written already).
    if state.file(owner, id).is_some() {
        let _ = super::files::delete(state, owner, id, now);
    }
}

/// Deletes what lies under `folder`, then the folder, within `budget` entries: whether all of
/// it is gone.
fn purge_tree<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    folder: &str,
    budget: &mut usize,
    now: Millis,
) -> bool {
    while *budget > 0 {
        let page = state.entries(owner, Some(folder), false, None, *budget);
        if page.entries.is_empty() {
            break;
        }
        for (kind, id) in page.entries {
            match kind {
                EntryKind::File => {
                    if state.file(owner, &id).is_some() {
                        delete_file(state, owner, &id, now);
                    } else {
                        // An index entry with no file (the model never leaves one) goes
                        // too, or this loop would find it again.
                        folders::unindex_id(state, owner, Some(folder), &id);
                    }
                    *budget = budget.saturating_sub(1);
                }
                EntryKind::Folder if state.folder(owner, &id).is_none() => {
                    folders::unindex_id(state, owner, Some(folder), &id);
                    *budget = budget.saturating_sub(1);
                }
                EntryKind::Folder => {
                    if !purge_tree(state, owner, &id, budget, now) {
                        return false;
                    }
                }
            }
            if *budget == 0 {
                return false;
            }
        }
    }
    if *budget == 0 {
        return false;
    }
    folders::remove_empty(state, owner, folder);
    *budget -= 1;
    true
}

/// Purges what has been in the trash since before `before` (every owner), within one
/// command's budget: `Purged(true)` once none is left.
pub(super) fn purge_expired<K: KvMut>(
    state: &mut State<K>,
    before: Millis,
    now: Millis,
) -> ApplyResult {
    let mut budget = PURGE_PER_COMMAND;
    for (owner, id) in state.trash_expired(before, PURGE_PER_COMMAND) {
        let Some(e) = state.trash_entry(&owner, &id) else {
            continue;
        };
        if !purge_entry(state, &e, &mut budget, now) || budget == 0 {
            return Ok(Outcome::Purged(false));
        }
    }
    Ok(Outcome::Purged(state.trash_expired(before, 1).is_empty()))
}

#[cfg(test)]
mod tests;
