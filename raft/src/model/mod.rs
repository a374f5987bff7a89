//! The metadata model: a pure, deterministic state machine over a key-value store.
//!
//! `apply(state, command)` reads no clock, does no I/O and draws no random numbers: the proposer
//! puts the time and every new id into the command. It reads and writes only through
//! [`State`], a typed view of a [`Kv`](crate::kv::Kv) store, so the same code runs over the
//! in-memory reference store in the model tests and over sled in the node.
//!
//! Every entity is keyed by its owner, so that lookups with another user's id find nothing, and
//! so that users can later be hashed to several Raft groups. A refused command writes nothing.
//!
//! By entity: [`uploads`] (sessions and chunks), [`files`] (files and blobs), [`scans`],
//! [`users`], [`nodes`] (cluster bookkeeping), [`requests`] (at-most-once proposals),
//! [`tus`] (what a tus upload adds to its session), [`concat`] (tus partial and final uploads),
//! `dedup` (a create that names content its owner stores becomes a file at once), [`links`]
//! (share links), [`search`] (the name index).

pub mod concat;
mod dedup;
pub mod events;
mod files;
pub mod folders;
pub mod links;
mod nodes;
mod requests;
mod scans;
pub mod search;
pub mod shares;
mod state;
pub mod trash;
pub mod tus;
mod types;
mod uploads;
mod users;
pub mod versions;

use serde::{Deserialize, Serialize};

use crate::kv::KvMut;
pub use nodes::{admitted_by, check_token, note_member_ids, note_members, JoinToken, NodeRecord};
pub use requests::REQUEST_MEMORY_MS;
pub use scans::RESCAN_PER_COMMAND;
pub use state::{blob_id, keys, State};
pub use types::*;
pub use uploads::FORGET_PER_TICK;

