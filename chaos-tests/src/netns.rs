//! The network-namespace mode (root on Linux, `--net netns`): each node in a namespace of its
//! own, joined to the others by veth pairs on one bridge, and links cut in the kernel with
//! nftables instead of by the user-space proxies.
//!
//! A directed link i→j is cut in j's namespace by dropping the packets from i's address that
//! travel in the direction of the connection's opening (`ct direction original`): connections
//! i opens to j die, connections j opens to i live. Loss is `numgen random` drops. There is no
//! delay: this kernel has no `netem` (the proxy mode delays in user space).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context};

use crate::label::{node_label, node_number};
use crate::proxy::Fault;

pub struct Netns {
    tag: String,
    gateway: Ipv4Addr,
    pub ips: Vec<Ipv4Addr>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    peer: HashMap<(usize, usize), Fault>,
    client: Fault,
}

fn run(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", args[0]))?;
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Makes the bridge and `n` namespaces; needs root, `ip` and `nft`.
    pub fn setup(n: usize, seed: u64) -> anyhow::Result<Netns> {
        let uid = Command::new("id").arg("-u").output()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            bail!("--net netns needs root");
        }
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                bail!("--net netns needs `{tool}` (Debian: apt-get install iproute2 nftables)");
            }
        }
        let id = (u64::from(std::process::id()) ^ seed) & 0xffff;
        let subnet = 100 + (id % 150) as u8;
        let ns = Netns {
            tag: format!("wc{id:04x}"),
            gateway: Ipv4Addr::new(10, 77, subnet, 1),
            ips: (0..n)
                .map(|i| Ipv4Addr::new(10, 77, subnet, 11 + i as u8))
                .collect(),
            state: Mutex::default(),
        };
        if let Err(e) = ns.build(n) {
            ns.teardown();
            return Err(e);
        }
        Ok(ns)
    }

    fn build(&self, n: usize) -> anyhow::Result<()> {
        let ns = self;
        let br = format!("{}br", ns.tag);
        run(&["ip", "link", "add", &br, "type", "bridge"], None)?;
        run(
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", ns.gateway),
                "dev",
                &br,
            ],
            None,
        )?;
        run(&["ip", "link", "set", &br, "up"], None)?;
        for i in 0..n {
            let (name, a, b) = (
                ns.name(i),
                format!("{}{}a", ns.tag, node_number(i)),
                format!("{}{}b", ns.tag, node_number(i)),
            );
            run(&["ip", "netns", "add", &name], None)?;
            run(
                &["ip", "link", "add", &a, "type", "veth", "peer", "name", &b],
                None,
            )?;
            run(&["ip", "link", "set", &a, "master", &br], None)?;
            run(&["ip", "link", "set", &a, "up"], None)?;
            run(&["ip", "link", "set", &b, "netns", &name], None)?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &name];
                all.extend_from_slice(args);
                run(&all, None)
            };
            inside(&["ip", "addr", "add", &format!("{}/24", ns.ips[i]), "dev", &b])?;
            inside(&["ip", "link", "set", &b, "up"])?;
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["nft", "add", "table", "inet", "wharfchaos"])?;
            inside(&[
                "nft",
                "add chain inet wharfchaos input { type filter hook input priority 0; policy accept; }",
            ])?;
        }
        Ok(())
    }

    /// The namespace of the node in slot `i`: `<tag>n1` for n1.
    /// The host's address on the bridge: the nodes reach the harness there.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}{}", self.tag, node_label(i))
    }

    /// The rules of node `j`'s namespace, from the faults on the links into it.
    fn apply(&self, j: usize) -> anyhow::Result<()> {
        let state = self.state.lock().expect("netns state");
        let mut script = String::from("flush table inet wharfchaos\n");
        let mut rule = |from: Ipv4Addr, f: &Fault| {
            if f.blocked {
                script.push_str(&format!(
                    "add rule inet wharfchaos input ip saddr {from} ct direction original drop\n"
                ));
            } else if f.drop > 0.0 {
                let per_mille = (f.drop.min(1.0) * 1000.0) as u32;
                script.push_str(&format!(
                    "add rule inet wharfchaos input ip saddr {from} numgen random mod 1000 < {per_mille} drop\n"
                ));
            }
        };
        for (&(from, to), f) in &state.peer {
            if to == j {
                rule(self.ips[from], f);
            }
        }
        rule(self.gateway, &state.client);
        drop(state);
        run(
            &["ip", "netns", "exec", &self.name(j), "nft", "-f", "-"],
            Some(&script),
        )
    }

    pub fn set_peer(&self, from: usize, to: usize, fault: Fault) -> anyhow::Result<()> {
        self.state
            .lock()
            .expect("netns state")
            .peer
            .insert((from, to), fault);
        self.apply(to)
    }

    pub fn set_client(&self, fault: Fault) -> anyhow::Result<()> {
        self.state.lock().expect("netns state").client = fault;
        (0..self.ips.len()).try_for_each(|j| self.apply(j))
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        *self.state.lock().expect("netns state") = State::default();
        (0..self.ips.len()).try_for_each(|j| self.apply(j))
    }

    pub fn teardown(&self) {
        for i in 0..self.ips.len() {
            let _ = run(&["ip", "netns", "del", &self.name(i)], None);
        }
        let _ = run(&["ip", "link", "del", &format!("{}br", self.tag)], None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_named_by_node_number() {
        let ns = Netns {
            tag: "wc00ab".into(),
            gateway: Ipv4Addr::new(10, 77, 100, 1),
            ips: vec![
                Ipv4Addr::new(10, 77, 100, 11),
                Ipv4Addr::new(10, 77, 100, 12),
            ],
            state: Mutex::default(),
        };
        assert_eq!(ns.name(0), "wc00abn1");
        assert_eq!(ns.name(1), "wc00abn2");
    }
}
