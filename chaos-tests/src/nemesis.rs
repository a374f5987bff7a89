//! Nemeses: the fault schedule (drawn up front from the seed, so that a seed replays the same
//! faults at the same offsets on the same targets) and the code that injects and heals them.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use serde_json::json;

use crate::cluster::{node_label, node_number, Cluster};
use crate::history::History;
use crate::proxy::Fault;

pub const ALL: [&str; 9] = [
    "client-net",
    "kill",
    "pause",
    "restart",
    "partition",
    "oneway",
    "delay",
    "drop",
    "membership",
];

fn ser_node<S: Serializer>(slot: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(node_number(*slot) as u64)
}

fn ser_nodes<S: Serializer>(slots: &[usize], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(slots.iter().map(|&i| node_number(i)))
}

/// A partition's shape. Node fields hold 0-based slots; they serialize as node numbers (1-based,
/// `node_number`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Shape {
    /// Whoever leads when the fault starts, cut off from everyone.
    IsolateLeader,
    /// Two sides that do not see each other.
    Halves {
        #[serde(serialize_with = "ser_nodes")]
        minority: Vec<usize>,
    },
    /// Each node sees only its ring neighbours: every node is in some majority, no two
    /// majorities agree (5 nodes or more).
    MajoritiesRing,
    /// Two halves that only `bridge` connects.
    Bridge {
        #[serde(serialize_with = "ser_node")]
        bridge: usize,
    },
}

/// A fault. Node fields hold 0-based slots; they serialize as node numbers (1-based,
/// `node_number`), so schedule.json and the history say n2 where the timeline does.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    Kill {
        #[serde(serialize_with = "ser_node")]
        node: usize,
    },
    Pause {
        #[serde(serialize_with = "ser_node")]
        node: usize,
    },
    Restart {
        #[serde(serialize_with = "ser_node")]
        node: usize,
    },
    Partition(Shape),
    /// `from` cannot reach `to`; the other way works.
    Oneway {
        #[serde(serialize_with = "ser_node")]
        from: usize,
        #[serde(serialize_with = "ser_node")]
        to: usize,
    },
    Delay {
        delay_ms: u64,
        jitter_ms: u64,
    },
    Drop {
        probability: f64,
    },
    /// Remove `node` from the cluster and have a fresh node join in its place.
    Membership {
        #[serde(serialize_with = "ser_node")]
        node: usize,
    },
    /// Every client link (HTTP over TCP, QUIC over UDP) delayed and lossy.
    ClientNet {
        delay_ms: u64,
        jitter_ms: u64,
        drop: f64,
    },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Kill { .. } => "kill",
            Kind::Pause { .. } => "pause",
            Kind::Restart { .. } => "restart",
            Kind::Partition(_) => "partition",
            Kind::Oneway { .. } => "oneway",
            Kind::Delay { .. } => "delay",
            Kind::Drop { .. } => "drop",
            Kind::Membership { .. } => "membership",
            Kind::ClientNet { .. } => "client-net",
        }
    }

    /// The fault and its targets as the timeline labels it: `kill n2`, `oneway n1→n3`,
    /// `partition n1 | n2 n3`, `delay 120±30 ms`.
    pub fn label(&self, nodes: usize) -> String {
        let list = |slots: &mut dyn Iterator<Item = usize>| {
            slots.map(node_label).collect::<Vec<_>>().join(" ")
        };
        match self {
            Kind::Kill { node }
            | Kind::Pause { node }
            | Kind::Restart { node }
            | Kind::Membership { node } => format!("{} {}", self.name(), node_label(*node)),
            Kind::Oneway { from, to } => {
                format!("oneway {}→{}", node_label(*from), node_label(*to))
            }
            Kind::Partition(Shape::IsolateLeader) => "partition isolate-leader".into(),
            Kind::Partition(Shape::MajoritiesRing) => "partition majorities-ring".into(),
            Kind::Partition(Shape::Halves { minority }) => format!(
                "partition {} | {}",
                list(&mut minority.iter().copied()),
                list(&mut (0..nodes).filter(|n| !minority.contains(n)))
            ),
            Kind::Partition(Shape::Bridge { bridge }) => {
                format!("partition bridge {}", node_label(*bridge))
            }
            Kind::Delay {
                delay_ms,
                jitter_ms,
            } => format!("delay {delay_ms}±{jitter_ms} ms"),
            Kind::Drop { probability } => format!("drop {:.0}%", probability * 100.0),
            Kind::ClientNet {
                delay_ms,
                jitter_ms,
                drop,
            } => format!(
                "client-net {delay_ms}±{jitter_ms} ms, {:.0}% loss",
                drop * 100.0
            ),
        }
    }
}

