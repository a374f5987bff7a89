//! The HTTP front end (axum): parses, authenticates and calls actor handles; nothing else.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use futures::TryStreamExt;
use serde::Deserialize;
use wharf_proto::{
    CreateUpload, FileList, FileRecord, SetQuota, UpdateFile, UploadCreated, UploadStatus, Usage,
};
use wharf_raft::model::{self, Command, File, Tier, Upload};
use wharf_raft::Outcome;

use crate::auth::{self, Claims, Keys};
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339, Metadata};
use crate::objstore::ObjectStore;
use crate::quota::QuotaHandle;
use crate::uploads::{ChunkPut, UploadsHandle};
use wharf_proto::hash::parse_hex32;

#[derive(Clone)]
pub struct AppState {
    pub keys: Keys,
    pub meta: Metadata,
    pub quota: QuotaHandle,
    pub uploads: UploadsHandle,
    pub store: Arc<dyn ObjectStore>,
    pub presign_ttl_secs: u64,
    pub scan_policy: crate::scanner::Policy,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/uploads", post(create_upload))
        .route("/v1/uploads/{id}", get(upload_status).delete(abort_upload))
        .route("/v1/uploads/{id}/chunks/{index}", put(put_chunk))
        .route("/v1/uploads/{id}/complete", post(complete_upload))
        .route("/v1/files", get(list_files))
        .route(
            "/v1/files/{id}",
            get(get_file).delete(delete_file).patch(update_file),
        )
        .route("/v1/files/{id}/content", get(download))
        .route("/v1/files/{id}/download-url", get(download_url))
        .route("/v1/usage", get(usage))
        .route("/v1/admin/users/{user}/quota", put(set_quota))
        .route("/v1/admin/rescan", post(rescan))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/nodes/{id}/promote", post(promote_node))
        .route("/v1/cluster/nodes/{id}", axum::routing::delete(remove_node))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async {
            Error::BadRequest {
                code: "method_not_allowed",
                message: "this method is not allowed on this path".into(),
            }
        })
        .with_state(state)
}

/// The authenticated caller.
pub struct Caller(pub Claims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        state.keys.verify_header(header).map(Caller)
    }
}

/// JSON bodies whose rejections are wharf errors.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(Error::bad_request(
                match e {
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    _ => "invalid_request",
                },
                e.body_text(),
            )),
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> Result<&'static str> {
    drop(s.meta.linearizable().await?);
    Ok("ready")
}

fn validate_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if bad {
        return Err(Error::bad_request(
            "invalid_name",
            "a file name is 1 to 255 bytes, not . or .., with no / \\ or control characters",
        ));
    }
    Ok(())
}

fn validate_token_field(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "invalid_request",
            format!("{field} must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

async fn create_upload(
    State(s): State<AppState>,
    Caller(c): Caller,
    headers: HeaderMap,
    ApiJson(mut req): ApiJson<CreateUpload>,
) -> Result<impl IntoResponse> {
    if req.idempotency_key.is_none() {
        req.idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    validate_create(&req)?;
    let up = s.quota.create(c.sub, c.tier, req).await?;
    let body = UploadCreated {
        upload_id: up.id.clone(),
        chunk_size: up.chunk_size,
        chunk_count: up.chunk_count(),
        expires_at: rfc3339(up.expires_at),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/uploads/{}", up.id))],
        Json(body),
    ))
}

/// Checks a create request's fields (whatever transport brought it).
pub(crate) fn validate_create(req: &CreateUpload) -> Result<()> {
    validate_name(&req.name)?;
    if let Some(h) = &req.blake3 {
        if parse_hex32(h).is_none() {
            return Err(Error::bad_request(
                "invalid_checksum",
                "blake3 must be 64 hexadecimal characters",
            ));
        }
    }
    if let Some(k) = &req.idempotency_key {
        validate_token_field("idempotency_key", k, 255)?;
    }
    if let Some(m) = &req.mime {
        validate_token_field("mime", m, 255)?;
    }
    Ok(())
}

/// Ids in paths are server-made UUIDs; anything else cannot name a record (and never reaches a
/// file system path).
pub(crate) fn parse_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Error::NotFound)
}

pub(crate) fn upload_status_body(up: &Upload) -> UploadStatus {
    let (received, missing) = match up.state {
        model::UploadState::Uploading => (up.received(), up.missing()),
        _ => (Vec::new(), Vec::new()),
    };
    UploadStatus {
        upload_id: up.id.clone(),
        name: up.name.clone(),
        size: up.size,
        chunk_size: up.chunk_size,
        chunk_count: up.chunk_count(),
        state: up.state.as_str().to_string(),
        received,
        missing,
        expires_at: rfc3339(up.expires_at),
        file_id: up.file_id.clone(),
    }
}

