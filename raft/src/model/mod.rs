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
//! (share links), [`search`] (the name index), [`folders`], [`versions`], [`trash`] and
//! [`shares`] (sharing with users). `commands` holds the [`Command`] enum (every variant is
//! part of the log's encoding: new ones are appended), this file the outcomes, the errors and
//! [`apply`]'s dispatch.

pub mod audit;
mod commands;
pub mod concat;
mod dedup;
pub mod events;
mod files;
#[cfg(test)]
mod fixtures;
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
pub mod usage;
mod users;
pub mod versions;
pub mod webhooks;

use serde::{Deserialize, Serialize};

use crate::kv::KvMut;
pub use commands::Command;
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
    Webhook(webhooks::Webhook),
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
    // The outermost command that says what a user did is audited once it applied (wrappers
    // such as `Via` and `Once` describe what they wrap; the commands they apply are not
    // audited again). Only with an entry clock, as events.
    let audit = (state.clock.is_some() && !state.auditing)
        .then(|| audit::describe(&cmd))
        .flatten()
        .filter(|_| !audit::already_applied(state, &cmd));
    if audit.is_none() {
        return apply_command(state, cmd);
    }
    let actor = audit::actor_of(&cmd).map(str::to_string);
    state.auditing = true;
    let out = apply_command(state, cmd);
    state.auditing = false;
    if let (Some(what), Ok(o)) = (audit, &out) {
        state.audit(what, actor.as_deref(), o);
    }
    state.origin = None;
    out
}

fn apply_command<K: KvMut>(state: &mut State<K>, cmd: Command) -> ApplyResult {
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
        Command::CountUsage { limit } => usage::count(state, limit),
        Command::CreateWebhook {
            id,
            url,
            events,
            secret,
            now,
        } => webhooks::create(
            state,
            webhooks::Webhook {
                id,
                url,
                events,
                secret,
                created_at: now,
                cursor: events::EventId::default(),
                delivered: 0,
                dropped: 0,
            },
        ),
        Command::DeleteWebhook { id } => webhooks::delete(state, &id),
        Command::WebhookDelivered {
            id,
            through,
            delivered,
        } => webhooks::delivered(state, &id, through, delivered),
        Command::Via { origin, cmd } => {
            state.origin = Some(origin);
            let out = apply(state, *cmd);
            if !state.auditing {
                state.origin = None;
            }
            out
        }
        Command::RecordDownloads { node, downloads } => {
            audit::record_downloads(state, node, downloads)
        }
        Command::PruneAudit { before } => audit::prune(state, before),
    }
}