/// One fault of the schedule: injected at `at_ms` into the run, healed at `heal_ms`.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    pub heal_ms: u64,
    #[serde(flatten)]
    pub kind: Kind,
}

/// Faults one after another from 3 s into the run until 5 s before its end, each lasting 2 to
/// 6 s, with 1 to 3 s of calm between. Nemeses take turns in a shuffled order (shuffled again
/// each round), so a run long enough for that many faults sees every one.
pub fn schedule(seed: u64, duration: Duration, nemeses: &[String], nodes: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut out = Vec::new();
    if nemeses.is_empty() {
        return out;
    }
    let end = duration.as_millis() as u64;
    let mut t = 3_000u64;
    let mut turn: Vec<&str> = Vec::new();
    while t + 2_000 + 5_000 <= end {
        let len = rng.gen_range(2_000..=6_000).min(end - 5_000 - t);
        if turn.is_empty() {
            turn = nemeses.iter().map(String::as_str).collect();
            turn.shuffle(&mut rng);
        }
        let name = turn.pop().expect("a nemesis");
        let node = rng.gen_range(0..nodes);
        let kind = match name {
            "kill" => Kind::Kill { node },
            "pause" => Kind::Pause { node },
            "restart" => Kind::Restart { node },
            "partition" => {
                let shapes = if nodes >= 5 { 4 } else { 3 };
                match rng.gen_range(0..shapes) {
                    0 => Kind::Partition(Shape::IsolateLeader),
                    1 => {
                        let mut all: Vec<usize> = (0..nodes).collect();
                        all.shuffle(&mut rng);
                        let mut minority = all[..(nodes - 1) / 2].to_vec();
                        minority.sort();
                        Kind::Partition(Shape::Halves { minority })
                    }
                    2 => Kind::Partition(Shape::Bridge { bridge: node }),
                    _ => Kind::Partition(Shape::MajoritiesRing),
                }
            }
            "oneway" => {
                let to = (node + rng.gen_range(1..nodes)) % nodes;
                Kind::Oneway { from: node, to }
            }
            "delay" => Kind::Delay {
                delay_ms: rng.gen_range(20..=200),
                jitter_ms: rng.gen_range(0..=50),
            },
            "drop" => Kind::Drop {
                probability: f64::from(rng.gen_range(5..=30u32)) / 100.0,
            },
            "client-net" => Kind::ClientNet {
                delay_ms: rng.gen_range(10..=150),
                jitter_ms: rng.gen_range(0..=30),
                drop: f64::from(rng.gen_range(1..=10u32)) / 100.0,
            },
            _ => Kind::Membership { node },
        };
        out.push(Planned {
            at_ms: t,
            heal_ms: t + len,
            kind,
        });
        t += len + rng.gen_range(1_000..=3_000);
    }
    out
}

/// The directed links a partition cuts, as (from, to) slot pairs.
fn cut_links(shape: &Shape, nodes: usize, leader: Option<usize>) -> Vec<(usize, usize)> {
    let pairs = (0..nodes).flat_map(|a| (0..nodes).map(move |b| (a, b)));
    let pairs = pairs.filter(|(a, b)| a != b);
    match shape {
        Shape::IsolateLeader => {
            let l = leader.unwrap_or(0);
            pairs.filter(|(a, b)| *a == l || *b == l).collect()
        }
        Shape::Halves { minority } => pairs
            .filter(|(a, b)| minority.contains(a) != minority.contains(b))
            .collect(),
        Shape::MajoritiesRing => pairs
            .filter(|(a, b)| {
                let d = (a + nodes - b) % nodes;
                d != 1 && d != nodes - 1
            })
            .collect(),
        Shape::Bridge { bridge } => {
            // The others split in two around the bridge.
            let others: Vec<usize> = (0..nodes).filter(|n| n != bridge).collect();
            let left: Vec<usize> = others[..others.len() / 2].to_vec();
            pairs
                .filter(|(a, b)| a != bridge && b != bridge && left.contains(a) != left.contains(b))
                .collect()
        }
    }
}

