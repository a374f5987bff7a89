//! Hostile and careless clients against real node processes: raw sockets for what a normal
//! client cannot do wrong (idle, half-sent, stalled, early-answered requests), quinn for QUIC
//! (no Hello, expired tokens, too many connections), and the limits, statuses and shutdown
//! they meet. After each, the node still serves.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::quic::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_proto::quic::{request::Op, ChunkHeader, ListFiles};
use wharf_raft::model::Tier;

const CHUNK: usize = 64 * 1024;

fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")];
    all.extend_from_slice(env);
    let node = Node::start_with(&dir.path().join("n"), &all);
    (dir, node)
}

fn raw(node: &Node) -> TcpStream {
    let s = TcpStream::connect(node.http_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Reads what comes until the node closes the connection or `limit` passes: the text, and
/// whether it was closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let mut b = [0u8; 8192];
        match s.read(&mut b) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline {
                    return (String::from_utf8_lossy(&got).into_owned(), false);
                }
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
}

/// A chunk PUT whose body stops after `sent` of `CHUNK` bytes.
fn stalled_chunk_put(node: &Node, token: &str, upload: &str, index: u32, sent: usize) -> TcpStream {
    let mut s = raw(node);
    write!(
        s,
        "PUT /v1/uploads/{upload}/chunks/{index} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \
         {token}\r\ncontent-length: {CHUNK}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![7u8; sent]).unwrap();
    s
}

/// Completes the upload and checks that the file downloads as `data`.
async fn completes_to(node: &Node, token: &str, upload: &str, data: &[u8]) {
    let (st, file) = node.complete(token, upload).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    assert_eq!(
        node.download(token, file["id"].as_str().unwrap()).await,
        data
    );
}

/// SIGTERM (again, if it was sent at `asked`): the node exits 0 within `within` of `asked`.
fn exits_cleanly(node: &mut Node, asked: Instant, within: Duration) {
    let status = node.terminate(Duration::from_secs(10));
    let status = status.expect("the node did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < within, "{:?}", asked.elapsed());
}

/// The `Retry-After` seconds of a 429, which are 1 to 3 for the buckets the tests use.
fn retry_after(r: &reqwest::Response) -> u64 {
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&secs), "{secs}");
    secs
}

async fn healthy(node: &Node) {
    let r = node.http.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn create_upload(node: &Node, token: &str, size: usize) -> String {
    let (st, up) = node
        .create(token, json!({ "name": "f.bin", "size": size }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    up["upload_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_connections_are_closed_and_the_connection_limit_answers_503() {
    let (_dir, node) = start(&[
        ("WHARF_HTTP_IDLE_SECS", "2"),
        ("WHARF_HTTP_HEADER_TIMEOUT_SECS", "2"),
        ("WHARF_HTTP_MAX_CONNECTIONS", "6"),
    ]);
    let opened = Instant::now();
    let mut idle = raw(&node);
    let mut half = raw(&node);
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .unwrap();
    // A keep-alive connection that made one request, then went quiet.
    let mut kept = raw(&node);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (first, _) = read_until_closed(&mut kept, Duration::from_millis(500));
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut others: Vec<TcpStream> = (0..3).map(|_| raw(&node)).collect();
    std::thread::sleep(Duration::from_millis(200));

    // The seventh connection is over the limit: a 503 with a JSON error, then closed.
    let mut over = raw(&node);
    let (answer, closed) = read_until_closed(&mut over, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(closed);

    for (name, s) in [
        ("idle", &mut idle),
        ("half-sent", &mut half),
        ("kept", &mut kept),
    ] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(6));
        assert!(closed, "the {name} connection is still open");
    }
    for s in &mut others {
        assert!(read_until_closed(s, Duration::from_secs(6)).1);
    }
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(8), "closing took {took:?}");
    // The places are free again.
    std::thread::sleep(Duration::from_millis(300));
    healthy(&node).await;
}

/// A raw connection from another loopback address (127.0.0.0/8 is all loopback).
fn raw_from(node: &Node, source: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &format!("{source}:0")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let to: std::net::SocketAddr = node.http_addr().parse().unwrap();
    socket.connect(&to.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_connection() {
    let (_dir, node) = start(&[("WHARF_HTTP_MAX_CONNECTIONS_PER_IP", "3")]);
    let _held: Vec<TcpStream> = (0..3).map(|_| raw_from(&node, "127.0.0.1")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = raw_from(&node, "127.0.0.1");
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Another client address still gets in.
    let mut other = raw_from(&node, "127.0.0.2");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut other, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_chunk_is_taken_over_by_a_new_sender_and_a_silent_body_times_out() {
    let (_dir, node) = start(&[
        ("WHARF_HTTP_BODY_IDLE_SECS", "3"),
        ("WHARF_UPLOAD_TAKEOVER_MS", "1000"),
    ]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(2 * CHUNK, 11);
    let id = create_upload(&node, &t, data.len()).await;

    // A sender that stalled after 1,000 bytes; a new one takes the chunk over.
    let mut stalled = stalled_chunk_put(&node, &t, &id, 0, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    assert_eq!(
        node.put_chunk(&t, &id, 0, &data[..CHUNK]).await,
        StatusCode::NO_CONTENT
    );
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let (answer, _) = read_until_closed(&mut stalled, Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("chunk_taken_over"), "{answer}");

    // A body that goes silent with nobody waiting: dropped after body_idle_secs, 408.
    let started = Instant::now();
    let mut silent = stalled_chunk_put(&node, &t, &id, 1, 500);
    let (answer, _) = read_until_closed(&mut silent, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // Its chunk is free at once.
    assert_eq!(
        node.put_chunk(&t, &id, 1, &data[CHUNK..]).await,
        StatusCode::NO_CONTENT
    );
    completes_to(&node, &t, &id, &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_on_a_dead_quic_connection_is_taken_over_by_a_new_connection() {
    let (_dir, node) = start(&[("WHARF_UPLOAD_TAKEOVER_MS", "1000")]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(CHUNK, 12);
    let id = create_upload(&node, &t, data.len()).await;
    let hash = blake3::hash(&data);

    // A client that sent part of a chunk and then went silent (its path died: nothing more
    // comes, and no close either).
    let dead = connect(&node).await;
    ok_json(hello(&dead, &t).await);
    let (mut send, _recv) = dead.open_bi().await.unwrap();
    let header = wharf_proto::quic::Request {
        op: Some(Op::Chunk(ChunkHeader {
            upload_id: id.clone(),
            index: 0,
            length: CHUNK as u64,
            blake3: hash.as_bytes().to_vec(),
        })),
    };
    wharf_proto::quic::write_frame(&mut send, &header)
        .await
        .unwrap();
    send.write_all(&data[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fresh = connect(&node).await;
    ok_json(hello(&fresh, &t).await);
    let asked = Instant::now();
    let op = Op::Chunk(ChunkHeader {
        upload_id: id.clone(),
        index: 0,
        length: CHUNK as u64,
        blake3: hash.as_bytes().to_vec(),
    });
    ok_json(call(&fresh, op, Some(&data)).await);
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let (st, file) = node.complete(&t, &id).await;
    assert_eq!(st, StatusCode::OK, "{file}");
    drop(send);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_drain_time_while_clients_hold_partial_requests() {
    let (_dir, mut node) = start(&[("WHARF_NODE_DRAIN_SECS", "2")]);
    let t = node.token("alice", Tier::Basic);
    let id = create_upload(&node, &t, CHUNK).await;
    let _half = {
        let mut s = raw(&node);
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
        s
    };
    let _stalled = stalled_chunk_put(&node, &t, &id, 0, 100);
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    exits_cleanly(&mut node, asked, Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_under_way_finish_over_http_and_quic_and_takes_no_new_ones() {
    let (_dir, mut node) = start(&[("WHARF_NODE_DRAIN_SECS", "8")]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(2 * CHUNK, 21);
    let id = create_upload(&node, &t, data.len()).await;
    // Chunk 0 over HTTP and chunk 1 over QUIC, each part-sent when the node is asked to stop.
    let mut over_http = stalled_chunk_put(&node, &t, &id, 0, 0);
    over_http.write_all(&data[..1000]).unwrap();
    let conn = connect(&node).await;
    ok_json(hello(&conn, &t).await);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let second = &data[CHUNK..];
    let header = wharf_proto::quic::Request {
        op: Some(Op::Chunk(ChunkHeader {
            upload_id: id.clone(),
            index: 1,
            length: CHUNK as u64,
            blake3: blake3::hash(second).as_bytes().to_vec(),
        })),
    };
    wharf_proto::quic::write_frame(&mut send, &header)
        .await
        .unwrap();
    send.write_all(&second[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Draining: neither front end takes a new connection.
    assert!(
        std::net::TcpStream::connect(node.http_addr()).is_err(),
        "a new HTTP connection was accepted while draining"
    );
    let refused = tokio::time::timeout(Duration::from_secs(5), try_connect(&node)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a new QUIC connection was accepted while draining"
    );
    // ...but what was under way finishes, and is acknowledged.
    over_http.write_all(&data[1000..CHUNK]).unwrap();
    let (answer, _) = read_until_closed(&mut over_http, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    send.write_all(&second[1000..]).await.unwrap();
    send.finish().unwrap();
    ok_json(read_reply(&mut recv).await);
    exits_cleanly(&mut node, asked, Duration::from_secs(8));
    // Both acknowledgements held: started again, the node completes the file from them.
    let node = node.kill9().restart();
    completes_to(&node, &t, &id, &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_racing_a_chunk_in_flight_answers_that_chunk_409_upload_not_active() {
    let (_dir, node) = start(&[]);
    let t = node.token("alice", Tier::Basic);
    let id = create_upload(&node, &t, CHUNK).await;
    let mut racing = stalled_chunk_put(&node, &t, &id, 0, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let r = node
        .delete(&t, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    racing.write_all(&vec![7u8; CHUNK - 1000]).unwrap();
    let (answer, _) = read_until_closed(&mut racing, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("upload_not_active"), "{answer}");
    healthy(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_answers_only_the_same_request_and_is_free_after_an_abort() {
    let (_dir, node) = start(&[]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(CHUNK, 13);
    let sum = blake3::hash(&data).to_hex().to_string();
    let req = |blake3: &str, mime: &str| {
        json!({ "name": "a.bin", "size": CHUNK, "blake3": blake3, "mime": mime,
                "idempotency_key": "key-1" })
    };
    let (st, first) = node.create(&t, req(&sum, "application/pdf")).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, again) = node.create(&t, req(&sum, "application/pdf")).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(again["upload_id"], first["upload_id"]);
    for other in [
        req(&"ab".repeat(32), "application/pdf"),
        req(&sum, "text/html"),
    ] {
        let got = node.create(&t, other).await;
        assert_error(&got, 409, "idempotency_conflict");
    }
    let id = first["upload_id"].as_str().unwrap();
    let r = node
        .delete(&t, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The key of the aborted upload makes a new, live upload.
    let (st, fresh) = node.create(&t, req(&sum, "application/pdf")).await;
    assert_eq!(st, StatusCode::CREATED, "{fresh}");
    assert_ne!(fresh["upload_id"], first["upload_id"]);
    let fresh_id = fresh["upload_id"].as_str().unwrap();
    assert_eq!(
        node.put_chunk(&t, fresh_id, 0, &data).await,
        StatusCode::NO_CONTENT
    );
    let (st, _) = node.complete(&t, fresh_id).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_types_sizes_schemes_and_names_get_their_own_statuses() {
    let (_dir, node) = start(&[]);
    let t = node.token("alice", Tier::Basic);

    let r = node
        .http
        .patch(node.url("/v1/uploads"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_error(&json(r).await, 405, "method_not_allowed");

    let r = node
        .post(&t, "/v1/uploads")
        .header("content-type", "text/plain")
        .body(r#"{"name":"a","size":1}"#)
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 415, "unsupported_media_type");

    let huge = format!(r#"{{"name":"{}","size":1}}"#, "a".repeat(1 << 20));
    let r = node
        .post(&t, "/v1/uploads")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 413, "body_too_large");

    // 100 MB announced, as curl sends it (waiting for 100 Continue): 413 at once, nothing read.
    let mut s = raw(&node);
    write!(
        s,
        "POST /v1/uploads HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\n\
         content-type: application/json\r\ncontent-length: 100000000\r\n\
         expect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let asked = Instant::now();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    assert!(asked.elapsed() < Duration::from_secs(3));

    // The scheme is case-insensitive.
    let r = node
        .http
        .get(node.url("/v1/usage"))
        .header("authorization", format!("BEARER {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A correctly signed token whose user id is not one: 401, not 400.
    let secret = std::fs::read_to_string(node.data_dir.join("jwt_secret")).unwrap();
    let claims = json!({ "sub": "../../etc", "tier": "basic", "iat": 1, "exp": 4_000_000_000u64 });
    let bad_sub = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()),
    )
    .unwrap();
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.";
    for bad in [bad_sub.as_str(), none] {
        let got = json(node.get(bad, "/v1/usage").send().await.unwrap()).await;
        assert_error(&got, 401, "invalid_token");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(!message.contains("variant"), "{message}");
    }

    // Names that would show as something else in a UI.
    for name in ["\u{202e}gnp.exe", "a\u{200b}b.txt"] {
        let got = node.create(&t, json!({ "name": name, "size": 1 })).await;
        assert_error(&got, 400, "invalid_name");
    }

    // A client-chosen type is never sniffed into something else.
    let r = node
        .post(&t, "/v1/files?name=page.html&mime=text/html")
        .body("<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    let (st, file) = json(r).await;
    assert_eq!(st, StatusCode::CREATED, "{file}");
    let r = node
        .get(
            &t,
            &format!("/v1/files/{}/content", file["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    // Metadata and objects are the node user's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for dir in [node.data_dir.clone(), node.data_dir.join("objects")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_error_under_a_large_body_reaches_a_client_that_sends_it_all_first() {
    let (_dir, node) = start(&[]);
    let t = node.token("alice", Tier::Basic);
    let id = create_upload(&node, &t, CHUNK).await;
    // As Python's urllib does: the whole body first, then the answer. Without a token the
    // answer is decided before a byte of the body is read.
    let body = vec![1u8; 8 << 20];
    let mut s = raw(&node);
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "PUT /v1/uploads/{id}/chunks/0 HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body)
        .expect("the node cut the connection under the body");
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unauthorized"), "{answer}");
    let _ = t;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_urllib_sees_an_early_401_under_a_large_body_not_a_broken_pipe() {
    let (_dir, node) = start(&[]);
    let t = node.token("alice", Tier::Basic);
    let id = create_upload(&node, &t, CHUNK).await;
    // The real client the issue names: urllib sends the whole 8 MiB body, then reads.
    let script = r#"
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=b"\x01" * (8 << 20), method="PUT")
try:
    urllib.request.urlopen(req, timeout=30)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, json.loads(e.read())["error"]["code"])
"#;
    let url = node.url(&format!("/v1/uploads/{id}/chunks/0"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script, &url])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "401 unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_retry_after_per_user_tier_and_address() {
    let (_dir, node) = start(&[
        ("WHARF_RATE_USER_REQUESTS_PER_SEC", "5"),
        ("WHARF_RATE_PREMIUM_FACTOR", "10"),
    ]);
    let basic = node.token("bob", Tier::Basic);
    let premium = node.token("pam", Tier::Premium);
    let mut refused = None;
    for _ in 0..30 {
        let r = node.get(&basic, "/v1/usage").send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("30 requests at once from a 5/s user all passed");
    let retry = retry_after(&r);
    assert_error(&json(r).await, 429, "rate_limited");
    // A premium user's bucket is ten times larger; another user is not slowed by bob.
    for _ in 0..30 {
        let r = node.get(&premium, "/v1/usage").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = node.get(&basic, "/v1/usage").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Chunk bodies are limited by bytes, not counted as requests: 20 chunks at once pass a
    // user whose request bucket holds 10.
    let carl = node.token("carl", Tier::Basic);
    let data = random_bytes(20 * CHUNK, 16);
    let id = create_upload(&node, &carl, data.len()).await;
    let puts = (0..20).map(|i| node.put_chunk(&carl, &id, i, &data[i * CHUNK..(i + 1) * CHUNK]));
    for st in futures::future::join_all(puts).await {
        assert_eq!(st, StatusCode::NO_CONTENT);
    }

    let (_dir3, node3) = start(&[("WHARF_RATE_USER_CREATES_PER_SEC", "2")]);
    let dave = node3.token("dave", Tier::Basic);
    let mut created = 0;
    let mut limited = None;
    for i in 0..10 {
        let got = node3
            .create(&dave, json!({ "name": format!("f{i}"), "size": 1 }))
            .await;
        if got.0 == StatusCode::CREATED {
            created += 1;
        } else {
            limited = Some(got);
            break;
        }
    }
    let limited = limited.expect("ten creations at once passed a 2/s limit");
    assert_error(&limited, 429, "rate_limited");
    assert!(created >= 3, "{created}");
    // One-request files are creations too.
    let r = node3
        .post(&dave, "/v1/files?name=x.bin")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 429, "rate_limited");

    let (_dir2, node2) = start(&[("WHARF_RATE_IP_REQUESTS_PER_SEC", "5")]);
    let statuses: Vec<StatusCode> = futures::future::join_all((0..30).map(|_| async {
        node2
            .http
            .get(node2.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    }))
    .await;
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // Chunk bodies are limited by bytes per user, over HTTP and QUIC alike: at 64 KiB/s the
    // bucket holds two seconds' worth, so two 64 KiB chunks pass and the next one at once is
    // refused with Retry-After.
    let (_dir4, node4) = start(&[("WHARF_RATE_USER_BYTES_PER_SEC", "65536")]);
    let erin = node4.token("erin", Tier::Basic);
    let data = random_bytes(4 * CHUNK, 18);
    let piece = |i: usize| &data[i * CHUNK..(i + 1) * CHUNK];
    let id = create_upload(&node4, &erin, data.len()).await;
    for i in 0..2 {
        assert_eq!(
            node4.put_chunk(&erin, &id, i, piece(i)).await,
            StatusCode::NO_CONTENT
        );
    }
    let r = node4
        .put(&erin, &format!("/v1/uploads/{id}/chunks/2"))
        .body(piece(2).to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = retry_after(&r);
    assert_error(&json(r).await, 429, "rate_limited");
    let conn = connect(&node4).await;
    ok_json(hello(&conn, &erin).await);
    let op = Op::Chunk(ChunkHeader {
        upload_id: id.clone(),
        index: 3,
        length: CHUNK as u64,
        blake3: blake3::hash(piece(3)).as_bytes().to_vec(),
    });
    let reply = call(&conn, op, Some(piece(3))).await.unwrap();
    assert_eq!(reply.code, "rate_limited", "{}", reply.message);
    // Once the bucket has filled again, the refused chunk goes through.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        node4.put_chunk(&erin, &id, 2, piece(2)).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_connections_must_say_hello_in_time_and_are_bounded_before_it() {
    let (_dir, node) = start(&[
        ("WHARF_QUIC_HELLO_TIMEOUT_SECS", "1"),
        ("WHARF_QUIC_MAX_CONNECTIONS_PER_USER", "2"),
        ("WHARF_QUIC_MAX_CONNECTIONS", "4"),
    ]);
    let t = node.token("alice", Tier::Basic);

    // Before Hello: one stream (here holding half a Hello), no second one.
    let silent = connect(&node).await;
    let (mut first, _r1) = silent.open_bi().await.unwrap();
    first.write_all(&[0, 0]).await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(300), silent.open_bi()).await;
    assert!(second.is_err(), "a second stream opened before Hello");
    // No Hello within the deadline: closed with its own code.
    let reason = tokio::time::timeout(Duration::from_secs(5), silent.closed())
        .await
        .expect("the silent connection is still open");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(0x12))
        }
        other => panic!("{other:?}"),
    }

    // Per user: the third connection's Hello is refused.
    let a = connect(&node).await;
    ok_json(hello(&a, &t).await);
    let b = connect(&node).await;
    ok_json(hello(&b, &t).await);
    let c = connect(&node).await;
    let refused = hello(&c, &t).await.unwrap();
    assert_eq!(refused.code, "too_many_connections", "{}", refused.message);
    // Once one closes, its place is free.
    a.close(0u32.into(), b"done");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = connect(&node).await;
    ok_json(hello(&d, &t).await);
    // The node's own limit: with b, d and two of another user open, a fifth is refused.
    let other = node.token("bob", Tier::Basic);
    let e = connect(&node).await;
    ok_json(hello(&e, &other).await);
    let f = connect(&node).await;
    ok_json(hello(&f, &other).await);
    let refused = tokio::time::timeout(Duration::from_secs(5), try_connect(&node))
        .await
        .expect("the fifth connection neither opened nor was refused");
    assert!(refused.is_err(), "a fifth connection opened");
    drop((b, d, e, f));
    healthy(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_quic_connection() {
    let (_dir, node) = start(&[("WHARF_QUIC_MAX_CONNECTIONS_PER_IP", "2")]);
    let t = node.token("alice", Tier::Basic);
    let a = connect(&node).await;
    let b = connect(&node).await;
    // Counted before Hello: a third connection from the same address is refused.
    let refused = tokio::time::timeout(Duration::from_secs(5), try_connect(&node))
        .await
        .expect("the third connection neither opened nor was refused");
    assert!(
        refused.is_err(),
        "a third connection from one address opened"
    );
    // Once one goes, its place is free.
    a.close(0u32.into(), b"done");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = connect(&node).await;
    ok_json(hello(&c, &t).await);
    drop((b, c));
    healthy(&node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quic_connection_ends_when_its_token_expires() {
    let (_dir, node) = start(&[]);
    let keys = wharf_node::auth::Keys::load_or_create("", &node.data_dir).unwrap();
    // Tokens that expire now: accepted for the leeway (as over HTTP), then refused.
    let expiring = || keys.issue("alice", Tier::Basic, Duration::ZERO).unwrap();
    let past_the_leeway = || {
        tokio::time::sleep(
            Duration::from_secs(wharf_node::auth::LEEWAY_SECS) + Duration::from_millis(700),
        )
    };
    let sdk = |token: String| {
        let ca = std::fs::read(node.data_dir.join("tls/ca.pem")).unwrap();
        wharf_client::Client::with_trust(
            vec![format!("quic://{}", node.quic_addr)],
            token,
            wharf_client::Trust::Ca(ca),
        )
        .unwrap()
    };

    // A raw connection: refused as expired, then closed so that the client reconnects.
    let raw = async {
        let conn = connect(&node).await;
        ok_json(hello(&conn, &expiring()).await);
        ok_json(call(&conn, Op::List(ListFiles::default()), None).await);
        past_the_leeway().await;
        if let Ok(reply) = call(&conn, Op::List(ListFiles::default()), None).await {
            assert_eq!(reply.code, "token_expired", "{}", reply.message);
        }
        let reason = tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .expect("the expired connection is still open");
        match reason {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(0x13))
            }
            other => panic!("{other:?}"),
        }
    };
    // The SDK reports the expiry as such (not as a node that is down), and goes on with a
    // fresh token on a new connection.
    let refreshed_after = async {
        let client = sdk(expiring());
        client.list().await.unwrap();
        past_the_leeway().await;
        let err = client.list().await.unwrap_err();
        assert_eq!(err.code(), Some("token_expired"), "{err}");
        client.set_token(node.token("alice", Tier::Basic));
        client.list().await.unwrap();
    };
    // A token refreshed before the old one ran out: the call after the expiry just works.
    let refreshed_before = async {
        let client = sdk(expiring());
        client.list().await.unwrap();
        client.set_token(node.token("alice", Tier::Basic));
        past_the_leeway().await;
        client.list().await.unwrap();
    };
    tokio::join!(raw, refreshed_after, refreshed_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_the_cluster_certificate_is_trusted_through_the_pinned_ca() {
    let (_dir, node) = start(&[("WHARF_NODE_TLS", "cluster")]);
    assert!(node.base.starts_with("https://"), "{}", node.base);
    let t = node.token("alice", Tier::Basic);
    let ca = std::fs::read(node.data_dir.join("tls/ca.pem")).unwrap();
    let client = wharf_client::Client::with_trust(
        vec![node.base.clone()],
        t.clone(),
        wharf_client::Trust::Ca(ca),
    )
    .unwrap();
    let data = random_bytes(100_000, 14);
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), &data).unwrap();
    let up = client.upload(src.path(), None, |_| {}, None).await.unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    client
        .download(&up.file.id, out.path(), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.path()).unwrap(), data);
    // Without the CA the node's certificate is not trusted.
    let untrusted = wharf_client::Client::new(vec![node.base.clone()], t).unwrap();
    assert!(untrusted.list().await.is_err());
    // Plain HTTP to the HTTPS port gets nothing useful.
    let r = reqwest::get(format!("http://{}/healthz", node.http_addr())).await;
    assert!(r.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_crash_left_half_done_is_cleaned_up_and_what_is_recorded_kept() {
    let (_dir, node) = start(&[
        ("WHARF_UPLOAD_ORPHAN_GRACE_SECS", "1"),
        ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(2 * CHUNK, 15);
    let id = create_upload(&node, &t, data.len()).await;
    assert_eq!(
        node.put_chunk(&t, &id, 0, &data[..CHUNK]).await,
        StatusCode::NO_CONTENT
    );
    // A half-written chunk (as a kill mid-receive leaves it) and a multipart upload that no
    // upload records (a kill between creating it and recording it).
    let part = node.data_dir.join(format!("staging/{id}/1.part-0123abcd"));
    std::fs::write(&part, b"half").unwrap();
    let orphan = node.data_dir.join("objects/.multipart/0123456789abcdef");
    std::fs::create_dir_all(&orphan).unwrap();
    let dir = node.kill9();
    let node = dir.restart();
    assert!(!part.exists(), "the half-written chunk survived a restart");
    let deadline = Instant::now() + Duration::from_secs(15);
    while orphan.exists() {
        assert!(
            Instant::now() < deadline,
            "the orphan multipart upload is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The upload's own (recorded) multipart upload is intact: it completes.
    assert_eq!(
        node.put_chunk(&t, &id, 1, &data[CHUNK..]).await,
        StatusCode::NO_CONTENT
    );
    completes_to(&node, &t, &id, &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_certificate_from_files_and_a_clear_error_for_a_missing_one() {
    // Any PEM pair will do: here another node's (signed by that node's CA).
    let (_dir, issuer) = start(&[]);
    let cert = issuer.data_dir.join("tls/node.pem");
    let key = issuer.data_dir.join("tls/node.key");
    let (_dir2, node) = start(&[
        ("WHARF_NODE_TLS_CERT", cert.to_str().unwrap()),
        ("WHARF_NODE_TLS_KEY", key.to_str().unwrap()),
    ]);
    assert!(node.base.starts_with("https://"), "{}", node.base);
    let ca = std::fs::read(issuer.data_dir.join("tls/ca.pem")).unwrap();
    let client = wharf_client::Client::with_trust(
        vec![node.base.clone()],
        node.token("alice", Tier::Basic),
        wharf_client::Trust::Ca(ca),
    )
    .unwrap();
    assert!(client.list().await.unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let err = start_must_fail(
        &dir.path().join("n"),
        &[
            ("WHARF_NODE_TLS_CERT", "/nonexistent/cert.pem"),
            ("WHARF_NODE_TLS_KEY", key.to_str().unwrap()),
        ],
        &[],
    );
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}
