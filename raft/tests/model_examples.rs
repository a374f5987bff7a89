//! Example cases of the model, each a story the random model test (`tests/model.rs`) may or
//! may not find: racing creates, chunk conflicts, retried requests, retention.

use wharf_raft::model::{Chunk, Command, ModelError, Outcome, State, Tier, TierLimits};

const CHUNK: u64 = 64;
const LIMITS: TierLimits = TierLimits {
    quota: 600,
    max_file_size: 320,
    max_concurrent_uploads: 3,
};
const TTL: u64 = 1_000;

/// `apply`, plus the rule that a refused command changes nothing.
fn apply(s: &mut State, cmd: Command) -> Result<Outcome, ModelError> {
    let before = s.clone();
    let res = wharf_raft::apply(s, cmd.clone());
    if res.is_err() {
        assert_eq!(*s, before, "refused {cmd:?} changed the state");
    }
    res
}

/// A create by ann of an upload named "x" (the fields the examples vary are arguments).
fn create_upload(id: &str, size: u64, idempotency_key: Option<&str>, now: u64) -> Command {
    Command::CreateUpload {
        upload_id: id.into(),
        owner: "ann".into(),
        tier: Tier::Basic,
        limits: LIMITS,
        name: "x".into(),
        mime: None,
        size,
        chunk_size: CHUNK,
        blake3: None,
        idempotency_key: idempotency_key.map(Into::into),
        ttl_ms: TTL,
        now,
    }
}

#[test]
fn racing_creates_for_the_last_quota_admit_exactly_one() {
    let mut s = State::default();
    apply(
        &mut s,
        Command::SetQuota {
            user: "ann".into(),
            quota: 100,
        },
    )
    .unwrap();
    let create = |id: &str| create_upload(id, 60, None, 1);
    assert!(apply(&mut s, create("a")).is_ok());
    assert!(matches!(
        apply(&mut s, create("b")),
        Err(ModelError::QuotaExceeded {
            requested: 60,
            available: 40
        })
    ));
}

#[test]
fn a_create_applied_again_answers_the_same_upload_and_reserves_once() {
    // Creates are proposed without a request id (`answers_its_own_retries`): a retry whose
    // first try committed is this same command applied a second time.
    let mut s = State::default();
    let create = create_upload("u1", 60, Some("k"), 1);
    assert!(create.answers_its_own_retries());
    let Ok(Outcome::Upload(first)) = apply(&mut s, create.clone()) else {
        panic!("the create was refused")
    };
    let Ok(Outcome::Upload(again)) = apply(&mut s, create.clone()) else {
        panic!("the create applied again was refused")
    };
    assert_eq!(again, first);
    let user = s.user("ann").unwrap();
    assert_eq!((user.reserved, user.active_uploads), (60, 1));

    // Applied again after the upload was aborted: the aborted upload, as it is now, and no
    // new reservation.
    apply(
        &mut s,
        Command::AbortUpload {
            owner: "ann".into(),
            upload_id: "u1".into(),
            now: 2,
        },
    )
    .unwrap();
    let Ok(Outcome::Upload(late)) = apply(&mut s, create) else {
        panic!("the create applied after the abort was refused")
    };
    assert_eq!(late.id, "u1");
    assert_ne!(late.state, first.state);
    let user = s.user("ann").unwrap();
    assert_eq!((user.reserved, user.active_uploads), (0, 0));
}

#[test]
fn staged_chunk_with_different_content_is_a_conflict() {
    let mut s = State::default();
    apply(&mut s, create_upload("u", 100, None, 1)).unwrap();
    let stage = |h: &str, len: u64| Command::ChunkStaged {
        owner: "ann".into(),
        upload_id: "u".into(),
        index: 1,
        node: 1,
        len,
        blake3: h.into(),
        cv: "cv".into(),
        now: 2,
    };
    assert!(matches!(
        apply(&mut s, stage("a", 64)),
        Err(ModelError::ChunkLength { expected: 36, .. })
    ));
    apply(&mut s, stage("a", 36)).unwrap();
    apply(&mut s, stage("a", 36)).unwrap();
    assert_eq!(
        apply(&mut s, stage("b", 36)),
        Err(ModelError::ChunkConflict { index: 1 })
    );
    let up = s.upload("ann", "u").unwrap();
    assert!(matches!(up.chunks[1], Chunk::Staged { ref blake3, .. } if blake3 == "a"));
}

