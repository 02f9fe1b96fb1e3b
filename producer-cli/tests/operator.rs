//! What an operator types and reads: log levels and formats, config file
//! errors, human durations, `--version`.

use std::time::Duration;

use assert_cmd::Command;
use orderly_test_support::operator::{self, WrongType};
use predicates::prelude::*;

fn producer() -> Command {
    let mut cmd = Command::cargo_bin("orderly-producer").expect("binary built");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERLY_PRODUCER_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.timeout(Duration::from_secs(20));
    cmd
}

/// Endpoints on a loopback port nobody listens on (reserved, then freed).
fn nowhere() -> [String; 4] {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ep = format!("tcp://127.0.0.1:{port}");
    ["--intake".into(), ep.clone(), "--fanout".into(), ep]
}

/// The mistakes every orderly CLI answers alike (orderly_test_support's
/// table): a bad log level (flag or RUST_LOG), a missing config file, a
/// wrong type in one.
#[test]
fn the_mistakes_every_cli_answers_alike() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = WrongType { toml: "window = \"wide\"\n", key: "window", value: "wide" };
    let mut cases = operator::shared_cases(&["send"], dir.path(), wrong);
    cases.push(operator::bad_rust_log(&["bench"]));
    operator::check(producer, &cases);
}

/// `--timeout 500ms` is half a second: no broker answers, so it times out
/// (exit 4) saying how long it waited; any log line is JSON (this path
/// may log none: the broker and worker tests see JSON lines for sure).
#[test]
fn human_timeouts_and_json_logs() {
    let output = producer()
        .args(["send", "--timeout", "500ms", "--log-format", "json", "--log-level", "debug"])
        .args(nowhere())
        .write_stdin("{\"id\": \"a\", \"items\": [1]}\n")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("orderly-producer: error:")).collect();
    assert!(stderr.contains("within 500ms"), "{stderr}");
    for line in logs {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object.get("timestamp").is_some() && object.get("level").is_some(), "{line}");
    }
    producer()
        .args(["send", "--timeout", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--timeout").and(predicate::str::contains("\"1m30s\"")));
}

#[test]
fn version_is_the_workspaces() {
    producer()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::diff(format!("orderly-producer {}\n", env!("CARGO_PKG_VERSION"))));
}
