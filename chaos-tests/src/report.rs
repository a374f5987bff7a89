//! The report: verdict.json, summary.txt and timeline.svg in the run's directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::checker::{pair, Verdict};
use crate::history::Event;
use crate::nemesis::Planned;

/// Operations by kind and outcome (client operations only).
pub fn op_counts(events: &[Event]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for op in pair(events) {
        if op.invoke.process == "nemesis" {
            continue;
        }
        *out.entry(op.invoke.f.clone())
            .or_default()
            .entry(op.kind().to_string())
            .or_default() += 1;
    }
    out
}

pub fn fault_counts(faults: &[(Planned, u64, u64)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (p, _, _) in faults {
        *out.entry(p.kind.name().to_string()).or_default() += 1;
    }
    out
}

pub fn verdict_json(
    run: &Value,
    checkers: &BTreeMap<String, Verdict>,
    events: &[Event],
    faults: &[(Planned, u64, u64)],
) -> Value {
    json!({
        "valid": checkers.values().all(|v| v.valid),
        "run": run,
        "checkers": checkers,
        "operations": op_counts(events),
        "faults": fault_counts(faults),
    })
}

pub fn summary(verdict: &Value) -> String {
    let mut s = String::new();
    let run = &verdict["run"];
    let _ = writeln!(
        s,
        "wharf-chaos run {}: seed {}, {} nodes, {} s, nemesis {}, workload {}{}",
        run["name"].as_str().unwrap_or(""),
        run["seed"],
        run["nodes"],
        run["duration_secs"],
        run["nemesis"].as_str().unwrap_or(""),
        run["workload"].as_str().unwrap_or(""),
        run["planted_bug"]
            .as_str()
            .map(|b| format!(", planted bug {b}"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        s,
        "\nverdict: {}",
        if verdict["valid"] == true {
            "VALID"
        } else {
            "INVALID"
        }
    );
    let _ = writeln!(s, "\nchecker           verdict   checked");
    if let Some(m) = verdict["checkers"].as_object() {
        for (name, v) in m {
            let _ = writeln!(
                s,
                "{name:<17} {:<9} {}",
                if v["valid"] == true {
                    "valid"
                } else {
                    "INVALID"
                },
                v["checked"]
            );
            for viol in v["violations"].as_array().into_iter().flatten().take(5) {
                let _ = writeln!(s, "    violation: {viol}");
            }
        }
    }
    let _ = writeln!(s, "\noperation         ok      fail    info");
    if let Some(m) = verdict["operations"].as_object() {
        for (f, by) in m {
            let n = |k: &str| by[k].as_u64().unwrap_or(0);
            let _ = writeln!(s, "{f:<17} {:<7} {:<7} {}", n("ok"), n("fail"), n("info"));
        }
    }
    let _ = writeln!(s, "\nfault             injected");
    if let Some(m) = verdict["faults"].as_object() {
        for (k, n) in m {
            let _ = writeln!(s, "{k:<17} {n}");
        }
    }
    s
}

const W: f64 = 1400.0;
const LEFT: f64 = 70.0;
const PANEL: f64 = 130.0;
const TOP: f64 = 50.0;

/// One panel per node: time across, each operation's latency up (log scale, 1 ms to 30 s) as
/// a point coloured by outcome; fault intervals shaded, darker on the nodes they target.
pub fn timeline(
    events: &[Event],
    faults: &[(Planned, u64, u64)],
    nodes: usize,
    title: &str,
) -> String {
    let end_ns = events.iter().map(|e| e.time).max().unwrap_or(1).max(1) as f64;
    let x = |ns: u64| LEFT + (ns as f64 / end_ns) * (W - LEFT - 20.0);
    let height = TOP + PANEL * nodes as f64 + 60.0;
    let y_of = |panel: usize, ms: f64| {
        let (lo, hi) = (0.0f64, (30_000f64).log10());
        let f = ((ms.max(1.0)).log10() - lo) / (hi - lo);
        TOP + PANEL * (panel as f64 + 1.0) - 8.0 - f.min(1.0) * (PANEL - 16.0)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="34">latency (log, 1 ms – 30 s) by time; green ok, red fail, grey info (unknown); shaded: faults</text>"#
    );
    for (p, start, stop) in faults {
        let (x0, x1) = (x(*start), x(*stop).max(x(*start) + 1.0));
        let targets = fault_targets(&p.kind, nodes);
        for panel in 0..nodes {
            let strong = targets.contains(&panel);
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{PANEL}" fill="{}" opacity="{}"/>"#,
                TOP + PANEL * panel as f64,
                x1 - x0,
                fault_colour(p.kind.name()),
                if strong { 0.35 } else { 0.12 }
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
            x0 + 2.0,
            TOP - 3.0,
            p.kind.name()
        );
    }
    for panel in 0..nodes {
        let y0 = TOP + PANEL * panel as f64;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            W - LEFT - 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="8" y="{:.1}" font-size="13">n{}</text>"#,
            y0 + PANEL / 2.0,
            panel + 1
        );
        for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
            let y = y_of(panel, ms);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="8" text-anchor="end">{}</text>"##,
                W - 20.0,
                LEFT - 3.0,
                y + 3.0,
                if ms >= 1000.0 {
                    format!("{} s", ms / 1000.0)
                } else {
                    format!("{ms} ms")
                }
            );
        }
    }
    for op in pair(events) {
        let (Some(node), Some(done)) = (op.invoke.node, op.done) else {
            continue;
        };
        if node == 0 || node > nodes {
            continue;
        }
        let ms = (done.time - op.invoke.time) as f64 / 1e6;
        let colour = match done.kind.as_str() {
            "ok" => "#2a9d3a",
            "fail" => "#d62828",
            _ => "#888888",
        };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="{colour}" fill-opacity="0.7"><title>{} {} {}</title></circle>"#,
            x(done.time),
            y_of(node - 1, ms),
            esc(&op.invoke.f),
            done.kind,
            esc(done.error.as_deref().unwrap_or(""))
        );
    }
    let axis_y = TOP + PANEL * nodes as f64 + 16.0;
    let secs = (end_ns / 1e9).ceil() as u64;
    let step = (secs / 12).max(1);
    for t in (0..=secs).step_by(step as usize) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{axis_y}" text-anchor="middle">{t} s</text>"#,
            x(t * 1_000_000_000)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fault_targets(kind: &crate::nemesis::Kind, nodes: usize) -> Vec<usize> {
    use crate::nemesis::{Kind, Shape};
    match kind {
        Kind::Kill { node }
        | Kind::Pause { node }
        | Kind::Restart { node }
        | Kind::Membership { node } => {
            vec![*node]
        }
        Kind::Oneway { from, .. } => vec![*from],
        Kind::Partition(Shape::Halves { minority }) => minority.clone(),
        Kind::Partition(Shape::Bridge { bridge }) => vec![*bridge],
        _ => (0..nodes).collect(),
    }
}

fn fault_colour(name: &str) -> &'static str {
    match name {
        "kill" | "membership" => "#e63946",
        "pause" => "#f4a261",
        "restart" => "#e9c46a",
        "partition" | "oneway" => "#457b9d",
        _ => "#8d99ae",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn write_all(dir: &Path, verdict: &Value, svg: &str) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("verdict.json"),
        serde_json::to_string_pretty(verdict)?,
    )?;
    std::fs::write(dir.join("summary.txt"), summary(verdict))?;
    std::fs::write(dir.join("timeline.svg"), svg)?;
    Ok(())
}
