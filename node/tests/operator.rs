//! The operator's path from a fresh clone to a cluster: errors a person can read, logs without
//! colour codes in files, joins that wait for the member, commands that find a node's address
//! in its data dir.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The `wharf` CLI with no WHARF_* variables from the developer's shell.
fn wharf(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run wharf")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kills the process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cli_errors_are_the_message_chain_alone_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    let out = run(wharf(&["cluster", "token", "--data-dir"])
        .arg(&empty)
        .env("RUST_BACKTRACE", "1"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains("holds no cluster"), "{err}");
    assert!(err.contains("wharf cluster init"), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A chain of causes stays on one line, outermost first.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upload]\nno_such_key = 1\n").unwrap();
    let out = run(wharf(&["token", "issue", "--user", "a", "--config"])
        .arg(&bad)
        .env("RUST_BACKTRACE", "full"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no_such_key"), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}

/// Starts a node (every port 0) whose stderr goes to `log`, and waits until it listens.
fn start_logging_to(dir: &Path, log: &Path, env: &[(&str, &str)]) -> Guard {
    let mut child = wharf(&["node", "start", "--http-addr", "127.0.0.1:0"])
        .args([
            "--peer-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env("WHARF_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = Guard(child);
    assert!(line.contains("listening on"), "{line}");
    guard
}

#[test]
fn node_logs_carry_no_colour_codes_when_written_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let _node = start_logging_to(dir.path(), &log, &[]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("wharf node listening"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a log file: {logged:?}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let _node = start_logging_to(dir.path(), &log, &[("WHARF_LOG_FORMAT", "json")]);
    let logged = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["message"] == "wharf node listening")
        .unwrap_or_else(|| panic!("{logged}"));
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string(), "{listening}");
    assert!(listening["http_addr"].is_string(), "{listening}");

    // A format that does not exist stops the start, naming what is accepted.
    let out = run(wharf(&["node", "start", "--data-dir"])
        .arg(dir.path().join("other"))
        .env("WHARF_LOG_FORMAT", "xml"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}

#[test]
fn a_joining_node_waits_for_a_member_that_starts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("n1");
    // `cluster init` makes the identity and prints a token before the first node runs.
    let out = run(wharf(&["cluster", "init", "--data-dir"]).arg(&first));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let peer = format!("127.0.0.1:{}", free_port());

    let mut joiner = wharf(&["node", "start", "--http-addr", "127.0.0.1:0"])
        .args(["--peer-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"])
        .args(["--join", &peer, "--token", &token, "--data-dir"])
        .arg(dir.path().join("n2"))
        .env("WHARF_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let joiner_out = joiner.stdout.take().unwrap();
    let mut joiner = Guard(joiner);
    // The joiner finds nobody at `peer` for a while, and keeps trying.
    std::thread::sleep(Duration::from_secs(2));
    assert!(joiner.0.try_wait().unwrap().is_none(), "the joiner gave up");

    let n1 = Node::spawn_at(&first, &[], &[], "127.0.0.1:0", &peer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(joiner_out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the joiner never started");
    assert!(line.contains("listening on"), "{line}");
    let out = run(wharf(&["cluster", "status", "--json", "--wait", "2", "--data-dir"]).arg(&first));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 2, "{status}");
    drop(n1);
    drop(joiner);
}

fn listen_file(data_dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(data_dir.join("listen.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_commands_find_the_node_address_in_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n1"));
    let recorded = listen_file(&node.data_dir);
    assert_eq!(recorded["http"], node.base.trim_start_matches("http://"));
    assert_eq!(recorded["quic"], node.quic_addr.as_str());
    assert_eq!(recorded["peer"], node.peer_addr.as_str());

    // Ports were 0: only the data dir knows where the node listens.
    let out = run(wharf(&["cluster", "status", "--wait", "1", "--data-dir"]).arg(&node.data_dir));
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains(node.base.trim_start_matches("http://")),
        "{shown}"
    );
    assert!(shown.lines().any(|l| l.contains(" leader ")), "{shown}");

    // --node wins over the data dir; a named data dir wins over a WHARF_ADDR left in the shell
    // by the client commands; without --data-dir, WHARF_ADDR (its first http:// entry) is used.
    let out = run(wharf(&[
        "cluster",
        "status",
        "--node",
        "http://127.0.0.1:9",
        "--data-dir",
    ])
    .arg(&node.data_dir));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
    let out = run(wharf(&["cluster", "status", "--data-dir"])
        .arg(&node.data_dir)
        .env("WHARF_ADDR", "http://127.0.0.1:9"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(wharf(&["cluster", "status", "--token", "t"])
        .current_dir(elsewhere.path())
        .env("WHARF_ADDR", "quic://127.0.0.1:7,http://127.0.0.1:9"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );

    // Waiting for more nodes than the cluster has ends, with a message and a non-zero exit.
    let out = run(
        wharf(&["cluster", "status", "--wait", "3", "--timeout", "2s"])
            .arg("--data-dir")
            .arg(&node.data_dir),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("3 voters"), "{err}");
}
