//! wharf-client: the Rust SDK.
//!
//! [`Client::upload`] sends a file's chunks, N at a time, spread over the given nodes, with
//! retries (exponential backoff with jitter) and failover to the next node; given the id of an
//! upload begun before, it asks which chunks are missing and sends only those. It reads the file
//! chunk by chunk (memory is about N chunks, whatever the file's size) and hashes as it reads:
//! every chunk carries its BLAKE3, and the file's BLAKE3, combined from the chunks' subtree
//! hashes, must equal what the node reports. [`Client::download`] fetches ranges in parallel and
//! verifies the whole file's BLAKE3 before the file takes its name.
//!
//! Transports: a node is `http://host:port` (the REST API) or `quic://host:port` (wharf's QUIC
//! protocol, ALPN `wharf/1`); its scheme picks the transport, behind the same calls, and one
//! client may mix both.

mod error;
mod events;
mod https;
mod quic;
pub use error::{Error, Result};
pub use events::ServerEvent;
pub use quic::Trust;

use error::send;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use std::io::{Seek, Write};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use wharf_proto::hash::ChunkHasher;
use wharf_proto::{CreateAnswer, CreateUpload, FileList, FileRecord, UploadList, UploadStatus};

/// Reports progress: bytes done so far (of the bytes this call moves).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A node and the transport its scheme picked.
enum Node {
    Http(String),
    Quic(quic::QuicNode),
}

