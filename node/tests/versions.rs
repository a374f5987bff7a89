//! Versions: an upload with `on_conflict=replace` (one request or a session) or a
//! `PUT /v1/files/{id}/content` adds a version of the file of that name; `GET …/versions`
//! lists them newest first; a restore makes an earlier one current as a new version; the
//! oldest beyond `versions.keep` are pruned; usage counts every kept version's bytes.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

/// A well-formed id that names nothing.
const MISSING: &str = "00000000-0000-7000-8000-000000000000";

struct Ann<'a> {
    n: &'a Node,
    t: String,
}

impl Ann<'_> {
    /// `POST /v1/files?name=…` with `on_conflict`, if given.
    async fn put(&self, name: &str, on_conflict: Option<&str>, data: &[u8]) -> (StatusCode, Value) {
        let mut q = vec![("name", name)];
        if let Some(c) = on_conflict {
            q.push(("on_conflict", c));
        }
        let r = self.n.post(&self.t, "/v1/files").query(&q);
        json(r.body(data.to_vec()).send().await.unwrap()).await
    }

    async fn versions(&self, file: &str) -> Vec<Value> {
        let path = format!("/v1/files/{file}/versions");
        let (st, v) = json(self.n.get(&self.t, &path).send().await.unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["versions"].as_array().unwrap().clone()
    }

    async fn restore(&self, file: &str, version: &str) -> (StatusCode, Value) {
        let path = format!("/v1/files/{file}/versions/{version}/restore");
        json(self.n.post(&self.t, &path).send().await.unwrap()).await
    }

    async fn used(&self) -> u64 {
        self.n.usage(&self.t).await["used"].as_u64().unwrap()
    }
}

