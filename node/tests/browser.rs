//! The browser page at `/` in a real browser: headless Chromium (Debian's `chromium`, driven by
//! Playwright for Python, `tests/browser/page.py`) signs in with a token, uploads a 20 MiB file
//! through Uppy over tus, sees 100 %, sees the file in the list and its scan verdict arrive
//! (a real clamd; the verdict comes by the event stream), downloads it byte-identical, and signs
//! in through the link `wharf token issue --url` prints; then an upload cut off by a page
//! reload resumes, once the same file is picked again, from the offset the node holds.
//! Screenshots: `target/browser/`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::clamd::{scan_env, Clamd};
use common::*;
use wharf_raft::model::Tier;

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_signs_in_uploads_through_uppy_sees_the_scan_and_downloads_the_file() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let env = scan_env(&clamd.addr());
    let node = spawn_with(dir.path(), &env, &[], &[]);
    let data_dir = node.data_dir.display().to_string();
    let link = wharf_cli(&[
        "token",
        "issue",
        "--user",
        "pat",
        "--url",
        "--data-dir",
        &data_dir,
    ]);
    let link = link.trim().to_string();
    assert!(
        link.starts_with(&format!("{}/#token=", node.base)),
        "{link}"
    );

    // The page and its assets come from the node itself.
    let page = node.http.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    for asset in [
        "app.js",
        "app.css",
        "uppy.min.mjs",
        "uppy.min.css",
        "uppy-LICENSE.txt",
    ] {
        let r = node
            .http
            .get(node.url(&format!("/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    let missing = node
        .http
        .get(node.url("/assets/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let data = random_bytes(20 * MIB, 20);
    let src = dir.path().join("holiday-video.bin");
    std::fs::write(&src, &data).unwrap();
    let data2 = random_bytes(20 * MIB, 21);
    let src2 = dir.path().join("resumed-after-reload.bin");
    std::fs::write(&src2, &data2).unwrap();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&out).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.py");
    let run = {
        let (link, src, src2, out) = (link.clone(), src.clone(), src2.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("timeout")
                .arg("300")
                .arg("python3")
                .arg(script)
                .arg(&link)
                .arg(&src)
                .arg(&out)
                .arg(&src2)
                .output()
                .expect("run python3 (the browser test needs python3 with playwright and chromium)")
        })
        .await
        .unwrap()
    };
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the browser script failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&run.stdout)));
    assert_eq!(summary["progress"], "100%", "{summary}");
    assert_eq!(summary["scan"], "clean", "{summary}");
    assert_eq!(summary["size"], "20.0 MiB", "{summary}");
    assert!(
        summary["who"].as_str().unwrap().starts_with("pat"),
        "{summary}"
    );
    assert!(
        summary["usage"]
            .as_str()
            .unwrap()
            .starts_with("20.0 MiB used"),
        "{summary}"
    );
    let events = summary["events"].to_string();
    for kind in ["upload.created", "upload.completed", "file.scanned"] {
        assert!(
            events.contains(kind),
            "no {kind} in the page's events: {events}"
        );
    }
    assert_eq!(summary["download_name"], "holiday-video.bin");
    let downloaded = std::fs::read(summary["downloaded"].as_str().unwrap()).unwrap();
    assert!(
        downloaded == data,
        "the downloaded file differs from the uploaded one"
    );
    // The link's token left the address bar once the page took it.
    assert!(
        !summary["link_url_after"]
            .as_str()
            .unwrap()
            .contains("token"),
        "{summary}"
    );
    for shot in [
        "1-sign-in.png",
        "2-file-added.png",
        "3-uploaded-and-scanned.png",
        "4-signed-in-by-link.png",
        "5-cut-off-before-reload.png",
        "6-unfinished-after-reload.png",
        "7-resumed-after-reload.png",
    ] {
        assert!(
            std::fs::metadata(out.join(shot)).unwrap().len() > 1000,
            "{shot}"
        );
    }

    // After the reload the page made no new upload: it asked the node where the cut-off one
    // stood (HEAD) and sent the rest from there, 10 MiB, in its first PATCH.
    let resume = &summary["resume"];
    let held = resume["held"].as_str().unwrap();
    assert_eq!(
        resume["offsets_before"],
        serde_json::json!(["0", "5242880", "10485760"]),
        "{resume}"
    );
    // Before the file was picked again, the page listed the cut-off upload: one whole 8 MiB
    // chunk held (the next 2 MiB wait as the chunk's tail) of 20 MiB.
    let unfinished = summary["unfinished"].as_str().unwrap();
    assert!(
        unfinished.contains("resumed-after-reload.bin")
            && unfinished.contains("8.0 MiB of 20.0 MiB"),
        "{unfinished}"
    );
    let after = resume["after"].as_array().unwrap();
    assert!(
        after.iter().all(|r| r["method"] != "POST"),
        "the page made a new upload after the reload: {resume}"
    );
    assert!(
        after
            .iter()
            .any(|r| r["method"] == "HEAD" && r["url"] == held),
        "{resume}"
    );
    let first_patch = after.iter().find(|r| r["method"] == "PATCH").unwrap();
    assert_eq!(first_patch["url"], held, "{resume}");
    assert_eq!(first_patch["offset"], "10485760", "{resume}");

    // The API agrees: the user's two files, with the same bytes.
    let t = node.token("pat", Tier::Basic);
    let (_, list) = json(node.get(&t, "/v1/files").send().await.unwrap()).await;
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{list}");
    for (name, bytes) in [
        ("holiday-video.bin", &data),
        ("resumed-after-reload.bin", &data2),
    ] {
        let file = files.iter().find(|f| f["name"] == name).unwrap();
        assert!(
            node.download(&t, file["id"].as_str().unwrap()).await == *bytes,
            "{name} differs from the bytes uploaded"
        );
    }
}
