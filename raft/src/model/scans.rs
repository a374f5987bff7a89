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
            user.used -= size;
            state.put_user(&user);
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
        None => {
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            // Walk the blobs a page at a time, keeping only those to re-queue.
            while out.len() < RESCAN_PER_COMMAND {
                let page = state.blobs(after.as_deref(), 1_000);
                let Some(last) = page.last() else { break };
                after = Some(blob_id(&last.owner, &last.blake3));
                out.extend(page.into_iter().filter(|b| requeueable(&b.scan)));
            }
            out.truncate(RESCAN_PER_COMMAND);
            out
        }
    };
    let mut n = 0;
    for mut b in targets {
        if requeueable(&b.scan) {
            b.scan = ScanState::Pending;
            state.save_blob(&b);
            n += 1;
        }
    }
    Ok(Outcome::Requeued(n))
}

fn requeueable(s: &ScanState) -> bool {
    matches!(
        s,
        ScanState::Clean { .. } | ScanState::Error { .. } | ScanState::Unscanned
    )
}
