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

// ------------------------------------------------- against a fake broker

// The library's tests own the fake broker; one copy serves both.
#[path = "../../producer/tests/fake_broker/mod.rs"]
mod fake_broker;

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fake_broker::{Action, FakeBroker};
use orderly_common::protocol::RejectReason;

fn against(broker: &FakeBroker, id: &str) -> Command {
    let mut command = producer();
    command.args(["send", "--id", id, "--intake", broker.intake.as_str(), "--fanout", broker.fanout.as_str()]);
    command.timeout(Duration::from_secs(30));
    command
}

#[test]
fn send_resends_lists_rejects_and_logs_confirms() {
    // Every first copy is lost; "bad" is rejected.
    let broker = FakeBroker::start(|order, nth| match (order, nth) {
        (_, 1) => Action::Ignore,
        ("bad", _) => Action::Reject(RejectReason::Gap { missing: 1 }),
        _ => Action::Confirm,
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("confirmed.txt");
    let input = "{\"id\": \"a\", \"items\": [1]}\nnot json\n{\"id\": \"bad\", \"items\": [2]}\n{\"id\": \"c\", \"items\": []}\n";
    against(&broker, "resender")
        .args(["--confirm-timeout", "0.2", "--timeout", "5", "--confirmed-log", log.to_str().unwrap()])
        .write_stdin(input)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("sent 3 orders: 2 confirmed, 1 rejected, 1 invalid, 0 unanswered in"))
        .stderr(predicate::str::contains("rejected order \"bad\": sequence gap"))
        .stderr(predicate::str::contains("skipped invalid order: line 2"));
    let mut confirmed: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    confirmed.sort();
    assert_eq!(confirmed, ["a", "c"], "one line per confirmed order, though each was sent twice");
    assert_eq!(broker.seen().finishes("a"), 2);
}

#[test]
fn an_order_repeated_in_the_input_is_sent_once() {
    // Nothing is answered, so every repeat finds its order still awaiting
    // an answer (a confirmed order repeated later is sent again).
    let broker = FakeBroker::start(|_, _| Action::Ignore);
    // 100 orders, each ten times in a row: the reader runs ahead of the
    // sender, so repeats land in one batch as well as in later ones.
    let input: String = (0..1000).map(|i| format!("{{\"id\": \"o-{}\", \"items\": [{}]}}\n", i / 10, i / 10)).collect();
    against(&broker, "repeater")
        .args(["--timeout", "1", "--confirm-timeout", "30"])
        .write_stdin(input)
        .assert()
        .code(4)
        .stdout(predicate::str::contains("sent 100 orders: 0 confirmed, 0 rejected, 0 invalid, 100 unanswered in"))
        .stderr(predicate::str::contains("900 input orders were not sent again"));
    assert!((0..100).all(|n| broker.seen().finishes(&format!("o-{n}")) == 1), "each order sent once");
}

#[test]
fn a_full_window_reports_backpressure() {
    let broker = FakeBroker::start(|_, _| Action::Ignore);
    let input: String = (0..5).map(|i| format!("{{\"id\": \"o-{i}\", \"items\": [{i}]}}\n")).collect();
    against(&broker, "stuck")
        .args(["--window", "2", "--timeout", "1"])
        .write_stdin(input)
        .assert()
        .code(4)
        // Never more than the window; how many of the two went out before
        // the timeout depends on scheduling on a loaded machine.
        .stdout(
            predicate::str::is_match("sent [12] orders: 0 confirmed, 0 rejected, 0 invalid, [12] unanswered").unwrap(),
        )
        .stderr(predicate::str::contains("backpressure"));
}

#[test]
fn the_outbox_survives_kill_9_and_the_next_run_resends_it() {
    let answering = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&answering);
    let broker =
        FakeBroker::start(move |_, _| if flag.load(Ordering::Relaxed) { Action::Confirm } else { Action::Ignore });
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let input: String = (0..5).map(|i| format!("{{\"id\": \"k-{i}\", \"items\": [{i}, \"x\"]}}\n")).collect();

    // Sent, never answered, then killed while stdin is still open.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orderly-producer"))
        .args(["send", "--id", "crashy", "--intake", broker.intake.as_str(), "--fanout", broker.fanout.as_str()])
        .args(["--confirm-timeout", "60", "--outbox", outbox.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(input.as_bytes()).unwrap();
    let all_sent = broker.wait_for(Duration::from_secs(10), |seen| seen.finishes.len() == 5);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(all_sent, "the first run sent every order: {:?}", broker.seen().finishes);

    // The next run resends them before any input (there is none).
    answering.store(true, Ordering::Relaxed);
    against(&broker, "crashy")
        .args(["--outbox", outbox.to_str().unwrap()])
        .write_stdin("")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("sent 5 orders: 5 confirmed, 0 rejected, 0 invalid, 0 unanswered"))
        .stderr(predicate::str::contains("resending 5 orders recovered from the outbox"));
    assert_eq!(broker.seen().items("k-3"), vec![b"3".to_vec(), b"\"x\"".to_vec()]);

    // Answered orders are gone from the outbox; sending the same input
    // again resends them, and the broker (here: confirms) deduplicates.
    against(&broker, "crashy")
        .args(["--outbox", outbox.to_str().unwrap()])
        .write_stdin(input)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("sent 5 orders: 5 confirmed"))
        .stderr(predicate::str::contains("recovered").not());
}

