//! The audit log: who did what, when, from which address, through which node.
//!
//! Writes are audited where they commit: `apply` describes each command it applies with
//! success (uploads, completions, renames, moves, deletes, shares, links, admin actions), and
//! the node that proposed it says who and from where in a `Via` wrapper (the caller it
//! authenticated, the client's address, itself). Downloads write nothing on their own hot
//! path: each node batches them into `RecordDownloads`, numbered per node so a batch replayed
//! after a crash is recorded once.
//!
//! Keys: `al/{index:020}-{seq:05}` a record (log order, which is time order give or take the
//! proposers' clocks); `ai/{user}/{index:020}-{seq:05}` the records of the user as actor or as
//! owner; `ad/{node}` the last download number recorded from a node.

use serde::{Deserialize, Serialize};

use super::events::EventId;
use super::folders::EntryKind;
use super::{Command, Millis, Outcome, State};
use crate::kv::{Kv, KvMut};

/// Records one `PruneAudit` drops at most (bounds one apply).
pub const PRUNE_PER_COMMAND: usize = 10_000;

const LOG: &[u8] = b"al/";

/// Who proposed a command, and through what: filled in by the node that took the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The authenticated user (`anonymous` for a share link).
    pub actor: String,
    /// The client's address.
    pub addr: String,
    /// The node that took the request.
    pub node: u64,
    /// That node's clock.
    pub at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Millis,
    pub actor: String,
    /// `upload.create`, `file.rename`, `download.api`, `admin.set_quota`, …
    pub action: String,
    /// Whose data it touched (the actor's own, an owner who shared it, a user an admin
    /// acted on).
    pub owner: Option<String>,
    /// The upload, file, folder, link or user acted on.
    pub target: Option<String>,
    /// A name, a new parent, a role: what the action needs to be understood.
    pub detail: Option<String>,
    pub addr: Option<String>,
    pub node: Option<u64>,
}

/// One download a node served, for `RecordDownloads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    /// The node's number for it: numbers grow, and one is recorded once.
    pub seq: u64,
    pub at: Millis,
    /// `download.api` (through the node), `download.url` (a presigned URL handed out).
    pub action: String,
    pub actor: String,
    pub owner: String,
    pub file: String,
    pub addr: String,
}

fn log_key(id: EventId) -> Vec<u8> {
    format!("al/{:020}-{:05}", id.index, id.seq).into_bytes()
}

fn user_key(user: &str, id: EventId) -> Vec<u8> {
    format!("ai/{user}/{:020}-{:05}", id.index, id.seq).into_bytes()
}

fn batch_key(node: u64) -> Vec<u8> {
    format!("ad/{node}").into_bytes()
}

fn id_of(key_tail: &[u8]) -> Option<EventId> {
    let s = std::str::from_utf8(key_tail).ok()?;
    let (i, q) = s.split_once('-')?;
    Some(EventId {
        index: i.parse().ok()?,
        seq: q.parse().ok()?,
    })
}

/// What an audited command does, as its record says it.
pub(super) struct Described {
    action: &'static str,
    owner: Option<String>,
    target: Option<String>,
    detail: Option<String>,
}

