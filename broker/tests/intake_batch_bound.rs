//! A loop batch reads at most `INTAKE_BATCH_BYTES_MAX` of intake (the
//! message that crosses it is its last), so a queue built up in ZeroMQ is
//! journaled over several batches rather than decoded and buffered at once.
//! The real binary: stopped (SIGSTOP) while a raw producer queues about
//! 12 MiB of packed orders, then resumed; its journal commits are counted.

use std::process::Command;
use std::time::{Duration, Instant};

use orderly_common::limits::INTAKE_BATCH_BYTES_MAX;
use orderly_common::protocol::encode_orders;
use support::{ep, start_broker};

mod support;

/// Bounds every wait of the test.
const WAIT: Duration = Duration::from_secs(30);
/// `orders` messages queued while the broker is stopped.
const MESSAGES: usize = 12;
/// Orders in one message, of one item each.
const ORDERS_PER_MESSAGE: usize = 1000;
/// Bytes of that item: two messages cross the batch bound, one does not.
const ITEM_BYTES: usize = 1040;

/// Sends SIGSTOP or SIGCONT to the broker this test started (by its PID).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A counter of the broker's `/metrics`.
fn metric(admin: &str, name: &str) -> u64 {
    let text = orderly_broker::admin::request(admin, "GET", "/metrics").unwrap();
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_queued_intake_is_read_over_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]);
    let context = zmq::Context::new();
    let intake = context.socket(zmq::PUSH).unwrap();
    intake.set_linger(0).unwrap();
    intake.connect(&ep(&broker.dir, "intake")).unwrap();
    let item = vec![7u8; ITEM_BYTES];
    let items: [&[u8]; 1] = [&item];
    let messages: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|m| {
            let ids: Vec<String> = (0..ORDERS_PER_MESSAGE).map(|n| format!("m{m}-o{n}")).collect();
            let orders: Vec<(&str, &[&[u8]])> = ids.iter().map(|id| (id.as_str(), &items[..])).collect();
            encode_orders("p", &orders)
        })
        .collect();
    let (smallest, largest) =
        (messages.iter().map(Vec::len).min().unwrap(), messages.iter().map(Vec::len).max().unwrap());
    assert!(largest < INTAKE_BATCH_BYTES_MAX && 2 * smallest >= INTAKE_BATCH_BYTES_MAX, "{smallest}..{largest} B");
    let commits_before = metric(&broker.admin, "orderly_journal_commits_total");

    signal(broker.child.id(), "STOP");
    for body in &messages {
        intake.send_multipart([b"t".as_slice(), body], 0).unwrap();
    }
    // The messages reach the broker's side while it is stopped only as far
    // as the socket buffers go; the rest wait in this side's queue.
    std::thread::sleep(Duration::from_millis(300));
    signal(broker.child.id(), "CONT");

    let total = (MESSAGES * ORDERS_PER_MESSAGE) as u64;
    let deadline = Instant::now() + WAIT;
    while metric(&broker.admin, "orderly_orders_sealed_total") < total {
        assert!(Instant::now() < deadline, "not every order was sealed within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two messages a batch at most: at least half as many commits. The
    // turn that seals the last orders answers `/metrics` before its commit
    // is counted, so the count is awaited too.
    let commits = || metric(&broker.admin, "orderly_journal_commits_total") - commits_before;
    while commits() < (MESSAGES / 2) as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let commits = commits();
    assert!(commits >= (MESSAGES / 2) as u64, "{MESSAGES} queued messages journaled in {commits} commits");
}