#[test]
fn two_runs_cannot_share_an_outbox() {
    let broker = FakeBroker::start(|_, _| Action::Ignore);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().to_str().unwrap().to_owned();
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_orderly-producer"))
        .args(["send", "--id", "one", "--intake", broker.intake.as_str(), "--fanout", broker.fanout.as_str()])
        .args(["--outbox", &outbox])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(broker.wait_for(Duration::from_secs(10), |seen| seen.hellos > 0), "the first run connected");
    let second = against(&broker, "two").args(["--outbox", &outbox]).write_stdin("").assert();
    first.kill().unwrap();
    first.wait().unwrap();
    second.code(1).stderr(predicate::str::contains("two producers cannot share an outbox"));
}

// ------------------------------------------------------------ --group

#[test]
fn group_help_points_to_the_replication_docs() {
    producer().args(["send", "--help"]).assert().success().stdout(predicate::str::contains("docs/REPLICATION.md"));
    producer().args(["bench", "--help"]).assert().success().stdout(predicate::str::contains("--group <FILE>"));
}

#[test]
fn group_conflicts_with_intake_from_flag_environment_or_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let group = dir.path().join("group.toml");
    producer().args(["send", "--group"]).arg(&group).args(["--intake", "tcp://127.0.0.1:1"]).assert().code(2);
    producer()
        .args(["send", "--group"])
        .arg(&group)
        .env("ORDERLY_PRODUCER_FANOUT", "tcp://127.0.0.1:1")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    let config = dir.path().join("producer.toml");
    std::fs::write(&config, format!("group = {:?}\nintake = \"tcp://127.0.0.1:1\"\n", group)).expect("write config");
    producer()
        .args(["send", "--config"])
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
    producer()
        .args(["send", "--group"])
        .arg(&group)
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("group file").and(predicate::str::contains("is not a valid group file")));
    // Missing: the read error, also bad usage.
    producer()
        .args(["send", "--group"])
        .arg(dir.path().join("absent.toml"))
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("check the path given to --group"));
}

/// `relay --help` teaches the relay: the INSERT, the URL forms, examples,
/// its own flags and the shared ones told for the relay; `--outbox` (which
/// the relay refuses) is not offered, though still named in its error.
#[test]
fn relay_help_teaches_the_relay() {
    let output = producer().args(["relay", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for wanted in [
        "INSERT INTO orderly_outbox (order_id, items) VALUES",
        "sqlite:PATH",
        "postgres://USER",
        "Examples:",
        "--retention <DURATION>",
        "--archive-table <NAME>",
        "--metrics <HOST:PORT>",
        "Every relay on one table runs with the same --id",
        "[default: 24h]",
    ] {
        assert!(help.contains(wanted), "{wanted:?} missing from relay --help:\n{help}");
    }
    assert!(!help.contains("--outbox <DIR>") && !help.contains("--confirmed-log"), "{help}");
    // The database's flags come before the broker's.
    assert!(help.find("--database").unwrap() < help.find("--intake").unwrap(), "{help}");
    producer().args(["send", "--help"]).assert().success().stdout(predicate::str::contains("--outbox <DIR>"));
    producer()
        .args(["relay", "--database", "sqlite:x.db", "--outbox", "d"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("relay takes no --outbox"));
}

#[test]
fn relay_retention_and_archive_are_checked() {
    producer()
        .args(["relay", "--database", "sqlite:x.db", "--retention", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"soon\" is not a duration"));
    producer()
        .args(["relay", "--print-schema", "--archive-table", "orderly_outbox"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is the outbox table itself"));
    producer()
        .args(["relay", "--print-schema", "--database", "sqlite:x.db", "--archive-table", "old_rows"])
        .assert()
        .success()
        .stdout(predicate::str::contains("CREATE TABLE IF NOT EXISTS old_rows"));
}
