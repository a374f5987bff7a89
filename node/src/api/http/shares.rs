//! Sharing with users: `POST /v1/files/{id}/shares` and `POST /v1/folders/{id}/shares`
//! `{user, role}`, their listings and revokes (the owner's alone), `GET /v1/shared-with-me`, and
//! the access checks every route that serves or changes a file uses: the owner, or a user with
//! a role on it (its own share or a folder's above it). Without a role another user's ids are
//! 404, as ids that do not exist; a viewer asking to write is 403 `forbidden`. Writes by an
//! editor are proposed as `AsUser`, so the state machine checks the role where the write lands
//! in the log: a revoke acknowledged before it wins.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_raft::model::folders::{EntryKind, Folder, ROOT};
use wharf_raft::model::shares::{Role, Share};
use wharf_raft::model::{Command, File};
use wharf_raft::{Outcome, StateView};

use super::files::file_record;
use super::{check_limit, decode_cursor, parse_id, query_limit, ApiJson, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339};

/// Shares of a user looked through at most to find which owner a shared folder belongs to.
const MAX_SHARES_LOOKED_AT: usize = 1_000;

/// File `id` as `caller` may use it: theirs, or another user's on which they have at least
/// `need`. 404 without a role (as for an id that does not exist), 403 with a weaker one.
pub(crate) fn file_for(applied: &StateView, caller: &str, id: &str, need: Role) -> Result<File> {
    let owner = applied.file_owner(id).ok_or(Error::NotFound)?;
    if owner != caller {
        match applied.file_role(&owner, id, caller) {
            None => return Err(Error::NotFound),
            Some(r) if r < need => return Err(forbidden(need)),
            Some(_) => {}
        }
    }
    applied.live_file(&owner, id).ok_or(Error::NotFound)
}

fn forbidden(need: Role) -> Error {
    Error::Forbidden(format!(
        "this file is shared with you as a viewer: {} is for editors and its owner",
        match need {
            Role::Editor => "this",
            Role::Viewer => "reading",
        }
    ))
}

/// Who owns folder `id`, and the folder, when `caller` may see it: theirs, or under a folder
/// shared with them.
pub(crate) fn folder_for(applied: &StateView, caller: &str, id: &str) -> Result<(String, Folder)> {
    if let Some(f) = applied.live_folder(caller, id) {
        return Ok((caller.to_string(), f));
    }
    // Folder ids are not indexed by owner: the owners that shared a folder with the caller
    // are the only ones to look at.
    for s in applied.shared_with(caller, None, MAX_SHARES_LOOKED_AT) {
        if s.kind != EntryKind::Folder {
            continue;
        }
        if let Some(f) = applied.live_folder(&s.owner, id) {
            if applied.folder_role(&s.owner, id, caller).is_some() {
                return Ok((s.owner, f));
            }
        }
    }
    Err(Error::NotFound)
}

/// A file's or folder's shares change only by its owner: for anyone else it does not exist.
fn owned_target(applied: &StateView, caller: &str, id: &str, kind: EntryKind) -> Result<()> {
    let found = match kind {
        EntryKind::File => applied.live_file(caller, id).is_some(),
        EntryKind::Folder => applied.live_folder(caller, id).is_some(),
    };
    found.then_some(()).ok_or(Error::NotFound)
}

#[derive(Debug, Deserialize)]
pub(super) struct NewShare {
    user: String,
    role: String,
}

#[derive(Debug, Serialize)]
pub(super) struct ShareRecord {
    /// The shared file's or folder's id.
    id: String,
    kind: &'static str,
    owner: String,
    user: String,
    role: &'static str,
    created_at: String,
}

fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Folder => "folder",
    }
}

fn record(s: &Share) -> ShareRecord {
    ShareRecord {
        id: s.target.clone(),
        kind: kind_str(s.kind),
        owner: s.owner.clone(),
        user: s.user.clone(),
        role: s.role.as_str(),
        created_at: rfc3339(s.created_at),
    }
}

fn parse_role(r: &str) -> Result<Role> {
    match r {
        "viewer" => Ok(Role::Viewer),
        "editor" => Ok(Role::Editor),
        _ => Err(Error::bad_request(
            "invalid_request",
            "role is viewer or editor",
        )),
    }
}

