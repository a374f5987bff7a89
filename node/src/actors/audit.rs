//! Download records for the audit log, without a Raft write per download: each download is
//! appended to this node's spool file (`audit-spool.jsonl` in the data dir) and queued; the
//! actor commits the queue in batches (`RecordDownloads`, up to [`BATCH_MAX`] records or every
//! `audit.download_flush_ms`) and empties the spool once all it holds is committed.
//!
//! Nothing is dropped: a download is in the spool before its answer goes out, a node that was
//! killed proposes its spool when it starts again, and a full queue makes downloads wait
//! (while the cluster cannot commit). Records are numbered per node in the order they are
//! spooled and queued, and the state keeps the last number it took from each node, so a
//! record proposed twice (a retry, a replay after a crash) is recorded once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use wharf_cluster::Metadata;
use wharf_raft::model::audit::Download;
use wharf_raft::model::Command;

use crate::actors::quota::QuotaHandle;
use crate::meta::now_ms;

/// Records in one batch at most.
pub const BATCH_MAX: usize = 1_000;
/// Downloads queued at most before new ones wait.
const QUEUE: usize = 100_000;
const SPOOL: &str = "audit-spool.jsonl";
/// A spool past this size is rewritten without its committed records.
const SPOOL_COMPACT_AT: u64 = 16 << 20;

/// The spool and the numbering: one lock, so records are numbered, spooled and queued in
/// one order.
struct Spool {
    path: PathBuf,
    next: u64,
}

impl Spool {
    fn append(&mut self, d: &Download) {
        let line = serde_json::to_vec(d).expect("a download serialises");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&[line.as_slice(), b"\n"].concat()));
        if let Err(e) = written {
            // Still queued and committed; only a crash before the commit would lose it.
            tracing::error!(error = %e, spool = %self.path.display(), "writing the download spool failed");
        }
    }

    fn read(&self) -> Vec<Download> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        // A line cut short by a crash is the only one that can fail.
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[derive(Clone)]
pub struct DownloadLog {
    tx: mpsc::Sender<Download>,
    spool: Arc<Mutex<Spool>>,
}

impl DownloadLog {
    pub fn spawn(
        meta: &Metadata,
        quota: QuotaHandle,
        data_dir: PathBuf,
        flush_every: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let node = meta.node_id;
        let mut spool = Spool {
            path: data_dir.join(SPOOL),
            next: 0,
        };
        let left = spool.read();
        // Numbers keep growing across restarts: past what the spool and the state hold, and
        // past the clock in microseconds (a spool lost with its disk cannot hold them back).
        let recorded = meta.local().downloads_recorded(node).unwrap_or(0);
        let spooled = left.iter().map(|d| d.seq).max().unwrap_or(0);
        spool.next = recorded.max(spooled).max(now_ms() * 1000) + 1;
        let spool = Arc::new(Mutex::new(spool));
        let actor = Actor {
            node,
            quota,
            spool: spool.clone(),
            rx,
            flush_every,
        };
        tokio::spawn(actor.run(left, stop));
        Self { tx, spool }
    }

    /// Records a download of `owner`'s `file` (`download.api`, `download.url`,
    /// `download.quic`) by the caller of the request in scope, from its address.
    pub async fn record(&self, action: &str, owner: &str, file: &str) {
        let origin = wharf_cluster::origin::current().unwrap_or_default();
        let mut spool = self.spool.lock().await;
        let d = Download {
            seq: spool.next,
            at: now_ms(),
            action: action.to_string(),
            actor: origin.actor,
            owner: owner.to_string(),
            file: file.to_string(),
            addr: origin.addr,
        };
        spool.next += 1;
        spool.append(&d);
        if self.tx.send(d).await.is_err() {
            tracing::error!("the download log is closed: a download is left in the spool");
        }
    }
}

struct Actor {
    node: u64,
    quota: QuotaHandle,
    spool: Arc<Mutex<Spool>>,
    rx: mpsc::Receiver<Download>,
    flush_every: Duration,
}

impl Actor {
    async fn run(mut self, left: Vec<Download>, stop: CancellationToken) {
        // What a killed node left in its spool goes first (the state drops what it has).
        for part in left.chunks(BATCH_MAX) {
            if !self.commit(part.to_vec(), &stop).await {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                d = self.rx.recv() => d,
                _ = stop.cancelled() => None,
            };
            // Stopping: what is queued stays in the spool for the next start.
            let Some(first) = next else { break };
            let mut downloads = vec![first];
            let deadline = tokio::time::sleep(self.flush_every);
            tokio::pin!(deadline);
            while downloads.len() < BATCH_MAX {
                tokio::select! {
                    d = self.rx.recv() => match d {
                        Some(d) => downloads.push(d),
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            if !self.commit(downloads, &stop).await {
                return;
            }
        }
    }

    /// Proposes `downloads` until they commit (`false` if the node stops first: the spool
    /// keeps them); then empties the spool if nothing else is queued.
    async fn commit(&mut self, downloads: Vec<Download>, stop: &CancellationToken) -> bool {
        let mut wait = Duration::from_millis(100);
        loop {
            let cmd = Command::RecordDownloads {
                node: self.node,
                downloads: downloads.clone(),
            };
            match self.quota.propose(cmd).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, records = downloads.len(), "recording downloads failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return false,
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Under the lock no record is spooled: an empty queue means the spool holds only
        // committed records.
        let spool = self.spool.lock().await;
        if self.rx.is_empty() {
            if let Err(e) = std::fs::write(&spool.path, b"") {
                tracing::warn!(error = %e, "emptying the download spool failed");
            }
        } else if std::fs::metadata(&spool.path).is_ok_and(|m| m.len() > SPOOL_COMPACT_AT) {
            // Never empty under a steady stream of downloads: keep what is not committed.
            let committed = downloads.iter().map(|d| d.seq).max().unwrap_or(0);
            let rest: Vec<u8> = spool
                .read()
                .iter()
                .filter(|d| d.seq > committed)
                .flat_map(|d| {
                    let mut line = serde_json::to_vec(d).expect("a download serialises");
                    line.push(b'\n');
                    line
                })
                .collect();
            if let Err(e) = std::fs::write(&spool.path, rest) {
                tracing::warn!(error = %e, "compacting the download spool failed");
            }
        }
        true
    }
}