fn sizes(versions: &[Value]) -> Vec<u64> {
    versions
        .iter()
        .map(|v| v["size"].as_u64().unwrap())
        .collect()
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[tokio::test]
async fn replacing_uploads_and_restores_make_versions_that_count_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(
        &dir.path().join("n"),
        &[
            ("WHARF_VERSIONS_KEEP", "3"),
            ("WHARF_TIERS_BASIC_QUOTA", "10000"),
            ("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536"),
        ],
    );
    let ann = Ann {
        n: &node,
        t: node.token("ann", Tier::Basic),
    };
    let v1 = random_bytes(1000, 1);
    let v2 = random_bytes(1500, 2);
    let v3 = random_bytes(2000, 3);
    let v4 = random_bytes(500, 4);

    let (st, f) = ann.put("a.txt", None, &v1).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let id = str_of(&f, "id").to_string();
    let first = str_of(&f, "version").to_string();
    assert_eq!(ann.versions(&id).await.len(), 1);

    // Without replace, the name clashes; with it, the same file gets a new version.
    let (st, clash) = ann.put("a.txt", Some("fail"), &v2).await;
    assert_error(&(st, clash), 409, "name_taken");
    let (st, f) = ann.put("a.txt", Some("replace"), &v2).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(str_of(&f, "id"), id, "{f}");
    assert_eq!(f["size"], 1500);
    assert_ne!(str_of(&f, "version"), first);

    // An upload session with replace: completing it answers the same file.
    let (st, up) = node
        .create(
            &ann.t,
            json!({"name": "a.txt", "size": v3.len(), "on_conflict": "replace",
                   "blake3": blake3::hash(&v3).to_hex().to_string()}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let upload = str_of(&up, "upload_id").to_string();
    assert_eq!(
        node.put_chunk(&ann.t, &upload, 0, &v3).await,
        StatusCode::NO_CONTENT
    );
    let (st, f) = node.complete(&ann.t, &upload).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(str_of(&f, "id"), id, "{f}");

    let versions = ann.versions(&id).await;
    assert_eq!(sizes(&versions), [2000, 1500, 1000]);
    assert_eq!(versions[0]["current"], true);
    assert!(versions[1..].iter().all(|v| v["current"] == false));
    assert_eq!(str_of(&versions[2], "id"), first);
    assert_eq!(
        str_of(&versions[1], "blake3"),
        blake3::hash(&v2).to_hex().as_str()
    );
    assert!(node.download(&ann.t, &id).await == v3);
    assert_eq!(ann.used().await, 4500, "every version counts");
    // One file, still: the listing shows it once.
    assert_eq!(node.file_ids(&ann.t, false).await.len(), 1);

    // PUT …/content: a fourth version; keep = 3 prunes the first, and its bytes leave usage.
    let r = node
        .put(&ann.t, &format!("/v1/files/{id}/content"))
        .body(v4.clone())
        .send()
        .await
        .unwrap();
    let (st, f) = json(r).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(
        (str_of(&f, "id"), str_of(&f, "name")),
        (id.as_str(), "a.txt")
    );
    let versions = ann.versions(&id).await;
    assert_eq!(sizes(&versions), [500, 2000, 1500]);
    assert_eq!(ann.used().await, 4000);
    assert!(node.download(&ann.t, &id).await == v4);

    // A restore: the 1500-byte version's content, as a new current version.
    let old = str_of(&versions[2], "id").to_string();
    let (st, f) = ann.restore(&id, &old).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_ne!(str_of(&f, "version"), old, "a restore is a new version");
    assert!(node.download(&ann.t, &id).await == v2);
    let versions = ann.versions(&id).await;
    assert_eq!(sizes(&versions), [1500, 500, 2000]);
    assert_eq!(ann.used().await, 4000);

    // Unknown versions and files, and another user's file: 404.
    assert_error(&ann.restore(&id, MISSING).await, 404, "not_found");
    assert_error(&ann.restore(MISSING, &old).await, 404, "not_found");
    let bob = node.token("bob", Tier::Basic);
    let (st, _) = json(
        node.get(&bob, &format!("/v1/files/{id}/versions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = node
        .post(&bob, &format!("/v1/files/{id}/versions/{old}/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = node
        .put(&bob, &format!("/v1/files/{id}/content"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        node.download(&ann.t, &id).await == v2,
        "bob changed nothing"
    );

    // Over the quota: a new version is refused (507), and so is a restore; nothing changes.
    let big = random_bytes(5000, 5);
    let (st, other) = ann.put("big.bin", None, &big).await;
    assert_eq!(st, StatusCode::CREATED, "{other}");
    assert_eq!(ann.used().await, 9000);
    let (st, refused) = ann
        .put("a.txt", Some("replace"), &random_bytes(1500, 6))
        .await;
    assert_error(&(st, refused), 507, "quota_exceeded");
    let two_thousand = str_of(&versions[2], "id").to_string();
    assert_error(
        &ann.restore(&id, &two_thousand).await,
        507,
        "quota_exceeded",
    );
    assert_eq!(sizes(&ann.versions(&id).await), [1500, 500, 2000]);
    assert_eq!(ann.used().await, 9000);

    // Deleted, the file waits in the trash with every version counted; purged, they all go.
    for path in [format!("/v1/files/{id}"), format!("/v1/trash/{id}")] {
        let r = node.delete(&ann.t, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(ann.used().await, 5000);
}

#[tokio::test]
async fn replace_never_turns_a_folder_into_a_file_and_folders_have_no_versions() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = Ann {
        n: &node,
        t: node.token("ann", Tier::Basic),
    };
    let r = node
        .post(&ann.t, "/v1/folders")
        .json(&json!({"name": "docs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (st, got) = ann.put("docs", Some("replace"), b"not a folder").await;
    assert_error(&(st, got), 409, "name_taken");
    let (st, got) = node
        .create(
            &ann.t,
            json!({"name": "docs", "size": 3, "on_conflict": "replace"}),
        )
        .await;
    assert_error(&(st, got), 409, "name_taken");
    let r = node
        .post(&ann.t, "/v1/folders")
        .json(&json!({"name": "docs", "on_conflict": "replace"}))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 400, "invalid_request");
    let (st, got) = ann.put("x", Some("sideways"), b"?").await;
    assert_error(&(st, got), 400, "invalid_request");
}
