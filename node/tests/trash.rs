//! The trash: `DELETE` of a file or folder moves it (with all under it) out of sight (listings,
//! search, downloads, share links) while its bytes still count; `GET /v1/trash` lists it,
//! a restore puts it back (renamed when its name was taken meanwhile), a purge deletes it for
//! good, and the leader purges what is older than `trash.retention_secs`.

mod common;

use std::time::{Duration, Instant};

use common::drive::User;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_raft::model::Tier;

/// `GET /s/{token}/content` with no account: its status.
async fn through_link(n: &Node, token: &str) -> StatusCode {
    let r = n.http.get(n.url(&format!("/s/{token}/content")));
    r.send().await.unwrap().status()
}

#[tokio::test]
async fn deleted_entries_wait_in_the_trash_until_restored_or_purged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = User::new(&node, "ann", Tier::Basic);
    let docs = ann.mkdir("docs", None).await;
    let year = ann.mkdir("2026", Some(&docs)).await;
    let report = ann.put("report.txt", Some(&year), b"report").await;
    let notes = ann.put("notes.txt", None, b"notes!").await;
    let (st, link) = ann
        .post(&format!("/v1/files/{report}/links"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{link}");
    let token = link["token"].as_str().unwrap().to_string();
    assert_eq!(through_link(&node, &token).await, StatusCode::OK);
    assert_eq!(ann.used().await, 12);

    // A file to the trash: out of every view, still counted.
    assert_eq!(
        ann.del(&format!("/v1/files/{notes}")).await,
        StatusCode::NO_CONTENT
    );
    for path in [
        format!("/v1/files/{notes}"),
        format!("/v1/files/{notes}/content"),
        format!("/v1/files/{notes}/versions"),
    ] {
        assert_eq!(ann.status(&path).await, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, listed) = ann.get("/v1/files").await;
    assert_eq!(listed["files"].as_array().unwrap().len(), 1, "{listed}");
    let (_, found) = ann.get("/v1/search?q=notes").await;
    assert!(found["files"].as_array().unwrap().is_empty(), "{found}");
    assert_eq!(ann.names("root").await, ["docs"]);
    assert_eq!(ann.used().await, 12, "trashed bytes count until purged");
    let trash = ann.trash().await;
    assert_eq!(trash.len(), 1);
    let e = &trash[0];
    assert_eq!(
        (e["id"].as_str(), e["kind"].as_str()),
        (Some(notes.as_str()), Some("file"))
    );
    assert_eq!(
        (e["name"].as_str(), e["size"].as_u64()),
        (Some("notes.txt"), Some(6))
    );
    assert!(e["parent"].is_null(), "{e}");
    assert!(e["purge_at"].as_str().unwrap() > e["trashed_at"].as_str().unwrap());
    // Deleting it again: it is not there to delete.
    assert_eq!(
        ann.del(&format!("/v1/files/{notes}")).await,
        StatusCode::NOT_FOUND
    );

    // A folder to the trash: everything under it with it, a share link included.
    assert_eq!(
        ann.del(&format!("/v1/folders/{docs}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.status(&format!("/v1/files/{report}")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ann.status(&format!("/v1/folders/{year}")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(through_link(&node, &token).await, StatusCode::NOT_FOUND);
    let (_, found) = ann.get("/v1/search?q=report").await;
    assert!(found["files"].as_array().unwrap().is_empty(), "{found}");
    assert!(ann.names("root").await.is_empty());
    assert_eq!(
        ann.trash().await.len(),
        2,
        "the folder, not what is under it"
    );
    // Nothing is made inside a trashed folder.
    let r = node
        .post(&ann.t, "/v1/files")
        .query(&[("name", "x"), ("folder", &year)])
        .body("x");
    assert_eq!(r.send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Another user can neither see, restore nor purge ann's trash.
    let bob = User::new(&node, "bob", Tier::Basic);
    assert!(bob.trash().await.is_empty());
    assert_eq!(
        bob.post(&format!("/v1/trash/{docs}/restore"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.del(&format!("/v1/trash/{docs}")).await,
        StatusCode::NOT_FOUND
    );

    // The folder comes back with all in it, and the link serves again.
    let (st, back) = ann
        .post(&format!("/v1/trash/{docs}/restore"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{back}");
    assert_eq!(
        (back["kind"].as_str(), back["name"].as_str()),
        (Some("folder"), Some("docs"))
    );
    assert_eq!(ann.names(&year).await, ["report.txt"]);
    assert_eq!(through_link(&node, &token).await, StatusCode::OK);

    // A new notes.txt took the name meanwhile: the restored one is "notes (1).txt".
    ann.put("notes.txt", None, b"new").await;
    let (st, back) = ann
        .post(&format!("/v1/trash/{notes}/restore"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{back}");
    assert_eq!(
        (back["kind"].as_str(), back["name"].as_str()),
        (Some("file"), Some("notes (1).txt"))
    );
    assert!(node.download(&ann.t, &notes).await == b"notes!");
    assert_eq!(
        ann.names("root").await,
        ["docs", "notes (1).txt", "notes.txt"]
    );
    assert!(ann.trash().await.is_empty());
    assert_eq!(
        ann.post(&format!("/v1/trash/{notes}/restore"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Purged: gone for good, its bytes released.
    assert_eq!(ann.used().await, 15);
    assert_eq!(
        ann.del(&format!("/v1/files/{notes}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.del(&format!("/v1/trash/{notes}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ann.used().await, 9);
    assert_eq!(
        ann.del(&format!("/v1/trash/{notes}")).await,
        StatusCode::NOT_FOUND
    );
    // Emptying the trash purges a folder with all in it.
    assert_eq!(
        ann.del(&format!("/v1/folders/{docs}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ann.del("/v1/trash").await, StatusCode::NO_CONTENT);
    assert!(ann.trash().await.is_empty());
    assert_eq!(ann.used().await, 3);
    assert_eq!(
        ann.post(&format!("/v1/trash/{docs}/restore"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(through_link(&node, &token).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_leader_purges_what_stayed_in_the_trash_past_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(
        &dir.path().join("n"),
        &[
            ("WHARF_TRASH_RETENTION_SECS", "1"),
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
        ],
    );
    let ann = User::new(&node, "ann", Tier::Basic);
    let id = ann.put("old.txt", None, b"0123456789").await;
    assert_eq!(
        ann.del(&format!("/v1/files/{id}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ann.used().await, 10);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ann.trash().await.is_empty() {
        assert!(Instant::now() < deadline, "the trash was never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ann.used().await, 0);
}