/// Injects `fault` now; returns what it did, for the history.
pub async fn inject(c: &mut Cluster, kind: &Kind) -> anyhow::Result<serde_json::Value> {
    let nodes = c.slots.len();
    Ok(match kind {
        Kind::Kill { node } => {
            c.kill(*node)?;
            json!({"node": node_number(*node)})
        }
        Kind::Pause { node } => {
            c.pause(*node)?;
            json!({"node": node_number(*node)})
        }
        Kind::Restart { node } => {
            c.graceful_restart(*node).await?;
            json!({"node": node_number(*node)})
        }
        Kind::Partition(shape) => {
            let leader = match shape {
                Shape::IsolateLeader => c.leader().await,
                _ => None,
            };
            let cut = cut_links(shape, nodes, leader);
            for (a, b) in &cut {
                c.set_peer_fault(
                    *a,
                    *b,
                    Fault {
                        blocked: true,
                        ..Fault::default()
                    },
                );
            }
            json!({
                "shape": shape,
                "leader": leader.map(node_number),
                "cut": cut.iter().map(|(a, b)| format!("{}->{}", node_label(*a), node_label(*b))).collect::<Vec<_>>(),
            })
        }
        Kind::Oneway { from, to } => {
            c.set_peer_fault(
                *from,
                *to,
                Fault {
                    blocked: true,
                    ..Fault::default()
                },
            );
            json!({"from": node_number(*from), "to": node_number(*to)})
        }
        Kind::Delay {
            delay_ms,
            jitter_ms,
        } => {
            for a in 0..nodes {
                for b in 0..nodes {
                    let f = Fault {
                        delay_ms: *delay_ms,
                        jitter_ms: *jitter_ms,
                        ..Fault::default()
                    };
                    c.set_peer_fault(a, b, f);
                }
            }
            json!({"delay_ms": delay_ms, "jitter_ms": jitter_ms})
        }
        Kind::Drop { probability } => {
            for a in 0..nodes {
                for b in 0..nodes {
                    let f = Fault {
                        drop: *probability,
                        ..Fault::default()
                    };
                    c.set_peer_fault(a, b, f);
                }
            }
            json!({"probability": probability})
        }
        Kind::Membership { node } => {
            c.replace(*node).await?;
            json!({"node": node_number(*node), "generation": c.slots[*node].generation})
        }
        Kind::ClientNet {
            delay_ms,
            jitter_ms,
            drop,
        } => {
            c.set_client_fault(Fault {
                blocked: false,
                delay_ms: *delay_ms,
                jitter_ms: *jitter_ms,
                drop: *drop,
            });
            json!({"delay_ms": delay_ms, "jitter_ms": jitter_ms, "drop": drop})
        }
    })
}

/// Heals what `kind` did (a membership change stays: the fresh node is the new member).
pub fn heal(c: &mut Cluster, kind: &Kind) -> anyhow::Result<()> {
    match kind {
        Kind::Kill { node } => c.restart(*node),
        Kind::Pause { node } => c.resume(*node),
        Kind::Restart { .. } | Kind::Membership { .. } => Ok(()),
        Kind::Partition(_)
        | Kind::Oneway { .. }
        | Kind::Delay { .. }
        | Kind::Drop { .. }
        | Kind::ClientNet { .. } => {
            c.heal_network();
            Ok(())
        }
    }
}

