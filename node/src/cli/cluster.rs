//! `wharf cluster`: make a cluster, print join tokens, show status, remove and promote nodes.

use std::time::Duration;

use clap::Subcommand;

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
