//! Real tus clients against a 3-node cluster over S3 (moto): tuspy (PyPI) and tus-js-client
//! (npm, under node) each upload a 50 MiB file in 5 MiB PATCHes, are interrupted (the client
//! process SIGKILLed; in another case the node it talks to SIGKILLed), resume against another
//! node, and the download is byte-identical. tus-js-client also streams a file of unknown
//! length (creation-defer-length).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::S3;
use common::*;
use reqwest::StatusCode;
use wharf_raft::model::Tier;

const SIZE: usize = 50 * MIB;

#[derive(Clone, Copy, Debug)]
enum TusClient {
    Tuspy,
    TusJs,
}

impl TusClient {
    fn command(self, url: &str, file: &Path, token: &str) -> Command {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus_clients");
        let mut c = match self {
            TusClient::Tuspy => {
                let mut c = Command::new("python3");
                c.arg(dir.join("upload.py"));
                c
            }
            TusClient::TusJs => {
                let mut c = Command::new("node");
                c.arg(dir.join("upload.cjs"));
                // scripts/test installs tus-js-client there.
                let modules =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/npm/node_modules");
                c.env("NODE_PATH", modules);
                c
            }
        };
        c.arg(url).arg(file).arg(token);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn spawn(self, url: &str, file: &Path, token: &str) -> Child {
        self.command(url, file, token)
            .spawn()
            .unwrap_or_else(|e| panic!("{self:?} did not start: {e}"))
    }

    /// Runs the client to its end; it must succeed.
    async fn finish(self, url: &str, file: &Path, token: &str) {
        let mut cmd = self.command(url, file, token);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{self:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn create(node: &Node, t: &str, name: &str) -> String {
    let r = node
        .post(t, "/files/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", SIZE.to_string())
        .header("Upload-Metadata", format!("filename {}", b64(name)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    node.url(&loc)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `(offset, file id once finished)` of the upload at `url` (its path), asked of `node`.
async fn head(node: &Node, t: &str, url: &str) -> (usize, Option<String>) {
    let path = &url[url.find("/files/").unwrap()..];
    let r = node
        .http
        .head(node.url(path))
        .bearer_auth(t)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    (
        h("upload-offset").unwrap().parse().unwrap(),
        h("wharf-file-id"),
    )
}

/// Waits until the upload holds at least `at` bytes (as `node` sees it).
async fn wait_offset(node: &Node, t: &str, url: &str, at: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if head(node, t, url).await.0 >= at {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never reached {at} bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn on(node: &Node, url: &str) -> String {
    node.url(&url[url.find("/files/").unwrap()..])
}

async fn interrupted_and_resumed_on_other_nodes(client: TusClient) {
    let s3 = S3::shared();
    let dir = tempfile::tempdir().unwrap();
    let [n0, n1, n2] = three_nodes_over_s3(
        dir.path(),
        &s3,
        &[
            ("WHARF_UPLOAD_MIN_CHUNK_SIZE", "5242880"),
            // A restarted node offloads the chunks it staged at its next sweep.
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
        ],
    );
    let t = n0.token("tess", Tier::Basic);
    let data = random_bytes(SIZE, 50);
    let src = dir.path().join("fifty.bin");
    std::fs::write(&src, &data).unwrap();

    // 1. The client process is killed mid-upload; it resumes against another node.
    let url = create(&n0, &t, "client-killed.bin").await;
    let mut child = client.spawn(&url, &src, &t);
    wait_offset(&n0, &t, &url, 15 * MIB).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (at, _) = head(&n1, &t, &url).await;
    assert!((15 * MIB..SIZE).contains(&at), "offset {at} after the kill");
    client.finish(&on(&n1, &url), &src, &t).await;
    let (at, file) = head(&n2, &t, &url).await;
    assert_eq!(at, SIZE);
    let file = file.expect("finished");
    assert!(
        n2.download(&t, &file).await == data,
        "{client:?}: the download differs"
    );

    // 2. The node the client talks to is killed; the client resumes against another one.
    let url = create(&n1, &t, "node-killed.bin").await;
    let mut child = client.spawn(&on(&n2, &url), &src, &t);
    wait_offset(&n0, &t, &url, 15 * MIB).await;
    let n2_dir = n2.kill9();
    child.kill().unwrap();
    child.wait().unwrap();
    let (at, _) = head(&n0, &t, &url).await;
    assert!(
        (15 * MIB..SIZE).contains(&at),
        "offset {at} after the node died"
    );
    // The killed node comes back (chunks only it staged reach the store from there) while the
    // client finishes through another node.
    let via_n0 = on(&n0, &url);
    let resumed = client.finish(&via_n0, &src, &t);
    let restart = tokio::task::spawn_blocking(move || n2_dir.restart());
    resumed.await;
    let n2 = restart.await.unwrap();
    let (at, file) = head(&n1, &t, &url).await;
    assert_eq!(at, SIZE);
    assert!(
        n2.download(&t, &file.unwrap()).await == data,
        "{client:?}: the download differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tuspy_is_interrupted_and_resumes_on_other_nodes() {
    interrupted_and_resumed_on_other_nodes(TusClient::Tuspy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tus_js_client_is_interrupted_and_resumes_on_other_nodes() {
    interrupted_and_resumed_on_other_nodes(TusClient::TusJs).await;
}

#[tokio::test]
async fn tus_js_client_streams_a_file_whose_length_it_declares_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")]);
    let t = node.token("alice", Tier::Basic);
    // Not a multiple of tus-js-client's 1 MiB PATCHes nor of the node's chunks.
    let data = random_bytes(3 * MIB + 12_345, 41);
    let file = dir.path().join("streamed.bin");
    std::fs::write(&file, &data).unwrap();
    let dir_js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus_clients");
    let mut cmd = Command::new("node");
    cmd.arg(dir_js.join("deferred.cjs"))
        .arg(node.url("/files/"))
        .arg(&file)
        .arg(&t)
        .env(
            "NODE_PATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/npm/node_modules"),
        );
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tus-js-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("url "))
        .expect("the upload's URL");
    let (offset, file_id) = head(&node, &t, url).await;
    assert_eq!(offset, data.len());
    let file_id = file_id.expect("the declared upload made a file");
    assert!(node.download(&t, &file_id).await == data);
}
