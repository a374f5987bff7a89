//! The random operations of the store model test and the commands they become.

use super::*;

#[derive(Clone, Debug)]
pub enum Op {
    Create {
        owner: usize,
        up: u8,
        size: u64,
        idem: Option<u8>,
    },
    Stage {
        owner: usize,
        up: u8,
        index: u32,
        node: u64,
        content: u8,
    },
    Offload {
        owner: usize,
        up: u8,
        index: u32,
    },
    Complete {
        owner: usize,
        up: u8,
        file: u8,
        hash: u8,
    },
    Abort {
        owner: usize,
        up: u8,
    },
    Expire {
        advance: u64,
        retention: Option<u64>,
    },
    Store {
        owner: usize,
        up: u8,
        file: u8,
        size: u64,
        hash: u8,
        idem: Option<u8>,
    },
    Rename {
        owner: usize,
        file: u8,
    },
    Delete {
        owner: usize,
        file: u8,
    },
    SetQuota {
        owner: usize,
        quota: u64,
    },
    Lease {
        owner: usize,
        hash: u8,
        holder: u64,
    },
    Finish {
        owner: usize,
        hash: u8,
        holder: u64,
        verdict: u8,
    },
    Quarantine {
        owner: usize,
        hash: u8,
    },
    Rescan {
        file: Option<u8>,
    },
    NodeLost {
        node: u64,
    },
    Garbage {
        up: u8,
    },
    /// A tus tail (uploads `up3` to `up5` are made through tus).
    Tail {
        owner: usize,
        up: u8,
        index: u32,
        len: u64,
    },
    /// A deferred tus upload's length (upload 5 is made with `Upload-Defer-Length`).
    Declare {
        owner: usize,
        up: u8,
        size: u64,
    },
    /// Wrap the next command in `Once` with this request id (repeats are likely).
    Once {
        id: u8,
    },
    /// A tus final upload `fin{fin}` of uploads `parts` (uploads 3 and 4 are made as partials).
    Final {
        owner: usize,
        fin: u8,
        parts: Vec<u8>,
    },
    CompleteFinal {
        owner: usize,
        fin: u8,
        file: u8,
        hash: u8,
    },
    AbortFinal {
        owner: usize,
        fin: u8,
    },
    /// A share link `t{token}` to file `f{file}`, revoked, or downloaded through.
    Link {
        owner: usize,
        file: u8,
        token: u8,
        max: Option<u64>,
    },
    Revoke {
        owner: usize,
        token: u8,
    },
    LinkDownload {
        token: u8,
    },
    /// A create that declares content `h{hash}` (of the size the owner's blob has, if any).
    Dedup {
        owner: usize,
        up: u8,
        file: u8,
        hash: u8,
        idem: Option<u8>,
    },
    /// Folder `d{folder}` named `x{name}` in `d{parent}` (or the root).
    Mkdir {
        owner: usize,
        folder: u8,
        name: u8,
        parent: Option<u8>,
        rename: bool,
    },
    /// Folder `d{id}` (or file `f{id}`) renamed to `x{name}` and/or moved to `d{parent}`
    /// (`Some(None)`: the root).
    Move {
        owner: usize,
        folder: bool,
        id: u8,
        name: Option<u8>,
        parent: Option<Option<u8>>,
    },
    Rmdir {
        owner: usize,
        folder: u8,
    },
    /// A one-request file (or, `session`, an upload) named `x{name}` in `d{folder}`.
    Placed {
        owner: usize,
        up: u8,
        file: u8,
        folder: Option<u8>,
        name: u8,
        /// 0: fail on a clash, 1: rename, 2: replace (a new version, keeping 2).
        conflict: u8,
        session: bool,
    },
    IndexEntries,
    /// Count up to `limit` users into the usage totals.
    CountUsage {
        limit: u32,
    },
    /// A share link `t{token}` to folder `d{folder}`.
    FolderLink {
        owner: usize,
        folder: u8,
        token: u8,
    },
    /// A one-request file `x{name}` in the root replacing the file of that name (a new
    /// version of it) if there is one.
    Replace {
        owner: usize,
        name: u8,
        hash: u8,
        size: u64,
    },
    /// File `f{id}` (or folder `d{id % 4}`) to the trash.
    Trash {
        owner: usize,
        folder: bool,
        id: u8,
    },
    /// One of the owner's trash entries restored, or purged.
    FromTrash {
        owner: usize,
        pick: u8,
        purge: bool,
    },
    /// File `f{id}` (or folder `d{id % 4}`) of `owner` shared with the other owner.
    Share {
        owner: usize,
        folder: bool,
        id: u8,
        editor: bool,
    },
    /// The other owner's share of file `f{id}` (or folder `d{id % 4}`) revoked.
    Unshare {
        owner: usize,
        folder: bool,
        id: u8,
    },
    /// The other owner renames `owner`'s file `f{id}` (as an editor would).
    RenameAs {
        owner: usize,
        id: u8,
        name: u8,
    },
    /// File `f{file}` renamed through node `node` (a `Via`, audited).
    ViaRename {
        owner: usize,
        file: u8,
        node: u64,
    },
    /// Node `node`'s download number `seq` of file `f{file}`.
    Downloads {
        node: u64,
        seq: u64,
        file: u8,
    },
    /// Audit records older than `ago` ticks dropped.
    PruneAudit {
        ago: u64,
    },
    /// A webhook `w{id}` for every event type (`all`) or completions only.
    Hook {
        id: u8,
        all: bool,
    },
    /// Webhook `w{id}`'s receiver acknowledged the `pick`-th event kept.
    HookAck {
        id: u8,
        pick: u8,
    },
    /// The leader's purge of what was trashed before `ago` ticks ago.
    PurgeExpired {
        ago: u64,
    },
    /// An earlier version of one of the owner's files that have some made current again.
    Restore {
        owner: usize,
        file: u8,
        version: u8,
    },
}

