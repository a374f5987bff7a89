//! Per-user events, written by the commands that cause them, for `GET /v1/events`.
//!
//! An event's id is the log index of the entry that committed it and its place among that
//! entry's events (`{index}-{seq}`: a batched entry carries several commands). Events are
//! records of the state like any other, so every node holds the same ones in the same order,
//! and a client that reconnects anywhere with `Last-Event-ID` continues exactly after it.
//! `PruneEvents` (the leader's timer) drops those older than the retention window and
//! remembers the last id dropped: a client asking from before it is told to re-list.
//!
//! Keys: `eo/{owner}/{index:020}-{seq:05}` holds the event; `et/{index:020}-{seq:05}` holds
//! its owner and time, so pruning walks the events oldest first without knowing the users;
//! `ep/{owner}/{upload_id}` holds the time of an upload's last progress event (throttling).

use serde::{Deserialize, Serialize};

use super::{Millis, State, Upload, UploadState, User};
use crate::kv::{Kv, KvMut};

/// Progress events of one upload come at most this often.
pub const PROGRESS_EVERY_MS: Millis = 500;
/// Events one `PruneEvents` drops at most (bounds one apply).
pub const PRUNE_PER_COMMAND: usize = 10_000;

const PRUNED: &[u8] = b"ev/pruned";
const BY_TIME: &[u8] = b"et/";

/// Where the entry being applied is: its log index, how many events it wrote, and the latest
/// proposer time its commands carried (events have no clock of their own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryClock {
    pub index: u64,
    seq: u32,
    /// Audit records of the entry so far (numbered apart from its events).
    audit_seq: u32,
    at: Millis,
}

impl EntryClock {
    /// The latest proposer time the entry's commands carried.
    pub fn at(&self) -> Millis {
        self.at
    }
}

/// An event's place in the log: the entry's index and the event's place in it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventId {
    pub index: u64,
    pub seq: u32,
}

impl EventId {
    /// The id after every event of entry `index` (to start a stream at an applied index).
    pub fn end_of(index: u64) -> Self {
        Self {
            index,
            seq: u32::MAX,
        }
    }

    fn key_part(&self) -> String {
        format!("{:020}-{:05}", self.index, self.seq)
    }

    fn from_key_part(s: &str) -> Option<Self> {
        let (i, q) = s.split_once('-')?;
        Some(Self {
            index: i.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.index, self.seq)
    }
}

impl std::str::FromStr for EventId {
    type Err = ();

    /// `{index}-{seq}`, or a bare index (every event of that entry seen).
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        match s.split_once('-') {
            Some((i, q)) => Ok(Self {
                index: i.parse().map_err(|_| ())?,
                seq: q.parse().map_err(|_| ())?,
            }),
            None => s.parse().map(Self::end_of).map_err(|_| ()),
        }
    }
}

/// The user's bytes after the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub used: u64,
    pub reserved: u64,
    pub quota: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    UploadCreated {
        upload_id: String,
        name: String,
        size: u64,
    },
    /// Bytes held so far (whole chunks, and a tus upload's tail).
    UploadProgress {
        upload_id: String,
        received: u64,
        size: u64,
    },
    UploadCompleted {
        upload_id: String,
        file_id: String,
        name: String,
        size: u64,
    },
    /// Aborted or expired.
    UploadEnded {
        upload_id: String,
        state: UploadState,
    },
    /// A scan verdict for one of the user's files (`scan` as the file listing has it).
    FileScanned {
        file_id: String,
        scan: String,
    },
    FileRenamed {
        file_id: String,
        name: String,
    },
    FileDeleted {
        file_id: String,
    },
    /// The quota changed (an admin set it).
    QuotaChanged,
    /// An earlier version was made the current one again (as a new version).
    FileVersionRestored {
        file_id: String,
        version_id: String,
    },
    /// A file or folder (`folder`) went to the trash, with all under it.
    EntryTrashed {
        id: String,
        folder: bool,
    },
    /// A file or folder came back from the trash.
    EntryRestored {
        id: String,
        folder: bool,
    },
}