/// `"{owner}/{id}"`: how commands name a blob.
pub fn key(owner: &str, id: &str) -> String {
    format!("{owner}/{id}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateUpload {
        upload_id: String,
        owner: String,
        tier: Tier,
        limits: TierLimits,
        name: String,
        mime: Option<String>,
        size: u64,
        chunk_size: u64,
        blake3: Option<String>,
        idempotency_key: Option<String>,
        ttl_ms: u64,
        now: Millis,
    },
    MultipartCreated {
        owner: String,
        upload_id: String,
        multipart_id: String,
    },
    ChunkStaged {
        owner: String,
        upload_id: String,
        index: u32,
        node: u64,
        len: u64,
        blake3: String,
        cv: String,
        now: Millis,
    },
    /// `node` put its staged chunk into the object store: only the chunk's holder may say so
    /// (a node declared lost that offloads late must not attach its ETag to another holder's
    /// chunk). Entries written before the field existed carry 0 and are not checked.
    ChunkOffloaded {
        owner: String,
        upload_id: String,
        index: u32,
        etag: String,
        #[serde(default)]
        node: u64,
    },
    /// The object is complete in the object store; `blake3` is the whole-file hash the proposer
    /// combined from the chunks' subtree hashes.
    CompleteUpload {
        owner: String,
        upload_id: String,
        file_id: String,
        blake3: String,
        /// Whether the new blob waits for a scan (`scan.policy` is not off).
        scan: bool,
        now: Millis,
    },
    AbortUpload {
        owner: String,
        upload_id: String,
        now: Millis,
    },
    /// Proposed by the leader on a timer: every upload idle past its expiry ends, and (when
    /// `retention_ms` is given) up to a bounded number of uploads that ended more than
    /// `retention_ms` ago are forgotten, with their idempotency keys.
    ExpireUploads {
        now: Millis,
        #[serde(default)]
        retention_ms: Option<u64>,
    },
    DeleteFile {
        owner: String,
        file_id: String,
        now: Millis,
    },
    /// `cmd`, applied at most once under the request id `id`: a proposal retried after its
    /// outcome was lost (the leader changed, a forward's reply never came) gets the first
    /// outcome back instead of being applied again. `at` is the proposer's clock.
    Once {
        id: String,
        at: Millis,
        cmd: Box<Command>,
    },
    /// A whole file in one command (the one-request upload of a small file): its bytes are
    /// already durable at `object_key`. Reserves nothing: checks the limits and the quota,
    /// records the blob and the file (and, with an idempotency key, a stored upload record that
    /// keeps the key), and counts the bytes as used.
    StoreFile {
        upload_id: String,
        file_id: String,
        owner: String,
        tier: Tier,
        limits: TierLimits,
        name: String,
        mime: Option<String>,
        size: u64,
        blake3: String,
        idempotency_key: Option<String>,
        object_key: String,
        scan: bool,
        now: Millis,
    },
    /// A file's new name (validated by the proposer, like a new upload's).
    RenameFile {
        owner: String,
        file_id: String,
        name: String,
    },
    SetQuota {
        user: String,
        quota: u64,
    },
    ObjectDeleted {
        object_key: String,
    },
    /// A new node id for a joining node: never one used before, and at least `min` (the
    /// proposer passes one above every id in the membership).
    AllocateNodeId {
        min: u64,
    },
    /// `node` has been unreachable longer than the staging grace time: the chunks only it holds
    /// count as missing again, so that clients re-send them elsewhere.
    NodeLost {
        node: u64,
    },
    /// A scanner takes a blob (keyed `owner/blake3`) until `until`.
    LeaseScan {
        blob: String,
        holder: u64,
        now: Millis,
        until: Millis,
    },
    /// The lease holder's verdict. An infected blob's files are no longer counted as usage.
    ScanFinished {
        blob: String,
        holder: u64,
        verdict: ScanVerdict,
        now: Millis,
    },
    /// The infected blob's object was moved to `object_key` (or deleted, then empty).
    BlobQuarantined {
        blob: String,
        object_key: String,
    },
    /// Scan again (new signatures): one file (by id), or every clean, errored, unscanned or
    /// leased blob (a lease that is stuck must not keep a blob from its scan). A holder whose
    /// lease a rescan broke can no longer record its verdict.
    Rescan {
        file: Option<String>,
    },
    /// A new join token (only its secret's hash is kept).
    CreateJoinToken {
        id: String,
        secret_hash: String,
        uses: u32,
        expires_at: Millis,
        now: Millis,
    },
    RevokeJoinToken {
        id: String,
    },
    /// A joining node presents a join token: one use of it is consumed and the node gets a new
    /// id (at least `min`) and a record holding its certificate signing request.
    AdmitNode {
        token_id: String,
        secret_hash: String,
        min: u64,
        peer_addr: String,
        http_addr: String,
        csr_pem: String,
        now: Millis,
    },
    /// A holder of the CA key signed an admitted node's request.
    NodeCertIssued {
        node: u64,
        cert_pem: String,
    },
    /// `node` leaves the cluster: every node refuses its certificate from this entry on.
    RemoveNode {
        node: u64,
    },
    /// A node has a clamd (configured, or found where it looked for one): from now on every new
    /// blob waits for a scan, whatever node stores it, and up to [`RESCAN_PER_COMMAND`]
    /// unscanned blobs are queued (the proposer repeats it while it answers that many).
    ScannerFound,
    /// Several commands that were proposed at once, applied in order as if each were an entry
    /// of its own (a refused one changes nothing and the next still applies). The leader's
    /// proposer groups concurrent proposals so that they share one Raft entry.
    Batch {
        cmds: Vec<Command>,
    },
    /// An upload made through tus: `create` (a `CreateUpload`) and the tus record beside it
    /// (the client's `Upload-Metadata`), in one apply.
    CreateTusUpload {
        create: Box<Command>,
        metadata: Option<String>,
    },
    /// A tus upload's bytes of chunk `index` so far (`len`, less than the chunk) are durable at
    /// `object_key`: the next PATCH, on any node, continues after them. Offsets only grow: a
    /// tail no longer than the one recorded, or of a chunk already held, is refused.
    TusTail {
        owner: String,
        upload_id: String,
        index: u32,
        len: u64,
        object_key: String,
        now: Millis,
    },
    /// Proposed by the leader on a timer: events made before `before` are dropped (a bounded
    /// number per command; see [`events::PRUNE_PER_COMMAND`]).
    PruneEvents {
        before: Millis,
    },
    /// A tus upload whose length is not known yet (creation-defer-length): `create` is a
    /// `CreateUpload` whose size is the most the tier allows, a bound until the length is
    /// declared. Nothing is reserved now; each chunk reserves its bytes as it is recorded.
    CreateDeferredTusUpload {
        create: Box<Command>,
        metadata: Option<String>,
    },
    /// A deferred tus upload's length is `size`: it reserves the rest of its bytes (or is
    /// refused with `QuotaExceeded`), and from now on it is an upload of that size.
    DeclareTusLength {
        owner: String,
        upload_id: String,
        size: u64,
        now: Millis,
    },
    /// A tus partial upload (concatenation): `create` (a `CreateUpload`) and its tus record;
    /// its chunks stay staged until a final upload names it.
    CreateTusPartial {
        create: Box<Command>,
        metadata: Option<String>,
    },
    /// A tus final upload: the concatenation of `partials` (upload ids, in order), which it
    /// claims; `header` is `Upload-Concat` as the client sent it. It reserves nothing (its
    /// partials did) and is not counted as an upload in progress.
    CreateTusFinal {
        upload_id: String,
        owner: String,
        limits: TierLimits,
        name: String,
        mime: Option<String>,
        metadata: Option<String>,
        partials: Vec<String>,
        header: String,
        ttl_ms: u64,
        now: Millis,
    },
    /// A final upload's object is complete (every chunk of every partial is one of its parts)
    /// and `blake3` is the hash the proposer read it back with: the file is recorded and the
    /// partials end.
    CompleteTusFinal {
        owner: String,
        upload_id: String,
        file_id: String,
        blake3: String,
        scan: bool,
        now: Millis,
    },
    /// `create` (a `CreateUpload` that declares a BLAKE3): when its owner already stores that
    /// content (same size, not infected), a file `file_id` of it at once, with no byte sent
    /// (as `StoreFile` would record it); otherwise the upload session `create` asks for.
    CreateOrDedup {
        create: Box<Command>,
        file_id: String,
    },
    /// A share link to one of `owner`'s files; `token` is the proposer's random secret, and
    /// `password_hash` the argon2 hash it made of the link's password.
    CreateLink {
        token: String,
        owner: String,
        file_id: String,
        expires_at: Option<Millis>,
        password_hash: Option<String>,
        max_downloads: Option<u64>,
        now: Millis,
    },
    /// `owner` revokes one of their links.
    RevokeLink {
        owner: String,
        token: String,
    },
    /// One download through a link that counts its downloads (refused once it has served
    /// them all, or expired).
    LinkDownloaded {
        token: String,
        now: Millis,
    },
    /// A folder of `owner`'s, in `parent` (`None`: the root).
    CreateFolder {
        owner: String,
        folder_id: String,
        name: String,
        parent: Option<String>,
        on_conflict: folders::OnConflict,
        now: Millis,
    },
    /// A file or folder gets a new name and/or parent (`Some(None)`: the root). A folder
    /// never moves under itself; names stay unique in the target.
    MoveEntry {
        owner: String,
        id: String,
        kind: folders::EntryKind,
        name: Option<String>,
        parent: Option<Option<String>>,
    },
    /// An empty folder is removed.
    DeleteFolder {
        owner: String,
        folder_id: String,
    },
    /// `cmd` (a `CreateUpload`, `StoreFile` or `CreateOrDedup`) makes its upload or file in
    /// `placement`'s folder.
    Placed {
        placement: folders::Placement,
        cmd: Box<Command>,
    },
    /// Proposed by the leader until it answers `Indexed(None)`: files stored before folders
    /// existed join their owner's root (see [`folders::index_entries`]).
    IndexEntries {
        after: Option<String>,
    },
    /// A share link to one of `owner`'s folders (and all under it), as `CreateLink` makes one
    /// to a file.
    CreateFolderLink {
        token: String,
        owner: String,
        folder_id: String,
        expires_at: Option<Millis>,
        password_hash: Option<String>,
        max_downloads: Option<u64>,
        now: Millis,
    },
    /// An earlier version of a file becomes its current one again, as the new version
    /// `new_version_id` (see [`versions::restore`]).
    RestoreVersion {
        owner: String,
        file_id: String,
        version_id: String,
        new_version_id: String,
        keep: u32,
        now: Millis,
    },
    /// A file or folder (with all under it) goes to the trash (see [`trash`]).
    Trash {
        owner: String,
        id: String,
        kind: folders::EntryKind,
        now: Millis,
    },
    /// A trashed entry goes back to its folder (or the root).
    RestoreFromTrash {
        owner: String,
        id: String,
    },
    /// A trashed entry is deleted for good, a bounded part of it per command.
    PurgeTrash {
        owner: String,
        id: String,
        now: Millis,
    },
    /// Proposed by the leader: purges what was trashed before `before` (every owner).
    PurgeExpiredTrash {
        before: Millis,
        now: Millis,
    },
    /// `owner` shares a file or folder with `user` as `role` (see [`shares`]).
    CreateShare {
        owner: String,
        target: String,
        kind: folders::EntryKind,
        user: String,
        role: shares::Role,
        now: Millis,
    },
    /// Ends `user`'s share of one of `owner`'s files or folders.
    RevokeShare {
        owner: String,
        target: String,
        user: String,
    },
    /// `cmd` on `owner`'s file `file`, made by `actor` (another user) with at least the role
    /// `need` on it when this applies (see [`shares::as_user`]).
    AsUser {
        actor: String,
        owner: String,
        file: String,
        need: shares::Role,
        cmd: Box<Command>,
    },
    /// `owner`'s file made public (a permanent link, `token`) or private again.
    SetVisibility {
        owner: String,
        file_id: String,
        public: bool,
        token: String,
        now: Millis,
    },
}