/// Runs the schedule against the cluster, recording every fault's start and end in `history`.
pub async fn run(
    c: &mut Cluster,
    plan: &[Planned],
    history: &History,
) -> anyhow::Result<Vec<(Planned, u64, u64)>> {
    let mut done = Vec::new();
    for p in plan {
        let at = Duration::from_millis(p.at_ms);
        let now = Duration::from_nanos(history.now());
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        let start = history.now();
        let inv = history.invoke(
            "nemesis",
            p.kind.name(),
            None,
            serde_json::to_value(&p.kind)?,
        );
        let res = inject(c, &p.kind).await;
        match res {
            Ok(v) => history.complete(inv, "info", v, None),
            Err(e) => history.complete(inv, "info", json!(null), Some(e.to_string())),
        }
        let heal_at = Duration::from_millis(p.heal_ms);
        let now = Duration::from_nanos(history.now());
        if heal_at > now {
            tokio::time::sleep(heal_at - now).await;
        }
        let inv = history.invoke(
            "nemesis",
            &format!("heal-{}", p.kind.name()),
            None,
            json!(null),
        );
        let res = heal(c, &p.kind);
        history.complete(inv, "info", json!(null), res.err().map(|e| e.to_string()));
        done.push((p.clone(), start, history.now()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let a = serde_json::to_string(&schedule(7, Duration::from_secs(120), &all, 5)).unwrap();
        let b = serde_json::to_string(&schedule(7, Duration::from_secs(120), &all, 5)).unwrap();
        let c = serde_json::to_string(&schedule(8, Duration::from_secs(120), &all, 5)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let plan = schedule(7, Duration::from_secs(120), &all, 5);
        assert!(plan.len() > 5);
        // The CI run (80 s, seed 1) has a turn for every nemesis.
        let short = schedule(1, Duration::from_secs(80), &all, 3);
        for n in ALL {
            assert!(short.iter().any(|p| p.kind.name() == n), "{n} missing");
        }
        assert!(plan.windows(2).all(|w| w[0].heal_ms < w[1].at_ms));
        assert!(plan.last().unwrap().heal_ms <= 115_000);
    }

    #[test]
    fn a_schedule_numbers_nodes_from_one_as_its_labels_do() {
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 1..30 {
            for nodes in [3, 5] {
                for p in schedule(seed, Duration::from_secs(120), &all, nodes) {
                    let v = serde_json::to_value(&p).unwrap();
                    let label = p.kind.label(nodes);
                    let number = |slot: usize| serde_json::json!(slot + 1);
                    match &p.kind {
                        Kind::Kill { node }
                        | Kind::Pause { node }
                        | Kind::Restart { node }
                        | Kind::Membership { node } => {
                            assert_eq!(v["node"], number(*node), "{v}");
                            assert_eq!(label, format!("{} n{}", p.kind.name(), node + 1));
                        }
                        Kind::Oneway { from, to } => {
                            assert_eq!((&v["from"], &v["to"]), (&number(*from), &number(*to)));
                            assert_eq!(label, format!("oneway n{}→n{}", from + 1, to + 1));
                        }
                        Kind::Partition(Shape::Halves { minority }) => {
                            let want: Vec<_> = minority.iter().map(|&m| number(m)).collect();
                            assert_eq!(v["minority"], serde_json::json!(want), "{v}");
                            let side = minority.iter().map(|&m| node_label(m));
                            assert!(label.starts_with(&format!(
                                "partition {} |",
                                side.collect::<Vec<_>>().join(" ")
                            )));
                        }
                        Kind::Partition(Shape::Bridge { bridge }) => {
                            assert_eq!(v["bridge"], number(*bridge), "{v}");
                            assert_eq!(label, format!("partition bridge n{}", bridge + 1));
                        }
                        _ => {}
                    }
                    // Every number in it is one of n1..nN.
                    for k in ["node", "from", "to", "bridge"] {
                        if let Some(n) = v[k].as_u64() {
                            assert!((1..=nodes as u64).contains(&n), "{v}");
                            seen.insert((nodes, n));
                        }
                    }
                    for n in v["minority"].as_array().into_iter().flatten() {
                        assert!((1..=nodes as u64).contains(&n.as_u64().unwrap()), "{v}");
                    }
                }
            }
        }
        // The last node is among the targets (so the numbers are not 0-based ones that happen
        // to stay below N).
        assert!(seen.contains(&(3, 3)) && seen.contains(&(5, 5)), "{seen:?}");
    }

    #[test]
    fn partition_shapes_cut_what_they_say() {
        // Isolating node 2 of 3 cuts its 4 directed links.
        let cut = cut_links(&Shape::IsolateLeader, 3, Some(1));
        assert_eq!(cut.len(), 4);
        assert!(cut.iter().all(|(a, b)| *a == 1 || *b == 1));
        // A ring of 5: each node keeps its two neighbours.
        let cut = cut_links(&Shape::MajoritiesRing, 5, None);
        assert_eq!(cut.len(), 5 * 2);
        assert!(!cut.contains(&(0, 1)) && !cut.contains(&(0, 4)) && cut.contains(&(0, 2)));
        // A bridge: node 2 talks to everyone, {0,1} and {3,4} not to each other.
        let cut = cut_links(&Shape::Bridge { bridge: 2 }, 5, None);
        assert!(cut.iter().all(|(a, b)| *a != 2 && *b != 2));
        assert!(cut.contains(&(0, 3)) && !cut.contains(&(0, 1)));
        // Halves: a 2-node minority of 5 is cut from the 3 others both ways.
        let cut = cut_links(
            &Shape::Halves {
                minority: vec![0, 1],
            },
            5,
            None,
        );
        assert_eq!(cut.len(), 2 * 3 * 2);
    }
}
