//! Process tests of the `orderly-broker` binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn broker() -> Command {
    Command::cargo_bin("orderly-broker").expect("binary built")
}

#[test]
fn help_teaches() {
    broker()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("run"))
        .stdout(predicate::str::contains("Example"));
    broker()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--intake"))
        .stdout(predicate::str::contains("--data-dir"))
        .stdout(predicate::str::contains("ORDERLY_BROKER_INTAKE"));
}

#[test]
fn unknown_flag_is_named() {
    broker().args(["run", "--no-such-flag"]).assert().code(2).stderr(predicate::str::contains("--no-such-flag"));
}

#[test]
fn malformed_endpoint_is_named() {
    broker()
        .args(["run", "--intake", "localhost:5570"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("localhost:5570"))
        .stderr(predicate::str::contains("tcp://"));
    broker()
        .args(["run", "--control", "tcp://127.0.0.1:99999"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("99999"));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    broker()
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .args(["--intake", &format!("tcp://127.0.0.1:{port}")])
        .args(["--fanout", &format!("ipc://{}/fanout", dir.path().display())])
        .args(["--control", &format!("ipc://{}/control", dir.path().display())])
        .args(["--admin", "off"])
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot bind the intake socket"));
}

#[test]
fn config_file_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "intake = \"tcp://127.0.0.1:5570\"\nnot_a_setting = 1\n").unwrap();
    broker()
        .args(["run", "--config"])
        .arg(&file)
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not_a_setting"));
}
