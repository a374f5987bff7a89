//! Dedup: a create that declares the BLAKE3 of content its user already stores is answered
//! with a new file of it at once (200, `deduplicated`), no byte sent; another user's content,
//! another size or no declaration uploads as usual.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use wharf_client::{Client, Trust};
use wharf_proto::CreateAnswer;
use wharf_raft::model::Tier;

#[tokio::test]
async fn a_declared_hash_the_user_stores_makes_the_file_with_no_byte_sent() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(
        &dir.path().join("n"),
        &[("WHARF_UPLOAD_MIN_CHUNK_SIZE", "65536")],
    );
    let ann = node.token("ann", Tier::Basic);
    let data = random_bytes(200_000, 3);
    let hash = blake3::hash(&data).to_hex().to_string();
    let first = node.upload(&ann, "report.pdf", &data).await;
    let first_id = first["id"].as_str().unwrap().to_string();

    // The same content again, under another name: a file at once.
    let r = node
        .post(&ann, "/v1/uploads")
        .json(&json!({"name": "copy of report.pdf", "size": data.len(), "blake3": hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (_, file) = json(r).await;
    assert_eq!(file["deduplicated"], true);
    assert_eq!(file["blake3"], hash.as_str());
    assert_eq!(file["name"], "copy of report.pdf");
    let id = file["id"].as_str().unwrap();
    assert_ne!(id, first_id);
    assert_eq!(location, format!("/v1/files/{id}"));
    assert!(node.download(&ann, id).await == data);
    // Usage counts each file's logical size.
    let usage = node.usage(&ann).await;
    assert_eq!(
        (usage["used"].clone(), usage["reserved"].clone()),
        (json!(400_000), json!(0))
    );
    // The file listing shows plain records (no `deduplicated` there).
    let (_, listed) = json(node.get(&ann, "/v1/files").send().await.unwrap()).await;
    assert!(listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f.get("deduplicated").is_none()));

    // Another user declaring ann's hash uploads the bytes: nothing tells whether ann has them.
    let bob = node.token("bob", Tier::Basic);
    let (st, up) = node
        .create(
            &bob,
            json!({"name": "x", "size": data.len(), "blake3": hash}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    assert!(up["upload_id"].is_string());
    // Another size with the same hash is no match either.
    let (st, _) = node
        .create(
            &ann,
            json!({"name": "y", "size": data.len() - 1, "blake3": hash}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    // Over QUIC, through the SDK: the same answer.
    let ca = std::fs::read(node.data_dir.join("tls/ca.pem")).unwrap();
    let sdk = Client::with_trust(
        vec![format!("quic://{}", node.quic_addr)],
        ann.clone(),
        Trust::Ca(ca),
    )
    .unwrap();
    let answer = sdk
        .create(&wharf_proto::CreateUpload {
            name: "third.pdf".into(),
            size: data.len() as u64,
            blake3: Some(hash.clone()),
            mime: None,
            idempotency_key: None,
            folder: None,
            on_conflict: None,
        })
        .await
        .unwrap();
    let CreateAnswer::File(third) = answer else {
        panic!("over QUIC: {answer:?}");
    };
    assert!(third.deduplicated);
    assert!(node.download(&ann, &third.id).await == data);

    // Deleting the first file keeps the content for the second.
    let r = node
        .delete(&ann, &format!("/v1/files/{first_id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(node.download(&ann, id).await == data);
}
