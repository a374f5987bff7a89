//! Checkers: each reads the history (and, once the faults are healed, asks the cluster) and
//! gives a verdict with the operations that violate it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::{node_number, token, Cluster, Run};
use crate::history::Event;
use crate::workload::{QUOTA_CREATE, REGISTER_KEYS};

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub valid: bool,
    /// What was checked (counts), for the summary.
    pub checked: Value,
    /// How many violations the checker found (all of them, not only those kept below).
    pub violation_count: usize,
    /// The first violations (at most `KEPT_VIOLATIONS`), each with the history indexes
    /// involved.
    pub violations: Vec<Value>,
}

/// Violations a verdict keeps (verdict.json); the summary shows fewer.
pub const KEPT_VIOLATIONS: usize = 20;

impl Verdict {
    pub fn new(checked: Value, violations: Vec<Value>) -> Self {
        Verdict {
            valid: violations.is_empty(),
            checked,
            violation_count: violations.len(),
            violations: violations.into_iter().take(KEPT_VIOLATIONS).collect(),
        }
    }
}

/// Invocations paired with their completions.
pub struct Op<'a> {
    pub invoke: &'a Event,
    pub done: Option<&'a Event>,
}

impl Op<'_> {
    pub fn kind(&self) -> &str {
        self.done.map_or("info", |d| d.kind.as_str())
    }
    fn value(&self) -> &Value {
        self.done.map_or(&self.invoke.value, |d| &d.value)
    }
}

pub fn pair(events: &[Event]) -> Vec<Op<'_>> {
    let mut open: HashMap<&str, usize> = HashMap::new();
    let mut ops: Vec<Op<'_>> = Vec::new();
    for e in events {
        if e.kind == "invoke" {
            open.insert(&e.process, ops.len());
            ops.push(Op {
                invoke: e,
                done: None,
            });
        } else if let Some(i) = open.remove(e.process.as_str()) {
            ops[i].done = Some(e);
        }
    }
    ops
}

fn user_of(process: &str) -> String {
    format!("u{}", process.trim_start_matches('c'))
}

