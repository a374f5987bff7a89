//! `wharf-chaos`: puts a real wharf cluster through partitions, crashes, pauses and delays
//! while clients work, records a history, checks it, and writes a report.
//! See docs/CHAOS.md.

mod checker;
mod cluster;
mod history;
mod label;
mod nemesis;
mod netns;
mod proxy;
mod report;
mod share;
mod webhook;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::cluster::Cluster;
use crate::history::History;
use crate::workload::Clients;

/// The planted bugs of the `wharf-planted` build (node/src/planted.rs), and the checker that
/// must catch each.
const PLANTED: [(&str, &str, &str); 4] = [
    (
        "ack-before-commit",
        "durability",
        "a chunk is acknowledged before ChunkStaged is committed",
    ),
    (
        "skip-quota-reservation",
        "quota",
        "the state machine does not reserve quota; only a local pre-check runs",
    ),
    (
        "stale-reads",
        "linearizability",
        "GET /v1/files/{id} answers from the node's local state, without a read index",
    ),
    (
        "webhook-ack-unsent",
        "webhook",
        "the webhook delivery loop acknowledges every fifth entry's events without sending them",
    ),
];

#[derive(Parser)]
#[command(
    name = "wharf-chaos",
    version,
    about = "Chaos tests for a real wharf cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, run workloads under faults, check the history, write a report.
    Run(RunArgs),
    /// The bugs `--planted-bug` can plant, and the checker that must catch each.
    PlantedBugs,
    /// Print a run's history (history.jsonl) as Jepsen EDN.
    Edn { history: PathBuf },
    /// Check a recorded history again with the checkers that need only the history (quota,
    /// uniqueness, linearizability).
    Check { history: PathBuf },
    /// Print a run's checkers and succeed only if the run is invalid and CHECKER is one of the
    /// reasons (what CI asks of a planted bug). RUN: a verdict.json, a run's directory, or an
    /// `--out` directory holding one run.
    CaughtBy { checker: String, run: PathBuf },
    /// Print the fault schedule a seed gives (nodes numbered 1..N, as n1..nN), without running
    /// anything.
    Schedule {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "all")]
        nemesis: String,
        #[arg(long)]
        seed: u64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Comma-separated: kill, pause, restart, partition, oneway, delay, drop, membership,
    /// client-net; or `all`, or `none`.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Comma-separated: upload, quic-upload, quota, register; or `all`.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Every random choice (faults, their timing and targets, the workload) comes from it;
    /// default: from the clock (printed, so the run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Reports go to `<out>/<run>/`.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Plant a bug (see `planted-bugs`); runs the `wharf-planted` build.
    #[arg(long)]
    planted_bug: Option<String>,
    /// The wharf binary; default: `wharf` (or `wharf-planted`) next to this program.
    #[arg(long, env = "WHARF_CHAOS_BIN")]
    wharf: Option<PathBuf>,
    /// `proxy`: links cut and slowed by user-space proxies (no privileges needed). `netns`
    /// (root, Linux, nftables): every node in a network namespace of its own, links cut in
    /// the kernel (no delays there: the `delay` nemesis is left out, and `client-net` only
    /// drops).
    #[arg(long, default_value = "proxy", value_parser = ["proxy", "netns"])]
    net: String,
    /// How long liveness may take after the faults heal.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    liveness_bound: Duration,
}

