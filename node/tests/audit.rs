//! The audit log holds exactly the actions a test performed, with their actors, address and
//! node; downloads come in batches and survive a SIGKILL of the node that served them.

mod common;

use std::time::{Duration, Instant};

use common::drive::User;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// The audit records `query` selects (all pages), once at least `want` are there.
async fn records(admin: &User<'_>, query: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = match &cursor {
                Some(c) => format!("/v1/admin/audit?{query}{sep}cursor={c}"),
                None => format!("/v1/admin/audit?{query}"),
            };
            let (st, page) = admin.get(&path).await;
            assert_eq!(st, StatusCode::OK, "{page}");
            all.extend(page["records"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        if all.len() >= want {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} records: {all:#?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn actions(rs: &[Value]) -> Vec<(String, String)> {
    rs.iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn the_audit_log_holds_exactly_what_was_done_and_by_whom() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let admin = User::new(&node, "root", Tier::Admin);
    let ann = User::new(&node, "ann", Tier::Basic);
    let bob = User::new(&node, "bob", Tier::Basic);

    // Writes, in order.
    let up = node.upload(&ann.t, "big.bin", &[7u8; 3000]).await;
    let big = up["id"].as_str().unwrap().to_string();
    let small = ann.put("small.txt", None, b"small").await;
    let docs = ann.mkdir("docs", None).await;
    let (st, _) = ann
        .patch(
            &format!("/v1/files/{small}"),
            json!({"name": "renamed.txt"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = ann
        .patch(&format!("/v1/files/{small}"), json!({"parent": docs}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = ann
        .post(
            &format!("/v1/files/{big}/shares"),
            json!({"user": "bob", "role": "viewer"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, link) = ann
        .post(&format!("/v1/files/{small}/links"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{link}");
    let token = link["token"].as_str().unwrap();
    // Downloads: bob through the API (a shared file), someone with the link (twice: a link
    // with a download limit counts each download in the log, one without is batched).
    let (st, body) = bob.content(&big).await;
    assert_eq!((st, body.len()), (StatusCode::OK, 3000));
    let r = node
        .http
        .get(node.url(&format!("/s/{token}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, counted) = ann
        .post(
            &format!("/v1/files/{small}/links"),
            json!({"max_downloads": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{counted}");
    let r = node
        .http
        .get(node.url(&format!(
            "/s/{}/content",
            counted["token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        ann.del(&format!("/v1/files/{small}")).await,
        StatusCode::NO_CONTENT
    );
    let r = node
        .put(&admin.t, "/v1/admin/users/ann/quota")
        .json(&json!({"quota": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Refused actions leave no record.
    assert_eq!(
        bob.del(&format!("/v1/files/{big}")).await,
        StatusCode::FORBIDDEN
    );

    let all = records(&admin, "", 14).await;
    let writes: Vec<Value> = all
        .iter()
        .filter(|r| {
            !matches!(
                r["action"].as_str().unwrap(),
                "download.api" | "download.link"
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        actions(&writes),
        pairs(&[
            ("ann", "upload.create"),
            ("ann", "upload.complete"),
            ("ann", "file.create"),
            ("ann", "folder.create"),
            ("ann", "file.rename"),
            ("ann", "file.move"),
            ("ann", "share.create"),
            ("ann", "link.create"),
            ("ann", "link.create"),
            ("ann", "file.trash"),
            ("root", "admin.set_quota"),
        ]),
        "{all:#?}"
    );
    assert_eq!(all.len(), 14, "{all:#?}");
    // Every record says from where and through which node; ids grow with the log.
    for r in &all {
        assert_eq!(r["addr"], "127.0.0.1", "{r}");
        assert_eq!(r["node"], node.node_id, "{r}");
    }
    let download = all.iter().find(|r| r["action"] == "download.api").unwrap();
    assert_eq!(
        (&download["actor"], &download["owner"], &download["target"]),
        (&json!("bob"), &json!("ann"), &json!(big))
    );
    let by_link: Vec<&Value> = all
        .iter()
        .filter(|r| r["action"] == "download.link")
        .collect();
    assert_eq!(by_link.len(), 2, "{all:#?}");
    for r in by_link {
        assert_eq!(
            (&r["actor"], &r["owner"], &r["target"]),
            (&json!("anonymous"), &json!("ann"), &json!(small))
        );
    }
    let renamed = all.iter().find(|r| r["action"] == "file.rename").unwrap();
    assert_eq!(renamed["detail"], "renamed.txt");

    // Filters: by user (as actor or owner), by action (a prefix of dotted names), by time.
    let bobs = records(&admin, "user=bob", 1).await;
    assert_eq!(actions(&bobs), pairs(&[("bob", "download.api")]));
    let downloads = records(&admin, "action=download", 3).await;
    assert_eq!(downloads.len(), 3, "{downloads:#?}");
    let none = records(&admin, "since=2999-01-01T00:00:00Z", 0).await;
    assert!(none.is_empty(), "{none:#?}");
    let (st, _) = ann.get("/v1/admin/audit").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for bad in ["since=yesterday", "limit=0", "cursor=x", "user=a/b"] {
        let got = admin.get(&format!("/v1/admin/audit?{bad}")).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{bad}: {}", got.1);
    }

    // The CLI prints them.
    let out = wharf_cli(&[
        "admin",
        "audit",
        "--node",
        &node.url(""),
        "--token",
        &admin.t,
        "--user",
        "bob",
    ]);
    assert!(out.lines().next().unwrap().starts_with("AT"), "{out}");
    assert!(out.contains("download.api"), "{out}");
}

#[tokio::test]
async fn a_download_is_recorded_even_when_its_node_is_killed_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("n");
    // Batches are due only after a minute: the node is killed long before.
    let node = Node::start_unscanned(&data_dir, &[("WHARF_AUDIT_DOWNLOAD_FLUSH_MS", "60000")]);
    let ann_t = node.token("ann", Tier::Basic);
    let f = node.upload(&ann_t, "f.bin", b"some bytes").await;
    let id = f["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(node.download(&ann_t, &id).await, b"some bytes");
    }
    let spooled = std::fs::read_to_string(data_dir.join("audit-spool.jsonl")).unwrap();
    assert_eq!(spooled.lines().count(), 3, "{spooled}");
    let node = node.kill9().restart();
    let admin = User::new(&node, "root", Tier::Admin);
    let got = records(&admin, "action=download.api", 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    // Replayed once: later pages hold no copies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = records(&admin, "action=download.api", 3).await;
    assert_eq!(again.len(), 3, "{again:#?}");
}
