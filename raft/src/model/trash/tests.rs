//! The trash's examples: what a trashed file or folder hides, restores (back where it was,
//! or the root, under a free name), purges (bounded per command) and automatic expiry.

use super::super::folders::{OnConflict, Placement};
use super::super::{apply, blob_id, Command, Tier, TierLimits};
use super::*;

const LIMITS: TierLimits = TierLimits {
    quota: 1_000_000,
    max_file_size: 1_000,
    max_concurrent_uploads: 8,
};

fn mkdir(s: &mut State, id: &str, name: &str, parent: Option<&str>) {
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
    .unwrap();
}

fn store(s: &mut State, id: &str, name: &str, folder: Option<&str>) {
    apply(
        s,
        Command::Placed {
            placement: Placement {
                folder: folder.map(Into::into),
                on_conflict: OnConflict::Fail,
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
                blake3: format!("h-{id}"),
                idempotency_key: None,
                object_key: format!("o/{id}"),
                scan: false,
                now: 2,
            }),
        },
    )
    .unwrap();
}

fn trash_cmd(id: &str, kind: EntryKind, now: u64) -> Command {
    Command::Trash {
        owner: "ann".into(),
        id: id.into(),
        kind,
        now,
    }
}

fn restore(id: &str) -> Command {
    Command::RestoreFromTrash {
        owner: "ann".into(),
        id: id.into(),
    }
}

