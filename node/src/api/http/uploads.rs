//! The `/v1/uploads` routes: create an upload, its status, send a chunk, complete, abort.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use std::time::Duration;
use wharf_proto::hash::parse_hex32;
use wharf_proto::{CreateUpload, FileRecord, UploadCreated, UploadList, UploadStatus};
use wharf_raft::model::{self, Upload};

use crate::actors::quota::Created;
use crate::actors::uploads::ChunkPut;
use crate::api::http::files::file_record;
use crate::api::http::{
    idle_limited, page_bounds, parse_id, query_limit, split_page, validate_name, ApiJson, AppState,
    Caller,
};
use crate::error::{Error, Result};
use crate::meta::rfc3339;

fn validate_token_field(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "invalid_request",
            format!("{field} must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

pub(super) async fn create_upload(
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
    s.rate
        .user_create(&c.sub, c.tier)
        .map_err(Error::RateLimited)?;
    let up = match s.quota.create(c.sub.clone(), c.tier, req).await? {
        Created::Upload(up) if up.state != model::UploadState::Stored => up,
        // Dedup (or the retry of one): the file exists, no byte needs to move.
        made => {
            let file = deduplicated(&s, &c.sub, made).await?;
            let location = format!("/v1/files/{}", file.id);
            return Ok((StatusCode::OK, [(header::LOCATION, location)], Json(file)).into_response());
        }
    };
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
    )
        .into_response())
}

/// The record of the file a create answered with (dedup: `deduplicated` is set); a create that
/// answered with its upload, stored since, answers with that upload's file.
pub(crate) async fn deduplicated(s: &AppState, owner: &str, made: Created) -> Result<FileRecord> {
    let applied = s.meta.linearizable().await?;
    let file = match made {
        Created::File(f) => f,
        Created::Upload(up) => up
            .file_id
            .as_deref()
            .and_then(|f| applied.file(owner, f))
            .ok_or(Error::NotFound)?,
    };
    Ok(FileRecord {
        deduplicated: true,
        ..file_record(&applied, &file)
    })
}

/// Checks a create request's fields (whatever transport brought it).
pub(crate) fn validate_create(req: &CreateUpload) -> Result<()> {
    // Only checked here: the keep that counts is the quota actor's.
    crate::actors::quota::placement(
        req.folder.as_deref(),
        req.on_conflict.as_deref(),
        wharf_raft::model::versions::DEFAULT_KEEP,
    )?;
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

pub(super) async fn upload_status(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadStatus>> {
    let id = parse_id(&id)?;
    let applied = s.meta.linearizable().await?;
    let up = applied.upload(&c.sub, &id).ok_or(Error::NotFound)?;
    Ok(Json(upload_status_body(&up)))
}

#[derive(serde::Deserialize)]
pub(super) struct UploadsQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/uploads?state=uploading&limit=&cursor=`: the caller's uploads, oldest first, so a
/// client that lost its upload ids can resume or abort them (and get out of
/// `too_many_uploads`).
pub(super) async fn list_uploads(
    State(s): State<AppState>,
    Caller(c): Caller,
    axum::extract::Query(q): axum::extract::Query<UploadsQuery>,
) -> Result<Json<UploadList>> {
    let limit = query_limit(q.limit.as_deref());
    let page = uploads_page(&s, &c, q.state.as_deref(), q.cursor.as_deref(), limit).await?;
    Ok(Json(page))
}

/// One page of the caller's uploads (whatever transport asked), only those in `state` if given.
pub(crate) async fn uploads_page(
    s: &AppState,
    c: &crate::auth::Claims,
    state: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<UploadList> {
    let only = match state {
        None | Some("") | Some("all") => None,
        Some("uploading") => Some(model::UploadState::Uploading),
        Some("stored") => Some(model::UploadState::Stored),
        Some("aborted") => Some(model::UploadState::Aborted),
        Some("expired") => Some(model::UploadState::Expired),
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_request",
                "state is uploading, stored, aborted, expired or all",
            ))
        }
    };
    let cursor = page_bounds(limit, cursor)?;
    let applied = s.meta.linearizable().await?;
    let (page, next_cursor) = split_page(
        applied.uploads_page(&c.sub, only, cursor.as_deref(), limit + 1),
        limit,
        |u| u.id.clone(),
    );
    Ok(UploadList {
        uploads: page.iter().map(upload_status_body).collect(),
        next_cursor,
    })
}

pub(super) async fn abort_upload(
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

/// What a request says about its body: its length and checksums.
pub(crate) struct BodyHeaders {
    pub content_length: Option<u64>,
    /// `x-wharf-blake3` (hex).
    pub blake3: Option<[u8; 32]>,
    /// `Content-Digest: sha-256=:BASE64:`.
    pub sha256: Option<[u8; 32]>,
}

impl BodyHeaders {
    pub(crate) fn parse(headers: &HeaderMap) -> Result<Self> {
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
        Ok(Self {
            content_length,
            blake3,
            sha256: content_digest_sha256(headers)?,
        })
    }
}

pub(super) async fn put_chunk(
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
    let BodyHeaders {
        content_length,
        blake3,
        sha256,
    } = BodyHeaders::parse(&headers)?;
    // Without a Content-Length the chunk's own length is what will come (at most).
    let announced = content_length.or_else(|| {
        s.meta
            .local()
            .upload_record(&c.sub, &id)
            .map(|u| u.chunk_len(index))
    });
    s.rate
        .user_bytes(&c.sub, c.tier, announced.unwrap_or(1))
        .map_err(Error::RateLimited)?;
    let body = idle_limited(body, Duration::from_secs(s.http.body_idle_secs));
    s.uploads
        .put_chunk(ChunkPut {
            owner: c.sub,
            upload_id: id,
            index,
            content_length,
            blake3,
            sha256,
            body,
            keep_short: false,
        })
        .await
}

pub(super) async fn complete_upload(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<FileRecord>> {
    let id = parse_id(&id)?;
    let f = s.uploads.complete(c.sub, id).await?;
    Ok(Json(file_record(&s.meta.local(), &f)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
