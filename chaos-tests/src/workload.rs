//! Workloads: concurrent clients sending requests to random nodes (through the client
//! proxies), recording every operation in the history. Each client draws from its own seeded
//! generator, so the same seed asks for the same operations.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::cluster::{node_number, token, BASIC_QUOTA, CHUNK_SIZE};
use crate::history::History;

pub const ALL: [&str; 5] = ["upload", "quic-upload", "quota", "register", "share"];

/// Register keys (files renamed and read), and the clients that read and write them through
/// random nodes; each node also has a reader and a writer of its own ([`RegisterRole`]).
pub const REGISTER_KEYS: usize = 2;
pub const REGISTER_CLIENTS: usize = 4;

/// What a register client does, and where.
#[derive(Clone, Copy, Debug)]
pub enum RegisterRole {
    /// Reads and writes, each through a random node.
    Mixed,
    /// Only reads, always through this node (0-based slot). A node cut off from the leader
    /// keeps being asked: a client that also wrote would soon wait on a write there instead.
    Reader(usize),
    /// Only writes, always through this node, so the side with a quorum keeps taking writes
    /// while another node is cut off.
    Writer(usize),
}

impl RegisterRole {
    /// The roles of the register's clients on `nodes` nodes: the mixed ones, then a reader and
    /// a writer per node.
    pub fn all(nodes: usize) -> Vec<RegisterRole> {
        let mut roles = vec![RegisterRole::Mixed; REGISTER_CLIENTS];
        for n in 0..nodes {
            roles.push(RegisterRole::Reader(n));
            roles.push(RegisterRole::Writer(n));
        }
        roles
    }
}
/// Racing creates per quota round, and the size of each.
pub const QUOTA_RACERS: usize = 6;
pub const QUOTA_CREATE: u64 = 1536 * 1024;

/// Refusals that come with a 5xx status but certainly changed nothing.
const DEFINITE: [&str; 1] = ["quota_exceeded"];

/// Refusals the workloads provoke on purpose, as (operation, error): a quota round races
/// `QUOTA_RACERS` creates for room for two, so most of them are answered `quota_exceeded`; the
/// share workload opens links it has revoked. They are `fail`s like any other (nothing happened), but they are the system working.
pub const EXPECTED_REFUSALS: [(&str, &str); 2] = [
    ("quota-create", "quota_exceeded"),
    // A share link opened after it was revoked.
    ("link-read", "not_found"),
];

/// Whether a completion of operation `f` as `kind` with `error` is an expected refusal.
pub fn expected_refusal(f: &str, kind: &str, error: Option<&str>) -> bool {
    kind == "fail"
        && EXPECTED_REFUSALS
            .iter()
            .any(|&(ef, ee)| ef == f && Some(ee) == error)
}

/// An operation's outcome.
#[derive(Debug)]
pub enum Res {
    Ok(Value),
    /// Certainly did not happen (4xx): the error code and body.
    Fail(String, Value),
    /// May or may not have happened (5xx, timeout, connection lost).
    Info(String),
}

#[derive(Clone)]
pub struct Clients {
    pub urls: Vec<String>,
    pub http: reqwest::Client,
    pub history: History,
}