fn purge(id: &str) -> Command {
    Command::PurgeTrash {
        owner: "ann".into(),
        id: id.into(),
        now: 9,
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

fn used(s: &State) -> u64 {
    s.user("ann").unwrap().used
}

#[test]
fn a_trashed_file_is_hidden_counted_and_comes_back_under_a_free_name() {
    let mut s: State = State::default();
    store(&mut s, "f1", "a.txt", None);
    apply(&mut s, trash_cmd("f1", EntryKind::File, 5)).unwrap();
    assert!(s.live_file("ann", "f1").is_none());
    assert!(names(&s, None).is_empty());
    assert!(s.files_by_word("ann", "a", 10).is_empty(), "out of search");
    assert_eq!(used(&s), 10, "trashed bytes still count");
    assert_eq!(s.trash_page("ann", None, 10).len(), 1);
    // Trashed again, renamed, moved, shared, restored as a version: not found.
    for cmd in [
        trash_cmd("f1", EntryKind::File, 6),
        Command::MoveEntry {
            owner: "ann".into(),
            id: "f1".into(),
            kind: EntryKind::File,
            name: Some("b.txt".into()),
            parent: None,
        },
        Command::CreateLink {
            token: "t".into(),
            owner: "ann".into(),
            file_id: "f1".into(),
            expires_at: None,
            password_hash: None,
            max_downloads: None,
            now: 6,
        },
    ] {
        assert!(matches!(apply(&mut s, cmd), Err(ModelError::NotFound)));
    }
    // Its name is free meanwhile: a new file takes it, and the restored one is renamed.
    store(&mut s, "f2", "a.txt", None);
    let out = apply(&mut s, restore("f1")).unwrap();
    assert!(matches!(out, Outcome::File(f) if f.name == "a (1).txt"));
    assert_eq!(names(&s, None), ["a (1).txt", "a.txt"]);
    assert!(s.trash_entry("ann", "f1").is_none());
    assert_eq!(s.files_by_word("ann", "a", 10).len(), 2);
    assert!(matches!(
        apply(&mut s, restore("f1")),
        Err(ModelError::NotFound)
    ));
}

#[test]
fn a_trashed_folder_hides_all_under_it_until_restored() {
    let mut s: State = State::default();
    mkdir(&mut s, "d", "docs", None);
    mkdir(&mut s, "e", "2026", Some("d"));
    store(&mut s, "f1", "r.txt", Some("e"));
    apply(&mut s, trash_cmd("d", EntryKind::Folder, 5)).unwrap();
    assert!(s.live_file("ann", "f1").is_none());
    assert!(s.live_folder("ann", "e").is_none());
    assert!(names(&s, None).is_empty());
    // Nothing goes into a trashed folder.
    let into = Command::CreateFolder {
        owner: "ann".into(),
        folder_id: "x".into(),
        name: "x".into(),
        parent: Some("e".into()),
        on_conflict: OnConflict::Fail,
        now: 6,
    };
    assert!(matches!(apply(&mut s, into), Err(ModelError::NotFound)));
    // A file under it cannot be trashed on its own: it is in the trash already.
    assert!(matches!(
        apply(&mut s, trash_cmd("f1", EntryKind::File, 6)),
        Err(ModelError::NotFound)
    ));
    apply(&mut s, restore("d")).unwrap();
    assert_eq!(names(&s, None), ["docs"]);
    assert!(s.live_file("ann", "f1").is_some());
    assert_eq!(s.file_folder("ann", "f1").as_deref(), Some("e"));
}

#[test]
fn a_restore_whose_folder_is_gone_lands_in_the_root() {
    let mut s: State = State::default();
    mkdir(&mut s, "d", "docs", None);
    store(&mut s, "f1", "r.txt", Some("d"));
    apply(&mut s, trash_cmd("f1", EntryKind::File, 5)).unwrap();
    apply(&mut s, trash_cmd("d", EntryKind::Folder, 6)).unwrap();
    apply(&mut s, restore("f1")).unwrap();
    assert_eq!(names(&s, None), ["r.txt"]);
    assert_eq!(s.file_folder("ann", "f1"), None);
}

#[test]
fn a_purge_deletes_for_good_a_bounded_part_per_command() {
    let mut s: State = State::default();
    mkdir(&mut s, "d", "docs", None);
    mkdir(&mut s, "e", "deep", Some("d"));
    let n = PURGE_PER_COMMAND + 10;
    for i in 0..n {
        let parent = if i % 2 == 0 { "d" } else { "e" };
        store(&mut s, &format!("f{i:05}"), &format!("n{i}"), Some(parent));
    }
    assert_eq!(used(&s), 10 * n as u64);
    apply(&mut s, trash_cmd("d", EntryKind::Folder, 5)).unwrap();
    assert_eq!(
        apply(&mut s, purge("d")).unwrap(),
        Outcome::Purged(false),
        "more than one command's worth"
    );
    assert!(s.trash_entry("ann", "d").is_some(), "still in the trash");
    assert_eq!(apply(&mut s, purge("d")).unwrap(), Outcome::Purged(true));
    assert!(s.trash_entry("ann", "d").is_none());
    assert!(s.folder("ann", "d").is_none() && s.folder("ann", "e").is_none());
    assert!(s.files_page("ann", None, 10).is_empty());
    assert_eq!(used(&s), 0);
    assert!(s.blob(&blob_id("ann", "h-f00000")).is_none());
    assert!(s.garbage(10_000).iter().any(|g| g.object_key == "o/f00000"));
    assert!(matches!(
        apply(&mut s, purge("d")),
        Err(ModelError::NotFound)
    ));
}

#[test]
fn entries_trashed_long_enough_are_purged_and_the_others_kept() {
    let mut s: State = State::default();
    store(&mut s, "old", "old.txt", None);
    store(&mut s, "new", "new.txt", None);
    apply(&mut s, trash_cmd("old", EntryKind::File, 100)).unwrap();
    apply(&mut s, trash_cmd("new", EntryKind::File, 200)).unwrap();
    let out = apply(
        &mut s,
        Command::PurgeExpiredTrash {
            before: 150,
            now: 300,
        },
    )
    .unwrap();
    assert_eq!(out, Outcome::Purged(true));
    assert!(s.file("ann", "old").is_none());
    assert!(s.trash_entry("ann", "new").is_some());
    assert_eq!(used(&s), 10);
}
