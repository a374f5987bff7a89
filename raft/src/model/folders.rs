//! Folders: a tree per user under an implicit root, with names unique within a folder.
//!
//! Records: a folder at `fd/{owner}/{id}`; a file's folder at `fp/{owner}/{file_id}` (none:
//! the root). Every entry (file or folder) of a folder is indexed twice under its parent
//! (`root` for the root): by name, `fn/{owner}/{parent}/{name}\0{id}` (the name check reads
//! one key; a listing by name is a prefix scan), and by date, `fc/{owner}/{parent}/{id}` (ids
//! are UUIDv7, so key order is creation order). Files stored before folders existed are put
//! in the root's indexes by `IndexEntries`, a bounded batch per command, which the leader
//! proposes until it answers that none is left; such files may share a name, which the index
//! tolerates (the id is part of the key) and nothing new repeats.
//!
//! An upload is placed when it is created (`Placed`): its folder must exist and, unless it
//! asks for `rename`, its name must be free there. The file takes its place when it is
//! recorded: in that folder if it still exists (else the root), under its name or, if an
//! entry took that name meanwhile, under the first free "name (n).ext" (as Drive keeps both).

use serde::{Deserialize, Serialize};

use super::state::keys;
use super::{apply, ApplyResult, Command, File, Millis, ModelError, Outcome, State};
use crate::kv::{Kv, KvMut};

/// The root folder's id in the API and in index keys.
pub const ROOT: &str = "root";
/// The longest name, in bytes (as most file systems).
pub const MAX_NAME: usize = 255;
/// Files one `IndexEntries` indexes at most.
pub const INDEX_PER_COMMAND: usize = 1_000;
/// "name (n)" tried at most before a clash is reported anyway.
const MAX_RENAME_TRIES: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folder {
    pub id: String,
    pub owner: String,
    pub name: String,
    /// `None`: the root.
    pub parent: Option<String>,
    pub created_at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Folder,
    File,
}

/// What a new entry does when its name is taken in its folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnConflict {
    /// Refused with `NameTaken`.
    #[default]
    Fail,
    /// Named "name (n).ext" with the first free n.
    Rename,
    /// A file of that name gets the upload as its new version, keeping `keep` versions (the
    /// current one included); a folder of that name refuses it (`NameTaken`).
    Replace { keep: u32 },
}

/// Where an upload's file goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub folder: Option<String>,
    pub on_conflict: OnConflict,
}

/// Why `name` cannot name a file or folder, if it cannot.
pub fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a name cannot be empty")
    } else if name.len() > MAX_NAME {
        Some("a name is at most 255 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not names")
    } else if name.contains('/') || name.contains('\0') {
        Some("a name cannot contain `/` or NUL")
    } else {
        None
    }
}

fn parent_key(parent: Option<&str>) -> &str {
    parent.unwrap_or(ROOT)
}

/// The entries of a folder, by name or by date, after a cursor (the key's tail).
pub struct Entries {
    pub entries: Vec<(EntryKind, String)>,
    /// Where the next page starts, when there may be one.
    pub next: Option<String>,
}

impl<K: Kv> State<K> {
    pub fn folder(&self, owner: &str, id: &str) -> Option<Folder> {
        self.read_at(&keys::folder(owner, id))
    }

    /// The folder a file is in (`None`: the root).
    pub fn file_folder(&self, owner: &str, file_id: &str) -> Option<String> {
        self.read_at(&keys::file_folder(owner, file_id))
    }

    /// The entry named `name` in `parent`, if any (the first, for names older files share).
    pub fn entry_named(
        &self,
        owner: &str,
        parent: Option<&str>,
        name: &str,
    ) -> Option<(EntryKind, String)> {
        let prefix = keys::entry_name_prefix(owner, parent_key(parent), name);
        let mut found = None;
        self.kv().scan(&prefix, None, &mut |k, v| {
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            found = Some((crate::codec::decode(v).unwrap_or(EntryKind::File), id));
            false
        });
        found
    }

