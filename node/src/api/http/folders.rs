//! Folders: `POST /v1/folders` makes one; `GET /v1/folders/{id}` (`root`: the root) gives it
//! with a page of its entries, by name or by date; `PATCH /v1/folders/{id}` and
//! `PATCH /v1/files/{id}` rename and move; `DELETE /v1/folders/{id}` moves a folder, with all
//! under it, to the trash.
//! Every read is linearizable; names are unique within a folder (the state machine decides,
//! see `wharf_raft::model::folders`).

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wharf_proto::{CreateFolder, Entry, FileRecord, FolderListing, FolderRecord, UpdateEntry};
use wharf_raft::model::folders::{EntryKind, Folder, ROOT};
use wharf_raft::model::Command;
use wharf_raft::{Outcome, StateView};

pub(crate) use crate::actors::quota::{parse_folder, parse_on_conflict, placement};
use crate::api::http::files::file_record;
use crate::api::http::{parse_id, validate_name, ApiJson, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339};

fn folder_record(f: &Folder) -> FolderRecord {
    FolderRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        parent: f.parent.clone(),
        created_at: Some(rfc3339(f.created_at)),
    }
}

fn root_record() -> FolderRecord {
    FolderRecord {
        id: ROOT.into(),
        name: String::new(),
        parent: None,
        created_at: None,
    }
}

fn unexpected(o: Outcome) -> Error {
    Error::Internal(format!("unexpected {o:?}"))
}

pub(super) async fn create_folder(
    State(s): State<AppState>,
    Caller(c): Caller,
    ApiJson(req): ApiJson<CreateFolder>,
) -> Result<Response> {
    validate_name(&req.name)?;
    let parent = parse_folder(req.parent.as_deref())?;
    let on_conflict = parse_on_conflict(req.on_conflict.as_deref(), None)?;
    let out = s
        .quota
        .propose(Command::CreateFolder {
            owner: c.sub,
            folder_id: uuid::Uuid::now_v7().to_string(),
            name: req.name,
            parent,
            on_conflict,
            now: now_ms(),
        })
        .await?;
    let Outcome::Folder(f) = out else {
        return Err(unexpected(out));
    };
    let location = format!("/v1/folders/{}", f.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(folder_record(&f)),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListingQuery {
    limit: Option<String>,
    cursor: Option<String>,
    sort: Option<String>,
    /// In a folder link's listing: a folder under the shared one.
    pub(super) folder: Option<String>,
}

impl ListingQuery {
    /// A listing's query from another transport (QUIC).
    pub(crate) fn new(limit: Option<String>, cursor: Option<String>, sort: Option<String>) -> Self {
        Self {
            limit,
            cursor,
            sort,
            folder: None,
        }
    }
}

pub(crate) fn page(q: &ListingQuery) -> Result<Page> {
    let limit = super::check_limit(super::query_limit(q.limit.as_deref()))?;
    let by_name = match q.sort.as_deref() {
        None | Some("name") => true,
        Some("date") => false,
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_request",
                "sort is name or date",
            ))
        }
    };
    let cursor = q.cursor.as_deref().map(super::decode_cursor).transpose()?;
    Ok(Page {
        by_name,
        cursor,
        limit,
    })
}

pub(super) async fn get_folder(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    Query(q): Query<ListingQuery>,
) -> Result<Json<FolderListing>> {
    let folder = parse_folder(Some(&id))?;
    let Page {
        by_name,
        cursor,
        limit,
    } = page(&q)?;
    let applied = s.meta.linearizable().await?;
    // Another user's folder, when it lies under one shared with the caller.
    let owner = match &folder {
        Some(id) => super::shares::folder_for(&applied, &c.sub, id)?.0,
        None => c.sub.clone(),
    };
    Ok(Json(listing(
        &applied,
        &owner,
        folder,
        by_name,
        cursor.as_deref(),
        limit,
    )?))
}

