//! The HTTP API against a real node process.

mod common;

use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_raft::model::Tier;

#[tokio::test]
async fn multi_chunk_upload_downloads_byte_identical_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let data = random_bytes(20 * MIB + 12_345, 1);

    let file = node.upload(&t, "big.bin", &data).await;
    assert_eq!(file["size"], data.len() as u64);
    assert_eq!(file["name"], "big.bin");
    assert_eq!(file["blake3"], blake3::hash(&data).to_hex().to_string());
    assert_eq!(file["scan"], "unscanned");
    let id = file["id"].as_str().unwrap();

    assert!(
        node.download(&t, id).await == data,
        "downloaded bytes differ"
    );

    let r = node
        .get(&t, &format!("/v1/files/{id}/content"))
        .header("Range", "bytes=8388600-8388615")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 8388600-8388615/{}", data.len()).as_str()
    );
    assert_eq!(r.headers()["content-length"], "16");
    assert_eq!(
        r.headers()["etag"],
        format!("\"{}\"", file["blake3"].as_str().unwrap()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), &data[8_388_600..8_388_616]);

    let r = node
        .get(&t, &format!("/v1/files/{id}/content"))
        .header("Range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), &data[data.len() - 100..]);

    let r = node
        .get(&t, &format!("/v1/files/{id}/content"))
        .header("Range", format!("bytes={}-", data.len()))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 416, "range_not_satisfiable");

    let (st, rec) = json(
        node.get(&t, &format!("/v1/files/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rec, file);

    let usage = node.usage(&t).await;
    assert_eq!(usage["used"], data.len() as u64);
    assert_eq!(usage["reserved"], 0);
}

#[tokio::test]
async fn a_file_is_renamed_by_its_owner_only_and_with_a_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let file = node.upload(&t, "draft.txt", b"text").await;
    let path = format!("/v1/files/{}", file["id"].as_str().unwrap());
    let rename = |token: &str, body: serde_json::Value| {
        let req = node
            .http
            .patch(node.url(&path))
            .bearer_auth(token)
            .json(&body);
        async move { json(req.send().await.unwrap()).await }
    };
    let (status, renamed) = rename(&t, serde_json::json!({"name": "final.txt"})).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "final.txt");
    assert_eq!(renamed["blake3"], file["blake3"]);
    let (_, got) = json(node.get(&t, &path).send().await.unwrap()).await;
    assert_eq!(got["name"], "final.txt");

    assert_error(
        &rename(&t, serde_json::json!({"name": "../../etc/passwd"})).await,
        400,
        "invalid_name",
    );
    assert_error(
        &rename(&t, serde_json::json!({"name": "x", "size": 3})).await,
        400,
        "invalid_request",
    );
    let mallory = node.token("mallory", Tier::Basic);
    assert_error(
        &rename(&mallory, serde_json::json!({"name": "mine.txt"})).await,
        404,
        "not_found",
    );
    let (_, got) = json(node.get(&t, &path).send().await.unwrap()).await;
    assert_eq!(got["name"], "final.txt");
}

#[tokio::test]
async fn empty_file_uploads_as_one_empty_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let file = node.upload(&t, "empty", b"").await;
    assert_eq!(file["blake3"], blake3::hash(b"").to_hex().to_string());
    assert!(node
        .download(&t, file["id"].as_str().unwrap())
        .await
        .is_empty());
}

