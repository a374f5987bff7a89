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

    // A file in the trash serves through no link; purged, it ends every link to it.
    let (_, last) = make_link(&node, &ann, &file, json!({})).await;
    let last = last["token"].as_str().unwrap().to_string();
    for path in [format!("/v1/files/{file}"), format!("/v1/trash/{file}")] {
        let r = node.delete(&ann, &path).send().await.unwrap();
        assert!(r.status().is_success());
        assert_eq!(
            open(&node, &last, "/content", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    let (_, list) = json(node.get(&ann, "/v1/links").send().await.unwrap()).await;
    assert_eq!(list["links"].as_array().unwrap().len(), 0, "{list}");
}

/// A folder link: anyone holding it lists the folder and the folders under it, and downloads
/// the files under it (with a password and a download count like a file link); nothing
/// outside the folder is reachable through it, and revoking it ends it.
#[tokio::test]
async fn a_folder_link_shares_what_is_under_the_folder_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = node.token("ann", Tier::Basic);
    let bob = node.token("bob", Tier::Basic);
    let mkdir = |name: &'static str, parent: Option<String>| {
        let node = &node;
        let ann = ann.clone();
        async move {
            let (st, f) = json(
                node.post(&ann, "/v1/folders")
                    .json(&json!({"name": name, "parent": parent}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(st, StatusCode::CREATED, "{f}");
            f["id"].as_str().unwrap().to_string()
        }
    };
    let put = |name: &'static str, folder: Option<String>, data: Vec<u8>| {
        let node = &node;
        let ann = ann.clone();
        async move {
            let mut q = vec![("name", name.to_string())];
            if let Some(f) = folder {
                q.push(("folder", f));
            }
            let r = node
                .post(&ann, "/v1/files")
                .query(&q)
                .body(data)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            json(r).await.1["id"].as_str().unwrap().to_string()
        }
    };
    let trip = mkdir("trip", None).await;
    let day1 = mkdir("day 1", Some(trip.clone())).await;
    let beach = random_bytes(70_000, 1);
    let a = put("beach.jpg", Some(day1.clone()), beach.clone()).await;
    let b = put("plan.txt", Some(trip.clone()), b"plan".to_vec()).await;
    let outside = put("secret.txt", None, b"secret".to_vec()).await;

    let r = node
        .post(&ann, &format!("/v1/folders/{trip}/links"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (st, link) = json(r).await;
    assert_eq!(st, StatusCode::CREATED, "{link}");
    assert_eq!(link["folder_id"], trip.as_str());
    assert!(link.get("file_id").is_none(), "{link}");
    let token = link["token"].as_str().unwrap().to_string();

    // Listing the shared folder and a folder under it, with no account.
    let (st, top) = json(open(&node, &token, "", None).await).await;
    assert_eq!(st, StatusCode::OK, "{top}");
    assert_eq!(top["folder"]["name"], "trip");
    let names: Vec<&str> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["day 1", "plan.txt"]);
    let (st, sub) = json(open(&node, &token, &format!("?folder={day1}"), None).await).await;
    assert_eq!(st, StatusCode::OK, "{sub}");
    assert_eq!(sub["entries"][0]["id"], a.as_str());

    // Files under it download, with Range; the folder itself has no content.
    let r = open(&node, &token, &format!("/files/{a}/content"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == beach);
    let r = node
        .http
        .get(node.url(&format!("/s/{token}/files/{b}/content")))
        .header("Range", "bytes=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], b"la");
    let (st, rec) = json(open(&node, &token, &format!("/files/{b}"), None).await).await;
    assert_eq!(
        (st, rec["name"].as_str()),
        (StatusCode::OK, Some("plan.txt"))
    );
    assert_error(
        &json(open(&node, &token, "/content", None).await).await,
        400,
        "folder_link",
    );

    // Nothing outside the shared folder: not a file of the owner's root, not a folder above.
    for suffix in [
        format!("/files/{outside}/content"),
        format!("/files/{outside}"),
        "?folder=root".to_string(),
        format!("?folder={}", uuid::Uuid::now_v7()),
    ] {
        let r = open(&node, &token, &suffix, None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{suffix}");
    }
    // Another user cannot link ann's folder.
    let r = node
        .post(&bob, &format!("/v1/folders/{trip}/links"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A password and a download count apply to the files under the folder.
    let r = node
        .post(&ann, &format!("/v1/folders/{day1}/links"))
        .json(&json!({"password": "sand", "max_downloads": 1}))
        .send()
        .await
        .unwrap();
    let (_, locked) = json(r).await;
    let locked = locked["token"].as_str().unwrap().to_string();
    let content = format!("/files/{a}/content");
    assert_eq!(
        open(&node, &locked, &content, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        open(&node, &locked, &content, Some("sand")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        open(&node, &locked, &content, Some("sand")).await.status(),
        StatusCode::NOT_FOUND,
        "its one download is used"
    );

    // Listed among ann's links as a folder link; revoked, it is 404.
    let (_, list) = json(node.get(&ann, "/v1/links").send().await.unwrap()).await;
    assert!(list["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["folder_id"] == trip.as_str()));
    let r = node
        .delete(&ann, &format!("/v1/links/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        open(&node, &token, &content, None).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// `visibility: public` gives a file a permanent link (shown as its `public_url`), served to
/// anyone until the file is made private again; only the owner changes it.
#[tokio::test]
async fn a_public_file_is_served_by_its_permanent_link_until_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let ann = node.token("ann", Tier::Basic);
    let file = node.upload(&ann, "flyer.txt", b"come along").await;
    let file = file["id"].as_str().unwrap().to_string();
    assert!(file_record(&node, &ann, &file)
        .await
        .get("public_url")
        .is_none());
    let set = |v: &'static str, t: String| {
        let r = node.http.patch(node.url(&format!("/v1/files/{file}")));
        async move {
            json(
                r.bearer_auth(t)
                    .json(&json!({"visibility": v}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (st, f) = set("public", ann.clone()).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    let url = f["public_url"].as_str().unwrap().to_string();
    let token = url.strip_prefix("/s/").unwrap().to_string();
    let r = open(&node, &token, "/content", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], b"come along");
    // Public again: the same link; listed with the file.
    let (_, again) = set("public", ann.clone()).await;
    assert_eq!(again["public_url"].as_str(), Some(url.as_str()));
    let (_, listed) = json(node.get(&ann, "/v1/files").send().await.unwrap()).await;
    assert_eq!(
        listed["files"][0]["public_url"].as_str(),
        Some(url.as_str())
    );
    // Nobody else changes it, not even a user it is shared with.
    let bob = node.token("bob", Tier::Basic);
    assert_error(&set("private", bob.clone()).await, 404, "not_found");
    let share = node
        .post(&ann, &format!("/v1/files/{file}/shares"))
        .json(&json!({"user": "bob", "role": "editor"}));
    assert_eq!(share.send().await.unwrap().status(), StatusCode::CREATED);
    assert_error(&set("private", bob).await, 403, "forbidden");
    assert_error(&set("sideways", ann.clone()).await, 400, "invalid_request");
    // Private: the link is 404 from then on, on this node as on any.
    let (st, f) = set("private", ann.clone()).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert!(f.get("public_url").is_none(), "{f}");
    assert_eq!(
        open(&node, &token, "/content", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn file_record(node: &Node, t: &str, id: &str) -> Value {
    json(
        node.get(t, &format!("/v1/files/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .1
}
