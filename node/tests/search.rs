//! Name search: word prefixes, case-insensitive and Unicode-normalised, over the caller's own
//! files only, following renames and deletes, with a type filter and pages.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

async fn put(node: &Node, t: &str, name: &str, mime: &str) -> String {
    let r = node
        .post(t, "/v1/files")
        .query(&[("name", name), ("mime", mime)])
        .body(name.as_bytes().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    json(r).await.1["id"].as_str().unwrap().to_string()
}

async fn search(node: &Node, t: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    json(node.get(t, "/v1/search").query(query).send().await.unwrap()).await
}

fn names(v: &Value) -> Vec<String> {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn search_finds_the_callers_files_by_the_words_of_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = node.token("ann", Tier::Basic);
    let bob = node.token("bob", Tier::Basic);
    put(&node, &ann, "Quarterly Report.pdf", "application/pdf").await;
    let draft = put(&node, &ann, "report-draft 2024.txt", "text/plain").await;
    put(&node, &ann, "ÉQUIPE photo.JPG", "image/jpeg").await;
    put(&node, &ann, "other.bin", "application/octet-stream").await;
    put(&node, &bob, "Bob's report.pdf", "application/pdf").await;

    // Word prefixes, any case; in creation order; only the caller's files.
    let (st, v) = search(&node, &ann, &[("q", "REP")]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(names(&v), ["Quarterly Report.pdf", "report-draft 2024.txt"]);
    let (_, v) = search(&node, &bob, &[("q", "rep")]).await;
    assert_eq!(names(&v), ["Bob's report.pdf"]);
    // Every word must begin a word of the name; not a match inside a word.
    let (_, v) = search(&node, &ann, &[("q", "report 2024")]).await;
    assert_eq!(names(&v), ["report-draft 2024.txt"]);
    let (_, v) = search(&node, &ann, &[("q", "eport")]).await;
    assert!(names(&v).is_empty());
    // Unicode: case folded and normalised (full-width letters are the same letters).
    let (_, v) = search(&node, &ann, &[("q", "équipe")]).await;
    assert_eq!(names(&v), ["ÉQUIPE photo.JPG"]);
    let (_, v) = search(&node, &ann, &[("q", "ＰＨＯＴＯ")]).await;
    assert_eq!(names(&v), ["ÉQUIPE photo.JPG"]);
    // A type filter, and pages.
    let (_, v) = search(&node, &ann, &[("q", "report"), ("mime", "text/")]).await;
    assert_eq!(names(&v), ["report-draft 2024.txt"]);
    let (_, page) = search(&node, &ann, &[("q", "report"), ("limit", "1")]).await;
    assert_eq!(names(&page), ["Quarterly Report.pdf"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = search(
        &node,
        &ann,
        &[("q", "report"), ("limit", "1"), ("cursor", &cursor)],
    )
    .await;
    assert_eq!(names(&page), ["report-draft 2024.txt"]);
    assert!(page["next_cursor"].is_null());

    // A rename is found by its new name only; a deleted file is gone.
    let r = node
        .http
        .patch(node.url(&format!("/v1/files/{draft}")))
        .bearer_auth(&ann)
        .json(&json!({"name": "budget 2024.txt"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_, v) = search(&node, &ann, &[("q", "report")]).await;
    assert_eq!(names(&v), ["Quarterly Report.pdf"]);
    let (_, v) = search(&node, &ann, &[("q", "budg")]).await;
    assert_eq!(names(&v), ["budget 2024.txt"]);
    let r = node
        .delete(&ann, &format!("/v1/files/{draft}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_, v) = search(&node, &ann, &[("q", "budget")]).await;
    assert!(names(&v).is_empty());

    // `folder` keeps the files directly in it; another user's folder is 404.
    let (st, work) = json(
        node.post(&ann, "/v1/folders")
            .json(&json!({"name": "work"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{work}");
    let work = work["id"].as_str().unwrap().to_string();
    let r = node
        .post(&ann, "/v1/files")
        .query(&[("name", "report for work.txt"), ("folder", &work)])
        .body("w")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, v) = search(&node, &ann, &[("q", "report"), ("folder", &work)]).await;
    assert_eq!(names(&v), ["report for work.txt"]);
    let (_, v) = search(&node, &ann, &[("q", "report"), ("folder", "root")]).await;
    assert_eq!(names(&v), ["Quarterly Report.pdf"]);
    let (st, _) = search(&node, &bob, &[("q", "report"), ("folder", &work)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A query with nothing to search for is a clear 400.
    let (st, body) = search(&node, &ann, &[("q", "  ..  ")]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
}