impl Command {
    /// The proposer's clock this command carries, if any (events take their time from it).
    fn time(&self) -> Option<Millis> {
        match self {
            Command::Once { at, .. } => Some(*at),
            Command::CreateUpload { now, .. }
            | Command::ChunkStaged { now, .. }
            | Command::CompleteUpload { now, .. }
            | Command::AbortUpload { now, .. }
            | Command::ExpireUploads { now, .. }
            | Command::DeleteFile { now, .. }
            | Command::StoreFile { now, .. }
            | Command::LeaseScan { now, .. }
            | Command::ScanFinished { now, .. }
            | Command::CreateJoinToken { now, .. }
            | Command::AdmitNode { now, .. }
            | Command::TusTail { now, .. }
            | Command::DeclareTusLength { now, .. }
            | Command::CreateTusFinal { now, .. }
            | Command::CreateLink { now, .. }
            | Command::LinkDownloaded { now, .. }
            | Command::CompleteTusFinal { now, .. }
            | Command::CreateFolder { now, .. }
            | Command::CreateFolderLink { now, .. }
            | Command::RestoreVersion { now, .. }
            | Command::Trash { now, .. }
            | Command::PurgeTrash { now, .. }
            | Command::PurgeExpiredTrash { now, .. }
            | Command::CreateShare { now, .. }
            | Command::SetVisibility { now, .. } => Some(*now),
            Command::CreateTusUpload { create, .. }
            | Command::CreateDeferredTusUpload { create, .. }
            | Command::CreateTusPartial { create, .. }
            | Command::CreateOrDedup { create, .. } => create.time(),
            Command::Placed { cmd, .. } | Command::AsUser { cmd, .. } => cmd.time(),
            _ => None,
        }
    }

