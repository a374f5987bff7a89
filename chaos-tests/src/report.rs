//! The report: verdict.json, summary.txt and timeline.svg in the run's directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::checker::{pair, Verdict};
use crate::cluster::node_label;
use crate::history::Event;
use crate::nemesis::Planned;
use crate::workload::{expected_refusal, EXPECTED_REFUSALS};

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

/// Violations of a checker the summary lists; verdict.json keeps `checker::KEPT_VIOLATIONS`.
pub const SHOWN_VIOLATIONS: usize = 5;

/// The line above a checker's listed violations: how many it found in all, and how many
/// follow when that is not all of them.
pub fn violation_count_line(found: usize, shown: usize) -> String {
    if shown < found {
        format!("{found} violation(s), first {shown} shown:")
    } else {
        format!("{found} violation(s):")
    }
}

/// A table: the header and its rows, or only `none` when there are no rows (no bare header).
fn table(header: &str, rows: &[String], none: &str) -> String {
    if rows.is_empty() {
        return format!("{none}\n");
    }
    let mut s = format!("{header}\n");
    for r in rows {
        let _ = writeln!(s, "{r}");
    }
    s
}

/// The checkers' table: each checker's verdict and what it checked, then, for one that found
/// violations, how many and the first `SHOWN_VIOLATIONS` of them.
pub fn checker_table(verdict: &Value) -> String {
    let mut rows = Vec::new();
    for (name, v) in verdict["checkers"].as_object().into_iter().flatten() {
        let valid = v["valid"] == true;
        rows.push(format!(
            "{name:<17} {:<9} {}",
            if valid { "valid" } else { "INVALID" },
            v["checked"]
        ));
        let listed = v["violations"].as_array().map_or(&[][..], Vec::as_slice);
        let found = v["violation_count"]
            .as_u64()
            .map_or(listed.len(), |n| n as usize);
        let shown = listed.len().min(SHOWN_VIOLATIONS);
        if found > 0 {
            rows.push(format!("    {}", violation_count_line(found, shown)));
            for viol in &listed[..shown] {
                rows.push(format!("    violation: {viol}"));
            }
        } else if !valid {
            rows.push("    invalid without a violation to list (see what it checked)".into());
        }
    }
    table(
        "checker           verdict   checked",
        &rows,
        "checkers: none ran",
    )
}

/// What CI asks of a planted bug: the run is invalid and `checker` is one of the reasons.
/// `Ok` has the checkers' table and a line saying so; `Err` why the bug was not caught.
pub fn caught_by(verdict: &Value, checker: &str) -> Result<String, String> {
    let c = &verdict["checkers"][checker];
    if c.is_null() {
        return Err(format!("no checker named {checker:?} in the verdict"));
    }
    let table = checker_table(verdict);
    if verdict["valid"] != false || c["valid"] != false {
        return Err(format!("{table}the {checker} checker did not catch it"));
    }
    let found = c["violation_count"].as_u64().unwrap_or(0) as usize;
    let listed = c["violations"].as_array().map_or(0, Vec::len);
    let shown = listed.min(SHOWN_VIOLATIONS);
    let what = match found {
        0 => "invalid, without a violation to list".to_string(),
        n if shown < n => format!("{n} violation(s) in all (the table lists the first {shown})"),
        n => format!("{n} violation(s), all listed above"),
    };
    Ok(format!("{table}caught by {checker}: {what}\n"))
}

