//! Background writeback of the state database's journal.
//!
//! wharf never fsyncs the `state` journal for its own sake (the log an entry was applied from
//! was synced first), so what apply writes piles up in the page cache. But fjall fsyncs a
//! journal before it writes out each memtable, holding the lock that every writer of that
//! database takes: with a whole memtable's worth (8–12 MiB) of dirty journal behind it, that
//! fsync held every apply for 40–50 ms, once per memtable on every node, and set the p99 of
//! creates on a loaded cluster. Starting the writeback of the journal files every
//! [`INTERVAL`] leaves that fsync with the last moments' writes only. The call is
//! `posix_fadvise(POSIX_FADV_DONTNEED)`: on Linux it starts writing the file's dirty pages
//! without waiting for the disk or committing the file system's journal, takes no fjall lock,
//! and drops the pages already written (fjall reads its journals only when it starts).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the journal's dirty pages are handed to the disk.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Keeps the writeback thread of one database directory running; the thread ends within
/// [`INTERVAL`] of the last clone being dropped.
#[derive(Clone)]
pub(crate) struct Writeback {
    _alive: Arc<()>,
}

impl Writeback {
    pub fn start(dir: PathBuf) -> Self {
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        let spawned = std::thread::Builder::new()
            .name("wharf:writeback".into())
            .spawn(move || run(&dir, &watch));
        if let Err(e) = spawned {
            // Only latency suffers without it.
            tracing::warn!(error = %e, "could not start the state journal's writeback thread");
        }
        Self { _alive: alive }
    }
}

fn run(dir: &std::path::Path, alive: &Weak<()>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(INTERVAL);
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jnl") {
                start_writeback(&path);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(path: &std::path::Path) {
    // A journal fjall has just removed is simply gone.
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    if let Err(e) = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed) {
        tracing::debug!(path = %path.display(), error = %e, "posix_fadvise");
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_path: &std::path::Path) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;

    /// The thread opens fjall's journals read-only: the advice must be accepted on such a
    /// handle, for a file with dirty pages.
    #[test]
    fn a_read_only_handle_takes_the_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.jnl");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        let ro = std::fs::File::open(&path).unwrap();
        rustix::fs::fadvise(&ro, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 1 << 20);
    }
}
