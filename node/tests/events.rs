//! `GET /v1/events` against real node processes: events arrive in log order; a reconnect with
//! `Last-Event-ID` to another node resumes with no gap and no duplicate (and so does
//! `wharf watch`); an id older than the retention window, unknown or from the future gets
//! `reset`; a node with streams open still stops at once on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::s3::S3;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// One SSE event as the test reads it.
#[derive(Clone, Debug, PartialEq)]
struct Ev {
    id: String,
    event: String,
    data: Value,
}

impl Ev {
    fn index_seq(&self) -> (u64, u32) {
        let (i, s) = self.id.split_once('-').expect("ids are index-seq");
        (i.parse().unwrap(), s.parse().unwrap())
    }
}

/// An open event stream.
struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Stream {
    async fn open(node: &Node, token: &str, last: Option<&str>) -> Stream {
        // A client of its own: the shared one has an overall timeout.
        let mut req = reqwest::Client::new()
            .get(node.url("/v1/events"))
            .bearer_auth(token);
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Stream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event (keepalive comments skipped), or `None` if none came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Ev> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(frame).unwrap();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if let (Some(id), Some(event)) = (id, event) {
                    let data = serde_json::from_str(&data).unwrap();
                    return Some(Ev { id, event, data });
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(b))) => self.buf.extend_from_slice(&b),
                Ok(other) => panic!("the stream ended: {other:?}"),
                Err(_) => return None,
            }
        }
    }

    /// Events until one of type `until` (included).
    async fn until(&mut self, until: &str) -> Vec<Ev> {
        let mut out = Vec::new();
        loop {
            let ev = self
                .next(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("no {until} event; got {out:#?}"));
            let done = ev.event == until;
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

async fn one_request_file(node: &Node, t: &str, name: &str, body: &[u8]) -> Value {
    let (st, f) = json(
        node.post(t, &format!("/v1/files?name={name}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn events_come_in_log_order_and_resume_on_another_node_without_gap_or_duplicate() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let [n0, n1, n2] = three_nodes_over_s3(
        dir.path(),
        &s3,
        &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "5242880")],
    );
    let (alice, bob) = (n0.token("alice", Tier::Basic), n0.token("bob", Tier::Basic));

    // A stream on n1 from now; the writes go through n0.
    let mut live = Stream::open(&n1, &alice, None).await;
    let small = one_request_file(&n0, &alice, "small.txt", b"hello").await;
    // Another user's activity never shows in alice's stream.
    one_request_file(&n0, &bob, "bobs.txt", b"not alices").await;
    let data = random_bytes(3 * 5 * MIB + 17, 7);
    let big = n0.upload(&alice, "big.bin", &data).await;
    let (st, _) = json(
        n0.http
            .patch(n0.url(&format!("/v1/files/{}", small["id"].as_str().unwrap())))
            .bearer_auth(&alice)
            .json(&json!({"name": "renamed.txt"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let st = n0
        .delete(
            &alice,
            &format!("/v1/files/{}", big["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    let seen = live.until("file.trashed").await;

    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert_eq!(kinds[0], "upload.completed", "{kinds:?}");
    assert_eq!(seen[0].data["file_id"], small["id"]);
    assert!(
        first("upload.created") < first("upload.progress"),
        "{kinds:?}"
    );
    assert!(
        first("upload.progress")
            < kinds
                .iter()
                .rposition(|x| *x == "upload.completed")
                .unwrap()
    );
    assert!(first("file.renamed") < first("file.trashed"));
    assert!(seen.iter().all(|e| e.data["name"] != "bobs.txt"));
    // Log order: ids strictly grow; each event names itself.
    for w in seen.windows(2) {
        assert!(
            w[0].index_seq() < w[1].index_seq(),
            "{:?} then {:?}",
            w[0].id,
            w[1].id
        );
    }
    for e in &seen {
        assert_eq!(e.data["id"], e.id.as_str());
        assert_eq!(e.data["type"], e.event.as_str());
    }
    // Progress counts bytes; the last event's usage is alice's usage now.
    let last_progress = seen
        .iter()
        .rev()
        .find(|e| e.event == "upload.progress")
        .unwrap();
    assert!(last_progress.data["received"].as_u64().unwrap() <= data.len() as u64);
    assert_eq!(last_progress.data["size"], data.len());
    let usage = n2.usage(&alice).await;
    assert_eq!(seen.last().unwrap().data["usage"]["used"], usage["used"]);

    // Resume on n2 after the second event: exactly the rest, nothing twice, nothing missed.
    let mut resumed = Stream::open(&n2, &alice, Some(&seen[1].id)).await;
    let mut rest = Vec::new();
    for _ in 2..seen.len() {
        rest.push(
            resumed
                .next(Duration::from_secs(30))
                .await
                .expect("an event"),
        );
    }
    assert_eq!(rest, seen[2..].to_vec());
    assert!(resumed.next(Duration::from_millis(500)).await.is_none());
    // A new event reaches both streams.
    one_request_file(&n1, &alice, "later.txt", b"later").await;
    let a = live.next(Duration::from_secs(30)).await.unwrap();
    let b = resumed.next(Duration::from_secs(30)).await.unwrap();
    assert_eq!((a.event.as_str(), &a), ("upload.completed", &b));

    // `wharf watch` from the same point prints the same events, one JSON line each.
    let out = tokio::task::spawn_blocking({
        let (base, after, n) = (n2.base.clone(), seen[1].id.clone(), seen.len() - 2);
        let token = alice.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["watch", "--node", &base, "--after", &after, "--json"])
                .args(["-n", &n.to_string()])
                .env("WHARF_TOKEN", token)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<Value> = seen[2..].iter().map(|e| e.data.clone()).collect();
    assert_eq!(lines, want);
}

#[tokio::test]
async fn an_id_past_the_retention_unknown_or_from_the_future_gets_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(
        dir.path(),
        &[
            ("WHARF_EVENTS_RETENTION_SECS", "5"),
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
        ],
    );
    let t = node.token("alice", Tier::Basic);
    let mut live = Stream::open(&node, &t, None).await;
    one_request_file(&node, &t, "a.txt", b"a").await;
    one_request_file(&node, &t, "a2.txt", b"a2").await;
    let old = live.next(Duration::from_secs(30)).await.unwrap();
    assert_eq!(old.event, "upload.completed");
    let newer = live.next(Duration::from_secs(30)).await.unwrap();

    for bad in ["nonsense", "99999999999-0"] {
        let mut s = Stream::open(&node, &t, Some(bad)).await;
        let ev = s.next(Duration::from_secs(10)).await.unwrap();
        assert_eq!(ev.event, "reset", "{bad}");
    }
    // Once the leader pruned both (retention 5 s, swept every second), the older id resets: an
    // event after it is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reset = loop {
        let mut s = Stream::open(&node, &t, Some(&old.id)).await;
        match s.next(Duration::from_millis(300)).await {
            Some(ev) if ev.event == "reset" => break (s, ev),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("no reset after the retention window: {other:?}"),
        }
    };
    let (mut s, ev) = reset;
    assert!(ev.data["message"].as_str().unwrap().contains("list"));
    // From the last event pruned itself nothing was missed: no reset.
    let mut from_last = Stream::open(&node, &t, Some(&newer.id)).await;
    // After the reset the stream goes on with new events.
    one_request_file(&node, &t, "b.txt", b"b").await;
    let next = s.next(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (next.event.as_str(), &next.data["name"]),
        ("upload.completed", &json!("b.txt"))
    );
    assert_eq!(from_last.next(Duration::from_secs(10)).await.unwrap(), next);
    // A reconnect from the reset's id is not reset again.
    let mut again = Stream::open(&node, &t, Some(&ev.id)).await;
    assert_eq!(again.next(Duration::from_secs(10)).await.unwrap(), next);

    // Streams open: SIGTERM still stops the node well within its drain time (10 s).
    let started = Instant::now();
    assert!(
        node.terminate(Duration::from_secs(8)).is_some(),
        "the node did not stop"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    drop((live, s, again, from_last));
}