#[tokio::test]
async fn listing_pages_through_files_in_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("pat", Tier::Basic);
    let mut ids = Vec::new();
    for i in 0..5 {
        let f = node
            .upload(&t, &format!("f{i}"), format!("content {i}").as_bytes())
            .await;
        ids.push(f["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/files?limit=2&cursor={c}"),
            None => "/v1/files?limit=2".to_string(),
        };
        let (st, page) = json(node.get(&t, &q).send().await.unwrap()).await;
        assert_eq!(st, StatusCode::OK);
        let files = page["files"].as_array().unwrap();
        assert!(files.len() <= 2);
        seen.extend(files.iter().map(|f| f["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let other = node.token("quinn", Tier::Basic);
    let (_, page) = json(node.get(&other, "/v1/files").send().await.unwrap()).await;
    assert_eq!(
        page["files"].as_array().unwrap().len(),
        0,
        "another user's files leaked"
    );
    assert_error(
        &json(node.get(&t, "/v1/files?limit=0").send().await.unwrap()).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn racing_uploads_for_the_last_quota_admit_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let admin = node.token("root", Tier::Admin);
    let bob = node.token("bob", Tier::Basic);
    let (st, u) = json(
        node.put(&admin, "/v1/admin/users/bob/quota")
            .json(&json!({"quota": 10 * MIB}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["quota"], 10 * MIB as u64);

    for round in 0..5 {
        let body = |i: usize| json!({"name": format!("r{round}-{i}"), "size": 6 * MIB});
        let (a, b) = tokio::join!(node.create(&bob, body(0)), node.create(&bob, body(1)));
        let results = [a, b];
        let won: Vec<_> = results
            .iter()
            .filter(|r| r.0 == StatusCode::CREATED)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let lost = results.iter().find(|r| r.0 != StatusCode::CREATED).unwrap();
        assert_error(lost, 507, "quota_exceeded");
        let usage = node.usage(&bob).await;
        assert_eq!(usage["reserved"], 6 * MIB as u64);
        // Abort the winner so the next round races again.
        let id = won[0].1["upload_id"].as_str().unwrap();
        let r = node
            .delete(&bob, &format!("/v1/uploads/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(node.usage(&bob).await["reserved"], 0);
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let create = |body: serde_json::Value| node.create(&t, body);

    // Authentication.
    let r = node.http.get(node.url("/v1/usage")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_error(&json(r).await, 401, "unauthorized");
    let forged = {
        let keys = wharf_node::auth::Keys::new(b"not-the-cluster-secret-not-the-cluster");
        keys.issue("alice", Tier::Admin, std::time::Duration::from_secs(60))
            .unwrap()
    };
    assert_error(
        &json(node.get(&forged, "/v1/usage").send().await.unwrap()).await,
        401,
        "invalid_token",
    );
    assert_error(
        &json(node.get("garbage", "/v1/usage").send().await.unwrap()).await,
        401,
        "invalid_token",
    );
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let secret = std::fs::read_to_string(dir.path().join("jwt_secret")).unwrap();
        let claims = json!({"sub": "alice", "tier": "basic", "iat": 1, "exp": 1000});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.trim().as_bytes()),
        )
        .unwrap()
    };
    assert_error(
        &json(node.get(&expired, "/v1/usage").send().await.unwrap()).await,
        401,
        "token_expired",
    );

    // Creation.
    assert_error(
        &create(json!({"name": "x", "size": 6u64 << 30})).await,
        413,
        "file_too_large",
    );
    assert_error(
        &create(json!({"name": "x", "size": u64::MAX})).await,
        413,
        "file_too_large",
    );
    assert_error(
        &create(json!({"name": "x", "size": -1})).await,
        400,
        "invalid_request",
    );
    assert_error(
        &create(json!({"name": "x", "size": "12"})).await,
        400,
        "invalid_request",
    );
    assert_error(&create(json!({"name": "x"})).await, 400, "invalid_request");
    assert_error(
        &create(json!({"name": "x", "size": 1, "extra": true})).await,
        400,
        "invalid_request",
    );
    assert_error(
        &create(json!({"name": "../../etc/passwd", "size": 1})).await,
        400,
        "invalid_name",
    );
    assert_error(
        &create(json!({"name": "", "size": 1})).await,
        400,
        "invalid_name",
    );
    assert_error(
        &create(json!({"name": "a\u{0}b", "size": 1})).await,
        400,
        "invalid_name",
    );
    assert_error(
        &create(json!({"name": "x", "size": 1, "blake3": "abc"})).await,
        400,
        "invalid_checksum",
    );
    let r = node
        .post(&t, "/v1/uploads")
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 400, "invalid_request");
    let r = node
        .post(&t, "/v1/uploads")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 415, "unsupported_media_type");

    // Chunks.
    let data = random_bytes(9 * MIB, 7);
    let (st, up) =
        create(json!({"name": "data.bin", "size": data.len(), "blake3": "00".repeat(32)})).await;
    assert_eq!(st, StatusCode::CREATED);
    let id = up["upload_id"].as_str().unwrap().to_string();
    let chunk0 = &data[..8 * MIB];
    let chunk1 = &data[8 * MIB..];
    let put = |index: &str, body: Vec<u8>| {
        node.put(&t, &format!("/v1/uploads/{id}/chunks/{index}"))
            .body(body)
    };
    let wrong_b3 = blake3::hash(b"something else").to_hex().to_string();
    let r = put("0", chunk0.to_vec())
        .header("x-wharf-blake3", &wrong_b3)
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 422, "checksum_mismatch");
    let wrong_sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"x"));
    let r = put("0", chunk0.to_vec())
        .header("content-digest", format!("sha-256=:{wrong_sha}:"))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 422, "checksum_mismatch");
    // Header errors are found before the body is read: a small body avoids a broken pipe.
    let r = put("0", vec![0; 10])
        .header("x-wharf-blake3", "zz")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 400, "invalid_checksum");
    let r = put("0", vec![0; 10])
        .header("content-digest", "sha-256=:%%%:")
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 400, "invalid_digest");
    assert_error(
        &json(put("0", chunk0[..100].to_vec()).send().await.unwrap()).await,
        400,
        "chunk_length_mismatch",
    );
    // Without a Content-Length (chunked transfer) the node counts as it streams.
    let streamed = |body: Vec<u8>| {
        let frames: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(frames))
    };
    let mut long = chunk1.to_vec();
    long.push(0);
    let r = put("1", vec![]).body(streamed(long)).send().await.unwrap();
    assert_error(&json(r).await, 400, "chunk_length_mismatch");
    let r = put("1", vec![])
        .body(streamed(chunk1[1..].to_vec()))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 400, "chunk_length_mismatch");
    assert_error(
        &json(put("2", vec![0; 10]).send().await.unwrap()).await,
        400,
        "chunk_index_out_of_range",
    );
    assert_error(
        &json(put("-1", vec![0; 10]).send().await.unwrap()).await,
        400,
        "chunk_index_out_of_range",
    );
    assert_error(
        &json(put("one", vec![0; 10]).send().await.unwrap()).await,
        400,
        "chunk_index_out_of_range",
    );
    let (_, status) = node.status(&t, &id).await;
    assert_eq!(
        status["received"],
        json!([]),
        "a refused chunk was recorded: {status}"
    );
    assert_eq!(status["missing"], json!([0, 1]));
    assert!(
        std::fs::read_dir(dir.path().join("staging").join(&id))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "a refused chunk left a staged file"
    );

    // A good chunk with a correct Content-Digest; the same again is a no-op; other bytes conflict.
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(chunk0));
    let r = put("0", chunk0.to_vec())
        .header("content-digest", format!("sha-256=:{sha}:"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node.put_chunk(&t, &id, 0, chunk0).await,
        StatusCode::NO_CONTENT
    );
    let mut other = chunk0.to_vec();
    other[0] ^= 1;
    assert_error(
        &json(put("0", other).send().await.unwrap()).await,
        409,
        "chunk_conflict",
    );

    // Completion with a chunk missing, then with the wrong declared whole-file hash.
    let (st, body) = node.complete(&t, &id).await;
    assert_error(&(st, body.clone()), 409, "missing_chunks");
    assert_eq!(body["error"]["missing"], json!([1]));
    assert_eq!(
        node.put_chunk(&t, &id, 1, chunk1).await,
        StatusCode::NO_CONTENT
    );
    assert_error(&node.complete(&t, &id).await, 422, "checksum_mismatch");
    assert_eq!(node.status(&t, &id).await.1["state"], "uploading");

    // Another user's ids look exactly like unknown ones.
    let mallory = node.token("mallory", Tier::Basic);
    let unknown = "01a20241-0000-7000-8000-000000000000";
    for target in [id.as_str(), unknown, "not-a-uuid"] {
        let a = node.status(&mallory, target).await;
        assert_error(&a, 404, "not_found");
        assert_eq!(
            node.put_chunk(&mallory, target, 1, chunk1).await,
            StatusCode::NOT_FOUND
        );
        assert_error(&node.complete(&mallory, target).await, 404, "not_found");
        let r = node
            .delete(&mallory, &format!("/v1/uploads/{target}"))
            .send()
            .await
            .unwrap();
        assert_error(&json(r).await, 404, "not_found");
        let r = node
            .get(&mallory, &format!("/v1/files/{target}/content"))
            .send()
            .await
            .unwrap();
        assert_error(&json(r).await, 404, "not_found");
    }
    assert_eq!(node.status(&t, &id).await.1["state"], "uploading");

    // Admin only.
    let r = node
        .put(&t, "/v1/admin/users/alice/quota")
        .json(&json!({"quota": 1}))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 403, "forbidden");
    let admin = node.token("root", Tier::Admin);
    let r = node
        .put(&admin, "/v1/admin/users/alice/quota")
        .json(&json!({"quota": 1}))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 409, "quota_below_usage");
    assert_error(
        &json(node.get(&t, "/v1/nothing-here").send().await.unwrap()).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn truncated_chunk_from_a_dropped_connection_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("alice", Tier::Basic);
    let (_, up) = node.create(&t, json!({"name": "t", "size": 4 * MIB})).await;
    let id = up["upload_id"].as_str().unwrap();
    let addr = node.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/uploads/{id}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: {}\r\n\r\n",
        4 * MIB
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![1u8; MIB]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, status) = node.status(&t, id).await;
    assert_eq!(status["received"], json!([]), "{status}");
    // The chunk can still be sent in full afterwards.
    assert_eq!(
        node.put_chunk(&t, id, 0, &vec![1u8; 4 * MIB]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.status(&t, id).await.1["received"], json!([0]));
}

