//! The HTTP front end (axum): parses, authenticates and calls actor handles; nothing else.
//!
//! This module holds the router, the shared state and extractors, the health routes and the
//! checks every route family shares; the handlers are in [`uploads`] (`/v1/uploads`), [`files`]
//! (`/v1/files`), [`quota`] (`/v1/usage`, an admin's quota changes) and [`admin`] (rescans and
//! cluster membership).

pub mod admin;
pub mod cluster;
pub mod cors;
pub mod events;
pub mod files;
pub mod folders;
pub mod guard;
pub mod links;
mod metrics;
pub mod quota;
mod search;
pub mod server;
pub mod shares;
pub mod trash;
pub mod uploads;
mod versions;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use wharf_raft::model::Tier;

use crate::actors::quota::QuotaHandle;
use crate::actors::uploads::UploadsHandle;
use crate::auth::{Claims, Keys};
use crate::error::{Error, Result};
use crate::meta::Metadata;
use crate::store::{ByteStream, ObjectStore};

#[derive(Clone)]
pub struct AppState {
    pub keys: Keys,
    pub meta: Metadata,
    pub quota: QuotaHandle,
    pub uploads: UploadsHandle,
    pub store: Arc<dyn ObjectStore>,
    pub presign_ttl_secs: u64,
    /// The cluster CA's certificate (join tokens carry it).
    pub ca_pem: Arc<String>,
    pub scan_policy: crate::actors::scanner::Policy,
    pub rate: Arc<crate::limits::RateLimits>,
    pub http: Arc<crate::config::HttpConfig>,
    /// `upload.single_request_max`: what a one-request body without a length is charged.
    pub single_request_max: u64,
    pub events: Arc<crate::config::EventsConfig>,
    /// `trash.retention_secs`: when a trashed entry is purged.
    pub trash_retention_secs: u64,
    /// Downloads, batched into the audit log.
    pub downloads: crate::actors::audit::DownloadLog,
    /// What this node's webhook delivery loops last saw (failures, errors).
    pub webhooks: crate::actors::webhooks::Status,
    /// Cancelled when the server begins to drain (event streams end then).
    pub stopping: tokio_util::sync::CancellationToken,
}

/// `GET /metrics` alone, for `metrics.listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { Error::NotFound })
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/readyz", get(readyz))
        .route(
            "/v1/uploads",
            post(uploads::create_upload).get(uploads::list_uploads),
        )
        .route(
            "/v1/uploads/{id}",
            get(uploads::upload_status).delete(uploads::abort_upload),
        )
        .route("/v1/uploads/{id}/chunks/{index}", put(uploads::put_chunk))
        .route("/v1/uploads/{id}/complete", post(uploads::complete_upload))
        .route("/v1/files", get(files::list_files).post(files::upload_file))
        .route(
            "/v1/files/{id}",
            get(files::get_file)
                .delete(files::delete_file)
                .patch(folders::update_file),
        )
        .route("/v1/folders", post(folders::create_folder))
        .route(
            "/v1/folders/{id}",
            get(folders::get_folder)
                .patch(folders::update_folder)
                .delete(folders::delete_folder),
        )
        .route(
            "/v1/files/{id}/content",
            get(files::download).put(versions::put_content),
        )
        .route("/v1/files/{id}/versions", get(versions::list_versions))
        .route("/v1/trash", get(trash::list_trash).delete(trash::empty))
        .route(
            "/v1/files/{id}/shares",
            post(shares::share_file).get(shares::list_file_shares),
        )
        .route(
            "/v1/folders/{id}/shares",
            post(shares::share_folder).get(shares::list_folder_shares),
        )
        .route("/v1/files/{id}/shares/{user}", delete(shares::revoke))
        .route("/v1/folders/{id}/shares/{user}", delete(shares::revoke))
        .route("/v1/shared-with-me", get(shares::shared_with_me))
        .route("/v1/trash/{id}", delete(trash::purge))
        .route("/v1/trash/{id}/restore", post(trash::restore))
        .route(
            "/v1/files/{id}/versions/{version}/restore",
            post(versions::restore_version),
        )
        .route("/v1/files/{id}/download-url", get(files::download_url))
        .route("/v1/files/{id}/links", post(links::create_link))
        .route("/v1/links", get(links::list_links))
        .route("/v1/search", get(search::search))
        .route("/v1/links/{token}", delete(links::revoke_link))
        .route("/s/{token}", get(links::link_info))
        .route("/s/{token}/content", get(links::link_content))
        .route("/s/{token}/files/{id}", get(links::folder_link_file))
        .route(
            "/s/{token}/files/{id}/content",
            get(links::folder_link_content),
        )
        .route("/v1/folders/{id}/links", post(links::create_folder_link))
        .route("/v1/usage", get(quota::usage))
        .route("/v1/events", get(events::events))
        .route("/v1/admin/users/{user}/quota", put(quota::set_quota))
        .route("/v1/admin/rescan", post(admin::rescan))
        .route("/v1/admin/usage", get(admin::usage::usage))
        .route("/v1/admin/audit", get(admin::audit::audit))
        .route("/v1/admin/backup", get(admin::backup::backup))
        .route("/v1/admin/users", get(admin::usage::users))
        .route("/v1/admin/users/{user}", get(admin::usage::user))
        .route(
            "/v1/admin/webhooks",
            post(admin::webhooks::create).get(admin::webhooks::list),
        )
        .route(
            "/v1/admin/webhooks/{id}",
            get(admin::webhooks::get).delete(admin::webhooks::delete),
        )
        .route("/v1/cluster/status", get(cluster::cluster_status))
        .route(
            "/v1/cluster/nodes/{id}/promote",
            post(cluster::promote_node),
        )
        .route(
            "/v1/cluster/nodes/{id}",
            axum::routing::delete(cluster::remove_node),
        )
        .route(
            "/v1/cluster/nodes/{id}/certificate",
            put(cluster::put_certificate),
        )
        .route(
            "/v1/cluster/tokens",
            post(cluster::create_token).get(cluster::list_tokens),
        )
        .route(
            "/v1/cluster/tokens/{id}",
            axum::routing::delete(cluster::revoke_token),
        )
        .route("/v1/cluster/requests", get(cluster::list_requests))
        .merge(crate::api::tus::routes())
        .merge(crate::api::web::routes())
        .fallback(|| async { Error::NotFound })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.http.json_body_max as usize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        // Outermost: a browser's preflight is answered before the guard counts it.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::cors,
        ))
        // After routing (it names the route pattern), around everything else: refusals by
        // the guard and CORS answers are counted too.
        .layer(axum::middleware::from_fn(metrics::track))
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
        let claims = state.keys.verify_header(header).await?;
        wharf_cluster::origin::set_actor(&claims.sub);
        // Chunk bodies, one-request files and tus PATCHes are limited by bytes (and creations)
        // instead.
        let path = parts.uri.path();
        let body_route = (parts.method == axum::http::Method::PUT && path.contains("/chunks/"))
            || (parts.method == axum::http::Method::POST && path == "/v1/files")
            || (parts.method == axum::http::Method::PUT && path.ends_with("/content"))
            || (path.starts_with("/files")
                && (parts.method == axum::http::Method::PATCH
                    || parts.method == axum::http::Method::POST));
        if !body_route {
            state
                .rate
                .user_request(&claims.sub, claims.tier)
                .map_err(Error::RateLimited)?;
        }
        Ok(Caller(claims))
    }
}

