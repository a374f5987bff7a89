//! Admin usage: `GET /v1/admin/usage` (totals per tier), `GET /v1/admin/users` (by bytes used
//! or id, paginated from an index), `GET /v1/admin/users/{id}`, and `wharf admin usage|users`.

mod common;

use common::drive::User;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

#[tokio::test]
async fn admin_usage_is_the_sum_of_the_users_usage() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let admin = User::new(&node, "root", Tier::Admin);
    let ann = User::new(&node, "ann", Tier::Basic);
    let bob = User::new(&node, "bob", Tier::Premium);
    let cat = User::new(&node, "cat", Tier::Basic);
    ann.put("a1.txt", None, &[1; 300]).await;
    let a2 = ann.put("a2.txt", None, &[2; 200]).await;
    bob.put("b1.txt", None, &[3; 1000]).await;
    cat.put("c1.txt", None, &[4; 10]).await;
    // An upload in progress holds a reservation.
    let (st, up) = node
        .create(&cat.t, json!({"name": "big.bin", "size": 5000}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    // A trashed file still counts (its bytes do too).
    assert_eq!(
        ann.del(&format!("/v1/files/{a2}")).await,
        StatusCode::NO_CONTENT
    );

    // Only admins.
    let (st, body) = ann.get("/v1/admin/usage").await;
    assert_error(&(st, body), 403, "forbidden");
    assert_eq!(ann.status("/v1/admin/users").await, StatusCode::FORBIDDEN);

    let (st, totals) = admin.get("/v1/admin/usage").await;
    assert_eq!(st, StatusCode::OK, "{totals}");
    assert_eq!(totals["complete"], true, "{totals}");
    let mut used = 0;
    let mut reserved = 0;
    for u in [&ann, &bob, &cat] {
        let usage = node.usage(&u.t).await;
        used += usage["used"].as_u64().unwrap();
        reserved += usage["reserved"].as_u64().unwrap();
    }
    assert_eq!((used, reserved), (1510, 5000));
    assert_eq!(totals["used"], used, "{totals}");
    assert_eq!(totals["reserved"], reserved, "{totals}");
    assert_eq!(totals["users"], 3, "{totals}");
    assert_eq!(totals["files"], 4, "{totals}");
    assert_eq!(totals["uploads_in_progress"], 1, "{totals}");
    assert_eq!(totals["tiers"]["basic"]["users"], 2, "{totals}");
    assert_eq!(totals["tiers"]["basic"]["used"], 510, "{totals}");
    assert_eq!(totals["tiers"]["premium"]["used"], 1000, "{totals}");

    // Users, most used first, a page at a time.
    let (st, page) = admin.get("/v1/admin/users?sort=used&limit=2").await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let ids = |p: &Value| -> Vec<(String, u64)> {
        p["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["id"].as_str().unwrap().into(),
                    u["used"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&page), [("bob".into(), 1000), ("ann".into(), 500)]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = admin
        .get(&format!(
            "/v1/admin/users?sort=used&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page), [("cat".into(), 10)]);
    assert!(page["next_cursor"].is_null(), "{page}");
    let (_, page) = admin.get("/v1/admin/users?sort=id").await;
    assert_eq!(
        ids(&page).into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
        ["ann", "bob", "cat"]
    );
    // A user's usage moves the index: ann passes bob.
    ann.put("a3.txt", None, &[5; 900]).await;
    let (_, page) = admin.get("/v1/admin/users?limit=1").await;
    assert_eq!(ids(&page), [("ann".into(), 1400)]);

    let (st, one) = admin.get("/v1/admin/users/cat").await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(
        (
            &one["tier"],
            &one["files"],
            &one["reserved"],
            &one["uploads"]
        ),
        (&json!("basic"), &json!(1), &json!(5000), &json!(1))
    );
    for (path, status, code) in [
        ("/v1/admin/users/nobody", 404, "not_found"),
        ("/v1/admin/users?sort=size", 400, "invalid_request"),
        ("/v1/admin/users?limit=0", 400, "invalid_request"),
        ("/v1/admin/users?cursor=%%%", 400, "invalid_cursor"),
    ] {
        let got = admin.get(path).await;
        assert_error(&got, status, code);
    }

    // The CLI prints the same numbers.
    let base = node.url("");
    let out = wharf_cli(&["admin", "usage", "--node", &base, "--token", &admin.t]);
    let all = out
        .lines()
        .find(|l| l.starts_with("all"))
        .unwrap_or_else(|| panic!("no total row in:\n{out}"));
    let cols: Vec<&str> = all.split_whitespace().collect();
    assert_eq!(cols, ["all", "3", "5", "2410", "5000", "1"], "{out}");
    let out = wharf_cli(&[
        "admin", "users", "--node", &base, "--token", &admin.t, "--json", "--limit", "2",
    ]);
    let users: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{out}");
    assert_eq!(
        (&users[0]["id"], &users[1]["id"]),
        (&json!("ann"), &json!("bob"))
    );
    let out = wharf_cli(&["admin", "users", "--node", &base, "--token", &admin.t]);
    assert!(out.lines().next().unwrap().starts_with("USER"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}