fn pick(list: &str, all: &[&str], what: &str) -> anyhow::Result<Vec<String>> {
    if list == "all" {
        return Ok(all.iter().map(|s| s.to_string()).collect());
    }
    if list == "none" || list.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        if !all.contains(&item) {
            bail!("unknown {what} {item:?}; known: {}", all.join(", "));
        }
        out.push(item.to_string());
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::PlantedBugs => {
            for (name, checker, what) in PLANTED {
                println!("{name:<24} caught by {checker:<16} {what}");
            }
            Ok(())
        }
        Cmd::Edn { history } => {
            print!("{}", history::to_edn(&history::read_jsonl(&history)?));
            Ok(())
        }
        Cmd::Check { history } => {
            let events = history::read_jsonl(&history)?;
            let ops = checker::pair(&events);
            let mut out = BTreeMap::new();
            out.insert("quota", checker::quota(&ops));
            out.insert("uniqueness", checker::uniqueness(&ops));
            out.insert("linearizability", checker::linearizability(&ops));
            out.insert("share", share::check(&ops));
            let valid = out.values().all(|v| v.valid);
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "valid": valid, "checkers": out }))?
            );
            std::process::exit(if valid { 0 } else { 1 });
        }
        Cmd::CaughtBy { checker, run } => {
            let read = || -> anyhow::Result<(PathBuf, serde_json::Value)> {
                let path = find_verdict(&run)?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let verdict = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                Ok((path, verdict))
            };
            // 0 caught, 1 not caught, 2 no verdict to read.
            let (path, verdict) = read().unwrap_or_else(|e| {
                eprintln!("wharf-chaos: {e:#}");
                std::process::exit(2);
            });
            match report::caught_by(&verdict, &checker) {
                Ok(text) => {
                    print!("{text}");
                    Ok(())
                }
                Err(why) => {
                    print!("{why}");
                    println!(" ({})", path.display());
                    std::process::exit(1);
                }
            }
        }
        Cmd::Schedule {
            nodes,
            duration,
            nemesis,
            seed,
        } => {
            let nemeses = pick(&nemesis, &nemesis::ALL, "nemesis")?;
            let plan = nemesis::schedule(seed, duration, &nemeses, nodes);
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(())
        }
        Cmd::Run(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            let res = rt.block_on(run(args));
            rt.shutdown_timeout(Duration::from_secs(2));
            // 0 valid, 1 invalid, 2 the harness itself failed.
            std::process::exit(match res {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("wharf-chaos: {e:#}");
                    2
                }
            });
        }
    }
}

