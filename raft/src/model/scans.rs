//! Scan leases, verdicts, quarantine and rescans of blobs.

use super::{blob_id, ApplyResult, Millis, ModelError, Outcome, ScanState, ScanVerdict, State};
use crate::kv::KvMut;

pub(super) fn lease<K: KvMut>(
    state: &mut State<K>,
    blob: &str,
    holder: u64,
    now: Millis,
    until: Millis,
) -> ApplyResult {
    let mut b = state.blob(blob).ok_or(ModelError::NotFound)?;
    if !b.scan.leasable(now) {
        return match &b.scan {
            ScanState::Scanning { holder, .. } => Err(ModelError::LeaseHeld { holder: *holder }),
            other => Err(ModelError::Invalid(format!(
                "blob is {}, not waiting for a scan",
                other.as_str()
            ))),
        };
    }
    b.scan = ScanState::Scanning { holder, until };
    state.save_blob(&b);
    Ok(Outcome::Blob(b))
}

pub(super) fn finished<K: KvMut>(
    state: &mut State<K>,
    blob: &str,
    holder: u64,
    verdict: ScanVerdict,
    now: Millis,
) -> ApplyResult {
    let mut b = state.blob(blob).ok_or(ModelError::NotFound)?;
    match b.scan {
        ScanState::Scanning { holder: h, .. } if h == holder => {}
        ScanState::Scanning { holder: h, .. } => return Err(ModelError::LeaseHeld { holder: h }),
        _ => return Err(ModelError::Invalid("no scan lease on this blob".into())),
    }
    b.scan = match verdict {
        ScanVerdict::Released => ScanState::Pending,
        ScanVerdict::Clean => ScanState::Clean { at: now },
        ScanVerdict::Error { message } => ScanState::Error { message, at: now },
        ScanVerdict::Infected { signature } => ScanState::Infected { signature, at: now },
    };
    state.save_blob(&b);
    if matches!(b.scan, ScanState::Infected { .. }) {
        // Quarantined files no longer count against their owner.
        let size: u64 = state
            .files_of_blob(&b.owner, &b.blake3)
            .iter()
            .map(|(_, s)| s)
            .sum();
        if let Some(mut user) = state.user(&b.owner) {
            super::release(&mut user.used, size);
            state.put_user(&user);
        }
    }
    if !matches!(b.scan, ScanState::Pending) {
        // Earlier versions ("{file_id}/{version_id}") are told through their file's.
        let files = state.files_of_blob(&b.owner, &b.blake3);
        for (file_id, _) in files.into_iter().filter(|(f, _)| !f.contains('/')) {
            let scan = b.scan.as_str().to_string();
            state.emit(
                &b.owner,
                super::events::EventKind::FileScanned { file_id, scan },
            );
        }
    }
    Ok(Outcome::Blob(b))
}

pub(super) fn quarantined<K: KvMut>(
    state: &mut State<K>,
    blob: &str,
    object_key: String,
) -> ApplyResult {
    let mut b = state.blob(blob).ok_or(ModelError::NotFound)?;
    if !matches!(b.scan, ScanState::Infected { .. }) {
        return Err(ModelError::Invalid(
            "only infected blobs are quarantined".into(),
        ));
    }
    b.quarantined = true;
    b.object_key = object_key.clone();
    state.save_blob(&b);
    for (id, _) in state.files_of_blob(&b.owner, &b.blake3) {
        if let Some(mut f) = state.file(&b.owner, &id) {
            f.object_key = object_key.clone();
            state.put_file(&f);
        }
    }
    Ok(Outcome::Done)
}

/// Blobs re-queued by one `Rescan { file: None }` at most; the admin repeats it while it
/// answers this many (bounds one apply, and the batch it writes, whatever the number of blobs).
pub const RESCAN_PER_COMMAND: usize = 10_000;

pub(super) fn rescan<K: KvMut>(state: &mut State<K>, file: Option<String>) -> ApplyResult {
    let targets = match file {
        Some(file_id) => {
            let owner = state.file_owner(&file_id).ok_or(ModelError::NotFound)?;
            let f = state.file(&owner, &file_id).ok_or(ModelError::NotFound)?;
            state
                .blob(&blob_id(&owner, &f.blake3))
                .into_iter()
                .collect()
        }
        None => blobs_where(state, RESCAN_PER_COMMAND, requeueable),
    };
    Ok(Outcome::Requeued(requeue(state, targets, requeueable)))
}

/// Records that the cluster has a scanner and queues unscanned blobs (a bounded batch).
pub(super) fn scanner_found<K: KvMut>(state: &mut State<K>) -> ApplyResult {
    state.set_scanner_found();
    let unscanned = |s: &ScanState| matches!(s, ScanState::Unscanned);
    let targets = blobs_where(state, RESCAN_PER_COMMAND, unscanned);
    Ok(Outcome::Requeued(requeue(state, targets, unscanned)))
}

