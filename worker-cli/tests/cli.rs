//! The command line: help, usage errors and their exit codes.

use assert_cmd::Command;
use predicates::prelude::*;

fn worker() -> Command {
    let mut cmd = Command::cargo_bin("orderly-worker").expect("binary built");
    // A developer's environment must not change what these tests see.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERLY_WORKER_") {
            cmd.env_remove(key);
        }
    }
    cmd.timeout(std::time::Duration::from_secs(20));
    cmd
}

#[test]
fn help_mentions_the_handlers() {
    worker().arg("--help").assert().success().stdout(predicate::str::contains("--sink"));
    worker()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--sink").and(predicate::str::contains("ORDERLY_WORKER_FANOUT")));
}

#[test]
fn unknown_flag_is_named() {
    worker()
        .args(["run", "--id", "w1", "--noop", "--frobnicate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--frobnicate"));
}

#[test]
fn malformed_endpoint_is_refused_with_its_text() {
    worker()
        .args(["run", "--id", "w1", "--noop", "--fanout", "localhost:5571"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("localhost:5571").and(predicate::str::contains("tcp://")));
}

#[test]
fn missing_handler_is_a_usage_error() {
    worker()
        .args(["run", "--id", "w1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--exec").and(predicate::str::contains("--noop")));
}

#[test]
fn two_handlers_are_refused() {
    worker().args(["run", "--id", "w1", "--noop", "--sink", "/tmp"]).assert().code(2);
}

#[test]
fn bad_worker_id_is_refused() {
    worker().args(["run", "--id", "a/b", "--noop"]).assert().code(2).stderr(predicate::str::contains("worker id"));
}

#[test]
fn concurrency_out_of_range_is_refused() {
    worker().args(["run", "--id", "w1", "--noop", "--concurrency", "0"]).assert().code(2);
    worker().args(["run", "--id", "w1", "--noop", "--concurrency", "1025"]).assert().code(2);
}

#[test]
fn dispatches_max_out_of_range_is_refused_and_documented() {
    worker()
        .args(["run", "--id", "w1", "--noop", "--dispatches-max", "257"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--dispatches-max"));
    worker()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--dispatches-max").and(predicate::str::contains("0 keeps one order per")));
}

#[test]
fn environment_supplies_flags() {
    worker()
        .args(["run", "--noop"])
        .env("ORDERLY_WORKER_ID", "w1")
        .env("ORDERLY_WORKER_CONTROL", "nowhere")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nowhere"));
}

#[test]
fn config_file_keys_are_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, "id = \"w1\"\nnoop = true\nconcurency = 4\n").expect("write config");
    worker().args(["run", "--config"]).arg(&path).assert().code(2).stderr(predicate::str::contains("\"concurency\""));
}

#[test]
fn config_file_may_supply_the_id_and_handler() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("worker.toml");
    // A valid file with a bad endpoint proves the file was read and merged
    // without starting a worker.
    std::fs::write(&path, "id = \"w1\"\nsink = \"/tmp/x\"\nfanout = \"bad-endpoint\"\n").expect("write config");
    worker().args(["run", "--config"]).arg(&path).assert().code(2).stderr(predicate::str::contains("bad-endpoint"));
}

#[test]
fn unusable_sink_directory_is_a_runtime_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    worker()
        .args(["run", "--id", "w1", "--sink"])
        .arg(file.join("sub"))
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with("error: cannot prepare the handler"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    // Nothing listens on port 1 of loopback: ZeroMQ keeps retrying quietly.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("orderly-worker"))
        .args(["run", "--id", "w1", "--noop", "--fanout", "tcp://127.0.0.1:1", "--control", "tcp://127.0.0.1:1"])
        .env("RUST_LOG", "off")
        .spawn()
        .expect("worker starts");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(killed.expect("kill runs").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn help_explains_the_handler_time_limit_and_exit_codes() {
    worker().args(["run", "--help"]).assert().success().stdout(
        predicate::str::contains("--handler-timeout-ms")
            .and(predicate::str::contains("0 is no limit"))
            .and(predicate::str::contains("ORDERLY_WORKER_HANDLER_TIMEOUT_MS"))
            .and(predicate::str::contains("Exit codes of an --exec handler"))
            .and(predicate::str::contains("delay_ms=N")),
    );
}

#[test]
fn handler_timeout_must_be_a_number_from_flag_env_or_file() {
    worker().args(["run", "--id", "w1", "--noop", "--handler-timeout-ms", "soon"]).assert().code(2);
    worker()
        .args(["run", "--id", "w1", "--noop"])
        .env("ORDERLY_WORKER_HANDLER_TIMEOUT_MS", "-1")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-1"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, "id = \"w1\"\nnoop = true\nhandler_timeout_ms = \"soon\"\n").expect("write config");
    worker().args(["run", "--config"]).arg(&path).assert().code(2).stderr(predicate::str::contains("soon"));
}

#[test]
fn group_help_points_to_the_replication_docs() {
    worker().args(["run", "--help"]).assert().success().stdout(predicate::str::contains("docs/REPLICATION.md"));
}

#[test]
fn group_conflicts_with_fanout_from_flag_environment_or_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = dir.path().join("group.toml");
    worker()
        .args(["run", "--id", "w1", "--noop", "--group"])
        .arg(&group)
        .args(["--control", "tcp://127.0.0.1:1"])
        .assert()
        .code(2);
    worker()
        .args(["run", "--id", "w1", "--noop", "--group"])
        .arg(&group)
        .env("ORDERLY_WORKER_FANOUT", "tcp://127.0.0.1:1")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!("id = \"w1\"\nnoop = true\ngroup = {:?}\ncontrol = \"tcp://127.0.0.1:1\"\n", group),
    )
    .expect("write config");
    worker()
        .args(["run", "--config"])
        .arg(&config)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn bad_group_file_is_a_usage_error_with_the_parsers_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = dir.path().join("group.toml");
    std::fs::write(&group, "[[member]]\nid = 0\n").expect("write group");
    worker()
        .args(["run", "--id", "w1", "--noop", "--group"])
        .arg(&group)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("group file").and(predicate::str::contains("is not a valid group file")));
}
