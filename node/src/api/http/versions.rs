//! `/v1/files/{id}/versions` and `PUT /v1/files/{id}/content`: a file's versions, a new one
//! sent in one request, and an earlier one restored (as a new version, as Drive does).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::files::{file_record, store_small_file, SmallFileQuery};
use super::shares::file_for;
use super::{parse_id, AppState, Caller};
use crate::actors::uploads::Editor;
use crate::error::{Error, Result};
use crate::meta::rfc3339;
use wharf_proto::FileRecord;
use wharf_raft::model::shares::Role;

#[derive(Debug, Serialize)]
pub(super) struct VersionRecord {
    id: String,
    size: u64,
    blake3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mime: Option<String>,
    /// RFC 3339: when this version was made.
    created_at: String,
    /// The version the file serves now.
    current: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct VersionList {
    /// Newest (the current one) first.
    versions: Vec<VersionRecord>,
}

/// `GET /v1/files/{id}/versions`
pub(super) async fn list_versions(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<VersionList>> {
    let id = parse_id(&id)?;
    let applied = s.meta.linearizable().await?;
    let f = file_for(&applied, &c.sub, &id, Role::Viewer)?;
    let versions = applied.versions(&f.owner, &id).ok_or(Error::NotFound)?;
    Ok(Json(VersionList {
        versions: versions
            .into_iter()
            .enumerate()
            .map(|(i, v)| VersionRecord {
                id: v.id,
                size: v.size,
                blake3: v.blake3,
                mime: v.mime,
                created_at: rfc3339(v.created_at),
                current: i == 0,
            })
            .collect(),
    }))
}

/// `POST /v1/files/{id}/versions/{version}/restore`: 200 with the file, now serving a new
/// version with that version's content.
pub(super) async fn restore_version(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    let version = parse_id(&version)?;
    let f = file_for(&s.meta.linearizable().await?, &c.sub, &id, Role::Editor)?;
    let actor = (f.owner != c.sub).then(|| c.sub.clone());
    let f = s.quota.restore_version(f.owner, id, version, actor).await?;
    Ok(Json(file_record(&s.meta.local(), &f)))
}

/// `PUT /v1/files/{id}/content?[mime=…&blake3=…&idempotency_key=…]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct ContentQuery {
    mime: Option<String>,
    blake3: Option<String>,
    idempotency_key: Option<String>,
}

/// `PUT /v1/files/{id}/content`: the body is the file's new content (a new version, up to
/// `upload.single_request_max`; larger ones are uploads with `on_conflict=replace`). It
/// replaces the file where it is now, under its name; 200 with the file.
pub(super) async fn put_content(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    Path(id): Path<String>,
    query: std::result::Result<Query<ContentQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let out = async {
        let Caller(c) = caller?;
        let Query(q) = query.map_err(|e| Error::bad_request("invalid_request", e.body_text()))?;
        let id = parse_id(&id)?;
        let applied = s.meta.linearizable().await?;
        let f = file_for(&applied, &c.sub, &id, Role::Editor)?;
        let folder = applied.file_folder(&f.owner, &id);
        // An editor's new version is the owner's (their folder, their quota).
        let editor = (f.owner != c.sub).then(|| {
            let e = Editor {
                actor: c.sub.clone(),
                file_id: id.clone(),
            };
            // The owner's tier: theirs is the record the store updates.
            let tier = applied.user(&f.owner).map_or(c.tier, |u| u.tier);
            (f.owner.clone(), tier, e)
        });
        let query = SmallFileQuery {
            name: Some(f.name.clone()),
            mime: q.mime.or(f.mime),
            blake3: q.blake3,
            idempotency_key: q.idempotency_key,
            folder: Some(folder.unwrap_or_else(|| "root".into())),
            on_conflict: Some("replace".into()),
        };
        store_small_file(&s, Ok(Caller(c)), Ok(query), &headers, body, editor).await
    }
    .await;
    match out {
        Ok(f) => Json(file_record(&s.meta.local(), &f)).into_response(),
        Err(e) => {
            // The body may be unread: the connection cannot carry another request.
            let mut resp = e.into_response();
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
            resp
        }
    }
}
