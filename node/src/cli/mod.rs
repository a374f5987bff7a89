//! The `wharf` command: run a node, issue tokens.
//!
//! The `wharf` binary (src/main.rs) only calls [`main`]. Here are the command line and the
//! pieces every command shares; each command family is in its own module: `node` (`wharf node
//! start`), `token` (`wharf token issue`), `cluster`, `admin`, and [`client`] (put, get,
//! ls, rm, status).

mod admin;
pub mod client;
mod cluster;
mod node;
mod restore;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use wharf_raft::model::Tier;

use crate::auth::Keys;
use crate::config::Config;
use admin::AdminCommand;
use client::ClientArgs;
use cluster::ClusterCommand;
use node::NodeCommand;
use token::TokenCommand;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "wharf: a clustered, resumable file-upload service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run and manage a node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Client tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Form and inspect a cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Upload files (resumable: run it again after an interruption).
    Put {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Chunks in flight.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Print the whole file record instead of its id.
        #[arg(long)]
        json: bool,
    },
    /// Download a file (ranges in parallel, BLAKE3 verified).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        file_id: String,
        /// Where to write it (default: the file's name, in this directory).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Bytes per ranged read.
        #[arg(long, value_name = "BYTES", default_value_t = wharf_client::DOWNLOAD_PIECE,
              value_parser = clap::value_parser!(u64).range(1..))]
        range_size: u64,
    },
    /// List your files.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Move a file to the trash (`DELETE /v1/trash/{id}` deletes it for good).
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        file_id: String,
    },
    /// An upload's state: received and missing chunks.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        upload_id: String,
    },
    /// Your unfinished uploads (every upload with --all), oldest first.
    Uploads {
        #[command(flatten)]
        client: ClientArgs,
        /// Stored, aborted and expired ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Follow your events live (uploads, progress, scans, deletions, usage), one per line;
    /// a broken stream resumes on the next node without a gap.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// Start after this event id (default: from now).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// Print each event's JSON as it came.
        #[arg(long)]
        json: bool,
    },
    /// Abort an unfinished upload: its reserved bytes and its slot are freed.
    Abort {
        #[command(flatten)]
        client: ClientArgs,
        upload_id: String,
    },
}

/// How the operator commands reach the cluster: any node's HTTP API with an admin token.
#[derive(Args)]
struct Api {
    #[command(flatten)]
    common: Common,
    /// A node's HTTP URL. Default: the address recorded in the data dir named by --data-dir,
    /// else WHARF_ADDR (its first http:// entry), else the one recorded in ./wharf-data (or the
    /// config's data dir), else http://127.0.0.1:7070.
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// An admin token; without one, a short-lived one is signed with the data dir's secret.
    #[arg(long, env = "WHARF_ADMIN_TOKEN")]
    token: Option<String>,
}

impl Api {
    /// Fails as the data dir's own commands did when the data dir names no cluster.
    fn require_cluster(&self) -> anyhow::Result<()> {
        if self.node.is_some() || self.common.data_dir.is_none() {
            return Ok(());
        }
        let config = self.common.load()?;
        if !wharf_cluster::Identity::exists(&config.node.data_dir) {
            anyhow::bail!(
                "{} holds no cluster: run `wharf cluster init` or start the node once",
                config.node.data_dir.display()
            );
        }
        Ok(())
    }

    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let config = self.common.load()?;
        if config.auth.external() {
            anyhow::bail!(
                "this cluster takes tokens from its identity provider (auth.jwks_file or \
                 auth.jwks_url): pass an admin token from it with --token or WHARF_ADMIN_TOKEN"
            );
        }
        let keys = Keys::load_or_create(&config.auth.jwt_secret, &config.node.data_dir)
            .context("loading the token secret (or pass --token)")?;
        keys.issue("wharf-operator", Tier::Admin, Duration::from_secs(300))
    }

    /// The node to talk to: `--node`; else the node whose data dir was named (`--data-dir`: a
    /// named data dir names its node, whatever WHARF_ADDR a shell kept from client commands);
    /// else WHARF_ADDR's first `http(s)://` entry; else the default data dir's node; else the
    /// default address.
    fn base(&self) -> String {
        if let Some(n) = &self.node {
            return n.trim_end_matches('/').to_string();
        }
        let recorded = || {
            self.common
                .load()
                .ok()
                .and_then(|c| crate::Listening::read(&c.node.data_dir))
                .map(|l| format!("http://{}", l.http))
        };
        if self.common.data_dir.is_some() {
            if let Some(a) = recorded() {
                return a;
            }
        }
        let from_env = std::env::var("WHARF_ADDR").ok().and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|a| a.starts_with("http://") || a.starts_with("https://"))
                .map(|a| a.trim_end_matches('/').to_string())
        });
        if let Some(a) = from_env {
            return a;
        }
        recorded().unwrap_or_else(|| "http://127.0.0.1:7070".into())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("{status}: {body}");
        }
        Ok(resp)
    }
}

#[derive(Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (Raft log, staging, local objects, secrets).
    #[arg(long, env = "WHARF_NODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            config.node.data_dir = d.clone();
        }
        Ok(config)
    }
}

/// Runs the command line: errors print as their chain of causes on one line (`Error: a: b`),
/// never as a backtrace (which `RUST_BACKTRACE` would add to `anyhow`'s `Debug`), and exit 1.
pub fn run() -> std::process::ExitCode {
    match main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node { command } => node::node_command(command),
        Command::Token { command } => token::token_command(command),
        Command::Cluster { command } => cluster::cluster_command(command),
        Command::Put {
            client,
            files,
            parallel,
            json,
        } => block_on(client::put(&client, &files, parallel, json)),
        Command::Get {
            client,
            file_id,
            output,
            parallel,
            range_size,
        } => block_on(client::get(&client, &file_id, output, parallel, range_size)),
        Command::Ls { client, json } => block_on(client::ls(&client, json)),
        Command::Rm { client, file_id } => block_on(client::rm(&client, &file_id)),
        Command::Status { client, upload_id } => block_on(client::status(&client, &upload_id)),
        Command::Uploads { client, all, json } => block_on(client::uploads(&client, all, json)),
        Command::Abort { client, upload_id } => block_on(client::abort(&client, &upload_id)),
        Command::Watch {
            client,
            after,
            count,
            json,
        } => block_on(client::watch(&client, after, count, json)),
        Command::Admin { command } => admin::admin_command(command),
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(f)
}