/// Up to `max` blobs whose scan state passes `pred`, walking the blobs a page at a time.
fn blobs_where<K: KvMut>(
    state: &State<K>,
    max: usize,
    pred: impl Fn(&ScanState) -> bool,
) -> Vec<super::Blob> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    while out.len() < max {
        let page = state.blobs(after.as_deref(), 1_000);
        let Some(last) = page.last() else { break };
        after = Some(blob_id(&last.owner, &last.blake3));
        out.extend(page.into_iter().filter(|b| pred(&b.scan)));
    }
    out.truncate(max);
    out
}

/// Puts back in the scan queue those of `targets` that still pass `pred`; answers how many.
fn requeue<K: KvMut>(
    state: &mut State<K>,
    targets: Vec<super::Blob>,
    pred: impl Fn(&ScanState) -> bool,
) -> u64 {
    let mut n = 0;
    for mut b in targets {
        if pred(&b.scan) {
            b.scan = ScanState::Pending;
            state.save_blob(&b);
            n += 1;
        }
    }
    n
}

/// What a rescan puts back in the queue. A leased blob too, whether or not its lease has run
/// out: its holder then no longer holds it (`finished` refuses its verdict) and the blob is
/// leased afresh, by the rules of `lease`.
fn requeueable(s: &ScanState) -> bool {
    matches!(
        s,
        ScanState::Clean { .. }
            | ScanState::Error { .. }
            | ScanState::Unscanned
            | ScanState::Scanning { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, Outcome, ScanState, State, Tier, TierLimits};

    fn store(s: &mut State, n: u32, scan: bool) -> String {
        let out = apply(
            s,
            Command::StoreFile {
                upload_id: format!("u{n}"),
                file_id: format!("f{n}"),
                owner: "ann".into(),
                tier: Tier::Basic,
                limits: TierLimits {
                    quota: 1_000,
                    max_file_size: 100,
                    max_concurrent_uploads: 3,
                },
                name: format!("{n}.txt"),
                mime: None,
                size: 5,
                blake3: format!("h{n}"),
                idempotency_key: None,
                object_key: format!("uploads/u{n}"),
                scan,
                now: 1,
            },
        );
        assert!(matches!(out, Ok(Outcome::File(_))), "{out:?}");
        format!("ann/h{n}")
    }

    fn scan_of(s: &State, blob: &str) -> ScanState {
        s.blob(blob).unwrap().scan
    }

    #[test]
    fn a_found_scanner_queues_unscanned_blobs_and_new_ones_wait_for_it() {
        let mut s = State::default();
        let old = store(&mut s, 1, false);
        let waiting = store(&mut s, 2, true);
        assert_eq!(scan_of(&s, &old), ScanState::Unscanned);
        assert!(!s.scanner_found());
        assert_eq!(
            apply(&mut s, Command::ScannerFound),
            Ok(Outcome::Requeued(1))
        );
        assert!(s.scanner_found());
        assert_eq!(scan_of(&s, &old), ScanState::Pending);
        assert_eq!(scan_of(&s, &waiting), ScanState::Pending);
        // A node with no scanner of its own now stores new content as waiting for one.
        let new = store(&mut s, 3, false);
        assert_eq!(scan_of(&s, &new), ScanState::Pending);
        assert_eq!(s.scan_queue(10).len(), 3);
        // Repeating it finds nothing more to queue.
        assert_eq!(
            apply(&mut s, Command::ScannerFound),
            Ok(Outcome::Requeued(0))
        );
    }

    #[test]
    fn a_rescan_breaks_a_live_lease_and_the_old_holder_cannot_record_a_verdict() {
        let mut s = State::default();
        let blob = store(&mut s, 1, true);
        let lease = |holder| Command::LeaseScan {
            blob: blob.clone(),
            holder,
            now: 10,
            until: 1_000_000,
        };
        assert!(apply(&mut s, lease(1)).is_ok());
        // Held until far away: nobody else may take it...
        assert!(apply(&mut s, lease(2)).is_err());
        // ...until a rescan puts it back in the queue.
        assert_eq!(
            apply(&mut s, Command::Rescan { file: None }),
            Ok(Outcome::Requeued(1))
        );
        assert_eq!(scan_of(&s, &blob), ScanState::Pending);
        assert!(apply(&mut s, lease(2)).is_ok());
        let verdict = |holder| Command::ScanFinished {
            blob: blob.clone(),
            holder,
            verdict: super::ScanVerdict::Clean,
            now: 20,
        };
        assert!(apply(&mut s, verdict(1)).is_err());
        assert!(apply(&mut s, verdict(2)).is_ok());
        assert!(matches!(scan_of(&s, &blob), ScanState::Clean { .. }));
        // One file's rescan requeues a leased blob too.
        assert!(apply(&mut s, Command::Rescan { file: None }).is_ok());
        assert!(apply(&mut s, lease(3)).is_ok());
        assert_eq!(
            apply(
                &mut s,
                Command::Rescan {
                    file: Some("f1".into())
                }
            ),
            Ok(Outcome::Requeued(1))
        );
        assert_eq!(scan_of(&s, &blob), ScanState::Pending);
    }
}