/// What an applied command was, for the log, or `None` for what is not audited (chunks,
/// sweeps, the cluster's own bookkeeping).
pub(super) fn describe(cmd: &Command) -> Option<Described> {
    let s = |v: &str| Some(v.to_string());
    let kind = |k: &EntryKind| match k {
        EntryKind::File => "file",
        EntryKind::Folder => "folder",
    };
    let (action, owner, target, detail): (&str, Option<String>, Option<String>, Option<String>) =
        match cmd {
            Command::Via { cmd, .. } | Command::Once { cmd, .. } => return describe(cmd),
            Command::AsUser { cmd, .. } | Command::Placed { cmd, .. } => return describe(cmd),
            Command::CreateTusUpload { create, .. }
            | Command::CreateDeferredTusUpload { create, .. }
            | Command::CreateTusPartial { create, .. }
            | Command::CreateOrDedup { create, .. } => return describe(create),
            Command::CreateUpload {
                upload_id,
                owner,
                name,
                ..
            } => ("upload.create", s(owner), s(upload_id), s(name)),
            Command::CreateTusFinal {
                upload_id,
                owner,
                name,
                ..
            } => ("upload.create", s(owner), s(upload_id), s(name)),
            Command::CompleteUpload { owner, file_id, .. }
            | Command::CompleteTusFinal { owner, file_id, .. } => {
                ("upload.complete", s(owner), s(file_id), None)
            }
            Command::AbortUpload {
                owner, upload_id, ..
            } => ("upload.abort", s(owner), s(upload_id), None),
            Command::StoreFile {
                owner,
                file_id,
                name,
                ..
            } => ("file.create", s(owner), s(file_id), s(name)),
            Command::RenameFile {
                owner,
                file_id,
                name,
            } => ("file.rename", s(owner), s(file_id), s(name)),
            Command::MoveEntry {
                owner,
                id,
                kind: k,
                name,
                parent,
            } => {
                let action = match (k, parent.is_some()) {
                    (EntryKind::File, true) => "file.move",
                    (EntryKind::File, false) => "file.rename",
                    (EntryKind::Folder, true) => "folder.move",
                    (EntryKind::Folder, false) => "folder.rename",
                };
                let detail = match (name, parent) {
                    (_, Some(p)) => Some(format!("to {}", p.as_deref().unwrap_or("root"))),
                    (Some(n), None) => Some(n.clone()),
                    (None, None) => None,
                };
                (action, s(owner), s(id), detail)
            }
            Command::DeleteFile { owner, file_id, .. } => {
                ("file.delete", s(owner), s(file_id), None)
            }
            Command::CreateFolder {
                owner,
                folder_id,
                name,
                ..
            } => ("folder.create", s(owner), s(folder_id), s(name)),
            Command::DeleteFolder { owner, folder_id } => {
                ("folder.delete", s(owner), s(folder_id), None)
            }
            Command::Trash {
                owner, id, kind: k, ..
            } => match k {
                EntryKind::File => ("file.trash", s(owner), s(id), None),
                EntryKind::Folder => ("folder.trash", s(owner), s(id), None),
            },
            Command::RestoreFromTrash { owner, id } => ("trash.restore", s(owner), s(id), None),
            Command::PurgeTrash { owner, id, .. } => ("trash.purge", s(owner), s(id), None),
            Command::RestoreVersion {
                owner,
                file_id,
                version_id,
                ..
            } => ("file.version_restore", s(owner), s(file_id), s(version_id)),
            Command::CreateShare {
                owner,
                target,
                kind: k,
                user,
                role,
                ..
            } => (
                "share.create",
                s(owner),
                s(target),
                Some(format!("{} {user} as {}", kind(k), role.as_str())),
            ),
            Command::RevokeShare {
                owner,
                target,
                user,
            } => ("share.revoke", s(owner), s(target), s(user)),
            Command::CreateLink { owner, file_id, .. } => {
                ("link.create", s(owner), s(file_id), None)
            }
            Command::CreateFolderLink {
                owner, folder_id, ..
            } => ("link.create", s(owner), s(folder_id), s("folder")),
            Command::RevokeLink { owner, .. } => ("link.revoke", s(owner), None, None),
            // The file and owner are filled in once it applied (the token is a secret).
            Command::LinkDownloaded { .. } => ("download.link", None, None, None),
            Command::SetVisibility {
                owner,
                file_id,
                public,
                ..
            } => (
                "file.visibility",
                s(owner),
                s(file_id),
                s(if *public { "public" } else { "private" }),
            ),
            Command::SetQuota { user, quota } => {
                ("admin.set_quota", s(user), s(user), Some(quota.to_string()))
            }
            Command::Rescan { file } => ("admin.rescan", None, file.clone(), None),
            Command::CreateJoinToken { id, uses, .. } => (
                "admin.join_token.create",
                None,
                s(id),
                Some(format!("{uses} uses")),
            ),
            Command::RevokeJoinToken { id } => ("admin.join_token.revoke", None, s(id), None),
            Command::RemoveNode { node } => {
                ("admin.node.remove", None, Some(node.to_string()), None)
            }
            Command::CreateWebhook { id, url, .. } => ("admin.webhook.create", None, s(id), s(url)),
            Command::DeleteWebhook { id } => ("admin.webhook.delete", None, s(id), None),
            _ => return None,
        };
    Some(Described {
        action,
        owner,
        target,
        detail,
    })
}

