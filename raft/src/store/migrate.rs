//! The data dir's format version, and the migration of version 0 (JSON, the whole state in
//! one snapshot value, wharf up to 0.1 before the state moved into sled).
//!
//! Version 0 kept trees `logs`, `meta` and `sm`; version 1 keeps `log`, `raft` and `state`, so
//! a migration writes the new trees beside the old ones and flips the version last: a crash
//! half-way leaves the old trees intact, and the next start migrates again from scratch.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use serde::Deserialize;
use serde_json::Value;

use super::snapshot::{self, Pointer};
use super::state_machine::{APPLIED, DIGEST, MEMBERSHIP, SNAPSHOT};
use super::{COMMITTED, LAST_PURGED, VOTE};
use crate::codec::{self, FORMAT_VERSION};
use crate::kv::{MemKv, SetHash};
use crate::model::{Blob, Chunk, File, Garbage, State, Upload, UploadState, User};
use crate::{Error, NodeId, TypeConfig, WharfNode};

const FORMAT: &[u8] = b"format";
const V0_TREES: [&str; 3] = ["logs", "meta", "sm"];

/// Makes `db` a version-1 store: new, already version 1, or migrated from version 0.
pub fn prepare(db: &sled::Db, dir: &Path) -> Result<(), Error> {
    let raft = db.open_tree("raft")?;
    if let Some(v) = raft.get(FORMAT)? {
        let version = v
            .as_ref()
            .try_into()
            .map(u32::from_le_bytes)
            .unwrap_or(u32::MAX);
        if version != FORMAT_VERSION {
            return Err(Error::Format(format!(
                "the metadata in {} is format version {version}; this wharf reads version \
                 {FORMAT_VERSION} (and migrates version 0): run the wharf that wrote it, or a newer one",
                dir.display()
            )));
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
    raft.insert(FORMAT, &FORMAT_VERSION.to_le_bytes())?;
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
        "migrated metadata to format version {FORMAT_VERSION}"
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
