//! The data dir's format version, and the migration of older ones, which kept the metadata
//! in sled: version 1 (trees `log`, `raft`, `state`, the records of today) and version 0
//! (JSON, the whole state in one snapshot value, wharf up to 0.1).
//!
//! Version 0 is first migrated to version 1 inside sled: the new trees are written beside the
//! old ones and the version flips last. Version 1 is then copied into fjall, whose format
//! version is written last, and only then are sled's files removed. A crash at any point
//! leaves the old data intact, and the next start migrates again from there.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use serde::Deserialize;
use serde_json::Value;

use super::snapshot::{self, Pointer};
use super::state_machine::{APPLIED, DIGEST, MEMBERSHIP, SNAPSHOT};
use super::{Db, COMMITTED, LAST_PURGED, VOTE};
use crate::codec::{self, FORMAT_VERSION};
use crate::kv::{MemKv, SetHash};
use crate::model::{Blob, Chunk, File, Garbage, State, Upload, UploadState, User};
use crate::{Error, NodeId, TypeConfig, WharfNode};

const FORMAT: &[u8] = b"format";
/// The last format version kept in sled.
const SLED_VERSION: u32 = 1;
const V0_TREES: [&str; 3] = ["logs", "meta", "sm"];
/// The files sled keeps in its directory (the data dir's `raft/`).
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
/// Records copied per fjall batch.
const COPY_BATCH: usize = 4096;

fn refused(dir: &Path, version: u32) -> Error {
    Error::Format(format!(
        "the metadata in {} is format version {version}; this wharf reads version \
         {FORMAT_VERSION} (and migrates versions 0 and 1): run the wharf that wrote it, or a newer one",
        dir.display()
    ))
}

fn version_of(v: &[u8]) -> u32 {
    v.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX)
}

/// Makes `db` a store of this build's format: new, already current, or migrated from the sled
/// database an older wharf left in `dir`.
pub fn prepare(db: &Db, dir: &Path) -> Result<(), Error> {
    if let Some(v) = db.raft.get(FORMAT)? {
        let version = version_of(&v);
        if version != FORMAT_VERSION {
            return Err(refused(dir, version));
        }
        // What a migration that stopped after its last step left behind.
        remove_sled(dir)?;
        return Ok(());
    }
    if SLED_FILES.iter().any(|f| dir.join(f).exists()) {
        let old = sled::Config::new()
            .path(dir)
            .segment_size(segment_size(dir))
            .open()?;
        prepare_sled(&old, dir)?;
        tracing::warn!(dir = %dir.display(), "migrating metadata from format version 1 (sled)");
        copy_from_sled(&old, db)?;
    }
    db.raft.insert(FORMAT, FORMAT_VERSION.to_le_bytes())?;
    db.persist()?;
    remove_sled(dir)
}

/// Copies the version-1 trees into the (emptied) keyspaces of the same names.
fn copy_from_sled(old: &sled::Db, db: &Db) -> Result<(), Error> {
    let mut records = 0u64;
    for (name, ks, into) in [
        ("log", &db.log, &db.db),
        ("raft", &db.raft, &db.db),
        ("state", &db.state, &db.state_db),
    ] {
        ks.clear()?;
        let tree = old.open_tree(name)?;
        let mut batch = into.batch();
        for kv in tree.iter() {
            let (k, v) = kv?;
            if name == "raft" && k.as_ref() == FORMAT {
                continue;
            }
            batch.insert(ks, k.to_vec(), v.to_vec());
            records += 1;
            if batch.len() == COPY_BATCH {
                std::mem::replace(&mut batch, into.batch()).commit()?;
            }
        }
        batch.commit()?;
    }
    db.persist_state()?;
    db.persist()?;
    tracing::warn!(
        records,
        "migrated metadata to format version {FORMAT_VERSION}"
    );
    Ok(())
}

