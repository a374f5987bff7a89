//! What the cluster holds, for admins: `GET /v1/admin/usage` (totals, per tier),
//! `GET /v1/admin/users?sort=used|id&limit=&cursor=` and `GET /v1/admin/users/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_raft::model::usage::{TierUsage, UserUsage};
use wharf_raft::model::Chunk;

use crate::api::http::{
    check_limit, decode_cursor, encode_cursor, query_limit, require_admin, AppState, Caller,
};
use crate::auth;
use crate::error::{Error, Result};

/// The scan backlog is counted up to this many blobs: a request never walks a huge queue.
const SCAN_BACKLOG_COUNTED: usize = 10_000;

#[derive(Serialize)]
pub(crate) struct UsageBody {
    users: u64,
    files: u64,
    /// Bytes of stored files (every kept version, trashed ones until purged).
    used: u64,
    /// Bytes reserved by uploads in progress.
    reserved: u64,
    uploads_in_progress: u64,
    /// Bytes of open uploads' chunks held in the nodes' staging, not yet in the object store.
    staging_bytes: u64,
    /// Files waiting for a virus scan (counted up to 10,000).
    scan_backlog: u64,
    tiers: BTreeMap<String, TierUsage>,
    /// `false` while the cluster still counts the users of an older data dir: the totals
    /// then miss some users.
    complete: bool,
}

pub(crate) async fn usage(State(s): State<AppState>, Caller(c): Caller) -> Result<Json<UsageBody>> {
    require_admin(&c)?;
    let applied = s.meta.linearizable().await?;
    let totals = applied.totals();
    let all = totals.all();
    // Open uploads are bounded by the users' concurrent-upload limits.
    let staging_bytes = applied
        .open_uploads(usize::MAX)
        .iter()
        .flat_map(|u| u.chunks.iter())
        .map(|c| match c {
            Chunk::Staged { len, .. } => *len,
            _ => 0,
        })
        .sum();
    Ok(Json(UsageBody {
        users: all.users,
        files: all.files,
        used: all.used,
        reserved: all.reserved,
        uploads_in_progress: all.uploads,
        staging_bytes,
        scan_backlog: applied.scan_queue(SCAN_BACKLOG_COUNTED).len() as u64,
        tiers: totals
            .tiers
            .into_iter()
            .filter(|(_, t)| t.users > 0)
            .collect(),
        complete: applied.usage_counted(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct UsersQuery {
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct UserList {
    users: Vec<UserUsage>,
    next_cursor: Option<String>,
}

pub(crate) async fn users(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<UsersQuery>,
) -> Result<Json<UserList>> {
    require_admin(&c)?;
    let limit = check_limit(query_limit(q.limit.as_deref()))?;
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let applied = s.meta.linearizable().await?;
    let (users, next) = match q.sort.as_deref() {
        None | Some("used") => applied.users_by_used(cursor.as_deref(), limit),
        Some("id") => {
            let page = applied.users(cursor.as_deref(), limit);
            let next = (page.len() == limit)
                .then(|| page.last().map(|u| u.id.clone()))
                .flatten();
            let users = page
                .iter()
                .filter_map(|u| applied.user_usage(&u.id))
                .collect();
            (users, next)
        }
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_request",
                "sort is used (most bytes first) or id",
            ))
        }
    };
    Ok(Json(UserList {
        users,
        next_cursor: next.map(encode_cursor),
    }))
}

pub(crate) async fn user(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<UserUsage>> {
    require_admin(&c)?;
    auth::validate_user_id(&id).map_err(|_| Error::NotFound)?;
    let applied = s.meta.linearizable().await?;
    applied.user_usage(&id).map(Json).ok_or(Error::NotFound)
}
