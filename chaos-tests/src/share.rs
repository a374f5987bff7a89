//! The `share` workload and its checker. Each client stores one small file, then, over and
//! over, makes a share link to it, opens the link (`GET /s/{token}/content`, no account), revokes
//! it and opens it again, every request through a random node.
//!
//! The checker holds wharf to two promises: once a revoke is acknowledged (204, or a 404 that
//! says an earlier try went through), no download through that link succeeds; and a link whose
//! creation was acknowledged serves every download asked before its revoke was sent (a 404 then
//! means an acknowledged link was lost).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::checker::{Op, Verdict};
use crate::workload::{content, Clients, Res};

/// Tries of a revoke whose outcome is unknown before the client leaves it so.
const REVOKE_TRIES: usize = 5;

pub async fn share_client(c: Clients, id: usize, seed: u64, until: Instant) {
    let p = format!("c{id}");
    let user = format!("s{id}");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ea5 ^ ((id as u64) << 32));
    let n = c.urls.len();
    let pause = |rng: &mut StdRng| Duration::from_millis(rng.gen_range(100..400));
    let file = loop {
        if Instant::now() >= until {
            return;
        }
        let node = rng.gen_range(0..n);
        let req = c
            .request(node, Method::POST, "/v1/files?name=shared.bin", &user)
            .body(content(seed ^ id as u64, 1024));
        if let Res::Ok(b) = c.op(&p, "share-file", node, json!({}), req).await {
            if let Some(f) = b["id"].as_str() {
                break f.to_string();
            }
        }
        tokio::time::sleep(pause(&mut rng)).await;
    };
    while Instant::now() < until {
        let node = rng.gen_range(0..n);
        let req = c
            .request(
                node,
                Method::POST,
                &format!("/v1/files/{file}/links"),
                &user,
            )
            .json(&json!({}));
        let token = match c.op(&p, "link-create", node, json!({}), req).await {
            Res::Ok(b) => b["token"].as_str().map(str::to_string),
            _ => None,
        };
        let Some(token) = token else {
            tokio::time::sleep(pause(&mut rng)).await;
            continue;
        };
        for _ in 0..rng.gen_range(1..=2) {
            read(&c, &p, &token, &user, rng.gen_range(0..n)).await;
        }
        for _ in 0..REVOKE_TRIES {
            let node = rng.gen_range(0..n);
            let req = c.request(node, Method::DELETE, &format!("/v1/links/{token}"), &user);
            match c
                .op(&p, "link-revoke", node, json!({ "token": token }), req)
                .await
            {
                Res::Info(_) => tokio::time::sleep(pause(&mut rng)).await,
                _ => break,
            }
        }
        for _ in 0..rng.gen_range(1..=2) {
            read(&c, &p, &token, &user, rng.gen_range(0..n)).await;
        }
        tokio::time::sleep(pause(&mut rng)).await;
    }
}

async fn read(c: &Clients, p: &str, token: &str, user: &str, node: usize) {
    let req = c.request(node, Method::GET, &format!("/s/{token}/content"), user);
    c.op(p, "link-read", node, json!({ "token": token }), req)
        .await;
}

/// What the history says of one link.
#[derive(Default)]
struct LinkOps<'a> {
    /// When its creation was acknowledged.
    created: Option<u64>,
    /// When a revoke was first sent.
    revoke_sent: Option<u64>,
    /// When a revoke was first known to have happened.
    revoked: Option<u64>,
    reads: Vec<&'a Op<'a>>,
}

