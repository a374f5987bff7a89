//! What must hold after every command of the store model test, checked on the in-memory model.

use super::*;

/// Every user's reservation is what their open uploads hold (a tus final holds nothing: its
/// partials do), and they count as uploads in progress; used + reserved stays within the quota.
pub fn reservations_add_up(mem: &State, after: &Command) -> Result<(), TestCaseError> {
    for owner in OWNERS {
        let Some(user) = mem.user(owner) else {
            continue;
        };
        let (mut reserved, mut open) = (0u64, 0u32);
        for up in mem.uploads_page(owner, Some(UploadState::Uploading), None, usize::MAX) {
            if matches!(mem.concat(owner, &up.id), Some(Concat::Final { .. })) {
                continue;
            }
            reserved += mem.tus_deferred_reserved(owner, &up.id).unwrap_or(up.size);
            open += 1;
        }
        prop_assert_eq!(
            (user.reserved, user.active_uploads),
            (reserved, open),
            "{}'s reservation after {:?}",
            owner,
            after
        );
        prop_assert!(
            user.used + user.reserved <= user.quota,
            "over quota after {:?}",
            after
        );
    }
    Ok(())
}

/// Every user's folders form a tree under the root (each reachable once: no cycle), every
/// file is listed exactly once, in the folder it says it is in, and a folder's names are
/// unique; the date index lists what the name index lists.
pub fn folders_hold(mem: &State, after: &Command) -> Result<(), TestCaseError> {
    for owner in OWNERS {
        let mut folders = 0usize;
        mem.kv()
            .scan(format!("fd/{owner}/").as_bytes(), None, &mut |_, _| {
                folders += 1;
                true
            });
        let mut seen_folders = std::collections::HashSet::new();
        let mut seen_files = std::collections::HashSet::new();
        let mut todo: Vec<Option<String>> = vec![None];
        // What was trashed by itself is out of its folder's listing: reached from the trash.
        for e in mem.trash_page(owner, None, usize::MAX) {
            match e.kind {
                EntryKind::Folder => {
                    prop_assert!(mem.folder(owner, &e.id).is_some(), "trashed folder gone");
                    seen_folders.insert(e.id.clone());
                    todo.push(Some(e.id));
                }
                EntryKind::File => {
                    prop_assert!(mem.file(owner, &e.id).is_some(), "trashed file gone");
                    seen_files.insert(e.id);
                }
            }
        }
        while let Some(dir) = todo.pop() {
            let by_name = mem
                .entries(owner, dir.as_deref(), true, None, usize::MAX)
                .entries;
            let by_date = mem
                .entries(owner, dir.as_deref(), false, None, usize::MAX)
                .entries;
            let mut a = by_name.clone();
            let mut b = by_date;
            a.sort_by(|x, y| x.1.cmp(&y.1));
            b.sort_by(|x, y| x.1.cmp(&y.1));
            prop_assert_eq!(&a, &b, "{}'s indexes of {:?} after {:?}", owner, dir, after);
            let mut names = std::collections::HashSet::new();
            for (kind, id) in by_name {
                let name = match kind {
                    EntryKind::Folder => {
                        let f = mem.folder(owner, &id);
                        prop_assert!(
                            f.is_some(),
                            "listed folder {} is gone after {:?}",
                            id,
                            after
                        );
                        let f = f.unwrap();
                        prop_assert_eq!(&f.parent, &dir);
                        prop_assert!(
                            seen_folders.insert(id.clone()),
                            "{} twice after {:?}",
                            id,
                            after
                        );
                        todo.push(Some(id));
                        f.name
                    }
                    EntryKind::File => {
                        let f = mem.file(owner, &id);
                        prop_assert!(f.is_some(), "listed file {} is gone after {:?}", id, after);
                        prop_assert_eq!(mem.file_folder(owner, &id), dir.clone());
                        prop_assert!(
                            seen_files.insert(id.clone()),
                            "{} twice after {:?}",
                            id,
                            after
                        );
                        f.unwrap().name
                    }
                };
                prop_assert!(
                    names.insert(name.clone()),
                    "{:?} twice in {:?} after {:?}",
                    name,
                    dir,
                    after
                );
            }
        }
        prop_assert_eq!(
            seen_folders.len(),
            folders,
            "unreachable folders after {:?}",
            after
        );
        let files = mem.files_page(owner, None, usize::MAX).len();
        prop_assert_eq!(seen_files.len(), files, "unlisted files after {:?}", after);
    }
    Ok(())
}

