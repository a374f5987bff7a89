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

use crate::actors::uploads::{ChunkPut, SmallFile};
use crate::api::http::files::{file_record, list_page, servable_file};
use crate::api::http::uploads::{upload_status_body, uploads_page, validate_create};
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
    transport
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(64))
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

pub async fn serve(endpoint: quinn::Endpoint, app: AppState) {
    while let Some(incoming) = endpoint.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                connection(conn, app).await;
            }
        });
    }
}

async fn connection(conn: quinn::Connection, app: AppState) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let claims = match read_frame::<Hello, _>(&mut recv).await {
        Ok(hello) => app
            .keys
            .verify_header(Some(&format!("Bearer {}", hello.token))),
        Err(_) => {
            let _ = send.reset(MALFORMED);
            conn.close(MALFORMED, b"malformed hello");
            return;
        }
    };
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            let _ = write_reply(&mut send, Err(e)).await;
            // Give the reply a moment to leave before the connection goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(UNAUTHORIZED, b"unauthorized");
            return;
        }
    };
    let _ = write_reply(&mut send, Ok(serde_json::json!({ "user": claims.sub }))).await;
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (app, claims) = (app.clone(), claims.clone());
        tokio::spawn(stream(send, recv, claims, app));
    }
}

async fn stream(mut send: SendStream, mut recv: RecvStream, c: Claims, app: AppState) {
    let req = match read_frame::<Request, _>(&mut recv).await {
        Ok(Request { op: Some(op) }) => op,
        _ => {
            let _ = send.reset(MALFORMED);
            let _ = recv.stop(MALFORMED);
            return;
        }
    };
    if let Op::Read(r) = req {
        // A ranged read: the reply, then the bytes.
        let _ = match read(r, &c, &app).await {
            Ok((head, body)) => send_read(&mut send, head, body).await,
            Err(e) => write_reply(&mut send, Err(e)).await,
        };
        return;
    }
    let res = handle(req, recv, &c, &app).await;
    let _ = write_reply(&mut send, res).await;
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
            let f = applied.file(&c.sub, &id).ok_or(Error::NotFound)?;
            json(serde_json::to_value(file_record(&applied, &f)))
        }
        Op::Delete(r) => {
            let id = parse_id(&r.file_id)?;
            app.quota
                .propose(wharf_raft::model::Command::DeleteFile {
                    owner: c.sub.clone(),
                    file_id: id,
                    now: crate::meta::now_ms(),
                })
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
            };
            validate_create(&req)?;
            let up = app.quota.create(c.sub.clone(), c.tier, req).await?;
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
            let body = body_stream(recv);
            app.uploads
                .put_chunk(ChunkPut {
                    owner: c.sub.clone(),
                    upload_id: id,
                    index: h.index,
                    content_length: Some(h.length),
                    blake3,
                    sha256: None,
                    body: Box::pin(body),
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
            };
            validate_create(&declared)?;
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
                    content_length: Some(p.length),
                    body: Box::pin(body_stream(recv)),
                })
                .await?;
            json(serde_json::to_value(file_record(&app.meta.local(), &f)))
        }
    }
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
