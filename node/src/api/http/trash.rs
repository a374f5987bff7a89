//! The trash: `DELETE /v1/files/{id}` and `DELETE /v1/folders/{id}` move entries here;
//! `GET /v1/trash` lists them, `POST /v1/trash/{id}/restore` puts one back, `DELETE
//! /v1/trash/{id}` and `DELETE /v1/trash` delete for good (the leader also purges what is
//! older than `trash.retention_secs`). See `wharf_raft::model::trash`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_proto::{Entry, FolderRecord};
use wharf_raft::model::folders::EntryKind;
use wharf_raft::model::trash::TrashEntry;
use wharf_raft::model::Command;
use wharf_raft::Outcome;

use super::files::file_record;
use super::{page_bounds, parse_id, query_limit, split_page, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::rfc3339;

#[derive(Debug, Serialize)]
pub(super) struct TrashRecord {
    id: String,
    /// `file` or `folder`.
    kind: &'static str,
    name: String,
    /// The folder it was in (`null`: the root); a restore puts it back there.
    parent: Option<String>,
    /// A file's size (its current version's).
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// RFC 3339.
    trashed_at: String,
    /// When the leader purges it (RFC 3339).
    purge_at: String,
}

#[derive(Debug, Serialize)]
pub(super) struct TrashList {
    entries: Vec<TrashRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TrashQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/trash?limit=&cursor=`: the caller's trashed entries (each file or folder deleted
/// by itself; what was under a folder comes back with it), in id order.
pub(super) async fn list_trash(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<TrashQuery>,
) -> Result<Json<TrashList>> {
    let limit = query_limit(q.limit.as_deref());
    let cursor = page_bounds(limit, q.cursor.as_deref())?;
    let applied = s.meta.linearizable().await?;
    let (page, next_cursor) = split_page(
        applied.trash_page(&c.sub, cursor.as_deref(), limit + 1),
        limit,
        |e| e.id.clone(),
    );
    let retention_ms = s.trash_retention_secs.saturating_mul(1000);
    let entries = page
        .into_iter()
        .map(|e: TrashEntry| TrashRecord {
            size: match e.kind {
                EntryKind::File => applied.file(&c.sub, &e.id).map(|f| f.size),
                EntryKind::Folder => None,
            },
            kind: match e.kind {
                EntryKind::File => "file",
                EntryKind::Folder => "folder",
            },
            purge_at: rfc3339(e.trashed_at.saturating_add(retention_ms)),
            trashed_at: rfc3339(e.trashed_at),
            id: e.id,
            name: e.name,
            parent: e.parent,
        })
        .collect();
    Ok(Json(TrashList {
        entries,
        next_cursor,
    }))
}

/// `POST /v1/trash/{id}/restore`: back to its folder (the root when that folder is gone or in
/// the trash), renamed "name (1).ext" if its name was taken meanwhile; 200 with the entry as a
/// folder listing has it (`{"kind": "file", …}` or `{"kind": "folder", …}`).
pub(super) async fn restore(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<Entry>> {
    let id = parse_id(&id)?;
    let out = s
        .quota
        .propose(Command::RestoreFromTrash { owner: c.sub, id })
        .await?;
    let applied = s.meta.local();
    match out {
        Outcome::File(f) => Ok(Json(Entry::File(Box::new(file_record(&applied, &f))))),
        Outcome::Folder(f) => Ok(Json(Entry::Folder(FolderRecord {
            id: f.id,
            name: f.name,
            parent: f.parent,
            created_at: Some(rfc3339(f.created_at)),
        }))),
        o => Err(Error::Internal(format!("unexpected {o:?}"))),
    }
}

/// `DELETE /v1/trash/{id}`: deleted for good (a folder with everything under it); 204.
pub(super) async fn purge(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    s.quota.purge(c.sub, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/trash`: empties the caller's trash; 204.
pub(super) async fn empty(State(s): State<AppState>, Caller(c): Caller) -> Result<StatusCode> {
    loop {
        let page = s.meta.linearizable().await?.trash_page(&c.sub, None, 100);
        if page.is_empty() {
            return Ok(StatusCode::NO_CONTENT);
        }
        for e in page {
            match s.quota.purge(c.sub.clone(), e.id).await {
                // Restored or purged by another request meanwhile.
                Ok(()) | Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