/// A user's usage is the bytes of every version they keep, content found infected aside;
/// a blob's refcount is the versions that point at it, and a blob nothing points at is gone.
pub fn usage_adds_up(mem: &State, after: &Command) -> Result<(), TestCaseError> {
    for owner in OWNERS {
        let Some(user) = mem.user(owner) else {
            continue;
        };
        let mut used = 0;
        let mut refs = std::collections::BTreeMap::<String, u64>::new();
        for f in mem.files_page(owner, None, usize::MAX) {
            let versions = mem.versions(owner, &f.id).unwrap_or_default();
            for v in versions {
                let blob = mem.blob(&format!("{owner}/{}", v.blake3));
                prop_assert!(
                    blob.is_some(),
                    "{}'s version {} of {} has no blob after {:?}",
                    owner,
                    v.id,
                    f.id,
                    after
                );
                if !matches!(blob.unwrap().scan, ScanState::Infected { .. }) {
                    used += v.size;
                }
                *refs.entry(v.blake3).or_default() += 1;
            }
        }
        prop_assert_eq!(user.used, used, "{}'s usage after {:?}", owner, after);
        let mut blobs = std::collections::BTreeMap::new();
        mem.kv()
            .scan(format!("b/{owner}/").as_bytes(), None, &mut |k, _| {
                let hash = String::from_utf8_lossy(&k[format!("b/{owner}/").len()..]).into_owned();
                blobs.insert(
                    hash.clone(),
                    mem.blob(&format!("{owner}/{hash}"))
                        .map_or(0, |b| b.refcount),
                );
                true
            });
        prop_assert_eq!(blobs, refs, "{}'s blob refcounts after {:?}", owner, after);
    }
    Ok(())
}

/// Every share is in its owner's index and its user's, and names a file or folder that
/// exists (a purge ends its shares).
pub fn shares_mirror(mem: &State, after: &Command) -> Result<(), TestCaseError> {
    for user in OWNERS {
        for s in mem.shared_with(user, None, usize::MAX) {
            let mirror = mem.share(&s.owner, &s.target, user);
            prop_assert_eq!(Some(&s), mirror.as_ref());
            let exists = match s.kind {
                EntryKind::File => mem.file(&s.owner, &s.target).is_some(),
                EntryKind::Folder => mem.folder(&s.owner, &s.target).is_some(),
            };
            prop_assert!(exists, "share of a gone {:?} after {:?}", s.target, after);
        }
    }
    for owner in OWNERS {
        let mut n = 0;
        mem.kv()
            .scan(format!("sh/{owner}/").as_bytes(), None, &mut |_, _| {
                n += 1;
                true
            });
        let mirrored: usize = OWNERS
            .iter()
            .map(|u| {
                mem.shared_with(u, None, usize::MAX)
                    .iter()
                    .filter(|s| s.owner == owner)
                    .count()
            })
            .sum();
        prop_assert_eq!(
            n,
            mirrored,
            "{}'s shares unmirrored after {:?}",
            owner,
            after
        );
    }
    Ok(())
}

/// Once every user is counted, the usage totals are the sums of the users' records (per tier),
/// each user's file count is their file records, and the by-usage index lists every user once.
pub fn usage_totals_add_up(mem: &State, after: &Command) -> Result<(), TestCaseError> {
    if !mem.usage_counted() {
        return Ok(());
    }
    let mut want = std::collections::BTreeMap::<String, (u64, u64, u64, u64, u64)>::new();
    for u in mem.users(None, usize::MAX) {
        let files = mem.files_page(&u.id, None, usize::MAX).len() as u64;
        prop_assert_eq!(
            mem.user_files(&u.id),
            files,
            "{}'s files after {:?}",
            u.id,
            after
        );
        let t = want.entry(u.tier.as_str().to_string()).or_default();
        t.0 += 1;
        t.1 += u.used;
        t.2 += u.reserved;
        t.3 += files;
        t.4 += u64::from(u.active_uploads);
    }
    let got: std::collections::BTreeMap<_, _> = mem
        .totals()
        .tiers
        .into_iter()
        .filter(|(_, t)| t.users > 0)
        .map(|(k, t)| (k, (t.users, t.used, t.reserved, t.files, t.uploads)))
        .collect();
    prop_assert_eq!(got, want, "usage totals after {:?}", after);
    let (by_used, _) = mem.users_by_used(None, usize::MAX);
    prop_assert_eq!(
        by_used.len(),
        mem.users(None, usize::MAX).len(),
        "usage index after {:?}",
        after
    );
    prop_assert!(
        by_used.windows(2).all(|w| w[0].used >= w[1].used),
        "usage index out of order after {:?}",
        after
    );
    Ok(())
}
