//! Process tests of what an operator types and reads: log levels and
//! formats, config file errors, human durations and sizes, `--version`,
//! and systemd's readiness and watchdog notifications.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use orderly_test_support::operator::{self, WrongType};
use orderly_test_support::Running;
use predicates::prelude::*;

/// Longest any one broker in these tests may take to start or stop.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn broker() -> Command {
    Command::cargo_bin("orderly-broker").expect("binary built")
}

/// A free loopback port, chosen at run time.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `run` on ipc endpoints in `dir` (no TCP ports to collide on).
fn run_args(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display();
    [
        "run".to_owned(),
        "--data-dir".to_owned(),
        format!("{d}/data"),
        "--intake".to_owned(),
        format!("ipc://{d}/intake"),
        "--fanout".to_owned(),
        format!("ipc://{d}/fanout"),
        "--control".to_owned(),
        format!("ipc://{d}/control"),
    ]
    .into()
}

/// SIGTERM to a child this test started (by its PID).
fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(status.expect("kill runs").success());
}

/// The mistakes every orderly CLI answers alike (orderly_test_support's
/// table): a bad log level (flag or RUST_LOG), a missing config file, a
/// wrong type in one; the duration key's error also shows the form wanted.
#[test]
fn the_mistakes_every_cli_answers_alike() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = WrongType { toml: "heartbeat_interval_ms = \"often\"\n", key: "heartbeat_interval_ms", value: "often" };
    let mut wrong = operator::wrong_type_in_config(&["run"], dir.path(), wrong);
    wrong.stderr.push("\"30s\"".to_owned());
    let mut cases = vec![operator::bad_log_level(&["run"]), operator::missing_config(&["run"], dir.path()), wrong];
    // RUST_LOG still wins, but a bad one is as much an error.
    let mut rust_log = run_args(dir.path());
    rust_log.extend(["--admin".to_owned(), "off".to_owned()]);
    cases.push(operator::bad_rust_log(&rust_log.iter().map(String::as_str).collect::<Vec<_>>()));
    operator::check(
        || {
            let mut broker = broker();
            broker.timeout(START_TIMEOUT);
            broker
        },
        &cases,
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("orderly-broker"))
        .args(run_args(dir.path()))
        .args(["--admin", "off", "--log-format", "json", "--status-interval-secs", "1"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(&running.0);
    let started = Instant::now();
    while running.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < START_TIMEOUT, "the broker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    running.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "too few log lines: {stderr}");
    let mut messages = Vec::new();
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(object.get(key).is_some(), "no {key:?} in {line}");
        }
        messages.push(object["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "broker listening"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "shut down cleanly"), "{messages:?}");
}

/// Both forms reach the broker in the flag's unit: the retry check compares
/// them (30 s against 20000 ms) and says so, before anything starts.
#[test]
fn durations_and_sizes_are_accepted_in_human_form() {
    broker()
        .args(["run", "--ack-timeout-ms", "30s", "--attempt-timeout-ms", "20000"])
        .timeout(START_TIMEOUT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--attempt-timeout-ms 20000 must be more than --ack-timeout-ms 30000"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "ack_timeout_ms = \"1m\"\nattempt_timeout_ms = 45000\n").unwrap();
    broker()
        .args(["run", "--config"])
        .arg(&file)
        .timeout(START_TIMEOUT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--attempt-timeout-ms 45000 must be more than --ack-timeout-ms 60000"));
    broker()
        .args(["run", "--journal-segment-bytes", "1KiB"])
        .timeout(START_TIMEOUT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--journal-segment-bytes"))
        .stderr(predicate::str::contains("1024 bytes is less than the least allowed, 4096 bytes"));
    broker()
        .args(["run", "--pending-bytes-max", "lots"])
        .timeout(START_TIMEOUT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"8GiB\""));
    broker()
        .args(["run", "--heartbeat-interval-ms", "2m"])
        .timeout(START_TIMEOUT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("120000 ms is more than the most allowed, 60000 ms (1m)"));
}

#[test]
fn version_is_the_workspaces() {
    broker()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::diff(format!("orderly-broker {}\n", env!("CARGO_PKG_VERSION"))));
    assert_eq!(env!("CARGO_PKG_VERSION"), "0.5.4");
}

/// Under systemd (`Type=notify`): READY=1 once the broker listens, then
/// WATCHDOG=1 at half of WATCHDOG_USEC while its loop turns (the hooks).
/// NOTIFY_SOCKET is a datagram socket this test binds; WATCHDOG_PID must
/// be the broker's own, so a shell sets it to its PID and execs.
#[test]
fn systemd_hears_ready_and_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args = run_args(dir.path());
    args.extend(["--admin".to_owned(), admin]);
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(assert_cmd::cargo::cargo_bin("orderly-broker"))
        .args(&args)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let mut heard = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < START_TIMEOUT {
        if let Ok(n) = socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let ready = heard.iter().position(|m| m.lines().any(|l| l == "READY=1"));
        let pings = heard.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count();
        if ready.is_some() && pings >= 2 {
            break;
        }
    }
    let ready = heard.iter().find(|m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.is_some_and(|m| m.contains("STATUS=broker listening")), "no READY=1: {heard:?}");
    let pings = heard.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count();
    assert!(pings >= 2, "too few WATCHDOG=1: {heard:?}");
}

#[test]
fn unit_files_verify() {
    let Ok(status) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        println!("systemd-analyze is not installed: unit files not verified");
        return;
    };
    assert!(status.status.success());
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for unit in ["orderly-broker.service", "orderly-worker@.service", "orderly-broker-member@.service"] {
        let output = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(deploy.join(unit))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The binaries are not installed in /usr/local/bin here: that one
        // complaint is expected; anything else is a mistake in the unit.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !(l.contains("/usr/local/bin/") && l.contains("is not executable")))
            .collect();
        assert!(problems.is_empty(), "{unit}: {problems:?}");
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=30"] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
    }
}
