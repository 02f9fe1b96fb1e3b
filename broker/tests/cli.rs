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

/// A member whose key is not the one the group file gives clients would
/// admit nobody: refused at start (bad usage), naming both. Also: a config
/// file may complete what a flag requires (the member unit sets the secret
/// key, the file the authorized keys).
#[test]
fn a_member_started_with_another_key_than_the_group_file_lists_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    for name in ["own", "other"] {
        broker().args(["keygen", "--out", &path(name)]).assert().success();
    }
    let own_public = std::fs::read_to_string(path("own.pub")).unwrap();
    std::fs::write(path("authorized_keys"), format!("{} broker 1\n", own_public.trim())).unwrap();
    let ep = |n: &str| format!("ipc://{}", path(n));
    let group = format!(
        "[[member]]\nid = 1\nintake = \"{}\"\nfanout = \"{}\"\ncontrol = \"{}\"\npeer = \"{}\"\nadmin = \"127.0.0.1:1\"\npublic_key = \"{}\"\n",
        ep("intake"),
        ep("fanout"),
        ep("control"),
        ep("peer"),
        path("other.pub")
    );
    std::fs::write(path("group.toml"), group).unwrap();
    std::fs::write(path("member.toml"), format!("authorized_keys = \"{}\"\n", path("authorized_keys"))).unwrap();
    broker()
        .args(["run", "--group", &path("group.toml"), "--node-id", "1", "--data-dir", &path("data")])
        .args(["--config", &path("member.toml")])
        .env("ORDERLY_BROKER_CURVE_SECRET_KEY", path("own.key"))
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("member 1's public_key"))
        .stderr(predicate::str::contains(own_public.trim()));
}