pub fn op() -> impl Strategy<Value = Op> {
    let o = 0..OWNERS.len();
    prop_oneof![
        3 => (o.clone(), 0..6u8, 0..300u64, proptest::option::of(0..3u8)).prop_map(|(owner, up, size, idem)| Op::Create { owner, up, size, idem }),
        5 => (o.clone(), 0..6u8, 0..5u32, 1..4u64, 0..2u8).prop_map(|(owner, up, index, node, content)| Op::Stage { owner, up, index, node, content }),
        4 => (o.clone(), 0..6u8, 0..5u32).prop_map(|(owner, up, index)| Op::Offload { owner, up, index }),
        3 => (o.clone(), 0..6u8, 0..8u8, 0..3u8).prop_map(|(owner, up, file, hash)| Op::Complete { owner, up, file, hash }),
        1 => (o.clone(), 0..6u8).prop_map(|(owner, up)| Op::Abort { owner, up }),
        1 => (0..3_000u64, proptest::option::of(0..2_000u64)).prop_map(|(advance, retention)| Op::Expire { advance, retention }),
        3 => (o.clone(), 6..12u8, 0..8u8, 0..300u64, 0..3u8, proptest::option::of(0..3u8)).prop_map(|(owner, up, file, size, hash, idem)| Op::Store { owner, up, file, size, hash, idem }),
        1 => (o.clone(), 0..8u8).prop_map(|(owner, file)| Op::Rename { owner, file }),
        2 => (o.clone(), 0..8u8).prop_map(|(owner, file)| Op::Delete { owner, file }),
        1 => (o.clone(), 0..1_500u64).prop_map(|(owner, quota)| Op::SetQuota { owner, quota }),
        2 => (o.clone(), 0..3u8, 1..3u64).prop_map(|(owner, hash, holder)| Op::Lease { owner, hash, holder }),
        2 => (o.clone(), 0..3u8, 1..3u64, 0..4u8).prop_map(|(owner, hash, holder, verdict)| Op::Finish { owner, hash, holder, verdict }),
        1 => (o.clone(), 0..3u8).prop_map(|(owner, hash)| Op::Quarantine { owner, hash }),
        1 => proptest::option::of(0..8u8).prop_map(|file| Op::Rescan { file }),
        1 => (1..4u64).prop_map(|node| Op::NodeLost { node }),
        1 => (0..12u8).prop_map(|up| Op::Garbage { up }),
        2 => (o.clone(), 0..6u8, 0..5u32, 0..70u64).prop_map(|(owner, up, index, len)| Op::Tail { owner, up, index, len }),
        2 => (o.clone(), 3..6u8, 0..300u64).prop_map(|(owner, up, size)| Op::Declare { owner, up, size }),
        2 => (0..4u8).prop_map(|id| Op::Once { id }),
        2 => (o.clone(), 0..2u8, proptest::collection::vec(2..5u8, 0..3)).prop_map(|(owner, fin, parts)| Op::Final { owner, fin, parts }),
        2 => (o.clone(), 0..2u8, 0..8u8, 0..3u8).prop_map(|(owner, fin, file, hash)| Op::CompleteFinal { owner, fin, file, hash }),
        1 => (o.clone(), 0..2u8).prop_map(|(owner, fin)| Op::AbortFinal { owner, fin }),
        2 => (o.clone(), 0..12u8, 0..8u8, 0..3u8, proptest::option::of(0..3u8)).prop_map(|(owner, up, file, hash, idem)| Op::Dedup { owner, up, file, hash, idem }),
        2 => (o.clone(), 0..8u8, 0..4u8, proptest::option::of(1..3u64)).prop_map(|(owner, file, token, max)| Op::Link { owner, file, token, max }),
        1 => (o.clone(), 0..4u8).prop_map(|(owner, token)| Op::Revoke { owner, token }),
        2 => (0..4u8).prop_map(|token| Op::LinkDownload { token }),
        3 => (o.clone(), 0..4u8, 0..3u8, proptest::option::of(0..4u8), any::<bool>()).prop_map(|(owner, folder, name, parent, rename)| Op::Mkdir { owner, folder, name, parent, rename }),
        3 => (o.clone(), any::<bool>(), 0..8u8, proptest::option::of(0..3u8), proptest::option::of(proptest::option::of(0..4u8))).prop_map(|(owner, folder, id, name, parent)| Op::Move { owner, folder, id: if folder { id % 4 } else { id }, name, parent }),
        1 => (o.clone(), 0..4u8).prop_map(|(owner, folder)| Op::Rmdir { owner, folder }),
        3 => (o.clone(), 0..12u8, 0..8u8, proptest::option::of(0..4u8), 0..3u8, 0..3u8, any::<bool>()).prop_map(|(owner, up, file, folder, name, conflict, session)| Op::Placed { owner, up, file, folder, name, conflict, session }),
        1 => Just(Op::IndexEntries),
        1 => (1..3u32).prop_map(|limit| Op::CountUsage { limit }),
        1 => (0..2u8, any::<bool>()).prop_map(|(id, all)| Op::Hook { id, all }),
        2 => (o.clone(), 0..8u8, 1..3u64).prop_map(|(owner, file, node)| Op::ViaRename { owner, file, node }),
        2 => (1..3u64, 0..6u64, 0..8u8).prop_map(|(node, seq, file)| Op::Downloads { node, seq, file }),
        1 => (0..3_000u64).prop_map(|ago| Op::PruneAudit { ago }),
        2 => (0..2u8, 0..40u8).prop_map(|(id, pick)| Op::HookAck { id, pick }),
        1 => (o.clone(), 0..4u8, 0..4u8).prop_map(|(owner, folder, token)| Op::FolderLink { owner, folder, token }),
        3 => (o.clone(), 0..2u8, 0..4u8, 0..30u64).prop_map(|(owner, name, hash, size)| Op::Replace { owner, name, hash, size }),
        3 => (o.clone(), 0..8u8, 0..4u8).prop_map(|(owner, file, version)| Op::Restore { owner, file, version }),
        3 => (o.clone(), any::<bool>(), 0..8u8).prop_map(|(owner, folder, id)| Op::Trash { owner, folder, id }),
        3 => (o.clone(), 0..4u8, any::<bool>()).prop_map(|(owner, pick, purge)| Op::FromTrash { owner, pick, purge }),
        1 => (0..40u64).prop_map(|ago| Op::PurgeExpired { ago }),
        3 => (o.clone(), any::<bool>(), 0..8u8, any::<bool>()).prop_map(|(owner, folder, id, editor)| Op::Share { owner, folder, id, editor }),
        2 => (o.clone(), any::<bool>(), 0..8u8).prop_map(|(owner, folder, id)| Op::Unshare { owner, folder, id }),
        3 => (o.clone(), 0..8u8, 0..3u8).prop_map(|(owner, id, name)| Op::RenameAs { owner, id, name }),
    ]
}

