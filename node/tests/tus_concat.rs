//! tus concatenation: partial uploads joined by a final upload into ONE object, with no copy of
//! their bytes. The protocol's answers against a node; then a real client (tus-js-client with
//! `parallelUploads`) against a 3-node cluster over S3, and partials sent to three different
//! nodes and joined before the last of them is whole (concatenation-unfinished).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use common::s3::S3;
use common::*;
use reqwest::{RequestBuilder, Response, StatusCode};
use wharf_raft::model::Tier;

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

async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// A partial upload of `len` bytes made through `node`; its path.
async fn partial(node: &Node, t: &str, len: usize) -> String {
    let r = tus(node.post(t, "/files/"))
        .header("Upload-Concat", "partial")
        .header("Upload-Length", len.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    header(&r, "location").unwrap()
}

/// A final upload of `partials` (URLs as the client writes them); the response.
async fn final_of(node: &Node, t: &str, partials: &[String]) -> Response {
    tus(node.post(t, "/files/"))
        .header("Upload-Concat", format!("final;{}", partials.join(" ")))
        .header(
            "Upload-Metadata",
            format!(
                "filename {},filetype {}",
                b64(b"joined.bin"),
                b64(b"text/plain")
            ),
        )
        .send()
        .await
        .unwrap()
}

async fn patch(node: &Node, t: &str, path: &str, offset: usize, body: &[u8]) -> Response {
    tus(node.http.patch(node.url(path)))
        .bearer_auth(t)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn head(node: &Node, t: &str, path: &str) -> Response {
    tus(node.http.head(node.url(path)))
        .bearer_auth(t)
        .send()
        .await
        .unwrap()
}

/// Waits for the final upload at `path` to be complete; its file id.
async fn finished(node: &Node, t: &str, path: &str, len: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = head(node, t, path).await;
        assert_eq!(r.status(), StatusCode::OK);
        if let Some(file) = header(&r, "wharf-file-id") {
            assert_eq!(header(&r, "upload-offset"), Some(len.to_string()));
            assert_eq!(header(&r, "upload-length"), Some(len.to_string()));
            return file;
        }
        assert!(
            header(&r, "upload-offset").is_none(),
            "a final upload has no offset before it is complete"
        );
        assert!(
            Instant::now() < deadline,
            "the final upload never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn concatenation_answers_as_the_protocol_says() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(
        &dir.path().join("n"),
        &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")],
    );
    let t = node.token("carol", Tier::Basic);
    let r = node
        .http
        .request(reqwest::Method::OPTIONS, node.url("/files/"))
        .send()
        .await
        .unwrap();
    let ext = header(&r, "tus-extension").unwrap();
    for e in ["concatenation", "concatenation-unfinished"] {
        assert!(ext.split(',').any(|x| x == e), "{ext} lacks {e}");
    }

    // A partial needs its length; a malformed Upload-Concat is refused.
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Concat", "partial")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "length_required");
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Concat", "whole")
        .header("Upload-Length", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_concat");

    let a_bytes = random_bytes(150_000, 1);
    let b_bytes = random_bytes(100_000, 2);
    let a = partial(&node, &t, a_bytes.len()).await;
    let b = partial(&node, &t, b_bytes.len()).await;
    let r = head(&node, &t, &a).await;
    assert_eq!(header(&r, "upload-concat").as_deref(), Some("partial"));
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("0"));
    assert_eq!(
        patch(&node, &t, &a, 0, &a_bytes).await.status(),
        StatusCode::NO_CONTENT
    );
    // b is only half there when the final is made (concatenation-unfinished).
    assert_eq!(
        patch(&node, &t, &b, 0, &b_bytes[..50_000]).await.status(),
        StatusCode::NO_CONTENT
    );

    // What a final refuses: a length of its own, an upload that is not partial, one that is
    // not the caller's, a URL of nothing.
    let r = tus(node.post(&t, "/files/"))
        .header("Upload-Concat", format!("final;{a} {b}"))
        .header("Upload-Length", "250000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let plain = tus(node.post(&t, "/files/"))
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    let plain = header(&plain, "location").unwrap();
    let r = final_of(&node, &t, &[a.clone(), plain.clone()]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "invalid_concat");
    let mallory = node.token("mallory", Tier::Basic);
    let r = final_of(&node, &mallory, &[a.clone(), b.clone()]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = final_of(&node, &t, &["/files/../../etc/passwd".to_string()]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The final, with the partials' URLs written absolute and relative.
    let r = final_of(&node, &t, &[node.url(&a), b.clone()]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let fin = header(&r, "location").unwrap();
    let r = head(&node, &t, &fin).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "upload-concat"),
        Some(format!("final;{} {b}", node.url(&a)))
    );
    assert_eq!(header(&r, "upload-length").as_deref(), Some("250000"));
    assert!(header(&r, "upload-offset").is_none());
    // A partial belongs to one final; a final takes no bytes of its own.
    let r = final_of(&node, &t, std::slice::from_ref(&a)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(r).await, "partial_taken");
    let r = patch(&node, &t, &fin, 0, b"x").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The partials hold the reservation; the final counts nothing twice.
    assert_eq!(node.usage(&t).await["reserved"], 250_010);

    // b's last bytes make the final whole: it completes by itself.
    assert_eq!(
        patch(&node, &t, &b, 50_000, &b_bytes[50_000..])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let file = finished(&node, &t, &fin, 250_000).await;
    let got = node.download(&t, &file).await;
    assert!(
        got == [a_bytes, b_bytes].concat(),
        "the joined file differs"
    );
    let usage = node.usage(&t).await;
    assert_eq!(
        (usage["used"].clone(), usage["reserved"].clone()),
        (250_000.into(), 10.into())
    );
    // The partials are gone once joined.
    assert_eq!(head(&node, &t, &a).await.status(), StatusCode::NOT_FOUND);

    // Terminating a final ends its partials and frees what they held.
    let c = partial(&node, &t, 1_000).await;
    let d = partial(&node, &t, 2_000).await;
    let fin2 = header(&final_of(&node, &t, &[c.clone(), d]).await, "location").unwrap();
    assert_eq!(node.usage(&t).await["reserved"], 3_010);
    let r = tus(node.delete(&t, &fin2)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&node, &t, &c).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(node.usage(&t).await["reserved"], 10);
}

/// Bytes read by the processes (`rchar` of /proc/PID/io): disk and sockets alike.
fn rchar(nodes: &[&Node]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let io = std::fs::read_to_string(format!("/proc/{}/io", n.pid())).unwrap();
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

fn parallel_client(endpoint: &str, file: &std::path::Path, token: &str, parts: u32) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus_clients");
    // scripts/test installs tus-js-client there.
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/npm/node_modules");
    let out = std::process::Command::new("node")
        .arg(dir.join("parallel.cjs"))
        .arg(endpoint)
        .arg(file)
        .arg(token)
        .arg(parts.to_string())
        .env("NODE_PATH", modules)
        .output()
        .expect("node (and tus-js-client, which scripts/test installs) is needed");
    assert!(
        out.status.success(),
        "tus-js-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("final "))
        .expect("the client printed its final URL");
    url[url.find("/files/").unwrap()..].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn partials_on_several_nodes_become_one_object_with_no_byte_copied() {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let [n0, n1, n2] = three_nodes_over_s3(dir.path(), &s3, &[]);
    let nodes = [&n0, &n1, &n2];
    let t = n0.token("pat", Tier::Basic);

    // 1. tus-js-client sends a file as four parallel partial uploads and joins them.
    let size = 40 * MIB + 12_345;
    let data = random_bytes(size, 7);
    let src = dir.path().join("parallel.bin");
    std::fs::write(&src, &data).unwrap();
    let before = rchar(&nodes);
    let fin = tokio::task::spawn_blocking({
        let (endpoint, src, t) = (n1.url("/files/"), src.clone(), t.clone());
        move || parallel_client(&endpoint, &src, &t, 4)
    })
    .await
    .unwrap();
    let file = finished(&n2, &t, &fin, size).await;
    let read = rchar(&nodes) - before;
    assert!(
        n0.download(&t, &file).await == data,
        "the joined file differs"
    );
    // Measured: exactly 2.00x in every run (a staged chunk becomes a part of the final as it
    // is, and the object is read back once for the file's BLAKE3). Joining partial objects by
    // reading them back and writing them again would read every byte at least once more.
    println!(
        "nodes read {read} bytes for a {size}-byte file ({:.2}x)",
        read as f64 / size as f64
    );
    assert!(
        read < size as u64 * 5 / 2,
        "the nodes read {read} bytes for {size}: a copy of the partials"
    );
    let fin_id = fin.trim_start_matches("/files/");
    let keys = s3.object_keys();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("uploads/"))
            .collect::<Vec<_>>(),
        [&format!("uploads/{fin_id}")],
        "one object, none for the partials"
    );
    assert_eq!(s3.multipart_uploads(), 0);

    // 2. Three partials, each sent to another node; the final is made on a fourth request
    // before the last one is whole, and completes when it is.
    let lens = [6 * MIB + 1, 5 * MIB, 3 * MIB + 7];
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(lens[i], 20 + i as u64))
        .collect();
    let mut paths = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        paths.push(partial(node, &t, lens[i]).await);
    }
    for i in 0..2 {
        let r = patch(nodes[i], &t, &paths[i], 0, &parts[i]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let r = patch(&n2, &t, &paths[2], 0, &parts[2][..MIB]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = final_of(&n1, &t, &paths).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let fin = header(&r, "location").unwrap();
    let r = patch(&n2, &t, &paths[2], MIB, &parts[2][MIB..]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let file = finished(&n0, &t, &fin, lens.iter().sum()).await;
    assert!(
        n1.download(&t, &file).await == parts.concat(),
        "the file joined across nodes differs"
    );
    assert_eq!(n0.usage(&t).await["reserved"], 0);

    // S3 joins parts of 5 MiB at least but the last: a short partial before another is
    // refused when the final is made, not when the object store would fail it.
    let x = partial(&n0, &t, MIB).await;
    let y = partial(&n0, &t, MIB).await;
    let r = final_of(&n0, &t, &[x, y]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "concat_part_too_small");
}