async fn upload_status(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadStatus>> {
    let id = parse_id(&id)?;
    let applied = s.meta.linearizable().await?;
    let up = applied.state.upload(&c.sub, &id).ok_or(Error::NotFound)?;
    Ok(Json(upload_status_body(up)))
}

async fn abort_upload(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    s.uploads.abort(c.sub, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `Content-Digest: sha-256=:BASE64:` (RFC 9530); other algorithms are ignored.
fn content_digest_sha256(headers: &HeaderMap) -> Result<Option<[u8; 32]>> {
    let Some(v) = headers.get("content-digest") else {
        return Ok(None);
    };
    let bad = || {
        Error::bad_request(
            "invalid_digest",
            "Content-Digest must look like sha-256=:BASE64:",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    for item in v.split(',') {
        let Some((alg, value)) = item.trim().split_once('=') else {
            return Err(bad());
        };
        if !alg.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let b64 = value
            .trim()
            .strip_prefix(':')
            .and_then(|x| x.strip_suffix(':'))
            .ok_or_else(bad)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad())?;
        return <[u8; 32]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| bad());
    }
    Ok(None)
}

async fn put_chunk(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    Path((id, index)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive_chunk(s, caller, id, index, headers, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            // The body may be unread: the connection cannot carry another request.
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

async fn receive_chunk(
    s: AppState,
    caller: std::result::Result<Caller, Error>,
    id: String,
    index: String,
    headers: HeaderMap,
    body: Body,
) -> Result<()> {
    let Caller(c) = caller?;
    let id = parse_id(&id)?;
    let index: u32 = index.parse().map_err(|_| {
        Error::bad_request(
            "chunk_index_out_of_range",
            "the chunk index must be a non-negative integer",
        )
    })?;
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::bad_request("invalid_request", "bad Content-Length"))?,
        ),
        None => None,
    };
    let blake3 = match headers.get("x-wharf-blake3") {
        Some(v) => Some(v.to_str().ok().and_then(parse_hex32).ok_or_else(|| {
            Error::bad_request(
                "invalid_checksum",
                "x-wharf-blake3 must be 64 hexadecimal characters",
            )
        })?),
        None => None,
    };
    let sha256 = content_digest_sha256(&headers)?;
    let body = body.into_data_stream().map_err(std::io::Error::other);
    s.uploads
        .put_chunk(ChunkPut {
            owner: c.sub,
            upload_id: id,
            index,
            content_length,
            blake3,
            sha256,
            body: Box::pin(body),
        })
        .await
}

fn blob_scan(state: &model::State, f: &File) -> model::ScanState {
    state
        .blobs
        .get(&model::key(&f.owner, &f.blake3))
        .map(|b| b.scan.clone())
        .unwrap_or(model::ScanState::Unscanned)
}

pub(crate) fn file_record(state: &model::State, f: &File) -> FileRecord {
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
    }
}

/// Whether a file may be served now, under the scan policy: infected files never are; under
/// `required`, only clean ones.
fn may_serve(policy: crate::scanner::Policy, scan: &model::ScanState) -> Result<()> {
    use crate::scanner::Policy;
    match scan {
        model::ScanState::Infected { signature, .. } => Err(Error::Infected(format!(
            "the file is infected ({signature}) and quarantined"
        ))),
        model::ScanState::Clean { .. } => Ok(()),
        _ if policy != Policy::Required => Ok(()),
        model::ScanState::Error { message, .. } => Err(Error::conflict(
            "scan_failed",
            format!("the file could not be scanned ({message}); an admin can rescan it"),
        )),
        _ => Err(Error::conflict(
            "scan_pending",
            "the file is waiting for its virus scan; retry shortly",
        )),
    }
}

async fn complete_upload(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    let f = s.uploads.complete(c.sub, id).await?;
    Ok(Json(file_record(&s.meta.local().state, &f)))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    /// `stale` lets any node answer from what it has applied; the default is linearizable.
    consistency: Option<String>,
}

async fn list_files(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<FileList>> {
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l.parse::<usize>().unwrap_or(0),
    };
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
    if !(1..=1000).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_request",
            "limit must be 1 to 1000",
        ));
    }
    let cursor = cursor.map(parse_id).transpose().map_err(|_| {
        Error::bad_request(
            "invalid_cursor",
            "cursor must be a next_cursor from a listing",
        )
    })?;
    let applied = if stale {
        s.meta.local()
    } else {
        s.meta.linearizable().await?
    };
    // One more than asked tells whether another page follows.
    let mut page = applied
        .state
        .files_page(&c.sub, cursor.as_deref(), limit + 1);
    let next_cursor = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|f| f.id.clone())
    } else {
        None
    };
    Ok(FileList {
        files: page
            .into_iter()
            .map(|f| file_record(&applied.state, f))
            .collect(),
        next_cursor,
    })
}

async fn get_file(
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
    let f = applied.state.file(&c.sub, &id).ok_or(Error::NotFound)?;
    Ok(Json(file_record(&applied.state, f)))
}

/// The caller's file `id` (a linearizable read), once the scan policy lets it be served.
pub(crate) async fn servable_file(
    s: &AppState,
    c: &Claims,
    id: &str,
) -> Result<(File, model::ScanState)> {
    let id = parse_id(id)?;
    let (f, scan) = {
        let applied = s.meta.linearizable().await?;
        let f = applied
            .state
            .file(&c.sub, &id)
            .cloned()
            .ok_or(Error::NotFound)?;
        let scan = blob_scan(&applied.state, &f);
        (f, scan)
    };
    may_serve(s.scan_policy, &scan)?;
    Ok((f, scan))
}

