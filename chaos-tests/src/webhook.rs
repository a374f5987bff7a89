//! The webhook checker of the `upload` workload. Before the workload starts, the harness makes a
//! webhook for `upload.completed` that points at a receiver of its own; after the faults heal
//! and the webhook has caught up (nothing pending), every completion the cluster acknowledged
//! must have reached the receiver under exactly one event id, and no file may have two.
//! The same id delivered again (an acknowledgement that died with its leader) is allowed: the
//! id is the receiver's idempotency key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::checker::{Op, Verdict};
use crate::cluster::token;
use crate::workload::Clients;

const ADMIN: &str = "chaos-admin";

pub struct Receiver {
    hook: String,
    got: Arc<Mutex<Vec<Value>>>,
}

fn admin(c: &Clients, node: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
    c.http
        .request(method, format!("{}{path}", c.urls[node]))
        .bearer_auth(token(ADMIN, "admin"))
}

/// Starts the receiver on `host` (an address the nodes reach) and makes the webhook.
pub async fn setup(c: &Clients, host: IpAddr) -> anyhow::Result<Receiver> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => {
                        sink.lock().expect("lock").push(v);
                        axum::http::StatusCode::OK
                    }
                    Err(_) => axum::http::StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .context("binding the webhook receiver")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let body = json!({"url": url, "events": ["upload.completed"]});
    for attempt in 0..60 {
        let node = attempt % c.urls.len();
        let req = admin(c, node, Method::POST, "/v1/admin/webhooks").json(&body);
        if let Ok(r) = req.send().await {
            if r.status() == reqwest::StatusCode::CREATED {
                let v: Value = r.json().await?;
                let hook = v["id"].as_str().context("webhook id")?.to_string();
                return Ok(Receiver { hook, got });
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the cluster never made the webhook")
}

/// Waits (up to `within`) until the webhook has nothing pending, then checks the deliveries
/// against the acknowledged completions of `ops`.
pub async fn check(c: &Clients, r: &Receiver, ops: &[Op<'_>], within: Duration) -> Verdict {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    let caught_up = 'wait: loop {
        for node in 0..c.urls.len() {
            let req = admin(
                c,
                node,
                Method::GET,
                &format!("/v1/admin/webhooks/{}", r.hook),
            );
            if let Ok(resp) = req.send().await {
                if let Ok(v) = resp.json::<Value>().await {
                    if v["pending"] == 0 {
                        break 'wait true;
                    }
                    last = v;
                }
            }
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let got = r.got.lock().expect("lock").clone();
    let mut ids_of_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &got {
        if let (Some(f), Some(id)) = (e["file_id"].as_str(), e["id"].as_str()) {
            ids_of_file
                .entry(f.to_string())
                .or_default()
                .insert(id.to_string());
        }
    }
    let distinct: usize = ids_of_file.values().map(BTreeSet::len).sum();
    let mut violations = Vec::new();
    if !caught_up {
        violations.push(json!({
            "type": "never-caught-up",
            "webhook": last,
        }));
    }
    let mut acknowledged = 0;
    for o in ops
        .iter()
        .filter(|o| o.invoke.f == "complete" && o.kind() == "ok")
    {
        let Some(file) = o.done.and_then(|d| d.value["file_id"].as_str()) else {
            continue;
        };
        acknowledged += 1;
        if !ids_of_file.contains_key(file) {
            violations.push(json!({
                "type": "completion-never-delivered",
                "file_id": file,
                "ops": [o.invoke.index],
            }));
        }
    }
    // A file completes once: two event ids for one file are two completions delivered.
    for (file, ids) in ids_of_file.iter().filter(|(_, ids)| ids.len() > 1) {
        violations.push(json!({
            "type": "completion-delivered-under-several-ids",
            "file_id": file,
            "ids": ids,
        }));
    }
    Verdict::new(
        json!({
            "acknowledged_completions": acknowledged,
            "events_delivered": distinct,
            "deliveries": got.len(),
            "delivered_again": got.len().saturating_sub(distinct),
        }),
        violations,
    )
}
