//! Share links: `POST /v1/files/{id}/links` makes one, `GET /v1/links` lists the caller's,
//! `DELETE /v1/links/{token}` revokes one; anyone holding a link reads the file's record at
//! `GET /s/{token}` and its bytes at `GET /s/{token}/content` (with `Range`), no account needed,
//! under the scan policy like any download. A link may expire, count its downloads, and ask
//! for a password (`X-Wharf-Link-Password`), kept as an argon2 hash and tried at most
//! `LINK_PASSWORD_TRIES` times a minute per link. Every read of a link is linearizable, so a
//! revoked, expired or used-up link is 404 on every node from the moment that is committed.
//!
//! A folder link (`POST /v1/folders/{id}/links`) shares the folder and all under it:
//! `GET /s/{token}` lists it (`?folder=` one of its folders, with `sort`, `limit`, `cursor`),
//! and `GET /s/{token}/files/{id}` and `/files/{id}/content` serve a file under it; any other
//! id is 404.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_raft::model::links::Link;
use wharf_raft::model::{Command, File, ScanState};
use wharf_raft::{Outcome, StateView};

use crate::actors::scanner;
use crate::api::http::files::{blob_scan, file_record, serve};
use crate::api::http::folders::{self, ListingQuery};
use crate::api::http::{parse_id, ApiJson, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::{now_ms, rfc3339};

/// The header a link's password comes in.
pub const PASSWORD_HEADER: &str = "x-wharf-link-password";
/// The longest a link may live (a year), and the longest password taken.
const MAX_EXPIRES_IN_SECS: u64 = 365 * 24 * 3600;
const MAX_PASSWORD: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLink {
    /// Seconds from now.
    expires_in: Option<u64>,
    password: Option<String>,
    max_downloads: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct LinkBody {
    token: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    folder_id: Option<String>,
    created_at: String,
    expires_at: Option<String>,
    max_downloads: Option<u64>,
    downloads: u64,
    /// Whether the link asks for a password (never the password or its hash).
    password: bool,
}

#[derive(Serialize)]
pub(super) struct LinkList {
    links: Vec<LinkBody>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct LinkListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Where a link is opened: this node's address as the client reached it.
fn link_url(headers: &HeaderMap, token: &str) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    match host {
        Some(h) => format!("{proto}://{h}/s/{token}"),
        None => format!("/s/{token}"),
    }
}

fn body(l: &Link, folder: bool, headers: &HeaderMap) -> LinkBody {
    let target = Some(l.file_id.clone());
    LinkBody {
        token: l.token.clone(),
        url: link_url(headers, &l.token),
        file_id: if folder { None } else { target.clone() },
        folder_id: if folder { target } else { None },
        created_at: rfc3339(l.created_at),
        expires_at: l.expires_at.map(rfc3339),
        max_downloads: l.max_downloads,
        downloads: l.downloads,
        password: l.password_hash.is_some(),
    }
}

/// 32 random bytes, URL-safe base64: unguessable.
pub(super) fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token as this server makes them; anything else is no link (404 without a lookup).
fn valid_token(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) async fn create_link(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewLink>,
) -> Result<Response> {
    make_link(&s, c, parse_id(&id)?, false, &headers, req).await
}

pub(super) async fn create_folder_link(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewLink>,
) -> Result<Response> {
    make_link(&s, c, parse_id(&id)?, true, &headers, req).await
}

async fn make_link(
    s: &AppState,
    c: crate::auth::Claims,
    id: String,
    folder: bool,
    headers: &HeaderMap,
    req: NewLink,
) -> Result<Response> {
    if req
        .expires_in
        .is_some_and(|e| e == 0 || e > MAX_EXPIRES_IN_SECS)
    {
        return Err(Error::bad_request(
            "invalid_request",
            format!("expires_in is 1 to {MAX_EXPIRES_IN_SECS} seconds"),
        ));
    }
    if req.max_downloads == Some(0) {
        return Err(Error::bad_request(
            "invalid_request",
            "max_downloads is at least 1",
        ));
    }
    if req
        .password
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > MAX_PASSWORD)
    {
        return Err(Error::bad_request(
            "invalid_request",
            format!("a password is 1 to {MAX_PASSWORD} bytes"),
        ));
    }
    s.rate
        .user_create(&c.sub, c.tier)
        .map_err(Error::RateLimited)?;
    let password_hash = match req.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let now = now_ms();
    let (token, expires_at) = (new_token(), req.expires_in.map(|e| now + e * 1000));
    let cmd = if folder {
        Command::CreateFolderLink {
            token,
            owner: c.sub,
            folder_id: id,
            expires_at,
            password_hash,
            max_downloads: req.max_downloads,
            now,
        }
    } else {
        Command::CreateLink {
            token,
            owner: c.sub,
            file_id: id,
            expires_at,
            password_hash,
            max_downloads: req.max_downloads,
            now,
        }
    };
    let out = s.quota.propose(cmd).await?;
    let Outcome::Link(l) = out else {
        return Err(Error::Internal(format!("unexpected {out:?}")));
    };
    let b = body(&l, folder, headers);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, b.url.clone())],
        Json(b),
    )
        .into_response())
}

pub(super) async fn list_links(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<LinkListQuery>,
    headers: HeaderMap,
) -> Result<Json<LinkList>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let applied = s.meta.linearizable().await?;
    let mut links = applied.links_of(&c.sub, q.cursor.as_deref(), limit + 1);
    // The cursor itself is the last one of the page before.
    links.retain(|l| Some(l.token.as_str()) != q.cursor.as_deref());
    let more = links.len() > limit;
    links.truncate(limit);
    Ok(Json(LinkList {
        next_cursor: more
            .then(|| links.last().map(|l| l.token.clone()))
            .flatten(),
        links: links
            .iter()
            .map(|l| body(l, applied.link_is_folder(&l.token), &headers))
            .collect(),
    }))
}

