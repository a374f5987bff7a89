//! Model-based test: random command sequences run through `apply` and through a deliberately
//! simple reference model; after every command the outcomes must agree and the invariants hold.

use std::collections::BTreeMap;

use proptest::prelude::*;
use wharf_raft::model::{
    Blob, Command, File, ModelError, Outcome, ScanState, ScanVerdict, State, Tier, TierLimits, User,
};

const USERS: [&str; 3] = ["ann", "bob", "cy"];
const CHUNK: u64 = 64;
const LIMITS: TierLimits = TierLimits {
    quota: 600,
    max_file_size: 320,
    max_concurrent_uploads: 3,
};
const TTL: u64 = 1_000;

#[derive(Clone, Debug)]
enum Op {
    Create {
        user: usize,
        size: u64,
        idem: Option<u8>,
        /// Made through tus (`CreateTusUpload`).
        tus: bool,
    },
    /// A tus tail of `len` bytes of chunk `chunk` (a PATCH that ended inside it).
    Tail {
        upload: usize,
        chunk: u32,
        len: u64,
    },
    Stage {
        upload: usize,
        chunk: u32,
        content: u8,
        node: u64,
    },
    NodeLost {
        node: u64,
    },
    /// Lease the blob of a file and finish its scan with this verdict (0 clean, 1 infected).
    Scan {
        file: usize,
        infected: bool,
    },
    Offload {
        upload: usize,
        chunk: u32,
    },
    Complete {
        upload: usize,
        hash: u8,
    },
    Abort {
        upload: usize,
        as_other_user: bool,
    },
    Expire {
        advance: u64,
    },
    Delete {
        file: usize,
    },
    SetQuota {
        user: usize,
        quota: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..USERS.len(), 0u64..400, proptest::option::of(0u8..3), any::<bool>())
            .prop_map(|(user, size, idem, tus)| Op::Create { user, size, idem, tus }),
        3 => (any::<usize>(), 0u32..6, 0u64..70)
            .prop_map(|(upload, chunk, len)| Op::Tail { upload, chunk, len }),
        5 => (any::<usize>(), 0u32..6, 0u8..2, 1u64..3)
            .prop_map(|(upload, chunk, content, node)| Op::Stage { upload, chunk, content, node }),
        1 => (1u64..3).prop_map(|node| Op::NodeLost { node }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(file, infected)| Op::Scan { file, infected }),
        4 => (any::<usize>(), 0u32..6).prop_map(|(upload, chunk)| Op::Offload { upload, chunk }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(upload, hash)| Op::Complete { upload, hash }),
        1 => (any::<usize>(), any::<bool>())
            .prop_map(|(upload, as_other_user)| Op::Abort { upload, as_other_user }),
        1 => (0u64..1_500).prop_map(|advance| Op::Expire { advance }),
        2 => any::<usize>().prop_map(|file| Op::Delete { file }),
        1 => (0..USERS.len(), 0u64..1_000).prop_map(|(user, quota)| Op::SetQuota { user, quota }),
    ]
}

/// The reference model: plain maps and arithmetic, no sharing of code with `apply`.
#[derive(Default)]
struct Reference {
    quota: BTreeMap<String, u64>,
    used: BTreeMap<String, u64>,
    reserved: BTreeMap<String, u64>,
    /// upload id -> (owner, size, live, per-chunk (content, offloaded), expires_at)
    uploads: BTreeMap<String, RefUpload>,
    idem: BTreeMap<(String, u8), String>,
    /// file id -> (owner, size, hash)
    files: BTreeMap<String, (String, u64, String)>,
    /// (owner, hash) of infected blobs: their files are not counted as used.
    infected: std::collections::BTreeSet<(String, String)>,
}

struct RefUpload {
    owner: String,
    size: u64,
    live: bool,
    /// Per chunk: (content, offloaded, node).
    chunks: Vec<Option<(u8, bool, u64)>>,
    expires_at: u64,
    stored_as: Option<String>,
    /// A tus upload's tail (chunk, len), when it was made through tus.
    tus: Option<Option<(u32, u64)>>,
}