/// The verdict.json of `path`: the file itself, the one in a run's directory, or the one of
/// the only run in an `--out` directory.
fn find_verdict(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join("verdict.json").is_file() {
        return Ok(path.join("verdict.json"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .flatten()
        .map(|e| e.path().join("verdict.json"))
        .filter(|p| p.is_file())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no verdict.json in {} or a run under it", path.display()),
        n => bail!("{n} runs under {}; name one", path.display()),
    }
}

fn default_binary(planted: bool) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let name = if planted { "wharf-planted" } else { "wharf" };
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found; build it ({}) or pass --wharf",
            path.display(),
            if planted {
                "cargo build -p wharf-node --features planted-bugs --bin wharf-planted"
            } else {
                "cargo build -p wharf-node --bin wharf"
            }
        );
    }
    Ok(path)
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be 1 to 9 (3 or 5 make sense)");
    }
    let mut nemeses = pick(&args.nemesis, &nemesis::ALL, "nemesis")?;
    let use_netns = args.net == "netns";
    if use_netns && nemeses.iter().any(|n| n == "delay") {
        eprintln!(
            "wharf-chaos: --net netns cannot delay (no netem in this kernel); leaving `delay` out"
        );
        nemeses.retain(|n| n != "delay");
    }
    let workloads = pick(&args.workload, &workload::ALL, "workload")?;
    if let Some(bug) = &args.planted_bug {
        if !PLANTED.iter().any(|(n, _, _)| n == bug) {
            bail!("unknown planted bug {bug:?}; see `wharf-chaos planted-bugs`");
        }
    }
    let wharf = match &args.wharf {
        Some(p) => p.clone(),
        None => default_binary(args.planted_bug.is_some())?,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let name = format!(
        "{}-seed{seed}{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', ""),
        args.planted_bug
            .as_ref()
            .map(|b| format!("-{b}"))
            .unwrap_or_default()
    );
    let dir = args.out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    eprintln!("wharf-chaos: run {name} (seed {seed}) in {}", dir.display());

    let plan = nemesis::schedule(seed, args.duration, &nemeses, args.nodes);
    std::fs::write(
        dir.join("schedule.json"),
        serde_json::to_string_pretty(&plan)?,
    )?;

    let mut cluster = Cluster::start(
        &wharf,
        &dir.join("cluster"),
        args.nodes,
        seed,
        args.planted_bug.as_deref(),
        use_netns,
    )
    .await
    .context("starting the cluster")?;
    eprintln!(
        "wharf-chaos: {} nodes up; running for {:?}",
        args.nodes, args.duration
    );

    let history = History::new();
    let clients = Clients::new(cluster.client_urls(), history.clone())?;
    // The completions are checked against a webhook's deliveries: it is made first, so every
    // completion of the run (the register setup's too) comes after it.
    let receiver = if workloads.iter().any(|w| w == "upload") {
        let host: std::net::IpAddr = match &cluster.netns {
            Some(ns) => ns.gateway().into(),
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        Some(webhook::setup(&clients, host).await?)
    } else {
        None
    };
    let keys = if workloads.iter().any(|w| w == "register") {
        workload::register_setup(&clients).await?
    } else {
        Vec::new()
    };
    let until = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    let mut id = 0;
    let mut register_roles = workload::RegisterRole::all(args.nodes).into_iter();
    for w in &workloads {
        let n = match w.as_str() {
            "upload" => 3,
            "quota" | "quic-upload" => 1,
            "share" => 2,
            _ => register_roles.len(),
        };
        for _ in 0..n {
            id += 1;
            let c = clients.clone();
            tasks.push(match w.as_str() {
                "upload" => tokio::spawn(workload::upload_client(c, id, seed, until)),
                "quota" => tokio::spawn(workload::quota_client(c, id, seed, until)),
                "share" => tokio::spawn(share::share_client(c, id, seed, until)),
                "quic-upload" => tokio::spawn(workload::quic_upload_client(
                    c,
                    id,
                    seed,
                    until,
                    cluster.client_quic_urls(),
                    cluster.ca_pem()?,
                    dir.clone(),
                )),
                _ => tokio::spawn(workload::register_client(
                    c,
                    id,
                    register_roles
                        .next()
                        .unwrap_or(workload::RegisterRole::Mixed),
                    keys.clone(),
                    seed,
                    until,
                )),
            });
        }
    }

    let faults = tokio::select! {
        r = nemesis::run(&mut cluster, &plan, &history) => r?,
        _ = tokio::signal::ctrl_c() => {
            cluster.shutdown();
            bail!("interrupted; the cluster is stopped");
        }
    };
    for t in tasks {
        let _ = t.await;
    }
    eprintln!("wharf-chaos: workload done; healing and checking");
    cluster.heal_all()?;
    for i in 0..cluster.slots.len() {
        let _ = cluster.wait_ready(i, Duration::from_secs(60)).await;
    }

    let events = history.events();
    let ops = checker::pair(&events);
    let mut checkers = BTreeMap::new();
    checkers.insert(
        "liveness".to_string(),
        checker::liveness(&cluster, args.liveness_bound, &dir).await,
    );
    checkers.insert(
        "durability".into(),
        checker::durability(&cluster, &ops).await,
    );
    checkers.insert("quota".into(), checker::quota(&ops));
    checkers.insert("uniqueness".into(), checker::uniqueness(&ops));
    checkers.insert("share".into(), share::check(&ops));
    checkers.insert("linearizability".into(), {
        // A search, not I/O: off the async threads.
        let events = events.clone();
        tokio::task::spawn_blocking(move || checker::linearizability(&checker::pair(&events)))
            .await?
    });
    checkers.insert(
        "convergence".into(),
        checker::convergence(&cluster, Duration::from_secs(60)).await,
    );
    if let Some(r) = &receiver {
        checkers.insert(
            "webhook".into(),
            webhook::check(&clients, r, &ops, Duration::from_secs(60)).await,
        );
    }
    cluster.shutdown();

    history.write_jsonl(&dir.join("history.jsonl"))?;
    std::fs::write(dir.join("history.edn"), history::to_edn(&events))?;
    let run = json!({
        "name": name,
        "seed": seed,
        "nodes": args.nodes,
        "duration_secs": args.duration.as_secs(),
        "nemesis": nemeses.join(","),
        "workload": workloads.join(","),
        "planted_bug": args.planted_bug,
        "net": args.net,
        "wharf": wharf.display().to_string(),
        "replay": format!(
            "wharf-chaos run --net {} --nodes {} --duration {}s --nemesis {} --workload {} --seed {seed}{}",
            args.net,
            args.nodes,
            args.duration.as_secs(),
            if nemeses.is_empty() { "none".to_string() } else { nemeses.join(",") },
            workloads.join(","),
            args.planted_bug.as_ref().map(|b| format!(" --planted-bug {b}")).unwrap_or_default()
        ),
    });
    let verdict = report::verdict_json(&run, &checkers, &events, &faults);
    let title = format!(
        "wharf-chaos {name}: {}",
        if verdict["valid"] == true {
            "valid"
        } else {
            "INVALID"
        }
    );
    let svg = report::timeline(&events, &faults, args.nodes, &title);
    report::write_all(&dir, &verdict, &svg)?;
    print!("{}", report::summary(&verdict));
    println!("\nreport: {}", dir.display());
    keep_small(&dir);
    Ok(verdict["valid"] == true)
}

/// The cluster's data (objects, staging, Raft logs) is not part of the report; node logs are.
fn keep_small(dir: &Path) {
    let cluster = dir.join("cluster");
    if let Ok(entries) = std::fs::read_dir(&cluster) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
