//! The history: every operation's invocation and completion, as Jepsen records them (`invoke`,
//! then `ok`, `fail` — it certainly did not happen — or `info` — it may or may not have), kept
//! in memory for the checkers and written as JSON lines; exportable as EDN.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    /// Nanoseconds since the run began.
    pub time: u64,
    /// `c<n>` for client n, `nemesis` for faults, `setup` for what the harness does before
    /// the clients start (the register's files).
    pub process: String,
    /// `invoke`, `ok`, `fail` or `info`.
    #[serde(rename = "type")]
    pub kind: String,
    pub f: String,
    /// The node the operation went to, if any, by its number (1 for n1: `cluster::node_number`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    #[serde(default)]
    pub value: Value,
    /// The error kind of a `fail` or `info`: wharf's error code, `timeout`, or `unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct History {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

/// An invocation waiting for its completion.
pub struct Pending {
    process: String,
    f: String,
    node: Option<usize>,
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push(&self, mut e: Event) -> u64 {
        let mut events = self.events.lock().expect("history");
        e.index = events.len() as u64;
        e.time = self.now();
        let i = e.index;
        events.push(e);
        i
    }

    pub fn invoke(&self, process: &str, f: &str, node: Option<usize>, value: Value) -> Pending {
        self.push(Event {
            index: 0,
            time: 0,
            process: process.into(),
            kind: "invoke".into(),
            f: f.into(),
            node,
            value,
            error: None,
        });
        Pending {
            process: process.into(),
            f: f.into(),
            node,
        }
    }

    /// Completes `p` as `kind` (`ok`, `fail` or `info`).
    pub fn complete(&self, p: Pending, kind: &str, value: Value, error: Option<String>) {
        self.push(Event {
            index: 0,
            time: 0,
            process: p.process,
            kind: kind.into(),
            f: p.f,
            node: p.node,
            value,
            error,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history").clone()
    }

    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for e in self.events.lock().expect("history").iter() {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }
}

pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// A process as EDN: client `c<n>` is the integer n; any other process (`nemesis`, `setup`)
/// a keyword of its own name.
fn edn_process(process: &str) -> String {
    match process.strip_prefix('c') {
        Some(n) if n.parse::<u64>().is_ok() => n.to_string(),
        _ => format!(":{}", edn_keyword(process)),
    }
}

fn edn_keyword(s: &str) -> String {
    s.replace(|c: char| !c.is_alphanumeric() && c != '-' && c != '_', "-")
}

/// The history as Jepsen EDN: one map per line, `:process` an integer for clients, `:nemesis`
/// for faults and `:setup` for the harness's setup, `:f` a keyword, `:value` the JSON value in
/// EDN.
pub fn to_edn(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        let process = edn_process(&e.process);
        out.push_str(&format!(
            "{{:index {}, :time {}, :type :{}, :process {}, :f :{}, :value {}",
            e.index,
            e.time,
            e.kind,
            process,
            e.f,
            edn(&e.value)
        ));
        if let Some(n) = e.node {
            out.push_str(&format!(", :node {n}"));
        }
        if let Some(err) = &e.error {
            out.push_str(&format!(", :error {}", edn(&Value::String(err.clone()))));
        }
        out.push_str("}\n");
    }
    out
}

fn edn(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).expect("a string"),
        Value::Array(a) => format!("[{}]", a.iter().map(edn).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(":{} {}", edn_keyword(k), edn(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edn_export_names_processes_keywords_and_values() {
        let h = History::new();
        let p = h.invoke(
            "c3",
            "write",
            Some(2),
            serde_json::json!({"key": "a", "value": "v1"}),
        );
        h.complete(
            p,
            "ok",
            serde_json::json!({"key": "a", "value": "v1"}),
            None,
        );
        let p = h.invoke("nemesis", "partition", None, Value::Null);
        h.complete(p, "info", serde_json::json!(["n1"]), Some("x".into()));
        let edn = to_edn(&h.events());
        let lines: Vec<&str> = edn.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains(":type :invoke, :process 3, :f :write"));
        assert!(lines[1].contains(":value {:key \"a\", :value \"v1\"}"));
        assert!(lines[3].contains(":process :nemesis") && lines[3].contains(":value [\"n1\"]"));
    }

    #[test]
    fn setup_events_have_their_own_edn_process_not_the_nemesis() {
        let h = History::new();
        let p = h.invoke("setup", "create", Some(1), serde_json::json!({}));
        h.complete(p, "ok", serde_json::json!({"upload_id": "u"}), None);
        let p = h.invoke("nemesis", "kill", None, serde_json::json!({"node": 2}));
        h.complete(p, "info", serde_json::json!({"node": 2}), None);
        let p = h.invoke("c12", "read", Some(3), serde_json::json!({"key": 0}));
        h.complete(p, "fail", Value::Null, Some("timeout".into()));
        let edn = to_edn(&h.events());
        let process = |line: &str| {
            let rest = line.split(":process ").nth(1).expect("a :process");
            rest.split(',').next().expect("a value").to_string()
        };
        let got: Vec<String> = edn.lines().map(process).collect();
        assert_eq!(
            got,
            [":setup", ":setup", ":nemesis", ":nemesis", "12", "12"],
            "{edn}"
        );
        // Read back from JSON lines, the setup events keep their process.
        let events: Vec<Event> = h
            .events()
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        assert!(to_edn(&events[..2])
            .lines()
            .all(|l| l.contains(":process :setup,") && l.contains(":node 1")));
    }
}
