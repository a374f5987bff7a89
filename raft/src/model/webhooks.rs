//! Webhooks: the events of the log (see [`super::events`]), POSTed to an admin's URL, each
//! exactly once from the receiver's point of view.
//!
//! Delivery progress is part of the state: a webhook's cursor is the id of the last event its
//! receiver acknowledged (or that its filter skips), moved only forward by
//! `WebhookDelivered`. The leader delivers the events after the cursor in log order, one at a
//! time, and commits each acknowledgement before the next event, so a new leader starts from
//! the first event not acknowledged: it never skips one, and the only event a receiver can see
//! twice is one whose acknowledgement was not yet committed when its leader died (the event id
//! is the receiver's idempotency key). The queue of a receiver that stays down is the events
//! kept (`events.retention_secs`): what `PruneEvents` drops before it was delivered is counted
//! in the webhook's `dropped`.
//!
//! Keys: `wh/{id}` the webhook.

use serde::{Deserialize, Serialize};

use super::events::{EventId, EventKind};
use super::{ApplyResult, Millis, ModelError, Outcome, State};
use crate::kv::{Kv, KvMut};

/// Webhooks a cluster keeps at most (each one is a delivery loop on the leader).
pub const MAX_WEBHOOKS: usize = 100;

const PREFIX: &[u8] = b"wh/";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Event types delivered (`upload.completed`, …); `*` (or none) for all but
    /// `upload.progress`.
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: String,
    pub created_at: Millis,
    /// The last event acknowledged or skipped: delivery goes on after it.
    pub cursor: EventId,
    /// Events acknowledged by the receiver.
    pub delivered: u64,
    /// Events pruned (past `events.retention_secs`) before the receiver acknowledged them.
    pub dropped: u64,
}

impl Webhook {
    /// Whether this webhook delivers events of `kind`.
    pub fn wants(&self, kind: &EventKind) -> bool {
        let name = kind.name();
        if self.events.is_empty() || self.events.iter().any(|e| e == "*") {
            return name != "upload.progress";
        }
        self.events.iter().any(|e| e == name)
    }
}

fn key(id: &str) -> Vec<u8> {
    format!("wh/{id}").into_bytes()
}

impl<K: Kv> State<K> {
    pub fn webhook(&self, id: &str) -> Option<Webhook> {
        self.read_at(&key(id))
    }

    /// Every webhook (at most [`MAX_WEBHOOKS`]), by id.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.values(PREFIX, None, MAX_WEBHOOKS, |_| true)
    }
}

pub(super) fn create<K: KvMut>(state: &mut State<K>, mut hook: Webhook) -> ApplyResult {
    if let Some(existing) = state.webhook(&hook.id) {
        // A retried proposal.
        return Ok(Outcome::Webhook(existing));
    }
    if state.webhooks().len() >= MAX_WEBHOOKS {
        return Err(ModelError::Invalid(format!(
            "a cluster has at most {MAX_WEBHOOKS} webhooks"
        )));
    }
    // Events from the next entry on: none of those already in the log.
    hook.cursor = EventId::end_of(state.clock.map_or(0, |c| c.index));
    hook.delivered = 0;
    hook.dropped = 0;
    state.write_at(&key(&hook.id), &hook);
    Ok(Outcome::Webhook(hook))
}

pub(super) fn delete<K: KvMut>(state: &mut State<K>, id: &str) -> ApplyResult {
    let hook = state.webhook(id).ok_or(ModelError::NotFound)?;
    state.delete_at(&key(id));
    Ok(Outcome::Webhook(hook))
}

/// The receiver acknowledged the events through `through` (`delivered` of them were sent,
/// the others skipped by the filter). An acknowledgement behind the cursor (a deposed
/// leader's, or a retried proposal) changes nothing.
pub(super) fn delivered<K: KvMut>(
    state: &mut State<K>,
    id: &str,
    through: EventId,
    delivered: u64,
) -> ApplyResult {
    let mut hook = state.webhook(id).ok_or(ModelError::NotFound)?;
    if through > hook.cursor {
        hook.cursor = through;
        hook.delivered += delivered;
        state.write_at(&key(id), &hook);
    }
    Ok(Outcome::Webhook(hook))
}

