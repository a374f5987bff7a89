//! The scan-dispatch actor: takes blobs waiting for a scan under a lease recorded in Raft,
//! streams them from the object store to clamd, records the verdict; on the leader it also
//! quarantines infected objects. A scanner that dies holding a lease loses it when it expires,
//! and another node's scanner takes the blob. A node with no clamd configured keeps looking
//! for one; once one answers (or one is configured) it records in Raft that the cluster has a
//! scanner, which queues the files stored unscanned until then. [`policy`] decides what is
//! served meanwhile.

pub mod clamd;
pub mod policy;

pub use policy::{may_presign, may_serve, start, Mode, Policy};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wharf_raft::model::{self, Command, ScanState, ScanVerdict};
use wharf_raft::Outcome;

use crate::config::ScanConfig;
use crate::meta::{now_ms, Metadata};
use crate::store::ObjectStore;
use clamd::{Clamd, Finding};

pub struct ScanCtx {
    pub meta: Metadata,
    pub store: Arc<dyn ObjectStore>,
    pub clamd: Clamd,
    pub config: ScanConfig,
    pub policy: Policy,
}

/// Wakes the scanner (a new blob is waiting); cheap to clone.
#[derive(Clone)]
pub struct ScanHandle {
    tx: mpsc::Sender<()>,
}

impl ScanHandle {
    pub fn spawn(ctx: Arc<ScanCtx>, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(run(ctx, rx, stop));
        Self { tx }
    }

    /// A missed wake-up is harmless: the scanner polls anyway.
    pub fn kick(&self) {
        let _ = self.tx.try_send(());
    }
}

struct Candidate {
    blob: String,
    object_key: String,
    size: u64,
}

async fn run(ctx: Arc<ScanCtx>, mut rx: mpsc::Receiver<()>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(ctx.config.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = tokio::time::interval(Duration::from_secs(ctx.config.probe_secs));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: JoinSet<String> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut clamd_up = true;
    // Whether the cluster knows it has a scanner (this node's announcement committed, or an
    // earlier one).
    let mut announced = false;
    loop {
        let searching = !ctx.policy.configured() && !ctx.policy.found();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = probe.tick(), if searching => {
                look_for_clamd(&ctx).await;
            }
            Some(_) = rx.recv() => {}
            Some(done) = running.join_next() => {
                if let Ok(blob) = done {
                    in_flight.remove(&blob);
                }
            }
        }
        metrics::gauge!("wharf_scans_running").set(in_flight.len() as f64);
        if !announced && (ctx.policy.configured() || ctx.policy.found()) {
            announced = announce(&ctx).await;
        }
        if ctx.meta.is_leader() {
            quarantine(&ctx).await;
        }
        let free = ctx.config.concurrency.saturating_sub(in_flight.len());
        if free == 0 || candidates(&ctx, &in_flight, 1).is_empty() {
            continue;
        }
        // Lease nothing while clamd is away: blobs stay pending, nothing is marked clean.
        match ctx.clamd.ping().await {
            Ok(()) if !clamd_up => {
                tracing::info!("clamd answers again; scanning resumes");
                clamd_up = true;
            }
            Ok(()) => {}
            Err(e) => {
                if clamd_up {
                    tracing::warn!(error = %e, "clamd does not answer; scans wait");
                }
                clamd_up = false;
                continue;
            }
        }
        for c in candidates(&ctx, &in_flight, free) {
            let now = now_ms();
            let lease = Command::LeaseScan {
                blob: c.blob.clone(),
                holder: ctx.meta.node_id,
                now,
                until: now + ctx.config.lease_secs * 1000,
            };
            // Refused means another node took it first.
            if let Ok(Outcome::Blob(_)) = ctx.meta.propose(lease).await {
                in_flight.insert(c.blob.clone());
                let ctx = ctx.clone();
                running.spawn(async move {
                    scan_one(&ctx, &c).await;
                    c.blob
                });
            }
        }
        metrics::gauge!("wharf_scans_running").set(in_flight.len() as f64);
    }
    running.shutdown().await;
}

/// One look for a clamd where a node with none configured looks (`scan.clamd_probe`).
async fn look_for_clamd(ctx: &ScanCtx) {
    if let Ok(version) = ctx.clamd.version().await {
        tracing::info!(
            clamd = %ctx.config.clamd_probe,
            %version,
            "clamd found: files are scanned from now on, and only clean ones served"
        );
        ctx.policy.set_found();
    }
}