#[tokio::test]
async fn idempotency_key_returns_the_same_upload_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("WHARF_TIERS_BASIC_MAX_CONCURRENT_UPLOADS", "2")],
    );
    let t = node.token("carol", Tier::Basic);
    let body = json!({"name": "a", "size": 10, "idempotency_key": "k-1"});
    let (st1, a) = node.create(&t, body.clone()).await;
    let (st2, b) = node.create(&t, body).await;
    assert_eq!((st1, st2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["upload_id"], b["upload_id"]);
    assert_error(
        &node
            .create(
                &t,
                json!({"name": "other", "size": 10, "idempotency_key": "k-1"}),
            )
            .await,
        409,
        "idempotency_conflict",
    );
    assert_eq!(
        node.usage(&t).await["reserved"],
        10,
        "the repeat reserved twice"
    );
    let (st, _) = node.create(&t, json!({"name": "b", "size": 10})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_error(
        &node.create(&t, json!({"name": "c", "size": 10})).await,
        429,
        "too_many_uploads",
    );
}

#[tokio::test]
async fn abort_and_delete_release_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let t = node.token("dan", Tier::Basic);
    let (_, up) = node.create(&t, json!({"name": "a", "size": 100})).await;
    let id = up["upload_id"].as_str().unwrap();
    assert_eq!(
        node.put_chunk(&t, id, 0, &[5u8; 100]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.usage(&t).await["reserved"], 100);
    let r = node
        .delete(&t, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(node.usage(&t).await["reserved"], 0);
    assert_eq!(node.status(&t, id).await.1["state"], "aborted");
    assert!(
        !dir.path().join("staging").join(id).exists(),
        "staging not freed"
    );
    let r = node
        .delete(&t, &format!("/v1/uploads/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 409, "upload_not_active");
    assert_eq!(
        node.put_chunk(&t, id, 0, &[5u8; 100]).await,
        StatusCode::CONFLICT
    );

    let f = node.upload(&t, "keep", &[9u8; 1000]).await;
    let fid = f["id"].as_str().unwrap();
    assert_eq!(node.usage(&t).await["used"], 1000);
    let r = node
        .delete(&t, &format!("/v1/files/{fid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // In the trash: gone from view, its bytes still counted until it is purged.
    assert_eq!(node.usage(&t).await["used"], 1000);
    let r = node
        .get(&t, &format!("/v1/files/{fid}/content"))
        .send()
        .await
        .unwrap();
    assert_error(&json(r).await, 404, "not_found");
    let r = node
        .delete(&t, &format!("/v1/trash/{fid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(node.usage(&t).await["used"], 0);
}

#[tokio::test]
async fn idle_uploads_expire_and_release_their_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("WHARF_UPLOAD_EXPIRY_SECS", "2"),
            ("WHARF_UPLOAD_SWEEP_INTERVAL_SECS", "1"),
        ],
    );
    let t = node.token("erin", Tier::Basic);
    let (_, up) = node.create(&t, json!({"name": "a", "size": 2 * MIB})).await;
    let id = up["upload_id"].as_str().unwrap();
    assert_eq!(
        node.put_chunk(&t, id, 0, &vec![3u8; 2 * MIB]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.usage(&t).await["reserved"], 2 * MIB as u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, s) = node.status(&t, id).await;
        if s["state"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(node.usage(&t).await["reserved"], 0);
    assert_eq!(
        node.put_chunk(&t, id, 0, &vec![3u8; 2 * MIB]).await,
        StatusCode::CONFLICT
    );
    // The garbage collector removes what the upload left in the object store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(dir.path().join("objects/.multipart"))
        .unwrap()
        .count()
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "multipart parts left behind"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_client_that_lost_its_upload_ids_lists_its_open_uploads_and_aborts_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("WHARF_TIERS_BASIC_MAX_CONCURRENT_UPLOADS", "3")],
    );
    let t = node.token("erin", Tier::Basic);
    let other = node.token("frank", Tier::Basic);
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let (st, up) = node.create(&t, json!({"name": name, "size": 10})).await;
        assert_eq!(st, StatusCode::CREATED, "{up}");
        ids.push(up["upload_id"].as_str().unwrap().to_string());
    }
    node.create(&other, json!({"name": "theirs", "size": 10}))
        .await;
    // One stored, the limit reached by the other two and a third.
    assert_eq!(
        node.put_chunk(&t, &ids[0], 0, &[1u8; 10]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.complete(&t, &ids[0]).await.0, StatusCode::OK);
    let (st, up) = node.create(&t, json!({"name": "d", "size": 10})).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    ids.push(up["upload_id"].as_str().unwrap().to_string());
    assert_error(
        &node.create(&t, json!({"name": "e", "size": 10})).await,
        429,
        "too_many_uploads",
    );

    let list = |q: &'static str| {
        let (node, t) = (&node, t.clone());
        async move {
            json(
                node.get(&t, &format!("/v1/uploads{q}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (st, open) = list("?state=uploading").await;
    assert_eq!(st, StatusCode::OK, "{open}");
    let open_ids: Vec<&str> = open["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["upload_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        open_ids,
        vec![&ids[1], &ids[2], &ids[3]],
        "oldest first, only open ones"
    );
    assert!(open["next_cursor"].is_null(), "{open}");
    assert_eq!(open["uploads"][0]["missing"], json!([0]));
    // Every state, a page at a time.
    let (_, first) = list("?limit=2").await;
    assert_eq!(first["uploads"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["uploads"][0]["state"], "stored");
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = json(
        node.get(&t, &format!("/v1/uploads?limit=2&cursor={cursor}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rest["uploads"].as_array().unwrap().len(), 2, "{rest}");
    assert_eq!(rest["uploads"][1]["upload_id"], ids[3].as_str());
    assert!(rest["next_cursor"].is_null(), "{rest}");
    // Bad queries are refused; another user's uploads never show.
    assert_error(&list("?state=sleeping").await, 400, "invalid_request");
    assert_error(&list("?limit=0").await, 400, "invalid_request");
    assert_error(&list("?cursor=nope").await, 400, "invalid_cursor");
    let (_, theirs) = json(node.get(&other, "/v1/uploads").send().await.unwrap()).await;
    assert_eq!(theirs["uploads"].as_array().unwrap().len(), 1, "{theirs}");

    // Aborting what the listing found frees a slot.
    let r = node
        .delete(&t, &format!("/v1/uploads/{}", ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _) = node.create(&t, json!({"name": "e", "size": 10})).await;
    assert_eq!(st, StatusCode::CREATED);
}
