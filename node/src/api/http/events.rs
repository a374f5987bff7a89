//! `GET /v1/events`: the caller's events as server-sent events, in log order.
//!
//! Events are records of the replicated state (`model::events`), so this is a reader that
//! follows the log: it pages through the caller's events after a cursor and waits for the next
//! apply when it has caught up. Any node serves any stream. A client reconnecting with
//! `Last-Event-ID` (or `?after=`) continues exactly after that event; one whose id is older
//! than the retention window (or unknown) gets a `reset` event: re-list, then go on from the
//! reset's id.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use wharf_raft::model::events::{Event, EventId};

use crate::actors::webhooks::event_json;
use crate::api::http::{AppState, Caller};
use crate::error::{Error, Result};

/// Events read from the store per page.
const PAGE: usize = 256;

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    /// The same as `Last-Event-ID`, for clients that cannot set headers.
    after: Option<String>,
}

pub(super) async fn events(
    State(s): State<AppState>,
    Caller(c): Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    let asked = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Error::bad_request("invalid_header", "Last-Event-ID must be ASCII"))
        })
        .transpose()?
        .or(q.after);
    let mut watch = s.meta.applied_watch();
    // Caught up with every write committed before the request: an id handed out by any node
    // before it is known here.
    let view = s.meta.linearizable().await?;
    let applied = watch.applied().max(view.applied_index());
    let (after, reset) = match asked.as_deref().map(str::parse::<EventId>) {
        None => (EventId::end_of(applied), false),
        Some(Ok(id)) if id.index > applied => (EventId::end_of(applied), true),
        // Pruning drops the oldest events first: an id at or after the last one dropped
        // missed nothing.
        Some(Ok(id)) => match view.events_pruned_through() {
            Some(pruned) if pruned > id => (EventId::end_of(applied), true),
            _ => (id, false),
        },
        Some(Err(())) => (EventId::end_of(applied), true),
    };
    drop(view);
    let follow = Follow {
        s: s.clone(),
        owner: c.sub,
        after,
        reset,
        buf: VecDeque::new(),
        watch,
    };
    // At most half the idle timeout: a quiet stream must not be closed as idle.
    let keepalive = Duration::from_secs(s.events.keepalive_secs)
        .min(Duration::from_millis(s.http.idle_secs * 500))
        .max(Duration::from_millis(500));
    let mut resp = Sse::new(follow.into_stream())
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    // Proxies must not hold the stream back.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// One stream's place in the caller's events.
struct Follow {
    s: AppState,
    owner: String,
    after: EventId,
    /// A `reset` is owed before anything else.
    reset: bool,
    buf: VecDeque<(EventId, Event)>,
    watch: wharf_cluster::meta::AppliedWatch,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
        futures::stream::unfold(self, |mut f| async move {
            let ev = f.next().await?;
            Some((Ok(ev), f))
        })
    }

    /// The next SSE event, or `None` when the node begins to drain.
    async fn next(&mut self) -> Option<SseEvent> {
        if self.reset {
            self.reset = false;
            return Some(
                SseEvent::default()
                    .event("reset")
                    .id(self.after.to_string())
                    .data(
                        json!({
                            "type": "reset",
                            "message": "events before this one are no longer kept: list \
                                        again (GET /v1/files, GET /v1/uploads), then go on",
                        })
                        .to_string(),
                    ),
            );
        }
        loop {
            if let Some((id, e)) = self.buf.pop_front() {
                self.after = id;
                return Some(
                    SseEvent::default()
                        .event(e.kind.name())
                        .id(id.to_string())
                        .data(event_json(id, &e).to_string()),
                );
            }
            // Applied-index first, then the read: an apply after the read wakes the wait.
            self.watch.applied();
            let page = self
                .s
                .meta
                .local()
                .events_after(&self.owner, Some(self.after), PAGE);
            if !page.is_empty() {
                self.buf.extend(page);
                continue;
            }
            tokio::select! {
                _ = self.watch.changed() => {}
                _ = self.s.stopping.cancelled() => return None,
            }
        }
    }
}