/// Every event type, as [`EventKind::name`] names them.
pub const EVENT_TYPES: &[&str] = &[
    "upload.created",
    "upload.progress",
    "upload.completed",
    "upload.expired",
    "upload.aborted",
    "file.scanned",
    "file.renamed",
    "file.deleted",
    "quota.changed",
    "file.version_restored",
    "file.trashed",
    "folder.trashed",
    "file.restored",
    "folder.restored",
];

impl EventKind {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::UploadCreated { .. } => "upload.created",
            EventKind::UploadProgress { .. } => "upload.progress",
            EventKind::UploadCompleted { .. } => "upload.completed",
            EventKind::UploadEnded {
                state: UploadState::Expired,
                ..
            } => "upload.expired",
            EventKind::UploadEnded { .. } => "upload.aborted",
            EventKind::FileScanned { .. } => "file.scanned",
            EventKind::FileRenamed { .. } => "file.renamed",
            EventKind::FileDeleted { .. } => "file.deleted",
            EventKind::QuotaChanged => "quota.changed",
            EventKind::FileVersionRestored { .. } => "file.version_restored",
            EventKind::EntryTrashed { folder: false, .. } => "file.trashed",
            EventKind::EntryTrashed { folder: true, .. } => "folder.trashed",
            EventKind::EntryRestored { folder: false, .. } => "file.restored",
            EventKind::EntryRestored { folder: true, .. } => "folder.restored",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The proposer's clock when the command was made.
    pub at: Millis,
    pub kind: EventKind,
    /// The user's usage once the command applied.
    pub usage: Option<Usage>,
}

fn owner_key(owner: &str, id: EventId) -> Vec<u8> {
    format!("eo/{owner}/{}", id.key_part()).into_bytes()
}

fn owner_prefix(owner: &str) -> Vec<u8> {
    format!("eo/{owner}/").into_bytes()
}

fn time_key(id: EventId) -> Vec<u8> {
    format!("et/{}", id.key_part()).into_bytes()
}

fn progress_key(owner: &str, upload_id: &str) -> Vec<u8> {
    format!("ep/{owner}/{upload_id}").into_bytes()
}

fn usage(u: &User) -> Usage {
    Usage {
        used: u.used,
        reserved: u.reserved,
        quota: u.quota,
    }
}

impl<K> State<K> {
    /// The entry at `index` is about to be applied: the events it writes are numbered from it.
    /// Without this (the model's own tests), commands write no events.
    pub fn begin_entry(&mut self, index: u64) {
        self.clock = Some(EntryClock {
            index,
            ..EntryClock::default()
        });
    }

    /// The id of the next audit record of the entry being applied.
    pub(super) fn next_audit_id(&mut self) -> Option<EventId> {
        let c = self.clock.as_mut()?;
        let id = EventId {
            index: c.index,
            seq: c.audit_seq,
        };
        c.audit_seq += 1;
        Some(id)
    }

    /// A command of the entry carried the proposer's time `at`.
    pub(super) fn saw_time(&mut self, at: Millis) {
        if let Some(c) = &mut self.clock {
            c.at = c.at.max(at);
        }
    }
}

impl<K: Kv> State<K> {
    /// Up to `limit` of `owner`'s events after `after` (all retained ones when `None`), oldest
    /// first.
    pub fn events_after(
        &self,
        owner: &str,
        after: Option<EventId>,
        limit: usize,
    ) -> Vec<(EventId, Event)> {
        let prefix = owner_prefix(owner);
        let from = after.map(|a| owner_key(owner, a));
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.kv().scan(&prefix, from.as_deref(), &mut |k, v| {
            let id = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(EventId::from_key_part);
            if let (Some(id), Ok(e)) = (id, crate::codec::decode(v)) {
                out.push((id, e));
            }
            out.len() < limit
        });
        out
    }