    /// Whether applying this command a second time (a proposal retried after its first try
    /// committed) already answers as the first time did, so it needs no `Once` request id.
    /// A create names its upload id: applied again, it finds that upload and answers it as it
    /// is now, as `Once` would, and it saves the request id's two records on every create.
    pub fn answers_its_own_retries(&self) -> bool {
        matches!(
            self,
            Command::CreateUpload { .. }
                | Command::CreateTusUpload { .. }
                | Command::CreateDeferredTusUpload { .. }
                | Command::CreateTusPartial { .. }
                | Command::CreateTusFinal { .. }
                | Command::CreateOrDedup { .. }
                | Command::CreateFolder { .. }
        ) || matches!(self, Command::Placed { cmd, .. } if cmd.answers_its_own_retries())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Upload(Upload),
    File(File),
    User(User),
    MultipartId(String),
    Expired(Vec<String>),
    NodeId(u64),
    /// Chunks that became missing again.
    ChunksLost(u64),
    Blob(Blob),
    /// Blobs queued for a scan again.
    Requeued(u64),
    /// The answers of a [`Command::Batch`], in its order.
    Batch(Vec<Result<Outcome, ModelError>>),
    /// Events dropped by a `PruneEvents`.
    Pruned(u64),
    Link(links::Link),
    Folder(folders::Folder),
    /// Where an `IndexEntries` stopped (`None`: every file is indexed).
    Indexed(Option<String>),
    /// A file or folder went to the trash.
    Trashed(trash::TrashEntry),
    /// Whether a purge deleted all it was asked to (`false`: propose it again).
    Purged(bool),
    Share(shares::Share),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ModelError {
    #[error("not found")]
    NotFound,
    #[error("quota exceeded: {requested} bytes requested, {available} available")]
    QuotaExceeded { requested: u64, available: u64 },
    #[error("file of {size} bytes is over the tier's limit of {max} bytes")]
    FileTooLarge { size: u64, max: u64 },
    #[error("{max} uploads are already in progress")]
    TooManyUploads { max: u32 },
    #[error("upload is {state}, not uploading")]
    UploadNotActive { state: String },
    #[error("chunk index {index} is out of range (the upload has {count} chunks)")]
    ChunkOutOfRange { index: u32, count: u32 },
    #[error("chunk {index} has length {got}, expected {expected}")]
    ChunkLength { index: u32, got: u64, expected: u64 },
    #[error("chunk {index} was already received with different content")]
    ChunkConflict { index: u32 },
    #[error("chunks not yet in the object store: {0:?}")]
    MissingChunks(Vec<u32>),
    #[error("whole-file BLAKE3 {actual} does not match the declared {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("this idempotency key was used for an upload with other parameters (name, size, blake3 or mime)")]
    IdempotencyConflict,
    #[error("quota {quota} is below the user's used + reserved bytes ({committed})")]
    QuotaBelowUsage { quota: u64, committed: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("the scan lease is held by node {holder}")]
    LeaseHeld { holder: u64 },
    #[error("{0}")]
    JoinRefused(String),
    /// A final upload named an upload that is not a partial one (or completion was asked of
    /// an upload that is not a final one).
    #[error("{0}")]
    NotPartial(String),
    #[error("partial upload {partial} is already part of final upload {final_id}")]
    PartialTaken { partial: String, final_id: String },
    #[error("the folder already has an entry named {name:?}")]
    NameTaken { name: String },
    #[error("a folder cannot move under itself")]
    FolderCycle,
    #[error("the folder is not empty")]
    FolderNotEmpty,
    #[error("your role on this file does not allow it")]
    Forbidden,
}

pub type ApplyResult = Result<Outcome, ModelError>;

/// Takes `by` off a counter that the accounting says holds at least that much. A state that
/// broke this (a bug) stops the counter at 0 instead of wrapping it to about 2^64 in a release
/// build, which would lock the user out.
pub(crate) fn release(counter: &mut u64, by: u64) {
    *counter = counter.saturating_sub(by);
}

/// Applies one command: the whole of the model's behaviour.
pub fn apply<K: KvMut>(state: &mut State<K>, cmd: Command) -> ApplyResult {
    if let Some(at) = cmd.time() {
        state.saw_time(at);
    }
    match cmd {
        Command::Once { id, at, cmd } => requests::once(state, id, at, *cmd),
        cmd @ Command::CreateUpload { .. } => match uploads::NewUpload::of(cmd, false) {
            Some(n) => uploads::create(state, n),
            None => unreachable!("a CreateUpload makes a NewUpload"),
        },
        Command::MultipartCreated {
            owner,
            upload_id,
            multipart_id,
        } => uploads::multipart_created(state, &owner, &upload_id, multipart_id),
        Command::ChunkStaged {
            owner,
            upload_id,
            index,
            node,
            len,
            blake3,
            cv,
            now,
        } => uploads::chunk_staged(
            state,
            &owner,
            &upload_id,
            index,
            Chunk::Staged {
                node,
                len,
                blake3,
                cv,
            },
            now,
        ),
        Command::ChunkOffloaded {
            owner,
            upload_id,
            index,
            etag,
            node,
        } => uploads::chunk_offloaded(state, &owner, &upload_id, index, etag, node),
        Command::CompleteUpload {
            owner,
            upload_id,
            file_id,
            blake3,
            scan,
            now,
        } => uploads::complete(state, &owner, &upload_id, file_id, blake3, scan, now),
        Command::AbortUpload {
            owner,
            upload_id,
            now,
        } => uploads::abort(state, &owner, &upload_id, now),
        Command::ExpireUploads { now, retention_ms } => uploads::expire(state, now, retention_ms),
        Command::StoreFile {
            upload_id,
            file_id,
            owner,
            tier,
            limits,
            name,
            mime,
            size,
            blake3,
            idempotency_key,
            object_key,
            scan,
            now,
        } => files::store(
            state,
            files::NewFile {
                upload_id,
                file_id,
                owner,
                tier,
                limits,
                name,
                mime,
                size,
                blake3,
                idempotency_key,
                object_key,
                scan,
                now,
            },
        ),
        Command::RenameFile {
            owner,
            file_id,
            name,
        } => files::rename(state, &owner, &file_id, name),
        Command::DeleteFile {
            owner,
            file_id,
            now,
        } => files::delete(state, &owner, &file_id, now),
        Command::SetQuota { user, quota } => users::set_quota(state, user, quota),
        Command::ObjectDeleted { object_key } => {
            state.remove_garbage(&object_key);
            Ok(Outcome::Done)
        }
        Command::AllocateNodeId { min } => nodes::allocate_id(state, min),
        Command::NodeLost { node } => nodes::lost(state, node),
        Command::LeaseScan {
            blob,
            holder,
            now,
            until,
        } => scans::lease(state, &blob, holder, now, until),
        Command::ScanFinished {
            blob,
            holder,
            verdict,
            now,
        } => scans::finished(state, &blob, holder, verdict, now),
        Command::BlobQuarantined { blob, object_key } => {
            scans::quarantined(state, &blob, object_key)
        }
        Command::Rescan { file } => scans::rescan(state, file),
        Command::CreateJoinToken {
            id,
            secret_hash,
            uses,
            expires_at,
            now,
        } => nodes::create_token(
            state,
            JoinToken {
                id,
                secret_hash,
                uses_left: uses,
                expires_at,
                created_at: now,
            },
        ),
        Command::RevokeJoinToken { id } => nodes::revoke_token(state, &id),
        Command::AdmitNode {
            token_id,
            secret_hash,
            min,
            peer_addr,
            http_addr,
            csr_pem,
            now,
        } => nodes::admit(
            state,
            nodes::Admission {
                token_id,
                secret_hash,
                min,
                peer_addr,
                http_addr,
                csr_pem,
                now,
            },
        ),
        Command::NodeCertIssued { node, cert_pem } => nodes::cert_issued(state, node, cert_pem),
        Command::RemoveNode { node } => nodes::remove(state, node),
        Command::ScannerFound => scans::scanner_found(state),
        Command::Batch { cmds } => Ok(Outcome::Batch(
            cmds.into_iter().map(|c| apply(state, c)).collect(),
        )),
        Command::CreateTusUpload { create, metadata } => tus::create(state, *create, metadata),
        Command::TusTail {
            owner,
            upload_id,
            index,
            len,
            object_key,
            now,
        } => tus::tail(
            state,
            &owner,
            &upload_id,
            tus::TusTail {
                index,
                len,
                object_key,
            },
            now,
        ),
        Command::PruneEvents { before } => events::prune(state, before),
        Command::CreateDeferredTusUpload { create, metadata } => {
            tus::create_deferred(state, *create, metadata)
        }
        Command::DeclareTusLength {
            owner,
            upload_id,
            size,
            now,
        } => tus::declare_length(state, &owner, &upload_id, size, now),
        Command::CreateTusPartial { create, metadata } => {
            concat::create_partial(state, *create, metadata)
        }
        Command::CreateTusFinal {
            upload_id,
            owner,
            limits,
            name,
            mime,
            metadata,
            partials,
            header,
            ttl_ms,
            now,
        } => concat::create_final(
            state,
            concat::NewFinal {
                upload_id,
                owner,
                limits,
                name,
                mime,
                metadata,
                partials,
                header,
                ttl_ms,
                now,
            },
        ),
        Command::CompleteTusFinal {
            owner,
            upload_id,
            file_id,
            blake3,
            scan,
            now,
        } => concat::complete_final(state, &owner, &upload_id, file_id, blake3, scan, now),
        Command::CreateOrDedup { create, file_id } => {
            dedup::create_or_dedup(state, *create, file_id)
        }
        Command::CreateLink {
            token,
            owner,
            file_id,
            expires_at,
            password_hash,
            max_downloads,
            now,
        } => links::create(
            state,
            links::NewLink {
                token,
                owner,
                file_id,
                expires_at,
                password_hash,
                max_downloads,
                now,
                folder: false,
            },
        ),
        Command::RevokeLink { owner, token } => links::revoke(state, &owner, &token),
        Command::LinkDownloaded { token, now } => links::downloaded(state, &token, now),
        Command::CreateFolder {
            owner,
            folder_id,
            name,
            parent,
            on_conflict,
            now,
        } => folders::create(
            state,
            folders::NewFolder {
                owner,
                folder_id,
                name,
                parent,
                on_conflict,
                now,
            },
        ),
        Command::MoveEntry {
            owner,
            id,
            kind,
            name,
            parent,
        } => folders::move_entry(state, &owner, &id, kind, name, parent),
        Command::DeleteFolder { owner, folder_id } => folders::delete(state, &owner, &folder_id),
        Command::Placed { placement, cmd } => folders::placed(state, placement, *cmd),
        Command::IndexEntries { after } => folders::index_entries(state, after),
        Command::CreateFolderLink {
            token,
            owner,
            folder_id,
            expires_at,
            password_hash,
            max_downloads,
            now,
        } => links::create(
            state,
            links::NewLink {
                token,
                owner,
                file_id: folder_id,
                expires_at,
                password_hash,
                max_downloads,
                now,
                folder: true,
            },
        ),
        Command::RestoreVersion {
            owner,
            file_id,
            version_id,
            new_version_id,
            keep,
            now,
        } => versions::restore(
            state,
            &owner,
            &file_id,
            &version_id,
            new_version_id,
            keep,
            now,
        ),
        Command::Trash {
            owner,
            id,
            kind,
            now,
        } => trash::trash(state, &owner, &id, kind, now),
        Command::RestoreFromTrash { owner, id } => trash::restore(state, &owner, &id),
        Command::PurgeTrash { owner, id, now } => trash::purge(state, &owner, &id, now),
        Command::PurgeExpiredTrash { before, now } => trash::purge_expired(state, before, now),
        Command::CreateShare {
            owner,
            target,
            kind,
            user,
            role,
            now,
        } => shares::create(
            state,
            shares::NewShare {
                owner,
                target,
                kind,
                user,
                role,
                now,
            },
        ),
        Command::RevokeShare {
            owner,
            target,
            user,
        } => shares::revoke(state, &owner, &target, &user),
        Command::AsUser {
            actor,
            owner,
            file,
            need,
            cmd,
        } => shares::as_user(state, &actor, &owner, &file, need, *cmd),
        Command::SetVisibility {
            owner,
            file_id,
            public,
            token,
            now,
        } => links::set_visibility(state, &owner, &file_id, public, token, now),
    }
}
