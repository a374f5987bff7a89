//! tus 1.0 at `/files/`: core (HEAD, PATCH, OPTIONS), creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, checksum-trailer, termination, concatenation
//! and concatenation-unfinished, on every node.
//!
//! A tus upload is a wharf upload session made by `CreateTusUpload`. A PATCH's bytes are cut
//! into the session's chunks on the node ([`patch`]); whole chunks are staged as any chunk is,
//! and the bytes of a chunk not yet whole go to the object store as its tail (`TusTail`), so the
//! next PATCH continues from `Upload-Offset` on any node. There is no lock: two PATCHes racing
//! for one offset both write the same chunk or tail, and Raft takes the first (offsets only
//! grow). The offset is derived from the committed state (`model::tus::offset`).
//!
//! An upload created with `Upload-Defer-Length: 1` is a session as large as the tier allows,
//! a bound until a PATCH carries `Upload-Length` (`DeclareTusLength`); until then each chunk
//! reserves its own bytes against the quota, and the declaration reserves the rest.

mod concat;
mod headers;
mod patch;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use wharf_proto::CreateUpload;
use wharf_raft::model::{self, UploadState};

use crate::actors::quota::TusCreate;
use crate::api::http::uploads::validate_create;
use crate::api::http::{idle_limited, parse_id, AppState, Caller};
use crate::error::{Error, Result};
pub use headers::{parse_metadata, Checksum, Expected};

pub const VERSION: &str = "1.0.0";
/// The extensions this server speaks, as `Tus-Extension` lists them.
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,\
     checksum,checksum-trailer,termination,concatenation,concatenation-unfinished";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256,md5";
/// The body of a PATCH (and of a creation with upload).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
/// What became of a finished upload: the file it made and its scan state (tus itself has no
/// way to say, so clients would report success for a file later refused).
const WHARF_FILE_ID: HeaderName = HeaderName::from_static("wharf-file-id");
const WHARF_SCAN: HeaderName = HeaderName::from_static("wharf-scan");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/files", post(create).options(options))
        .route("/files/", post(create).options(options))
        .route(
            "/files/{id}",
            axum::routing::head(head)
                .patch(patch_route)
                .delete(terminate)
                .options(options)
                .post(method_override),
        )
}

/// Every tus answer says which protocol version it speaks.
fn tus_response(status: StatusCode, headers: HeaderMap) -> Response {
    let mut resp = (status, headers).into_response();
    resp.headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
    resp
}

/// A wharf error as a tus answer: its status and JSON body, and `Tus-Resumable`.
/// A 412 also names the version spoken (`Tus-Version`).
pub(crate) fn tus_error(e: Error) -> Response {
    let version_refused = matches!(e, Error::PreconditionFailed(_));
    let mut resp = e.into_response();
    let h = resp.headers_mut();
    h.insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
    if version_refused {
        h.insert(TUS_VERSION, HeaderValue::from_static(VERSION));
    }
    resp
}

/// Every request but OPTIONS must speak this version (412 with the versions we speak).
fn check_version(h: &HeaderMap) -> Result<()> {
    if h.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()) == Some(VERSION) {
        return Ok(());
    }
    Err(Error::PreconditionFailed(format!(
        "Tus-Resumable must be {VERSION}, the version this server speaks"
    )))
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn expires(ms: u64) -> HeaderValue {
    header_value(httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_millis(ms),
    ))
}

fn unwrap_response(r: Result<Response>) -> Response {
    r.unwrap_or_else(tus_error)
}

async fn options(State(s): State<AppState>, headers: HeaderMap) -> Response {
    // Discovery needs no token; with one, the caller's own tier sets the maximum size.
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let tier = match auth {
        Some(h) => s
            .keys
            .verify_header(Some(h))
            .await
            .map(|c| c.tier)
            .unwrap_or_default(),
        None => model::Tier::default(),
    };
    let max = max_size(&s, tier);
    let mut h = HeaderMap::new();
    h.insert(TUS_VERSION, HeaderValue::from_static(VERSION));
    h.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    h.insert(TUS_MAX_SIZE, header_value(max));
    h.insert(
        TUS_CHECKSUM_ALGORITHM,
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    tus_response(StatusCode::NO_CONTENT, h)
}

/// The largest upload a tier may make (`Tus-Max-Size`, and a deferred upload's bound).
fn max_size(s: &AppState, tier: model::Tier) -> u64 {
    s.quota
        .limits(tier)
        .max_file_size
        .min(model::MAX_OBJECT_SIZE)
}

fn parse_u64(h: &HeaderMap, name: &HeaderName) -> Result<Option<u64>> {
    let Some(v) = h.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::bad_request(
                "invalid_header",
                format!("{name} must be a non-negative integer"),
            )
        })
}

