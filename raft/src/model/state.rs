//! `State`: the model's typed view of its storage, and the key layout.
//!
//! Every record is one key. Keys of entities with an owner start with the kind and the owner
//! (`f/{owner}/{file_id}`), so a user's records are one ordered range and users can later be
//! spread over several Raft groups by hash. Indexes are keys too, written in the same apply as
//! the record they point at. Keys starting with `0xff` belong to the store (last applied log
//! id, membership) and are not part of the model or its digest.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::*;
use crate::codec;
use crate::kv::{Kv, KvMut, MemKv};

/// The key layout. Owners and ids never contain `/` (the node validates user ids; other ids
/// are made by the proposer); an idempotency key or object key may, and always comes last.
pub mod keys {
    use super::Millis;

    pub fn user(id: &str) -> Vec<u8> {
        format!("u/{id}").into_bytes()
    }
    pub const USERS: &[u8] = b"u/";
    pub fn upload(owner: &str, id: &str) -> Vec<u8> {
        format!("up/{owner}/{id}").into_bytes()
    }
    pub fn uploads_of(owner: &str) -> Vec<u8> {
        format!("up/{owner}/").into_bytes()
    }
    /// The chunks some node holds; a missing chunk has no key.
    pub fn chunk(owner: &str, id: &str, index: u32) -> Vec<u8> {
        format!("uc/{owner}/{id}/{index:010}").into_bytes()
    }
    pub fn chunks_of(owner: &str, id: &str) -> Vec<u8> {
        format!("uc/{owner}/{id}/").into_bytes()
    }
    pub fn idempotency(owner: &str, key: &str) -> Vec<u8> {
        format!("ik/{owner}/{key}").into_bytes()
    }
    /// Uploads still uploading, by expiry time: `ux/{expires_at:020}/{owner}/{id}`.
    pub fn open_upload(expires_at: Millis, owner: &str, id: &str) -> Vec<u8> {
        format!("ux/{expires_at:020}/{owner}/{id}").into_bytes()
    }
    pub const OPEN_UPLOADS: &[u8] = b"ux/";
    /// Uploads that ended, by end time, for retention: `ue/{ended_at:020}/{owner}/{id}`.
    pub fn ended_upload(ended_at: Millis, owner: &str, id: &str) -> Vec<u8> {
        format!("ue/{ended_at:020}/{owner}/{id}").into_bytes()
    }
    pub const ENDED_UPLOADS: &[u8] = b"ue/";
    /// A blob's id is `{owner}/{blake3}`; its record is `b/{id}`.
    pub fn blob(id: &str) -> Vec<u8> {
        format!("b/{id}").into_bytes()
    }
    pub const BLOBS: &[u8] = b"b/";
    pub fn file(owner: &str, id: &str) -> Vec<u8> {
        format!("f/{owner}/{id}").into_bytes()
    }
    pub fn files_of(owner: &str) -> Vec<u8> {
        format!("f/{owner}/").into_bytes()
    }
    /// The files that point at a blob: `fb/{owner}/{blake3}/{file_id}` -> file size.
    pub fn file_of_blob(owner: &str, blake3: &str, file_id: &str) -> Vec<u8> {
        format!("fb/{owner}/{blake3}/{file_id}").into_bytes()
    }
    pub fn files_of_blob(owner: &str, blake3: &str) -> Vec<u8> {
        format!("fb/{owner}/{blake3}/").into_bytes()
    }
    /// File id -> owner, for admin commands that name a file only.
    pub fn file_id(id: &str) -> Vec<u8> {
        format!("fi/{id}").into_bytes()
    }
    /// Blobs waiting for (or leased to) a scanner.
    pub fn scan_queue(blob: &str) -> Vec<u8> {
        format!("sq/{blob}").into_bytes()
    }
    pub const SCAN_QUEUE: &[u8] = b"sq/";
    /// Infected blobs whose object is not yet quarantined.
    pub fn quarantine_queue(blob: &str) -> Vec<u8> {
        format!("qq/{blob}").into_bytes()
    }
    pub const QUARANTINE_QUEUE: &[u8] = b"qq/";
    pub fn garbage(object_key: &str) -> Vec<u8> {
        format!("g/{object_key}").into_bytes()
    }
    pub const GARBAGE: &[u8] = b"g/";
    pub fn request(id: &str) -> Vec<u8> {
        format!("r/{id}").into_bytes()
    }
    pub fn request_time(at: Millis, id: &str) -> Vec<u8> {
        format!("rt/{at:020}/{id}").into_bytes()
    }
    pub const REQUEST_TIMES: &[u8] = b"rt/";
    pub const LAST_NODE_ID: &[u8] = b"n/last_node_id";
    /// Present once a node of the cluster has had a clamd (see `Command::ScannerFound`).
    pub const SCANNER_FOUND: &[u8] = b"sc/found";
    /// The tus side of an upload (its metadata and tail): `tu/{owner}/{upload_id}`.
    pub fn tus(owner: &str, id: &str) -> Vec<u8> {
        format!("tu/{owner}/{id}").into_bytes()
    }
    /// A tus upload whose length is not declared yet (creation-defer-length), and the bytes it
    /// holds reserved so far: `td/{owner}/{upload_id}`.
    pub fn tus_deferred(owner: &str, id: &str) -> Vec<u8> {
        format!("td/{owner}/{id}").into_bytes()
    }
    /// A tus partial or final upload (concatenation): `tc/{owner}/{upload_id}`.
    pub fn concat(owner: &str, id: &str) -> Vec<u8> {
        format!("tc/{owner}/{id}").into_bytes()
    }
    /// A share link, by its token (whoever holds it has no account to key it by).
    pub fn link(token: &str) -> Vec<u8> {
        format!("lk/{token}").into_bytes()
    }
    /// Marks a folder link (its `file_id` is the folder's id).
    pub fn folder_link(token: &str) -> Vec<u8> {
        format!("lkf/{token}").into_bytes()
    }
    /// An owner's links: `lo/{owner}/{token}`.
    pub fn link_of_owner(owner: &str, token: &str) -> Vec<u8> {
        format!("lo/{owner}/{token}").into_bytes()
    }
    pub fn links_of_owner(owner: &str) -> Vec<u8> {
        format!("lo/{owner}/").into_bytes()
    }
    /// A file's links: `lf/{owner}/{file_id}/{token}`.
    pub fn link_of_file(owner: &str, file_id: &str, token: &str) -> Vec<u8> {
        format!("lf/{owner}/{file_id}/{token}").into_bytes()
    }
    pub fn links_of_file(owner: &str, file_id: &str) -> Vec<u8> {
        format!("lf/{owner}/{file_id}/").into_bytes()
    }
    pub const FILES: &[u8] = b"f/";
    pub fn folder(owner: &str, id: &str) -> Vec<u8> {
        format!("fd/{owner}/{id}").into_bytes()
    }
    /// The folder of a file not at the root.
    pub fn file_folder(owner: &str, file_id: &str) -> Vec<u8> {
        format!("fp/{owner}/{file_id}").into_bytes()
    }
    pub fn entries_by_name(owner: &str, parent: &str) -> Vec<u8> {
        format!("fn/{owner}/{parent}/").into_bytes()
    }
    pub fn entry_name_prefix(owner: &str, parent: &str, name: &str) -> Vec<u8> {
        format!("fn/{owner}/{parent}/{name}\0").into_bytes()
    }
    pub fn entry_name(owner: &str, parent: &str, name: &str, id: &str) -> Vec<u8> {
        format!("fn/{owner}/{parent}/{name}\0{id}").into_bytes()
    }
    pub fn entries_by_date(owner: &str, parent: &str) -> Vec<u8> {
        format!("fc/{owner}/{parent}/").into_bytes()
    }
    pub fn entry_date(owner: &str, parent: &str, id: &str) -> Vec<u8> {
        format!("fc/{owner}/{parent}/{id}").into_bytes()
    }
    /// Where an upload session's file goes (see `folders::Placement`).
    pub fn upload_placement(owner: &str, upload_id: &str) -> Vec<u8> {
        format!("ut/{owner}/{upload_id}").into_bytes()
    }
    /// Present once every file stored before folders existed is in the folder indexes.
    pub const ENTRIES_INDEXED: &[u8] = b"sc/entries_indexed";
    /// A word of a file's name (normalised, see `search::words`): `sw/{owner}/{word}/{file_id}`.
    pub fn name_word(owner: &str, word: &str, file_id: &str) -> Vec<u8> {
        format!("sw/{owner}/{word}/{file_id}").into_bytes()
    }
    /// Keys from here on belong to the store, not to the model.
    pub const STORE: u8 = 0xff;
}

