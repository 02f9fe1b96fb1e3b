//! What an operator types and reads: log levels and formats, config file
//! errors and precedence, human durations, `--version`.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use orderly_test_support::operator::{self, WrongType};
use predicates::prelude::*;

/// Longest one worker in these tests may take to start or stop.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn worker() -> Command {
    let mut cmd = Command::cargo_bin("orderly-worker").expect("binary built");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERLY_WORKER_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.timeout(RUN_TIMEOUT);
    cmd
}

/// The mistakes every orderly CLI answers alike (orderly_test_support's
/// table): a bad log level (flag or RUST_LOG), a missing config file, a
/// wrong type in one.
#[test]
fn the_mistakes_every_cli_answers_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong =
        WrongType { toml: "id = \"w1\"\nnoop = true\nconcurrency = \"four\"\n", key: "concurrency", value: "four" };
    let mut cases = operator::shared_cases(&["run"], dir.path(), wrong);
    cases.push(operator::bad_rust_log(&[
        "run",
        "--id",
        "w1",
        "--noop",
        "--fanout",
        "tcp://127.0.0.1:1",
        "--control",
        "tcp://127.0.0.1:1",
    ]));
    operator::check(worker, &cases);
}

/// The file's `exec` gives way to the command line's handler: `--sink` on
/// an unusable directory fails preparing the sink (exit 1), not with a
/// conflict naming `--exec`, which the user never typed.
#[test]
fn the_command_lines_handler_wins_over_the_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, "id = \"w1\"\nexec = \"./handle.sh\"\n").expect("write config");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    worker()
        .args(["run", "--config"])
        .arg(&path)
        .arg("--sink")
        .arg(file.join("sub"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot prepare the handler").and(predicate::str::contains("--exec").not()));
    // Two handlers on the command line are still refused.
    worker().args(["run", "--config"]).arg(&path).args(["--noop", "--sink", "/tmp/x"]).assert().code(2);
}

/// `--noop` over the file's `exec`, human durations, JSON logs: the worker
/// runs (no broker: ZeroMQ retries quietly), logs JSON lines, and drains
/// on SIGTERM with exit 0.
#[test]
fn json_logs_noop_over_the_files_exec_and_human_durations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, "id = \"w1\"\nexec = \"./handle.sh\"\nhandler_timeout_ms = \"1m\"\n").expect("write config");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("orderly-worker"))
        .args(["run", "--config"])
        .arg(&path)
        .args(["--noop", "--fanout", "tcp://127.0.0.1:1", "--control", "tcp://127.0.0.1:1"])
        .args(["--log-format", "json", "--drain-timeout-secs", "1m", "--heartbeat-interval-ms", "1s"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    std::thread::sleep(Duration::from_millis(500));
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("worker did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed.expect("kill runs").success());
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.trim().is_empty(), "no log lines");
    for line in stderr.lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(object.get(key).is_some(), "no {key:?} in {line}");
        }
    }
    assert!(stderr.contains("noop"), "the handler is not noop: {stderr}");
}

#[test]
fn bad_durations_are_named_with_an_example() {
    worker().args(["run", "--id", "w1", "--noop", "--drain-timeout-secs", "500ms"]).assert().code(2).stderr(
        predicate::str::contains("--drain-timeout-secs").and(predicate::str::contains("whole number of seconds")),
    );
    worker()
        .args(["run", "--id", "w1", "--noop", "--heartbeat-interval-ms", "later"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"1m30s\""));
}

#[test]
fn version_is_the_workspaces() {
    worker()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::diff(format!("orderly-worker {}\n", env!("CARGO_PKG_VERSION"))));
}
