//! The client QUIC endpoint (quinn, ALPN `wharf/1`): the same operations and semantics as the
//! HTTP API, one bidirectional stream per request and one per chunk. The server certificate is
//! the node's, from the cluster CA, so clients pin the CA (`tls/ca.pem`).
//!
//! A malformed or oversized frame resets that stream with [`MALFORMED`]; the connection and the
//! node go on serving.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use quinn::{RecvStream, SendStream, VarInt};
use wharf_cluster::Identity;
use wharf_proto::quic::{
    read_frame, request::Op, write_frame, Hello, Reply, Request, ALPN, CONNECTION_WINDOW,
    STREAM_WINDOW,
};
use wharf_proto::CreateUpload;

use crate::actors::quota::Created;
use crate::actors::uploads::{ChunkPut, SmallFile};
use crate::api::http::files::{file_record, list_page, servable_file};
use crate::api::http::uploads::{deduplicated, upload_status_body, uploads_page, validate_create};
use crate::api::http::{parse_id, AppState};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::meta::rfc3339;
use crate::store::ByteStream;

/// A chunk's body reaches the upload actor in pieces of this size.
const BODY_PIECE: usize = 256 * 1024;

/// Stream error code: the frame could not be read or decoded.
pub const MALFORMED: VarInt = VarInt::from_u32(0x10);
/// Connection close code: the Hello's token was refused.
pub const UNAUTHORIZED: VarInt = VarInt::from_u32(0x11);
/// Connection close code: no valid Hello came within `quic.hello_timeout_secs`.
pub const HELLO_TIMEOUT: VarInt = VarInt::from_u32(0x12);
/// Connection close code: the connection's token expired; reconnect with a fresh one.
pub const TOKEN_EXPIRED: VarInt = VarInt::from_u32(0x13);
/// Connection close code: the node or the user is at its connection limit.
pub const TOO_MANY_CONNECTIONS: VarInt = VarInt::from_u32(0x14);
/// The node is stopping (the code a plain close carries: no error).
pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(0);

/// How long requests under way may finish after the connection's token expired.
const EXPIRY_DRAIN: Duration = Duration::from_secs(30);
/// How long a request's task waits for the client to take its answer.
const REPLY_DELIVERY: Duration = Duration::from_secs(5);

/// Until its Hello is accepted a connection may buffer this much, on one stream.
const HELLO_WINDOW: u32 = 64 * 1024;

/// The endpoint's limits (from `[quic]`).
pub struct Limits {
    pub hello_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_connections_per_ip: usize,
    /// `node.drain_secs`: how long requests under way may go on once the node is stopping.
    pub drain: Duration,
}

impl Limits {
    pub fn new(c: &crate::config::QuicConfig, drain_secs: u64) -> Self {
        Self {
            drain: Duration::from_secs(drain_secs),
            hello_timeout: Duration::from_secs(c.hello_timeout_secs),
            max_connections: c.max_connections,
            max_connections_per_user: c.max_connections_per_user,
            max_connections_per_ip: c.max_connections_per_ip,
        }
    }
}

/// Open connections, in all and per user.
#[derive(Default)]
struct Counts {
    open: std::sync::atomic::AtomicUsize,
    per_user: crate::limits::Slots<String>,
    /// Before its Hello a connection is known by its address only.
    per_ip: crate::limits::Slots<std::net::IpAddr>,
}

