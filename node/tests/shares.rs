//! Sharing with users: a folder or file shared as viewer or editor; viewers read (listings,
//! downloads, versions), editors also rename and add versions, which the owner's quota pays;
//! only the owner deletes, moves or reshares; a revoke ends access at once; without a share
//! another user's ids are 404.

mod common;

use common::drive::User;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_raft::model::Tier;

#[tokio::test]
async fn viewers_read_editors_write_and_a_revoke_ends_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = User::new(&node, "ann", Tier::Basic);
    let bob = User::new(&node, "bob", Tier::Basic);
    let (st, team) = ann.post("/v1/folders", json!({"name": "team"})).await;
    assert_eq!(st, StatusCode::CREATED, "{team}");
    let team = team["id"].as_str().unwrap().to_string();
    let plan = ann.put("plan.txt", Some(&team), b"plan v1").await;
    let private = ann.put("private.txt", None, b"mine").await;

    // Nothing shared yet: ann's ids are 404 to bob.
    assert_eq!(
        bob.get(&format!("/v1/files/{plan}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.get(&format!("/v1/folders/{team}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(bob.shared_with_me().await.is_empty());

    // The folder shared with bob as a viewer: he lists and reads what is under it.
    let (st, share) = ann
        .post(
            &format!("/v1/folders/{team}/shares"),
            json!({"user": "bob", "role": "viewer"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{share}");
    assert_eq!(
        (
            share["kind"].as_str(),
            share["user"].as_str(),
            share["role"].as_str()
        ),
        (Some("folder"), Some("bob"), Some("viewer"))
    );
    let mine = bob.shared_with_me().await;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (
            mine[0]["id"].as_str(),
            mine[0]["owner"].as_str(),
            mine[0]["name"].as_str()
        ),
        (Some(team.as_str()), Some("ann"), Some("team"))
    );
    let (st, listing) = bob.get(&format!("/v1/folders/{team}")).await;
    assert_eq!(st, StatusCode::OK, "{listing}");
    assert_eq!(listing["entries"][0]["name"], "plan.txt");
    assert_eq!(
        bob.content(&plan).await,
        (StatusCode::OK, b"plan v1".to_vec())
    );
    assert_eq!(
        bob.get(&format!("/v1/files/{plan}/versions")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        bob.get(&format!("/v1/files/{private}")).await.0,
        StatusCode::NOT_FOUND
    );
    // Search finds what is shared with him (in the shared folder too), and nothing else.
    let bob_plan = bob.put("plan for bob.txt", None, b"his").await;
    let (_, found) = bob.get("/v1/search?q=plan").await;
    let ids: Vec<&str> = found["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [plan.as_str(), bob_plan.as_str()], "{found}");
    let (_, found) = bob.get(&format!("/v1/search?q=plan&folder={team}")).await;
    assert_eq!(found["files"].as_array().unwrap().len(), 1, "{found}");
    let (_, found) = bob.get("/v1/search?q=private").await;
    assert!(found["files"].as_array().unwrap().is_empty(), "{found}");
    // A viewer writes nothing: 403, and nothing changes.
    assert_error(&bob.put_content(&plan, b"bob's").await, 403, "forbidden");
    let renamed = bob
        .patch(&format!("/v1/files/{plan}"), json!({"name": "x"}))
        .await;
    assert_error(&renamed, 403, "forbidden");
    assert_eq!(
        bob.del(&format!("/v1/files/{plan}")).await,
        StatusCode::FORBIDDEN
    );
    // Nor shares, lists shares of or links what is not his.
    let reshare = bob
        .post(
            &format!("/v1/files/{plan}/shares"),
            json!({"user": "carol", "role": "viewer"}),
        )
        .await;
    assert_error(&reshare, 404, "not_found");
    assert_eq!(
        bob.get(&format!("/v1/folders/{team}/shares")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.post(&format!("/v1/files/{plan}/links"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(ann.content(&plan).await.1, b"plan v1");

    // The file itself shared as editor: bob adds a version (ann's quota pays) and renames it.
    let (st, _) = ann
        .post(
            &format!("/v1/files/{plan}/shares"),
            json!({"user": "bob", "role": "editor"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let before = ann.used().await;
    let bob_before = bob.used().await;
    let (st, f) = bob.put_content(&plan, b"plan v2 by bob").await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["id"], plan.as_str());
    assert_eq!(ann.used().await, before + 14);
    assert_eq!(bob.used().await, bob_before, "the owner pays");
    assert_eq!(ann.content(&plan).await.1, b"plan v2 by bob");
    let (st, f) = bob
        .patch(&format!("/v1/files/{plan}"), json!({"name": "plan.md"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "plan.md");
    // An editor neither moves nor deletes: those are the owner's.
    let moved = bob
        .patch(&format!("/v1/files/{plan}"), json!({"parent": "root"}))
        .await;
    assert_error(&moved, 403, "forbidden");
    assert_eq!(
        bob.del(&format!("/v1/files/{plan}")).await,
        StatusCode::FORBIDDEN
    );
    let (st, versions) = bob.get(&format!("/v1/files/{plan}/versions")).await;
    assert_eq!(st, StatusCode::OK, "{versions}");
    let first = versions["versions"][1]["id"].as_str().unwrap().to_string();
    let restore = format!("/v1/files/{plan}/versions/{first}/restore");
    let (st, f) = bob.post(&restore, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(ann.content(&plan).await.1, b"plan v1");
    let (_, listed) = ann.get(&format!("/v1/files/{plan}/shares")).await;
    assert_eq!(listed["shares"].as_array().unwrap().len(), 1, "{listed}");

    // Revoking the file's share leaves the folder's (viewer); revoking that ends everything.
    let revoke = format!("/v1/files/{plan}/shares/bob");
    assert_eq!(ann.del(&revoke).await, StatusCode::NO_CONTENT);
    assert_eq!(ann.del(&revoke).await, StatusCode::NOT_FOUND);
    assert_error(&bob.put_content(&plan, b"late").await, 403, "forbidden");
    assert_eq!(
        ann.del(&format!("/v1/folders/{team}/shares/bob")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(bob.content(&plan).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        bob.get(&format!("/v1/folders/{team}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_error(&bob.put_content(&plan, b"late").await, 404, "not_found");
    assert!(bob.shared_with_me().await.is_empty());
    let (_, found) = bob.get("/v1/search?q=plan").await;
    assert_eq!(
        found["files"].as_array().unwrap().len(),
        1,
        "only his own: {found}"
    );
    assert_eq!(ann.content(&plan).await.1, b"plan v1");
}

#[tokio::test]
async fn shares_are_refused_when_malformed_and_end_with_the_trash() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = User::new(&node, "ann", Tier::Basic);
    let bob = User::new(&node, "bob", Tier::Basic);
    let f = ann.put("a.txt", None, b"a").await;
    let path = format!("/v1/files/{f}/shares");
    for body in [
        json!({"user": "ann", "role": "viewer"}),
        json!({"user": "bob", "role": "owner"}),
        json!({"user": "", "role": "viewer"}),
        json!({"user": "../bob", "role": "viewer"}),
    ] {
        assert_error(&ann.post(&path, body).await, 400, "invalid_request");
    }
    let (st, _) = ann
        .post(&path, json!({"user": "bob", "role": "viewer"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(bob.content(&f).await.0, StatusCode::OK);
    // An editor of a richer tier adds a version: the owner's tier and quota stay theirs.
    let carol = User::new(&node, "carol", Tier::Premium);
    let quota = node.usage(&ann.t).await["quota"].clone();
    let (st, _) = ann
        .post(&path, json!({"user": "carol", "role": "editor"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = carol.put_content(&f, b"carol's").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(node.usage(&ann.t).await["quota"], quota);
    // In the trash: shared with nobody; restored: shared again; purged: the share is gone.
    assert_eq!(
        ann.del(&format!("/v1/files/{f}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(bob.content(&f).await.0, StatusCode::NOT_FOUND);
    assert!(bob.shared_with_me().await.is_empty());
    let (st, _) = ann.post(&format!("/v1/trash/{f}/restore"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(bob.content(&f).await.0, StatusCode::OK);
    assert_eq!(
        ann.del(&format!("/v1/files/{f}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.del(&format!("/v1/trash/{f}")).await,
        StatusCode::NO_CONTENT
    );
    assert!(bob.shared_with_me().await.is_empty());
    assert_eq!(ann.get(&path).await.0, StatusCode::NOT_FOUND);
}
