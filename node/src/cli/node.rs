//! `wharf node start`: run a node until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;

use crate::cli::Common;

#[derive(Subcommand)]
pub(super) enum NodeCommand {
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

pub(super) fn node_command(command: NodeCommand) -> anyhow::Result<()> {
    match command {
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
        } => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                // Colour only for a person at a terminal, never into a file or a pipe.
                .with_ansi(std::io::stderr().is_terminal())
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
            let ended = rt.block_on(async move {
                let node = tokio::spawn(crate::run(config, shutdown_signal()));
                if init {
                    // Once the node made or opened its cluster, say how others join it.
                    for _ in 0..600 {
                        if let Ok(t) = crate::join_token(&data_dir, Duration::from_secs(86400)) {
                            eprintln!("join other nodes with: wharf node start --join <this node's peer address> --token {t}");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                node.await?
            });
            // Blocking work still running (a file read for a client that went away) must not
            // keep the process from exiting.
            rt.shutdown_timeout(Duration::from_secs(1));
            ended
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
