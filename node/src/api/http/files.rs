//! The `/v1/files` routes: list, get, rename and delete files, download them (ranges) or get a
//! presigned download URL (clean files only); and a file's record and whether the scan policy
//! lets it be served.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wharf_proto::{FileList, FileRecord};
use wharf_raft::model::folders::{EntryKind, OnConflict};
use wharf_raft::model::shares::Role;
use wharf_raft::model::{self, File, Tier};
use wharf_raft::StateView;

use crate::actors::scanner;
use crate::actors::uploads::{Editor, SmallFile};
use crate::api::http::uploads::{validate_create, BodyHeaders};
use crate::api::http::{
    idle_limited, page_bounds, parse_id, query_limit, split_page, AppState, Caller,
};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339};

pub(crate) fn blob_scan(state: &StateView, f: &File) -> model::ScanState {
    state
        .blob(&model::blob_id(&f.owner, &f.blake3))
        .map(|b| b.scan)
        .unwrap_or(model::ScanState::Unscanned)
}

pub(crate) fn file_record(state: &StateView, f: &File) -> FileRecord {
    let scan = blob_scan(state, f);
    FileRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        size: f.size,
        blake3: f.blake3.clone(),
        mime: f.mime.clone(),
        created_at: rfc3339(f.created_at),
        scan: scan.as_str().into(),
        signature: match &scan {
            model::ScanState::Infected { signature, .. } => Some(signature.clone()),
            model::ScanState::Error { message, .. } => Some(message.clone()),
            _ => None,
        },
        scan_node: match &scan {
            model::ScanState::Scanning { holder, .. } => Some(*holder),
            _ => None,
        },
        deduplicated: false,
        folder: state.file_folder(&f.owner, &f.id),
        version: Some(f.upload_id.clone()),
        public_url: state
            .public_link(&f.owner, &f.id)
            .map(|l| format!("/s/{}", l.token)),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    /// `stale` lets any node answer from what it has applied; the default is linearizable.
    consistency: Option<String>,
}

pub(super) async fn list_files(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<FileList>> {
    let limit = query_limit(q.limit.as_deref());
    let stale = match q.consistency.as_deref() {
        None | Some("linearizable") => false,
        Some("stale") => true,
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_request",
                "consistency is linearizable or stale",
            ))
        }
    };
    Ok(Json(
        list_page(&s, &c, q.cursor.as_deref(), limit, stale).await?,
    ))
}

/// One page of the caller's files, after `cursor`; `stale` answers from this node's state.
pub(crate) async fn list_page(
    s: &AppState,
    c: &Claims,
    cursor: Option<&str>,
    limit: usize,
    stale: bool,
) -> Result<FileList> {
    let cursor = page_bounds(limit, cursor)?;
    let applied = if stale {
        s.meta.local()
    } else {
        s.meta.linearizable().await?
    };
    let (page, next_cursor) = split_page(
        applied.live_files_page(&c.sub, cursor.as_deref(), limit + 1),
        limit,
        |f| f.id.clone(),
    );
    Ok(FileList {
        files: page
            .into_iter()
            .map(|f| file_record(&applied, &f))
            .collect(),
        next_cursor,
    })
}

pub(super) async fn get_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    let applied = if crate::planted::active(crate::planted::Bug::StaleReads) {
        // Planted bug: a decisive read answered from whatever this node has applied.
        s.meta.local()
    } else {
        s.meta.linearizable().await?
    };
    let f = super::shares::file_for(&applied, &c.sub, &id, Role::Viewer)?;
    Ok(Json(file_record(&applied, &f)))
}

/// The caller's file `id` (a linearizable read), its scan state and the scan policy's mode
/// at that read.
async fn file_and_scan(
    s: &AppState,
    c: &Claims,
    id: &str,
) -> Result<(File, model::ScanState, scanner::Mode)> {
    let id = parse_id(id)?;
    let applied = s.meta.linearizable().await?;
    let f = super::shares::file_for(&applied, &c.sub, &id, Role::Viewer)?;
    let scan = blob_scan(&applied, &f);
    let mode = s.scan_policy.mode(applied.scanner_found());
    Ok((f, scan, mode))
}