async fn share(
    s: AppState,
    caller: String,
    id: String,
    kind: EntryKind,
    req: NewShare,
) -> Result<Response> {
    let role = parse_role(&req.role)?;
    let user = req.user.trim().to_string();
    if user.is_empty()
        || user.len() > 255
        || user.contains('/')
        || user.chars().any(char::is_control)
    {
        return Err(Error::bad_request(
            "invalid_request",
            "user is a user id (1 to 255 bytes, no `/`)",
        ));
    }
    if user == caller {
        return Err(Error::bad_request(
            "invalid_request",
            "you own it already: share it with another user",
        ));
    }
    owned_target(&s.meta.linearizable().await?, &caller, &id, kind)?;
    let out = s
        .quota
        .propose(Command::CreateShare {
            owner: caller,
            target: id,
            kind,
            user,
            role,
            now: now_ms(),
        })
        .await?;
    match out {
        Outcome::Share(sh) => Ok((StatusCode::CREATED, Json(record(&sh))).into_response()),
        o => Err(Error::Internal(format!("unexpected {o:?}"))),
    }
}

pub(super) async fn share_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewShare>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    share(s, c.sub, id, EntryKind::File, req).await
}

pub(super) async fn share_folder(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewShare>,
) -> Result<Response> {
    if id == ROOT {
        return Err(Error::bad_request(
            "invalid_request",
            "the root is not shared: share a folder or a file",
        ));
    }
    let id = parse_id(&id)?;
    share(s, c.sub, id, EntryKind::Folder, req).await
}

#[derive(Debug, Serialize)]
pub(super) struct ShareList {
    shares: Vec<ShareRecord>,
}

async fn list(s: AppState, caller: String, id: String, kind: EntryKind) -> Result<Json<ShareList>> {
    let applied = s.meta.linearizable().await?;
    owned_target(&applied, &caller, &id, kind)?;
    let shares = applied.shares_of(&caller, &id).iter().map(record).collect();
    Ok(Json(ShareList { shares }))
}

pub(super) async fn list_file_shares(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<ShareList>> {
    let id = parse_id(&id)?;
    list(s, c.sub, id, EntryKind::File).await
}

pub(super) async fn list_folder_shares(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<ShareList>> {
    let id = parse_id(&id)?;
    list(s, c.sub, id, EntryKind::Folder).await
}

/// `DELETE /v1/files/{id}/shares/{user}` and the folder's: 204 once revoked (the user's
/// next request is refused on every node); 404 when there is no such share.
pub(super) async fn revoke(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    s.quota
        .propose(Command::RevokeShare {
            owner: c.sub,
            target: id,
            user,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct SharedQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/shared-with-me?limit=&cursor=`: what other users shared with the caller, each
/// with its role and its owner, as a folder listing shows it.
pub(super) async fn shared_with_me(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<SharedQuery>,
) -> Result<Response> {
    let limit = check_limit(query_limit(q.limit.as_deref()))?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let applied = s.meta.linearizable().await?;
    let mut page = applied.shared_with(&c.sub, after.as_deref(), limit + 1);
    let next_cursor = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last()
            .map(|s| super::encode_cursor(format!("{}/{}", s.owner, s.target)))
    });
    let mut entries = Vec::new();
    for sh in &page {
        let mut v = match sh.kind {
            EntryKind::File => match applied.live_file(&sh.owner, &sh.target) {
                Some(f) => serde_json::to_value(file_record(&applied, &f)),
                None => continue,
            },
            EntryKind::Folder => match applied.live_folder(&sh.owner, &sh.target) {
                Some(f) => Ok(serde_json::json!({
                    "id": f.id, "name": f.name, "created_at": rfc3339(f.created_at),
                })),
                None => continue,
            },
        }
        .map_err(|e| Error::Internal(e.to_string()))?;
        v["kind"] = kind_str(sh.kind).into();
        v["owner"] = sh.owner.clone().into();
        v["role"] = sh.role.as_str().into();
        v["shared_at"] = rfc3339(sh.created_at).into();
        entries.push(v);
    }
    let body = serde_json::json!({
        "entries": entries,
        "next_cursor": next_cursor.flatten(),
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