pub fn check<'a>(ops: &'a [Op<'a>]) -> Verdict {
    let mut links: BTreeMap<String, LinkOps<'a>> = BTreeMap::new();
    let token_of = |v: &Value| v["token"].as_str().map(str::to_string);
    for op in ops {
        let f = op.invoke.f.as_str();
        match (f, op.done) {
            ("link-create", Some(d)) if d.kind == "ok" => {
                if let Some(t) = token_of(&d.value) {
                    links.entry(t).or_default().created = Some(d.time);
                }
            }
            ("link-revoke", done) => {
                let Some(t) = token_of(&op.invoke.value) else {
                    continue;
                };
                let l = links.entry(t).or_default();
                l.revoke_sent = Some(
                    l.revoke_sent
                        .map_or(op.invoke.time, |s| s.min(op.invoke.time)),
                );
                let definite = done.filter(|d| {
                    d.kind == "ok" || (d.kind == "fail" && d.error.as_deref() == Some("not_found"))
                });
                if let Some(d) = definite {
                    l.revoked = Some(l.revoked.map_or(d.time, |r| r.min(d.time)));
                }
            }
            ("link-read", _) => {
                if let Some(t) = token_of(&op.invoke.value) {
                    links.entry(t).or_default().reads.push(op);
                }
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let (mut created, mut revoked, mut reads_ok, mut refused_after_revoke) = (0, 0, 0, 0);
    for (token, l) in &links {
        created += usize::from(l.created.is_some());
        revoked += usize::from(l.revoked.is_some());
        for r in &l.reads {
            let Some(done) = r.done else { continue };
            let after_revoke = l.revoked.is_some_and(|at| r.invoke.time > at);
            match done.kind.as_str() {
                "ok" => {
                    reads_ok += 1;
                    if after_revoke {
                        violations.push(json!({
                            "kind": "download-after-revoke", "token": token,
                            "op": r.invoke.index, "revoked_at_ns": l.revoked,
                        }));
                    }
                }
                "fail" if done.error.as_deref() == Some("not_found") => {
                    refused_after_revoke += usize::from(after_revoke);
                    let asked_before_revoke = l.revoke_sent.is_none_or(|s| done.time < s);
                    let after_create = l.created.is_some_and(|at| r.invoke.time > at);
                    if after_create && asked_before_revoke {
                        violations.push(json!({
                            "kind": "acknowledged-link-lost", "token": token, "op": r.invoke.index,
                        }));
                    }
                }
                _ => {}
            }
        }
    }
    Verdict::new(
        json!({
            "links_created": created, "links_revoked": revoked, "downloads": reads_ok,
            "refused_after_revoke": refused_after_revoke,
        }),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::pair;
    use crate::history::Event;

    fn ev(index: u64, time: u64, kind: &str, f: &str, value: Value, error: Option<&str>) -> Event {
        Event {
            index,
            time,
            process: "c1".into(),
            kind: kind.into(),
            f: f.into(),
            node: Some(1),
            value,
            error: error.map(Into::into),
        }
    }

    /// create (ok), read, revoke, read: `first` and `last` are the reads' completions.
    fn history(
        first: (&str, Option<&str>),
        revoke: &str,
        last: (&str, Option<&str>),
    ) -> Vec<Event> {
        let t = json!({ "token": "T" });
        vec![
            ev(0, 1, "invoke", "link-create", json!({}), None),
            ev(1, 2, "ok", "link-create", t.clone(), None),
            ev(2, 3, "invoke", "link-read", t.clone(), None),
            ev(3, 4, first.0, "link-read", t.clone(), first.1),
            ev(4, 5, "invoke", "link-revoke", t.clone(), None),
            ev(5, 6, revoke, "link-revoke", t.clone(), None),
            ev(6, 7, "invoke", "link-read", t.clone(), None),
            ev(7, 8, last.0, "link-read", t, last.1),
        ]
    }

    #[test]
    fn a_revoke_ends_downloads_and_an_acknowledged_link_serves_until_then() {
        let nf = Some("not_found");
        let good = history(("ok", None), "ok", ("fail", nf));
        assert!(check(&pair(&good)).valid);
        // A download that succeeds after the revoke was acknowledged.
        let v = check(&pair(&history(("ok", None), "ok", ("ok", None))));
        assert_eq!(v.violations[0]["kind"], "download-after-revoke");
        // A link gone before anyone revoked it.
        let v = check(&pair(&history(("fail", nf), "ok", ("fail", nf))));
        assert_eq!(v.violations[0]["kind"], "acknowledged-link-lost");
        // A revoke of unknown outcome promises nothing: a later download may succeed.
        assert!(check(&pair(&history(("ok", None), "info", ("ok", None)))).valid);
    }
}