async fn delete_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = parse_id(&id)?;
    s.quota
        .propose(Command::DeleteFile {
            owner: c.sub,
            file_id: id,
            now: now_ms(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A single `bytes=` range, resolved against `size` to `(start, end_inclusive)`. Malformed or
/// multi-range headers are ignored (RFC 9110 allows it) and the whole file is sent.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>> {
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
fn content_disposition(name: &str) -> String {
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

async fn download(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let (f, scan) = servable_file(&s, &c, &id).await?;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => parse_range(v, f.size)?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, f.size),
    };
    let stream = s.store.get(&f.object_key, start, len).await?;
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

async fn download_url(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let (f, _) = servable_file(&s, &c, &id).await?;
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
    Ok(Json(serde_json::json!({
        "url": url,
        "expires_at": rfc3339(now_ms() + ttl.as_millis() as u64),
    })))
}

fn usage_body(u: Option<&model::User>, user: &str, default_quota: u64) -> Usage {
    match u {
        Some(u) => Usage {
            user: u.id.clone(),
            used: u.used,
            reserved: u.reserved,
            quota: u.quota,
        },
        None => Usage {
            user: user.to_string(),
            used: 0,
            reserved: 0,
            quota: default_quota,
        },
    }
}

async fn usage(State(s): State<AppState>, Caller(c): Caller) -> Result<Json<Usage>> {
    let default_quota = s.quota.limits(c.tier).quota;
    let applied = s.meta.linearizable().await?;
    let user = applied.state.users.get(&c.sub);
    let mut body = usage_body(user, &c.sub, default_quota);
    if let Some(u) = user {
        body.quota = u.quota_under(&s.quota.limits(c.tier));
    }
    Ok(Json(body))
}

fn require_admin(c: &Claims) -> Result<()> {
    if c.tier != Tier::Admin {
        return Err(Error::Forbidden("an admin token is required".into()));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RescanRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    file: Option<String>,
}

/// Queues blobs for another scan (new signatures): one file, or all clean/error/unscanned.
async fn rescan(
    State(s): State<AppState>,
    Caller(c): Caller,
    ApiJson(req): ApiJson<RescanRequest>,
) -> Result<Json<serde_json::Value>> {
    require_admin(&c)?;
    let file = match (req.all, req.file) {
        (true, None) => None,
        (false, Some(f)) => Some(parse_id(&f)?),
        _ => {
            return Err(Error::bad_request(
                "invalid_request",
                "give either \"all\": true or \"file\": ID",
            ))
        }
    };
    match s.quota.propose(Command::Rescan { file }).await? {
        Outcome::Requeued(n) => Ok(Json(serde_json::json!({ "requeued": n }))),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

async fn cluster_status(
    State(s): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<wharf_cluster::ClusterStatus>> {
    require_admin(&c)?;
    Ok(Json(s.meta.cluster_status().await))
}

fn parse_node_id(id: &str) -> Result<u64> {
    id.parse().ok().filter(|n| *n > 0).ok_or(Error::NotFound)
}

async fn promote_node(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    s.meta.promote(parse_node_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_node(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    s.meta.remove(parse_node_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renames a file (the name is checked like a new upload's); answers the updated record.
async fn update_file(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateFile>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    validate_name(&req.name)?;
    match s
        .quota
        .propose(Command::RenameFile {
            owner: c.sub,
            file_id: id,
            name: req.name,
        })
        .await?
    {
        Outcome::File(f) => Ok(Json(file_record(&s.meta.local().state, &f))),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}

async fn set_quota(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<SetQuota>,
) -> Result<Json<Usage>> {
    require_admin(&c)?;
    auth::validate_user_id(&user)?;
    match s
        .quota
        .propose(Command::SetQuota {
            user: user.clone(),
            quota: req.quota,
        })
        .await?
    {
        Outcome::User(u) => Ok(Json(usage_body(Some(&u), &user, u.quota))),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
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
    fn names_are_names_not_paths() {
        assert!(validate_name("report 2026.pdf").is_ok());
        assert!(validate_name("…ünïcode ✓").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "a\\b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_digest_parses_sha256_and_refuses_garbage() {
        let mut h = HeaderMap::new();
        let digest = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        h.insert(
            "content-digest",
            HeaderValue::from_str(&format!("sha-512=:AAAA:, sha-256=:{digest}:")).unwrap(),
        );
        assert_eq!(content_digest_sha256(&h).unwrap(), Some([7u8; 32]));
        h.insert("content-digest", HeaderValue::from_static("sha-256=nope"));
        assert!(content_digest_sha256(&h).is_err());
    }

    #[test]
    fn content_disposition_escapes_everything_unsafe() {
        assert_eq!(
            content_disposition("a b\"c.txt"),
            "attachment; filename*=UTF-8''a%20b%22c.txt"
        );
    }
}