/// The caller's file `id` (a linearizable read), once the scan policy lets it be served.
pub(crate) async fn servable_file(
    s: &AppState,
    c: &Claims,
    id: &str,
) -> Result<(File, model::ScanState)> {
    let (f, scan, mode) = file_and_scan(s, c, id).await?;
    scanner::may_serve(mode, &scan)?;
    Ok((f, scan))
}

pub(super) async fn delete_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    // Only its owner deletes a file: a user it is shared with is told so.
    let applied = s.meta.local();
    if let Some(owner) = applied.file_owner(&id).filter(|o| *o != c.sub) {
        if applied.file_role(&owner, &id, &c.sub).is_some() {
            return Err(Error::Forbidden(
                "only the file's owner deletes it; ask them, or leave it".into(),
            ));
        }
    }
    // To the trash: `DELETE /v1/trash/{id}` deletes it for good.
    s.quota.trash(c.sub, id, EntryKind::File).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A single `bytes=` range, resolved against `size` to `(start, end_inclusive)`. Malformed or
/// multi-range headers are ignored (RFC 9110 allows it) and the whole file is sent.
pub(crate) fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), None) if b.is_empty() => (start, size.saturating_sub(1)),
        (Some(start), Some(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
        (None, Some(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return Err(Error::RangeNotSatisfiable { size });
            }
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= size {
        return Err(Error::RangeNotSatisfiable { size });
    }
    Ok(Some(range))
}

/// `filename*=UTF-8''…` (RFC 6266 / 8187) so any name is safe in the header.
pub(crate) fn content_disposition(name: &str) -> String {
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{enc}")
}

pub(super) async fn download(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let (f, scan) = servable_file(&s, &c, &id).await?;
    let resp = serve(&s, &f, &scan, &headers).await?;
    s.downloads.record("download.api", &f.owner, &f.id).await;
    Ok(resp)
}

/// The file's bytes (the `Range` asked for, or all of them) with their headers: what a file's
/// owner and a share link's holder are both sent.
pub(crate) async fn serve(
    s: &AppState,
    f: &File,
    scan: &model::ScanState,
    headers: &HeaderMap,
) -> Result<Response> {
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => parse_range(v, f.size)?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, f.size),
    };
    let stream = s.store.get(&f.object_key, start, len).await?;
    // Counted as sent, so that a download cut short counts what went out.
    let stream = futures::StreamExt::inspect(stream, |frame| {
        if let Ok(b) = frame {
            metrics::counter!("wharf_download_bytes_total").increment(b.len() as u64);
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let hv = |s: String| HeaderValue::from_str(&s).map_err(|e| Error::Internal(e.to_string()));
    h.insert(header::CONTENT_LENGTH, hv(len.to_string())?);
    h.insert(header::ETAG, hv(format!("\"{}\"", f.blake3))?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        hv(f.mime
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()))?,
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        hv(content_disposition(&f.name))?,
    );
    h.insert("x-wharf-scan", HeaderValue::from_static(scan.as_str()));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(format!("bytes {}-{}/{}", start, start + len - 1, f.size))?,
        );
    }
    Ok(resp)
}

