//! The client QUIC endpoint with a raw quinn client: a multi-chunk upload downloaded
//! byte-identical, ranged reads, and typed errors (bad token, wrong BLAKE3, malformed frame)
//! while the node keeps serving; then the SDK's QUIC transport and its certificate pinning.

mod common;

use common::quic::*;
use common::*;
use wharf_client::{Client, Trust};
use wharf_proto::quic::{
    request::Op, write_frame, ChunkHeader, Create, FileRef, FolderRef, ListFolder, PutFile, Read,
    Request, UploadRef,
};
use wharf_raft::model::Tier;

fn chunk(upload: &str, index: u32, data: &[u8], hash: &[u8]) -> Op {
    Op::Chunk(ChunkHeader {
        upload_id: upload.into(),
        index,
        length: data.len() as u64,
        blake3: hash.to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quic_upload_downloads_byte_identical_and_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let token = node.token("qia", Tier::Basic);

    // A bad token gets its typed error, and the connection is closed.
    let intruder = connect(&node).await;
    let r = hello(&intruder, "not-a-token").await.unwrap();
    assert_eq!(r.code, "invalid_token");

    let conn = connect(&node).await;
    ok_json(hello(&conn, &token).await);
    let data = random_bytes(2 * 8 * MIB + 4321, 12);
    let created = ok_json(
        call(
            &conn,
            Op::Create(Create {
                name: "over-quic.bin".into(),
                size: data.len() as u64,
                blake3: blake3::hash(&data).to_hex().to_string(),
                ..Default::default()
            }),
            None,
        )
        .await,
    );
    let id = created["upload_id"].as_str().unwrap().to_string();
    let parts: Vec<&[u8]> = data.chunks(8 * MIB).collect();

    // A wrong BLAKE3: typed error, nothing recorded.
    let wrong = call(&conn, chunk(&id, 0, parts[0], &[0u8; 32]), Some(parts[0]))
        .await
        .unwrap();
    assert_eq!(wrong.code, "checksum_mismatch");
    // A malformed frame (a length far past the limit) resets that stream only.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = send.finish();
    assert!(
        read_reply(&mut recv).await.is_err(),
        "a malformed frame got an answer"
    );
    // Garbage that is not a Request, too.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let _ = send.finish();
    assert!(read_reply(&mut recv).await.is_err());

    // The same connection, and the node, go on serving: the chunks, in parallel streams.
    let sends = parts.iter().enumerate().map(|(i, p)| {
        let h = blake3::hash(p);
        let conn = conn.clone();
        let id = id.clone();
        async move { call(&conn, chunk(&id, i as u32, p, h.as_bytes()), Some(p)).await }
    });
    for r in futures::future::join_all(sends).await {
        ok_json(r);
    }
    let status = ok_json(
        call(
            &conn,
            Op::Status(UploadRef {
                upload_id: id.clone(),
            }),
            None,
        )
        .await,
    );
    assert_eq!(status["received"], serde_json::json!([0, 1, 2]));
    let file = ok_json(
        call(
            &conn,
            Op::Complete(UploadRef {
                upload_id: id.clone(),
            }),
            None,
        )
        .await,
    );
    assert_eq!(file["blake3"], blake3::hash(&data).to_hex().to_string());
    assert!(node.download(&token, file["id"].as_str().unwrap()).await == data);

    // Another user's upload id is unknown, as over HTTP.
    let other = connect(&node).await;
    ok_json(hello(&other, &node.token("zed", Tier::Basic)).await);
    let r = call(&other, Op::Status(UploadRef { upload_id: id }), None)
        .await
        .unwrap();
    assert_eq!(r.code, "not_found");

    // Ranged reads: the bytes follow the reply; past the end is refused; another user's file
    // is unknown.
    let fid = file["id"].as_str().unwrap().to_string();
    let read = |file_id: &str, offset: u64, length: u64| {
        Op::Read(Read {
            file_id: file_id.into(),
            offset,
            length,
        })
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let req = Request {
        op: Some(read(&fid, 8 * MIB as u64 - 10, 100)),
    };
    write_frame(&mut send, &req).await.unwrap();
    send.finish().unwrap();
    ok_json(read_reply(&mut recv).await);
    let bytes = recv.read_to_end(1 << 20).await.unwrap();
    assert!(bytes[..] == data[8 * MIB - 10..8 * MIB + 90]);
    let past = call(&conn, read(&fid, data.len() as u64 - 1, 2), None)
        .await
        .unwrap();
    assert_eq!(
        (past.code.as_str(), past.status),
        ("range_not_satisfiable", 416)
    );
    let theirs = call(&other, read(&fid, 0, 1), None).await.unwrap();
    assert_eq!(theirs.code, "not_found");
    let gone = call(&other, Op::Delete(FileRef { file_id: fid }), None)
        .await
        .unwrap();
    assert_eq!(gone.code, "not_found");
}

fn quic_client(node: &Node, token: &str, trust: Trust) -> Client {
    Client::with_trust(
        vec![format!("quic://{}", node.quic_addr)],
        token.into(),
        trust,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_uploads_and_downloads_over_quic_with_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let token = node.token("sid", Tier::Basic);
    let ca = std::fs::read(node.data_dir.join("tls/ca.pem")).unwrap();
    let client = quic_client(&node, &token, Trust::Ca(ca));

    let src = dir.path().join("src.bin");
    let data = random_bytes(5 * 8 * MIB + 777, 13);
    std::fs::write(&src, &data).unwrap();
    let up = client.upload(&src, None, |_| {}, None).await.unwrap();
    assert_eq!((up.chunks_sent, up.chunks_total), (6, 6));
    assert_eq!(up.file.blake3, blake3::hash(&data).to_hex().to_string());
    // The node agrees over HTTP, and the listing over QUIC has it.
    assert!(node.download(&token, &up.file.id).await == data);
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, up.file.id);

    let dest = dir.path().join("copy.bin");
    let got = client.download(&up.file.id, &dest, None).await.unwrap();
    assert_eq!(got.id, up.file.id);
    assert!(std::fs::read(&dest).unwrap() == data);

    client.delete(&up.file.id).await.unwrap();
    let err = client.file(&up.file.id).await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_refuses_a_node_whose_certificate_is_not_from_the_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"));
    let stranger = Node::start(&dir.path().join("stranger"));
    let token = node.token("sid", Tier::Basic);
    let ca = std::fs::read(stranger.data_dir.join("tls/ca.pem")).unwrap();
    let mut client = quic_client(&node, &token, Trust::Ca(ca));
    client.attempts = 1;
    let err = client.list().await.unwrap_err();
    assert!(matches!(err, wharf_client::Error::Unreachable(_)), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // No trust at all is refused up front with a clear message; --insecure connects.
    let no_trust = Client::with_trust(
        vec![format!("quic://{}", node.quic_addr)],
        token.clone(),
        Trust::Unset,
    );
    assert!(matches!(no_trust, Err(wharf_client::Error::Tls(_))));
    let insecure = quic_client(&node, &token, Trust::Insecure);
    assert!(insecure.list().await.unwrap().is_empty());
    // A bad token is a typed error, not a transport failure.
    let bad = quic_client(&node, "nope", Trust::Insecure);
    assert_eq!(bad.list().await.unwrap_err().code(), Some("invalid_token"));
}

/// Folders over QUIC: one-request files placed in a folder (with the conflict policies),
/// the folder listed as `GET /v1/folders/{id}` lists it, and deleted to the trash.
#[tokio::test(flavor = "multi_thread")]
async fn folders_are_listed_filled_and_deleted_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_unscanned(&dir.path().join("n"), &[]);
    let token = node.token("qf", Tier::Basic);
    let r = node
        .post(&token, "/v1/folders")
        .json(&serde_json::json!({"name": "docs"}));
    let (st, docs) = json(r.send().await.unwrap()).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{docs}");
    let docs = docs["id"].as_str().unwrap().to_string();
    let conn = connect(&node).await;
    ok_json(hello(&conn, &token).await);
    let put = |name: &str, on_conflict: &str, data: &'static [u8]| {
        let op = Op::PutFile(PutFile {
            name: name.into(),
            length: data.len() as u64,
            folder: docs.clone(),
            on_conflict: on_conflict.into(),
            ..Default::default()
        });
        let conn = conn.clone();
        async move { call(&conn, op, Some(data)).await.unwrap() }
    };
    let first = put("a.txt", "", b"one").await;
    assert_eq!(first.code, "", "{}", first.message);
    let first: serde_json::Value = serde_json::from_slice(&first.json).unwrap();
    assert_eq!(first["folder"], docs.as_str());
    assert_eq!(put("a.txt", "fail", b"two").await.code, "name_taken");
    let renamed = ok_json(Ok(put("a.txt", "rename", b"three").await));
    assert_eq!(renamed["name"], "a (1).txt");
    let version = ok_json(Ok(put("a.txt", "replace", b"four").await));
    assert_eq!(version["id"], first["id"], "a new version of the same file");
    // A session create takes the folder too.
    let created = ok_json(
        call(
            &conn,
            Op::Create(Create {
                name: "b.txt".into(),
                size: 3,
                folder: docs.clone(),
                ..Default::default()
            }),
            None,
        )
        .await,
    );
    assert!(created["upload_id"].is_string(), "{created}");
    let clash = call(
        &conn,
        Op::Create(Create {
            name: "a.txt".into(),
            size: 3,
            folder: docs.clone(),
            ..Default::default()
        }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(clash.code, "name_taken");
    let listing = ok_json(
        call(
            &conn,
            Op::ListFolder(ListFolder {
                folder_id: docs.clone(),
                sort: "name".into(),
                ..Default::default()
            }),
            None,
        )
        .await,
    );
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a (1).txt", "a.txt"], "{listing}");
    let root = ok_json(call(&conn, Op::ListFolder(ListFolder::default()), None).await);
    assert_eq!(root["folder"]["id"], "root");
    // Deleted over QUIC: to the trash; the listing is 404 from then on.
    ok_json(
        call(
            &conn,
            Op::DeleteFolder(FolderRef {
                folder_id: docs.clone(),
            }),
            None,
        )
        .await,
    );
    let gone = call(
        &conn,
        Op::ListFolder(ListFolder {
            folder_id: docs.clone(),
            ..Default::default()
        }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(gone.code, "not_found");
    let file = call(
        &conn,
        Op::File(FileRef {
            file_id: first["id"].as_str().unwrap().into(),
        }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(file.code, "not_found");
}