/// JSON bodies whose rejections are wharf errors.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        // Refused on its announced length, before a byte is read: reading would also send a
        // client that waits for it `100 Continue`.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > state.http.json_body_max) {
            return Err(Error::BodyTooLarge(
                "the JSON body is larger than http.json_body_max".into(),
            ));
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Error::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            )),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(
                Error::BodyTooLarge("the JSON body is larger than http.json_body_max".into()),
            ),
            Err(e) => Err(Error::bad_request("invalid_request", e.body_text())),
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

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\' || invisible(c));
    if bad {
        return Err(Error::bad_request(
            "invalid_name",
            "a file name is 1 to 255 bytes, not . or .., with no / \\, control, bidirectional \
             or zero-width characters",
        ));
    }
    Ok(())
}

/// Characters that change how a name looks without being seen: bidirectional overrides and
/// isolates (`"\u{202e}gnp.exe"` shows as `exe.png`), zero-width characters and joiners
/// (the soft hyphen, the Arabic letter mark, the Mongolian vowel separator, the combining
/// grapheme joiner among them), line separators.
pub(crate) fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// A request body as a stream that fails with `TimedOut` when no bytes came for `idle`: a
/// sender that stalled or vanished frees what it held.
pub(crate) fn idle_limited(body: axum::body::Body, idle: std::time::Duration) -> ByteStream {
    use futures::TryStreamExt;
    crate::api::idle_stream(body.into_data_stream().map_err(std::io::Error::other), idle)
}

/// A listing's page: `limit` must be 1 to 1000, `cursor` (if any) a `next_cursor` it gave.
pub(crate) fn page_bounds(limit: usize, cursor: Option<&str>) -> Result<Option<String>> {
    check_limit(limit)?;
    cursor.map(parse_id).transpose().map_err(|_| bad_cursor())
}

/// A listing's `limit`: 1 to 1000.
pub(crate) fn check_limit(limit: usize) -> Result<usize> {
    if !(1..=1000).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_request",
            "limit must be 1 to 1000",
        ));
    }
    Ok(limit)
}

/// The answer to a cursor that no listing gave.
pub(crate) fn bad_cursor() -> Error {
    Error::bad_request(
        "invalid_cursor",
        "cursor must be a next_cursor from a listing",
    )
}

/// An opaque cursor for a listing's next page: URL-safe base64 of where it goes on from.
pub(crate) fn encode_cursor(key: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// An opaque cursor (see [`encode_cursor`]) as a listing gave it, decoded.
pub(crate) fn decode_cursor(c: &str) -> Result<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_cursor)
}

/// Cuts a page read with `limit + 1` entries (one more than asked tells whether another page
/// follows) to `limit`, and gives the cursor of the next page: the id of its last entry.
pub(crate) fn split_page<T>(
    mut page: Vec<T>,
    limit: usize,
    id: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if page.len() <= limit {
        return (page, None);
    }
    page.truncate(limit);
    let next = page.last().map(id);
    (page, next)
}

/// A `limit` query parameter: 100 when absent; anything but a number is out of range.
pub(crate) fn query_limit(limit: Option<&str>) -> usize {
    limit.map_or(100, |l| l.parse().unwrap_or(0))
}

/// Ids in paths are server-made UUIDs; anything else cannot name a record (and never reaches a
/// file system path).
pub(crate) fn parse_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Error::NotFound)
}

fn require_admin(c: &Claims) -> Result<()> {
    if c.tier != Tier::Admin {
        return Err(Error::Forbidden("an admin token is required".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "\u{202e}gnp.exe",
            "a\u{200b}b",
            "\u{2066}x",
            "\u{feff}x",
            "soft\u{ad}hyphen.txt",
            "\u{61c}x",
            "a\u{180e}b",
            "a\u{34f}b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
