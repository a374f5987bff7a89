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
    },
    /// List your files.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete a file.
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
}

/// How the operator commands reach the cluster: any node's HTTP API with an admin token.
#[derive(Args)]
struct Api {
    #[command(flatten)]
    common: Common,
    /// A node's HTTP address.
    #[arg(long, env = "WHARF_ADDR", default_value = "http://127.0.0.1:7070")]
    node: String,
    /// An admin token; without one, a short-lived one is signed with the data dir's secret.
    #[arg(long, env = "WHARF_ADMIN_TOKEN")]
    token: Option<String>,
}

impl Api {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let config = self.common.load()?;
        let keys = Keys::load_or_create(&config.auth.jwt_secret, &config.node.data_dir)
            .context("loading the token secret (or pass --token)")?;
        keys.issue("wharf-operator", Tier::Admin, Duration::from_secs(300))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.node.trim_end_matches('/'), path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(self.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.node))?;
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
        } => block_on(client::get(&client, &file_id, output, parallel)),
        Command::Ls { client, json } => block_on(client::ls(&client, json)),
        Command::Rm { client, file_id } => block_on(client::rm(&client, &file_id)),
        Command::Status { client, upload_id } => block_on(client::status(&client, &upload_id)),
        Command::Admin { command } => admin::admin_command(command),
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(f)
}
