//! Webhooks: `POST /v1/admin/webhooks {url, events, secret}`, `GET /v1/admin/webhooks`,
//! `GET /v1/admin/webhooks/{id}` (with its lag) and `DELETE /v1/admin/webhooks/{id}`.
//! Delivery is [`crate::actors::webhooks`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use wharf_raft::model::events::EVENT_TYPES;
use wharf_raft::model::webhooks::Webhook;
use wharf_raft::model::Command;
use wharf_raft::Outcome;

use crate::api::http::{parse_id, require_admin, ApiJson, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339};

/// Events after the cursor counted for the lag, at most.
const LAG_COUNTED: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    secret: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct WebhookView {
    id: String,
    url: String,
    events: Vec<String>,
    created_at: String,
    /// The last event acknowledged (or skipped by the filter).
    cursor: String,
    delivered: u64,
    dropped: u64,
    /// Only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Events waiting for delivery (counted up to 10,000); only in `GET …/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<u64>,
    /// When the oldest waiting event was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_pending_at: Option<String>,
    /// The delivery loop's failed tries of the event it is on, and the last error (known
    /// on the leader, which delivers).
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

fn view(h: Webhook) -> WebhookView {
    WebhookView {
        id: h.id,
        url: h.url,
        events: h.events,
        created_at: rfc3339(h.created_at),
        cursor: h.cursor.to_string(),
        delivered: h.delivered,
        dropped: h.dropped,
        secret: None,
        pending: None,
        oldest_pending_at: None,
        failures: None,
        last_error: None,
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::bad_request("invalid_request", msg)
}

pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(c): Caller,
    ApiJson(req): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookView>)> {
    require_admin(&c)?;
    let url = reqwest::Url::parse(&req.url).map_err(|e| invalid(format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || req.url.len() > 2048 {
        return Err(invalid("url must be an http(s) URL of at most 2048 bytes"));
    }
    let mut events = req.events;
    if events.is_empty() {
        events.push("*".into());
    }
    if let Some(bad) = events
        .iter()
        .find(|e| *e != "*" && !EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(invalid(format!(
            "unknown event type {bad:?}: one of {}, or *",
            EVENT_TYPES.join(", ")
        )));
    }
    events.sort();
    events.dedup();
    let secret = match req.secret {
        Some(s) if (16..=256).contains(&s.len()) => s,
        Some(_) => return Err(invalid("secret must be 16 to 256 bytes")),
        None => {
            let mut b = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut b);
            hex::encode(b)
        }
    };
    let cmd = Command::CreateWebhook {
        id: uuid::Uuid::now_v7().to_string(),
        url: url.to_string(),
        events,
        secret: secret.clone(),
        now: now_ms(),
    };
    match s.quota.propose(cmd).await? {
        Outcome::Webhook(h) => {
            let mut v = view(h);
            v.secret = Some(secret);
            Ok((StatusCode::CREATED, Json(v)))
        }
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<serde_json::Value>> {
    require_admin(&c)?;
    let applied = s.meta.linearizable().await?;
    let hooks: Vec<WebhookView> = applied.webhooks().into_iter().map(view).collect();
    Ok(Json(serde_json::json!({ "webhooks": hooks })))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>> {
    require_admin(&c)?;
    let id = parse_id(&id)?;
    let applied = s.meta.linearizable().await?;
    let hook = applied.webhook(&id).ok_or(Error::NotFound)?;
    let waiting: Vec<_> = applied
        .all_events_after(Some(hook.cursor), LAG_COUNTED)
        .into_iter()
        .filter(|(_, _, e)| hook.wants(&e.kind))
        .collect();
    let mut v = view(hook);
    v.pending = Some(waiting.len() as u64);
    v.oldest_pending_at = waiting.first().map(|(_, _, e)| rfc3339(e.at));
    if let Some(a) = s.webhooks.get(&id) {
        v.failures = Some(a.failures);
        v.last_error = a.last_error.clone();
    }
    Ok(Json(v))
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    let id = parse_id(&id)?;
    match s.quota.propose(Command::DeleteWebhook { id }).await? {
        Outcome::Webhook(_) => Ok(StatusCode::NO_CONTENT),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}