pub(super) async fn revoke_link(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(token): Path<String>,
) -> Result<StatusCode> {
    if !valid_token(&token) {
        return Err(Error::NotFound);
    }
    s.quota
        .propose(Command::RevokeLink {
            owner: c.sub,
            token,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /s/{token}`: the shared file's record, or a page of the shared folder (or of
/// `?folder=`, one of its folders).
pub(super) async fn link_info(
    State(s): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<ListingQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let link = open_link(&s, &token, &headers).await?;
    let applied = s.meta.linearizable().await?;
    if !applied.link_is_folder(&link.token) {
        let (f, _) = shared_file(&s, &applied, &link, None)?;
        return Ok(Json(file_record(&applied, &f)).into_response());
    }
    let page = folders::page(&q)?;
    let folder = match q.folder.as_deref() {
        None => link.file_id.clone(),
        Some(f) => {
            let f = parse_id(f)?;
            if !applied.is_within(&link.owner, &f, &link.file_id) {
                return Err(Error::NotFound);
            }
            f
        }
    };
    let listing = folders::listing(
        &applied,
        &link.owner,
        Some(folder),
        page.by_name,
        page.cursor.as_deref(),
        page.limit,
    )?;
    Ok(Json(listing).into_response())
}

/// `GET /s/{token}/content`: the shared file's bytes. A link that counts its downloads counts
/// this one (a Raft write) before a byte is sent.
pub(super) async fn link_content(
    State(s): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    serve_shared(&s, &token, None, &headers).await
}

/// `GET /s/{token}/files/{id}`: a file under a shared folder.
pub(super) async fn folder_link_file(
    State(s): State<AppState>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<wharf_proto::FileRecord>> {
    let link = open_link(&s, &token, &headers).await?;
    let applied = s.meta.linearizable().await?;
    let (f, _) = shared_file(&s, &applied, &link, Some(&parse_id(&id)?))?;
    Ok(Json(file_record(&applied, &f)))
}

/// `GET /s/{token}/files/{id}/content`: the bytes of a file under a shared folder.
pub(super) async fn folder_link_content(
    State(s): State<AppState>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    serve_shared(&s, &token, Some(&parse_id(&id)?), &headers).await
}

async fn serve_shared(
    s: &AppState,
    token: &str,
    in_folder: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response> {
    let link = open_link(s, token, headers).await?;
    let (f, scan) = {
        let applied = s.meta.linearizable().await?;
        shared_file(s, &applied, &link, in_folder)?
    };
    // A counted download is a write, audited where it commits; the others are batched into
    // the audit log.
    if link.max_downloads.is_some() {
        s.quota
            .propose(Command::LinkDownloaded {
                token: link.token.clone(),
                now: now_ms(),
            })
            .await?;
    }
    let resp = serve(s, &f, &scan, headers).await?;
    if link.max_downloads.is_none() {
        s.downloads
            .record("download.link", &link.owner, &f.id)
            .await;
    }
    Ok(resp)
}

/// The file a link serves, once the scan policy lets it be served: the link's own file, or
/// (`in_folder`) file `id` under the link's folder. Anything else is 404.
fn shared_file(
    s: &AppState,
    applied: &StateView,
    link: &Link,
    in_folder: Option<&str>,
) -> Result<(File, ScanState)> {
    let is_folder = applied.link_is_folder(&link.token);
    let id = match (in_folder, is_folder) {
        (None, false) => link.file_id.as_str(),
        (Some(id), true) => {
            let within = applied
                .file_folder(&link.owner, id)
                .is_some_and(|f| applied.is_within(&link.owner, &f, &link.file_id));
            if !within {
                return Err(Error::NotFound);
            }
            id
        }
        (None, true) => {
            return Err(Error::bad_request(
                "folder_link",
                "this link shares a folder: its files are at /s/{token}/files/{id}/content",
            ))
        }
        (Some(_), false) => return Err(Error::NotFound),
    };
    let file = applied.live_file(&link.owner, id).ok_or(Error::NotFound)?;
    let scan = blob_scan(applied, &file);
    scanner::may_serve(s.scan_policy.mode(applied.scanner_found()), &scan)?;
    Ok((file, scan))
}

/// The link, live at a linearizable read, once its password (if it has one) was given.
async fn open_link(s: &AppState, token: &str, headers: &HeaderMap) -> Result<Link> {
    if !valid_token(token) {
        return Err(Error::NotFound);
    }
    let link = s
        .meta
        .linearizable()
        .await?
        .link(token)
        .filter(|l| l.live(now_ms()))
        .ok_or(Error::NotFound)?;
    if let Some(hash) = &link.password_hash {
        let Some(given) = headers.get(PASSWORD_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(Error::Unauthorized {
                code: "password_required",
                message: format!("this link asks for its password ({PASSWORD_HEADER})"),
            });
        };
        s.rate
            .link_password(&link.token)
            .map_err(Error::RateLimited)?;
        if !verify_password(given.to_string(), hash.clone()).await? {
            return Err(Error::Forbidden("wrong password for this link".into()));
        }
    }
    Ok(link)
}

/// argon2id with a random salt (slow on purpose: off the async threads).
async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("hashing a link password: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn verify_password(given: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| Error::Internal(format!("a stored link password hash: {e}")))?;
        Ok(argon2::Argon2::default()
            .verify_password(given.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}