    /// Up to `limit` entries of `parent`, by name (`by_name`) or by date, after `cursor`.
    pub fn entries(
        &self,
        owner: &str,
        parent: Option<&str>,
        by_name: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Entries {
        let p = parent_key(parent);
        let prefix = if by_name {
            keys::entries_by_name(owner, p)
        } else {
            keys::entries_by_date(owner, p)
        };
        let after = cursor.map(|c| [prefix.as_slice(), c.as_bytes()].concat());
        let mut entries = Vec::new();
        let mut last = None;
        if limit > 0 {
            self.kv().scan(&prefix, after.as_deref(), &mut |k, v| {
                let tail = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let id = match tail.rsplit_once('\0') {
                    Some((_, id)) if by_name => id.to_string(),
                    _ => tail.clone(),
                };
                entries.push((crate::codec::decode(v).unwrap_or(EntryKind::File), id));
                last = Some(tail);
                entries.len() < limit
            });
        }
        let next = if entries.len() == limit { last } else { None };
        Entries { entries, next }
    }

    /// Whether `folder` is `ancestor` or lies under it.
    pub fn is_within(&self, owner: &str, folder: &str, ancestor: &str) -> bool {
        let mut at = Some(folder.to_string());
        while let Some(id) = at {
            if id == ancestor {
                return true;
            }
            at = self.folder(owner, &id).and_then(|f| f.parent);
        }
        false
    }

    /// `name`, or the first "name (n).ext" free in `parent`.
    fn free_name(&self, owner: &str, parent: Option<&str>, name: &str) -> Option<String> {
        if self.entry_named(owner, parent, name).is_none() {
            return Some(name.to_string());
        }
        // "report.pdf" -> "report (1).pdf"; a leading dot is not an extension.
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => name.split_at(i),
            _ => (name, ""),
        };
        (1..=MAX_RENAME_TRIES)
            .map(|n| format!("{stem} ({n}){ext}"))
            .find(|c| c.len() <= MAX_NAME && self.entry_named(owner, parent, c).is_none())
    }

    /// Whether every file stored before folders existed is in the indexes.
    pub fn entries_indexed(&self) -> bool {
        self.kv().get(keys::ENTRIES_INDEXED).is_some()
    }
}

impl<K: KvMut> State<K> {
    fn index_entry(
        &mut self,
        owner: &str,
        parent: Option<&str>,
        name: &str,
        id: &str,
        kind: EntryKind,
    ) {
        let p = parent_key(parent);
        self.write_at(&keys::entry_name(owner, p, name, id), &kind);
        self.write_at(&keys::entry_date(owner, p, id), &kind);
    }

    fn unindex_entry(&mut self, owner: &str, parent: Option<&str>, name: &str, id: &str) {
        let p = parent_key(parent);
        self.delete_at(&keys::entry_name(owner, p, name, id));
        self.delete_at(&keys::entry_date(owner, p, id));
    }

    fn set_file_folder(&mut self, owner: &str, file_id: &str, folder: Option<&str>) {
        match folder {
            Some(f) => self.write_at(&keys::file_folder(owner, file_id), f),
            None => self.delete_at(&keys::file_folder(owner, file_id)),
        }
    }
}

/// The placement of the upload being recorded: the one a `Placed` command is applying, or
/// the one its upload was created with (`None`: the root).
pub(super) fn take_placement<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    upload_id: &str,
) -> Option<Placement> {
    state.placing.take().or_else(|| {
        let key = keys::upload_placement(owner, upload_id);
        let p = state.read_at::<Placement>(&key);
        if p.is_some() {
            state.delete_at(&key);
        }
        p
    })
}

/// The file an upload placed with `replace` gives a new version: the one named `name` in the
/// placement's folder (the root once that folder is gone), with the versions to keep.
pub(super) fn replace_target<K: KvMut>(
    state: &State<K>,
    owner: &str,
    placement: &Placement,
    name: &str,
) -> Option<(File, u32)> {
    let OnConflict::Replace { keep } = placement.on_conflict else {
        return None;
    };
    let folder = placement
        .folder
        .as_deref()
        .filter(|f| state.live_folder(owner, f).is_some());
    match state.entry_named(owner, folder, name)? {
        (EntryKind::File, id) => state.file(owner, &id).map(|f| (f, keep)),
        (EntryKind::Folder, _) => None,
    }
}

/// An entry leaves its folder's indexes (it goes to the trash).
pub(super) fn unindex<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    parent: Option<&str>,
    name: &str,
    id: &str,
) {
    state.unindex_entry(owner, parent, name, id);
}

