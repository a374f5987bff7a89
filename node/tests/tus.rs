//! tus 1.0 at `/files/`: the protocol's status codes and headers against a real node, a PATCH
//! that breaks off keeping its bytes, one upload sent to three nodes in turn over S3, and a
//! real tus client (tuspy).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use common::s3::S3;
use common::*;
use reqwest::{RequestBuilder, Response, StatusCode};
use sha1::Digest;
use wharf_raft::model::Tier;

const CHUNK: usize = 64 * 1024;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn tus(r: RequestBuilder) -> RequestBuilder {
    r.header("Tus-Resumable", "1.0.0")
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// `POST /files/` of `len` bytes named `name`; the upload's path.
async fn create(node: &Node, t: &str, len: usize, name: &str) -> String {
    let r = tus(node.post(t, "/files/"))
        .header("Upload-Length", len.to_string())
        .header(
            "Upload-Metadata",
            format!(
                "filename {},filetype {}",
                b64(name.as_bytes()),
                b64(b"application/pdf")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some("1.0.0"));
    let expires = header(&r, "upload-expires").expect("Upload-Expires on creation");
    assert!(httpdate::parse_http_date(&expires).unwrap() > std::time::SystemTime::now());
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with("/files/"), "{location}");
    location
}

async fn patch(node: &Node, t: &str, path: &str, offset: usize, body: &[u8]) -> Response {
    patch_with(node, t, path, offset, body, |r| r).await
}

async fn head(node: &Node, t: &str, path: &str) -> Response {
    tus(node.http.head(node.url(path)))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
}

async fn offset(node: &Node, t: &str, path: &str) -> usize {
    let r = head(node, t, path).await;
    assert_eq!(r.status(), StatusCode::OK);
    header(&r, "upload-offset").unwrap().parse().unwrap()
}

#[tokio::test]
async fn tus_core_creation_checksum_expiration_and_termination_answer_as_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536"),
            ("WHARF_TIERS_BASIC_MAX_FILE_SIZE", "1000000"),
            ("WHARF_HTTP_CORS_ORIGINS", "http://app.example"),
        ],
    );
    let t = node.token("alice", Tier::Basic);

    // Discovery needs no token.
    let r = node
        .http
        .request(reqwest::Method::OPTIONS, node.url("/files/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-version").as_deref(), Some("1.0.0"));
    let ext = header(&r, "tus-extension").unwrap();
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "checksum-trailer",
        "termination",
        "concatenation",
        "concatenation-unfinished",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{ext} lacks {e}");
    }
    assert!(header(&r, "tus-checksum-algorithm")
        .unwrap()
        .contains("sha1"));
    assert_eq!(header(&r, "tus-max-size").as_deref(), Some("1000000"));

    // Without Tus-Resumable (or with another version): 412 and the versions spoken.
    let r = node
        .post(&t, "/files/")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&r, "tus-version").as_deref(), Some("1.0.0"));
    // Over the tier's limit: 413 before a byte moves; no length at all: 400.
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "1000001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = tus(node.post(&t, "/files/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A name that is a path is refused, never used as one.
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "10")
        .header(
            "Upload-Metadata",
            format!("filename {}", b64(b"../../etc/passwd")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let data = random_bytes(3 * CHUNK + 1234, 5);
    let path = create(&node, &t, data.len(), "report.pdf").await;
    let r = head(&node, &t, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("0"));
    assert_eq!(header(&r, "upload-length"), Some(data.len().to_string()));
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert!(header(&r, "upload-metadata")
        .unwrap()
        .contains(&b64(b"report.pdf")));
    assert!(header(&r, "upload-expires").is_some());

    // Wrong Content-Type: 415; wrong offset: 409; nothing moves.
    let r = tus(node.http.patch(node.url(&path)))
        .bearer_auth(&t)
        .header("Upload-Offset", "0")
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        patch(&node, &t, &path, 7, &data[7..20]).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(offset(&node, &t, &path).await, 0);

    // A PATCH that ends in the middle of the second chunk: the offset is where it ended.
    let first = CHUNK + 1000;
    let r = patch(&node, &t, &path, 0, &data[..first]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some(first.to_string()));
    assert!(header(&r, "upload-expires").is_some());
    assert_eq!(offset(&node, &t, &path).await, first);

    // A wrong sha1: 460, nothing kept, the offset unchanged. The right one: taken.
    let piece = &data[first..first + 5000];
    let r = patch_with(&node, &t, &path, first, piece, |r| {
        r.header(
            "Upload-Checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(b"other"))),
        )
    })
    .await;
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(offset(&node, &t, &path).await, first);
    let r = patch_with(&node, &t, &path, first, piece, |r| {
        r.header(
            "Upload-Checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(piece))),
        )
    })
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mut at = first + piece.len();
    assert_eq!(offset(&node, &t, &path).await, at);
    // sha256 and md5 too.
    let piece = &data[at..at + 100];
    let r = patch_with(&node, &t, &path, at, piece, |r| {
        r.header(
            "Upload-Checksum",
            format!(
                "sha256 {}",
                b64(&<sha2::Sha256 as sha2::Digest>::digest(piece))
            ),
        )
    })
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    at += 100;
    let piece = &data[at..at + 100];
    let r = patch_with(&node, &t, &path, at, piece, |r| {
        r.header(
            "Upload-Checksum",
            format!("md5 {}", b64(&<md5::Md5 as md5::Digest>::digest(piece))),
        )
    })
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    at += 100;

    // Another user's token does not see the upload; a new token of the same user does (token
    // refresh mid-upload), through X-HTTP-Method-Override on a POST.
    let mallory = node.token("mallory", Tier::Basic);
    assert_eq!(
        head(&node, &mallory, &path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&node, &mallory, &path, at, &data[at..])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let fresh = node.token("alice", Tier::Basic);
    let r = tus(node.post(&fresh, &path))
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", at.to_string())
        .body(data[at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some(data.len().to_string()));

    // Finished: HEAD says which file it made and its scan state; the file is the data.
    let r = head(&node, &t, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-offset"), Some(data.len().to_string()));
    let file = header(&r, "wharf-file-id").expect("the file id of a finished upload");
    assert!(header(&r, "wharf-scan").is_some());
    assert!(node.download(&t, &file).await == data);
    let (_, f) = json(
        node.get(&t, &format!("/v1/files/{file}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(f["name"], "report.pdf");
    assert_eq!(f["mime"], "application/pdf");
    // A finished upload takes no more bytes.
    assert_eq!(
        patch(&node, &t, &path, data.len(), b"x").await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // creation-with-upload: the first bytes in the POST.
    let small = random_bytes(5000, 9);
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "5000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(small[..3000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("3000"));
    let small_path = header(&r, "location").unwrap();
    // A body past Upload-Length: 413, and the offset stays.
    assert_eq!(
        patch(&node, &t, &small_path, 3000, &random_bytes(2001, 1))
            .await
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(offset(&node, &t, &small_path).await, 3000);

    // A page on the configured origin may PATCH and read tus's headers; another may not.
    let preflight = |origin: &str| {
        node.http
            .request(reqwest::Method::OPTIONS, node.url(&path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PATCH")
            .header(
                "Access-Control-Request-Headers",
                "authorization,tus-resumable,upload-offset",
            )
            .send()
    };
    let r = preflight("http://app.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    let allowed = header(&r, "access-control-allow-headers").unwrap();
    assert!(
        allowed.contains("upload-offset") && allowed.contains("authorization"),
        "{allowed}"
    );
    let r = preflight("http://evil.example").await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = tus(node.http.head(node.url(&small_path)))
        .bearer_auth(&t)
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    let exposed = header(&r, "access-control-expose-headers").unwrap();
    for h in [
        "upload-offset",
        "upload-length",
        "location",
        "tus-resumable",
        "wharf-file-id",
    ] {
        assert!(exposed.contains(h), "{exposed} lacks {h}");
    }

    // Termination: 204, then the upload is gone (404), its reservation freed.
    let r = tus(node.delete(&t, &small_path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        head(&node, &t, &small_path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&node, &t, &small_path, 3000, &small[3000..])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Terminating a finished upload deletes its file: 204, then 404 for the URL and the file.
    let r = tus(node.delete(&t, &path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&node, &t, &path).await.status(), StatusCode::NOT_FOUND);
    let gone = node
        .get(&t, &format!("/v1/files/{file}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(node.usage(&t).await["reserved"], 0);

    // An empty upload is finished at creation.
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let empty = header(&r, "location").unwrap();
    let r = head(&node, &t, &empty).await;
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("0"));
    assert!(header(&r, "wharf-file-id").is_some());
}

async fn patch_with(
    node: &Node,
    t: &str,
    path: &str,
    offset: usize,
    body: &[u8],
    f: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> Response {
    f(tus(node.http.patch(node.url(path))))
        .bearer_auth(t)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn wait_for_offset(node: &Node, t: &str, path: &str, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = offset(node, t, path).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "offset stayed {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chunked PATCH of `body` at `offset` whose headers end with `extra` and whose trailer
/// section is `trailer` (sent raw: the HTTP clients at hand cannot send request trailers).
/// The answer's status and body.
async fn chunked_patch(
    node: &Node,
    t: &str,
    path: &str,
    offset: usize,
    body: &[u8],
    extra: &str,
    trailer: &str,
) -> (u16, String) {
    let addr = node.http_addr();
    let mut req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {offset}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n{extra}\r\n"
    )
    .into_bytes();
    for part in body.chunks(10_000) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&req).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn checksum_trailer_holds_a_chunked_patch_to_the_digest_sent_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(CHUNK + 5000, 31);
    let path = create(&node, &t, data.len(), "trailed.bin").await;
    let announce = "Trailer: Upload-Checksum\r\n";
    let first = &data[..CHUNK / 2];
    let sha256 = |b: &[u8]| b64(&<sha2::Sha256 as sha2::Digest>::digest(b));

    // A wrong digest in the trailer: 460, nothing kept.
    let wrong = format!("Upload-Checksum: sha256 {}\r\n", sha256(b"something else"));
    let (status, body) = chunked_patch(&node, &t, &path, 0, first, announce, &wrong).await;
    assert_eq!(status, 460, "{body}");
    assert!(body.contains("checksum_mismatch"), "{body}");
    assert_eq!(offset(&node, &t, &path).await, 0);
    // Announced and never sent: 400, nothing kept.
    let (status, body) = chunked_patch(&node, &t, &path, 0, first, announce, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("checksum_trailer_missing"), "{body}");
    assert_eq!(offset(&node, &t, &path).await, 0);
    // As a header and as a trailer at once: refused before a byte is kept.
    let both = format!("{announce}Upload-Checksum: sha256 {}\r\n", sha256(first));
    let (status, body) = chunked_patch(&node, &t, &path, 0, first, &both, "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(offset(&node, &t, &path).await, 0);

    // The right digest, in any algorithm offered: taken.
    let right = format!("Upload-Checksum: sha256 {}\r\n", sha256(first));
    let (status, body) = chunked_patch(&node, &t, &path, 0, first, announce, &right).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(offset(&node, &t, &path).await, first.len());
    let rest = &data[first.len()..];
    let md5 = format!(
        "Upload-Checksum: md5 {}\r\n",
        b64(&<md5::Md5 as md5::Digest>::digest(rest))
    );
    let (status, body) = chunked_patch(&node, &t, &path, first.len(), rest, announce, &md5).await;
    assert_eq!(status, 204, "{body}");
    let r = head(&node, &t, &path).await;
    let file = header(&r, "wharf-file-id").expect("the upload made a file");
    assert!(node.download(&t, &file).await == data);
}

#[tokio::test]
async fn a_patch_that_breaks_off_keeps_the_bytes_that_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(2 * CHUNK + 77, 21);
    let path = create(&node, &t, data.len(), "broken.bin").await;

    // The client promises the whole file, sends a chunk and a half, and vanishes.
    let sent = CHUNK + CHUNK / 2;
    let addr = node.http_addr();
    let (head_lines, body) = (
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\n\
             Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
            data.len()
        ),
        data[..sent].to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(head_lines.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    })
    .await
    .unwrap();
    wait_for_offset(&node, &t, &path, sent).await;

    // The resumed PATCH continues there and the file is whole.
    let r = patch(&node, &t, &path, sent, &data[sent..]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = head(&node, &t, &path).await;
    let file = header(&r, "wharf-file-id").unwrap();
    assert!(node.download(&t, &file).await == data);
}

/// `POST /files/` with `Upload-Defer-Length: 1`; the upload's path.
async fn create_deferred(node: &Node, t: &str) -> String {
    let r = tus(node.post(t, "/files/"))
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    header(&r, "location").unwrap()
}

fn upload_error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_deferred_length_is_declared_by_a_later_patch_and_the_quota_holds_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536"),
            ("WHARF_TIERS_BASIC_MAX_FILE_SIZE", "1000000"),
            ("WHARF_TIERS_BASIC_QUOTA", "400000"),
        ],
    );
    let t = node.token("alice", Tier::Basic);

    // Upload-Defer-Length is 1 or nothing; with Upload-Length as well it is refused.
    for (defer, length) in [("0", None), ("yes", None), ("1", Some("10"))] {
        let mut r = tus(node.post(&t, "/files/")).header("Upload-Defer-Length", defer);
        if let Some(l) = length {
            r = r.header("Upload-Length", l);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{defer} {length:?}");
        assert_eq!(
            upload_error_code(&r.text().await.unwrap()),
            "invalid_header"
        );
    }

    // The length is unknown: HEAD says so, and bytes are taken in all the same.
    let data = random_bytes(150_000, 31);
    let path = create_deferred(&node, &t).await;
    let r = head(&node, &t, &path).await;
    assert_eq!(header(&r, "upload-defer-length").as_deref(), Some("1"));
    assert!(header(&r, "upload-length").is_none());
    let r = patch(&node, &t, &path, 0, &data[..100_000]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("100000"));
    let r = head(&node, &t, &path).await;
    assert_eq!(header(&r, "upload-defer-length").as_deref(), Some("1"));
    assert!(
        header(&r, "wharf-file-id").is_none(),
        "not whole before its length is known"
    );

    // A length below what arrived is refused and changes nothing.
    let r = patch_with(&node, &t, &path, 100_000, b"", |r| {
        r.header("Upload-Length", "99999")
    })
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(&head(&node, &t, &path).await, "upload-defer-length").as_deref(),
        Some("1")
    );

    // The last PATCH declares the length and completes the upload.
    let r = patch_with(&node, &t, &path, 100_000, &data[100_000..], |r| {
        r.header("Upload-Length", "150000")
    })
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("150000"));
    let r = head(&node, &t, &path).await;
    assert_eq!(header(&r, "upload-length").as_deref(), Some("150000"));
    assert!(header(&r, "upload-defer-length").is_none());
    let file = header(&r, "wharf-file-id").expect("the declared upload is a file");
    assert!(node.download(&t, &file).await == data);
    // Once known, the length cannot change.
    let r = patch_with(&node, &t, &path, 150_000, b"", |r| {
        r.header("Upload-Length", "150001")
    })
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // 250,000 bytes of quota are left. A declaration of more is refused (507) and the upload
    // stays deferred with its offset.
    let path = create_deferred(&node, &t).await;
    let r = patch(&node, &t, &path, 0, &data[..70_000]).await;
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("70000"));
    let r = patch_with(&node, &t, &path, 70_000, b"", |r| {
        r.header("Upload-Length", "300000")
    })
    .await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        upload_error_code(&r.text().await.unwrap()),
        "quota_exceeded"
    );
    let r = head(&node, &t, &path).await;
    assert_eq!(header(&r, "upload-defer-length").as_deref(), Some("1"));
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("70000"));

    // Undeclared, each chunk reserves its bytes as it is kept: the fourth 64 KiB chunk does
    // not fit in 250,000 bytes and is refused, the three before it stay.
    let more = random_bytes(4 * CHUNK - 70_000, 32);
    let r = patch(&node, &t, &path, 70_000, &more).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(offset(&node, &t, &path).await, 3 * CHUNK);

    // Terminated, it gives its reservation back: a 250,000-byte upload fits again.
    let r = tus(node.http.delete(node.url(&path)))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "250000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tus_upload_is_sent_to_three_nodes_in_turn() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    // The leader collects the tails' objects at its next sweep.
    let [n0, n1, n2] = three_nodes_over_s3(
        dir.path(),
        &s3,
        &[("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1")],
    );

    let t = n0.token("alice", Tier::Basic);
    // Two 8 MiB chunks and a bit; each PATCH ends inside a chunk, on another node than the last.
    let data = random_bytes(2 * 8 * MIB + 4321, 33);
    let path = create(&n1, &t, data.len(), "travels.bin").await;
    let cuts = [0, 3 * MIB, 11 * MIB, data.len()];
    for (i, node) in [&n0, &n1, &n2].into_iter().enumerate() {
        let (from, to) = (cuts[i], cuts[i + 1]);
        assert_eq!(offset(node, &t, &path).await, from);
        let r = patch(node, &t, &path, from, &data[from..to]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "PATCH to node {i}");
        assert_eq!(header(&r, "upload-offset"), Some(to.to_string()));
        if i == 0 {
            // 3 MiB of the first 8 MiB chunk: kept as a tail object.
            let id = path.trim_start_matches("/files/");
            let tails = s3
                .object_keys()
                .into_iter()
                .filter(|k| k.contains(&format!("tus/{id}/")));
            assert_eq!(tails.count(), 1);
        }
    }
    let r = head(&n0, &t, &path).await;
    let file = header(&r, "wharf-file-id").expect("finished");
    assert!(n2.download(&t, &file).await == data);
    let id = path.trim_start_matches("/files/");
    assert!(s3.object_keys().contains(&format!("uploads/{id}")));
    // The tails were stored as objects of their own: once the upload ended, none is left.
    let tails = format!("tus/{id}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = s3
            .object_keys()
            .into_iter()
            .filter(|k| k.contains(&tails))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tails left in the store: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn tuspy_uploads_a_file_in_small_patches() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")]);
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(5 * CHUNK + 999, 3);
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    // PATCHes of 50,000 bytes: none ends on a chunk boundary; every one carries a sha1.
    let script = r#"
import sys
from tusclient import client
url, token, path = sys.argv[1:4]
c = client.TusClient(url, headers={"Authorization": "Bearer " + token})
u = c.uploader(file_path=path, chunk_size=50000, upload_checksum=True,
               metadata={"filename": "from tuspy.bin"})
u.upload()
print(u.url)
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &node.url("/files/"),
            &t,
            src.to_str().unwrap(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "tuspy failed (scripts/test installs it: pip install tuspy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let path = url.trim_start_matches(&node.url(""));
    let r = head(&node, &t, path).await;
    assert_eq!(header(&r, "upload-offset"), Some(data.len().to_string()));
    let file = header(&r, "wharf-file-id").unwrap();
    assert!(node.download(&t, &file).await == data);
    let (_, f) = json(
        node.get(&t, &format!("/v1/files/{file}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(f["name"], "from tuspy.bin");
}