    /// Up to `limit` events of every user after `after` (from the start when `None`), in log
    /// order, with their owners: what webhooks deliver.
    pub fn all_events_after(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Vec<(EventId, String, Event)> {
        let from = after.map(time_key);
        let mut ids = Vec::new();
        if limit == 0 {
            return Vec::new();
        }
        self.kv().scan(BY_TIME, from.as_deref(), &mut |k, v| {
            let id = std::str::from_utf8(&k[BY_TIME.len()..])
                .ok()
                .and_then(EventId::from_key_part);
            if let (Some(id), Ok((owner, _))) = (id, crate::codec::decode::<(String, Millis)>(v)) {
                ids.push((id, owner));
            }
            ids.len() < limit
        });
        ids.into_iter()
            .filter_map(|(id, owner)| {
                let e = self.read_at::<Event>(&owner_key(&owner, id))?;
                Some((id, owner, e))
            })
            .collect()
    }

    /// When the oldest event kept was made (the leader prunes only when it is due).
    pub fn events_oldest_at(&self) -> Option<Millis> {
        let mut at = None;
        self.kv().scan(BY_TIME, None, &mut |_, v| {
            at = crate::codec::decode::<(String, Millis)>(v)
                .ok()
                .map(|(_, t)| t);
            false
        });
        at
    }

    /// The newest event id pruned so far: a stream resumed from before it may have missed some.
    pub fn events_pruned_through(&self) -> Option<EventId> {
        self.read_at(PRUNED)
            .map(|(index, seq)| EventId { index, seq })
    }
}

impl<K: KvMut> State<K> {
    /// Writes an event for `owner` with their usage as it is now.
    pub(super) fn emit(&mut self, owner: &str, kind: EventKind) {
        let Some(mut clock) = self.clock else {
            return;
        };
        let id = EventId {
            index: clock.index,
            seq: clock.seq,
        };
        clock.seq += 1;
        self.clock = Some(clock);
        let event = Event {
            at: clock.at,
            kind,
            usage: self.user(owner).as_ref().map(usage),
        };
        self.write_at(&owner_key(owner, id), &event);
        self.write_at(&time_key(id), &(owner, clock.at));
    }

    /// An upload gained bytes: a progress event, unless the last one is under
    /// [`PROGRESS_EVERY_MS`] old.
    pub(super) fn emit_progress(&mut self, owner: &str, upload_id: &str, now: Millis) {
        if self.clock.is_none() {
            return;
        }
        let key = progress_key(owner, upload_id);
        let last: Option<Millis> = self.read_at(&key);
        if last.is_some_and(|l| now < l.saturating_add(PROGRESS_EVERY_MS)) {
            return;
        }
        let Some(up) = self.upload(owner, upload_id) else {
            return;
        };
        let received = received(&up, self.tus(owner, upload_id).as_ref());
        self.write_at(&key, &now);
        self.emit(
            owner,
            EventKind::UploadProgress {
                upload_id: upload_id.to_string(),
                received,
                size: up.size,
            },
        );
    }

