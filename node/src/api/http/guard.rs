//! What every request passes through: the per-IP rate limit, security headers, JSON bodies for
//! axum's own 405s, and a lingering read of unread bodies under early error answers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::api::http::AppState;
use crate::error::Error;

/// How long an unread body is drained at most before the error answer goes out.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_secs(1);

pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(p)| *p);
    if let Some(peer) = peer {
        if let Err(r) = s.rate.ip_request(peer.ip()) {
            return with_headers(Error::RateLimited(r).into_response());
        }
    }
    // The request's work (and the proposals it makes) knows where it came from: the audit
    // log records it.
    let addr = peer.map_or_else(String::new, |p| p.ip().to_string());
    let node = s.meta.node_id;
    wharf_cluster::origin::scope(addr, node, guarded(s, req, next)).await
}

async fn guarded(s: AppState, req: Request, next: Next) -> Response {
    // Lingering helps a client that sends its whole body before it reads the answer. One that
    // waits for `100 Continue` sends nothing unless asked (reading would ask it), and a body
    // larger than the bound cannot be drained anyway.
    let may_linger = req.method() != Method::GET
        && req.method() != Method::HEAD
        && !req.headers().contains_key(header::EXPECT)
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_none_or(|n| n <= s.http.linger_max_bytes);
    let (parts, body) = req.into_parts();
    let unread = Arc::new(Mutex::new(None));
    let body = Body::new(Tracked {
        inner: Some(body),
        unread: unread.clone(),
        ended: false,
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.headers().get(header::CONTENT_TYPE).is_none()
    {
        // axum's own answer (it adds the Allow header on its way out): give it the error
        // body every answer has.
        resp = Error::MethodNotAllowed.into_response();
    }
    let failed = resp.status().is_client_error() || resp.status().is_server_error();
    let left = unread.lock().expect("lock poisoned").take();
    if let (true, true, Some(body)) = (failed, may_linger, left) {
        // Answering before the body was read and closing would reset the connection under a
        // client still sending, which then sees a broken pipe instead of this answer.
        linger(body, s.http.linger_max_bytes).await;
    }
    with_headers(resp)
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Reads and drops up to `max` bytes of `body`, for at most [`LINGER_TIME`], and no longer
/// than [`LINGER_IDLE`] without a byte (a client that stalled is not waited for).
async fn linger(body: Body, max: u64) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut seen = 0u64;
        while let Ok(Some(Ok(b))) = tokio::time::timeout(LINGER_IDLE, stream.next()).await {
            seen += b.len() as u64;
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// A request body that, when dropped before its end, hands what is left back to the guard.
struct Tracked {
    inner: Option<Body>,
    unread: Arc<Mutex<Option<Body>>>,
    ended: bool,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take() {
            if !self.ended && !body.is_end_stream() {
                *self.unread.lock().expect("lock poisoned") = Some(body);
            }
        }
    }
}