fn is_offset_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// `POST /files/`: a new upload of `Upload-Length` bytes, its `Upload-Metadata` (`filename`
/// and `filetype`, as tusd and Uppy use them), and with a body, its first bytes.
async fn create(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unwrap_response(create_inner(s, caller, headers, body).await)
}

async fn create_inner(
    s: AppState,
    caller: std::result::Result<Caller, Error>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    let Caller(c) = caller?;
    let concat = concat::parse(&headers)?;
    let raw_metadata = headers
        .get(&UPLOAD_METADATA)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| Error::bad_request("invalid_metadata", "Upload-Metadata must be ASCII"))?;
    let meta = parse_metadata(raw_metadata.as_deref().unwrap_or(""))?;
    let name = meta
        .get("filename")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "untitled".into());
    let mime = meta
        .get("filetype")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|m| !m.is_empty());
    let partial = match concat {
        Some(concat::ConcatRequest::Final { partials, raw }) => {
            let f = concat::TusFinal {
                name,
                mime,
                metadata: raw_metadata,
                partials,
                header: raw,
            };
            return concat::create_final(&s, &c, &headers, f).await;
        }
        Some(concat::ConcatRequest::Partial) => true,
        None => false,
    };
    if partial && !headers.contains_key(&UPLOAD_LENGTH) {
        return Err(Error::bad_request(
            "length_required",
            "a partial upload (Upload-Concat: partial) needs its Upload-Length",
        ));
    }
    // `None`: the length is deferred (declared by a later PATCH).
    let length = match (
        parse_u64(&headers, &UPLOAD_LENGTH)?,
        headers.get(&UPLOAD_DEFER_LENGTH),
    ) {
        (Some(n), None) => Some(n),
        (None, Some(v)) if v.as_bytes() == b"1" => None,
        (None, Some(_)) => {
            return Err(Error::bad_request(
                "invalid_header",
                "Upload-Defer-Length must be 1",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(Error::bad_request(
                "invalid_header",
                "send Upload-Length or Upload-Defer-Length, not both",
            ))
        }
        (None, None) => {
            return Err(Error::bad_request(
                "length_required",
                "Upload-Length (or Upload-Defer-Length: 1) is required",
            ))
        }
    };
    // A deferred upload may grow to the most the tier allows.
    let size = length.unwrap_or_else(|| max_size(&s, c.tier));
    let with_body = is_offset_stream(&headers);
    let (checksum, body) = if with_body {
        Expected::of_request(&headers, body)?
    } else {
        (None, body)
    };
    let req = CreateUpload {
        name,
        size,
        blake3: None,
        mime,
        idempotency_key: None,
        folder: None,
        on_conflict: None,
    };
    validate_create(&req)?;
    s.rate
        .user_create(&c.sub, c.tier)
        .map_err(Error::RateLimited)?;
    if with_body {
        // Charged before the upload exists: a refusal leaves nothing behind.
        charge_body(&s, &c, parse_u64(&headers, &header::CONTENT_LENGTH)?)?;
    }
    let tus = TusCreate {
        metadata: raw_metadata,
        deferred: length.is_none(),
        partial,
    };
    let up = s.quota.create_tus(c.sub.clone(), c.tier, req, tus).await?;
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, header_value(format!("/files/{}", up.id)));
    h.insert(UPLOAD_EXPIRES, expires(up.expires_at));
    // An empty upload is whole at once: the same path completes it (a partial one waits).
    if with_body || (length == Some(0) && !partial) {
        let body = idle_limited(body, Duration::from_secs(s.http.body_idle_secs));
        let body_length = parse_u64(&headers, &header::CONTENT_LENGTH)?;
        let sent = run_patch(&s, &c.sub, &up.id, 0, body_length, checksum, body).await;
        match sent {
            Ok(p) => {
                h.insert(UPLOAD_OFFSET, header_value(p.offset));
                h.insert(UPLOAD_EXPIRES, expires(p.expires_at));
            }
            // The upload exists: its Location lets the client resume from HEAD's offset.
            Err(e) => {
                let mut resp = tus_error(e);
                resp.headers_mut()
                    .insert(header::LOCATION, header_value(format!("/files/{}", up.id)));
                return Ok(resp);
            }
        }
    }
    Ok(tus_response(StatusCode::CREATED, h))
}