#[test]
fn a_retried_request_is_applied_once_and_forgotten_after_a_while() {
    let mut s = State::default();
    let once = |id: &str, at: u64, quota: u64| Command::Once {
        id: id.into(),
        at,
        cmd: Box::new(Command::SetQuota {
            user: "ann".into(),
            quota,
        }),
    };
    let quota = |s: &State| s.user("ann").unwrap().quota;
    apply(&mut s, once("r1", 1_000, 10)).unwrap();
    apply(&mut s, once("r2", 2_000, 20)).unwrap();
    // r1 again (its first outcome was lost, say): answered, not applied over r2.
    let again = apply(&mut s, once("r1", 3_000, 10)).unwrap();
    assert!(matches!(again, Outcome::User(u) if u.quota == 10));
    assert_eq!(quota(&s), 20);
    // A refused command is not remembered: trying it again is harmless.
    let refused = Command::Once {
        id: "r3".into(),
        at: 3_000,
        cmd: Box::new(Command::DeleteFile {
            owner: "ann".into(),
            file_id: "nope".into(),
            now: 3_000,
        }),
    };
    assert_eq!(apply(&mut s, refused), Err(ModelError::NotFound));
    assert!(!s.kv().0.contains_key(&b"r/r3"[..]));
    // Long after, the ids are gone (the state does not grow without end).
    let later = wharf_raft::model::REQUEST_MEMORY_MS + 5_000;
    apply(&mut s, once("r4", later, 30)).unwrap();
    let remembered = s.kv().0.keys().filter(|k| k.starts_with(b"rt/")).count();
    assert_eq!(remembered, 1);
    assert!(s.kv().0.contains_key(&b"r/r4"[..]));
    assert!(!s.kv().0.contains_key(&b"r/r1"[..]));
}

