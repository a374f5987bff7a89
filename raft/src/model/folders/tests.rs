//! The folder model's examples: unique names, the rename policy, moves and cycles, placement
//! at creation and at completion, retries, and the backfill of older files.

use super::super::{Tier, TierLimits};
use super::*;

const LIMITS: TierLimits = TierLimits {
    quota: 1_000_000,
    max_file_size: 1_000,
    max_concurrent_uploads: 8,
};

fn mkdir(s: &mut State, id: &str, name: &str, parent: Option<&str>) -> ApplyResult {
    apply(
        s,
        Command::CreateFolder {
            owner: "ann".into(),
            folder_id: id.into(),
            name: name.into(),
            parent: parent.map(Into::into),
            on_conflict: OnConflict::Fail,
            now: 1,
        },
    )
}

fn store(id: &str, name: &str, folder: Option<&str>, on_conflict: OnConflict) -> Command {
    Command::Placed {
        placement: Placement {
            folder: folder.map(Into::into),
            on_conflict,
        },
        cmd: Box::new(Command::StoreFile {
            upload_id: format!("u-{id}"),
            file_id: id.into(),
            owner: "ann".into(),
            tier: Tier::Basic,
            limits: LIMITS,
            name: name.into(),
            mime: None,
            size: 10,
            blake3: id.into(),
            idempotency_key: None,
            object_key: format!("o/{id}"),
            scan: false,
            now: 2,
        }),
    }
}

fn names(s: &State, parent: Option<&str>) -> Vec<String> {
    s.entries("ann", parent, true, None, 100)
        .entries
        .into_iter()
        .map(|(kind, id)| match kind {
            EntryKind::Folder => s.folder("ann", &id).unwrap().name,
            EntryKind::File => s.file("ann", &id).unwrap().name,
        })
        .collect()
}

#[test]
fn names_are_unique_per_folder_and_clashes_renamed_on_request() {
    let mut s = State::default();
    mkdir(&mut s, "d1", "docs", None).unwrap();
    assert_eq!(
        mkdir(&mut s, "d2", "docs", None),
        Err(ModelError::NameTaken {
            name: "docs".into()
        })
    );
    mkdir(&mut s, "d2", "docs", Some("d1")).unwrap();
    apply(&mut s, store("f1", "a.pdf", Some("d1"), OnConflict::Fail)).unwrap();
    let before = s.clone();
    assert_eq!(
        apply(&mut s, store("f2", "a.pdf", Some("d1"), OnConflict::Fail)),
        Err(ModelError::NameTaken {
            name: "a.pdf".into()
        })
    );
    assert_eq!(s, before, "a refused create writes nothing");
    apply(&mut s, store("f2", "a.pdf", Some("d1"), OnConflict::Rename)).unwrap();
    apply(&mut s, store("f3", "a.pdf", Some("d1"), OnConflict::Rename)).unwrap();
    assert_eq!(
        names(&s, Some("d1")),
        ["a (1).pdf", "a (2).pdf", "a.pdf", "docs"]
    );
    assert_eq!(s.file_folder("ann", "f2").as_deref(), Some("d1"));
    assert_eq!(names(&s, None), ["docs"]);
    assert_eq!(
        apply(&mut s, store("f4", "x", Some("nope"), OnConflict::Fail)),
        Err(ModelError::NotFound)
    );
}

#[test]
fn moves_keep_the_tree_acyclic_and_names_unique() {
    let mut s = State::default();
    mkdir(&mut s, "a", "a", None).unwrap();
    mkdir(&mut s, "b", "b", Some("a")).unwrap();
    mkdir(&mut s, "c", "c", Some("b")).unwrap();
    let mv = |id: &str, parent: Option<&str>| Command::MoveEntry {
        owner: "ann".into(),
        id: id.into(),
        kind: EntryKind::Folder,
        name: None,
        parent: Some(parent.map(Into::into)),
    };
    assert_eq!(
        apply(&mut s, mv("a", Some("c"))),
        Err(ModelError::FolderCycle)
    );
    assert_eq!(
        apply(&mut s, mv("a", Some("a"))),
        Err(ModelError::FolderCycle)
    );
    apply(&mut s, mv("c", None)).unwrap();
    assert_eq!(names(&s, None), ["a", "c"]);
    apply(&mut s, mv("a", Some("c"))).unwrap();
    assert_eq!(names(&s, Some("c")), ["a"]);
    apply(&mut s, store("f1", "b", None, OnConflict::Fail)).unwrap();
    let file_to = |parent: Option<&str>| Command::MoveEntry {
        owner: "ann".into(),
        id: "f1".into(),
        kind: EntryKind::File,
        name: None,
        parent: Some(parent.map(Into::into)),
    };
    // Folder `a` holds a folder named "b": the file "b" cannot join it.
    assert_eq!(
        apply(&mut s, file_to(Some("a"))),
        Err(ModelError::NameTaken { name: "b".into() })
    );
    apply(&mut s, file_to(Some("c"))).unwrap();
    assert_eq!(names(&s, Some("c")), ["a", "b"]);
    assert_eq!(
        apply(
            &mut s,
            Command::DeleteFolder {
                owner: "ann".into(),
                folder_id: "c".into()
            }
        ),
        Err(ModelError::FolderNotEmpty)
    );
    apply(
        &mut s,
        Command::DeleteFile {
            owner: "ann".into(),
            file_id: "f1".into(),
            now: 3,
        },
    )
    .unwrap();
    assert_eq!(names(&s, Some("c")), ["a"]);
    assert_eq!(s.file_folder("ann", "f1"), None);
}