/// Quota safety: no round lets more creates through than the quota holds, and no usage read
/// shows `used + reserved` above the quota.
pub fn quota(ops: &[Op<'_>]) -> Verdict {
    let mut wins: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut reads = 0;
    for op in ops {
        match op.invoke.f.as_str() {
            "quota-create" if op.kind() == "ok" => {
                let user = op.invoke.value["user"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                wins.entry(user).or_default().push(op.invoke.index);
            }
            "usage" if op.kind() == "ok" => {
                reads += 1;
                let v = op.value();
                let (used, reserved, quota) = (
                    v["used"].as_u64().unwrap_or(0),
                    v["reserved"].as_u64().unwrap_or(0),
                    v["quota"].as_u64().unwrap_or(u64::MAX),
                );
                if used + reserved > quota {
                    violations.push(json!({
                        "kind": "usage-over-quota", "op": op.invoke.index,
                        "used": used, "reserved": reserved, "quota": quota,
                    }));
                }
            }
            _ => {}
        }
    }
    let room = crate::cluster::BASIC_QUOTA / QUOTA_CREATE;
    for (user, ok) in &wins {
        if ok.len() as u64 > room {
            violations.push(json!({
                "kind": "over-commit", "user": user, "granted": ok.len(), "room": room, "ops": ok,
            }));
        }
    }
    Verdict::new(
        json!({ "rounds_with_grants": wins.len(), "usage_reads": reads, "room_per_round": room }),
        violations,
    )
}

/// Uniqueness and idempotency: every create that succeeded got its own upload id, unless it
/// repeated an idempotency key, in which case it got the first one's; every completed upload
/// its own file id.
pub fn uniqueness(ops: &[Op<'_>]) -> Verdict {
    let mut violations = Vec::new();
    let mut by_id: HashMap<String, u64> = HashMap::new();
    let mut by_key: HashMap<String, String> = HashMap::new();
    let mut files: HashMap<String, (String, u64)> = HashMap::new();
    let (mut creates, mut retries) = (0, 0);
    for op in ops.iter().filter(|o| o.kind() == "ok") {
        let v = op.value();
        let id = v["upload_id"].as_str().unwrap_or_default().to_string();
        match op.invoke.f.as_str() {
            "create" | "quota-create" if op.invoke.process != "setup" => {
                creates += 1;
                if let Some(first) = by_id.insert(id.clone(), op.invoke.index) {
                    violations.push(json!({"kind": "duplicate-upload-id", "upload_id": id, "ops": [first, op.invoke.index]}));
                }
                if let Some(k) = v["idempotency_key"].as_str() {
                    by_key.insert(format!("{}/{k}", op.invoke.process), id);
                }
            }
            "create-again" => {
                retries += 1;
                let k = v["idempotency_key"].as_str().unwrap_or_default();
                match by_key.get(&format!("{}/{k}", op.invoke.process)) {
                    Some(first) if *first == id => {}
                    first => violations.push(json!({
                        "kind": "idempotency-key-created-twice", "key": k,
                        "first": first, "again": id, "op": op.invoke.index,
                    })),
                }
            }
            "complete" => {
                let fid = v["file_id"].as_str().unwrap_or_default().to_string();
                if let Some((other, i)) = files.insert(fid.clone(), (id.clone(), op.invoke.index)) {
                    if other != id {
                        violations.push(json!({"kind": "duplicate-file-id", "file_id": fid, "ops": [i, op.invoke.index]}));
                    }
                }
            }
            _ => {}
        }
    }
    Verdict::new(
        json!({ "creates": creates, "idempotent_retries": retries, "files": files.len() }),
        violations,
    )
}

/// One register operation for the linearizability check.
#[derive(Clone, Debug)]
pub struct RegOp {
    pub index: u64,
    pub call: u64,
    /// `u64::MAX` for a write whose outcome is unknown: it may take effect at any later time,
    /// or never.
    pub ret: u64,
    pub write: bool,
    pub value: String,
}

/// The register ops of each key: writes that may have happened, reads that answered.
pub fn register_ops(ops: &[Op<'_>]) -> Vec<Vec<RegOp>> {
    let mut keys = vec![Vec::new(); REGISTER_KEYS];
    for op in ops {
        let f = op.invoke.f.as_str();
        if f != "write" && f != "read" {
            continue;
        }
        let key = op.invoke.value["key"].as_u64().unwrap_or(0) as usize;
        let (write, kind) = (f == "write", op.kind());
        let ret = match (write, kind) {
            (_, "ok") => op.done.map_or(u64::MAX, |d| d.time),
            (true, "info") => u64::MAX,
            _ => continue, // a failed write did nothing; a read without an answer says nothing
        };
        let value = if write {
            op.invoke.value["value"].as_str()
        } else {
            op.value()["value"].as_str()
        };
        keys[key.min(REGISTER_KEYS - 1)].push(RegOp {
            index: op.invoke.index,
            call: op.invoke.time,
            ret,
            write,
            value: value.unwrap_or_default().to_string(),
        });
    }
    keys
}

/// The outcome of a linearizability search.
#[derive(Debug, PartialEq)]
pub enum Linear {
    Yes,
    /// No order exists; the ops that could not be placed after the longest valid prefix.
    No(Vec<u64>),
    /// The search gave up (too many states).
    Unknown,
}

/// Wing & Gong's search with Lowe's memoisation: is there an order of `ops`, consistent with
/// real time (an op that returned before another was called comes first), in which every read
/// returns the latest write (or `init`)?
pub fn linearizable(init: &str, ops: &[RegOp]) -> Linear {
    // Values are unique, so a write of unknown outcome that nobody read may be taken never to
    // have happened (always a valid choice); one that was read happened before the earliest
    // return of a read that saw it. Either way the search no longer has to place it freely,
    // which is what makes it exponential.
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for o in ops.iter().filter(|o| !o.write) {
        let e = first_seen.entry(o.value.as_str()).or_insert(u64::MAX);
        *e = (*e).min(o.ret);
    }
    let mut ops: Vec<RegOp> = ops
        .iter()
        .filter_map(|o| {
            let mut o = o.clone();
            if o.write && o.ret == u64::MAX {
                o.ret = *first_seen.get(o.value.as_str())?;
            }
            Some(o)
        })
        .collect();
    ops.sort_by_key(|o| o.call);
    let mut values: HashMap<String, u32> = HashMap::new();
    let mut intern = |s: &str| {
        let n = values.len() as u32;
        *values.entry(s.to_string()).or_insert(n)
    };
    let init = intern(init);
    let vals: Vec<u32> = ops.iter().map(|o| intern(&o.value)).collect();
    let words = ops.len().div_ceil(64).max(1);
    let required: usize = ops.iter().filter(|o| o.ret != u64::MAX).count();
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut best: (usize, Vec<u64>) = (0, vec![0; words]);
    // Depth-first, with an explicit stack of (done set, state, required done).
    let mut stack = vec![(vec![0u64; words], init, 0usize)];
    while let Some((done, state, req_done)) = stack.pop() {
        if req_done == required {
            return Linear::Yes;
        }
        if !seen.insert((done.clone(), state)) {
            continue;
        }
        if seen.len() > 2_000_000 {
            return Linear::Unknown;
        }
        if req_done > best.0 {
            best = (req_done, done.clone());
        }
        let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        let min_ret = (0..ops.len())
            .filter(|&i| !is_done(i))
            .map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..ops.len() {
            if ops[i].call > min_ret {
                break;
            }
            if is_done(i) || (!ops[i].write && vals[i] != state) {
                continue;
            }
            let mut next = done.clone();
            next[i / 64] |= 1 << (i % 64);
            let next_state = if ops[i].write { vals[i] } else { state };
            let r = req_done + usize::from(ops[i].ret != u64::MAX);
            stack.push((next, next_state, r));
        }
    }
    let done = &best.1;
    let stuck = (0..ops.len())
        .filter(|&i| done[i / 64] >> (i % 64) & 1 == 0 && ops[i].ret != u64::MAX)
        .take(10)
        .map(|i| ops[i].index)
        .collect();
    Linear::No(stuck)
}

pub fn linearizability(ops: &[Op<'_>]) -> Verdict {
    let keys = register_ops(ops);
    let mut violations = Vec::new();
    let mut unknown = 0;
    let mut counts = Vec::new();
    for (key, kops) in keys.iter().enumerate() {
        counts.push(kops.len());
        match linearizable(&format!("r{key}-init"), kops) {
            Linear::Yes => {}
            Linear::No(stuck) => violations.push(json!({
                "kind": "not-linearizable", "key": key,
                "ops_that_cannot_be_placed": stuck,
            })),
            Linear::Unknown => unknown += 1,
        }
    }
    let mut v = Verdict::new(
        json!({ "ops_per_key": counts, "unknown_keys": unknown }),
        violations,
    );
    if unknown > 0 {
        v.valid = false;
    }
    v
}

/// Asks every node through the cluster; retries for up to `within`.
async fn get_json(c: &Cluster, path: &str, user: &str, within: Duration) -> Option<(u16, Value)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let deadline = Instant::now() + within;
    loop {
        for url in c.client_urls() {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(token(user, "premium"))
                .send()
                .await;
            if let Ok(r) = r {
                let status = r.status().as_u16();
                if status < 500 {
                    let body = r.bytes().await.ok()?;
                    let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
                        json!({
                            "blake3": blake3::hash(&body).to_hex().to_string()
                        })
                    });
                    return Some((status, v));
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Durability, once the faults are healed: every acknowledged completed upload is listed and
/// downloads with its BLAKE3 (unless a delete of it may have happened); every acknowledged
/// chunk of an unfinished upload is reported received.
pub async fn durability(c: &Cluster, ops: &[Op<'_>]) -> Verdict {
    let mut violations = Vec::new();
    let deleted: HashSet<&str> = ops
        .iter()
        .filter(|o| o.invoke.f == "delete" && o.kind() != "fail")
        .filter_map(|o| o.invoke.value["file_id"].as_str())
        .collect();
    let ended: HashSet<&str> = ops
        .iter()
        .filter(|o| {
            (o.invoke.f == "abort" && o.kind() != "fail")
                || (o.invoke.f == "complete" && o.kind() == "ok")
        })
        .filter_map(|o| o.invoke.value["upload_id"].as_str())
        .collect();
    let mut acked: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    for o in ops
        .iter()
        .filter(|o| o.invoke.f == "chunk" && o.kind() == "ok" && o.invoke.process != "setup")
    {
        let up = o.invoke.value["upload_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let index = o.invoke.value["index"].as_u64().unwrap_or(0);
        let t = o.done.map_or(0, |d| d.time);
        acked
            .entry((user_of(&o.invoke.process), up))
            .or_default()
            .push((index, t));
        let _ = o.invoke.index;
    }
    // A completion refused for missing chunks that had been acknowledged before it was asked.
    for o in ops
        .iter()
        .filter(|o| o.invoke.f == "complete" && o.kind() == "fail")
    {
        let (Some(up), Some(missing)) = (
            o.invoke.value["upload_id"].as_str(),
            o.value()["missing"].as_array(),
        ) else {
            continue;
        };
        let key = (user_of(&o.invoke.process), up.to_string());
        let before: Vec<u64> = acked
            .get(&key)
            .map(|a| {
                a.iter()
                    .filter(|(_, t)| *t < o.invoke.time)
                    .map(|(i, _)| *i)
                    .collect()
            })
            .unwrap_or_default();
        let lost: Vec<u64> = missing
            .iter()
            .filter_map(Value::as_u64)
            .filter(|i| before.contains(i))
            .collect();
        if !lost.is_empty() {
            violations.push(json!({
                "kind": "acknowledged-chunk-missing-at-completion", "upload_id": up,
                "chunks": lost, "op": o.invoke.index,
            }));
        }
    }
    let mut files_checked = 0;
    let completed = |o: &&Op<'_>| {
        (o.invoke.f == "complete" || o.invoke.f == "sdk-upload")
            && o.kind() == "ok"
            && o.invoke.process != "setup"
    };
    for o in ops.iter().filter(completed) {
        let v = o.value();
        let (Some(fid), Some(expect)) = (v["file_id"].as_str(), v["expect_blake3"].as_str()) else {
            continue;
        };
        if deleted.contains(fid) {
            continue;
        }
        files_checked += 1;
        let user = user_of(&o.invoke.process);
        match get_json(
            c,
            &format!("/v1/files/{fid}/content"),
            &user,
            Duration::from_secs(30),
        )
        .await
        {
            Some((200, got)) if got["blake3"] == expect => {}
            Some((status, got)) => violations.push(json!({
                "kind": "acknowledged-file-lost-or-changed", "file_id": fid, "status": status,
                "got": got["blake3"], "expected": expect, "op": o.invoke.index,
            })),
            None => violations.push(json!({
                "kind": "acknowledged-file-unreadable", "file_id": fid, "op": o.invoke.index,
            })),
        }
    }
    let mut uploads_checked = 0;
    for ((user, up), chunks) in &acked {
        if ended.contains(up.as_str()) {
            continue;
        }
        uploads_checked += 1;
        match get_json(
            c,
            &format!("/v1/uploads/{up}"),
            user,
            Duration::from_secs(30),
        )
        .await
        {
            Some((200, s)) if s["state"] == "uploading" => {
                let received: HashSet<u64> = s["received"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                let lost: Vec<u64> = chunks
                    .iter()
                    .map(|(i, _)| *i)
                    .filter(|i| !received.contains(i))
                    .collect();
                if !lost.is_empty() {
                    violations.push(json!({
                        "kind": "acknowledged-chunk-not-received", "upload_id": up, "chunks": lost,
                    }));
                }
            }
            Some((200, _)) => {} // stored, aborted or expired: a completion or abort went through
            other => violations.push(json!({
                "kind": "upload-unreadable", "upload_id": up, "answer": other.map(|o| o.1),
            })),
        }
    }
    Verdict::new(
        json!({ "files": files_checked, "unfinished_uploads": uploads_checked, "deleted": deleted.len() }),
        violations,
    )
}

/// Convergence: every member reports the same applied index and state digest.
pub async fn convergence(c: &Cluster, within: Duration) -> Verdict {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    loop {
        for i in 0..c.slots.len() {
            if c.slots[i].run != Run::Running {
                continue;
            }
            let Ok(s) = c.status(i).await else { continue };
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            let seen: Vec<(Value, Value)> = nodes
                .iter()
                .map(|n| (n["applied_index"].clone(), n["state_digest"].clone()))
                .collect();
            let same = !seen.is_empty()
                && seen
                    .iter()
                    .all(|x| *x == seen[0] && !x.0.is_null() && !x.1.is_null());
            // Each member by its node number (n1..nN, as everywhere in the report) as well as
            // its Raft id.
            let number = |n: &Value| {
                c.slots
                    .iter()
                    .position(|s| n["http_addr"].as_str() == Some(&s.http.to_string()))
                    .map(node_number)
            };
            last = json!(nodes
                .iter()
                .map(|n| json!({"node": number(n), "id": n["id"], "applied_index": n["applied_index"], "state_digest": n["state_digest"]}))
                .collect::<Vec<_>>());
            if same {
                return Verdict::new(
                    json!({ "members": nodes.len(), "applied_index": seen[0].0, "state_digest": seen[0].1 }),
                    vec![],
                );
            }
            break;
        }
        if Instant::now() > deadline {
            return Verdict::new(
                json!({ "waited_secs": within.as_secs() }),
                vec![json!({ "kind": "nodes-disagree", "nodes": last })],
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Liveness: after healing, a leader exists and a new upload completes, within `bound`.
pub async fn liveness(c: &Cluster, bound: Duration, dir: &std::path::Path) -> Verdict {
    let t0 = Instant::now();
    let mut violations = Vec::new();
    let mut leader = None;
    while t0.elapsed() < bound {
        leader = c.leader().await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader_after = t0.elapsed();
    if leader.is_none() {
        violations.push(json!({ "kind": "no-leader", "waited_secs": bound.as_secs() }));
    }
    let path = dir.join("liveness.bin");
    let data = crate::workload::content(42, 700 * 1024);
    let _ = std::fs::write(&path, &data);
    let upload = async {
        let mut client = wharf_client::Client::new(c.client_urls(), token("live", "premium"))?;
        client.attempts = 20;
        client.upload(&path, None, |_| {}, None).await
    };
    let remaining = bound
        .saturating_sub(t0.elapsed())
        .max(Duration::from_secs(1));
    let upload_after = match tokio::time::timeout(remaining, upload).await {
        Ok(Ok(u)) if u.file.blake3 == blake3::hash(&data).to_hex().to_string() => {
            Some(t0.elapsed())
        }
        Ok(Ok(u)) => {
            violations.push(json!({ "kind": "upload-hash-wrong", "file": u.file.id }));
            None
        }
        Ok(Err(e)) => {
            violations.push(json!({ "kind": "upload-failed", "error": e.to_string() }));
            None
        }
        Err(_) => {
            violations.push(json!({ "kind": "upload-timed-out", "bound_secs": bound.as_secs() }));
            None
        }
    };
    let _ = std::fs::remove_file(&path);
    Verdict::new(
        json!({
            "leader": leader.map(node_number),
            "leader_after_ms": leader_after.as_millis() as u64,
            "upload_after_ms": upload_after.map(|d| d.as_millis() as u64),
            "bound_secs": bound.as_secs(),
        }),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(index: u64, call: u64, ret: u64, v: &str) -> RegOp {
        RegOp {
            index,
            call,
            ret,
            write: true,
            value: v.into(),
        }
    }
    fn r(index: u64, call: u64, ret: u64, v: &str) -> RegOp {
        RegOp {
            index,
            call,
            ret,
            write: false,
            value: v.into(),
        }
    }

    #[test]
    fn sequential_and_concurrent_register_histories_are_linearizable() {
        let h = [
            w(0, 0, 10, "a"),
            r(1, 11, 20, "a"),
            w(2, 21, 30, "b"),
            r(3, 31, 40, "b"),
        ];
        assert_eq!(linearizable("init", &h), Linear::Yes);
        // A read concurrent with a write may see either value.
        let h = [
            w(0, 0, 10, "a"),
            w(1, 11, 30, "b"),
            r(2, 12, 20, "a"),
            r(3, 15, 25, "b"),
        ];
        assert_eq!(linearizable("init", &h), Linear::Yes);
        // An unknown write may take effect late...
        let h = [
            w(0, 0, u64::MAX, "a"),
            r(1, 50, 60, "init"),
            r(2, 70, 80, "a"),
        ];
        assert_eq!(linearizable("init", &h), Linear::Yes);
        // ...or never.
        let h = [w(0, 0, u64::MAX, "a"), r(1, 50, 60, "init")];
        assert_eq!(linearizable("init", &h), Linear::Yes);
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        // b was written and acknowledged; a later read still sees a.
        let h = [w(0, 0, 10, "a"), w(1, 11, 20, "b"), r(7, 21, 30, "a")];
        assert_eq!(linearizable("init", &h), Linear::No(vec![7]));
        // A value nobody wrote.
        let h = [w(0, 0, 10, "a"), r(3, 11, 20, "zzz")];
        assert!(matches!(linearizable("init", &h), Linear::No(_)));
        // Reads going back in time: after one read saw b, a later one sees a again.
        let h = [
            w(0, 0, 100, "a"),
            w(1, 0, 100, "b"),
            r(2, 10, 20, "b"),
            r(3, 30, 40, "a"),
            r(4, 50, 60, "b"),
        ];
        assert!(matches!(linearizable("init", &h), Linear::No(_)));
    }
}