#[test]
fn ended_uploads_and_their_idempotency_keys_are_forgotten_after_the_retention() {
    let mut s = State::default();
    let create = |id: &str, now: u64| create_upload(id, 10, Some("k"), now);
    let expire = |now: u64| Command::ExpireUploads {
        now,
        retention_ms: Some(5_000),
    };
    apply(&mut s, create("u1", 1_000)).unwrap();
    apply(
        &mut s,
        Command::AbortUpload {
            owner: "ann".into(),
            upload_id: "u1".into(),
            now: 2_000,
        },
    )
    .unwrap();
    // The key of an upload that ended without a file is free at once: it makes a new upload.
    match apply(&mut s, create("u2", 2_500)).unwrap() {
        Outcome::Upload(u) => assert_eq!(u.id, "u2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.idempotent_upload("ann", "k").as_deref(), Some("u2"));
    // While that one is live, the key answers with it.
    match apply(&mut s, create("u9", 2_600)).unwrap() {
        Outcome::Upload(u) => assert_eq!(u.id, "u2"),
        other => panic!("{other:?}"),
    }
    // The same key with another checksum is a conflict, not the old upload.
    let mut other_sum = create("u8", 2_700);
    if let Command::CreateUpload { blake3, .. } = &mut other_sum {
        *blake3 = Some("ab".repeat(32));
    }
    assert_eq!(
        apply(&mut s, other_sum).unwrap_err(),
        wharf_raft::ModelError::IdempotencyConflict
    );
    // Within the retention the aborted upload is kept (u2 expires now).
    apply(&mut s, expire(6_000)).unwrap();
    assert!(s.upload("ann", "u1").is_some());
    // After it, u1 is gone, indexes included; u2 (ended later) is kept with its key.
    apply(&mut s, expire(7_001)).unwrap();
    assert!(s.upload("ann", "u1").is_none());
    assert!(s.upload("ann", "u2").is_some());
    let leftovers: Vec<_> = s
        .kv()
        .0
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| k.contains("u1") && !k.starts_with("g/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The key of the expired u2 makes a new upload too.
    match apply(&mut s, create("u3", 7_500)).unwrap() {
        Outcome::Upload(u) => assert_eq!(u.id, "u3"),
        other => panic!("{other:?}"),
    }
}

/// A one-request file of ann's, 5 bytes named "a.txt" (upload and file ids, and the key, vary).
fn store_file(upload_id: &str, file_id: &str, idempotency_key: Option<&str>) -> Command {
    Command::StoreFile {
        upload_id: upload_id.into(),
        file_id: file_id.into(),
        owner: "ann".into(),
        tier: Tier::Basic,
        limits: LIMITS,
        name: "a.txt".into(),
        mime: None,
        size: 5,
        blake3: "h".into(),
        idempotency_key: idempotency_key.map(Into::into),
        object_key: format!("uploads/{upload_id}"),
        scan: false,
        now: 1,
    }
}

/// The keys of `s` by their kind (the part before the first `/`).
fn kinds(s: &State) -> Vec<String> {
    let mut kinds: Vec<String> = s
        .kv()
        .0
        .keys()
        .map(|k| {
            String::from_utf8_lossy(k)
                .split('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    kinds.dedup();
    kinds
}

#[test]
fn a_one_request_file_keeps_an_upload_record_only_for_its_idempotency_key() {
    let mut s = State::default();
    let file = apply(&mut s, store_file("u1", "f1", None)).unwrap();
    // The file, its id index, its blob and the blob's file index, its folder's name and date
    // indexes, its name's words, and the owner: no upload.
    assert_eq!(kinds(&s), ["b", "f", "fb", "fc", "fi", "fn", "sw", "u"]);
    assert!(s.upload_record("ann", "u1").is_none());
    // Applied again (a retry whose first answer was lost), it answers the same file, once.
    assert_eq!(apply(&mut s, store_file("u1", "f1", None)).unwrap(), file);
    assert_eq!(s.file("ann", "f1").map(|f| f.size), Some(5));
    assert_eq!(s.user("ann").unwrap().used, 5);

    let keyed = apply(&mut s, store_file("u2", "f2", Some("k"))).unwrap();
    assert!(s.upload_record("ann", "u2").is_some());
    // The key answers the file it made, and nothing more is stored.
    assert_eq!(
        apply(&mut s, store_file("u3", "f3", Some("k"))).unwrap(),
        keyed
    );
    assert!(s.file("ann", "f3").is_none());
    assert_eq!(s.user("ann").unwrap().used, 10);
}

#[test]
fn a_retried_delete_answers_with_the_file_it_deleted() {
    let mut s = State::default();
    let file = apply(&mut s, store_file("u1", "f1", None)).unwrap();
    let delete = Command::Once {
        id: "r1".into(),
        at: 2,
        cmd: Box::new(Command::DeleteFile {
            owner: "ann".into(),
            file_id: "f1".into(),
            now: 2,
        }),
    };
    let first = apply(&mut s, delete.clone()).unwrap();
    assert_eq!(first, file);
    // The first answer was lost; the retry must not say "not found": the delete happened.
    assert_eq!(apply(&mut s, delete).unwrap(), file);
    assert!(s.file("ann", "f1").is_none());
}

#[test]
fn a_late_offload_from_a_node_declared_lost_is_refused() {
    let mut s = State::default();
    let up = create_upload("u", 10, None, 1);
    apply(&mut s, up).unwrap();
    let staged = |node: u64| Command::ChunkStaged {
        owner: "ann".into(),
        upload_id: "u".into(),
        index: 0,
        node,
        len: 10,
        blake3: "c".into(),
        cv: "cv".into(),
        now: 2,
    };
    let offloaded = |node: u64| Command::ChunkOffloaded {
        owner: "ann".into(),
        upload_id: "u".into(),
        index: 0,
        etag: format!("etag-of-{node}"),
        node,
    };
    apply(&mut s, staged(1)).unwrap();
    // Node 1 is declared lost; the client sends the chunk to node 2.
    apply(&mut s, Command::NodeLost { node: 1 }).unwrap();
    apply(&mut s, staged(2)).unwrap();
    // Node 1 comes back and finishes its offload: its ETag must not go to node 2's chunk.
    assert!(matches!(
        apply(&mut s, offloaded(1)),
        Err(ModelError::ChunkConflict { index: 0 })
    ));
    apply(&mut s, offloaded(2)).unwrap();
    match s.chunk("ann", "u", 0) {
        Chunk::Offloaded { node, etag, .. } => assert_eq!((node, etag.as_str()), (2, "etag-of-2")),
        other => panic!("{other:?}"),
    }
}