#[test]
fn an_upload_is_placed_at_creation_and_its_file_where_it_ends() {
    let mut s = State::default();
    mkdir(&mut s, "d", "d", None).unwrap();
    let create = Command::Placed {
        placement: Placement {
            folder: Some("d".into()),
            on_conflict: OnConflict::Fail,
        },
        cmd: Box::new(Command::CreateUpload {
            upload_id: "u1".into(),
            owner: "ann".into(),
            tier: Tier::Basic,
            limits: LIMITS,
            name: "r.txt".into(),
            mime: None,
            size: 0,
            chunk_size: 1024,
            blake3: None,
            idempotency_key: None,
            ttl_ms: 1000,
            now: 1,
        }),
    };
    apply(&mut s, create.clone()).unwrap();
    // Applied again (a retry), it answers the same upload.
    assert!(matches!(apply(&mut s, create), Ok(Outcome::Upload(_))));
    // A file took the name meanwhile: the upload's file keeps both, as "r (1).txt".
    apply(&mut s, store("f0", "r.txt", Some("d"), OnConflict::Fail)).unwrap();
    apply(
        &mut s,
        Command::ChunkStaged {
            owner: "ann".into(),
            upload_id: "u1".into(),
            index: 0,
            node: 1,
            len: 0,
            blake3: "h".into(),
            cv: "cv".into(),
            now: 2,
        },
    )
    .unwrap();
    apply(
        &mut s,
        Command::ChunkOffloaded {
            owner: "ann".into(),
            upload_id: "u1".into(),
            index: 0,
            etag: "e".into(),
            node: 1,
        },
    )
    .unwrap();
    let out = apply(
        &mut s,
        Command::CompleteUpload {
            owner: "ann".into(),
            upload_id: "u1".into(),
            file_id: "f1".into(),
            blake3: "h".into(),
            scan: false,
            now: 3,
        },
    );
    let Ok(Outcome::File(f)) = out else {
        panic!("{out:?}")
    };
    assert_eq!(f.name, "r (1).txt");
    assert_eq!(s.file_folder("ann", "f1").as_deref(), Some("d"));
    assert!(s
        .read_at::<Placement>(&keys::upload_placement("ann", "u1"))
        .is_none());
}

#[test]
fn a_placed_dedup_applied_again_answers_the_file_it_made() {
    let mut s = State::default();
    mkdir(&mut s, "d", "d", None).unwrap();
    apply(&mut s, store("f1", "a.bin", Some("d"), OnConflict::Fail)).unwrap();
    let dedup = Command::Placed {
        placement: Placement {
            folder: Some("d".into()),
            on_conflict: OnConflict::Fail,
        },
        cmd: Box::new(Command::CreateOrDedup {
            create: Box::new(Command::CreateUpload {
                upload_id: "u2".into(),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: LIMITS,
                name: "b.bin".into(),
                mime: None,
                size: 10,
                chunk_size: 1024,
                blake3: Some("f1".into()),
                idempotency_key: None,
                ttl_ms: 1000,
                now: 5,
            }),
            file_id: "f2".into(),
        }),
    };
    let first = apply(&mut s, dedup.clone()).unwrap();
    let Outcome::File(f) = &first else {
        panic!("{first:?}")
    };
    assert_eq!(
        (f.name.as_str(), s.file_folder("ann", "f2").as_deref()),
        ("b.bin", Some("d"))
    );
    assert_eq!(apply(&mut s, dedup).unwrap(), first);
}

#[test]
fn older_files_are_indexed_into_the_root() {
    let mut s = State::default();
    // A file recorded by a build without folders: the record, not the indexes.
    apply(&mut s, store("f1", "old.txt", None, OnConflict::Fail)).unwrap();
    s.delete_at(&keys::entry_name("ann", ROOT, "old.txt", "f1"));
    s.delete_at(&keys::entry_date("ann", ROOT, "f1"));
    assert!(names(&s, None).is_empty());
    assert!(!s.entries_indexed());
    let out = apply(&mut s, Command::IndexEntries { after: None }).unwrap();
    assert_eq!(out, Outcome::Indexed(None));
    assert_eq!(names(&s, None), ["old.txt"]);
    assert!(s.entries_indexed());
    // Indexing again changes nothing.
    let before = s.clone();
    apply(&mut s, Command::IndexEntries { after: None }).unwrap();
    assert_eq!(s, before);
}

#[test]
fn names_that_are_paths_or_empty_are_refused() {
    for bad in ["", ".", "..", "../../etc/passwd", "a\0b"] {
        assert!(invalid_name(bad).is_some(), "{bad:?}");
    }
    assert!(invalid_name(&"a".repeat(256)).is_some());
    assert!(invalid_name("..hidden").is_none());
}