pub(super) async fn download_url(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    // Only a clean file gets a URL (unless scanning is off): a URL cannot be taken back, and
    // one handed out before the verdict would serve the file whatever the verdict.
    let (f, scan, mode) = file_and_scan(&s, &c, &id).await?;
    scanner::may_presign(mode, &scan)?;
    let ttl = std::time::Duration::from_secs(s.presign_ttl_secs);
    let url = s
        .store
        .presign_get(&f.object_key, ttl, &content_disposition(&f.name))
        .await?
        .ok_or_else(|| {
            Error::NotSupported(
                "the local object store cannot presign URLs; use /content or S3".into(),
            )
        })?;
    s.downloads.record("download.url", &f.owner, &f.id).await;
    Ok(Json(serde_json::json!({
        "url": url,
        "expires_at": rfc3339(now_ms() + ttl.as_millis() as u64),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_or_are_refused() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some((0, 99)));
        assert_eq!(parse_range("bytes=5-1", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=0-0", 0).is_err());
    }

    #[test]
    fn content_disposition_escapes_everything_unsafe() {
        assert_eq!(
            content_disposition("a b\"c.txt"),
            "attachment; filename*=UTF-8''a%20b%22c.txt"
        );
    }
}

/// `POST /v1/files?name=…[&mime=…&blake3=…&idempotency_key=…]`: query of a one-request upload.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SmallFileQuery {
    pub name: Option<String>,
    pub mime: Option<String>,
    pub blake3: Option<String>,
    pub idempotency_key: Option<String>,
    /// A folder id (absent: the root).
    pub folder: Option<String>,
    /// `fail`, `rename` or `replace`.
    pub on_conflict: Option<String>,
}

/// A whole small file in one request: the body is the file. 201 with the file record.
pub(super) async fn upload_file(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    query: std::result::Result<Query<SmallFileQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| Error::bad_request("invalid_request", e.body_text()));
    match store_small_file(&s, caller, query, &headers, body, None).await {
        Ok(f) => {
            let location = format!("/v1/files/{}", f.id);
            let record = file_record(&s.meta.local(), &f);
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(record),
            )
                .into_response()
        }
        Err(e) => {
            // The body may be unread: the connection cannot carry another request.
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// `editor`: the caller sends a new version of another user's file: the owner's namespace,
/// tier and quota are used (an editor's tier never changes the owner's record), and the state
/// machine checks the caller's role.
pub(super) async fn store_small_file(
    s: &AppState,
    caller: std::result::Result<Caller, Error>,
    query: Result<SmallFileQuery>,
    headers: &HeaderMap,
    body: Body,
    editor: Option<(String, Tier, Editor)>,
) -> Result<File> {
    let Caller(c) = caller?;
    let q = query?;
    let (owner, tier, editor) = match editor {
        Some((owner, tier, e)) => (owner, tier, Some(e)),
        None => (c.sub.clone(), c.tier, None),
    };
    let name = q.name.ok_or_else(|| {
        Error::bad_request(
            "invalid_request",
            "the file's name goes in the query: ?name=…",
        )
    })?;
    let idempotency_key = q.idempotency_key.or_else(|| {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let declared = wharf_proto::CreateUpload {
        name,
        size: 0,
        blake3: q.blake3,
        mime: q.mime,
        idempotency_key,
        folder: q.folder,
        on_conflict: q.on_conflict,
    };
    validate_create(&declared)?;
    let placement = super::folders::placement(
        declared.folder.as_deref(),
        declared.on_conflict.as_deref(),
        s.quota.versions_keep(),
    )?;
    if let Some(p) = &placement {
        // Refused before the body is read when the applied state already shows it.
        let state = s.meta.local();
        if let Some(f) = &p.folder {
            state.live_folder(&owner, f).ok_or(Error::NotFound)?;
        }
        let taken = state.entry_named(&owner, p.folder.as_deref(), &declared.name);
        if matches!(
            (p.on_conflict, taken),
            (OnConflict::Fail, Some(_))
                | (OnConflict::Replace { .. }, Some((EntryKind::Folder, _)))
        ) {
            return Err(model::ModelError::NameTaken {
                name: declared.name,
            }
            .into());
        }
    }
    let h = BodyHeaders::parse(headers)?;
    let from_query = declared
        .blake3
        .as_deref()
        .and_then(wharf_proto::hash::parse_hex32);
    if let (Some(a), Some(b)) = (from_query, h.blake3) {
        if a != b {
            return Err(Error::bad_request(
                "invalid_checksum",
                "the blake3 query parameter and x-wharf-blake3 disagree",
            ));
        }
    }
    s.rate
        .user_create(&c.sub, c.tier)
        .map_err(Error::RateLimited)?;
    // Without a Content-Length, the most a one-request body may bring.
    let announced = h.content_length.unwrap_or(s.single_request_max);
    s.rate
        .user_bytes(&c.sub, c.tier, announced)
        .map_err(Error::RateLimited)?;
    s.uploads
        .store_file(SmallFile {
            owner,
            tier,
            name: declared.name,
            mime: declared.mime,
            blake3: from_query.or(h.blake3),
            sha256: h.sha256,
            idempotency_key: declared.idempotency_key,
            placement,
            content_length: h.content_length,
            body: idle_limited(body, std::time::Duration::from_secs(s.http.body_idle_secs)),
            editor,
        })
        .await
}
