//! The client commands of `wharf`: put, get, ls, rm, status. Built on wharf-client.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use wharf_client::{Client, Progress, ResumePoint, Trust};

/// Where the commands send requests, and as whom.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// A node's address, `quic://host:port` or `http://host:port` (the scheme picks the
    /// transport); repeat it to spread chunks over several nodes.
    /// Default: WHARF_ADDR (comma-separated), then the client config file, then
    /// http://127.0.0.1:7070.
    #[arg(long = "node", value_name = "URL")]
    pub nodes: Vec<String>,
    /// Bearer token; default: WHARF_TOKEN, then the client config file.
    #[arg(long, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA to pin for quic:// and https:// nodes (a node's `<data-dir>/tls/ca.pem`);
    /// default: WHARF_CA, then the client config file.
    #[arg(long, env = "WHARF_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from quic:// and https:// nodes (development only).
    #[arg(long)]
    pub insecure: bool,
}

/// `~/.config/wharf/client.toml` (or `WHARF_CLIENT_CONFIG`): `nodes = [...]`, `token = "..."`,
/// `ca = "/path/to/ca.pem"`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn file_config() -> anyhow::Result<FileConfig> {
    let path = match std::env::var_os("WHARF_CLIENT_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home().map(|h| h.join(".config")))
        {
            Some(d) => d.join("wharf/client.toml"),
            None => return Ok(FileConfig::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl ClientArgs {
    pub fn client(&self, parallel: usize) -> anyhow::Result<Client> {
        let file = file_config()?;
        let mut nodes = self.nodes.clone();
        if nodes.is_empty() {
            if let Ok(v) = std::env::var("WHARF_ADDR") {
                nodes = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
        }
        if nodes.is_empty() {
            nodes = file.nodes;
        }
        if nodes.is_empty() {
            nodes = vec!["http://127.0.0.1:7070".into()];
        }
        let token = self.token.clone().or(file.token).context(
            "no token: pass --token, set WHARF_TOKEN, or put token in the client config",
        )?;
        let trust = match (self.insecure, self.ca.clone().or(file.ca)) {
            (true, _) => Trust::Insecure,
            (false, Some(ca)) => Trust::Ca(
                std::fs::read(&ca).with_context(|| format!("reading CA {}", ca.display()))?,
            ),
            (false, None) => Trust::Unset,
        };
        let mut c = Client::with_trust(nodes, token, trust)?;
        c.parallel = parallel.max(1);
        Ok(c)
    }
}

/// Resume state: which upload a file (by path, size and mtime) belongs to.
struct ResumeState {
    path: PathBuf,
    map: BTreeMap<String, ResumePoint>,
}

/// An entry of the resume file: an upload id alone (files written before creates carried a
/// kept idempotency key), or a [`ResumePoint`].
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Id(String),
    Point(ResumePoint),
}

impl ResumeState {
    fn load() -> Self {
        let dir = std::env::var_os("WHARF_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("wharf")))
            .or_else(|| home().map(|h| h.join(".local/state/wharf")))
            .unwrap_or_else(|| PathBuf::from(".wharf-state"));
        let path = dir.join("uploads.json");
        let stored: BTreeMap<String, Stored> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let map = stored
            .into_iter()
            .map(|(k, v)| {
                let point = match v {
                    Stored::Id(id) => ResumePoint {
                        upload_id: Some(id),
                        idempotency_key: None,
                    },
                    Stored::Point(p) => p,
                };
                (k, point)
            })
            .collect();
        Self { path, map }
    }

    fn key(file: &Path) -> anyhow::Result<String> {
        let meta =
            std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let canon = std::fs::canonicalize(file)?;
        Ok(format!("{}|{}|{}", canon.display(), meta.len(), mtime))
    }

    fn save(&self) -> anyhow::Result<()> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.map)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

fn bar(total: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}

fn progress(pb: &ProgressBar) -> Progress {
    let pb = pb.clone();
    Arc::new(move |done| pb.set_position(done))
}

pub async fn put(
    args: &ClientArgs,
    files: &[PathBuf],
    parallel: usize,
    json: bool,
) -> anyhow::Result<()> {
    let client = args.client(parallel)?;
    let mut state = ResumeState::load();
    for file in files {
        let key = ResumeState::key(file)?;
        let resume = state.map.get(&key).cloned();
        let size = std::fs::metadata(file)?.len();
        let pb = bar(size, &file.display().to_string());
        // The create's idempotency key is kept before it is sent, and the upload's id before
        // any chunk moves, so that a killed run resumes the same upload.
        let remember = |point: &ResumePoint| {
            state.map.insert(key.clone(), point.clone());
            if let Err(e) = state.save() {
                eprintln!("warning: cannot keep resume state: {e}");
            }
        };
        let upload = client.upload(file, resume.as_ref(), remember, Some(progress(&pb)));
        // Ctrl-C pauses: what the cluster acknowledged stays, and the next run resumes it.
        let outcome = tokio::select! {
            r = upload => r,
            _ = tokio::signal::ctrl_c() => {
                pb.abandon();
                eprintln!("paused; run the same command again to resume");
                std::process::exit(130);
            }
        };
        let done = outcome.with_context(|| format!("uploading {}", file.display()))?;
        pb.finish_and_clear();
        state.map.remove(&key);
        state.save()?;
        eprintln!(
            "{}: {} bytes, sent {} of {} chunks",
            file.display(),
            done.file.size,
            done.chunks_sent,
            done.chunks_total
        );
        if json {
            println!("{}", serde_json::to_string_pretty(&done.file)?);
        } else {
            println!("{}", done.file.id);
        }
    }
    Ok(())
}

pub async fn get(
    args: &ClientArgs,
    id: &str,
    out: Option<PathBuf>,
    parallel: usize,
    range_size: u64,
) -> anyhow::Result<()> {
    let mut client = args.client(parallel)?;
    client.piece_size = range_size;
    let record = client.file(id).await?;
    // The stored name is a name, never a path: keep only its last component.
    let dest = match out {
        Some(p) => p,
        None => PathBuf::from(
            Path::new(&record.name)
                .file_name()
                .context("the file has no usable name; pass -o")?,
        ),
    };
    let pb = bar(record.size, &record.name);
    client.download(id, &dest, Some(progress(&pb))).await?;
    pb.finish_and_clear();
    eprintln!(
        "{} ({} bytes, BLAKE3 verified)",
        dest.display(),
        record.size
    );
    Ok(())
}

pub async fn ls(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let files = args.client(1)?.list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&files)?);
        return Ok(());
    }
    println!("{:<36}  {:>12}  {:<9}  NAME", "ID", "SIZE", "SCAN");
    for f in files {
        println!("{:<36}  {:>12}  {:<9}  {}", f.id, f.size, f.scan, f.name);
    }
    Ok(())
}

pub async fn watch(
    args: &ClientArgs,
    after: Option<String>,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let client = args.client(1)?;
    let mut seen = 0u64;
    client
        .watch(after, |ev| {
            if json {
                println!("{}", ev.data);
            } else {
                println!("{}", event_line(ev));
            }
            seen += 1;
            count.is_none_or(|n| seen < n)
        })
        .await?;
    Ok(())
}

/// `ID  TYPE  what happened  (usage)`, for a person reading along.
fn event_line(ev: &wharf_client::ServerEvent) -> String {
    let d = &ev.data;
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| d[k].as_u64().unwrap_or(0);
    let what = match ev.event.as_str() {
        "upload.created" => format!("{} {} ({} bytes)", s("upload_id"), s("name"), n("size")),
        "upload.progress" => format!("{} {}/{} bytes", s("upload_id"), n("received"), n("size")),
        "upload.completed" => format!("{} -> file {} {}", s("upload_id"), s("file_id"), s("name")),
        "upload.aborted" | "upload.expired" => s("upload_id"),
        "file.scanned" => format!("{} {}", s("file_id"), s("scan")),
        "file.renamed" => format!("{} {}", s("file_id"), s("name")),
        "file.deleted" | "file.trashed" | "file.restored" => s("file_id"),
        "folder.trashed" | "folder.restored" => s("folder_id"),
        "file.version_restored" => format!("{} {}", s("file_id"), s("version_id")),
        "reset" => s("message"),
        _ => d.to_string(),
    };
    let usage = d
        .get("usage")
        .map(|u| {
            format!(
                "  (used {} + reserved {} of {})",
                u["used"], u["reserved"], u["quota"]
            )
        })
        .unwrap_or_default();
    format!("{:<24}  {:<16}  {what}{usage}", ev.id, ev.event)
}

pub async fn rm(args: &ClientArgs, id: &str) -> anyhow::Result<()> {
    args.client(1)?.delete(id).await?;
    eprintln!("moved {id} to the trash");
    Ok(())
}

pub async fn status(args: &ClientArgs, id: &str) -> anyhow::Result<()> {
    let s = args.client(1)?.status(id).await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}

pub async fn uploads(args: &ClientArgs, all: bool, json: bool) -> anyhow::Result<()> {
    let state = (!all).then_some("uploading");
    let uploads = args.client(1)?.uploads(state).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&uploads)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:<9}  {:>12}  {:>9}  {:<24}  NAME",
        "UPLOAD", "STATE", "SIZE", "CHUNKS", "EXPIRES"
    );
    for u in uploads {
        let chunks = if u.state == "uploading" {
            format!("{}/{}", u.received.len(), u.chunk_count)
        } else {
            "-".into()
        };
        println!(
            "{:<36}  {:<9}  {:>12}  {:>9}  {:<24}  {}",
            u.upload_id, u.state, u.size, chunks, u.expires_at, u.name
        );
    }
    Ok(())
}

pub async fn abort(args: &ClientArgs, id: &str) -> anyhow::Result<()> {
    args.client(1)?.abort(id).await?;
    eprintln!("aborted {id}");
    Ok(())
}