fn create(owner: String, up: u8, size: u64, idem: Option<u8>, now: u64) -> Command {
    Command::CreateUpload {
        upload_id: format!("up{up}"),
        owner,
        tier: Tier::Basic,
        limits: LIMITS,
        name: format!("n{size}"),
        mime: None,
        size,
        chunk_size: 64,
        blake3: None,
        idempotency_key: idem.map(|k| format!("k{k}")),
        ttl_ms: 1_000,
        now,
    }
}

/// Turns an op into a command; the in-memory state supplies plausible lengths.
pub fn command(op: &Op, mem: &State, now: u64) -> Option<Command> {
    let ow = |i: usize| OWNERS[i].to_string();
    Some(match op.clone() {
        Op::Create {
            owner, up, size, ..
        } if up == 5 => Command::CreateDeferredTusUpload {
            create: Box::new(create(ow(owner), up, size.max(200), None, now)),
            metadata: None,
        },
        Op::Declare { owner, up, size } => Command::DeclareTusLength {
            owner: ow(owner),
            upload_id: format!("up{up}"),
            size,
            now,
        },
        Op::Create {
            owner, up, size, ..
        } if up == 3 || up == 4 => Command::CreateTusPartial {
            create: Box::new(create(ow(owner), up, size, None, now)),
            metadata: None,
        },
        Op::Final { owner, fin, parts } => Command::CreateTusFinal {
            upload_id: format!("fin{fin}"),
            owner: ow(owner),
            limits: LIMITS,
            name: format!("joined{fin}"),
            mime: None,
            metadata: None,
            partials: parts.iter().map(|p| format!("up{p}")).collect(),
            header: format!("final;{parts:?}"),
            ttl_ms: 1_000,
            now,
        },
        Op::CompleteFinal {
            owner,
            fin,
            file,
            hash,
        } => Command::CompleteTusFinal {
            owner: ow(owner),
            upload_id: format!("fin{fin}"),
            file_id: format!("f{file}"),
            blake3: format!("h{hash}"),
            scan: hash != 0,
            now,
        },
        Op::Dedup {
            owner,
            up,
            file,
            hash,
            idem,
        } => {
            let blake3 = format!("h{hash}");
            let size = mem
                .blob(&blob_id(OWNERS[owner], &blake3))
                .map_or(64, |b| b.size);
            let mut create = create(ow(owner), up, size, idem, now);
            if let Command::CreateUpload { blake3: b, .. } = &mut create {
                *b = Some(blake3);
            }
            Command::CreateOrDedup {
                create: Box::new(create),
                file_id: format!("f{file}"),
            }
        }
        Op::Link {
            owner,
            file,
            token,
            max,
        } => Command::CreateLink {
            token: format!("t{token}"),
            owner: ow(owner),
            file_id: format!("f{file}"),
            expires_at: max.map(|m| now + m * 500),
            password_hash: None,
            max_downloads: max,
            now,
        },
        Op::Revoke { owner, token } => Command::RevokeLink {
            owner: ow(owner),
            token: format!("t{token}"),
        },
        Op::LinkDownload { token } => Command::LinkDownloaded {
            token: format!("t{token}"),
            now,
        },
        Op::AbortFinal { owner, fin } => Command::AbortUpload {
            owner: ow(owner),
            upload_id: format!("fin{fin}"),
            now,
        },
        Op::Create {
            owner,
            up,
            size,
            idem,
        } if up >= 3 => Command::CreateTusUpload {
            create: Box::new(create(ow(owner), up, size, idem, now)),
            metadata: Some(format!("filename {size}")),
        },
        Op::Tail {
            owner,
            up,
            index,
            len,
        } => Command::TusTail {
            owner: ow(owner),
            upload_id: format!("up{up}"),
            index,
            len,
            object_key: format!("tus/up{up}/{index}-{len}-{now}"),
            now,
        },
        Op::Create {
            owner,
            up,
            size,
            idem,
        } => create(ow(owner), up, size, idem, now),
        Op::Stage {
            owner,
            up,
            index,
            node,
            content,
        } => {
            let len = mem
                .upload_record(OWNERS[owner], &format!("up{up}"))
                .map(|u| u.chunk_len(index))
                .unwrap_or(64);
            Command::ChunkStaged {
                owner: ow(owner),
                upload_id: format!("up{up}"),
                index,
                node,
                len,
                blake3: format!("c{content}"),
                cv: format!("cv{index}{content}"),
                now,
            }
        }
        Op::Offload { owner, up, index } => Command::ChunkOffloaded {
            owner: ow(owner),
            upload_id: format!("up{up}"),
            index,
            etag: format!("e{index}"),
            node: 1 + u64::from(index % 2),
        },
        Op::Complete {
            owner,
            up,
            file,
            hash,
        } => Command::CompleteUpload {
            owner: ow(owner),
            upload_id: format!("up{up}"),
            file_id: format!("f{file}"),
            blake3: format!("h{hash}"),
            scan: hash != 0,
            now,
        },
        Op::Abort { owner, up } => Command::AbortUpload {
            owner: ow(owner),
            upload_id: format!("up{up}"),
            now,
        },
        // An odd retention also prunes the events older than it, as the leader's timer does.
        Op::Expire {
            retention: Some(r), ..
        } if r % 2 == 1 => Command::PruneEvents {
            before: now.saturating_sub(r),
        },
        Op::Expire { retention, .. } => Command::ExpireUploads {
            now,
            retention_ms: retention,
        },
        Op::Store {
            owner,
            up,
            file,
            size,
            hash,
            idem,
        } => Command::StoreFile {
            upload_id: format!("up{up}"),
            file_id: format!("f{file}"),
            owner: ow(owner),
            tier: Tier::Basic,
            limits: LIMITS,
            name: format!("s{size}"),
            mime: Some("text/plain".into()),
            size,
            blake3: format!("h{hash}"),
            idempotency_key: idem.map(|k| format!("k{k}")),
            object_key: format!("uploads/up{up}"),
            scan: hash != 1,
            now,
        },
        Op::Rename { owner, file } => Command::RenameFile {
            owner: ow(owner),
            file_id: format!("f{file}"),
            name: format!("r{now}"),
        },
        Op::Delete { owner, file } => Command::DeleteFile {
            owner: ow(owner),
            file_id: format!("f{file}"),
            now,
        },
        Op::SetQuota { owner, quota } => Command::SetQuota {
            user: ow(owner),
            quota,
        },
        Op::Lease {
            owner,
            hash,
            holder,
        } => Command::LeaseScan {
            blob: blob_id(OWNERS[owner], &format!("h{hash}")),
            holder,
            now,
            until: now + 500,
        },
        Op::Finish {
            owner,
            hash,
            holder,
            verdict,
        } => Command::ScanFinished {
            blob: blob_id(OWNERS[owner], &format!("h{hash}")),
            holder,
            verdict: match verdict {
                0 => ScanVerdict::Clean,
                1 => ScanVerdict::Infected {
                    signature: "Eicar-Test-Signature".into(),
                },
                2 => ScanVerdict::Error {
                    message: "too big".into(),
                },
                _ => ScanVerdict::Released,
            },
            now,
        },
        Op::Quarantine { owner, hash } => Command::BlobQuarantined {
            blob: blob_id(OWNERS[owner], &format!("h{hash}")),
            object_key: format!("quarantine/{owner}{hash}"),
        },
        Op::Rescan { file } => Command::Rescan {
            file: file.map(|f| format!("f{f}")),
        },
        Op::NodeLost { node } => Command::NodeLost { node },
        Op::Mkdir {
            owner,
            folder,
            name,
            parent,
            rename,
        } => Command::CreateFolder {
            owner: ow(owner),
            folder_id: format!("d{folder}"),
            name: format!("x{name}"),
            parent: parent.map(|p| format!("d{p}")),
            on_conflict: if rename {
                OnConflict::Rename
            } else {
                OnConflict::Fail
            },
            now,
        },
        Op::Move {
            owner,
            folder,
            id,
            name,
            parent,
        } => Command::MoveEntry {
            owner: ow(owner),
            id: format!("{}{id}", if folder { "d" } else { "f" }),
            kind: if folder {
                EntryKind::Folder
            } else {
                EntryKind::File
            },
            name: name.map(|n| format!("x{n}")),
            parent: parent.map(|p| p.map(|p| format!("d{p}"))),
        },
        Op::Rmdir { owner, folder } => Command::DeleteFolder {
            owner: ow(owner),
            folder_id: format!("d{folder}"),
        },
        Op::Placed {
            owner,
            up,
            file,
            folder,
            name,
            conflict,
            session,
        } => {
            let name = format!("x{name}");
            let cmd = if session {
                let mut c = create(ow(owner), up % 6, 20, None, now);
                if let Command::CreateUpload { name: n, .. } = &mut c {
                    *n = name;
                }
                c
            } else {
                Command::StoreFile {
                    // A replace makes a version under a new upload id each time (versions pile
                    // up and get pruned); the others reuse a few (retries, clashes).
                    upload_id: if conflict == 2 {
                        format!("up{up}-{now}")
                    } else {
                        format!("up{up}")
                    },
                    file_id: format!("f{file}"),
                    owner: ow(owner),
                    tier: Tier::Basic,
                    limits: LIMITS,
                    name,
                    mime: None,
                    size: 10,
                    blake3: format!("h{}", up % 3),
                    idempotency_key: None,
                    object_key: format!("uploads/up{up}"),
                    scan: false,
                    now,
                }
            };
            Command::Placed {
                placement: Placement {
                    folder: folder.map(|f| format!("d{f}")),
                    on_conflict: match conflict {
                        0 => OnConflict::Fail,
                        1 => OnConflict::Rename,
                        _ => OnConflict::Replace { keep: 2 },
                    },
                },
                cmd: Box::new(cmd),
            }
        }
        Op::Replace {
            owner,
            name,
            hash,
            size,
        } => Command::Placed {
            placement: Placement {
                folder: None,
                on_conflict: OnConflict::Replace { keep: 2 },
            },
            cmd: Box::new(Command::StoreFile {
                upload_id: format!("rp{now}"),
                file_id: format!("rf{now}"),
                owner: ow(owner),
                tier: Tier::Basic,
                limits: LIMITS,
                name: format!("x{name}"),
                mime: None,
                // The content of a hash has one size (as real content does).
                size: size % 3 + u64::from(hash) * 3,
                blake3: format!("h{hash}"),
                idempotency_key: None,
                object_key: format!("uploads/rp{now}"),
                scan: false,
                now,
            }),
        },
        Op::Trash { owner, folder, id } => Command::Trash {
            owner: ow(owner),
            id: if folder {
                format!("d{}", id % 4)
            } else {
                format!("f{id}")
            },
            kind: if folder {
                EntryKind::Folder
            } else {
                EntryKind::File
            },
            now,
        },
        Op::FromTrash { owner, pick, purge } => {
            let trash = mem.trash_page(OWNERS[owner], None, usize::MAX);
            let id = trash
                .get(usize::from(pick) % trash.len().max(1))
                .map_or_else(|| format!("f{pick}"), |e| e.id.clone());
            if purge {
                Command::PurgeTrash {
                    owner: ow(owner),
                    id,
                    now,
                }
            } else {
                Command::RestoreFromTrash {
                    owner: ow(owner),
                    id,
                }
            }
        }
        Op::Share {
            owner,
            folder,
            id,
            editor,
        } => Command::CreateShare {
            owner: ow(owner),
            target: if folder {
                format!("d{}", id % 4)
            } else {
                format!("f{id}")
            },
            kind: if folder {
                EntryKind::Folder
            } else {
                EntryKind::File
            },
            user: ow(1 - owner),
            role: if editor { Role::Editor } else { Role::Viewer },
            now,
        },
        Op::Unshare { owner, folder, id } => Command::RevokeShare {
            owner: ow(owner),
            target: if folder {
                format!("d{}", id % 4)
            } else {
                format!("f{id}")
            },
            user: ow(1 - owner),
        },
        Op::RenameAs { owner, id, name } => Command::AsUser {
            actor: ow(1 - owner),
            owner: ow(owner),
            file: format!("f{id}"),
            need: Role::Editor,
            cmd: Box::new(Command::MoveEntry {
                owner: ow(owner),
                id: format!("f{id}"),
                kind: EntryKind::File,
                name: Some(format!("x{name}")),
                parent: None,
            }),
        },
        Op::ViaRename { owner, file, node } => Command::Via {
            origin: wharf_raft::model::audit::Origin {
                actor: OWNERS[owner].into(),
                addr: "192.0.2.1".into(),
                node,
                at: now,
            },
            cmd: Box::new(Command::RenameFile {
                owner: OWNERS[owner].into(),
                file_id: format!("f{file}"),
                // `RenameFile` (from logs of before folders) takes the name as given: a
                // fresh one keeps the folder's names unique, as `Rename` does.
                name: format!("via{now}-{node}"),
            }),
        },
        Op::Downloads { node, seq, file } => Command::RecordDownloads {
            node,
            downloads: vec![wharf_raft::model::audit::Download {
                seq,
                at: now,
                action: "download.api".into(),
                actor: "ann".into(),
                owner: "bob".into(),
                file: format!("f{file}"),
                addr: "192.0.2.2".into(),
            }],
        },
        Op::PruneAudit { ago } => Command::PruneAudit {
            before: now.saturating_sub(ago),
        },
        Op::Hook { id, all } => Command::CreateWebhook {
            id: format!("w{id}"),
            url: "http://127.0.0.1:9/".into(),
            events: vec![if all { "*" } else { "upload.completed" }.into()],
            secret: "s".into(),
            now,
        },
        Op::HookAck { id, pick } => {
            let events = mem.all_events_after(None, usize::from(pick) + 1);
            Command::WebhookDelivered {
                id: format!("w{id}"),
                through: events.last()?.0,
                delivered: 1,
            }
        }
        Op::PurgeExpired { ago } => Command::PurgeExpiredTrash {
            before: now.saturating_sub(ago),
            now,
        },
        Op::Restore {
            owner,
            file,
            version,
        } => {
            // A file with earlier versions, if the owner has one.
            let with_versions: Vec<String> = mem
                .files_page(OWNERS[owner], None, usize::MAX)
                .into_iter()
                .filter(|f| !mem.old_versions(&f.owner, &f.id).is_empty())
                .map(|f| f.id)
                .collect();
            let file_id = with_versions
                .get(usize::from(file) % with_versions.len().max(1))
                .cloned()
                .unwrap_or_else(|| format!("f{file}"));
            let old = mem.old_versions(OWNERS[owner], &file_id);
            Command::RestoreVersion {
                owner: ow(owner),
                version_id: old
                    .get(usize::from(version) % old.len().max(1))
                    .map_or_else(|| format!("v{version}"), |v| v.id.clone()),
                file_id,
                new_version_id: format!("rv{now}"),
                keep: 2,
                now,
            }
        }
        Op::IndexEntries => Command::IndexEntries { after: None },
        Op::CountUsage { limit } => Command::CountUsage { limit },
        Op::FolderLink {
            owner,
            folder,
            token,
        } => Command::CreateFolderLink {
            token: format!("t{token}"),
            owner: ow(owner),
            folder_id: format!("d{folder}"),
            expires_at: None,
            password_hash: None,
            max_downloads: Some(1),
            now,
        },
        Op::Garbage { up } => Command::ObjectDeleted {
            object_key: format!("uploads/up{up}"),
        },
        Op::Once { .. } => return None,
    })
}