/// Every index entry of `id` in `parent`, whatever name it is under.
pub(super) fn unindex_id<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    parent: Option<&str>,
    id: &str,
) {
    let p = parent_key(parent).to_string();
    let prefix = keys::entries_by_name(owner, &p);
    let suffix = format!("\0{id}").into_bytes();
    let stale: Vec<Vec<u8>> = state
        .keys_under(&prefix, usize::MAX)
        .into_iter()
        .filter(|k| k.ends_with(&suffix))
        .collect();
    for k in stale {
        state.delete_at(&k);
    }
    state.delete_at(&keys::entry_date(owner, &p, id));
}

/// `name`, or the first free "name (n).ext", in `parent`.
pub(super) fn free_name_in<K: KvMut>(
    state: &State<K>,
    owner: &str,
    parent: Option<&str>,
    name: &str,
) -> Option<String> {
    state.free_name(owner, parent, name)
}

/// A file comes back from the trash into `parent` as `name`.
pub(super) fn put_back_file<K: KvMut>(
    state: &mut State<K>,
    f: &File,
    parent: Option<&str>,
    name: &str,
) {
    state.set_file_folder(&f.owner, &f.id, parent);
    state.index_entry(&f.owner, parent, name, &f.id, EntryKind::File);
}

/// A folder comes back from the trash (its record says where and under what name).
pub(super) fn put_back_folder<K: KvMut>(state: &mut State<K>, f: &Folder) {
    state.write_at(&keys::folder(&f.owner, &f.id), f);
    state.index_entry(
        &f.owner,
        f.parent.as_deref(),
        &f.name,
        &f.id,
        EntryKind::Folder,
    );
}

/// An emptied folder goes, with its links (a purge).
pub(super) fn remove_empty<K: KvMut>(state: &mut State<K>, owner: &str, id: &str) {
    if let Some(f) = state.folder(owner, id) {
        state.unindex_entry(owner, f.parent.as_deref(), &f.name, id);
        state.delete_at(&keys::folder(owner, id));
        super::links::file_deleted(state, owner, id);
        super::shares::target_deleted(state, owner, id);
    }
}

/// Gives a file being recorded its folder (`placement`'s, if it still exists; else the root)
/// and a name free there, and indexes it.
pub(super) fn place_new_file<K: KvMut>(
    state: &mut State<K>,
    file: &mut File,
    placement: Option<Placement>,
) {
    // A folder deleted (or trashed) meanwhile: the root.
    let folder = placement
        .and_then(|p| p.folder)
        .filter(|f| state.live_folder(&file.owner, f).is_some());
    if let Some(name) = state.free_name(&file.owner, folder.as_deref(), &file.name) {
        file.name = name;
    }
    state.set_file_folder(&file.owner, &file.id, folder.as_deref());
    state.index_entry(
        &file.owner,
        folder.as_deref(),
        &file.name,
        &file.id,
        EntryKind::File,
    );
}

/// A file leaves its folder (it is deleted).
pub(super) fn file_removed<K: KvMut>(state: &mut State<K>, file: &File) {
    let folder = state.file_folder(&file.owner, &file.id);
    state.unindex_entry(&file.owner, folder.as_deref(), &file.name, &file.id);
    state.set_file_folder(&file.owner, &file.id, None);
}

/// A file's name changes in place (`RenameFile`, which predates folders and checks no clash).
pub(super) fn file_renamed<K: KvMut>(state: &mut State<K>, old: &File, new_name: &str) {
    let folder = state.file_folder(&old.owner, &old.id);
    state.unindex_entry(&old.owner, folder.as_deref(), &old.name, &old.id);
    state.index_entry(
        &old.owner,
        folder.as_deref(),
        new_name,
        &old.id,
        EntryKind::File,
    );
}

pub(super) struct NewFolder {
    pub owner: String,
    pub folder_id: String,
    pub name: String,
    pub parent: Option<String>,
    pub on_conflict: OnConflict,
    pub now: Millis,
}

