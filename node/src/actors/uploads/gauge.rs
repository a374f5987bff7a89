//! How many bytes staging holds, for `upload.max_staging_bytes`.
//!
//! Two counts: chunks on disk (received, not yet in the object store) and chunks being
//! received (counted at their full length before their first byte, so that concurrent chunks
//! cannot all pass one check). A periodic recount from the disk corrects the first count
//! (a chunk whose length is no longer known, a crash) but only when nothing changed it while
//! the directory was read: a recount racing a receive must never forget that receive.

use std::path::Path;
use std::sync::Mutex;

pub struct StagingGauge {
    max: u64,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    on_disk: u64,
    receiving: u64,
    /// Bumped by every change to `on_disk`, so that a recount can tell it was raced.
    changes: u64,
}

/// A recount begun: the disk is read between [`StagingGauge::begin_recount`] and
/// [`StagingGauge::finish_recount`].
pub struct Recount(u64);

impl StagingGauge {
    pub fn new(max: u64, on_disk: u64) -> Self {
        Self {
            max,
            counts: Mutex::new(Counts {
                on_disk,
                ..Counts::default()
            }),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: every update is one statement.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes counted now: on disk and being received.
    pub fn bytes(&self) -> u64 {
        let c = self.counts();
        c.on_disk + c.receiving
    }

    /// Counts `len` bytes as being received if they fit under the limit.
    pub fn reserve(&self, len: u64) -> Option<Reservation<'_>> {
        let mut c = self.counts();
        let total = c.on_disk.saturating_add(c.receiving).saturating_add(len);
        (total <= self.max).then(|| {
            c.receiving += len;
            Reservation {
                gauge: self,
                len,
                kept: false,
            }
        })
    }

    /// `len` bytes of chunks left the disk.
    fn unstage(&self, len: u64) {
        let mut c = self.counts();
        c.on_disk = c.on_disk.saturating_sub(len);
        c.changes += 1;
    }

    /// Removes a staged chunk of `len` bytes and gives its bytes back, once: whoever removes
    /// the file gives them back. The removal counts as a change before the file goes, so a
    /// recount that cannot see the file any more is not taken (it would count it gone twice).
    pub async fn remove_staged(&self, path: &Path, len: u64) -> bool {
        self.counts().changes += 1;
        let removed = tokio::fs::remove_file(path).await.is_ok();
        if removed {
            self.unstage(len);
        }
        removed
    }

    pub fn begin_recount(&self) -> Recount {
        Recount(self.counts().changes)
    }

    /// Takes `on_disk` (read since `begin`) as the count of chunks on disk, unless a chunk
    /// came or went meanwhile (then the next recount tries again). Says whether it took it.
    pub fn finish_recount(&self, begin: Recount, on_disk: u64) -> bool {
        let mut c = self.counts();
        let quiet = c.changes == begin.0;
        if quiet {
            c.on_disk = on_disk;
        }
        quiet
    }
}

/// Bytes counted for a chunk being received: given back unless [`Self::keep`] is called (the
/// chunk is staged), also when the receive is dropped half-way.
pub struct Reservation<'a> {
    gauge: &'a StagingGauge,
    len: u64,
    kept: bool,
}

impl Reservation<'_> {
    /// The chunk is on disk now.
    pub fn keep(mut self) {
        let mut c = self.gauge.counts();
        c.receiving -= self.len;
        c.on_disk += self.len;
        c.changes += 1;
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.gauge.counts().receiving -= self.len;
        }
    }
}

/// Bytes of the staged chunks under `staging`: neither chunks being received (`.part-` files,
/// counted by their reservations) nor one-request bodies (they live for one request).
pub fn staged_chunk_bytes(staging: &Path) -> u64 {
    let Ok(uploads) = std::fs::read_dir(staging) else {
        return 0;
    };
    uploads
        .flatten()
        .filter(|u| u.file_name() != super::single::SINGLE_DIR)
        .filter(|u| u.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|u| std::fs::read_dir(u.path()).into_iter().flatten().flatten())
        .filter(|e| !e.file_name().to_string_lossy().contains(".part-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Removes an upload's staging directory, giving back what its chunks counted. A chunk that
/// another task removes first (an offload) is given back by that task, never twice.
pub async fn remove_upload_dir(gauge: &StagingGauge, dir: &Path) {
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let part = e.file_name().to_string_lossy().contains(".part-");
            // A `.part` is counted by its reservation, not as on disk.
            let len = if part {
                0
            } else {
                e.metadata().await.map(|m| m.len()).unwrap_or(0)
            };
            gauge.remove_staged(&e.path(), len).await;
        }
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
}

#[cfg(test)]
mod tests {
    use super::StagingGauge;

    #[test]
    fn concurrent_reservations_cannot_all_pass_the_limit() {
        let g = StagingGauge::new(16, 0);
        let a = g.reserve(8).unwrap();
        let b = g.reserve(8).unwrap();
        assert!(g.reserve(1).is_none());
        a.keep();
        drop(b);
        assert_eq!(g.bytes(), 8);
        assert!(g.reserve(8).is_some());
    }

    #[test]
    fn a_recount_never_forgets_a_chunk_being_received() {
        let g = StagingGauge::new(16, 8);
        let r = g.reserve(8).unwrap();
        // The disk shows nothing (the chunk on disk left, the one being received is a `.part`).
        let begin = g.begin_recount();
        assert!(g.finish_recount(begin, 0));
        assert_eq!(g.bytes(), 8, "the reservation still counts");
        assert!(g.reserve(16).is_none());
        drop(r);
        assert_eq!(g.bytes(), 0);
    }

    #[test]
    fn a_recount_raced_by_a_staged_or_removed_chunk_is_not_taken() {
        let g = StagingGauge::new(32, 0);
        let r = g.reserve(8).unwrap();
        let begin = g.begin_recount();
        // Read before the rename: the disk shows no chunk, but the chunk is on disk now.
        r.keep();
        assert!(!g.finish_recount(begin, 0));
        assert_eq!(g.bytes(), 8);
        let begin = g.begin_recount();
        g.unstage(8);
        assert!(!g.finish_recount(begin, 8));
        assert_eq!(g.bytes(), 0);
    }

    #[tokio::test]
    async fn a_recount_that_missed_a_removed_chunk_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = dir.path().join("0");
        std::fs::write(&chunk, [0u8; 8]).unwrap();
        let g = StagingGauge::new(32, 8);
        let begin = g.begin_recount();
        // The removal starts after the recount began: the disk read may no longer see the file.
        assert!(g.remove_staged(&chunk, 8).await);
        assert!(!g.finish_recount(begin, 0));
        assert_eq!(g.bytes(), 0, "given back once, not twice");
        assert!(!g.remove_staged(&chunk, 8).await);
        assert_eq!(g.bytes(), 0);
    }
}
