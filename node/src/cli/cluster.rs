//! `wharf cluster`: make a cluster, print join tokens, show status, remove and promote nodes.

use std::time::Duration;

use clap::Subcommand;
use wharf_cluster::ClusterStatus;

use crate::cli::{block_on, Api, Common};

#[derive(clap::Args, Clone, Copy)]
pub(super) struct TokenArgs {
    /// How many joins the token admits.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

impl TokenArgs {
    fn spec(self) -> crate::TokenSpec {
        crate::TokenSpec {
            uses: self.uses,
            ttl: self.ttl,
        }
    }
}

#[derive(Subcommand)]
pub(super) enum TokenAction {
    /// The tokens that can still admit a node (their secrets are not kept).
    List {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it admits no node from then on.
    Revoke {
        #[command(flatten)]
        api: Api,
        id: String,
    },
}

#[derive(Subcommand)]
pub(super) enum ClusterCommand {
    /// Make a new cluster's CA, node certificate and secrets in the data dir; print a first
    /// join token (recorded in the cluster when the node first starts).
    Init {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        spec: TokenArgs,
    },
    /// Start a new one-node cluster from a metadata backup (`wharf admin backup`) in a new
    /// data dir; other nodes then join it. The objects stay where the store keeps them.
    Restore {
        #[command(flatten)]
        common: Common,
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: std::path::PathBuf,
    },
    /// Make a join token (printed once), or list or revoke them.
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
        #[command(flatten)]
        api: Api,
        #[command(flatten)]
        spec: TokenArgs,
    },
    /// Joining nodes waiting for a holder of the CA key to sign their certificate.
    Requests {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        json: bool,
    },
    /// Sign a waiting node's certificate with a CA key kept away from the cluster.
    SignCsr {
        #[command(flatten)]
        api: Api,
        /// The node id of the waiting request (`wharf cluster requests`).
        node_id: u64,
        /// The CA's private key (PEM), e.g. a copy of a founding node's `tls/ca.key`.
        #[arg(long, value_name = "FILE")]
        ca_key: std::path::PathBuf,
    },
    /// Make a new cluster CA in DIR (ca.pem, ca.key): the first step of rotating the CA.
    /// Then, with every node stopped, `wharf cluster reissue` on each; then start them.
    NewCa {
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Make this (stopped) node's certificate again under the CA in DIR, for the same key and
    /// node id, and trust only that CA from now on.
    Reissue {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "DIR")]
        ca_dir: std::path::PathBuf,
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
        ClusterCommand::Init { common, spec } => {
            let config = common.load()?;
            config.validate()?;
            let token = crate::init_cluster(
                &config.node.data_dir,
                config.node.id,
                &config.auth,
                Some(spec.spec()),
            )?;
            println!("{}", token.unwrap_or_default());
            Ok(())
        }
        ClusterCommand::Restore { common, from } => {
            let config = common.load()?;
            config.validate()?;
            block_on(super::restore::restore(&config, &from))
        }
        ClusterCommand::NewCa { out } => {
            if out.join("ca.key").exists() {
                anyhow::bail!("{} already holds a CA key", out.display());
            }
            std::fs::create_dir_all(&out)?;
            crate::private_dir(&out)?;
            let (ca_pem, ca_key) = wharf_cluster::tls::new_ca()?;
            wharf_cluster::tls::write_file(&out.join("ca.key"), &ca_key, true)?;
            wharf_cluster::tls::write_file(&out.join("ca.pem"), &ca_pem, false)?;
            println!(
                "a new cluster CA is in {}; stop every node, run `wharf cluster reissue --ca-dir {}` \
                 on each, start them, then make new join tokens",
                out.display(),
                out.display()
            );
            Ok(())
        }
        ClusterCommand::Reissue { common, ca_dir } => {
            let config = common.load()?;
            let data_dir = &config.node.data_dir;
            if !wharf_cluster::Identity::exists(data_dir) {
                anyhow::bail!("{} holds no cluster", data_dir.display());
            }
            let read = |f: &str| {
                let p = ca_dir.join(f);
                std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
            };
            let mut identity = wharf_cluster::Identity::load(data_dir)?;
            let node_id = identity
                .node_id()
                .ok_or_else(|| anyhow::anyhow!("this node's certificate names no node id"))?;
            identity.reissue_under(node_id, &read("ca.pem")?, &read("ca.key")?)?;
            identity.save(data_dir)?;
            println!("node {node_id}: certificate made again under the new CA");
            Ok(())
        }
        ClusterCommand::Token {
            action: None,
            api,
            spec,
        } => block_on(async {
            api.require_cluster()?;
            let body = serde_json::json!({
                "uses": spec.uses,
                "ttl_secs": spec.ttl.as_secs().max(1),
            });
            let url = api.url("/v1/cluster/tokens");
            let resp = api
                .send(reqwest::Client::new().post(url).json(&body))
                .await?;
            let v: serde_json::Value = resp.json().await?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            Ok(())
        }),
        ClusterCommand::Token {
            action: Some(TokenAction::List { api, json }),
            ..
        } => block_on(async {
            let v = get_json(&api, "/v1/cluster/tokens").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{:<18} {:>9}  EXPIRES", "ID", "USES LEFT");
            for t in v["tokens"].as_array().into_iter().flatten() {
                let expires = t["expires_at"].as_u64().unwrap_or(0);
                let at = std::time::UNIX_EPOCH + Duration::from_millis(expires);
                println!(
                    "{:<18} {:>9}  {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["uses_left"],
                    humantime::format_rfc3339_seconds(at)
                );
            }
            Ok(())
        }),
        ClusterCommand::Token {
            action: Some(TokenAction::Revoke { api, id }),
            ..
        } => block_on(async {
            let url = api.url(&format!("/v1/cluster/tokens/{id}"));
            api.send(reqwest::Client::new().delete(url)).await?;
            println!("token {id} revoked");
            Ok(())
        }),
        ClusterCommand::Requests { api, json } => block_on(async {
            let v = get_json(&api, "/v1/cluster/requests").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{:<8} {:<22} {:<22}", "NODE", "PEER", "HTTP");
            for r in v["requests"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<22} {:<22}",
                    r["node_id"],
                    r["peer_addr"].as_str().unwrap_or_default(),
                    r["http_addr"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }),
        ClusterCommand::SignCsr {
            api,
            node_id,
            ca_key,
        } => block_on(async {
            let key = std::fs::read_to_string(&ca_key)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", ca_key.display()))?;
            let v = get_json(&api, "/v1/cluster/requests").await?;
            let Some(csr) = v["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["node_id"].as_u64() == Some(node_id))
                .and_then(|r| r["csr_pem"].as_str())
            else {
                anyhow::bail!("no node {node_id} is waiting for a certificate");
            };
            let cert_pem = wharf_cluster::tls::sign_csr(&key, csr, node_id)?;
            let url = api.url(&format!("/v1/cluster/nodes/{node_id}/certificate"));
            let body = serde_json::json!({ "cert_pem": cert_pem });
            api.send(reqwest::Client::new().put(url).json(&body))
                .await?;
            println!("signed the certificate of node {node_id}");
            Ok(())
        }),
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

async fn get_json(api: &Api, path: &str) -> anyhow::Result<serde_json::Value> {
    let resp = api.send(reqwest::Client::new().get(api.url(path))).await?;
    Ok(resp.json().await?)
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
