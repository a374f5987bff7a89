//! The `wharf` command: run a node, issue tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use wharf_node::auth::Keys;
use wharf_node::client_cli::{self, ClientArgs};
use wharf_node::config::Config;
use wharf_raft::model::Tier;

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

#[derive(Subcommand)]
enum AdminCommand {
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
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Make a new cluster's CA, node certificate and secrets in the data dir; print a join token.
    Init {
        #[command(flatten)]
        common: Common,
        /// How long the printed join token is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print a new join token (run where a member's data dir is).
    Token {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Nodes, roles, leader, term, log and applied index, reachability.
    Status {
        #[command(flatten)]
        api: Api,
        /// Print the JSON of GET /v1/cluster/status.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the cluster (its id is never reused).
    Remove {
        #[command(flatten)]
        api: Api,
        node_id: u64,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        api: Api,
        node_id: u64,
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

#[derive(Subcommand)]
enum NodeCommand {
    /// Start a node (a single-node cluster on first start, with no configuration at all).
    Start {
        #[command(flatten)]
        common: Common,
        /// Address of the HTTP API.
        #[arg(long, env = "WHARF_NODE_HTTP_ADDR")]
        http_addr: Option<SocketAddr>,
        /// Address (UDP) of the client QUIC endpoint.
        #[arg(long, env = "WHARF_NODE_QUIC_ADDR")]
        quic_addr: Option<SocketAddr>,
        /// Address of the gRPC endpoint for peers.
        #[arg(long, env = "WHARF_CLUSTER_PEER_ADDR")]
        peer_addr: Option<SocketAddr>,
        /// What peers dial to reach this node (defaults to the bound peer address).
        #[arg(long, env = "WHARF_CLUSTER_ADVERTISE_ADDR")]
        advertise_addr: Option<String>,
        /// Join the cluster through this member's peer address (first start only).
        #[arg(long, env = "WHARF_CLUSTER_JOIN", requires = "token")]
        join: Option<String>,
        /// Join token, from `wharf cluster token` on a member.
        #[arg(long, env = "WHARF_CLUSTER_TOKEN")]
        token: Option<String>,
        /// Join as a learner (promote later with `wharf cluster promote`).
        #[arg(long)]
        learner: bool,
        /// Print a join token for other nodes once this one is up.
        #[arg(long)]
        init: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a bearer token for a user, signed with the cluster's secret.
    Issue {
        #[command(flatten)]
        common: Common,
        /// User id (1 to 128 characters of A-Z a-z 0-9 . _ @ -).
        #[arg(long)]
        user: String,
        #[arg(long, value_enum, default_value_t = TierArg::Basic)]
        tier: TierArg,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
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

#[derive(Clone, Copy, ValueEnum)]
enum TierArg {
    Basic,
    Premium,
    Admin,
}

impl From<TierArg> for Tier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Basic => Tier::Basic,
            TierArg::Premium => Tier::Premium,
            TierArg::Admin => Tier::Admin,
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node {
            command:
                NodeCommand::Start {
                    common,
                    http_addr,
                    quic_addr,
                    peer_addr,
                    advertise_addr,
                    join,
                    token,
                    learner,
                    init,
                },
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                        .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let mut config = common.load()?;
            if let Some(a) = http_addr {
                config.node.http_addr = a;
            }
            if let Some(a) = quic_addr {
                config.node.quic_addr = a;
            }
            if let Some(a) = peer_addr {
                config.cluster.peer_addr = a;
            }
            if let Some(a) = advertise_addr {
                config.cluster.advertise_addr = a;
            }
            if let Some(j) = join {
                config.cluster.join = j;
            }
            if let Some(t) = token {
                config.cluster.token = t;
            }
            config.cluster.learner |= learner;
            if init && !config.cluster.join.is_empty() {
                anyhow::bail!("--init makes a new cluster; --join enters an existing one");
            }
            let data_dir = config.node.data_dir.clone();
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let node = tokio::spawn(wharf_node::run(config, shutdown_signal()));
                if init {
                    // Once the node made or opened its cluster, say how others join it.
                    for _ in 0..600 {
                        if let Ok(t) = wharf_node::join_token(&data_dir, Duration::from_secs(86400)) {
                            eprintln!("join other nodes with: wharf node start --join <this node's peer address> --token {t}");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                node.await?
            })
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    common,
                    user,
                    tier,
                    ttl,
                },
        } => {
            let config = common.load()?;
            config.validate()?;
            let keys = Keys::load_or_create(&config.auth.jwt_secret, &config.node.data_dir)
                .context("loading the token secret")?;
            println!("{}", keys.issue(&user, tier.into(), ttl)?);
            Ok(())
        }
        Command::Cluster { command } => cluster_command(command),
        Command::Put {
            client,
            files,
            parallel,
            json,
        } => block_on(client_cli::put(&client, &files, parallel, json)),
        Command::Get {
            client,
            file_id,
            output,
            parallel,
        } => block_on(client_cli::get(&client, &file_id, output, parallel)),
        Command::Ls { client, json } => block_on(client_cli::ls(&client, json)),
        Command::Rm { client, file_id } => block_on(client_cli::rm(&client, &file_id)),
        Command::Status { client, upload_id } => block_on(client_cli::status(&client, &upload_id)),
        Command::Admin {
            command: AdminCommand::Rescan { api, all, file },
        } => block_on(async {
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
    }
}

fn cluster_command(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { common, ttl } => {
            let config = common.load()?;
            config.validate()?;
            wharf_node::init_cluster(
                &config.node.data_dir,
                config.node.id,
                &config.auth.jwt_secret,
            )?;
            println!("{}", wharf_node::join_token(&config.node.data_dir, ttl)?);
            Ok(())
        }
        ClusterCommand::Token { common, ttl } => {
            let config = common.load()?;
            println!("{}", wharf_node::join_token(&config.node.data_dir, ttl)?);
            Ok(())
        }
        ClusterCommand::Status { api, json } => block_on(async {
            let resp = api
                .send(reqwest::Client::new().get(api.url("/v1/cluster/status")))
                .await?;
            let status: wharf_cluster::ClusterStatus = resp.json().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }),
        ClusterCommand::Remove { api, node_id } => block_on(async {
            let url = api.url(&format!("/v1/cluster/nodes/{node_id}"));
            api.send(reqwest::Client::new().delete(url)).await?;
            println!("node {node_id} removed");
            Ok(())
        }),
        ClusterCommand::Promote { api, node_id } => block_on(async {
            let url = api.url(&format!("/v1/cluster/nodes/{node_id}/promote"));
            api.send(reqwest::Client::new().post(url)).await?;
            println!("node {node_id} is a voter");
            Ok(())
        }),
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(f)
}

fn print_status(s: &wharf_cluster::ClusterStatus) {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "leader: {}   term: {}",
        s.leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        s.term
    );
    println!(
        "{:<4} {:<12} {:<6} {:<22} {:<22} {:>5} {:>9} {:>9}",
        "ID", "ROLE", "VOTER", "HTTP", "PEER", "TERM", "LAST LOG", "APPLIED"
    );
    for n in &s.nodes {
        println!(
            "{:<4} {:<12} {:<6} {:<22} {:<22} {:>5} {:>9} {:>9}",
            n.id,
            n.role,
            if n.voter { "yes" } else { "no" },
            n.http_addr,
            n.peer_addr,
            opt(n.term),
            opt(n.last_log_index),
            opt(n.applied_index)
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
