//! Share links: made by a file's owner, opened by anyone holding one (no account), with
//! `Range`; expiry, counted downloads, a password (argon2, tries rate-limited), revocation and
//! the file's deletion all end a link; another user's files and links are 404.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

const PASSWORD_HEADER: &str = "x-wharf-link-password";

async fn make_link(node: &Node, t: &str, file: &str, body: Value) -> (StatusCode, Value) {
    json(
        node.post(t, &format!("/v1/files/{file}/links"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `GET /s/{token}{suffix}` with no account (and the password, if given).
async fn open(node: &Node, token: &str, suffix: &str, password: Option<&str>) -> reqwest::Response {
    let mut r = node.http.get(node.url(&format!("/s/{token}{suffix}")));
    if let Some(p) = password {
        r = r.header(PASSWORD_HEADER, p);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_share_link_serves_its_file_to_anyone_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = node.token("ann", Tier::Basic);
    let bob = node.token("bob", Tier::Basic);
    let data = random_bytes(300_000, 5);
    let file = node.upload(&ann, "plan.pdf", &data).await;
    let file = file["id"].as_str().unwrap().to_string();

    // A plain link: anyone reads the record and the bytes, ranges too.
    let (st, link) = make_link(&node, &ann, &file, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{link}");
    let token = link["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43, "32 random bytes");
    assert!(link["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/s/{token}")));
    assert_eq!(link["password"], false);
    let r = open(&node, &token, "", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, record) = json(r).await;
    assert_eq!(record["name"], "plan.pdf");
    let r = open(&node, &token, "/content", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == data);
    let r = node
        .http
        .get(node.url(&format!("/s/{token}/content")))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == data[1000..2000]);

    // Another user can neither link ann's file nor revoke ann's link; made-up tokens are 404.
    let (st, _) = make_link(&node, &bob, &file, json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = node
        .delete(&bob, &format!("/v1/links/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for bad in ["x".repeat(43), "..%2F..%2Fetc%2Fpasswd".into()] {
        assert_eq!(
            open(&node, &bad, "", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    // Bad requests change nothing.
    for bad in [
        json!({"expires_in": 0}),
        json!({"max_downloads": 0}),
        json!({"password": ""}),
        json!({"color": "red"}),
    ] {
        let (st, body) = make_link(&node, &ann, &file, bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Counted downloads: two, then the link is gone.
    let (_, counted) = make_link(&node, &ann, &file, json!({"max_downloads": 2})).await;
    let counted = counted["token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = open(&node, &counted, "/content", None).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = open(&node, &counted, "/content", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A password: asked for (401), refused when wrong (403), and tried at most 5 times a
    // minute per link, right or wrong (429).
    let (_, locked) = make_link(&node, &ann, &file, json!({"password": "s3cret"})).await;
    assert_eq!(locked["password"], true);
    let locked = locked["token"].as_str().unwrap().to_string();
    let r = open(&node, &locked, "/content", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(r).await.1["error"]["code"], "password_required");
    let r = open(&node, &locked, "/content", Some("guess")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = open(&node, &locked, "/content", Some("s3cret")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == data);
    for _ in 0..3 {
        let r = open(&node, &locked, "", Some("guess")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = open(&node, &locked, "", Some("s3cret")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Expiry.
    let (_, brief) = make_link(&node, &ann, &file, json!({"expires_in": 1})).await;
    assert!(brief["expires_at"].is_string());
    let brief = brief["token"].as_str().unwrap().to_string();
    assert_eq!(open(&node, &brief, "", None).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        open(&node, &brief, "", None).await.status(),
        StatusCode::NOT_FOUND
    );

    // The owner lists their links (no password hash in sight) and revokes one: 404 at once.
    let (st, list) = json(node.get(&ann, "/v1/links").send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let links = list["links"].as_array().unwrap();
    assert_eq!(links.len(), 4, "{list}");
    assert!(!list.to_string().contains("argon2"));
    let (_, bobs) = json(node.get(&bob, "/v1/links").send().await.unwrap()).await;
    assert_eq!(bobs["links"].as_array().unwrap().len(), 0);
    let r = node
        .delete(&ann, &format!("/v1/links/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        open(&node, &token, "", None).await.status(),
        StatusCode::NOT_FOUND
    );

    // Deleting the file ends every link to it.
    let (_, last) = make_link(&node, &ann, &file, json!({})).await;
    let last = last["token"].as_str().unwrap().to_string();
    let r = node
        .delete(&ann, &format!("/v1/files/{file}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        open(&node, &last, "/content", None).await.status(),
        StatusCode::NOT_FOUND
    );
    let (_, list) = json(node.get(&ann, "/v1/links").send().await.unwrap()).await;
    assert_eq!(list["links"].as_array().unwrap().len(), 0, "{list}");
}