/// `PruneEvents` drops the events `due` (in log order): each webhook counts those it wanted
/// and had not delivered, and its cursor moves past them.
pub(super) fn events_pruned<K: KvMut>(state: &mut State<K>, due: &[(EventId, Option<EventKind>)]) {
    let Some(last) = due.last().map(|(id, _)| *id) else {
        return;
    };
    for mut hook in state.webhooks() {
        if hook.cursor >= last {
            continue;
        }
        let lost = due
            .iter()
            .filter(|(id, kind)| *id > hook.cursor && kind.as_ref().is_some_and(|k| hook.wants(k)))
            .count() as u64;
        hook.dropped += lost;
        hook.cursor = last;
        state.write_at(&key(&hook.id), &hook);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command};
    use super::*;

    fn create_upload(id: &str, now: Millis) -> Command {
        super::super::fixtures::create_upload("ann", id, now)
    }

    fn hook(events: &[&str]) -> Command {
        Command::CreateWebhook {
            id: "w1".into(),
            url: "http://127.0.0.1:9/hook".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: "s".into(),
            now: 1,
        }
    }

    #[test]
    fn a_webhook_starts_after_its_entry_moves_forward_only_and_counts_what_is_pruned() {
        let mut s = State::default();
        s.begin_entry(1);
        apply(&mut s, create_upload("u1", 1_000)).unwrap();
        s.begin_entry(2);
        apply(&mut s, hook(&["upload.created"])).unwrap();
        let h = s.webhook("w1").unwrap();
        assert_eq!(
            h.cursor,
            EventId::end_of(2),
            "events before it are not its own"
        );
        // Retried: the same webhook, not a second one.
        s.begin_entry(3);
        apply(&mut s, hook(&["*"])).unwrap();
        assert_eq!(s.webhooks().len(), 1);
        for (i, t) in [(4u64, 2_000u64), (5, 3_000), (6, 4_000)] {
            s.begin_entry(i);
            apply(&mut s, create_upload(&format!("u{i}"), t)).unwrap();
        }
        let ack = |s: &mut State, index: u64| {
            let through = EventId { index, seq: 0 };
            apply(
                s,
                Command::WebhookDelivered {
                    id: "w1".into(),
                    through,
                    delivered: 1,
                },
            )
            .unwrap();
        };
        ack(&mut s, 4);
        // A deposed leader's late acknowledgement does not move it back.
        ack(&mut s, 3);
        let h = s.webhook("w1").unwrap();
        assert_eq!((h.cursor.index, h.delivered), (4, 1));
        // Events 5 and 6 are pruned before delivery: counted as dropped, the cursor moves on.
        s.begin_entry(7);
        apply(&mut s, Command::PruneEvents { before: 3_500 }).unwrap();
        let h = s.webhook("w1").unwrap();
        assert_eq!((h.cursor.index, h.dropped), (5, 1));
        s.begin_entry(8);
        apply(&mut s, Command::PruneEvents { before: 9_000 }).unwrap();
        let h = s.webhook("w1").unwrap();
        assert_eq!((h.cursor.index, h.dropped), (6, 2));
        apply(&mut s, Command::DeleteWebhook { id: "w1".into() }).unwrap();
        assert!(s.webhooks().is_empty());
    }

    #[test]
    fn a_filter_names_event_types_and_star_means_all_but_progress() {
        let mut h = Webhook {
            id: "w".into(),
            url: String::new(),
            events: vec!["*".into()],
            secret: String::new(),
            created_at: 0,
            cursor: EventId::default(),
            delivered: 0,
            dropped: 0,
        };
        let progress = EventKind::UploadProgress {
            upload_id: "u".into(),
            received: 1,
            size: 2,
        };
        let deleted = EventKind::FileDeleted {
            file_id: "f".into(),
        };
        assert!(h.wants(&deleted) && !h.wants(&progress));
        h.events = vec!["upload.progress".into()];
        assert!(!h.wants(&deleted) && h.wants(&progress));
    }
}
