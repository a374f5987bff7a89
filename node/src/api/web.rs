//! The browser page at `/`: its HTML, script and styles, and the vendored Uppy bundle, all
//! embedded in the binary (nothing is fetched at build or run time). The page talks to the
//! same node's API with the token the user pasted: tus for uploads, `/v1/files`, `/v1/usage`
//! and `/v1/events`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::http::AppState;
use crate::error::Error;

const INDEX: &str = include_str!("../../assets/web/index.html");

/// `/assets/{name}`: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/web/app.css"),
    ),
    (
        "uppy.min.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/uppy/uppy.min.mjs"),
    ),
    (
        "uppy.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/uppy/uppy.min.css"),
    ),
    (
        "uppy-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/uppy/LICENSE"),
    ),
];

/// Scripts and styles from this node only; Uppy sets element styles and makes `blob:`
/// thumbnails.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' \
                   'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{name}", get(asset))
}

fn with_headers(mut resp: Response, content_type: &str, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn index() -> Response {
    // Revalidated every time: a node upgraded under an open tab serves its own page.
    with_headers(
        (StatusCode::OK, INDEX).into_response(),
        "text/html; charset=utf-8",
        "no-cache",
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => with_headers(
            (StatusCode::OK, *bytes).into_response(),
            content_type,
            "public, max-age=300",
        ),
        None => Error::NotFound.into_response(),
    }
}