/// The query of a listing: `limit`, `sort`, `cursor` checked and decoded.
pub(crate) struct Page {
    pub by_name: bool,
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A page of `owner`'s folder `folder` (`None`: the root) from `applied`: 404 if it is not
/// one of theirs.
pub(crate) fn listing(
    applied: &StateView,
    owner: &str,
    folder: Option<String>,
    by_name: bool,
    cursor: Option<&str>,
    limit: usize,
) -> Result<FolderListing> {
    let record = match &folder {
        None => root_record(),
        Some(id) => folder_record(&applied.live_folder(owner, id).ok_or(Error::NotFound)?),
    };
    let page = applied.entries(owner, folder.as_deref(), by_name, cursor, limit);
    let entries = page
        .entries
        .iter()
        .filter_map(|(kind, id)| match kind {
            EntryKind::Folder => applied
                .folder(owner, id)
                .map(|f| Entry::Folder(folder_record(&f))),
            EntryKind::File => applied
                .file(owner, id)
                .map(|f| Entry::File(Box::new(file_record(applied, &f)))),
        })
        .collect();
    Ok(FolderListing {
        folder: record,
        entries,
        next_cursor: page.next.map(super::encode_cursor),
    })
}

/// The proposal of a rename and/or move of one of the caller's entries.
async fn move_entry(
    s: &AppState,
    owner: String,
    id: String,
    kind: EntryKind,
    req: UpdateEntry,
) -> Result<Outcome> {
    if req.name.is_none() && req.parent.is_none() {
        return Err(Error::bad_request(
            "invalid_request",
            "give a new name, a new parent, or both",
        ));
    }
    if let Some(n) = &req.name {
        validate_name(n)?;
    }
    let parent = req.parent.map(|p| parse_folder(p.as_deref())).transpose()?;
    s.quota
        .propose(Command::MoveEntry {
            owner,
            id,
            kind,
            name: req.name,
            parent,
        })
        .await
}

pub(super) async fn update_folder(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateEntry>,
) -> Result<Json<FolderRecord>> {
    if id == ROOT {
        return Err(Error::bad_request(
            "invalid_request",
            "the root folder has no name or parent to change",
        ));
    }
    let id = parse_id(&id)?;
    match move_entry(&s, c.sub, id, EntryKind::Folder, req).await? {
        Outcome::Folder(f) => Ok(Json(folder_record(&f))),
        other => Err(unexpected(other)),
    }
}

/// Renames and/or moves a file; answers the updated record.
pub(super) async fn update_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateEntry>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    let f = super::shares::file_for(
        &s.meta.linearizable().await?,
        &c.sub,
        &id,
        wharf_raft::model::shares::Role::Editor,
    )?;
    let mut req = req;
    if let Some(v) = req.visibility.take() {
        if f.owner != c.sub {
            return Err(Error::Forbidden(
                "only the file's owner makes it public or private".into(),
            ));
        }
        let public = match v.as_str() {
            "public" => true,
            "private" => false,
            _ => {
                return Err(Error::bad_request(
                    "invalid_request",
                    "visibility is public or private",
                ))
            }
        };
        s.quota
            .propose(Command::SetVisibility {
                owner: c.sub.clone(),
                file_id: id.clone(),
                public,
                token: super::links::new_token(),
                now: now_ms(),
            })
            .await?;
        if req.name.is_none() && req.parent.is_none() {
            let applied = s.meta.linearizable().await?;
            let f = applied.live_file(&c.sub, &id).ok_or(Error::NotFound)?;
            return Ok(Json(file_record(&applied, &f)));
        }
    }
    if f.owner != c.sub {
        // An editor renames; where the file lives is its owner's to decide.
        if req.parent.is_some() {
            return Err(Error::Forbidden(
                "a file shared with you is renamed, never moved: its folders are its owner's"
                    .into(),
            ));
        }
        let Some(name) = req.name else {
            return Err(Error::bad_request("invalid_request", "give a new name"));
        };
        validate_name(&name)?;
        let rename = Command::MoveEntry {
            owner: f.owner.clone(),
            id: id.clone(),
            kind: EntryKind::File,
            name: Some(name),
            parent: None,
        };
        let out = s
            .quota
            .propose(Command::AsUser {
                actor: c.sub,
                owner: f.owner,
                file: id,
                need: wharf_raft::model::shares::Role::Editor,
                cmd: Box::new(rename),
            })
            .await?;
        return match out {
            Outcome::File(f) => Ok(Json(file_record(&s.meta.linearizable().await?, &f))),
            other => Err(unexpected(other)),
        };
    }
    match move_entry(&s, c.sub, id, EntryKind::File, req).await? {
        Outcome::File(f) => Ok(Json(file_record(&s.meta.linearizable().await?, &f))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn delete_folder(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if id == ROOT {
        return Err(Error::bad_request(
            "invalid_request",
            "the root folder cannot be deleted",
        ));
    }
    // To the trash, with all under it.
    let folder_id = parse_id(&id)?;
    s.quota.trash(c.sub, folder_id, EntryKind::Folder).await?;
    Ok(StatusCode::NO_CONTENT)
}