async fn head(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    unwrap_response(head_inner(s, caller, id, headers).await)
}

async fn head_inner(
    s: AppState,
    caller: std::result::Result<Caller, Error>,
    id: String,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let Caller(c) = caller?;
    let id = parse_id(&id)?;
    let (applied, up, tus) = live_upload(&s, &c.sub, &id).await?;
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let deferred = applied.tus_length_deferred(&c.sub, &id);
    if deferred {
        h.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
    } else {
        h.insert(UPLOAD_LENGTH, header_value(up.size));
    }
    let offset = model::tus::offset(&up, Some(&tus));
    h.insert(UPLOAD_OFFSET, header_value(offset));
    if let Some(m) = &tus.metadata {
        h.insert(UPLOAD_METADATA, header_value(m));
    }
    let joined = applied.concat(&c.sub, &id);
    if let Some(j) = &joined {
        concat::head_headers(j, up.state, up.size, &mut h);
    }
    match up.state {
        UploadState::Uploading if joined.is_some() => {
            h.insert(UPLOAD_EXPIRES, expires(up.expires_at));
            // A final whose partials are whole is completed now, if nothing did it yet.
            if matches!(joined, Some(model::concat::Concat::Final { .. })) {
                let (s, owner) = (s.clone(), c.sub.clone());
                tokio::spawn(async move { concat::complete_when_whole(&s, &owner, &id).await });
            }
        }
        UploadState::Uploading => {
            h.insert(UPLOAD_EXPIRES, expires(up.expires_at));
            if offset == up.size && !deferred {
                // Every byte is here but the completion did not finish (the node that took the
                // last PATCH died, or the object store was away): finish it now.
                let (uploads, owner) = (s.uploads.clone(), c.sub.clone());
                tokio::spawn(async move {
                    if let Err(e) = uploads.complete(owner, id).await {
                        tracing::debug!(error = %e, "completing a whole tus upload");
                    }
                });
            }
        }
        UploadState::Stored => {
            if let Some(f) = up
                .file_id
                .as_deref()
                .and_then(|f| applied.live_file(&c.sub, f))
            {
                h.insert(WHARF_FILE_ID, header_value(&f.id));
                let scan = applied
                    .blob(&model::blob_id(&f.owner, &f.blake3))
                    .map(|b| b.scan.as_str())
                    .unwrap_or("unscanned");
                h.insert(WHARF_SCAN, HeaderValue::from_static(scan));
            }
        }
        _ => {}
    }
    Ok(tus_response(StatusCode::OK, h))
}

/// A terminated upload is gone (404, as if it never was); an expired one is 410.
pub(super) fn gone_unless_live(state: UploadState) -> Result<()> {
    match state {
        UploadState::Aborted => Err(Error::NotFound),
        UploadState::Expired => Err(Error::Gone("the upload expired".into())),
        _ => Ok(()),
    }
}

/// The caller's tus upload (with its chunks) and its tus record, as the leader knows them:
/// 404 when unknown, terminated, or finished and its file deleted since; 410 once expired.
pub(super) async fn live_upload(
    s: &AppState,
    owner: &str,
    id: &str,
) -> Result<(wharf_raft::StateView, model::Upload, model::tus::TusUpload)> {
    let applied = s.meta.linearizable().await?;
    let up = applied.upload(owner, id).ok_or(Error::NotFound)?;
    let tus = applied.tus(owner, id).ok_or(Error::NotFound)?;
    gone_unless_live(up.state)?;
    let file_gone = || {
        up.file_id
            .as_deref()
            .and_then(|f| applied.live_file(owner, f))
            .is_none()
    };
    if up.state == UploadState::Stored && file_gone() {
        return Err(Error::NotFound);
    }
    Ok((applied, up, tus))
}

async fn patch_route(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    unwrap_response(patch_inner(s, caller, id, headers, body).await)
}

async fn patch_inner(
    s: AppState,
    caller: std::result::Result<Caller, Error>,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    check_version(&headers)?;
    let Caller(c) = caller?;
    let id = parse_id(&id)?;
    if !is_offset_stream(&headers) {
        return Err(Error::UnsupportedMediaType(format!(
            "a PATCH body is Content-Type: {OFFSET_OCTET_STREAM}"
        )));
    }
    let offset = parse_u64(&headers, &UPLOAD_OFFSET).and_then(|o| {
        o.ok_or_else(|| Error::bad_request("offset_required", "Upload-Offset is required"))
    })?;
    let (checksum, body) = Expected::of_request(&headers, body)?;
    let length = parse_u64(&headers, &header::CONTENT_LENGTH)?;
    charge_body(&s, &c, length)?;
    if let Some(declared) = parse_u64(&headers, &UPLOAD_LENGTH)? {
        declare_length(&s, &c.sub, &id, declared).await?;
    }
    let body = idle_limited(body, Duration::from_secs(s.http.body_idle_secs));
    let done = run_patch(&s, &c.sub, &id, offset, length, checksum, body).await?;
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, header_value(done.offset));
    h.insert(UPLOAD_EXPIRES, expires(done.expires_at));
    Ok(tus_response(StatusCode::NO_CONTENT, h))
}