pub(super) fn create<K: KvMut>(state: &mut State<K>, n: NewFolder) -> ApplyResult {
    if let Some(why) = invalid_name(&n.name) {
        return Err(ModelError::Invalid(why.into()));
    }
    if let Some(f) = state.folder(&n.owner, &n.folder_id) {
        // The same proposal applied again answers with the folder it made.
        return if f.parent == n.parent && f.created_at == n.now {
            Ok(Outcome::Folder(f))
        } else {
            Err(ModelError::Invalid("folder id already used".into()))
        };
    }
    if let Some(p) = &n.parent {
        state.live_folder(&n.owner, p).ok_or(ModelError::NotFound)?;
    }
    let name = match n.on_conflict {
        OnConflict::Fail
            if state
                .entry_named(&n.owner, n.parent.as_deref(), &n.name)
                .is_some() =>
        {
            return Err(ModelError::NameTaken { name: n.name })
        }
        _ => state
            .free_name(&n.owner, n.parent.as_deref(), &n.name)
            .ok_or(ModelError::NameTaken { name: n.name })?,
    };
    let folder = Folder {
        id: n.folder_id,
        owner: n.owner,
        name,
        parent: n.parent,
        created_at: n.now,
    };
    state.write_at(&keys::folder(&folder.owner, &folder.id), &folder);
    state.index_entry(
        &folder.owner,
        folder.parent.as_deref(),
        &folder.name,
        &folder.id,
        EntryKind::Folder,
    );
    Ok(Outcome::Folder(folder))
}

/// A file or folder gets a new name and/or a new parent (`Some(None)`: the root).
pub(super) fn move_entry<K: KvMut>(
    state: &mut State<K>,
    owner: &str,
    id: &str,
    kind: EntryKind,
    name: Option<String>,
    parent: Option<Option<String>>,
) -> ApplyResult {
    if let Some(why) = name.as_deref().and_then(invalid_name) {
        return Err(ModelError::Invalid(why.into()));
    }
    // Nothing in the trash moves (a restore takes it out first), nor into it.
    let (cur_parent, cur_name) = match kind {
        EntryKind::Folder => {
            let f = state.live_folder(owner, id).ok_or(ModelError::NotFound)?;
            (f.parent, f.name)
        }
        EntryKind::File => {
            let f = state.live_file(owner, id).ok_or(ModelError::NotFound)?;
            (state.file_folder(owner, id), f.name)
        }
    };
    let new_parent = parent.unwrap_or_else(|| cur_parent.clone());
    let new_name = name.unwrap_or_else(|| cur_name.clone());
    if let Some(p) = &new_parent {
        state.live_folder(owner, p).ok_or(ModelError::NotFound)?;
        if kind == EntryKind::Folder && state.is_within(owner, p, id) {
            return Err(ModelError::FolderCycle);
        }
    }
    let moved = new_parent != cur_parent || new_name != cur_name;
    if moved {
        if let Some((_, other)) = state.entry_named(owner, new_parent.as_deref(), &new_name) {
            if other != id {
                return Err(ModelError::NameTaken { name: new_name });
            }
        }
        state.unindex_entry(owner, cur_parent.as_deref(), &cur_name, id);
        state.index_entry(owner, new_parent.as_deref(), &new_name, id, kind);
    }
    match kind {
        EntryKind::Folder => {
            let mut f = state.folder(owner, id).ok_or(ModelError::NotFound)?;
            f.name = new_name;
            f.parent = new_parent;
            state.write_at(&keys::folder(owner, id), &f);
            Ok(Outcome::Folder(f))
        }
        EntryKind::File => {
            let mut f = state.file(owner, id).ok_or(ModelError::NotFound)?;
            if moved {
                state.set_file_folder(owner, id, new_parent.as_deref());
                if f.name != new_name {
                    f.name = new_name;
                    state.put_file(&f);
                    state.emit(
                        owner,
                        super::events::EventKind::FileRenamed {
                            file_id: f.id.clone(),
                            name: f.name.clone(),
                        },
                    );
                }
            }
            Ok(Outcome::File(f))
        }
    }
}

/// An empty folder is removed (one with entries is refused until the trash exists).
pub(super) fn delete<K: KvMut>(state: &mut State<K>, owner: &str, id: &str) -> ApplyResult {
    // A trashed folder goes only by a purge.
    let f = state.live_folder(owner, id).ok_or(ModelError::NotFound)?;
    if !state
        .entries(owner, Some(id), true, None, 1)
        .entries
        .is_empty()
    {
        return Err(ModelError::FolderNotEmpty);
    }
    state.unindex_entry(owner, f.parent.as_deref(), &f.name, id);
    state.delete_at(&keys::folder(owner, id));
    super::links::file_deleted(state, owner, id);
    super::shares::target_deleted(state, owner, id);
    Ok(Outcome::Folder(f))
}