    /// An upload ended: its throttle record goes with it.
    pub(super) fn forget_progress(&mut self, owner: &str, upload_id: &str) {
        self.delete_at(&progress_key(owner, upload_id));
    }
}

/// Bytes held: whole chunks (the last may be short) and a tus tail.
fn received(up: &Upload, tus: Option<&super::tus::TusUpload>) -> u64 {
    let chunks: u64 = (0u32..)
        .zip(&up.chunks)
        .filter(|(_, c)| c.blake3().is_some())
        .map(|(i, _)| up.chunk_len(i))
        .sum();
    let tail = tus
        .and_then(|t| t.tail.as_ref())
        .filter(|t| {
            up.chunks
                .get(t.index as usize)
                .is_some_and(|c| c.blake3().is_none())
        })
        .map_or(0, |t| t.len);
    chunks + tail
}

/// Drops up to [`PRUNE_PER_COMMAND`] events made before `before`, oldest first.
pub(super) fn prune<K: KvMut>(state: &mut State<K>, before: Millis) -> super::ApplyResult {
    let mut due: Vec<(EventId, String)> = Vec::new();
    state.kv().scan(BY_TIME, None, &mut |k, v| {
        let Ok((owner, at)) = crate::codec::decode::<(String, Millis)>(v) else {
            return true;
        };
        // Times only grow along the log (give or take proposers' clocks): stop at the first
        // event young enough to keep.
        if at >= before {
            return false;
        }
        if let Some(id) = std::str::from_utf8(&k[BY_TIME.len()..])
            .ok()
            .and_then(EventId::from_key_part)
        {
            due.push((id, owner));
        }
        due.len() < PRUNE_PER_COMMAND
    });
    let Some(last) = due.last().map(|(id, _)| *id) else {
        return Ok(super::Outcome::Pruned(0));
    };
    // Webhooks count what they lose: they need the kinds of the events dropped.
    let hooked = !state.webhooks().is_empty();
    let mut dropped = Vec::new();
    for (id, owner) in &due {
        if hooked {
            let kind = state
                .read_at::<Event>(&owner_key(owner, *id))
                .map(|e| e.kind);
            dropped.push((*id, kind));
        }
        state.delete_at(&time_key(*id));
        state.delete_at(&owner_key(owner, *id));
    }
    super::webhooks::events_pruned(state, &dropped);
    state.write_at(PRUNED, &(last.index, last.seq));
    Ok(super::Outcome::Pruned(due.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, State};
    use super::*;

    fn create(id: &str, now: Millis) -> Command {
        super::super::fixtures::create_upload("alice", id, now)
    }

    fn staged(id: &str, index: u32, now: Millis) -> Command {
        Command::ChunkStaged {
            owner: "alice".into(),
            upload_id: id.into(),
            index,
            node: 1,
            len: if index == 2 { 2 } else { 4 },
            blake3: format!("h{index}"),
            cv: format!("c{index}"),
            now,
        }
    }

    fn names(s: &State) -> Vec<(String, &'static str)> {
        s.events_after("alice", None, 100)
            .into_iter()
            .map(|(id, e)| (id.to_string(), e.kind.name()))
            .collect()
    }

    #[test]
    fn events_carry_their_entry_index_and_progress_is_throttled() {
        let mut s = State::default();
        s.begin_entry(7);
        apply(&mut s, create("u1", 1_000)).unwrap();
        // Two chunks in one entry (a batch) 100 ms apart: one progress event.
        s.begin_entry(8);
        apply(&mut s, staged("u1", 0, 1_100)).unwrap();
        apply(&mut s, staged("u1", 1, 1_200)).unwrap();
        s.begin_entry(9);
        apply(&mut s, staged("u1", 2, 1_700)).unwrap();
        s.begin_entry(10);
        apply(
            &mut s,
            Command::AbortUpload {
                owner: "alice".into(),
                upload_id: "u1".into(),
                now: 1_800,
            },
        )
        .unwrap();
        assert_eq!(
            names(&s),
            vec![
                ("7-0".into(), "upload.created"),
                ("8-0".into(), "upload.progress"),
                ("9-0".into(), "upload.progress"),
                ("10-0".into(), "upload.aborted"),
            ]
        );
        let evs = s.events_after("alice", Some("8-0".parse().unwrap()), 10);
        assert_eq!(evs.len(), 2);
        match &evs[0].1.kind {
            EventKind::UploadProgress { received, size, .. } => {
                assert_eq!((*received, *size), (10, 10))
            }
            other => panic!("{other:?}"),
        }
        // The aborted upload's reservation is gone from the usage it carries.
        assert_eq!(evs[1].1.usage.as_ref().map(|u| u.reserved), Some(0));
        // Nothing for another user, and nothing after the last.
        assert!(s.events_after("bob", None, 10).is_empty());
        assert!(s
            .events_after("alice", Some(EventId::end_of(10)), 10)
            .is_empty());
    }

    #[test]
    fn prune_drops_old_events_and_remembers_the_last_dropped() {
        let mut s = State::default();
        for (i, t) in [(1u64, 1_000u64), (2, 2_000), (3, 3_000)] {
            s.begin_entry(i);
            apply(&mut s, create(&format!("u{i}"), t)).unwrap();
        }
        s.begin_entry(4);
        apply(&mut s, Command::PruneEvents { before: 2_500 }).unwrap();
        assert_eq!(names(&s), vec![("3-0".into(), "upload.created")]);
        assert_eq!(
            s.events_pruned_through(),
            Some(EventId { index: 2, seq: 0 })
        );
        assert_eq!("2".parse::<EventId>(), Ok(EventId::end_of(2)));
        assert_eq!("2-0".parse::<EventId>(), Ok(EventId { index: 2, seq: 0 }));
        assert!("x".parse::<EventId>().is_err());
    }
}