impl Clients {
    pub fn new(urls: Vec<String>, history: History) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self {
            urls,
            http,
            history,
        })
    }

    pub fn request(&self, node: usize, method: Method, path: &str, user: &str) -> RequestBuilder {
        let tier = if user.starts_with('q') {
            "basic"
        } else {
            "premium"
        };
        self.http
            .request(method, format!("{}{path}", self.urls[node]))
            .bearer_auth(token(user, tier))
    }

    /// Sends `req` to `node` as process `process`'s operation `f`, recording it.
    pub async fn op(
        &self,
        process: &str,
        f: &str,
        node: usize,
        value: Value,
        req: RequestBuilder,
    ) -> Res {
        let inv = self
            .history
            .invoke(process, f, Some(node_number(node)), value.clone());
        let res = match req.send().await {
            Err(e) => Res::Info(if e.is_timeout() {
                "timeout".into()
            } else {
                "unreachable".into()
            }),
            Ok(r) => {
                let status = r.status();
                let body: Value = match r.bytes().await {
                    Ok(b) if b.is_empty() => Value::Null,
                    Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                    Err(_) => {
                        self.history
                            .complete(inv, "info", value, Some("body-lost".into()));
                        return Res::Info("body-lost".into());
                    }
                };
                let code = body["error"]["code"]
                    .as_str()
                    .unwrap_or(status.as_str())
                    .to_string();
                if status.is_success() {
                    Res::Ok(body)
                } else if status.is_client_error() || DEFINITE.contains(&code.as_str()) {
                    Res::Fail(code, body)
                } else {
                    Res::Info(code)
                }
            }
        };
        match &res {
            Res::Ok(body) => {
                let mut v = value;
                merge(&mut v, project(f, body));
                self.history.complete(inv, "ok", v, None);
            }
            Res::Fail(code, body) => {
                let mut v = value;
                if let Some(m) = body["error"].get("missing") {
                    merge(&mut v, json!({ "missing": m }));
                }
                self.history.complete(inv, "fail", v, Some(code.clone()));
            }
            Res::Info(code) => self
                .history
                .complete(inv, "info", value, Some(code.clone())),
        }
        res
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// What of an answer the history keeps.
fn project(f: &str, body: &Value) -> Value {
    match f {
        "create" | "create-again" | "quota-create" => json!({
            "upload_id": body["upload_id"],
            "chunk_count": body["chunk_count"],
        }),
        "complete" => {
            json!({ "file_id": body["id"], "blake3": body["blake3"], "size": body["size"] })
        }
        "read" => json!({ "value": body["name"] }),
        "link-create" => json!({ "token": body["token"] }),
        "usage" => {
            json!({ "used": body["used"], "reserved": body["reserved"], "quota": body["quota"] })
        }
        _ => json!({}),
    }
}

/// A file's bytes, reproducible from its seed.
pub fn content(seed: u64, size: u64) -> Vec<u8> {
    let mut data = vec![0u8; size as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Uploads of random sizes, chunks spread over random nodes; some abandoned, some aborted; an
/// idempotency key retried on another node now and then; deletes and verified downloads.
pub async fn upload_client(c: Clients, id: usize, seed: u64, until: Instant) {
    let p = format!("c{id}");
    let user = format!("u{id}");
    let mut rng = StdRng::seed_from_u64(seed ^ ((id as u64) << 32));
    let n = c.urls.len();
    let mut files: Vec<(String, String)> = Vec::new();
    let mut k = 0u64;
    while Instant::now() < until {
        k += 1;
        let size = if rng.gen_bool(0.6) {
            rng.gen_range(1..=CHUNK_SIZE)
        } else {
            rng.gen_range(CHUNK_SIZE..=5 * CHUNK_SIZE)
        };
        let content_seed = rng.next_u64();
        let data = content(content_seed, size);
        let blake3 = blake3::hash(&data).to_hex().to_string();
        let key = rng.gen_bool(0.2).then(|| format!("k-{id}-{k}"));
        let body =
            json!({ "name": format!("f-{id}-{k}.bin"), "size": size, "idempotency_key": key });
        let node = rng.gen_range(0..n);
        let value = json!({ "size": size, "content_seed": content_seed, "blake3": blake3, "idempotency_key": key });
        let req = c
            .request(node, Method::POST, "/v1/uploads", &user)
            .json(&body);
        let Res::Ok(created) = c.op(&p, "create", node, value.clone(), req).await else {
            // Not too fast against a cluster that refuses everything.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let upload = created["upload_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if key.is_some() {
            let other = (node + 1) % n;
            let req = c
                .request(other, Method::POST, "/v1/uploads", &user)
                .json(&body);
            c.op(&p, "create-again", other, value.clone(), req).await;
        }
        let count = created["chunk_count"].as_u64().unwrap_or(0) as u32;
        let fate = rng.gen_range(0..10);
        let send = if fate == 0 {
            rng.gen_range(0..=count)
        } else {
            count
        };
        let mut order: Vec<u32> = (0..count).collect();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let mut all_sent = true;
        for &index in order.iter().take(send as usize) {
            let start = (u64::from(index) * CHUNK_SIZE) as usize;
            let end = (start + CHUNK_SIZE as usize).min(data.len());
            let piece = data[start..end].to_vec();
            let hash = blake3::hash(&piece).to_hex().to_string();
            let mut acked = false;
            for _ in 0..4 {
                let node = rng.gen_range(0..n);
                let path = format!("/v1/uploads/{upload}/chunks/{index}");
                let req = c
                    .request(node, Method::PUT, &path, &user)
                    .header("x-wharf-blake3", &hash)
                    .body(piece.clone());
                let v = json!({ "upload_id": upload, "index": index });
                if let Res::Ok(_) = c.op(&p, "chunk", node, v, req).await {
                    acked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            all_sent &= acked;
        }
        let path = format!("/v1/uploads/{upload}");
        if fate == 1 {
            let node = rng.gen_range(0..n);
            let req = c.request(node, Method::DELETE, &path, &user);
            c.op(&p, "abort", node, json!({ "upload_id": upload }), req)
                .await;
        } else if fate != 0 && all_sent {
            for _ in 0..3 {
                let node = rng.gen_range(0..n);
                // Completion waits for the chunks' offload; give it time.
                let req = c
                    .request(node, Method::POST, &format!("{path}/complete"), &user)
                    .timeout(Duration::from_secs(30));
                let v = json!({ "upload_id": upload, "expect_blake3": blake3 });
                match c.op(&p, "complete", node, v, req).await {
                    Res::Ok(f) => {
                        if let Some(fid) = f["id"].as_str() {
                            files.push((fid.to_string(), blake3.clone()));
                        }
                        break;
                    }
                    Res::Fail(code, _) if code != "upload_completing" => break,
                    _ => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
        if !files.is_empty() && rng.gen_bool(0.3) {
            let (fid, expect) = files[rng.gen_range(0..files.len())].clone();
            let node = rng.gen_range(0..n);
            let inv = c.history.invoke(
                &p,
                "download",
                Some(node_number(node)),
                json!({ "file_id": fid }),
            );
            let req = c.request(
                node,
                Method::GET,
                &format!("/v1/files/{fid}/content"),
                &user,
            );
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => {
                        let got = blake3::hash(&b).to_hex().to_string();
                        (
                            "ok",
                            json!({ "file_id": fid, "blake3_ok": got == expect }),
                            None,
                        )
                    }
                    Err(_) => (
                        "info",
                        json!({ "file_id": fid }),
                        Some("body-lost".to_string()),
                    ),
                },
                Ok(r) => (
                    "fail",
                    json!({ "file_id": fid }),
                    Some(r.status().as_str().to_string()),
                ),
                Err(_) => (
                    "info",
                    json!({ "file_id": fid }),
                    Some("unreachable".into()),
                ),
            };
            c.history.complete(inv, outcome.0, outcome.1, outcome.2);
        }
        if files.len() > 3 && rng.gen_bool(0.15) {
            let (fid, _) = files.remove(rng.gen_range(0..files.len()));
            let node = rng.gen_range(0..n);
            let req = c.request(node, Method::DELETE, &format!("/v1/files/{fid}"), &user);
            c.op(&p, "delete", node, json!({ "file_id": fid }), req)
                .await;
        }
    }
}

/// Whole uploads through the Rust SDK over QUIC (through the UDP proxies): chunks spread over
/// every node, the SDK's own retries and failover; each upload is one operation.
pub async fn quic_upload_client(
    c: Clients,
    id: usize,
    seed: u64,
    until: Instant,
    quic_urls: Vec<String>,
    ca: Vec<u8>,
    dir: std::path::PathBuf,
) {
    let p = format!("c{id}");
    let user = format!("u{id}");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7175 ^ ((id as u64) << 32));
    let client = wharf_client::Client::with_trust(
        quic_urls,
        token(&user, "premium"),
        wharf_client::Trust::Ca(ca),
    );
    let Ok(mut client) = client else { return };
    client.parallel = 4;
    client.attempts = 6;
    let path = dir.join(format!("quic-upload-{id}.bin"));
    while Instant::now() < until {
        let size = rng.gen_range(1..=6 * CHUNK_SIZE);
        let content_seed = rng.next_u64();
        let data = content(content_seed, size);
        let blake3 = blake3::hash(&data).to_hex().to_string();
        if std::fs::write(&path, &data).is_err() {
            return;
        }
        let value = json!({ "size": size, "content_seed": content_seed, "expect_blake3": blake3 });
        let inv = c.history.invoke(&p, "sdk-upload", None, value.clone());
        let up = tokio::time::timeout(
            Duration::from_secs(60),
            client.upload(&path, None, |_| {}, None),
        )
        .await;
        let mut v = value;
        match up {
            Ok(Ok(u)) => {
                merge(
                    &mut v,
                    json!({ "file_id": u.file.id, "upload_id": u.upload_id, "blake3": u.file.blake3 }),
                );
                c.history.complete(inv, "ok", v, None);
            }
            Ok(Err(wharf_client::Error::Api { status, code, .. })) if status < 500 => {
                c.history.complete(inv, "fail", v, Some(code));
            }
            Ok(Err(e)) => {
                let kind = e.code().unwrap_or("unreachable").to_string();
                c.history.complete(inv, "info", v, Some(kind));
            }
            Err(_) => c.history.complete(inv, "info", v, Some("timeout".into())),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Rounds of creates racing for one fresh user's quota (room for two), then a usage read, then
/// the winners aborted.
pub async fn quota_client(c: Clients, id: usize, seed: u64, until: Instant) {
    let p = format!("c{id}");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x71 ^ ((id as u64) << 32));
    let n = c.urls.len();
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        let user = format!("q{id}-{round}");
        let nodes: Vec<usize> = (0..QUOTA_RACERS).map(|_| rng.gen_range(0..n)).collect();
        let racers = nodes.iter().enumerate().map(|(r, &node)| {
            let c = c.clone();
            let user = user.clone();
            let process = format!("c{}", id * 100 + r);
            async move {
                let body = json!({ "name": format!("q-{r}"), "size": QUOTA_CREATE });
                let req = c
                    .request(node, Method::POST, "/v1/uploads", &user)
                    .json(&body);
                let v = json!({ "user": user, "size": QUOTA_CREATE, "quota": BASIC_QUOTA });
                match c.op(&process, "quota-create", node, v, req).await {
                    Res::Ok(b) => b["upload_id"].as_str().map(str::to_string),
                    _ => None,
                }
            }
        });
        let won: Vec<String> = futures::future::join_all(racers)
            .await
            .into_iter()
            .flatten()
            .collect();
        let node = rng.gen_range(0..n);
        let req = c.request(node, Method::GET, "/v1/usage", &user);
        c.op(&p, "usage", node, json!({ "user": user }), req).await;
        for u in won {
            let node = rng.gen_range(0..n);
            let req = c.request(node, Method::DELETE, &format!("/v1/uploads/{u}"), &user);
            c.op(&p, "abort", node, json!({ "upload_id": u }), req)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
    }
}

/// The register: one small file per key, made before the faults begin; returns the file ids.
pub async fn register_setup(c: &Clients) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for key in 0..REGISTER_KEYS {
        let body = json!({ "name": format!("r{key}-init"), "size": 1 });
        let req = c.request(0, Method::POST, "/v1/uploads", "reg").json(&body);
        let Res::Ok(up) = c.op("setup", "create", 0, json!({}), req).await else {
            anyhow::bail!("register setup: create failed");
        };
        let u = up["upload_id"].as_str().unwrap_or_default().to_string();
        let mut file = None;
        for _ in 0..20 {
            let req = c
                .request(0, Method::PUT, &format!("/v1/uploads/{u}/chunks/0"), "reg")
                .body(vec![b'r']);
            c.op(
                "setup",
                "chunk",
                0,
                json!({ "upload_id": u, "index": 0 }),
                req,
            )
            .await;
            let req = c.request(0, Method::POST, &format!("/v1/uploads/{u}/complete"), "reg");
            if let Res::Ok(f) = c
                .op("setup", "complete", 0, json!({ "upload_id": u }), req)
                .await
            {
                file = Some(f);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let Some(f) = file else {
            anyhow::bail!("register setup: complete failed");
        };
        ids.push(f["id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

/// Renames (writes) and reads of the register files' names, as `role` says.
pub async fn register_client(
    c: Clients,
    id: usize,
    role: RegisterRole,
    keys: Vec<String>,
    seed: u64,
    until: Instant,
) {
    let p = format!("c{id}");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0072_6567 ^ ((id as u64) << 32));
    let n = c.urls.len();
    let mut k = 0;
    while Instant::now() < until {
        let key = rng.gen_range(0..keys.len());
        let fid = &keys[key];
        let (node, write) = match role {
            RegisterRole::Mixed => (rng.gen_range(0..n), rng.gen_bool(0.5)),
            RegisterRole::Reader(node) => (node, false),
            RegisterRole::Writer(node) => (node, true),
        };
        let path = format!("/v1/files/{fid}");
        if write {
            k += 1;
            let v = format!("v{id}-{k}");
            let req = c
                .request(node, Method::PATCH, &path, "reg")
                .json(&json!({ "name": v }));
            c.op(&p, "write", node, json!({ "key": key, "value": v }), req)
                .await;
        } else {
            let req = c.request(node, Method::GET, &path, "reg");
            c.op(&p, "read", node, json!({ "key": key }), req).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
    }
}