/// `cmd` (a `CreateUpload`, `StoreFile` or `CreateOrDedup`) creates an upload or a file in
/// `placement`'s folder: the folder must exist and, unless the placement says `Rename`, the
/// name must be free there now.
pub(super) fn placed<K: KvMut>(
    state: &mut State<K>,
    placement: Placement,
    cmd: Command,
) -> ApplyResult {
    let (owner, upload_id, name, file_id) = match &cmd {
        Command::CreateUpload {
            owner,
            upload_id,
            name,
            ..
        } => (owner.clone(), upload_id.clone(), name.clone(), None),
        Command::StoreFile {
            owner,
            upload_id,
            name,
            file_id,
            ..
        } => (
            owner.clone(),
            upload_id.clone(),
            name.clone(),
            Some(file_id.clone()),
        ),
        Command::CreateOrDedup { create, file_id } => match create.as_ref() {
            Command::CreateUpload {
                owner,
                upload_id,
                name,
                ..
            } => (
                owner.clone(),
                upload_id.clone(),
                name.clone(),
                Some(file_id.clone()),
            ),
            _ => {
                return Err(ModelError::Invalid(
                    "a placed dedup wraps a CreateUpload".into(),
                ))
            }
        },
        _ => {
            return Err(ModelError::Invalid(
                "only a new upload or file is placed".into(),
            ))
        }
    };
    // A retry of a create that was applied finds its upload, or the file it made at once (a
    // dedup), and places nothing again: the inner command answers it as the first time.
    let again = state.upload_record(&owner, &upload_id).is_some()
        || file_id.is_some_and(|f| state.file_owner(&f).is_some());
    if !again {
        if let Some(f) = &placement.folder {
            state.live_folder(&owner, f).ok_or(ModelError::NotFound)?;
        }
        let taken = state.entry_named(&owner, placement.folder.as_deref(), &name);
        match (placement.on_conflict, taken) {
            (OnConflict::Fail, Some(_))
            | (OnConflict::Replace { .. }, Some((EntryKind::Folder, _))) => {
                return Err(ModelError::NameTaken { name })
            }
            _ => {}
        }
        state.placing = Some(placement.clone());
    }
    let out = apply(state, cmd);
    let unused = state.placing.take();
    if let (Ok(Outcome::Upload(up)), Some(p)) = (&out, unused) {
        // A session: its file is placed when it completes.
        state.write_at(&keys::upload_placement(&owner, &up.id), &p);
    }
    out
}

/// Puts up to [`INDEX_PER_COMMAND`] files stored before folders existed (all owners, in key
/// order after the file key `after`) in their owner's root and their names in the search
/// index; answers the key to go on from,
/// or `None` once every file is done.
pub(super) fn index_entries<K: KvMut>(state: &mut State<K>, after: Option<String>) -> ApplyResult {
    let from = after.map(String::into_bytes);
    let files = state.files_after(from.as_deref(), INDEX_PER_COMMAND);
    for f in &files {
        if state.trash_entry(&f.owner, &f.id).is_some() {
            // Out of its folder's index since it was trashed, not because it is old.
            continue;
        }
        let folder = state.file_folder(&f.owner, &f.id);
        let p = parent_key(folder.as_deref()).to_string();
        if state
            .kv()
            .get(&keys::entry_date(&f.owner, &p, &f.id))
            .is_none()
        {
            state.index_entry(&f.owner, folder.as_deref(), &f.name, &f.id, EntryKind::File);
            // The name search index came with the folders.
            super::search::index(state, f);
        }
    }
    let next = (files.len() == INDEX_PER_COMMAND)
        .then(|| files.last().map(|f| keys::file(&f.owner, &f.id)))
        .flatten()
        .map(|k| String::from_utf8_lossy(&k).into_owned());
    if next.is_none() {
        state.write_at(keys::ENTRIES_INDEXED, &());
    }
    Ok(Outcome::Indexed(next))
}

#[cfg(test)]
mod tests;
