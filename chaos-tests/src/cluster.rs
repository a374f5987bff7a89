//! The cluster under test: N real `wharf` processes with their own data dirs and ports, a
//! fault proxy on every directed node-to-node link (each node dials its peers through its own
//! proxies, `cluster.peer_routes`) and one in front of each node's HTTP port for the clients.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netns::Netns;
use crate::proxy::{Fault, Link, UdpLink};

/// The tier limits and chunk size the workloads count on.
pub const CHUNK_SIZE: u64 = 256 * 1024;
pub const BASIC_QUOTA: u64 = 4 << 20;
pub const JWT_SECRET: &str = "wharf-chaos-test-secret-not-for-production-use";

pub use crate::label::{node_label, node_number};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    Running,
    Paused,
    Dead,
}

pub struct Slot {
    /// The node's number (`node_number` of its slot), as the history and report name it.
    pub n: usize,
    pub http: SocketAddr,
    pub peer: SocketAddr,
    pub quic: SocketAddr,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub run: Run,
    /// Times this slot got a fresh node (membership changes).
    pub generation: u32,
}

pub struct Cluster {
    pub wharf: PathBuf,
    pub slots: Vec<Slot>,
    /// `peer_links[i][j]`: node i+1's traffic to node j+1 (None on the diagonal).
    pub peer_links: Vec<Vec<Option<Link>>>,
    /// The clients' links to each node's HTTP port.
    pub client_links: Vec<Link>,
    /// The clients' QUIC (UDP) links to each node.
    pub quic_links: Vec<UdpLink>,
    /// In the network-namespace mode: the namespaces, and no proxies.
    pub netns: Option<Netns>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

/// A loopback port free now (TCP and UDP) below the kernel's ephemeral range (32768 and up): a
/// node keeps its ports across restarts, and while it is down no outgoing connection or port-0
/// bind of another process is given them by chance.
fn free_addr() -> anyhow::Result<SocketAddr> {
    use rand::Rng;
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    anyhow::bail!("no free loopback port in 20000..32000")
}

impl Cluster {
    /// Starts `n` nodes: the first one alone, then the others joining it; all links healthy.
    pub async fn start(
        wharf: &Path,
        dir: &Path,
        n: usize,
        seed: u64,
        planted: Option<&str>,
        use_netns: bool,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let objects = dir.join("objects");
        let netns = if use_netns {
            Some(Netns::setup(n, seed)?)
        } else {
            None
        };
        let mut slots = Vec::new();
        for i in 1..=n {
            let (http, peer, quic) = match &netns {
                // Each node has an address of its own: fixed ports.
                Some(ns) => {
                    let ip = ns.ips[i - 1];
                    (
                        SocketAddr::new(ip.into(), 7070),
                        SocketAddr::new(ip.into(), 7080),
                        SocketAddr::new(ip.into(), 7071),
                    )
                }
                None => (free_addr()?, free_addr()?, free_addr()?),
            };
            slots.push(Slot {
                n: i,
                http,
                peer,
                quic,
                data_dir: dir.join(format!("n{i}")),
                child: None,
                run: Run::Dead,
                generation: 0,
            });
        }
        let mut peer_links = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for (j, to) in slots.iter().enumerate() {
                row.push(if i == j || netns.is_some() {
                    None
                } else {
                    let s = seed ^ ((i * 64 + j) as u64 + 1);
                    Some(Link::start(j + 1, to.peer, s).await?)
                });
            }
            peer_links.push(row);
        }
        let mut client_links = Vec::new();
        let mut quic_links = Vec::new();
        for s in slots.iter().filter(|_| netns.is_none()) {
            client_links.push(Link::start(s.n, s.http, seed ^ 0xc1).await?);
            quic_links.push(UdpLink::start(s.quic, seed ^ 0xc2 ^ s.n as u64).await?);
        }
        let mut env = vec![
            (
                "WHARF_LOG".to_string(),
                std::env::var("WHARF_CHAOS_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
            ("WHARF_AUTH_JWT_SECRET".into(), JWT_SECRET.into()),
            ("WHARF_STORE_PATH".into(), objects.display().to_string()),
            ("WHARF_UPLOAD_MIN_CHUNK_SIZE".into(), CHUNK_SIZE.to_string()),
            ("WHARF_TIERS_BASIC_QUOTA".into(), BASIC_QUOTA.to_string()),
            (
                "WHARF_TIERS_BASIC_MAX_CONCURRENT_UPLOADS".into(),
                "32".into(),
            ),
            // Abandoned uploads stay active until they expire; the upload clients abandon
            // some on purpose and must not run into the limit in a long run.
            (
                "WHARF_TIERS_PREMIUM_MAX_CONCURRENT_UPLOADS".into(),
                "100000".into(),
            ),
            ("WHARF_SCAN_POLICY".into(), "off".into()),
            // Faster elections, so that a run of minutes sees many of them.
            ("WHARF_RAFT_HEARTBEAT_MS".into(), "150".into()),
            ("WHARF_RAFT_ELECTION_TIMEOUT_MIN_MS".into(), "600".into()),
            ("WHARF_RAFT_ELECTION_TIMEOUT_MAX_MS".into(), "1200".into()),
            ("WHARF_RAFT_SNAPSHOT_EVERY".into(), "500".into()),
        ];
        if let Some(bug) = planted {
            env.push(("WHARF_PLANTED_BUG".into(), bug.into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut c = Cluster {
            wharf: wharf.to_path_buf(),
            slots,
            peer_links,
            client_links,
            quic_links,
            netns,
            env,
            http,
        };
        c.spawn(0, &[])?;
        c.wait_ready(0, Duration::from_secs(30)).await?;
        for i in 1..n {
            // A join token admits one node.
            let join = [
                "--join".to_string(),
                c.slots[0].peer.to_string(),
                "--token".into(),
                c.join_token(0)?,
            ];
            c.spawn(i, &join)?;
            c.wait_ready(i, Duration::from_secs(60)).await?;
        }
        c.wait_members(n, Duration::from_secs(60)).await?;
        Ok(c)
    }

    fn env_for(&self, i: usize) -> Vec<(String, String)> {
        let routes: Vec<String> = self.peer_links[i]
            .iter()
            .flatten()
            .map(|l| format!("{}={}", self.slots[l.to - 1].peer, l.listen))
            .collect();
        let mut env = self.env.clone();
        if !routes.is_empty() {
            env.push(("WHARF_CLUSTER_PEER_ROUTES".into(), routes.join(",")));
        }
        env
    }

    /// Starts slot `i`'s process (its data dir decides whether it is new or restarting).
    pub fn spawn(&mut self, i: usize, extra: &[String]) -> anyhow::Result<()> {
        let env = self.env_for(i);
        let s = &mut self.slots[i];
        std::fs::create_dir_all(&s.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.data_dir.with_extension("log"))?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the node in its namespace: the pid is the node's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name(i)]).arg(&self.wharf);
                c
            }
            None => Command::new(&self.wharf),
        };
        cmd.args(["node", "start", "--data-dir"])
            .arg(&s.data_dir)
            .args(["--http-addr", &s.http.to_string()])
            .args(["--peer-addr", &s.peer.to_string()])
            .args(["--quic-addr", &s.quic.to_string()])
            .args(extra)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        s.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.wharf.display()))?,
        );
        s.run = Run::Running;
        Ok(())
    }

