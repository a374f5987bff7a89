//! The `wharf` command: run a node, issue tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use wharf_node::auth::Keys;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node {
            command: NodeCommand::Start { common, http_addr },
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
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(wharf_node::run(config, shutdown_signal()))
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
