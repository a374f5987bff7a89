//! `GET /v1/events`: following the caller's events, across reconnects and nodes.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;

use crate::{error, Client, Error, Node, Result};

/// One server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEvent {
    /// `{log index}-{place in the entry}`: give it back to continue after this event.
    pub id: String,
    /// `upload.created`, `upload.progress`, …, or `reset` (events were missed: list again).
    pub event: String,
    pub data: serde_json::Value,
}

/// A stream that said nothing for this long (keepalives included) is taken for dead.
const SILENCE: Duration = Duration::from_secs(60);

impl Client {
    /// Follows the caller's events after `after` (from now when `None`), calling `f` for each
    /// until it returns `false`. A stream that breaks is resumed with `Last-Event-ID` on the
    /// next HTTP node, so `f` sees every event once, in log order.
    pub async fn watch(
        &self,
        mut after: Option<String>,
        mut f: impl FnMut(&ServerEvent) -> bool,
    ) -> Result<()> {
        let bases: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| match n {
                Node::Http(b) => Some(b.clone()),
                Node::Quic(_) => None,
            })
            .collect();
        if bases.is_empty() {
            return Err(Error::BadNode(
                "events need an http:// or https:// node".into(),
            ));
        }
        let mut backoff = Duration::from_millis(250);
        for n in 0usize.. {
            let base = &bases[n % bases.len()];
            let mut req = self
                .stream_http
                .request(Method::GET, format!("{base}/v1/events"))
                .bearer_auth(self.token())
                .header("accept", "text/event-stream");
            if let Some(a) = &after {
                req = req.header("last-event-id", a.as_str());
            }
            let resp = match error::send(req).await {
                Ok(r) => r,
                Err(e) if e.retryable() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff = Duration::from_millis(250);
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let next = match tokio::time::timeout(SILENCE, body.next()).await {
                    Ok(Some(Ok(b))) => b,
                    // Ended, broke, or went silent: resume elsewhere.
                    _ => break,
                };
                buf.extend_from_slice(&next);
                while let Some(end) = frame_end(&buf) {
                    let frame: Vec<u8> = buf.drain(..end.1).collect();
                    if let Some(ev) = parse(&frame[..end.0]) {
                        after = Some(ev.id.clone());
                        if !f(&ev) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        unreachable!("the loop only ends by returning")
    }
}

/// The end of the first complete frame in `buf`: (where its text ends, where the next begins).
fn frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, i + 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, i + 4))
        } else {
            None
        }
    })
}

/// One frame's fields; comments (keepalives) and frames without an id are nothing.
fn parse(frame: &[u8]) -> Option<ServerEvent> {
    let text = std::str::from_utf8(frame).ok()?;
    let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
    for line in text.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = value.to_string(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    Some(ServerEvent {
        id: id?,
        event,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_blank_lines_and_comments_carry_nothing() {
        let buf = b": keepalive\n\nid: 7-0\nevent: upload.created\ndata: {\"size\":3}\n\nid: 8";
        let (end, next) = frame_end(buf).unwrap();
        assert!(parse(&buf[..end]).is_none());
        let rest = &buf[next..];
        let (end, _) = frame_end(rest).unwrap();
        let ev = parse(&rest[..end]).unwrap();
        assert_eq!(ev.id, "7-0");
        assert_eq!(ev.event, "upload.created");
        assert_eq!(ev.data["size"], 3);
        // The last frame is not whole yet.
        assert!(frame_end(&rest[end + 2..]).is_none());
    }
}