/// The id of the blob of `owner`'s content `blake3`.
pub fn blob_id(owner: &str, blake3: &str) -> String {
    format!("{owner}/{blake3}")
}

/// The model's records over a key-value store `K`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State<K = MemKv> {
    kv: K,
    /// The entry being applied, when the caller numbers entries (events need it).
    pub(super) clock: Option<super::events::EntryClock>,
    /// The placement a `Placed` command is applying, for the file its command records.
    pub(super) placing: Option<super::folders::Placement>,
    /// Who proposed the command being applied (a `Via`), for its audit record.
    pub(super) origin: Option<super::audit::Origin>,
    /// Set while a command that will be audited applies: what it applies is not audited again.
    pub(super) auditing: bool,
}

fn tail(key: &[u8], prefix: &[u8]) -> String {
    String::from_utf8_lossy(&key[prefix.len().min(key.len())..]).into_owned()
}

/// `owner/id` from the end of an index key whose first `skip` `/`-separated parts come first.
fn owner_and_id(key: &[u8], skip: usize) -> Option<(String, String)> {
    let s = std::str::from_utf8(key).ok()?;
    let mut parts = s.splitn(skip + 2, '/').skip(skip);
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

impl<K> State<K> {
    pub fn new(kv: K) -> Self {
        Self {
            kv,
            clock: None,
            placing: None,
            origin: None,
            auditing: false,
        }
    }
    pub fn kv(&self) -> &K {
        &self.kv
    }
    pub fn kv_mut(&mut self) -> &mut K {
        &mut self.kv
    }
    pub fn into_kv(self) -> K {
        self.kv
    }
}

impl<K: Kv> State<K> {
    fn read<T: DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        let bytes = self.kv.get(key)?;
        match codec::decode(&bytes) {
            Ok(v) => Some(v),
            // Corruption below the model: stopping is the only honest answer.
            Err(e) => panic!(
                "corrupt metadata record {}: {e}",
                String::from_utf8_lossy(key)
            ),
        }
    }

    /// Up to `limit` decoded values under `prefix` after `after`, those `keep` accepts.
    pub(super) fn values<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv.scan(prefix, after, &mut |k, v| {
            let t: T = codec::decode(v).unwrap_or_else(|e| {
                panic!(
                    "corrupt metadata record {}: {e}",
                    String::from_utf8_lossy(k)
                )
            });
            if keep(&t) {
                out.push(t);
            }
            out.len() < limit
        });
        out
    }

    /// Up to `limit` keys under `prefix`.
    pub(crate) fn keys_under(&self, prefix: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv.scan(prefix, None, &mut |k, _| {
            out.push(k.to_vec());
            out.len() < limit
        });
        out
    }

    /// Up to `limit` keys under `prefix` that sort before `before`.
    pub(crate) fn keys_under_before(
        &self,
        prefix: &[u8],
        before: &[u8],
        limit: usize,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv.scan(prefix, None, &mut |k, _| {
            if k >= before {
                return false;
            }
            out.push(k.to_vec());
            out.len() < limit
        });
        out
    }

    /// Files of every owner in key order, after the file key `after`.
    pub(crate) fn files_after(&self, after: Option<&[u8]>, limit: usize) -> Vec<File> {
        self.values(keys::FILES, after, limit, |_: &File| true)
    }

    pub(crate) fn read_at<T: DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.read(key)
    }

    pub fn user(&self, id: &str) -> Option<User> {
        self.read(&keys::user(id))
    }

    /// Users in id order after `after`.
    pub fn users(&self, after: Option<&str>, limit: usize) -> Vec<User> {
        let after = after.map(keys::user);
        self.values(keys::USERS, after.as_deref(), limit, |_| true)
    }

    /// The tus side of an upload, if it was made through tus.
    pub fn tus(&self, owner: &str, id: &str) -> Option<super::tus::TusUpload> {
        self.read(&keys::tus(owner, id))
    }

    /// Ids of `owner`'s files with a name word that starts with `prefix` (a normalised word),
    /// at most `limit` index entries read.
    pub fn files_by_word(&self, owner: &str, prefix: &str, limit: usize) -> Vec<String> {
        let scan = format!("sw/{owner}/{prefix}").into_bytes();
        let mut ids = Vec::new();
        let mut read = 0;
        self.kv.scan(&scan, None, &mut |k, _| {
            read += 1;
            let key = String::from_utf8_lossy(k);
            if let Some((_, id)) = key.rsplit_once('/') {
                if !ids.iter().any(|i: &String| i == id) {
                    ids.push(id.to_string());
                }
            }
            read < limit
        });
        ids
    }

    /// The share link with this token.
    pub fn link(&self, token: &str) -> Option<super::links::Link> {
        self.read(&keys::link(token))
    }

    /// Whether the link with this token shares a folder (its `file_id` is the folder's id).
    pub fn link_is_folder(&self, token: &str) -> bool {
        self.kv.get(&keys::folder_link(token)).is_some()
    }

    /// A page of `owner`'s links, in token order, after the token `after`.
    pub fn links_of(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<super::links::Link> {
        let prefix = keys::links_of_owner(owner);
        let mut tokens = Vec::new();
        let from = after.map(|t| keys::link_of_owner(owner, t));
        self.kv.scan(&prefix, from.as_deref(), &mut |k, _| {
            tokens.push(tail(k, &prefix));
            tokens.len() < limit
        });
        tokens.iter().filter_map(|t| self.link(t)).collect()
    }

    /// A tus partial or final upload's concatenation record.
    pub fn concat(&self, owner: &str, id: &str) -> Option<super::concat::Concat> {
        self.read(&keys::concat(owner, id))
    }

    /// Whether a tus upload's length is still to be declared (creation-defer-length): its
    /// `size` is then only the most it may grow to.
    pub fn tus_length_deferred(&self, owner: &str, id: &str) -> bool {
        self.kv.get(&keys::tus_deferred(owner, id)).is_some()
    }

    /// The bytes a tus upload of a length not declared yet holds reserved so far.
    pub fn tus_deferred_reserved(&self, owner: &str, id: &str) -> Option<u64> {
        self.read(&keys::tus_deferred(owner, id))
    }

    /// The stored upload record, without its chunks.
    pub fn upload_record(&self, owner: &str, id: &str) -> Option<Upload> {
        self.read(&keys::upload(owner, id))
    }

    /// An upload with the state of every chunk (while it is uploading).
    pub fn upload(&self, owner: &str, id: &str) -> Option<Upload> {
        self.upload_record(owner, id).map(|up| self.with_chunks(up))
    }

    fn with_chunks(&self, mut up: Upload) -> Upload {
        if up.state == UploadState::Uploading {
            up.chunks = vec![Chunk::Missing; up.chunk_count() as usize];
            let prefix = keys::chunks_of(&up.owner, &up.id);
            self.kv.scan(&prefix, None, &mut |k, v| {
                let index: usize = tail(k, &prefix).parse().unwrap_or(usize::MAX);
                if let (Some(slot), Ok(c)) = (up.chunks.get_mut(index), codec::decode(v)) {
                    *slot = c;
                }
                true
            });
        }
        up
    }

    pub fn chunk(&self, owner: &str, id: &str, index: u32) -> Chunk {
        self.read(&keys::chunk(owner, id, index))
            .unwrap_or(Chunk::Missing)
    }

    /// The chunks some node holds, by index.
    pub fn held_chunks(&self, owner: &str, id: &str) -> Vec<(u32, Chunk)> {
        let prefix = keys::chunks_of(owner, id);
        let mut out = Vec::new();
        self.kv.scan(&prefix, None, &mut |k, v| {
            if let (Ok(i), Ok(c)) = (tail(k, &prefix).parse(), codec::decode(v)) {
                out.push((i, c));
            }
            true
        });
        out
    }

    pub fn idempotent_upload(&self, owner: &str, key: &str) -> Option<String> {
        self.read(&keys::idempotency(owner, key))
    }

    /// A page of `owner`'s uploads in creation order (upload ids are time-ordered), starting
    /// after `cursor` (an upload id), only those in `only` when given.
    pub fn uploads_page(
        &self,
        owner: &str,
        only: Option<UploadState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Vec<Upload> {
        let after = cursor.map(|c| keys::upload(owner, c));
        self.values(
            &keys::uploads_of(owner),
            after.as_deref(),
            limit,
            |u: &Upload| only.is_none_or(|s| u.state == s),
        )
        .into_iter()
        .map(|u| self.with_chunks(u))
        .collect()
    }

    /// (owner, upload id) of uploads still uploading, soonest to expire first, at most `limit`,
    /// only those due at `due_by` when given.
    pub fn open_upload_ids(&self, due_by: Option<Millis>, limit: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let last = due_by.map(|t| format!("ux/{t:020}/").into_bytes());
        self.kv.scan(keys::OPEN_UPLOADS, None, &mut |k, _| {
            if last.as_ref().is_some_and(|l| k >= l.as_slice()) {
                return false;
            }
            if let Some(oi) = owner_and_id(k, 2) {
                out.push(oi);
            }
            out.len() < limit
        });
        out
    }

    /// Every upload still uploading, with its chunks (soonest to expire first).
    pub fn open_uploads(&self, limit: usize) -> Vec<Upload> {
        self.open_upload_ids(None, limit)
            .into_iter()
            .filter_map(|(o, i)| self.upload(&o, &i))
            .collect()
    }

    /// (owner, upload id) of ended uploads that ended before `before`, oldest first.
    pub fn ended_upload_ids(&self, before: Millis, limit: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let last = format!("ue/{before:020}/").into_bytes();
        self.kv.scan(keys::ENDED_UPLOADS, None, &mut |k, _| {
            if k >= last.as_slice() {
                return false;
            }
            if let Some(oi) = owner_and_id(k, 2) {
                out.push(oi);
            }
            out.len() < limit
        });
        out
    }

    pub fn file(&self, owner: &str, id: &str) -> Option<File> {
        self.read(&keys::file(owner, id))
    }

    /// The owner of file `id`, whoever it is.
    pub fn file_owner(&self, id: &str) -> Option<String> {
        self.read(&keys::file_id(id))
    }

    /// A page of `owner`'s files in creation order, starting after `cursor` (a file id).
    pub fn files_page(&self, owner: &str, cursor: Option<&str>, limit: usize) -> Vec<File> {
        let after = cursor.map(|c| keys::file(owner, c));
        self.values(&keys::files_of(owner), after.as_deref(), limit, |_| true)
    }

    /// (file id, size) of every file of `owner` whose content is `blake3`.
    pub fn files_of_blob(&self, owner: &str, blake3: &str) -> Vec<(String, u64)> {
        let prefix = keys::files_of_blob(owner, blake3);
        let mut out = Vec::new();
        self.kv.scan(&prefix, None, &mut |k, v| {
            out.push((tail(k, &prefix), codec::decode(v).unwrap_or(0)));
            true
        });
        out
    }

    /// A blob by id (`{owner}/{blake3}`).
    pub fn blob(&self, id: &str) -> Option<Blob> {
        self.read(&keys::blob(id))
    }

    /// Blobs in id order after `after` (a blob id).
    pub fn blobs(&self, after: Option<&str>, limit: usize) -> Vec<Blob> {
        let after = after.map(keys::blob);
        self.values(keys::BLOBS, after.as_deref(), limit, |_| true)
    }

    /// Blobs waiting for a scan or leased to a scanner.
    pub fn scan_queue(&self, limit: usize) -> Vec<Blob> {
        self.queue(keys::SCAN_QUEUE, limit)
    }

    /// Infected blobs whose object has not been quarantined yet.
    pub fn quarantine_queue(&self, limit: usize) -> Vec<Blob> {
        self.queue(keys::QUARANTINE_QUEUE, limit)
    }

    fn queue(&self, prefix: &[u8], limit: usize) -> Vec<Blob> {
        self.keys_under(prefix, limit)
            .iter()
            .filter_map(|k| self.blob(&tail(k, prefix)))
            .collect()
    }

    /// Objects no record points to any more, in key order.
    pub fn garbage(&self, limit: usize) -> Vec<Garbage> {
        self.values(keys::GARBAGE, None, limit, |_| true)
    }

    pub fn last_node_id(&self) -> u64 {
        self.read(keys::LAST_NODE_ID).unwrap_or(0)
    }

    /// Whether a node of this cluster has had a clamd: from then on every new blob waits for
    /// a scan, whatever node stores it.
    pub fn scanner_found(&self) -> bool {
        self.kv.get(keys::SCANNER_FOUND).is_some()
    }

    /// The [`SetHash`](crate::kv::SetHash) of every model record, as hex: two nodes that
    /// applied the same log have the same digest. The sled store keeps it current as it
    /// commits; otherwise it is computed by one streaming scan.
    pub fn digest(&self) -> String {
        if let Some(d) = self.kv.digest() {
            return d.to_hex();
        }
        let mut h = crate::kv::SetHash::default();
        self.kv.scan(b"", None, &mut |k, v| {
            if k.first() == Some(&keys::STORE) {
                return false;
            }
            h.add(k, v);
            true
        });
        h.to_hex()
    }
}

impl<K: KvMut> State<K> {
    fn write<T: Serialize + ?Sized>(&mut self, key: &[u8], v: &T) {
        self.kv.put(key, codec::encode(v));
    }

    pub(crate) fn put_user(&mut self, u: &User) {
        let old = self.user(&u.id);
        self.count_user(old.as_ref(), u);
        self.write(&keys::user(&u.id), u);
    }

    /// Writes an upload's record (never its chunks) and moves its index entries from what it
    /// was (`before`) to what it is.
    pub(crate) fn save_upload(&mut self, before: Option<&Upload>, up: &Upload) {
        if let Some(b) = before {
            self.unindex_upload(b);
        }
        let record = Upload {
            chunks: Vec::new(),
            ..up.clone()
        };
        self.write(&keys::upload(&up.owner, &up.id), &record);
        match (up.state, up.ended_at) {
            (UploadState::Uploading, _) => {
                self.write(&keys::open_upload(up.expires_at, &up.owner, &up.id), &())
            }
            (_, Some(at)) => self.write(&keys::ended_upload(at, &up.owner, &up.id), &()),
            (_, None) => {}
        }
    }

    fn unindex_upload(&mut self, up: &Upload) {
        match (up.state, up.ended_at) {
            (UploadState::Uploading, _) => {
                self.kv
                    .delete(&keys::open_upload(up.expires_at, &up.owner, &up.id))
            }
            (_, Some(at)) => self.kv.delete(&keys::ended_upload(at, &up.owner, &up.id)),
            (_, None) => {}
        }
    }

    /// Forgets an upload: its record, chunks, index entries and idempotency key.
    pub(crate) fn remove_upload(&mut self, up: &Upload) {
        self.unindex_upload(up);
        self.clear_chunks(&up.owner, &up.id);
        self.kv.delete(&keys::upload(&up.owner, &up.id));
        self.kv.delete(&keys::tus(&up.owner, &up.id));
        self.kv.delete(&keys::tus_deferred(&up.owner, &up.id));
        self.kv.delete(&keys::concat(&up.owner, &up.id));
        self.kv.delete(&keys::upload_placement(&up.owner, &up.id));
        self.forget_progress(&up.owner, &up.id);
        if let Some(k) = &up.idempotency_key {
            if self.idempotent_upload(&up.owner, k).as_deref() == Some(&up.id) {
                self.kv.delete(&keys::idempotency(&up.owner, k));
            }
        }
    }

    pub(crate) fn put_chunk(&mut self, owner: &str, id: &str, index: u32, c: &Chunk) {
        let k = keys::chunk(owner, id, index);
        match c {
            Chunk::Missing => self.kv.delete(&k),
            _ => self.write(&k, c),
        }
    }

    pub(crate) fn clear_chunks(&mut self, owner: &str, id: &str) {
        for k in self.keys_under(&keys::chunks_of(owner, id), usize::MAX) {
            self.kv.delete(&k);
        }
    }

    pub(crate) fn put_idempotency(&mut self, owner: &str, key: &str, upload_id: &str) {
        self.write(&keys::idempotency(owner, key), upload_id);
    }

    pub(crate) fn put_file(&mut self, f: &File) {
        // The name index follows the name.
        match self.file(&f.owner, &f.id) {
            Some(old) if old.name == f.name => {}
            Some(old) => {
                super::search::unindex(self, &old);
                super::search::index(self, f);
            }
            None => {
                super::search::index(self, f);
                self.count_file(&f.owner, true);
            }
        }
        self.write(&keys::file(&f.owner, &f.id), f);
        self.write(&keys::file_of_blob(&f.owner, &f.blake3, &f.id), &f.size);
        self.write(&keys::file_id(&f.id), &f.owner);
    }

    pub(crate) fn remove_file(&mut self, f: &File) {
        super::search::unindex(self, f);
        if self.kv.get(&keys::file(&f.owner, &f.id)).is_some() {
            self.count_file(&f.owner, false);
        }
        self.kv.delete(&keys::file(&f.owner, &f.id));
        self.kv
            .delete(&keys::file_of_blob(&f.owner, &f.blake3, &f.id));
        self.kv.delete(&keys::file_id(&f.id));
    }

    /// Writes a blob and keeps the scan and quarantine queues in step with it.
    pub(crate) fn save_blob(&mut self, b: &Blob) {
        let id = blob_id(&b.owner, &b.blake3);
        self.write(&keys::blob(&id), b);
        let queued = matches!(b.scan, ScanState::Pending | ScanState::Scanning { .. });
        self.flag(&keys::scan_queue(&id), queued);
        let to_quarantine = matches!(b.scan, ScanState::Infected { .. })
            && !b.quarantined
            && !b.object_key.is_empty();
        self.flag(&keys::quarantine_queue(&id), to_quarantine);
    }

    pub(crate) fn remove_blob(&mut self, b: &Blob) {
        let id = blob_id(&b.owner, &b.blake3);
        self.kv.delete(&keys::blob(&id));
        self.kv.delete(&keys::scan_queue(&id));
        self.kv.delete(&keys::quarantine_queue(&id));
    }

    fn flag(&mut self, key: &[u8], on: bool) {
        if on {
            self.write(key, &());
        } else {
            self.kv.delete(key);
        }
    }

    pub(crate) fn put_garbage(&mut self, g: &Garbage) {
        self.write(&keys::garbage(&g.object_key), g);
    }

    pub(crate) fn remove_garbage(&mut self, object_key: &str) {
        self.kv.delete(&keys::garbage(object_key));
    }

    pub(crate) fn set_last_node_id(&mut self, id: u64) {
        self.write(keys::LAST_NODE_ID, &id);
    }

    pub(crate) fn set_scanner_found(&mut self) {
        self.write(keys::SCANNER_FOUND, &true);
    }

    pub(crate) fn write_at<T: Serialize + ?Sized>(&mut self, key: &[u8], v: &T) {
        self.write(key, v);
    }

    pub(crate) fn delete_at(&mut self, key: &[u8]) {
        self.kv.delete(key);
    }
}
