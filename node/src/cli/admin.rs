//! `wharf admin`: administration through a node's HTTP API (rescans, usage, audit log).

use clap::Subcommand;

use crate::cli::{block_on, Api};

#[derive(Subcommand)]
pub(super) enum AdminCommand {
    /// Queue files for another virus scan (after a signature update).
    Rescan {
        #[command(flatten)]
        api: Api,
        /// Every clean, errored or unscanned file.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        all: bool,
        /// One file, by id.
        #[arg(long)]
        file: Option<String>,
    },
    /// What the cluster holds: users, files, bytes, uploads in progress, per tier.
    Usage {
        #[command(flatten)]
        api: Api,
        /// Print the JSON answer (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Users with their usage, most bytes used first (or by id).
    Users {
        #[command(flatten)]
        api: Api,
        /// `used` (most bytes first) or `id`.
        #[arg(long, default_value = "used", value_parser = ["used", "id"])]
        sort: String,
        /// Users to print at most (pages of 1,000 are fetched as needed).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the users as JSON lines (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent backup of the metadata (a snapshot with its log index and a
    /// checksum) to FILE; `wharf cluster restore --from FILE` makes a new cluster of it.
    Backup {
        #[command(flatten)]
        api: Api,
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// The audit log, oldest first: uploads, downloads, renames, moves, deletes, shares and
    /// admin actions, with who, when, from where and through which node.
    Audit {
        #[command(flatten)]
        api: Api,
        /// Only what this user did, or what was done to their files.
        #[arg(long)]
        user: Option<String>,
        /// Only this action (`download` matches `download.api`, `download.link`, …).
        #[arg(long)]
        action: Option<String>,
        /// From this time on (RFC 3339, or Unix milliseconds).
        #[arg(long)]
        since: Option<String>,
        /// Before this time.
        #[arg(long)]
        until: Option<String>,
        /// Records to print at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the records as JSON lines (for scripts).
        #[arg(long)]
        json: bool,
    },
}

impl AdminCommand {
    fn api(&mut self) -> &mut Api {
        match self {
            AdminCommand::Rescan { api, .. }
            | AdminCommand::Usage { api, .. }
            | AdminCommand::Users { api, .. }
            | AdminCommand::Backup { api, .. }
            | AdminCommand::Audit { api, .. } => api,
        }
    }
}

pub(super) fn admin_command(mut command: AdminCommand) -> anyhow::Result<()> {
    // Like the client commands: without `--token` or `WHARF_ADMIN_TOKEN`, `WHARF_TOKEN` (an
    // admin's) is used, else a short-lived admin token signed with the data dir's secret.
    let api = command.api();
    if api.token.is_none() {
        api.token = std::env::var("WHARF_TOKEN").ok().filter(|t| !t.is_empty());
    }
    match command {
        AdminCommand::Rescan { api, all, file } => block_on(async {
            let body = match file {
                Some(f) => serde_json::json!({ "file": f }),
                None => serde_json::json!({ "all": all }),
            };
            let resp = api
                .send(
                    reqwest::Client::new()
                        .post(api.url("/v1/admin/rescan"))
                        .json(&body),
                )
                .await?;
            let v: serde_json::Value = resp.json().await?;
            println!("{} file(s) queued for a scan", v["requeued"]);
            Ok(())
        }),
        AdminCommand::Usage { api, json } => block_on(async {
            let resp = api
                .send(reqwest::Client::new().get(api.url("/v1/admin/usage")))
                .await?;
            let v: serde_json::Value = resp.json().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print_usage(&v);
            Ok(())
        }),
        AdminCommand::Users {
            api,
            sort,
            limit,
            json,
        } => block_on(async {
            if !json {
                println!(
                    "{:<24} {:<8} {:>14} {:>14} {:>14} {:>9} {:>7}",
                    "USER", "TIER", "USED", "RESERVED", "QUOTA", "FILES", "UPLOADS"
                );
            }
            let query = vec![("sort", sort)];
            pages(&api, "/v1/admin/users", "users", query, limit, |u| {
                if json {
                    println!("{u}");
                    return;
                }
                println!(
                    "{:<24} {:<8} {:>14} {:>14} {:>14} {:>9} {:>7}",
                    u["id"].as_str().unwrap_or(""),
                    u["tier"].as_str().unwrap_or(""),
                    u["used"],
                    u["reserved"],
                    u["quota"],
                    u["files"],
                    u["uploads"]
                );
            })
            .await
        }),
        AdminCommand::Backup { api, out } => block_on(backup(api, out)),
        AdminCommand::Audit {
            api,
            user,
            action,
            since,
            until,
            limit,
            json,
        } => block_on(async {
            if !json {
                println!(
                    "{:<24} {:<14} {:<22} {:<16} {:<5} {:<38} DETAIL",
                    "AT", "ACTOR", "ACTION", "ADDRESS", "NODE", "TARGET"
                );
            }
            let query = [
                ("user", user),
                ("action", action),
                ("since", since),
                ("until", until),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            pages(&api, "/v1/admin/audit", "records", query, limit, |r| {
                if json {
                    println!("{r}");
                    return;
                }
                let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{:<24} {:<14} {:<22} {:<16} {:<5} {:<38} {}",
                    s("at"),
                    s("actor"),
                    s("action"),
                    s("addr"),
                    r["node"].as_u64().map_or("-".into(), |n| n.to_string()),
                    s("target"),
                    s("detail")
                );
            })
            .await
        }),
    }
}

/// Up to `limit` items of a paginated admin listing (`items` in each page), each handed to
/// `each`: pages of up to 1,000, following `next_cursor`. A sparse audit filter may answer
/// short pages (each request reads a bounded part of the log): the cursor goes on until
/// enough are printed or none is left.
async fn pages(
    api: &Api,
    path: &str,
    items: &str,
    query: Vec<(&'static str, String)>,
    limit: usize,
    mut each: impl FnMut(&serde_json::Value),
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut printed = 0usize;
    while printed < limit {
        let mut q = query.clone();
        q.push(("limit", (limit - printed).min(1000).to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let resp = api.send(client.get(api.url(path)).query(&q)).await?;
        let v: serde_json::Value = resp.json().await?;
        for item in v[items].as_array().into_iter().flatten() {
            printed += 1;
            each(item);
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    Ok(())
}

/// The answer of `GET /v1/admin/usage` as a table, one row per tier and one for all.
fn print_usage(v: &serde_json::Value) {
    let row = |name: &str, t: &serde_json::Value| {
        println!(
            "{:<8} {:>9} {:>11} {:>16} {:>16} {:>8}",
            name, t["users"], t["files"], t["used"], t["reserved"], t["uploads"]
        );
    };
    println!(
        "{:<8} {:>9} {:>11} {:>16} {:>16} {:>8}",
        "TIER", "USERS", "FILES", "USED", "RESERVED", "UPLOADS"
    );
    if let Some(tiers) = v["tiers"].as_object() {
        for (name, t) in tiers {
            row(name, t);
        }
    }
    let all = serde_json::json!({
        "users": v["users"], "files": v["files"], "used": v["used"],
        "reserved": v["reserved"], "uploads": v["uploads_in_progress"],
    });
    row("all", &all);
    println!();
    println!("staging bytes: {}", v["staging_bytes"]);
    println!("scan backlog:  {}", v["scan_backlog"]);
    if v["complete"] == serde_json::Value::Bool(false) {
        println!("(still counting the users of an older data dir: the totals miss some)");
    }
}

/// `wharf admin backup`: the node's backup streamed to `out` (through a temporary name, with a
/// progress bar), checked whole against the checksum the node announced, then renamed.
async fn backup(api: Api, out: std::path::PathBuf) -> anyhow::Result<()> {
    use anyhow::Context;
    use futures::StreamExt;
    use std::io::Write;
    let resp = api
        .send(reqwest::Client::new().get(api.url("/v1/admin/backup")))
        .await?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (index, announced) = (
        header("x-wharf-backup-index"),
        header("x-wharf-backup-blake3"),
    );
    let bar = indicatif::ProgressBar::new(resp.content_length().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template"),
    );
    let tmp = out.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the backup stream broke off")?;
        file.write_all(&chunk)?;
        bar.inc(chunk.len() as u64);
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    let (_, hash) = wharf_raft::store::backup::read(&tmp, None)
        .with_context(|| format!("checking {}", tmp.display()))?;
    if hash != announced {
        anyhow::bail!(
            "the backup's checksum {hash} is not the one the node announced ({announced})"
        );
    }
    std::fs::rename(&tmp, &out)?;
    println!(
        "backup of the metadata at log index {index} (blake3 {hash}, {} bytes) written to {}",
        std::fs::metadata(&out)?.len(),
        out.display()
    );
    Ok(())
}
