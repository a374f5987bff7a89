//! `wharf cluster`: make a cluster, print join tokens, show status, remove and promote nodes.

use std::time::Duration;

use clap::Subcommand;
use wharf_cluster::ClusterStatus;

use crate::cli::{block_on, Api, Common};

#[derive(Subcommand)]
pub(super) enum ClusterCommand {
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
        /// Wait until there is a leader and at least N voters answer, caught up with it.
        #[arg(long, value_name = "N")]
        wait: Option<usize>,
        /// How long --wait waits before it gives up (exit 1).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
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

pub(super) fn cluster_command(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { common, ttl } => {
            let config = common.load()?;
            config.validate()?;
            crate::init_cluster(
                &config.node.data_dir,
                config.node.id,
                &config.auth.jwt_secret,
            )?;
            println!("{}", crate::join_token(&config.node.data_dir, ttl)?);
            Ok(())
        }
        ClusterCommand::Token { common, ttl } => {
            let config = common.load()?;
            println!("{}", crate::join_token(&config.node.data_dir, ttl)?);
            Ok(())
        }
        ClusterCommand::Status {
            api,
            json,
            wait,
            timeout,
        } => block_on(async {
            let status = match wait {
                None => fetch_status(&api).await?,
                Some(voters) => wait_for(&api, voters, timeout).await?,
            };
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

async fn fetch_status(api: &Api) -> anyhow::Result<ClusterStatus> {
    let resp = api
        .send(reqwest::Client::new().get(api.url("/v1/cluster/status")))
        .await?;
    Ok(resp.json().await?)
}

/// A voter this close to the leader's applied index has caught up (a busy cluster is never
/// exactly level).
const CAUGHT_UP_LAG: u64 = 64;

/// Voters that answer, follow the current leader in its term (a node just restarted still
/// reports its old term and role) and have caught up with it; none without a leader.
fn caught_up_voters(s: &ClusterStatus) -> usize {
    let leader = s
        .leader
        .and_then(|l| s.nodes.iter().find(|n| n.id == l && n.reachable))
        .and_then(|n| n.applied_index.map(|a| (n.id, a)));
    let Some((leader, lead)) = leader else {
        return 0;
    };
    s.nodes
        .iter()
        .filter(|n| n.voter && n.reachable && n.term == Some(s.term))
        .filter(|n| n.id == leader || n.role == "follower")
        .filter(|n| n.applied_index.is_some_and(|a| a + CAUGHT_UP_LAG >= lead))
        .count()
}

/// Polls the status until `voters` voters have caught up with a leader, or `timeout` passes.
async fn wait_for(api: &Api, voters: usize, timeout: Duration) -> anyhow::Result<ClusterStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = fetch_status(api).await;
        if let Ok(s) = &last {
            if caught_up_voters(s) >= voters {
                return last;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let waited = humantime::format_duration(timeout);
            return Err(match last {
                Ok(s) => {
                    print_status(&s);
                    anyhow::anyhow!(
                        "waited {waited} for a leader and {voters} voters caught up with it; {} are",
                        caught_up_voters(&s)
                    )
                }
                Err(e) => e.context(format!("waited {waited} for {voters} voters")),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_status(s: &ClusterStatus) {
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