/// The user a command acts as, when it names one apart from the owner (an editor's write).
pub(super) fn actor_of(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Via { cmd, .. } | Command::Once { cmd, .. } => actor_of(cmd),
        Command::AsUser { actor, .. } => Some(actor),
        _ => None,
    }
}

/// Whether `cmd` was applied before (a retried proposal): a remembered request id, or a
/// create whose upload, file or folder exists.
pub(super) fn already_applied<K: Kv>(state: &State<K>, cmd: &Command) -> bool {
    match cmd {
        Command::Via { cmd, .. } | Command::Placed { cmd, .. } | Command::AsUser { cmd, .. } => {
            already_applied(state, cmd)
        }
        Command::Once { id, .. } => state.kv().get(&super::keys::request(id)).is_some(),
        Command::CreateTusUpload { create, .. }
        | Command::CreateDeferredTusUpload { create, .. }
        | Command::CreateTusPartial { create, .. } => already_applied(state, create),
        Command::CreateOrDedup { create, file_id } => {
            already_applied(state, create)
                || matches!(&**create, Command::CreateUpload { owner, .. } if state.file(owner, file_id).is_some())
        }
        Command::CreateUpload {
            owner, upload_id, ..
        }
        | Command::CreateTusFinal {
            owner, upload_id, ..
        } => state.upload(owner, upload_id).is_some(),
        Command::CreateFolder {
            owner, folder_id, ..
        } => state.folder(owner, folder_id).is_some(),
        _ => false,
    }
}

/// Whether a command is audited (the node wraps those in `Via`).
pub fn audited(cmd: &Command) -> bool {
    describe(cmd).is_some()
}

impl<K: Kv> State<K> {
    /// Up to `limit` records after `after` (from the oldest when `None`), of `user` (as actor
    /// or owner) or of everyone, that `keep` accepts, reading at most `budget` records; and
    /// the id to go on from when the page is full or the budget ran out.
    pub fn audit_page(
        &self,
        user: Option<&str>,
        after: Option<EventId>,
        limit: usize,
        budget: usize,
        mut keep: impl FnMut(&AuditRecord) -> bool,
    ) -> (Vec<(EventId, AuditRecord)>, Option<EventId>) {
        let prefix = match user {
            Some(u) => format!("ai/{u}/").into_bytes(),
            None => LOG.to_vec(),
        };
        let from = after.map(|a| match user {
            Some(u) => user_key(u, a),
            None => log_key(a),
        });
        let mut out = Vec::new();
        let mut read = 0usize;
        let mut last = None;
        if limit == 0 || budget == 0 {
            return (out, None);
        }
        self.kv().scan(&prefix, from.as_deref(), &mut |k, v| {
            let Some(id) = id_of(&k[prefix.len()..]) else {
                return true;
            };
            read += 1;
            last = Some(id);
            let rec = if user.is_some() {
                self.read_at::<AuditRecord>(&log_key(id))
            } else {
                crate::codec::decode(v).ok()
            };
            if let Some(r) = rec.filter(|r| keep(r)) {
                out.push((id, r));
            }
            out.len() < limit && read < budget
        });
        let more = out.len() >= limit || read >= budget;
        (out, last.filter(|_| more))
    }

    /// The last download number recorded from `node`.
    pub fn downloads_recorded(&self, node: u64) -> Option<u64> {
        self.read_at(&batch_key(node))
    }