pub fn summary(verdict: &Value) -> String {
    let mut s = String::new();
    let run = &verdict["run"];
    let nodes = run["nodes"].as_u64().unwrap_or(0) as usize;
    let _ = writeln!(
        s,
        "wharf-chaos run {}: seed {}, {} nodes ({}), {} s, nemesis {}, workload {}{}",
        run["name"].as_str().unwrap_or(""),
        run["seed"],
        nodes,
        match nodes {
            0 => String::new(),
            1 => node_label(0),
            n => format!("{}–{}", node_label(0), node_label(n - 1)),
        },
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
    s.push('\n');
    s.push_str(&checker_table(verdict));
    let mut rows = Vec::new();
    for (f, by) in verdict["operations"].as_object().into_iter().flatten() {
        let n = |k: &str| by[k].as_u64().unwrap_or(0);
        rows.push(format!(
            "{f:<17} {:<7} {:<7} {}",
            n("ok"),
            n("fail"),
            n("info")
        ));
    }
    s.push('\n');
    s.push_str(&table(
        "operation         ok      fail    info",
        &rows,
        "operations: none",
    ));
    let rows: Vec<String> = verdict["faults"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k:<17} {n}"))
        .collect();
    s.push('\n');
    s.push_str(&table(
        "fault             injected",
        &rows,
        "faults: none injected",
    ));
    s
}

const W: f64 = 1400.0;
const LEFT: f64 = 70.0;
const PANEL: f64 = 130.0;
/// Above the panels: the title, the key, the legend, and two rows of fault labels.
const TOP: f64 = 80.0;

/// The colours of an operation's outcome in the timeline.
pub const OK_COLOUR: &str = "#2a9d3a";
pub const FAIL_COLOUR: &str = "#d62828";
/// A refusal the workload provokes on purpose (`workload::EXPECTED_REFUSALS`).
pub const REFUSED_COLOUR: &str = "#7b2cbf";
pub const INFO_COLOUR: &str = "#888888";

/// An operation's colour in the timeline: green ok, red fail, purple an expected refusal (a
/// `fail`, but one the workload provokes by design), grey info.
pub fn outcome_colour(f: &str, kind: &str, error: Option<&str>) -> &'static str {
    match kind {
        "ok" => OK_COLOUR,
        "fail" if expected_refusal(f, kind, error) => REFUSED_COLOUR,
        "fail" => FAIL_COLOUR,
        _ => INFO_COLOUR,
    }
}

