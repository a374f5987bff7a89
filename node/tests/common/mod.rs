//! Real `wharf` node processes for integration tests: own data dir, HTTP and gRPC on loopback
//! ports of their own (kept across restarts), killed on drop.

#![allow(dead_code)]

pub mod clamd;
pub mod drive;
pub mod prometheus;
pub mod quic;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use wharf_node::auth::Keys;
use wharf_raft::model::Tier;

pub const MIB: usize = 1 << 20;

pub struct Node {
    child: Child,
    pub base: String,
    pub peer_addr: String,
    /// The client QUIC endpoint, `host:port`.
    pub quic_addr: String,
    pub node_id: u64,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    pub http: Client,
    /// The last lines the node logged (when they are not kept in WHARF_TEST_LOG_DIR): printed
    /// if the test fails, after its panic message, so that a cut log still shows the message.
    log_tail: Option<LogTail>,
}

type LogTail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;
const LOG_TAIL_LINES: usize = 40;

/// Keeps the last lines of a node's stderr.
fn keep_tail(stderr: std::process::ChildStderr) -> LogTail {
    let tail = LogTail::default();
    let keep = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut t = keep.lock().unwrap();
            if t.len() == LOG_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    tail
}

impl Node {
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        Self::spawn(data_dir, env, &[])
    }

    /// A node that finds no clamd (its probe looks at a socket that does not exist): files are
    /// stored and served unscanned, for tests about something else than scanning.
    pub fn start_unscanned(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        let probe = no_clamd(data_dir);
        let mut env = env.to_vec();
        env.push(("WHARF_SCAN_CLAMD_PROBE", &probe));
        Self::spawn(data_dir, &env, &[])
    }

    /// Starts a node with extra command-line arguments (`--join …`), on ports of its own below
    /// the ephemeral range (see [`stable_port`]), so that it can be restarted on them.
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let http = format!("127.0.0.1:{}", stable_port());
            let peer = format!("127.0.0.1:{}", stable_port());
            match Self::try_spawn_at(data_dir, env, args, &http, &peer) {
                Ok(node) => return node,
                // Another process took a port between the pick and the bind: pick again.
                Err(log) if log.contains("in use") => last = log,
                Err(log) => panic!("node did not start; it logged:\n{log}"),
            }
        }
        panic!("node did not start on five pairs of ports; it logged:\n{last}")
    }

    /// Starts a node on given addresses (a restarted node keeps the addresses it advertised).
    pub fn spawn_at(
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        http_addr: &str,
        peer_addr: &str,
    ) -> Node {
        Self::try_spawn_at(data_dir, env, args, http_addr, peer_addr)
            .unwrap_or_else(|log| panic!("node did not start; it logged:\n{log}"))
    }

    /// Starts a node, or gives what it logged before it exited.
    fn try_spawn_at(
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        http_addr: &str,
        peer_addr: &str,
    ) -> Result<Node, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args([
            "node",
            "start",
            "--http-addr",
            http_addr,
            "--peer-addr",
            peer_addr,
            "--quic-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env(
            "WHARF_LOG",
            std::env::var("WHARF_TEST_LOG").unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .stdout(Stdio::piped());
        // WHARF_TEST_LOG_DIR keeps each node's log in a file of its own.
        match std::env::var("WHARF_TEST_LOG_DIR") {
            Ok(dir) => {
                let name = format!(
                    "{}-{}.log",
                    data_dir.file_name().unwrap().to_string_lossy(),
                    std::process::id()
                );
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(&dir).join(name))
                    .unwrap();
                cmd.stderr(f);
            }
            Err(_) => {
                cmd.stderr(Stdio::piped());
            }
        }
        cmd.args(args);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wharf");
        let log_tail = child.stderr.take().map(keep_tail);
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        // "wharf node N listening on http://ADDR (peer ADDR)"
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(base) = words
            .iter()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .map(|w| w.to_string())
        else {
            let _ = child.wait();
            // The log thread reads what is left of stderr.
            std::thread::sleep(Duration::from_millis(200));
            let log: Vec<String> = log_tail
                .as_ref()
                .map(|t| t.lock().unwrap().iter().cloned().collect())
                .unwrap_or_default();
            return Err(format!("stdout {line:?}\n{}", log.join("\n")));
        };
        let after = |tag: &str| {
            words
                .iter()
                .position(|w| *w == tag)
                .and_then(|i| words.get(i + 1))
                .map(|w| w.trim_end_matches(')').to_string())
                .unwrap_or_default()
        };
        let peer_addr = after("(peer");
        let quic_addr = words
            .iter()
            .find_map(|w| w.strip_prefix("quic://"))
            .unwrap_or_default()
            .to_string();
        let node_id = words.get(2).and_then(|w| w.parse().ok()).unwrap_or(0);
        let https = base.starts_with("https://");
        Ok(Node {
            child,
            base,
            peer_addr,
            quic_addr,
            node_id,
            data_dir: data_dir.to_path_buf(),
            env,
            // An https:// node serves its cluster certificate (named wharf-node, not the
            // address): tests of the trust itself use the SDK with the CA pinned.
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .danger_accept_invalid_certs(https)
                .build()
                .unwrap(),
            log_tail,
        })
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) -> NodeDir {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        NodeDir {
            data_dir: self.data_dir.clone(),
            env: std::mem::take(&mut self.env),
            http_addr: self.http_addr(),
            peer_addr: self.peer_addr.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `within` for the process to exit: its exit status, or `None`
    /// if it still runs (it is then killed on drop).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `host:port` of the HTTP API, for raw sockets.
    pub fn http_addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }

    pub fn token(&self, user: &str, tier: Tier) -> String {
        Keys::load_or_create("", &self.data_dir)
            .unwrap()
            .issue(user, tier, Duration::from_secs(3600))
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, token: &str, path: &str) -> RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, token: &str, path: &str) -> RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    pub fn put(&self, token: &str, path: &str) -> RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(token)
    }

    pub fn delete(&self, token: &str, path: &str) -> RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(token)
    }

    pub async fn create(&self, token: &str, body: Value) -> (StatusCode, Value) {
        json(
            self.post(token, "/v1/uploads")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn put_chunk(
        &self,
        token: &str,
        upload: &str,
        index: usize,
        data: &[u8],
    ) -> StatusCode {
        self.try_put_chunk(token, upload, index, data)
            .await
            .unwrap()
    }

    /// A chunk PUT whose connection may be cut (a node that refuses early closes it while the
    /// body is still being sent): what a retrying client sees.
    pub async fn try_put_chunk(
        &self,
        token: &str,
        upload: &str,
        index: usize,
        data: &[u8],
    ) -> Result<StatusCode, reqwest::Error> {
        Ok(self
            .put(token, &format!("/v1/uploads/{upload}/chunks/{index}"))
            .header("x-wharf-blake3", blake3::hash(data).to_hex().to_string())
            .body(data.to_vec())
            .send()
            .await?
            .status())
    }

    pub async fn complete(&self, token: &str, upload: &str) -> (StatusCode, Value) {
        json(
            self.post(token, &format!("/v1/uploads/{upload}/complete"))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn status(&self, token: &str, upload: &str) -> (StatusCode, Value) {
        json(
            self.get(token, &format!("/v1/uploads/{upload}"))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn download(&self, token: &str, file: &str) -> Vec<u8> {
        let r = self
            .get(token, &format!("/v1/files/{file}/content"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap().to_vec()
    }

    /// The ids of every file of the token's user, page by page (`stale`: this node's own view).
    pub async fn file_ids(&self, token: &str, stale: bool) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let mut cursor = String::new();
        let consistency = if stale { "&consistency=stale" } else { "" };
        loop {
            let path = format!("/v1/files?limit=1000{consistency}{cursor}");
            let (st, page) = json(self.get(token, &path).send().await.unwrap()).await;
            assert_eq!(st, StatusCode::OK, "{page}");
            for f in page["files"].as_array().unwrap() {
                ids.insert(f["id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return ids,
            }
        }
    }

    pub async fn usage(&self, token: &str) -> Value {
        json(self.get(token, "/v1/usage").send().await.unwrap())
            .await
            .1
    }

    /// Uploads `data` in chunks (sent concurrently, in reverse order) and completes it.
    pub async fn upload(&self, token: &str, name: &str, data: &[u8]) -> Value {
        let (st, up) = self
            .create(
                token,
                serde_json::json!({
                    "name": name,
                    "size": data.len(),
                    "blake3": blake3::hash(data).to_hex().to_string(),
                }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{up}");
        let id = up["upload_id"].as_str().unwrap().to_string();
        let cs = up["chunk_size"].as_u64().unwrap() as usize;
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(cs).collect()
        };
        let puts = chunks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| self.put_chunk(token, &id, i, c));
        for st in futures::future::join_all(puts).await {
            assert_eq!(st, StatusCode::NO_CONTENT);
        }
        let (st, file) = self.complete(token, &id).await;
        assert_eq!(st, StatusCode::OK, "{file}");
        file
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(tail) = &self.log_tail {
                std::thread::sleep(Duration::from_millis(100));
                let lines = tail.lock().unwrap();
                eprintln!(
                    "--- the last {} lines node {} ({}) logged:",
                    lines.len(),
                    self.node_id,
                    self.base
                );
                for l in lines.iter() {
                    eprintln!("    {l}");
                }
            }
        }
    }
}

/// A TCP port free on loopback now, below the kernel's ephemeral range (32768-60999 by
/// default), from which outgoing connections and port-0 binds take theirs: while a node that
/// owns it is down for a restart, no other socket of the machine is given it by chance.
pub fn stable_port() -> u16 {
    use rand::Rng;
    loop {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A TCP port free on loopback right now (for servers the tests start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `spawn` with owned environment pairs plus borrowed extras.
pub fn spawn_with(
    dir: &Path,
    env: &[(String, String)],
    extra: &[(&str, &str)],
    args: &[&str],
) -> Node {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    Node::spawn(dir, &all, args)
}

/// Runs `wharf node start` (every port 0) to the end and returns its stderr, asserting that it
/// failed: for starts that must be refused.
pub fn start_must_fail(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["node", "start", "--http-addr", "127.0.0.1:0"])
        .args(["--peer-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run wharf");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the node started: {err}");
    err
}

/// Three nodes of one cluster over the test S3 server, data dirs `n0`, `n1`, `n2` under `dir`
/// (`n0` forms the cluster, the others join it), with no clamd where they look for one, and
/// `extra` in their environment.
/// A clamd probe address where no clamd will ever answer.
pub fn no_clamd(dir: &Path) -> String {
    format!("unix:{}", dir.join("no-clamd.ctl").display())
}

pub fn three_nodes_over_s3(dir: &Path, s3: &s3::S3, extra: &[(&str, &str)]) -> [Node; 3] {
    let probe = no_clamd(dir);
    let mut env = vec![("WHARF_SCAN_CLAMD_PROBE", probe.as_str())];
    env.extend_from_slice(extra);
    let n0 = spawn_with(&dir.join("n0"), &s3.env(), &env, &[]);
    let join = join_args(&n0);
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let n1 = spawn_with(&dir.join("n1"), &s3.env(), &env, &join);
    let n2 = spawn_with(&dir.join("n2"), &s3.env(), &env, &join);
    [n0, n1, n2]
}

/// `--join <first's peer address> --token <a join token made through first>`: what a node
/// needs to join the cluster that `first` made (the token admits up to eight nodes).
pub fn join_args(first: &Node) -> Vec<String> {
    let token = wharf_cli(&[
        "cluster",
        "token",
        "--uses",
        "8",
        "--data-dir",
        &first.data_dir.display().to_string(),
    ]);
    vec![
        "--join".into(),
        first.peer_addr.clone(),
        "--token".into(),
        token.trim().to_string(),
    ]
}

/// Runs the `wharf` CLI and returns its stdout; panics with its stderr if it fails.
pub fn wharf_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .output()
        .expect("run wharf");
    assert!(
        out.status.success(),
        "wharf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What is left of a killed node: enough to start it again.
pub struct NodeDir {
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    http_addr: String,
    peer_addr: String,
}

impl NodeDir {
    pub fn restart(self) -> Node {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Node::spawn_at(&self.data_dir, &env, &[], &self.http_addr, &self.peer_addr)
    }
}

pub async fn json(r: Response) -> (StatusCode, Value) {
    let st = r.status();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({st}): {text}"))
    };
    (st, v)
}

/// Asserts an error answer: status and stable code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(got.1["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