    /// When the oldest record kept was made.
    pub fn audit_oldest_at(&self) -> Option<Millis> {
        let mut at = None;
        self.kv().scan(LOG, None, &mut |_, v| {
            at = crate::codec::decode::<AuditRecord>(v).ok().map(|r| r.at);
            false
        });
        at
    }
}

impl<K: KvMut> State<K> {
    /// Writes a record at the entry being applied (nothing without an entry clock: the
    /// model's own tests).
    fn write_record(&mut self, rec: AuditRecord) {
        let Some(id) = self.next_audit_id() else {
            return;
        };
        self.write_at(&user_key(&rec.actor, id), &());
        if let Some(o) = rec.owner.as_deref().filter(|o| *o != rec.actor) {
            self.write_at(&user_key(o, id), &());
        }
        self.write_at(&log_key(id), &rec);
    }

    /// `cmd` (described before it applied as `what`) applied with success: its record.
    pub(super) fn audit(&mut self, what: Described, cmd_actor: Option<&str>, outcome: &Outcome) {
        let Described {
            action,
            owner,
            mut target,
            detail,
        } = what;
        let origin = self.origin.clone();
        // A link download's file and owner are known once it applied.
        let mut owner = owner;
        if let Outcome::Link(l) = outcome {
            if action == "download.link" {
                owner = Some(l.owner.clone());
                target = Some(l.file_id.clone());
            }
        }
        let actor = match (&origin, cmd_actor, &owner) {
            (Some(o), _, _) if !o.actor.is_empty() => o.actor.clone(),
            (_, Some(a), _) => a.to_string(),
            (_, None, Some(o)) => o.clone(),
            _ => "system".to_string(),
        };
        let at = origin
            .as_ref()
            .map(|o| o.at)
            .or(self.clock.map(|c| c.at()))
            .unwrap_or(0);
        self.write_record(AuditRecord {
            at,
            actor,
            action: action.to_string(),
            owner,
            target,
            detail,
            addr: origin.as_ref().map(|o| o.addr.clone()),
            node: origin.as_ref().map(|o| o.node),
        });
    }
}

/// A node's downloads, in its numbering: each is recorded unless one numbered as far was
/// recorded already (a retried or replayed batch).
pub(super) fn record_downloads<K: KvMut>(
    state: &mut State<K>,
    node: u64,
    downloads: Vec<Download>,
) -> super::ApplyResult {
    let key = batch_key(node);
    let mut last = state.read_at::<u64>(&key).unwrap_or(0);
    for d in downloads {
        if d.seq <= last {
            continue;
        }
        last = d.seq;
        state.write_at(&key, &last);
        let owner = (d.owner != d.actor).then_some(d.owner);
        state.write_record(AuditRecord {
            at: d.at,
            actor: d.actor,
            action: d.action,
            owner,
            target: Some(d.file),
            detail: None,
            addr: Some(d.addr),
            node: Some(node),
        });
    }
    Ok(Outcome::Done)
}

/// Drops up to [`PRUNE_PER_COMMAND`] records made before `before`, oldest first.
pub(super) fn prune<K: KvMut>(state: &mut State<K>, before: Millis) -> super::ApplyResult {
    let mut due: Vec<(EventId, AuditRecord)> = Vec::new();
    state.kv().scan(LOG, None, &mut |k, v| {
        let (Some(id), Ok(r)) = (
            id_of(&k[LOG.len()..]),
            crate::codec::decode::<AuditRecord>(v),
        ) else {
            return true;
        };
        if r.at >= before {
            return false;
        }
        due.push((id, r));
        due.len() < PRUNE_PER_COMMAND
    });
    for (id, r) in &due {
        state.delete_at(&log_key(*id));
        state.delete_at(&user_key(&r.actor, *id));
        if let Some(o) = &r.owner {
            state.delete_at(&user_key(o, *id));
        }
    }
    Ok(Outcome::Pruned(due.len() as u64))
}
