//! Webhook delivery: on the leader, one loop per webhook POSTs the events after its cursor, in
//! log order, one at a time, and commits each acknowledgement (`WebhookDelivered`) before
//! the next event (see `wharf_raft::model::webhooks` for why that makes delivery exactly once
//! by event id). A receiver that fails is retried with exponential backoff and jitter, the
//! same event, so events of one upload always arrive in order.
//!
//! The body is the event as `GET /v1/events` streams it, with `user` and `index`; it is signed
//! in `X-Wharf-Signature: sha256=<hex HMAC-SHA256 of the body under the webhook's secret>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wharf_cluster::Metadata;
use wharf_raft::model::events::{Event, EventId, EventKind};
use wharf_raft::model::webhooks::Webhook;
use wharf_raft::model::Command;

use crate::actors::quota::QuotaHandle;
use crate::meta::rfc3339;

/// How long a receiver has to answer one delivery.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a failing receiver back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Events read per look at the log.
const PAGE: usize = 256;

/// What this node's delivery loop last saw of a webhook (shown by `GET /v1/admin/webhooks/{id}`
/// when asked on the leader).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Attempts {
    /// Failed tries of the event being delivered now.
    pub failures: u32,
    pub last_error: Option<String>,
}

pub type Status = Arc<DashMap<String, Attempts>>;

/// An event as JSON: `type`, `id`, `at`, its fields, and the user's usage after it.
pub fn event_json(id: EventId, e: &Event) -> Value {
    let mut v = match &e.kind {
        EventKind::UploadCreated {
            upload_id,
            name,
            size,
        } => json!({"upload_id": upload_id, "name": name, "size": size}),
        EventKind::UploadProgress {
            upload_id,
            received,
            size,
        } => json!({"upload_id": upload_id, "received": received, "size": size}),
        EventKind::UploadCompleted {
            upload_id,
            file_id,
            name,
            size,
        } => json!({"upload_id": upload_id, "file_id": file_id, "name": name, "size": size}),
        EventKind::UploadEnded { upload_id, state } => {
            json!({"upload_id": upload_id, "state": state.as_str()})
        }
        EventKind::FileScanned { file_id, scan } => json!({"file_id": file_id, "scan": scan}),
        EventKind::FileRenamed { file_id, name } => json!({"file_id": file_id, "name": name}),
        EventKind::FileDeleted { file_id } => json!({"file_id": file_id}),
        EventKind::FileVersionRestored {
            file_id,
            version_id,
        } => json!({"file_id": file_id, "version_id": version_id}),
        EventKind::EntryTrashed { id, folder } | EventKind::EntryRestored { id, folder } => {
            if *folder {
                json!({"folder_id": id})
            } else {
                json!({"file_id": id})
            }
        }
        EventKind::QuotaChanged => json!({}),
    };
    v["type"] = json!(e.kind.name());
    v["id"] = json!(id.to_string());
    v["at"] = json!(rfc3339(e.at));
    if let Some(u) = &e.usage {
        v["usage"] = json!({"used": u.used, "reserved": u.reserved, "quota": u.quota});
    }
    v
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts the loop that keeps one delivery task per webhook while this node leads.
pub fn spawn(meta: Metadata, quota: QuotaHandle, status: Status, stop: CancellationToken) {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            tasks.retain(|_, t| !t.is_finished());
            if !meta.is_leader() {
                for (_, t) in tasks.drain() {
                    t.abort();
                }
                status.clear();
                continue;
            }
            for hook in meta.local().webhooks() {
                if tasks.contains_key(&hook.id) {
                    continue;
                }
                let d = Delivery {
                    id: hook.id.clone(),
                    meta: meta.clone(),
                    quota: quota.clone(),
                    http: http.clone(),
                    status: status.clone(),
                };
                tasks.insert(hook.id, tokio::spawn(d.run()));
            }
        }
        for (_, t) in tasks.drain() {
            t.abort();
        }
    });
}

struct Delivery {
    id: String,
    meta: Metadata,
    quota: QuotaHandle,
    http: reqwest::Client,
    status: Status,
}

impl Delivery {
    /// Delivers until this node no longer leads or the webhook is deleted.
    async fn run(self) {
        // A new leader may not have applied every committed acknowledgement yet: a
        // linearizable read catches up first (fewer events sent twice).
        if self.meta.linearizable().await.is_err() {
            return;
        }
        let mut watch = self.meta.applied_watch();
        loop {
            watch.applied();
            if !self.meta.is_leader() {
                return;
            }
            let Some(hook) = self.meta.local().webhook(&self.id) else {
                self.status.remove(&self.id);
                return;
            };
            let page = self.meta.local().all_events_after(Some(hook.cursor), PAGE);
            let Some(last) = page.last().map(|(id, _, _)| *id) else {
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let next = page.into_iter().find(|(_, _, e)| hook.wants(&e.kind));
            let ack = match next {
                // Nothing wanted in the page: move past it.
                None => Command::WebhookDelivered {
                    id: self.id.clone(),
                    through: last,
                    delivered: 0,
                },
                Some((id, owner, event)) => {
                    if !self.deliver(&hook, id, &owner, &event).await {
                        return;
                    }
                    Command::WebhookDelivered {
                        id: self.id.clone(),
                        through: id,
                        delivered: 1,
                    }
                }
            };
            if let Err(e) = self.quota.propose(ack).await {
                tracing::warn!(webhook = %self.id, error = %e, "committing a webhook delivery failed");
                return;
            }
        }
    }

    /// POSTs one event until the receiver takes it (2xx); `false` once this node should stop
    /// (no longer the leader, or the webhook is gone or was moved past this event).
    async fn deliver(&self, hook: &Webhook, id: EventId, owner: &str, event: &Event) -> bool {
        if crate::planted::active(crate::planted::Bug::WebhookAckUnsent)
            && id.index.is_multiple_of(5)
        {
            return true;
        }
        let mut body = event_json(id, event);
        body["user"] = json!(owner);
        body["index"] = json!(id.index);
        let body = body.to_string().into_bytes();
        let sig = signature(&hook.secret, &body);
        let mut backoff = Duration::from_millis(250);
        loop {
            let sent = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-wharf-signature", &sig)
                .header("x-wharf-event", event.kind.name())
                .header("x-wharf-delivery", id.to_string())
                .body(body.clone())
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status().is_success() => {
                    self.status.remove(&self.id);
                    metrics::counter!("wharf_webhook_deliveries_total", "result" => "ok")
                        .increment(1);
                    return true;
                }
                Ok(r) => format!("the receiver answered {}", r.status()),
                Err(e) => format!("{e}"),
            };
            metrics::counter!("wharf_webhook_deliveries_total", "result" => "failed").increment(1);
            {
                let mut s = self.status.entry(self.id.clone()).or_default();
                s.failures += 1;
                s.last_error = Some(error);
            }
            // Full jitter: receivers coming back are not hit by every retry at once.
            let wait = rand::thread_rng().gen_range(backoff / 2..=backoff);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if !self.meta.is_leader() {
                return false;
            }
            match self.meta.local().webhook(&self.id) {
                Some(h) if h.cursor < id => {}
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
