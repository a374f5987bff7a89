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
        #[arg(long, env = "WHARF_CLUSTER_JOIN")]
        join: Option<String>,
        /// Join token, from `wharf cluster token`. Other users of the machine can read a
        /// command line: prefer --token-file or the environment variable.
        #[arg(long, env = "WHARF_CLUSTER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file holding the join token.
        #[arg(long, env = "WHARF_CLUSTER_TOKEN_FILE", conflicts_with = "token")]
        token_file: Option<String>,
        /// Join as a learner (promote later with `wharf cluster promote`).
        #[arg(long)]
        learner: bool,
        /// Make a new cluster with a first join token for other nodes, written to
        /// `<data-dir>/join-token` (readable by its owner only).
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
            token_file,
            learner,
            init,
        } => {
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
            if let Some(f) = token_file {
                config.cluster.token_file = f;
            }
            if !config.cluster.join.is_empty()
                && config.cluster.token.is_empty()
                && config.cluster.token_file.is_empty()
            {
                anyhow::bail!(
                    "--join needs a join token: --token-file FILE or WHARF_CLUSTER_TOKEN"
                );
            }
            init_logging(&config)?;
            config.cluster.learner |= learner;
            if init && !config.cluster.join.is_empty() {
                anyhow::bail!("--init makes a new cluster; --join enters an existing one");
            }
            if init {
                let data_dir = &config.node.data_dir;
                if wharf_cluster::Identity::exists(data_dir) {
                    anyhow::bail!(
                        "--init makes a new cluster; {} already belongs to one",
                        data_dir.display()
                    );
                }
                let spec = crate::TokenSpec {
                    uses: 10,
                    ttl: Duration::from_secs(86400),
                };
                let token =
                    crate::init_cluster(data_dir, config.node.id, &config.auth, Some(spec))?
                        .unwrap_or_default();
                let path = data_dir.join("join-token");
                wharf_cluster::tls::write_file(&path, &format!("{token}\n"), true)?;
                tracing::info!(
                    "made a new cluster; other nodes join it with `wharf node start --join <this node's peer address> --token-file {}` (10 joins within 24 h)",
                    path.display()
                );
            }
            let rt = tokio::runtime::Runtime::new()?;
            let ended = rt.block_on(async move { crate::run(config, shutdown_signal()).await });
            // Blocking work still running (a file read for a client that went away) must not
            // keep the process from exiting.
            rt.shutdown_timeout(Duration::from_secs(1));
            crate::telemetry::shutdown_traces();
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

/// Logs go to stderr at the level `WHARF_LOG` sets, as text (coloured only for a person at a
/// terminal) or as one JSON object a line (`log.format = "json"`, for a log pipeline, with the
/// request span's fields: its `trace_id` when traces are on). With `tracing.otlp_endpoint`,
/// spans are exported over OTLP too.
fn init_logging(config: &crate::config::Config) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.log.format {
        crate::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        crate::config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    // Spans go out whatever the log level: wharf's own, at info.
    let traces = crate::telemetry::traces(&config.tracing, &config.node.http_addr.to_string())?
        .map(|l| {
            l.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("wharf_node", tracing::Level::INFO)
                    .with_target("wharf_cluster", tracing::Level::INFO),
            )
        });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}
