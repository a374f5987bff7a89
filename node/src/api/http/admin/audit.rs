//! `GET /v1/admin/audit?user=&action=&since=&until=&limit=&cursor=`: the audit log, oldest
//! first (see `wharf_raft::model::audit`).

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_raft::model::events::EventId;

use crate::api::http::{bad_cursor, check_limit, query_limit, require_admin, AppState, Caller};
use crate::auth;
use crate::error::{Error, Result};
use crate::meta::rfc3339;

/// Records one request reads at most: a filter that matches little answers a page with a
/// cursor rather than walking the whole log.
const READ_BUDGET: usize = 10_000;

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    user: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct RecordView {
    id: String,
    at: String,
    actor: String,
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct AuditPage {
    records: Vec<RecordView>,
    /// More may follow (the page is full, or the read budget ran out): ask again with it.
    next_cursor: Option<String>,
}

/// RFC 3339 (`2026-12-07T10:00:00Z`) or Unix milliseconds.
fn time(name: &str, v: Option<&str>) -> Result<Option<u64>> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(ms));
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_millis() as u64))
        .ok_or_else(|| {
            Error::bad_request(
                "invalid_request",
                format!("{name} must be an RFC 3339 time or Unix milliseconds"),
            )
        })
}

pub(crate) async fn audit(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>> {
    require_admin(&c)?;
    let limit = check_limit(query_limit(q.limit.as_deref()))?;
    if let Some(u) = &q.user {
        auth::validate_user_id(u)
            .map_err(|_| Error::bad_request("invalid_request", "user is not a user id"))?;
    }
    let since = time("since", q.since.as_deref())?;
    let until = time("until", q.until.as_deref())?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<EventId>().map_err(|_| bad_cursor()))
        .transpose()?;
    // `download` matches `download.api`, `download.link`, …
    let action = q.action.as_deref();
    let wanted = |a: &str| {
        action.is_none_or(|w| a == w || a.strip_prefix(w).is_some_and(|r| r.starts_with('.')))
    };
    let applied = s.meta.linearizable().await?;
    let (page, next) = applied.audit_page(q.user.as_deref(), cursor, limit, READ_BUDGET, |r| {
        wanted(&r.action) && since.is_none_or(|t| r.at >= t) && until.is_none_or(|t| r.at < t)
    });
    Ok(Json(AuditPage {
        records: page
            .into_iter()
            .map(|(id, r)| RecordView {
                id: id.to_string(),
                at: rfc3339(r.at),
                actor: r.actor,
                action: r.action,
                owner: r.owner,
                target: r.target,
                detail: r.detail,
                addr: r.addr,
                node: r.node,
            })
            .collect(),
        next_cursor: next.map(|n| n.to_string()),
    }))
}