/// One panel per node, labelled n1..nN: time across, each operation's latency up (log scale,
/// 1 ms to 30 s) as a point coloured by outcome (`outcome_colour`); fault intervals shaded,
/// darker on the nodes they target, and labelled with their targets (`Kind::label`).
pub fn timeline(
    events: &[Event],
    faults: &[(Planned, u64, u64)],
    nodes: usize,
    title: &str,
) -> String {
    let end_ns = events
        .iter()
        .map(|e| e.time)
        .chain(faults.iter().map(|f| f.2))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
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
        r#"<text x="{LEFT}" y="34">one panel per node (n1–n{nodes}); latency (log, 1 ms – 30 s) by time; shaded: faults, darker on the nodes they target</text>"#
    );
    let refusals = EXPECTED_REFUSALS
        .iter()
        .map(|(f, e)| format!("{f}: {e}"))
        .collect::<Vec<_>>()
        .join(", ");
    let legend = [
        (OK_COLOUR, "ok".to_string()),
        (FAIL_COLOUR, "fail".to_string()),
        (
            REFUSED_COLOUR,
            format!("expected refusal, by design ({refusals})"),
        ),
        (INFO_COLOUR, "info (unknown outcome)".to_string()),
    ];
    let mut lx = LEFT + 4.0;
    for (colour, text) in &legend {
        let _ = writeln!(
            s,
            r#"<g class="legend"><circle cx="{lx:.1}" cy="46" r="4" fill="{colour}"/><text x="{:.1}" y="50">{}</text></g>"#,
            lx + 8.0,
            esc(text)
        );
        lx += 8.0 + 6.2 * text.chars().count() as f64 + 18.0;
    }
    for (k, (p, start, stop)) in faults.iter().enumerate() {
        let (x0, x1) = (x(*start), x(*stop).max(x(*start) + 1.0));
        let targets = fault_targets(&p.kind, nodes);
        let label = p.kind.label(nodes);
        for panel in 0..nodes {
            let strong = targets.contains(&panel);
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{PANEL}" fill="{}" opacity="{}"><title>{} ({:.1}–{:.1} s)</title></rect>"#,
                TOP + PANEL * panel as f64,
                x1 - x0,
                fault_colour(p.kind.name()),
                if strong { 0.35 } else { 0.12 },
                esc(&label),
                *start as f64 / 1e9,
                *stop as f64 / 1e9,
            );
        }
        // Two rows, so that the labels of short faults side by side do not overlap.
        let _ = writeln!(
            s,
            r#"<text class="fault" x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
            x0 + 2.0,
            TOP - 4.0 - 11.0 * (k % 2) as f64,
            esc(&label)
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
            r#"<text class="node" x="8" y="{:.1}" font-size="13">{}</text>"#,
            y0 + PANEL / 2.0,
            node_label(panel)
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
        // The history numbers nodes from 1 (n1); the panels are slots from 0.
        let Some(panel) = node.checked_sub(1).filter(|&p| p < nodes) else {
            continue;
        };
        let ms = (done.time - op.invoke.time) as f64 / 1e6;
        let error = done.error.as_deref();
        let colour = outcome_colour(&op.invoke.f, &done.kind, error);
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="{colour}" fill-opacity="0.7"><title>{} {} {}{} on {}</title></circle>"#,
            x(done.time),
            y_of(panel, ms),
            esc(&op.invoke.f),
            done.kind,
            esc(error.unwrap_or("")),
            if colour == REFUSED_COLOUR {
                " (expected refusal)"
            } else {
                ""
            },
            node_label(panel)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checker::KEPT_VIOLATIONS;
    use crate::history::History;
    use crate::nemesis::{schedule, Kind, ALL};

    /// The value of attribute `name` in the SVG element `el`.
    fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
        let at = el.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(&el[at..at + el[at..].find('"')?])
    }

    /// The panel labels of a timeline, by their y.
    fn panel_labels(svg: &str) -> Vec<(f64, String)> {
        svg.lines()
            .filter(|l| l.starts_with(r#"<text class="node""#))
            .map(|l| {
                let y = attr(l, "y").unwrap().parse().unwrap();
                let text = &l[l.find('>').unwrap() + 1..l.find("</text>").unwrap()];
                (y, text.to_string())
            })
            .collect()
    }

    /// The label of the panel that holds y.
    fn panel_at(svg: &str, y: f64) -> String {
        panel_labels(svg)
            .into_iter()
            .find(|(ly, _)| (ly - PANEL / 2.0..ly + PANEL / 2.0).contains(&y))
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("no panel at y {y}"))
    }

    #[test]
    fn schedule_history_and_timeline_name_a_faults_node_alike() {
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let plan = schedule(1, Duration::from_secs(80), &all, 3);
        let mut checked = 0;
        for p in &plan {
            let (Kind::Kill { node }
            | Kind::Pause { node }
            | Kind::Restart { node }
            | Kind::Membership { node }) = p.kind
            else {
                continue;
            };
            // schedule.json (and `wharf-chaos schedule`): the node's number.
            let planned = serde_json::to_value(p).unwrap();
            let n = planned["node"].as_u64().unwrap();
            assert_eq!(n, node as u64 + 1, "{planned}");
            assert!((1..=3).contains(&n));
            let label = format!("n{n}");
            // The history: the nemesis's invoke carries the same value.
            let h = History::new();
            let inv = h.invoke(
                "nemesis",
                p.kind.name(),
                None,
                serde_json::to_value(&p.kind).unwrap(),
            );
            h.complete(inv, "info", json!({ "node": n }), None);
            // A client operation sent to that node.
            let inv = h.invoke("c1", "read", Some(n as usize), json!({"key": 0}));
            h.complete(inv, "ok", json!({"value": "x"}), None);
            let events = h.events();
            assert_eq!(events[0].value["node"], n);
            assert!(crate::history::to_edn(&events)
                .lines()
                .next()
                .unwrap()
                .contains(&format!(":node {n}")));
            // The timeline: the fault is labelled with that node, shaded darkest in its panel,
            // and the operation drawn in it.
            let svg = timeline(&events, &[(p.clone(), 0, events[3].time)], 3, "t");
            let fault_text = svg
                .lines()
                .find(|l| l.starts_with(r#"<text class="fault""#))
                .unwrap();
            assert!(
                fault_text.contains(&format!(">{} {label}<", p.kind.name())),
                "{fault_text}"
            );
            let strong: Vec<&str> = svg
                .lines()
                .filter(|l| l.starts_with("<rect") && attr(l, "opacity") == Some("0.35"))
                .collect();
            assert_eq!(strong.len(), 1, "{svg}");
            let y: f64 = attr(strong[0], "y").unwrap().parse().unwrap();
            assert_eq!(panel_at(&svg, y + 1.0), label);
            let point = svg.lines().find(|l| l.starts_with("<circle cx")).unwrap();
            let cy: f64 = attr(point, "cy").unwrap().parse().unwrap();
            assert_eq!(panel_at(&svg, cy), label, "{point}");
            assert!(point.contains(&format!(" on {label}</title>")));
            checked += 1;
        }
        assert!(checked >= 3, "the schedule has node faults");
        let labels: Vec<String> = panel_labels(&timeline(&[], &[], 3, "t"))
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(labels, ["n1", "n2", "n3"]);
    }

    /// The fill of the one circle whose title starts with `title`.
    fn fill_of(svg: &str, title: &str) -> String {
        let found: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<circle cx") && l.contains(&format!("<title>{title}")))
            .collect();
        assert_eq!(found.len(), 1, "{title}: {svg}");
        attr(found[0], "fill").unwrap().to_string()
    }

    #[test]
    fn an_expected_refusal_is_not_drawn_as_a_failure() {
        let h = History::new();
        let outcomes = [
            ("c100", "quota-create", "fail", Some("quota_exceeded")),
            ("c1", "create", "fail", Some("quota_exceeded")),
            ("c101", "quota-create", "fail", Some("not_found")),
            ("c102", "quota-create", "ok", None),
            ("c103", "quota-create", "info", Some("timeout")),
        ];
        for (process, f, kind, error) in outcomes {
            let inv = h.invoke(process, f, Some(1), json!({}));
            h.complete(inv, kind, json!({}), error.map(str::to_string));
        }
        let svg = timeline(&h.events(), &[], 3, "t");
        let refused = fill_of(&svg, "quota-create fail quota_exceeded");
        assert_eq!(refused, REFUSED_COLOUR);
        assert_ne!(refused, FAIL_COLOUR);
        // Any other failure stays red, the same error on another operation too.
        assert_eq!(fill_of(&svg, "create fail quota_exceeded"), FAIL_COLOUR);
        assert_eq!(fill_of(&svg, "quota-create fail not_found"), FAIL_COLOUR);
        assert_eq!(fill_of(&svg, "quota-create ok"), OK_COLOUR);
        assert_eq!(fill_of(&svg, "quota-create info timeout"), INFO_COLOUR);
        let colours = [OK_COLOUR, FAIL_COLOUR, REFUSED_COLOUR, INFO_COLOUR];
        for (i, a) in colours.iter().enumerate() {
            assert!(colours[i + 1..].iter().all(|b| a != b));
        }
        // The legend has an entry of that colour that says what it is.
        let legend: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with(r#"<g class="legend""#))
            .collect();
        assert_eq!(legend.len(), 4);
        let entry = legend
            .iter()
            .find(|l| attr(l, "fill") == Some(REFUSED_COLOUR))
            .expect("a legend entry for expected refusals");
        assert!(entry.contains("expected refusal") && entry.contains("quota_exceeded"));
        assert!(legend
            .iter()
            .any(|l| attr(l, "fill") == Some(FAIL_COLOUR) && l.contains(">fail<")));
    }

    fn verdict_with(quota_violations: usize) -> Value {
        let v = (0..quota_violations)
            .map(|i| json!({"kind": "over-commit", "op": i}))
            .collect();
        let mut checkers = BTreeMap::new();
        checkers.insert("quota".to_string(), Verdict::new(json!({"rounds": 9}), v));
        checkers.insert(
            "uniqueness".to_string(),
            Verdict::new(json!({"creates": 3}), vec![]),
        );
        let run = json!({"name": "r", "seed": 2, "nodes": 3, "duration_secs": 20});
        serde_json::to_value(verdict_json(&run, &checkers, &[], &[])).unwrap()
    }

    #[test]
    fn the_violation_count_says_how_many_were_found_and_how_many_are_shown() {
        let v = verdict_with(37);
        assert_eq!(v["checkers"]["quota"]["violation_count"], 37);
        assert_eq!(
            v["checkers"]["quota"]["violations"]
                .as_array()
                .unwrap()
                .len(),
            KEPT_VIOLATIONS
        );
        let s = summary(&v);
        assert!(s.contains("\n    37 violation(s), first 5 shown:\n"), "{s}");
        assert_eq!(s.matches("    violation: ").count(), SHOWN_VIOLATIONS);
        let s = summary(&verdict_with(3));
        assert!(s.contains("\n    3 violation(s):\n"), "{s}");
        assert_eq!(s.matches("    violation: ").count(), 3);
        assert!(!s.contains("shown"));
        assert_eq!(
            violation_count_line(20, 5),
            "20 violation(s), first 5 shown:"
        );
        // What CI prints for a planted bug: the count of all, and what the table lists.
        let caught = caught_by(&verdict_with(37), "quota").unwrap();
        assert!(caught
            .ends_with("caught by quota: 37 violation(s) in all (the table lists the first 5)\n"));
        assert_eq!(caught.matches("    violation: ").count(), 5);
        assert!(caught_by(&verdict_with(3), "quota")
            .unwrap()
            .ends_with("caught by quota: 3 violation(s), all listed above\n"));
        assert!(caught_by(&verdict_with(37), "uniqueness").is_err());
        assert!(caught_by(&verdict_with(0), "quota").is_err());
        assert!(caught_by(&verdict_with(37), "durability").is_err());
    }

    /// Lines that are a table's header and the lines under each.
    fn headers_and_rows(text: &str) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut in_table = false;
        for line in text.lines() {
            let header = ["checker ", "operation ", "fault "]
                .iter()
                .any(|h| line.starts_with(h));
            if header {
                out.push((line.to_string(), Vec::new()));
                in_table = true;
            } else if line.is_empty() {
                in_table = false;
            } else if in_table {
                out.last_mut().unwrap().1.push(line.to_string());
            }
        }
        out
    }

    #[test]
    fn no_table_header_without_rows() {
        // No operations and no faults (as in a planted bug's checker block, or `--nemesis
        // none`): those tables say so instead of printing a bare header.
        let s = summary(&verdict_with(2));
        let tables = headers_and_rows(&s);
        assert_eq!(tables.len(), 1, "{s}");
        assert!(tables.iter().all(|(_, rows)| !rows.is_empty()), "{s}");
        assert!(s.contains("\noperations: none\n") && s.contains("\nfaults: none injected\n"));
        // CI's block for a planted bug: the checkers' table and the verdict on the bug, no
        // other table.
        let caught = caught_by(&verdict_with(2), "quota").unwrap();
        let tables = headers_and_rows(&caught);
        assert_eq!(tables.len(), 1, "{caught}");
        assert!(tables[0].0.starts_with("checker "));
        assert!(tables[0].1.len() >= 2);
        assert!(!caught.contains("operation") && !caught.contains("injected"));
        // With operations and faults, their tables have rows.
        let h = History::new();
        let inv = h.invoke("c1", "read", Some(2), json!({"key": 0}));
        h.complete(inv, "ok", json!({}), None);
        let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let faults: Vec<_> = schedule(1, Duration::from_secs(20), &all, 3)
            .into_iter()
            .map(|p| (p, 0, 1))
            .collect();
        let mut checkers = BTreeMap::new();
        checkers.insert("quota".to_string(), Verdict::new(json!({}), vec![]));
        let v = verdict_json(&json!({"nodes": 3}), &checkers, &h.events(), &faults);
        let s = summary(&v);
        let tables = headers_and_rows(&s);
        assert_eq!(tables.len(), 3, "{s}");
        assert!(tables.iter().all(|(_, rows)| !rows.is_empty()), "{s}");
        assert!(s.contains("3 nodes (n1–n3)"), "{s}");
    }
}
