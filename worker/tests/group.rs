//! The worker against a group of three brokers, over real ZeroMQ: it
//! heartbeats the leader alone and announces itself to a new leader at
//! once, not at its next heartbeat. The group is scripted (the producer's
//! `scripted_group`, included by path), standing in for the replicated
//! broker group until it exists.

#[path = "../../producer/tests/scripted_group/mod.rs"]
mod scripted_group;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderly_worker::handler::Noop;
use orderly_worker::io::{self, Config, Exit};
use scripted_group::{worker_nonce, Group, Received};

/// Far above how fast the worker must reach a new leader: a heartbeat
/// sent by this timer would come too late for the test.
const HEARTBEAT_INTERVAL_MS: u64 = 3000;

#[test]
fn a_workers_heartbeats_move_to_a_new_leader_at_once_and_it_is_welcomed_there() {
    let group = Group::start(3);
    let first = group.members.get(1).unwrap().clone();
    let config = Config {
        worker: "w1".into(),
        incarnation: 5,
        fanout: first.fanout,
        control: first.control,
        concurrency: 1,
        handler: Arc::new(Noop),
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        heartbeat_liveness: 3,
        drain_timeout_ms: 1000,
        dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
        curve: None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let members = group.members.clone();
    let worker = std::thread::spawn(move || io::run_group(config, members, &flag));

    let welcomed_at = |member: u64, timeout| {
        group.wait_for(member, timeout, move |what| *what == Received::Heartbeat(Some(worker_nonce(member))))
    };
    // At start-up a welcome may be lost before our subscription reaches
    // the member; the next heartbeat (one interval later) fixes that.
    let timeout = Duration::from_millis(2 * HEARTBEAT_INTERVAL_MS);
    assert!(welcomed_at(1, timeout).is_some(), "welcomed by member 1: {:?}", group.received(1));

    let elected = Instant::now();
    group.elect(2);
    let reached = group.wait_for(2, Duration::from_secs(1), |what| matches!(what, Received::Heartbeat(_)));
    let reached = reached.expect("a heartbeat reached member 2 within a second");
    assert!(reached - elected < Duration::from_millis(500), "at once, not at the next heartbeat");
    let welcomed = welcomed_at(2, Duration::from_secs(1)).expect("welcomed by member 2 within a second");
    assert!(welcomed - elected < Duration::from_secs(1));
    assert!(group.received(3).is_empty(), "nothing to a follower: {:?}", group.received(3));
    let before = group.received(1).len();
    std::thread::sleep(Duration::from_millis(200));
    // The deposed member 1 still announces itself in its old term: ignored.
    assert_eq!(group.received(1).len(), before, "nothing more to member 1");

    shutdown.store(true, Ordering::Relaxed);
    let exit = worker.join().expect("the loop does not panic").expect("the loop ends cleanly");
    assert_eq!(exit, Exit::Drained);
}