impl Reference {
    fn committed(&self, u: &str) -> u64 {
        self.used.get(u).copied().unwrap_or(0) + self.reserved.get(u).copied().unwrap_or(0)
    }
    fn live_uploads(&self, u: &str) -> usize {
        self.uploads
            .values()
            .filter(|x| x.live && x.owner == u)
            .count()
    }
    fn end(&mut self, id: &str) {
        let up = self.uploads.get_mut(id).unwrap();
        up.live = false;
        if let Some(tail) = up.tus.as_mut() {
            *tail = None;
        }
        *self.reserved.get_mut(&up.owner).unwrap() -= up.size;
    }
}

fn chunk_len(size: u64, i: u32) -> u64 {
    size.saturating_sub(u64::from(i) * CHUNK).min(CHUNK)
}

/// Every record of one kind (key prefix), decoded: the test looks at the whole state.
fn all<T: serde::de::DeserializeOwned>(s: &State, prefix: &str) -> BTreeMap<String, T> {
    s.kv()
        .0
        .iter()
        .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
        .map(|(k, v)| {
            let k = String::from_utf8(k[prefix.len()..].to_vec()).unwrap();
            (k, wharf_raft::codec::decode(v).unwrap())
        })
        .collect()
}

fn check_invariants(s: &State, r: &Reference) -> Result<(), TestCaseError> {
    let users: BTreeMap<String, User> = all(s, "u/");
    let files: BTreeMap<String, File> = all(s, "f/");
    let blobs: BTreeMap<String, Blob> = all(s, "b/");
    for (id, u) in &users {
        prop_assert!(
            u.used + u.reserved <= u.quota,
            "user {id}: used {} + reserved {} > quota {}",
            u.used,
            u.reserved,
            u.quota
        );
        // Reservations become usage or are released exactly once: the totals equal the sums
        // the reference model keeps by hand.
        prop_assert_eq!(
            u.used,
            r.used.get(id).copied().unwrap_or(0),
            "used of {}",
            id
        );
        prop_assert_eq!(
            u.reserved,
            r.reserved.get(id).copied().unwrap_or(0),
            "reserved of {}",
            id
        );
        prop_assert_eq!(u.active_uploads as usize, r.live_uploads(id));
        let counted: u64 = files
            .values()
            .filter(|f| &f.owner == id)
            .filter(|f| {
                !matches!(
                    blobs[&format!("{}/{}", f.owner, f.blake3)].scan,
                    wharf_raft::model::ScanState::Infected { .. }
                )
            })
            .map(|f| f.size)
            .sum();
        prop_assert_eq!(
            u.used,
            counted,
            "used counts every live, uninfected file once"
        );
    }
    for (k, b) in &blobs {
        let refs = files
            .values()
            .filter(|f| f.owner == b.owner && f.blake3 == b.blake3)
            .count() as u64;
        prop_assert_eq!(b.refcount, refs, "blob {}", k);
        prop_assert!(b.refcount > 0);
    }
    for f in files.values() {
        prop_assert!(
            blobs.contains_key(&format!("{}/{}", f.owner, f.blake3)),
            "file {} points at no blob",
            f.id
        );
    }
    prop_assert_eq!(files.len(), r.files.len());
    // Every index entry points at its record, and every record has its index entries.
    let by_blob: BTreeMap<String, u64> = all(s, "fb/");
    prop_assert_eq!(by_blob.len(), files.len());
    for f in files.values() {
        let owner = s.file_owner(&f.id);
        prop_assert_eq!(owner.as_deref(), Some(f.owner.as_str()));
        let entry = format!("{}/{}/{}", f.owner, f.blake3, f.id);
        prop_assert!(
            by_blob.contains_key(&entry),
            "no file-of-blob entry {}",
            entry
        );
    }
    let queued: BTreeMap<String, ()> = all(s, "sq/");
    for (k, b) in &blobs {
        let waiting = matches!(b.scan, ScanState::Pending | ScanState::Scanning { .. });
        prop_assert_eq!(queued.contains_key(k), waiting, "scan queue entry of {}", k);
    }
    let uploads: BTreeMap<String, wharf_raft::model::Upload> = all(s, "up/");
    let open: BTreeMap<String, ()> = all(s, "ux/");
    let live = uploads
        .values()
        .filter(|u| u.state == wharf_raft::model::UploadState::Uploading)
        .count();
    prop_assert_eq!(open.len(), live, "one expiry index entry per open upload");
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut s = State::default();
    let mut r = Reference::default();
    let mut now = 1_000u64;
    let mut next_id = 0u32;
    let mut upload_ids: Vec<(String, String)> = Vec::new(); // (owner, id)
                                                            // Every tail ever recorded: each is the current one or garbage.
    let mut tails: Vec<String> = Vec::new();

    for op in ops {
        now += 1;
        next_id += 1;
        match op {
            Op::Create {
                user,
                size,
                idem,
                tus,
            } => {
                let owner = USERS[user].to_string();
                let id = format!("up{next_id}");
                let wrap = |c: Command| match tus {
                    true => Command::CreateTusUpload {
                        create: Box::new(c),
                        metadata: Some(format!("filename {size}")),
                    },
                    false => c,
                };
                let res = apply(
                    &mut s,
                    wrap(Command::CreateUpload {
                        upload_id: id.clone(),
                        owner: owner.clone(),
                        tier: Tier::Basic,
                        limits: LIMITS,
                        name: format!("f{size}"),
                        mime: None,
                        size,
                        chunk_size: CHUNK,
                        blake3: None,
                        idempotency_key: idem.map(|k| format!("k{k}")),
                        ttl_ms: TTL,
                        now,
                    }),
                );
                r.quota.entry(owner.clone()).or_insert(LIMITS.quota);
                // A key whose upload ended without a file is free again.
                let prev = idem
                    .and_then(|k| r.idem.get(&(owner.clone(), k)))
                    .filter(|prev| r.uploads[*prev].live || r.uploads[*prev].stored_as.is_some());
                if let Some(prev) = prev {
                    let same = r.uploads[prev].size == size;
                    match res {
                        Ok(Outcome::Upload(u)) => {
                            prop_assert!(same);
                            prop_assert_eq!(&u.id, prev, "idempotent create made a new upload");
                        }
                        Err(ModelError::IdempotencyConflict) => prop_assert!(!same),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                    continue;
                }
                let fits = r.committed(&owner) + size <= r.quota[&owner];
                let allowed = size <= LIMITS.max_file_size
                    && r.live_uploads(&owner) < LIMITS.max_concurrent_uploads as usize
                    && fits;
                prop_assert_eq!(res.is_ok(), allowed, "create {:?}", res);
                if allowed {
                    *r.reserved.entry(owner.clone()).or_default() += size;
                    let n = size.div_ceil(CHUNK).max(1) as usize;
                    r.uploads.insert(
                        id.clone(),
                        RefUpload {
                            owner: owner.clone(),
                            size,
                            live: true,
                            chunks: vec![None; n],
                            expires_at: now + TTL,
                            stored_as: None,
                            tus: tus.then_some(None),
                        },
                    );
                    if let Some(k) = idem {
                        r.idem.insert((owner.clone(), k), id.clone());
                    }
                    upload_ids.push((owner, id));
                }
            }
            Op::Stage {
                upload,
                chunk,
                content,
                node,
            } => {
                let Some((owner, id)) = pick(&upload_ids, upload) else {
                    continue;
                };
                let up = &r.uploads[&id];
                let res = apply(
                    &mut s,
                    Command::ChunkStaged {
                        owner: owner.clone(),
                        upload_id: id.clone(),
                        index: chunk,
                        node,
                        len: chunk_len(up.size, chunk),
                        blake3: format!("h{content}"),
                        cv: format!("cv{chunk}-{content}"),
                        now,
                    },
                );
                let slot = up.chunks.get(chunk as usize);
                let ok = up.live
                    && match slot {
                        None => false,
                        Some(None) => true,
                        Some(Some((c, _, _))) => *c == content,
                    };
                prop_assert_eq!(res.is_ok(), ok, "stage {:?}", res);
                if ok {
                    let up = r.uploads.get_mut(&id).unwrap();
                    up.expires_at = up.expires_at.max(now + TTL);
                    let slot = &mut up.chunks[chunk as usize];
                    if slot.is_none() {
                        *slot = Some((content, false, node));
                        // A whole chunk needs no tail of it.
                        if let Some(tail) = up.tus.as_mut() {
                            if tail.is_some_and(|(c, _)| c == chunk) {
                                *tail = None;
                            }
                        }
                    }
                }
            }
            Op::Tail { upload, chunk, len } => {
                let Some((owner, id)) = pick(&upload_ids, upload) else {
                    continue;
                };
                let res = apply(
                    &mut s,
                    Command::TusTail {
                        owner: owner.clone(),
                        upload_id: id.clone(),
                        index: chunk,
                        len,
                        object_key: format!("tail/{id}/{chunk}-{len}-{now}"),
                        now,
                    },
                );
                let up = &r.uploads[&id];
                let ok = up.live
                    && up.tus.is_some()
                    && (chunk as usize) < up.chunks.len()
                    && len > 0
                    && len < chunk_len(up.size, chunk)
                    && up.chunks[chunk as usize].is_none()
                    && !matches!(up.tus, Some(Some((c, l))) if c == chunk && l >= len);
                prop_assert_eq!(res.is_ok(), ok, "tail {:?}", res);
                if ok {
                    let up = r.uploads.get_mut(&id).unwrap();
                    up.tus = Some(Some((chunk, len)));
                    up.expires_at = up.expires_at.max(now + TTL);
                    tails.push(format!("tail/{id}/{chunk}-{len}-{now}"));
                }
            }
            Op::Offload { upload, chunk } => {
                let Some((owner, id)) = pick(&upload_ids, upload) else {
                    continue;
                };
                // Offloads come from the holder, or (a node declared lost, late) from another.
                let holder = r.uploads[&id]
                    .chunks
                    .get(chunk as usize)
                    .copied()
                    .flatten()
                    .map(|(_, _, n)| n);
                let by = if chunk % 3 == 2 {
                    99
                } else {
                    holder.unwrap_or(1)
                };
                let res = apply(
                    &mut s,
                    Command::ChunkOffloaded {
                        owner,
                        upload_id: id.clone(),
                        index: chunk,
                        etag: format!("e{chunk}"),
                        node: by,
                    },
                );
                let up = r.uploads.get_mut(&id).unwrap();
                let offloaded = matches!(up.chunks.get(chunk as usize), Some(Some((_, true, _))));
                let ok = up.live
                    && matches!(up.chunks.get(chunk as usize), Some(Some(_)))
                    && (offloaded || holder == Some(by));
                prop_assert_eq!(res.is_ok(), ok, "offload {:?}", res);
                if ok {
                    up.chunks[chunk as usize].as_mut().unwrap().1 = true;
                }
            }
            Op::Complete { upload, hash } => {
                let Some((owner, id)) = pick(&upload_ids, upload) else {
                    continue;
                };
                let file_id = format!("file{next_id}");
                let res = apply(
                    &mut s,
                    Command::CompleteUpload {
                        owner: owner.clone(),
                        upload_id: id.clone(),
                        file_id: file_id.clone(),
                        blake3: format!("w{hash}"),
                        scan: true,
                        now,
                    },
                );
                let up = &r.uploads[&id];
                let ready = up.live && up.chunks.iter().all(|c| matches!(c, Some((_, true, _))));
                if ready {
                    prop_assert!(matches!(res, Ok(Outcome::File(_))), "complete {:?}", res);
                    let size = up.size;
                    r.end(&id);
                    r.uploads.get_mut(&id).unwrap().stored_as = Some(file_id.clone());
                    if !r.infected.contains(&(owner.clone(), format!("w{hash}"))) {
                        *r.used.entry(owner.clone()).or_default() += size;
                    }
                    r.files.insert(file_id, (owner, size, format!("w{hash}")));
                } else if !up.live {
                    // Completing again answers with the file it made (while that file lives),
                    // and never makes a second one.
                    match up.stored_as.as_ref().filter(|f| r.files.contains_key(*f)) {
                        Some(f) => prop_assert!(
                            matches!(&res, Ok(Outcome::File(file)) if &file.id == f),
                            "repeat complete {:?}",
                            res
                        ),
                        None => prop_assert!(res.is_err(), "complete of ended upload {:?}", res),
                    }
                } else {
                    prop_assert!(
                        matches!(res, Err(ModelError::MissingChunks(_))),
                        "{:?}",
                        res
                    );
                }
            }
            Op::Abort {
                upload,
                as_other_user,
            } => {
                let Some((owner, id)) = pick(&upload_ids, upload) else {
                    continue;
                };
                let who = if as_other_user {
                    USERS.iter().find(|u| **u != owner).unwrap().to_string()
                } else {
                    owner.clone()
                };
                let res = apply(
                    &mut s,
                    Command::AbortUpload {
                        owner: who,
                        upload_id: id.clone(),
                        now,
                    },
                );
                if as_other_user {
                    prop_assert_eq!(res, Err(ModelError::NotFound), "another user's id");
                    continue;
                }
                let live = r.uploads[&id].live;
                prop_assert_eq!(res.is_ok(), live);
                if live {
                    r.end(&id);
                }
            }
            Op::Expire { advance } => {
                now += advance;
                let res = apply(
                    &mut s,
                    Command::ExpireUploads {
                        now,
                        retention_ms: None,
                    },
                );
                let due: Vec<String> = r
                    .uploads
                    .iter()
                    .filter(|(_, u)| u.live && u.expires_at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                match res {
                    Ok(Outcome::Expired(mut ids)) => {
                        ids.sort();
                        let mut want = due.clone();
                        want.sort();
                        prop_assert_eq!(ids, want);
                    }
                    other => prop_assert!(false, "expire {:?}", other),
                }
                for id in due {
                    r.end(&id);
                }
            }
            Op::Delete { file } => {
                if r.files.is_empty() {
                    continue;
                }
                let fid = r.files.keys().nth(file % r.files.len()).unwrap().clone();
                let (owner, size, hash) = r.files[&fid].clone();
                let res = apply(
                    &mut s,
                    Command::DeleteFile {
                        owner: owner.clone(),
                        file_id: fid.clone(),
                        now,
                    },
                );
                prop_assert!(res.is_ok(), "delete {:?}", res);
                r.files.remove(&fid);
                if !r.infected.contains(&(owner.clone(), hash.clone())) {
                    *r.used.get_mut(&owner).unwrap() -= size;
                }
                if !r.files.values().any(|(o, _, h)| *o == owner && *h == hash) {
                    // The blob is gone with its last file; new content starts clean.
                    r.infected.remove(&(owner.clone(), hash));
                }
                // Deleting twice is "not found", and changes nothing.
                let again = apply(
                    &mut s,
                    Command::DeleteFile {
                        owner,
                        file_id: fid,
                        now,
                    },
                );
                prop_assert_eq!(again, Err(ModelError::NotFound));
            }
            Op::Scan { file, infected } => {
                if r.files.is_empty() {
                    continue;
                }
                let fid = r.files.keys().nth(file % r.files.len()).unwrap().clone();
                let (owner, _, hash) = r.files[&fid].clone();
                let blob = format!("{owner}/{hash}");
                let was_infected = r.infected.contains(&(owner.clone(), hash.clone()));
                let leased = apply(
                    &mut s,
                    Command::LeaseScan {
                        blob: blob.clone(),
                        holder: 1,
                        now,
                        until: now + 10,
                    },
                );
                // Fresh blobs wait for a scan; a scanned one must be re-queued first.
                if leased.is_err() {
                    let res = apply(
                        &mut s,
                        Command::Rescan {
                            file: Some(fid.clone()),
                        },
                    );
                    prop_assert!(res.is_ok());
                    let again = apply(
                        &mut s,
                        Command::LeaseScan {
                            blob: blob.clone(),
                            holder: 1,
                            now,
                            until: now + 10,
                        },
                    );
                    prop_assert_eq!(
                        again.is_ok(),
                        !was_infected,
                        "lease after rescan {:?}",
                        again
                    );
                    if was_infected {
                        continue;
                    }
                }
                // Another node cannot report on a lease it does not hold.
                let stolen = apply(
                    &mut s,
                    Command::ScanFinished {
                        blob: blob.clone(),
                        holder: 2,
                        verdict: ScanVerdict::Clean,
                        now,
                    },
                );
                prop_assert_eq!(stolen, Err(ModelError::LeaseHeld { holder: 1 }));
                let verdict = if infected {
                    ScanVerdict::Infected {
                        signature: "Eicar".into(),
                    }
                } else {
                    ScanVerdict::Clean
                };
                let res = apply(
                    &mut s,
                    Command::ScanFinished {
                        blob,
                        holder: 1,
                        verdict,
                        now,
                    },
                );
                prop_assert!(res.is_ok(), "{:?}", res);
                if infected {
                    let size: u64 = r
                        .files
                        .values()
                        .filter(|(o, _, h)| *o == owner && *h == hash)
                        .map(|(_, s, _)| s)
                        .sum();
                    *r.used.get_mut(&owner).unwrap() -= size;
                    r.infected.insert((owner, hash));
                }
            }
            Op::NodeLost { node } => {
                let res = apply(&mut s, Command::NodeLost { node });
                let mut lost = 0;
                for up in r.uploads.values_mut().filter(|u| u.live) {
                    for c in &mut up.chunks {
                        if matches!(c, Some((_, false, n)) if *n == node) {
                            *c = None;
                            lost += 1;
                        }
                    }
                }
                prop_assert_eq!(res, Ok(Outcome::ChunksLost(lost)));
            }
            Op::SetQuota { user, quota } => {
                let u = USERS[user].to_string();
                let res = apply(
                    &mut s,
                    Command::SetQuota {
                        user: u.clone(),
                        quota,
                    },
                );
                let ok = quota >= r.committed(&u);
                prop_assert_eq!(res.is_ok(), ok, "set quota {:?}", res);
                if ok {
                    r.quota.insert(u, quota);
                }
            }
        }
        check_invariants(&s, &r)?;
        check_tus(&s, &r, &tails)?;
    }
    Ok(())
}

/// tus: the offset is the bytes held from the start plus the tail of the first chunk not
/// held; a tail no longer current is garbage (its object is never lost track of).
fn check_tus(s: &State, r: &Reference, tails: &[String]) -> Result<(), TestCaseError> {
    let garbage: BTreeMap<String, wharf_raft::model::Garbage> = all(s, "g/");
    let mut current = std::collections::BTreeSet::new();
    for (id, up) in &r.uploads {
        let Some(tail) = up.tus else {
            prop_assert!(s.tus(&up.owner, id).is_none());
            continue;
        };
        let record = s.tus(&up.owner, id);
        prop_assert!(record.is_some(), "tus record of {}", id);
        let record = record.unwrap();
        prop_assert_eq!(
            record.tail.as_ref().map(|t| (t.index, t.len)),
            tail,
            "tail of {}",
            id
        );
        if let Some(t) = &record.tail {
            current.insert(t.object_key.clone());
        }
        let model = s.upload(&up.owner, id).unwrap();
        let held = up.chunks.iter().take_while(|c| c.is_some()).count();
        let want = if !up.live && up.stored_as.is_some() || held == up.chunks.len() {
            up.size
        } else {
            let prefix = held as u64 * CHUNK;
            match tail {
                Some((c, l)) if c as usize == held => prefix + l,
                _ => prefix,
            }
        };
        if up.live || up.stored_as.is_some() {
            prop_assert_eq!(
                wharf_raft::model::tus::offset(&model, Some(&record)),
                want,
                "offset of {}",
                id
            );
        }
    }
    for t in tails {
        prop_assert!(
            current.contains(t) || garbage.contains_key(t),
            "tail {} is neither current nor garbage",
            t
        );
    }
    Ok(())
}

/// `apply`, plus the rule that a refused command changes nothing.
fn apply(s: &mut State, cmd: Command) -> Result<Outcome, ModelError> {
    let before = s.clone();
    let res = wharf_raft::apply(s, cmd.clone());
    if res.is_err() {
        assert_eq!(*s, before, "refused {cmd:?} changed the state");
    }
    res
}

fn pick(ids: &[(String, String)], i: usize) -> Option<(String, String)> {
    if ids.is_empty() {
        None
    } else {
        Some(ids[i % ids.len()].clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn model_keeps_quota_reservation_and_refcount_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