/// A PATCH's `Upload-Length`: declares a deferred upload's length (reserving the rest of its
/// bytes); on an upload of known length it must repeat that length.
async fn declare_length(s: &AppState, owner: &str, id: &str, size: u64) -> Result<()> {
    let (applied, up, _) = live_upload(s, owner, id).await?;
    if !applied.tus_length_deferred(owner, id) {
        if size == up.size {
            return Ok(());
        }
        return Err(Error::bad_request(
            "invalid_header",
            format!("the upload's length is {} and cannot change", up.size),
        ));
    }
    drop(applied);
    s.quota
        .propose(model::Command::DeclareTusLength {
            owner: owner.to_string(),
            upload_id: id.to_string(),
            size,
            now: crate::meta::now_ms(),
        })
        .await
        .map(drop)
}

/// Charges a body to the caller's byte rate: its `Content-Length`, or for a body without one
/// what a one-request body without a length is charged (`upload.single_request_max`).
fn charge_body(s: &AppState, c: &crate::auth::Claims, length: Option<u64>) -> Result<()> {
    s.rate
        .user_bytes(
            &c.sub,
            c.tier,
            length.unwrap_or(s.single_request_max).max(1),
        )
        .map_err(Error::RateLimited)
}

/// [`patch::patch`] in a task of its own: a client that goes away must not cancel it between
/// storing a tail and recording it.
async fn run_patch(
    s: &AppState,
    owner: &str,
    id: &str,
    offset: u64,
    length: Option<u64>,
    checksum: Option<Expected>,
    body: crate::store::ByteStream,
) -> Result<patch::Patched> {
    let (s, owner, id) = (s.clone(), owner.to_string(), id.to_string());
    tokio::spawn(async move { patch::patch(&s, &owner, &id, offset, length, checksum, body).await })
        .await
        .map_err(|e| Error::Internal(format!("a PATCH's task failed: {e}")))?
}

/// `DELETE /files/{id}` (termination): the upload is aborted and its bytes freed; a finished
/// one's file is deleted.
async fn terminate(
    State(s): State<AppState>,
    caller: std::result::Result<Caller, Error>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    unwrap_response(terminate_inner(s, caller, id, headers).await)
}

async fn terminate_inner(
    s: AppState,
    caller: std::result::Result<Caller, Error>,
    id: String,
    headers: HeaderMap,
) -> Result<Response> {
    check_version(&headers)?;
    let Caller(c) = caller?;
    let id = parse_id(&id)?;
    let (_, up, _) = live_upload(&s, &c.sub, &id).await?;
    match (up.state, up.file_id) {
        // A finished upload's resources are its file: terminating it deletes the file (tus
        // answers 204 to every termination; the URL is 404 from then on).
        (UploadState::Stored, Some(file_id)) => {
            s.quota
                .trash(c.sub, file_id, wharf_raft::model::folders::EntryKind::File)
                .await?;
        }
        _ => {
            s.uploads.abort(c.sub, id).await?;
        }
    }
    Ok(tus_response(StatusCode::NO_CONTENT, HeaderMap::new()))
}

/// `POST /files/{id}` with `X-HTTP-Method-Override` (for clients that cannot send PATCH or
/// DELETE).
async fn method_override(
    state: State<AppState>,
    caller: std::result::Result<Caller, Error>,
    path: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let method = headers
        .get(&METHOD_OVERRIDE)
        .and_then(|v| v.to_str().ok())
        .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok());
    match method {
        Some(Method::PATCH) => patch_route(state, caller, path, headers, body).await,
        Some(Method::DELETE) => terminate(state, caller, path, headers).await,
        Some(Method::HEAD) => head(state, caller, path, headers).await,
        _ => {
            let mut resp = tus_error(Error::MethodNotAllowed);
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("HEAD, PATCH, DELETE, OPTIONS"),
            );
            resp
        }
    }
}
