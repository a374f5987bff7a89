//! CORS for browser pages on the origins of `http.cors_origins`: the API's and tus's request
//! headers are allowed and every header a client reads is exposed; the token travels as
//! `Authorization`, never as a cookie, so credentials mode is not needed.
//!
//! Written here rather than taken from a CORS layer that answers every OPTIONS itself: tus's
//! OPTIONS (discovery, no `Access-Control-Request-Method`) must reach its handler.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::http::AppState;

const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, content-digest, idempotency-key, \
    range, x-wharf-blake3, x-requested-with, x-http-method-override, tus-resumable, \
    upload-length, upload-offset, upload-metadata, upload-checksum, upload-defer-length, \
    upload-concat";
const EXPOSE_HEADERS: &str = "location, content-range, retry-after, upload-offset, \
    upload-length, upload-expires, upload-metadata, upload-defer-length, upload-concat, \
    tus-resumable, tus-version, tus-extension, tus-max-size, tus-checksum-algorithm, \
    wharf-file-id, wharf-scan";
/// How long a browser may cache a preflight's answer.
const MAX_AGE_SECS: &str = "86400";

/// The request's `Origin`, when `origins` lets it in (as the value to answer with).
fn allowed(origins: &[String], h: &HeaderMap) -> Option<HeaderValue> {
    let origin = h.get(header::ORIGIN)?;
    let o = origin.to_str().ok()?;
    origins
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
        .then(|| origin.clone())
}

pub async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // Validated at start-up; empty means same origin only.
    let origins = s.http.cors_origins().unwrap_or_default();
    if origins.is_empty() {
        return next.run(req).await;
    }
    let origin = allowed(&origins, req.headers());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = match (&origin, preflight) {
        (Some(_), true) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECS),
            );
            r
        }
        _ => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    resp
}