/// One operation, as either transport spells it.
enum Call<'a> {
    Create(&'a CreateUpload),
    Status(&'a str),
    Complete(&'a str),
    Abort(&'a str),
    Chunk {
        upload_id: &'a str,
        index: u32,
        data: &'a Bytes,
        blake3: &'a str,
    },
    File(&'a str),
    Delete(&'a str),
    List(Option<&'a str>),
    /// The caller's uploads in `state` (all when `None`), after a cursor.
    Uploads(Option<&'a str>, Option<&'a str>),
    /// A whole small file in one request.
    PutFile {
        name: &'a str,
        data: &'a Bytes,
        blake3: &'a str,
        idempotency_key: &'a str,
    },
}

/// Where an interrupted [`Client::upload`] continues: the upload its create made, or (killed
/// while that create was on its way) the idempotency key the create was sent with.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A new idempotency key for a create.
pub fn new_idempotency_key() -> String {
    format!("create-{}", uuid_like())
}

#[derive(Clone)]
pub struct Client {
    nodes: Arc<Vec<Node>>,
    /// Shared with the QUIC transport: `set_token` replaces it for every later request.
    token: Arc<std::sync::RwLock<String>>,
    http: reqwest::Client,
    /// For endless responses (event streams): no overall timeout.
    stream_http: reqwest::Client,
    quic: Option<Arc<quic::Transport>>,
    /// Chunks (or ranges) in flight.
    pub parallel: usize,
    /// Attempts per request before giving up.
    pub attempts: u32,
    /// Bytes per ranged read of a download.
    pub piece_size: u64,
    /// Files up to this size go in one request (`POST /v1/files`), not an upload session.
    pub single_request_max: u64,
}

/// What [`Client::upload`] did.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub file: FileRecord,
    pub upload_id: String,
    /// Chunks this call sent (a resumed upload sends only the missing ones).
    pub chunks_sent: u32,
    pub chunks_total: u32,
    /// How long each chunk this call sent took, from its first byte to its acknowledgement
    /// (retries included), in the order they were acknowledged.
    pub chunk_latencies: Vec<Duration>,
}

/// The default [`Client::piece_size`].
pub const DOWNLOAD_PIECE: u64 = 8 << 20;
/// Files up to this size are sent in one request (the node's default `upload.single_request_max`).
pub const SINGLE_REQUEST_MAX: u64 = 8 << 20;

impl Client {
    /// `nodes` are `http://host:port` base URLs; requests spread over them and fail over.
    pub fn new(nodes: Vec<String>, token: String) -> Result<Self> {
        Self::with_trust(nodes, token, Trust::Unset)
    }

    /// Like [`Client::new`], and `quic://host:port` nodes too, trusted as `trust` says.
    pub fn with_trust(nodes: Vec<String>, token: String, trust: Trust) -> Result<Self> {
        if nodes.is_empty() {
            return Err(Error::BadNode(String::new()));
        }
        let mut parsed = Vec::new();
        for n in &nodes {
            let n = n.trim_end_matches('/');
            if n.starts_with("http://") || n.starts_with("https://") {
                parsed.push(Node::Http(n.to_string()));
            } else if let Some(addr) = n.strip_prefix("quic://") {
                if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
                    return Err(Error::BadNode(n.to_string()));
                }
                parsed.push(Node::Quic(quic::QuicNode::new(addr)));
            } else {
                return Err(Error::BadNode(n.to_string()));
            }
        }
        let token = Arc::new(std::sync::RwLock::new(token));
        let quic = if parsed.iter().any(|n| matches!(n, Node::Quic(_))) {
            Some(Arc::new(quic::Transport::new(&trust, token.clone())?))
        } else {
            None
        };
        let builder = || -> Result<reqwest::ClientBuilder> {
            let mut b = reqwest::Client::builder();
            if let Some(tls) = https::config(&trust)? {
                b = b.use_preconfigured_tls(tls);
            }
            Ok(b)
        };
        let http = builder()?;
        let stream_http = builder()?
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let http = http
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(Self {
            nodes: Arc::new(parsed),
            token,
            http,
            stream_http,
            quic,
            parallel: 8,
            attempts: 8,
            piece_size: DOWNLOAD_PIECE,
            single_request_max: SINGLE_REQUEST_MAX,
        })
    }

    /// Replaces the bearer token (a fresh one before the old one expires, or after a request
    /// failed with `token_expired`): HTTP requests use it at once, QUIC connections reconnect
    /// with it once the node closed them at the old token's expiry.
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.write().expect("lock poisoned") = token.into();
    }

    fn token(&self) -> String {
        self.token.read().expect("lock poisoned").clone()
    }

    fn node(&self, n: usize) -> &Node {
        &self.nodes[n % self.nodes.len()]
    }

    fn quic(&self) -> &quic::Transport {
        self.quic
            .as_deref()
            .expect("a QUIC node implies the transport")
    }

    fn request(&self, base: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(self.token())
    }

    /// Runs `call` once on node `n`: the answer's JSON body (empty when it has none).
    async fn exec(&self, n: usize, call: &Call<'_>) -> Result<Vec<u8>> {
        match self.node(n) {
            Node::Http(base) => {
                let req = match *call {
                    Call::Create(c) => self.request(base, Method::POST, "/v1/uploads").json(c),
                    Call::Status(id) => {
                        self.request(base, Method::GET, &format!("/v1/uploads/{id}"))
                    }
                    Call::Complete(id) => {
                        self.request(base, Method::POST, &format!("/v1/uploads/{id}/complete"))
                    }
                    Call::Abort(id) => {
                        self.request(base, Method::DELETE, &format!("/v1/uploads/{id}"))
                    }
                    Call::Chunk {
                        upload_id,
                        index,
                        data,
                        blake3,
                    } => self
                        .request(
                            base,
                            Method::PUT,
                            &format!("/v1/uploads/{upload_id}/chunks/{index}"),
                        )
                        .header("x-wharf-blake3", blake3)
                        .body(data.clone()),
                    Call::File(id) => self.request(base, Method::GET, &format!("/v1/files/{id}")),
                    Call::Delete(id) => {
                        self.request(base, Method::DELETE, &format!("/v1/files/{id}"))
                    }
                    Call::List(cursor) => {
                        let path = match cursor {
                            Some(c) => format!("/v1/files?limit=1000&cursor={c}"),
                            None => "/v1/files?limit=1000".to_string(),
                        };
                        self.request(base, Method::GET, &path)
                    }
                    Call::Uploads(state, cursor) => {
                        let mut path =
                            format!("/v1/uploads?limit=1000&state={}", state.unwrap_or("all"));
                        if let Some(c) = cursor {
                            path.push_str(&format!("&cursor={c}"));
                        }
                        self.request(base, Method::GET, &path)
                    }
                    Call::PutFile {
                        name,
                        data,
                        blake3,
                        idempotency_key,
                    } => self
                        .request(base, Method::POST, "/v1/files")
                        .query(&[("name", name), ("idempotency_key", idempotency_key)])
                        .header("x-wharf-blake3", blake3)
                        .body(data.clone()),
                };
                let resp = send(req).await?;
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| Error::Unreachable(e.to_string()))?;
                Ok(body.to_vec())
            }
            Node::Quic(q) => {
                use wharf_proto::quic::{request::Op, Create, FileRef, ListFiles, UploadRef};
                let upload = |id: &str| UploadRef {
                    upload_id: id.to_string(),
                };
                let file = |id: &str| FileRef {
                    file_id: id.to_string(),
                };
                let mut body = None;
                let op = match *call {
                    Call::Create(c) => Op::Create(Create {
                        name: c.name.clone(),
                        size: c.size,
                        blake3: c.blake3.clone().unwrap_or_default(),
                        idempotency_key: c.idempotency_key.clone().unwrap_or_default(),
                        mime: c.mime.clone().unwrap_or_default(),
                        folder: c.folder.clone().unwrap_or_default(),
                        on_conflict: c.on_conflict.clone().unwrap_or_default(),
                    }),
                    Call::Status(id) => Op::Status(upload(id)),
                    Call::Complete(id) => Op::Complete(upload(id)),
                    Call::Abort(id) => Op::Abort(upload(id)),
                    Call::Chunk {
                        upload_id,
                        index,
                        data,
                        blake3,
                    } => {
                        body = Some(data.clone());
                        Op::Chunk(wharf_proto::quic::ChunkHeader {
                            upload_id: upload_id.to_string(),
                            index,
                            length: data.len() as u64,
                            blake3: wharf_proto::hash::parse_hex32(blake3)
                                .map(|b| b.to_vec())
                                .unwrap_or_default(),
                        })
                    }
                    Call::File(id) => Op::File(file(id)),
                    Call::Delete(id) => Op::Delete(file(id)),
                    Call::List(cursor) => Op::List(ListFiles {
                        cursor: cursor.unwrap_or_default().to_string(),
                        limit: 1000,
                    }),
                    Call::Uploads(state, cursor) => Op::Uploads(wharf_proto::quic::ListUploads {
                        state: state.unwrap_or_default().to_string(),
                        cursor: cursor.unwrap_or_default().to_string(),
                        limit: 1000,
                    }),
                    Call::PutFile {
                        name,
                        data,
                        blake3,
                        idempotency_key,
                    } => {
                        body = Some(data.clone());
                        Op::PutFile(wharf_proto::quic::PutFile {
                            name: name.to_string(),
                            length: data.len() as u64,
                            blake3: wharf_proto::hash::parse_hex32(blake3)
                                .map(|b| b.to_vec())
                                .unwrap_or_default(),
                            mime: String::new(),
                            idempotency_key: idempotency_key.to_string(),
                            folder: String::new(),
                            on_conflict: String::new(),
                        })
                    }
                };
                let req = wharf_proto::quic::Request { op: Some(op) };
                Ok(self.quic().call(q, req, body).await?.0)
            }
        }
    }

    /// [`Client::exec`] with retries and failover, starting at node `first`.
    async fn run<T: DeserializeOwned>(&self, first: usize, call: Call<'_>) -> Result<T> {
        let body = self.retry(first, |n| self.exec(n, &call)).await?;
        let body = if body.is_empty() {
            b"null".to_vec()
        } else {
            body
        };
        serde_json::from_slice(&body).map_err(|e| Error::Unreachable(format!("bad answer: {e}")))
    }

    /// Runs `attempt(node)` until it succeeds, a non-retryable error comes, or attempts run out;
    /// each retry goes to the next node after an exponential backoff with jitter.
    async fn retry<T, F, Fut>(&self, first_node: usize, mut attempt: F) -> Result<T>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n = 0u32;
        loop {
            match attempt(first_node + n as usize).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && n + 1 < self.attempts => {
                    let base = 100u64 << n.min(7);
                    let jitter = rand::thread_rng().gen_range(0..=base);
                    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates an upload session. Every create carries an idempotency key (a new one when
    /// `req` has none), kept across the retries: a node's 503 or a lost reply may hide a create
    /// that committed, and a retry must get that upload back instead of reserving twice.
    ///
    /// A create that declares the BLAKE3 of content the user already stores is answered with
    /// the file of it at once (dedup): nothing is left to send.
    pub async fn create(&self, req: &CreateUpload) -> Result<CreateAnswer> {
        if req.idempotency_key.is_some() {
            return self.run(0, Call::Create(req)).await;
        }
        let keyed = CreateUpload {
            idempotency_key: Some(new_idempotency_key()),
            ..req.clone()
        };
        self.run(0, Call::Create(&keyed)).await
    }

    pub async fn status(&self, upload_id: &str) -> Result<UploadStatus> {
        self.run(0, Call::Status(upload_id)).await
    }

    pub async fn file(&self, file_id: &str) -> Result<FileRecord> {
        self.run(0, Call::File(file_id)).await
    }

    /// Every file of the caller, page by page.
    pub async fn list(&self) -> Result<Vec<FileRecord>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page: FileList = self.run(0, Call::List(cursor.as_deref())).await?;
            out.extend(page.files);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Every upload of the caller in `state` (`uploading`, `stored`, `aborted`, `expired`; all
    /// when `None`), oldest first, page by page.
    pub async fn uploads(&self, state: Option<&str>) -> Result<Vec<UploadStatus>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page: UploadList = self.run(0, Call::Uploads(state, cursor.as_deref())).await?;
            out.extend(page.uploads);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Moves the file to the trash (as `DELETE /v1/files/{id}`).
    pub async fn delete(&self, file_id: &str) -> Result<()> {
        self.run::<serde::de::IgnoredAny>(0, Call::Delete(file_id))
            .await
            .map(|_| ())
    }

    pub async fn abort(&self, upload_id: &str) -> Result<()> {
        self.run::<serde::de::IgnoredAny>(0, Call::Abort(upload_id))
            .await
            .map(|_| ())
    }

    /// Uploads the file at `path`. With `resume`, continues that upload if it is still going
    /// (sending only the chunks the cluster lacks), or sends its create again with the same
    /// idempotency key. `on_point` learns the key before the create is sent and the upload's
    /// id before any chunk moves, so that an interrupted upload can be resumed without a
    /// second reservation.
    pub async fn upload(
        &self,
        path: &Path,
        resume: Option<&ResumePoint>,
        mut on_point: impl FnMut(&ResumePoint),
        progress: Option<Progress>,
    ) -> Result<Uploaded> {
        let size = tokio::fs::metadata(path).await?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        if resume.is_none() && size <= self.single_request_max {
            match self.put_small(path, &name, size).await {
                // A node whose limit is lower (413), or that predates one-request uploads
                // (404, 405), takes the file as an upload session.
                Err(Error::Api {
                    status: 404 | 405 | 413,
                    ..
                }) => {}
                other => return other,
            }
        }
        let resumed = match resume.and_then(|r| r.upload_id.as_deref()) {
            Some(id) => match self.status(id).await {
                Ok(s) if s.state == "uploading" && s.size == size => Some(s),
                Ok(_) | Err(Error::Api { status: 404, .. }) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (upload_id, chunk_size, count, missing) = match resumed {
            Some(s) => (s.upload_id, s.chunk_size, s.chunk_count, s.missing),
            None => {
                // A run killed while its create was on its way kept the key: the create sent
                // again gets that upload back (or a new one, if it ended meanwhile).
                let earlier = resume
                    .filter(|r| r.upload_id.is_none())
                    .and_then(|r| r.idempotency_key.clone());
                let again = earlier.is_some();
                let key = earlier.unwrap_or_else(new_idempotency_key);
                on_point(&ResumePoint {
                    upload_id: None,
                    idempotency_key: Some(key.clone()),
                });
                let created = match self
                    .create(&CreateUpload {
                        name,
                        size,
                        blake3: None,
                        mime: None,
                        idempotency_key: Some(key.clone()),
                        folder: None,
                        on_conflict: None,
                    })
                    .await?
                {
                    CreateAnswer::Upload(u) => u,
                    // Content this user stores already: nothing left to send.
                    CreateAnswer::File(file) => {
                        return Ok(Uploaded {
                            file: *file,
                            upload_id: String::new(),
                            chunks_sent: 0,
                            chunks_total: 0,
                            chunk_latencies: Vec::new(),
                        })
                    }
                };
                on_point(&ResumePoint {
                    upload_id: Some(created.upload_id.clone()),
                    idempotency_key: Some(key),
                });
                let missing = if again {
                    self.status(&created.upload_id).await?.missing
                } else {
                    (0..created.chunk_count).collect()
                };
                (
                    created.upload_id,
                    created.chunk_size,
                    created.chunk_count,
                    missing,
                )
            }
        };

        let sent = AtomicU64::new(0);
        let done_bytes = AtomicU64::new(0);
        let latencies = std::sync::Mutex::new(Vec::new());
        let missing: std::collections::HashSet<u32> = missing.into_iter().collect();
        // Every chunk is read and hashed once; only the missing ones are sent.
        let hashes: Vec<(u32, String, String)> = stream::iter(0..count)
            .map(|index| {
                let (sent, done_bytes, progress) = (&sent, &done_bytes, progress.clone());
                let latencies = &latencies;
                let send_it = missing.contains(&index);
                let upload_id = upload_id.as_str();
                async move {
                    let data = read_chunk(path, index, chunk_size, size).await?;
                    let mut h = ChunkHasher::new(u64::from(index) * chunk_size);
                    h.update(&data);
                    let (plain, cv) = h.finish();
                    if send_it {
                        let t0 = std::time::Instant::now();
                        self.put_chunk(upload_id, index, &data, &plain).await?;
                        latencies.lock().expect("latencies").push(t0.elapsed());
                        sent.fetch_add(1, Ordering::Relaxed);
                        let d = done_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(p) = &progress {
                            p(d + data.len() as u64);
                        }
                    }
                    Ok::<_, Error>((index, plain, cv))
                }
            })
            .buffered(self.parallel.max(1))
            .try_collect()
            .await?;

        // A chunk acknowledged by a node that then stayed away past the cluster's grace time
        // is missing again: send it again (to another node) and complete once more.
        let mut rounds = 0;
        let file = loop {
            match self.complete(&upload_id).await {
                Ok(f) => break f,
                Err(e) if e.code() == Some("missing_chunks") && rounds < 5 => {
                    rounds += 1;
                    let again = self.status(&upload_id).await?.missing;
                    for index in again {
                        let data = read_chunk(path, index, chunk_size, size).await?;
                        let plain = &hashes[index as usize].1;
                        self.put_chunk(&upload_id, index, &data, plain).await?;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let refs: Vec<(&str, &str)> = hashes
            .iter()
            .map(|(_, a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mine = wharf_proto::hash::whole_file(&refs).map_err(|e| Error::Checksum {
            expected: file.blake3.clone(),
            actual: e,
        })?;
        if mine != file.blake3 {
            return Err(Error::Checksum {
                expected: mine,
                actual: file.blake3,
            });
        }
        Ok(Uploaded {
            file,
            upload_id,
            chunks_sent: sent.load(Ordering::Relaxed) as u32,
            chunks_total: count,
            chunk_latencies: latencies.into_inner().expect("latencies"),
        })
    }

    /// A small file in one request. The idempotency key makes a retry (another node, a lost
    /// reply) answer with the file the first try made instead of storing it twice.
    async fn put_small(&self, path: &Path, name: &str, size: u64) -> Result<Uploaded> {
        let data = Bytes::from(tokio::fs::read(path).await?);
        if data.len() as u64 != size {
            return Err(Error::Io(std::io::Error::other(format!(
                "{} changed while it was read",
                path.display()
            ))));
        }
        let plain = blake3::hash(&data).to_hex().to_string();
        let key = format!("put-{}", uuid_like());
        let t0 = std::time::Instant::now();
        let file: FileRecord = self
            .run(
                0,
                Call::PutFile {
                    name,
                    data: &data,
                    blake3: &plain,
                    idempotency_key: &key,
                },
            )
            .await?;
        if file.blake3 != plain {
            return Err(Error::Checksum {
                expected: plain,
                actual: file.blake3,
            });
        }
        Ok(Uploaded {
            file,
            upload_id: String::new(),
            chunks_sent: 1,
            chunks_total: 1,
            chunk_latencies: vec![t0.elapsed()],
        })
    }

    async fn put_chunk(
        &self,
        upload_id: &str,
        index: u32,
        data: &Bytes,
        blake3: &str,
    ) -> Result<()> {
        // Chunks spread over the nodes; a retry moves to the next one.
        let call = Call::Chunk {
            upload_id,
            index,
            data,
            blake3,
        };
        self.run::<serde::de::IgnoredAny>(index as usize, call)
            .await
            .map(|_| ())
    }

    async fn complete(&self, upload_id: &str) -> Result<FileRecord> {
        self.run(0, Call::Complete(upload_id)).await
    }

    /// Downloads a file to `dest`: ranges in parallel into `dest.part`, the whole file's BLAKE3
    /// checked, then renamed into place.
    pub async fn download(
        &self,
        file_id: &str,
        dest: &Path,
        progress: Option<Progress>,
    ) -> Result<FileRecord> {
        let file = self.file(file_id).await?;
        let part = part_path(dest);
        // A new inode: blocking writes of an earlier, abandoned download of the same file may
        // still be running on the old one.
        let _ = tokio::fs::remove_file(&part).await;
        let out = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .await?;
        out.set_len(file.size).await?;
        // One handle, written with blocking writes that have finished when they return: a
        // tokio `File` acknowledges `write_all` while its last write is still in flight (and
        // dropping it does not wait), so the hash below could read a range's old bytes.
        let out = Arc::new(std::sync::Mutex::new(out.into_std().await));
        let piece = self.piece_size.max(1);
        let pieces = file.size.div_ceil(piece);
        let done = AtomicU64::new(0);
        stream::iter(0..pieces)
            .map(|i| {
                let (out, done, progress) = (out.clone(), &done, progress.clone());
                async move {
                    let start = i * piece;
                    let end = (start + piece).min(file.size) - 1;
                    let bytes = self.range(file_id, start, end, i as usize).await?;
                    let n = bytes.len() as u64;
                    blocking(move || {
                        let mut f = out.lock().expect("download file");
                        f.seek(std::io::SeekFrom::Start(start))?;
                        f.write_all(&bytes)
                    })
                    .await?;
                    let d = done.fetch_add(n, Ordering::Relaxed);
                    if let Some(p) = &progress {
                        p(d + n);
                    }
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(self.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let actual = blocking(move || -> std::io::Result<String> {
            let mut f = out.lock().expect("download file");
            f.sync_all()?;
            f.seek(std::io::SeekFrom::Start(0))?;
            let mut h = blake3::Hasher::new();
            h.update_reader(&mut *f)?;
            Ok(h.finalize().to_hex().to_string())
        })
        .await?;
        if actual != file.blake3 {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(Error::Checksum {
                expected: file.blake3,
                actual,
            });
        }
        tokio::fs::rename(&part, dest).await?;
        Ok(file)
    }

    async fn range(&self, file_id: &str, start: u64, end: u64, node: usize) -> Result<Vec<u8>> {
        let path = format!("/v1/files/{file_id}/content");
        let (len, path) = (end - start + 1, path.as_str());
        self.retry(node, |n| async move {
            match self.node(n) {
                Node::Http(base) => {
                    let req = self
                        .request(base, Method::GET, path)
                        .header("Range", format!("bytes={start}-{end}"));
                    let resp = send(req).await?;
                    let bytes = resp
                        .bytes()
                        .await
                        .map_err(|e| Error::Unreachable(e.to_string()))?;
                    if bytes.len() as u64 != len {
                        return Err(Error::Unreachable("short range read".into()));
                    }
                    Ok(bytes.to_vec())
                }
                Node::Quic(q) => {
                    let op = wharf_proto::quic::request::Op::Read(wharf_proto::quic::Read {
                        file_id: file_id.to_string(),
                        offset: start,
                        length: len,
                    });
                    let req = wharf_proto::quic::Request { op: Some(op) };
                    self.quic().read(q, req, start, len).await
                }
            }
        })
        .await
    }
}

/// Runs blocking file work off the async threads; it has finished when this returns.
/// 128 random bits in hex: a key no other client picks.
fn uuid_like() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)??)
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

async fn read_chunk(path: &Path, index: u32, chunk_size: u64, size: u64) -> Result<Bytes> {
    let start = u64::from(index) * chunk_size;
    let len = size.saturating_sub(start).min(chunk_size) as usize;
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut data = bytes::BytesMut::with_capacity(len);
    while data.len() < len {
        if f.read_buf(&mut data).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(data.freeze())
}
