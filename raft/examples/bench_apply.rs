//! The Raft apply path on its own: N `Command::StoreFile` commands (N=100000 by default; 1,000
//! owners `u0000`.., unique file ids and content hashes) applied to the on-disk state machine in
//! a temporary directory, 64 entries per `apply` call as the node's group commit hands them
//! over. Prints one line: commands/s (over the time spent in `apply` only; building the
//! commands is not counted), p50 and p99 of the per-batch apply latency, and the peak RSS of
//! the process (VmHWM).
//!   N=100000 cargo run --release -p wharf-raft --example bench_apply

use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use wharf_raft::model::{Command, Outcome, Tier, TierLimits};
use wharf_raft::{Options, Request, Response, TypeConfig};

const BATCH: u64 = 64;
const USERS: u64 = 1_000;
const LIMITS: TierLimits = TierLimits {
    quota: 1 << 50,
    max_file_size: 1 << 30,
    max_concurrent_uploads: 10,
};

/// The `i`th file: its owner goes round the users, its size and hash vary with `i`.
fn store_file(i: u64) -> Command {
    let file = format!("f{i:010}");
    Command::StoreFile {
        upload_id: format!("up-{file}"),
        file_id: file.clone(),
        owner: format!("u{:04}", i % USERS),
        tier: Tier::Basic,
        limits: LIMITS,
        name: format!("{file}.bin"),
        mime: None,
        size: 1_024 + (i * 7_919) % 1_000_000,
        blake3: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
        idempotency_key: None,
        object_key: format!("obj-{file}"),
        scan: false,
        now: 1_700_000_000_000 + i,
    }
}

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request(cmd)),
    }
}

/// VmHWM of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(n: u64) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_log, mut sm) = wharf_raft::open(dir.path(), &Options::default()).expect("open the store");
    let mut latencies = Vec::with_capacity(n.div_ceil(BATCH) as usize);
    let mut busy = Duration::ZERO;
    let mut next = 0;
    while next < n {
        let end = (next + BATCH).min(n);
        let entries: Vec<_> = (next..end).map(|i| entry(i + 1, store_file(i))).collect();
        let t0 = Instant::now();
        let answers = sm.apply(entries).await.expect("apply");
        let took = t0.elapsed();
        busy += took;
        latencies.push(took);
        assert_eq!(answers.len() as u64, end - next);
        for (i, a) in (next..end).zip(&answers) {
            match a {
                Response(Ok(Outcome::File(_))) => {}
                other => panic!("StoreFile #{i} was answered {other:?}"),
            }
        }
        next = end;
    }
    latencies.sort_unstable();
    println!(
        "commands/s {:.0}  p50 {:.3} ms  p99 {:.3} ms  peak RSS {:.1} MiB",
        n as f64 / busy.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        peak_rss_mib(),
    );
}

fn main() {
    let n = std::env::var("N")
        .ok()
        .map(|v| v.parse().expect("N: a number of commands"))
        .unwrap_or(100_000);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(n));
}