/// Records in Raft that the cluster has a scanner (new blobs wait for a scan, wherever they
/// are stored) and queues the blobs stored unscanned, a batch per command. True once done.
async fn announce(ctx: &ScanCtx) -> bool {
    if ctx.meta.local().scanner_found() {
        return true;
    }
    let mut queued = 0;
    loop {
        match ctx.meta.propose(Command::ScannerFound).await {
            Ok(Outcome::Requeued(n)) => {
                queued += n;
                if n < model::RESCAN_PER_COMMAND as u64 {
                    tracing::info!(files = queued, "stored unscanned, now queued for a scan");
                    return true;
                }
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected answer to ScannerFound");
                return false;
            }
            Err(e) => {
                // Retried on the next round: until then, files from nodes with no scanner of
                // their own may still be stored unscanned (and are queued by the retry).
                tracing::warn!(error = %e, "recording that the cluster has a scanner failed");
                return false;
            }
        }
    }
}

fn candidates(ctx: &ScanCtx, in_flight: &HashSet<String>, n: usize) -> Vec<Candidate> {
    let now = now_ms();
    // The scan queue holds only blobs waiting or leased; look a little past `n` for ones not
    // already in flight here.
    ctx.meta
        .local()
        .scan_queue(n + in_flight.len())
        .into_iter()
        .map(|b| (model::blob_id(&b.owner, &b.blake3), b))
        .filter(|(k, b)| b.scan.leasable(now) && !in_flight.contains(k))
        .take(n)
        .map(|(k, b)| Candidate {
            blob: k,
            object_key: b.object_key,
            size: b.size,
        })
        .collect()
}

async fn scan_one(ctx: &ScanCtx, c: &Candidate) {
    let started = std::time::Instant::now();
    let verdict = if c.size > ctx.config.stream_max_bytes {
        ScanVerdict::Error {
            message: format!(
                "{} bytes is more than scan.stream_max_bytes ({})",
                c.size, ctx.config.stream_max_bytes
            ),
        }
    } else {
        let idle = Duration::from_secs(ctx.config.timeout_secs);
        let scanned = async {
            let body = ctx.store.get(&c.object_key, 0, c.size).await?;
            ctx.clamd.scan(body, idle).await
        }
        .await;
        match scanned {
            Ok(Finding::Clean) => ScanVerdict::Clean,
            Ok(Finding::Infected(signature)) => ScanVerdict::Infected { signature },
            Ok(Finding::Error(message)) => ScanVerdict::Error { message },
            Err(e) => {
                // clamd or the store failed: give the blob back for a later scan.
                tracing::warn!(blob = %c.blob, error = %e, "scan failed; will retry");
                ScanVerdict::Released
            }
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let label = match &verdict {
        ScanVerdict::Clean => "clean",
        ScanVerdict::Infected { .. } => "infected",
        ScanVerdict::Error { .. } => "error",
        ScanVerdict::Released => "released",
    };
    metrics::counter!("wharf_scans_total", "verdict" => label).increment(1);
    metrics::histogram!("wharf_scan_duration_seconds").record(secs);
    match &verdict {
        ScanVerdict::Infected { signature } => {
            tracing::warn!(blob = %c.blob, %signature, "infected: quarantining")
        }
        ScanVerdict::Clean => tracing::info!(
            blob = %c.blob,
            mb_per_s = c.size as f64 / secs.max(1e-9) / 1e6,
            "scanned clean"
        ),
        _ => {}
    }
    let done = Command::ScanFinished {
        blob: c.blob.clone(),
        holder: ctx.meta.node_id,
        verdict,
        now: now_ms(),
    };
    if let Err(e) = ctx.meta.propose(done).await {
        tracing::warn!(blob = %c.blob, error = %e, "recording a scan failed (lease lost?)");
    }
}

/// Infected objects moved per round at most.
const QUARANTINE_BATCH: usize = 256;

/// Moves (or deletes) the objects of infected blobs, then records it.
async fn quarantine(ctx: &ScanCtx) {
    let infected: Vec<(String, String)> = ctx
        .meta
        .local()
        .quarantine_queue(QUARANTINE_BATCH)
        .into_iter()
        .filter(|b| matches!(b.scan, ScanState::Infected { .. }) && !b.quarantined)
        .map(|b| (model::blob_id(&b.owner, &b.blake3), b.object_key))
        .collect();
    for (blob, key) in infected {
        let moved = if ctx.config.quarantine == "delete" {
            ctx.store.delete(&key).await.map(|_| String::new())
        } else {
            let to = format!("quarantine/{key}");
            ctx.store.rename(&key, &to).await.map(|_| to)
        };
        let res = match moved {
            Ok(object_key) => ctx
                .meta
                .propose(Command::BlobQuarantined {
                    blob: blob.clone(),
                    object_key,
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = res {
            tracing::warn!(%blob, error = %e, "quarantine failed; will retry");
        }
    }
}
