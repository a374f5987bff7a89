//! The commands of the Raft log: what a proposer asks the state machine to do. Each is
//! encoded in the log (postcard, by variant index): a new command is appended, never inserted,
//! and a field is never added to one that a log may hold (a new command wraps or follows it).

use serde::{Deserialize, Serialize};

use super::*;

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
    /// Proposed by the leader until it answers `Indexed(None)`: up to `limit` users of a data
    /// dir from before the usage totals are counted into them (see [`super::usage`]).
    CountUsage {
        limit: u32,
    },
    /// An admin's webhook (see [`super::webhooks`]); delivery starts after this entry.
    CreateWebhook {
        id: String,
        url: String,
        events: Vec<String>,
        secret: String,
        now: Millis,
    },
    DeleteWebhook {
        id: String,
    },
    /// The leader's delivery loop: webhook `id`'s receiver acknowledged the events through
    /// `through`, `delivered` of them sent (the rest skipped by its filter).
    WebhookDelivered {
        id: String,
        through: events::EventId,
        delivered: u64,
    },
    /// `cmd` as the node that took the request proposed it: who asked and from where, for
    /// the audit log (see [`super::audit`]).
    Via {
        origin: audit::Origin,
        cmd: Box<Command>,
    },
    /// A node's downloads since its last batch (numbered by that node).
    RecordDownloads {
        node: u64,
        downloads: Vec<audit::Download>,
    },
    /// Proposed by the leader on a timer: audit records made before `before` are dropped (a
    /// bounded number per command; see [`audit::PRUNE_PER_COMMAND`]).
    PruneAudit {
        before: Millis,
    },
}

impl Command {
    /// The proposer's clock this command carries, if any (events take their time from it).
    pub(super) fn time(&self) -> Option<Millis> {
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
            | Command::SetVisibility { now, .. }
            | Command::CreateWebhook { now, .. } => Some(*now),
            Command::CreateTusUpload { create, .. }
            | Command::CreateDeferredTusUpload { create, .. }
            | Command::CreateTusPartial { create, .. }
            | Command::CreateOrDedup { create, .. } => create.time(),
            Command::Placed { cmd, .. } | Command::AsUser { cmd, .. } => cmd.time(),
            Command::Via { origin, cmd } => cmd.time().max(Some(origin.at)),
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
        ) || matches!(self, Command::Placed { cmd, .. } | Command::Via { cmd, .. } if cmd.answers_its_own_retries())
    }
}