/// Removes sled's files from `dir` (its snapshots named `snap.*` too).
fn remove_sled(dir: &Path) -> Result<(), Error> {
    for f in SLED_FILES {
        let p = dir.join(f);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// The segment size of the sled database in `dir`: sled refuses to open a database with
/// another one than it was created with (wharf made new ones with 8 MiB, sled's default is
/// 512 KiB).
fn segment_size(dir: &Path) -> usize {
    // The file ends in a binary checksum: read it as bytes.
    let Ok(conf) = std::fs::read(dir.join("conf")) else {
        return 8 << 20;
    };
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: ")?.trim().parse().ok())
        .unwrap_or(512 << 10)
}

/// Makes the sled database `db` a version-1 one: already version 1, or migrated from 0.
fn prepare_sled(db: &sled::Db, dir: &Path) -> Result<(), Error> {
    let raft = db.open_tree("raft")?;
    if let Some(v) = raft.get(FORMAT)? {
        let version = version_of(&v);
        if version != SLED_VERSION {
            return Err(refused(dir, version));
        }
        drop_v0(db)?;
        return Ok(());
    }
    let has_v0 = db
        .tree_names()
        .iter()
        .any(|n| V0_TREES.iter().any(|t| n.as_ref() == t.as_bytes()))
        && V0_TREES
            .iter()
            .any(|t| db.open_tree(t).map(|t| !t.is_empty()).unwrap_or(false));
    if has_v0 {
        tracing::warn!(dir = %dir.display(), "migrating metadata from format version 0 (JSON)");
        migrate_v0(db, dir)?;
    }
    raft.insert(FORMAT, &SLED_VERSION.to_le_bytes())?;
    db.flush()?;
    drop_v0(db)?;
    Ok(())
}

fn drop_v0(db: &sled::Db) -> Result<(), Error> {
    for t in V0_TREES {
        if db.tree_names().iter().any(|n| n.as_ref() == t.as_bytes()) {
            db.drop_tree(t)?;
        }
    }
    Ok(())
}

/// Version 0 tagged some enums inside the object (`{"state": "staged", "node": 1, ...}`);
/// version 1 uses serde's default (`{"staged": {"node": 1, ...}}`). Rewrites every such object.
fn retag(v: &mut Value) {
    const TAGGED: [(&str, &[&str]); 2] = [
        (
            "state",
            &[
                "missing",
                "staged",
                "offloaded",
                "unscanned",
                "pending",
                "scanning",
                "clean",
                "infected",
                "error",
            ],
        ),
        ("verdict", &["clean", "infected", "error", "released"]),
    ];
    // The object itself first, then what it holds: an outer object may hold the tag's key
    // with a value that is itself a tagged object (`ScanFinished { verdict: {...} }`).
    if let Value::Object(o) = v {
        for (tag, variants) in TAGGED {
            let Some(Value::String(variant)) = o.get(tag) else {
                continue;
            };
            if !variants.contains(&variant.as_str()) {
                continue;
            }
            let variant = variant.clone();
            o.remove(tag);
            *v = if o.is_empty() {
                Value::String(variant)
            } else {
                let mut outer = serde_json::Map::new();
                outer.insert(variant, Value::Object(std::mem::take(o)));
                Value::Object(outer)
            };
            break;
        }
    }
    match v {
        Value::Array(a) => a.iter_mut().for_each(retag),
        Value::Object(o) => o.values_mut().for_each(retag),
        _ => {}
    }
}

fn from_v0<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Error> {
    let mut v: Value = serde_json::from_slice(bytes)?;
    retag(&mut v);
    Ok(serde_json::from_value(v)?)
}

#[derive(Deserialize)]
struct V0Snapshot {
    meta: SnapshotMeta<NodeId, WharfNode>,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct V0Applied {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, WharfNode>,
    state: V0State,
}

#[derive(Deserialize)]
struct V0State {
    users: BTreeMap<String, User>,
    uploads: BTreeMap<String, Upload>,
    idempotency: BTreeMap<String, String>,
    blobs: BTreeMap<String, Blob>,
    files: BTreeMap<String, File>,
    garbage: BTreeMap<String, Garbage>,
    last_node_id: u64,
    // Remembered request outcomes are not carried over: they only serve retries within
    // seconds, and every node drops them alike, so digests still agree.
}

fn migrate_v0(db: &sled::Db, dir: &Path) -> Result<(), Error> {
    let (old_logs, old_meta, old_sm) = (
        db.open_tree("logs")?,
        db.open_tree("meta")?,
        db.open_tree("sm")?,
    );
    let (log, raft, tree) = (
        db.open_tree("log")?,
        db.open_tree("raft")?,
        db.open_tree("state")?,
    );
    log.clear()?;
    raft.clear()?;
    tree.clear()?;

    if let Some(v) = old_meta.get(VOTE)? {
        raft.insert(VOTE, codec::encode(&from_v0::<Vote<NodeId>>(&v)?))?;
    }
    if let Some(v) = old_meta.get(COMMITTED)? {
        raft.insert(
            COMMITTED,
            codec::encode(&from_v0::<Option<LogId<NodeId>>>(&v)?),
        )?;
    }
    if let Some(v) = old_meta.get(LAST_PURGED)? {
        raft.insert(LAST_PURGED, codec::encode(&from_v0::<LogId<NodeId>>(&v)?))?;
    }
    let mut entries = 0;
    for kv in old_logs.iter() {
        let (k, v) = kv?;
        let e: Entry<TypeConfig> = from_v0(&v)?;
        log.insert(k, codec::encode(&e))?;
        entries += 1;
    }

    let snap = match old_sm.get(b"snapshot")? {
        Some(v) => Some(serde_json::from_slice::<V0Snapshot>(&v)?),
        None => None,
    };
    let (mut records, mut files) = (0, 0);
    if let Some(snap) = snap {
        let applied: V0Applied = from_v0(&snap.data)?;
        let s = applied.state;
        files = s.files.len();
        // The records are written through the model's own writers (indexes included) into
        // memory first: a version-0 state was held in memory whole anyway.
        let mut st = State::new(MemKv::default());
        for u in s.users.values() {
            st.put_user(u);
        }
        for up in s.uploads.values() {
            let mut up = up.clone();
            if up.state != UploadState::Uploading {
                // Version 0 did not record when an upload ended; its creation is the
                // earliest it could have, and the same on every node.
                up.ended_at = Some(up.created_at);
            }
            for (i, c) in (0u32..).zip(&up.chunks) {
                if !matches!(c, Chunk::Missing) {
                    st.put_chunk(&up.owner, &up.id, i, c);
                }
            }
            st.save_upload(None, &up);
        }
        for (k, id) in &s.idempotency {
            if let Some((owner, key)) = k.split_once('/') {
                st.put_idempotency(owner, key, id);
            }
        }
        for b in s.blobs.values() {
            st.save_blob(b);
        }
        for f in s.files.values() {
            st.put_file(f);
        }
        for g in s.garbage.values() {
            st.put_garbage(g);
        }
        st.set_last_node_id(s.last_node_id);
        let mut digest = SetHash::default();
        let mut batch = sled::Batch::default();
        for (k, v) in st.into_kv().0 {
            digest.add(&k, &v);
            batch.insert(k, v);
            records += 1;
        }
        batch.insert(APPLIED, codec::encode(&applied.last_applied));
        batch.insert(MEMBERSHIP, codec::encode(&applied.last_membership));
        batch.insert(DIGEST, digest.to_bytes().to_vec());
        tree.apply_batch(batch)?;

        // A snapshot in the new format, so that a follower the old log no longer covers can
        // still be caught up.
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots)?;
        let name = "snap-migrated.snap";
        let mut pages = Some(
            tree.range::<&[u8], _>(..&[crate::model::keys::STORE][..])
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<Vec<_>, _>>()?,
        );
        snapshot::write_file(&snapshots.join(name), || {
            Ok(pages.take().unwrap_or_default())
        })?;
        let ptr = Pointer {
            meta: SnapshotMeta {
                snapshot_id: format!("{}-migrated", snap.meta.snapshot_id),
                ..snap.meta
            },
            file: name.into(),
        };
        raft.insert(SNAPSHOT, codec::encode(&ptr))?;
    }
    db.flush()?;
    tracing::warn!(
        entries,
        records,
        files,
        "migrated metadata to format version {SLED_VERSION}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_0_tagged_enums_are_rewritten_to_the_default_form() {
        let mut v: Value = serde_json::json!({
            "chunks": [{"state": "missing"}, {"state": "staged", "node": 1, "len": 2, "blake3": "h", "cv": "c"}],
            "state": "uploading",
            "scan": {"state": "clean", "at": 5},
            "verdict": {"verdict": "released"},
        });
        retag(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "chunks": ["missing", {"staged": {"node": 1, "len": 2, "blake3": "h", "cv": "c"}}],
                "state": "uploading",
                "scan": {"clean": {"at": 5}},
                "verdict": "released",
            })
        );
        let c: Vec<Chunk> = serde_json::from_value(v["chunks"].clone()).unwrap();
        assert!(matches!(c[1], Chunk::Staged { node: 1, .. }));
    }
}