fn server_config(identity: &Identity) -> anyhow::Result<quinn::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("node certificate")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).context("node key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Until the Hello is accepted: one stream and a small window (raised in `connection`), so
    // that a client that never says Hello cannot make the node buffer much for it.
    transport
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(HELLO_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_secs(10)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Binds the endpoint; serving starts with [`serve`].
pub fn bind(addr: SocketAddr, identity: &Identity) -> anyhow::Result<quinn::Endpoint> {
    let socket =
        wharf_proto::quic::udp_socket(addr).with_context(|| format!("binding QUIC to {addr}"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(identity)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .with_context(|| format!("binding QUIC to {addr}"))
}

/// Serves the endpoint until the node begins to stop (`app.stopping`); then takes no new
/// connection, lets each connection's requests under way finish for at most `limits.drain`,
/// and returns once every connection has ended (or the drain time is over).
pub async fn serve(endpoint: quinn::Endpoint, app: AppState, limits: Limits) {
    use std::sync::atomic::Ordering;
    let shared = Arc::new((Counts::default(), limits));
    let stopping = app.stopping.clone();
    loop {
        let incoming = tokio::select! {
            _ = stopping.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let (counts, limits) = &*shared;
        if counts.open.load(Ordering::Relaxed) >= limits.max_connections {
            incoming.refuse();
            continue;
        }
        let ip = incoming.remote_address().ip();
        let Some(per_ip) = counts.per_ip.take(&ip, limits.max_connections_per_ip) else {
            incoming.refuse();
            continue;
        };
        counts.open.fetch_add(1, Ordering::Relaxed);
        let (app, shared) = (app.clone(), shared.clone());
        tokio::spawn(async move {
            let _per_ip = per_ip;
            let (counts, limits) = &*shared;
            if let Ok(Ok(conn)) = tokio::time::timeout(limits.hello_timeout, incoming).await {
                connection(conn, app, counts, limits).await;
            }
            counts.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // New connections are refused from here on; the open ones are draining.
    endpoint.set_server_config(None);
    let (counts, limits) = &*shared;
    let _ = tokio::time::timeout(limits.drain, async {
        while counts.open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn connection(conn: quinn::Connection, app: AppState, counts: &Counts, limits: &Limits) {
    let hello = tokio::time::timeout(limits.hello_timeout, async {
        let (send, mut recv) = conn.accept_bi().await.ok()?;
        Some((send, read_frame::<Hello, _>(&mut recv).await))
    })
    .await;
    let (mut send, hello) = match hello {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(_) => {
            conn.close(HELLO_TIMEOUT, b"no hello in time");
            return;
        }
    };
    let claims = match hello {
        Ok(hello) => app.keys.verify(hello.token.trim()).await,
        Err(_) => {
            let _ = send.reset(MALFORMED);
            conn.close(MALFORMED, b"malformed hello");
            return;
        }
    };
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            let code = if e.status_and_code().1 == "token_expired" {
                TOKEN_EXPIRED
            } else {
                UNAUTHORIZED
            };
            let _ = write_reply(&mut send, Err(e)).await;
            // Give the reply a moment to leave before the connection goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(code, b"unauthorized");
            return;
        }
    };
    let Some(_slot) = counts
        .per_user
        .take(&claims.sub, limits.max_connections_per_user)
    else {
        let _ = write_reply(
            &mut send,
            Err(Error::conflict(
                "too_many_connections",
                format!(
                    "this user has {} QUIC connections to this node already",
                    limits.max_connections_per_user
                ),
            )),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close(TOO_MANY_CONNECTIONS, b"too many connections");
        return;
    };
    conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(64));
    let _ = write_reply(&mut send, Ok(serde_json::json!({ "user": claims.sub }))).await;
    // The token is accepted as long as HTTP accepts it (its expiry plus the same leeway).
    let ends = claims.exp + crate::auth::LEEWAY_SECS;
    let expiry = tokio::time::sleep(Duration::from_secs(
        ends.saturating_sub(crate::auth::now_secs()),
    ));
    tokio::pin!(expiry);
    let mut requests = tokio::task::JoinSet::new();
    let stopping = loop {
        tokio::select! {
            accepted = conn.accept_bi() => {
                let Ok((send, recv)) = accepted else { return };
                let (app, claims) = (app.clone(), claims.clone());
                // Each request knows where it came from (for the audit log).
                let (addr, node) = (conn.remote_address().ip().to_string(), app.meta.node_id);
                requests.spawn(wharf_cluster::origin::scope(addr, node, async move {
                    wharf_cluster::origin::set_actor(&claims.sub);
                    stream(send, recv, claims, app).await
                }));
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            _ = &mut expiry => break false,
            _ = app.stopping.cancelled() => break true,
        }
    };
    // Expired or stopping: no new request is taken; those under way finish (for a bounded
    // time), then the connection is closed, so that the client reconnects (with a fresh token,
    // or to another node).
    let drain = if stopping { limits.drain } else { EXPIRY_DRAIN };
    let _ = tokio::time::timeout(drain, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    if stopping {
        conn.close(SHUTTING_DOWN, b"shutting down");
    } else {
        conn.close(TOKEN_EXPIRED, b"token expired");
    }
}

/// One request, answered; returns once the client has its answer (or a while has passed), so
/// that a connection closed after its requests (on shutdown, at token expiry) does not cut
/// the last answers short.
async fn stream(mut send: SendStream, recv: RecvStream, c: Claims, app: AppState) {
    answer(&mut send, recv, c, app).await;
    let _ = tokio::time::timeout(REPLY_DELIVERY, send.stopped()).await;
}

async fn answer(send: &mut SendStream, mut recv: RecvStream, c: Claims, app: AppState) {
    if c.exp + crate::auth::LEEWAY_SECS <= crate::auth::now_secs() {
        let _ = write_reply(
            send,
            Err(Error::unauthorized(
                "token_expired",
                "the token has expired",
            )),
        )
        .await;
        return;
    }
    let req = match read_frame::<Request, _>(&mut recv).await {
        Ok(Request { op: Some(op) }) => op,
        _ => {
            let _ = send.reset(MALFORMED);
            let _ = recv.stop(MALFORMED);
            return;
        }
    };
    // Chunk bodies and one-request files are limited by bytes (and creations) instead.
    if !matches!(req, Op::Chunk(_) | Op::PutFile(_)) {
        if let Err(r) = app.rate.user_request(&c.sub, c.tier) {
            let _ = write_reply(send, Err(Error::RateLimited(r))).await;
            return;
        }
    }
    let (op, started) = (op_name(&req), std::time::Instant::now());
    let outcome = if let Op::Read(r) = req {
        // A ranged read: the reply, then the bytes.
        match read(r, &c, &app).await {
            Ok((head, body)) => {
                let _ = send_read(send, head, body).await;
                "ok"
            }
            Err(e) => {
                let code = e.status_and_code().1;
                let _ = write_reply(send, Err(e)).await;
                code
            }
        }
    } else {
        let res = handle(req, recv, &c, &app).await;
        let code = match &res {
            Ok(_) => "ok",
            Err(e) => e.status_and_code().1,
        };
        let _ = write_reply(send, res).await;
        code
    };
    metrics::counter!("wharf_quic_requests_total", "op" => op, "result" => outcome).increment(1);
    metrics::histogram!("wharf_quic_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// A request's operation, as the QUIC metrics name it.
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Abort(_) => "abort",
        Op::Chunk(_) => "chunk",
        Op::Complete(_) => "complete",
        Op::Create(_) => "create",
        Op::ListFolder(_) => "list_folder",
        Op::DeleteFolder(_) => "delete_folder",
        Op::Delete(_) => "delete",
        Op::File(_) => "file",
        Op::List(_) => "list",
        Op::PutFile(_) => "put_file",
        Op::Read(_) => "read",
        Op::Status(_) => "status",
        Op::Uploads(_) => "uploads",
    }
}

async fn read(
    r: wharf_proto::quic::Read,
    c: &Claims,
    app: &AppState,
) -> Result<(serde_json::Value, ByteStream)> {
    let (f, _) = servable_file(app, c, &r.file_id).await?;
    if r.offset > f.size || r.length > f.size - r.offset {
        return Err(Error::RangeNotSatisfiable { size: f.size });
    }
    let body = app.store.get(&f.object_key, r.offset, r.length).await?;
    // A download reads its ranges in parallel: the one from the start counts it.
    if r.offset == 0 {
        app.downloads.record("download.quic", &f.owner, &f.id).await;
    }
    let record = file_record(&app.meta.local(), &f);
    Ok((
        serde_json::json!({ "offset": r.offset, "length": r.length, "file": record }),
        body,
    ))
}

async fn send_read(
    send: &mut SendStream,
    head: serde_json::Value,
    mut body: ByteStream,
) -> io::Result<()> {
    write_frame(send, &ok_reply(&head)).await?;
    while let Some(bytes) = body.next().await {
        send.write_chunk(bytes?).await.map_err(io::Error::other)?;
    }
    send.finish().map_err(io::Error::other)
}

async fn handle(op: Op, recv: RecvStream, c: &Claims, app: &AppState) -> Result<serde_json::Value> {
    let json =
        |v: serde_json::Result<serde_json::Value>| v.map_err(|e| Error::Internal(e.to_string()));
    match op {
        Op::Read(_) => Err(Error::Internal("reads are served by `read`".into())),
        Op::File(r) => {
            let id = parse_id(&r.file_id)?;
            let applied = app.meta.linearizable().await?;
            let f = crate::api::http::shares::file_for(
                &applied,
                &c.sub,
                &id,
                wharf_raft::model::shares::Role::Viewer,
            )?;
            json(serde_json::to_value(file_record(&applied, &f)))
        }
        Op::Delete(r) => {
            let id = parse_id(&r.file_id)?;
            app.quota
                .trash(
                    c.sub.clone(),
                    id,
                    wharf_raft::model::folders::EntryKind::File,
                )
                .await?;
            Ok(serde_json::Value::Null)
        }
        Op::ListFolder(l) => {
            let folder = match l.folder_id.as_str() {
                "" => None,
                id => crate::actors::quota::parse_folder(Some(id))?,
            };
            let q = crate::api::http::folders::ListingQuery::new(
                (l.limit != 0).then(|| l.limit.to_string()),
                opt(l.cursor),
                opt(l.sort),
            );
            let page = crate::api::http::folders::page(&q)?;
            let applied = app.meta.linearizable().await?;
            let owner = match &folder {
                Some(id) => crate::api::http::shares::folder_for(&applied, &c.sub, id)?.0,
                None => c.sub.clone(),
            };
            let listing = crate::api::http::folders::listing(
                &applied,
                &owner,
                folder,
                page.by_name,
                page.cursor.as_deref(),
                page.limit,
            )?;
            json(serde_json::to_value(listing))
        }
        Op::DeleteFolder(r) => {
            let id = parse_id(&r.folder_id)?;
            app.quota
                .trash(
                    c.sub.clone(),
                    id,
                    wharf_raft::model::folders::EntryKind::Folder,
                )
                .await?;
            Ok(serde_json::Value::Null)
        }
        Op::List(l) => {
            let cursor = (!l.cursor.is_empty()).then_some(l.cursor.as_str());
            let limit = if l.limit == 0 { 100 } else { l.limit as usize };
            let page = list_page(app, c, cursor, limit, false).await?;
            json(serde_json::to_value(page))
        }
        Op::Uploads(l) => {
            let limit = if l.limit == 0 { 100 } else { l.limit as usize };
            let page = uploads_page(
                app,
                c,
                opt(l.state).as_deref(),
                opt(l.cursor).as_deref(),
                limit,
            )
            .await?;
            json(serde_json::to_value(page))
        }
        Op::Create(cr) => {
            let req = CreateUpload {
                name: cr.name,
                size: cr.size,
                blake3: opt(cr.blake3),
                mime: opt(cr.mime),
                idempotency_key: opt(cr.idempotency_key),
                folder: opt(cr.folder),
                on_conflict: opt(cr.on_conflict),
            };
            validate_create(&req)?;
            app.rate
                .user_create(&c.sub, c.tier)
                .map_err(Error::RateLimited)?;
            let up = match app.quota.create(c.sub.clone(), c.tier, req).await? {
                Created::Upload(up) if up.state != wharf_raft::model::UploadState::Stored => up,
                // Dedup: the answer is the file, as over HTTP.
                made => return json(serde_json::to_value(deduplicated(app, &c.sub, made).await?)),
            };
            Ok(serde_json::json!({
                "upload_id": up.id,
                "chunk_size": up.chunk_size,
                "chunk_count": up.chunk_count(),
                "expires_at": rfc3339(up.expires_at),
            }))
        }
        Op::Status(u) => {
            let id = parse_id(&u.upload_id)?;
            let applied = app.meta.linearizable().await?;
            let up = applied.upload(&c.sub, &id).ok_or(Error::NotFound)?;
            json(serde_json::to_value(upload_status_body(&up)))
        }
        Op::Complete(u) => {
            let id = parse_id(&u.upload_id)?;
            let f = app.uploads.complete(c.sub.clone(), id).await?;
            json(serde_json::to_value(file_record(&app.meta.local(), &f)))
        }
        Op::Abort(u) => {
            let id = parse_id(&u.upload_id)?;
            app.uploads.abort(c.sub.clone(), id).await?;
            Ok(serde_json::Value::Null)
        }
        Op::Chunk(h) => {
            let id = parse_id(&h.upload_id)?;
            let blake3 = match h.blake3.len() {
                0 => None,
                32 => Some(<[u8; 32]>::try_from(h.blake3.as_slice()).expect("32 bytes")),
                _ => {
                    return Err(Error::bad_request(
                        "invalid_checksum",
                        "blake3 must be 32 bytes",
                    ))
                }
            };
            app.rate
                .user_bytes(&c.sub, c.tier, h.length)
                .map_err(Error::RateLimited)?;
            let body = crate::api::idle_stream(body_stream(recv), body_idle(app));
            app.uploads
                .put_chunk(ChunkPut {
                    owner: c.sub.clone(),
                    upload_id: id,
                    index: h.index,
                    content_length: Some(h.length),
                    blake3,
                    sha256: None,
                    body,
                    keep_short: false,
                })
                .await?;
            Ok(serde_json::Value::Null)
        }
        Op::PutFile(p) => {
            let blake3 = match p.blake3.len() {
                0 => None,
                32 => Some(<[u8; 32]>::try_from(p.blake3.as_slice()).expect("32 bytes")),
                _ => {
                    return Err(Error::bad_request(
                        "invalid_checksum",
                        "blake3 must be 32 bytes",
                    ))
                }
            };
            let declared = wharf_proto::CreateUpload {
                name: p.name,
                size: p.length,
                blake3: None,
                mime: opt(p.mime),
                idempotency_key: opt(p.idempotency_key),
                folder: opt(p.folder),
                on_conflict: opt(p.on_conflict),
            };
            validate_create(&declared)?;
            let placement = crate::actors::quota::placement(
                declared.folder.as_deref(),
                declared.on_conflict.as_deref(),
                app.quota.versions_keep(),
            )?;
            app.rate
                .user_create(&c.sub, c.tier)
                .map_err(Error::RateLimited)?;
            app.rate
                .user_bytes(&c.sub, c.tier, p.length)
                .map_err(Error::RateLimited)?;
            let f = app
                .uploads
                .store_file(SmallFile {
                    owner: c.sub.clone(),
                    tier: c.tier,
                    name: declared.name,
                    mime: declared.mime,
                    blake3,
                    sha256: None,
                    idempotency_key: declared.idempotency_key,
                    placement,
                    content_length: Some(p.length),
                    body: crate::api::idle_stream(body_stream(recv), body_idle(app)),
                    editor: None,
                })
                .await?;
            json(serde_json::to_value(file_record(&app.meta.local(), &f)))
        }
    }
}

fn body_idle(app: &AppState) -> Duration {
    Duration::from_secs(app.http.body_idle_secs)
}

/// proto3 has no absent strings: empty means absent.
fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A request's body in 256 KiB pieces: QUIC hands over packet-sized ones, and BLAKE3 runs its
/// wide SIMD path only on larger inputs (this doubled the QUIC upload rate).
fn body_stream(recv: RecvStream) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold((recv, false), |(mut r, eof)| async move {
        if eof {
            return None;
        }
        let mut buf = bytes::BytesMut::with_capacity(BODY_PIECE);
        let mut eof = false;
        while buf.len() < BODY_PIECE {
            match tokio::io::AsyncReadExt::read_buf(&mut r, &mut buf).await {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => return Some((Err(e), (r, true))),
            }
        }
        if buf.is_empty() {
            return None;
        }
        Some((Ok::<Bytes, io::Error>(buf.freeze()), (r, eof)))
    })
}

fn ok_reply(v: &serde_json::Value) -> Reply {
    Reply {
        code: String::new(),
        message: String::new(),
        json: serde_json::to_vec(v).unwrap_or_default(),
        status: 200,
    }
}

async fn write_reply(send: &mut SendStream, res: Result<serde_json::Value>) -> io::Result<()> {
    let reply = match res {
        Ok(v) => ok_reply(&v),
        Err(e) => {
            let (status, code) = e.status_and_code();
            Reply {
                code: code.to_string(),
                message: e.to_string(),
                json: Vec::new(),
                status: u32::from(status.as_u16()),
            }
        }
    };
    write_frame(send, &reply).await?;
    send.finish().map_err(io::Error::other)
}
