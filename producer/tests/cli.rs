//! Process tests of the `orderly-producer` binary.

use assert_cmd::Command;
use predicates::prelude::*;

fn producer() -> Command {
    Command::cargo_bin("orderly-producer").expect("binary built")
}

#[test]
fn help_teaches() {
    producer()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("send"))
        .stdout(predicate::str::contains("Exit codes"));
    producer().args(["send", "--help"]).assert().success().stdout(predicate::str::contains("--file"));
    producer().args(["bench", "--help"]).assert().success().stdout(predicate::str::contains("--item-bytes"));
}

#[test]
fn unknown_flag_is_named() {
    producer().args(["send", "--bogus"]).assert().code(2).stderr(predicate::str::contains("--bogus"));
}

#[test]
fn malformed_endpoint_and_id_are_named() {
    producer()
        .args(["send", "--intake", "127.0.0.1:5570"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("127.0.0.1:5570"));
    producer().args(["send", "--id", "a/b"]).assert().code(2).stderr(predicate::str::contains("'/'"));
}

#[test]
fn no_broker_times_out_with_a_clear_message() {
    // A port nobody listens on: reserve one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    producer()
        .args(["send", "--timeout", "0.5"])
        .args(["--intake", &format!("tcp://127.0.0.1:{port}"), "--fanout", &format!("tcp://127.0.0.1:{port}")])
        .write_stdin("{\"id\": \"a\", \"items\": [1]}\n")
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no answer from a broker"));
}