    pub fn signal(&mut self, i: usize, sig: &str) -> anyhow::Result<()> {
        let s = &mut self.slots[i];
        let Some(child) = &s.child else { return Ok(()) };
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -{sig} n{} failed", s.n);
        }
        Ok(())
    }

    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].run == Run::Paused {
            self.signal(i, "CONT")?;
        }
        let s = &mut self.slots[i];
        if let Some(mut child) = s.child.take() {
            child.kill()?;
            child.wait()?;
        }
        s.run = Run::Dead;
        Ok(())
    }

    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "STOP")?;
        self.slots[i].run = Run::Paused;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "CONT")?;
        self.slots[i].run = Run::Running;
        Ok(())
    }

    /// SIGTERM, then (after the node stopped, or 10 s) start again.
    pub async fn graceful_restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = match self.slots[i].child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if done {
                break;
            }
            if Instant::now() > deadline {
                self.kill(i)?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.slots[i].child = None;
        self.spawn(i, &[])
    }

    /// Restarts a dead slot with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.slots[i].run == Run::Dead {
            self.spawn(i, &[])?;
        }
        Ok(())
    }

    /// Membership change: slot `i`'s node is removed from the cluster and its data wiped; a
    /// fresh node joins in its place (same addresses, a new node id).
    pub async fn replace(&mut self, i: usize) -> anyhow::Result<()> {
        let via = (0..self.slots.len())
            .find(|&k| k != i && self.slots[k].run == Run::Running)
            .context("no other running node")?;
        let status = self.status(via).await?;
        let old_id = node_id_of(&status, &self.slots[i].http).context("slot not a member")?;
        let url = format!("http://{}/v1/cluster/nodes/{old_id}", self.slots[via].http);
        let resp = self
            .http
            .delete(url)
            .bearer_auth(token("chaos-admin", "admin"))
            .timeout(Duration::from_secs(20))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "removing node {old_id}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        self.kill(i)?;
        let s = &mut self.slots[i];
        std::fs::remove_dir_all(&s.data_dir)?;
        s.generation += 1;
        let token = self.join_token(via)?;
        let join = [
            "--join".to_string(),
            self.slots[via].peer.to_string(),
            "--token".into(),
            token,
        ];
        self.spawn(i, &join)?;
        self.wait_ready(i, Duration::from_secs(60)).await
    }

    /// A join token for one node, made through node `i` (a running member) with an admin token.
    fn join_token(&self, i: usize) -> anyhow::Result<String> {
        let out = Command::new(&self.wharf)
            .args(["cluster", "token", "--node"])
            .arg(format!("http://{}", self.slots[i].http))
            .env("WHARF_ADMIN_TOKEN", token("chaos-operator", "admin"))
            .output()?;
        if !out.status.success() {
            bail!(
                "wharf cluster token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub async fn wait_ready(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.slots[i].http);
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.slots[i].child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.slots[i].child = None;
                    self.slots[i].run = Run::Dead;
                    let log = self.slots[i].data_dir.with_extension("log");
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                    bail!(
                        "node {} exited ({status}): {}",
                        node_label(i),
                        tail.join(" | ")
                    );
                }
            }
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {} not ready after {within:?}", node_label(i));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_members(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = self.status(0).await {
                let voters = s["nodes"]
                    .as_array()
                    .map(|a| a.iter().filter(|n| n["voter"] == true).count())
                    .unwrap_or(0);
                if voters == n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the cluster did not reach {n} voters");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /v1/cluster/status` straight from slot `i` (not through its proxy).
    pub async fn status(&self, i: usize) -> anyhow::Result<Value> {
        let url = format!("http://{}/v1/cluster/status", self.slots[i].http);
        let r = self
            .http
            .get(url)
            .bearer_auth(token("chaos-admin", "admin"))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("status: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// The slot of the current leader, as some running node sees it.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.slots.len() {
            if self.slots[i].run != Run::Running {
                continue;
            }
            let Ok(s) = self.status(i).await else {
                continue;
            };
            let Some(leader) = s["leader"].as_u64() else {
                continue;
            };
            let http = s["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"].as_u64() == Some(leader))?["http_addr"]
                .as_str()?
                .to_string();
            return self.slots.iter().position(|s| s.http.to_string() == http);
        }
        None
    }

    /// The clients' base URLs, one per node, through the client proxies (or straight to the
    /// node's address in its namespace).
    pub fn client_urls(&self) -> Vec<String> {
        if self.netns.is_some() {
            return self
                .slots
                .iter()
                .map(|s| format!("http://{}", s.http))
                .collect();
        }
        self.client_links
            .iter()
            .map(|l| format!("http://{}", l.listen))
            .collect()
    }

    /// The clients' QUIC node URLs, through the UDP proxies.
    pub fn client_quic_urls(&self) -> Vec<String> {
        if self.netns.is_some() {
            return self
                .slots
                .iter()
                .map(|s| format!("quic://{}", s.quic))
                .collect();
        }
        self.quic_links
            .iter()
            .map(|l| format!("quic://{}", l.listen))
            .collect()
    }

    /// The cluster CA (the first node made it; every node has it), for QUIC clients to pin.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.slots[0].data_dir.join("tls/ca.pem");
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// The same fault on every client link, TCP and UDP.
    pub fn set_client_fault(&self, fault: Fault) {
        if let Some(ns) = &self.netns {
            if let Err(e) = ns.set_client(fault) {
                eprintln!("wharf-chaos: nft: {e:#}");
            }
            return;
        }
        for l in &self.client_links {
            l.set(fault);
        }
        for l in &self.quic_links {
            l.set(fault);
        }
    }

    /// Every link back to healthy.
    pub fn heal_network(&self) {
        if let Some(ns) = &self.netns {
            if let Err(e) = ns.heal() {
                eprintln!("wharf-chaos: nft: {e:#}");
            }
            return;
        }
        for l in self.peer_links.iter().flatten().flatten() {
            l.set(Fault::default());
        }
        self.set_client_fault(Fault::default());
    }

    pub fn set_peer_fault(&self, from: usize, to: usize, fault: Fault) {
        if let Some(ns) = &self.netns {
            if from != to {
                if let Err(e) = ns.set_peer(from, to, fault) {
                    eprintln!("wharf-chaos: nft: {e:#}");
                }
            }
            return;
        }
        if let Some(l) = &self.peer_links[from][to] {
            l.set(fault);
        }
    }

    /// Every process running again, every link healthy.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.heal_network();
        for i in 0..self.slots.len() {
            match self.slots[i].run {
                Run::Paused => self.resume(i)?,
                Run::Dead => self.restart(i)?,
                Run::Running => {}
            }
        }
        Ok(())
    }

    pub fn shutdown(&mut self) {
        for i in 0..self.slots.len() {
            let _ = self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(ns) = &self.netns {
            ns.teardown();
        }
    }
}

/// The node id behind an HTTP address, from a cluster status.
pub fn node_id_of(status: &Value, http: &SocketAddr) -> Option<u64> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["http_addr"].as_str() == Some(&http.to_string()))?["id"]
        .as_u64()
}

/// A client token (HS256 under the cluster's configured secret).
pub fn token(user: &str, tier: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({ "sub": user, "tier": tier, "iat": now, "exp": now + 86_400 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("a token")
}
