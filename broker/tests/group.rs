//! A group of three real broker processes on loopback (`--group`): one is
//! elected; an order is confirmed only once a majority has it (one
//! follower down: still confirmed; the leader alone: no confirm); after a
//! kill -9 of the leader another member leads within seconds and holds
//! every order confirmed before. A plain ZeroMQ client plays the producer.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::producer_topic;
use orderly_common::protocol::{FanoutMsg, IntakeMsg, Items};
use serde_bytes::ByteBuf;
use support::{free_port, BROKER};

/// Elections take 2.2 s and up (22+ ticks of 100 ms): a leader within this.
const ELECTION_WAIT: Duration = Duration::from_secs(15);
const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// How long a confirm must stay away when no majority is up.
const NO_CONFIRM_WAIT: Duration = Duration::from_secs(3);

struct Member {
    id: u64,
    admin: String,
    intake: String,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, dir: &Path, group: &Path) {
        let log = std::fs::File::create(dir.join(format!("member-{}.log", self.id))).unwrap();
        let child = Command::new(BROKER)
            .args(["run", "--group"])
            .arg(group)
            .args(["--node-id", &self.id.to_string(), "--heartbeat-interval-ms", "100", "--data-dir"])
            .arg(dir.join(format!("data-{}", self.id)))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SHOW_BROKER").is_some() { Stdio::inherit() } else { Stdio::from(log) })
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// `/status`'s `group` object, if the member answers.
    fn group_status(&self) -> Option<serde_json::Value> {
        let status = http_get(&self.admin, "/status")?;
        status.get("group").cloned()
    }

    fn status(&self) -> Option<serde_json::Value> {
        http_get(&self.admin, "/status")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_get(addr: &str, path: &str) -> Option<serde_json::Value> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = &text[text.find("\r\n\r\n")? + 4..];
    serde_json::from_str(body.trim()).ok()
}

fn ep(dir: &Path, name: &str) -> String {
    format!("ipc://{}", dir.join(name).display())
}

fn write_group(dir: &Path) -> (std::path::PathBuf, Vec<Member>) {
    let mut text = String::new();
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let admin = format!("127.0.0.1:{}", free_port());
        let intake = ep(dir, &format!("intake-{id}"));
        text.push_str(&format!(
            "[[member]]\nid = {id}\nintake = \"{intake}\"\nfanout = \"{}\"\ncontrol = \"{}\"\npeer = \"{}\"\nadmin = \"{admin}\"\n\n",
            ep(dir, &format!("fanout-{id}")),
            ep(dir, &format!("control-{id}")),
            ep(dir, &format!("peer-{id}")),
        ));
        members.push(Member { id, admin, intake, child: None });
    }
    let path = dir.join("group.toml");
    std::fs::write(&path, text).unwrap();
    (path, members)
}

/// Waits for a member among `alive` that says it is the serving leader.
fn wait_leader(members: &[Member], alive: &[usize], newer_than: u64) -> Option<(usize, u64)> {
    let deadline = Instant::now() + ELECTION_WAIT;
    while Instant::now() < deadline {
        for &i in alive {
            if let Some(group) = members[i].group_status() {
                let term = group["term"].as_u64().unwrap_or(0);
                if group["role"] == "leader" && term > newer_than {
                    return Some((i, term));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Sends a one-item order to `member` and waits for its confirm on the
/// member's fanout; true when it came within `wait`.
fn send_and_confirm(context: &zmq::Context, dir: &Path, member: &Member, order: &str, wait: Duration) -> bool {
    let sub = context.socket(zmq::SUB).unwrap();
    sub.connect(&ep(dir, &format!("fanout-{}", member.id))).unwrap();
    sub.set_subscribe(&producer_topic("p")).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the subscription reaches the broker
    let push = context.socket(zmq::PUSH).unwrap();
    push.set_linger(0).unwrap();
    push.connect(&member.intake).unwrap();
    let message = IntakeMsg::Items(Items {
        producer: "p".into(),
        order: order.into(),
        begin: true,
        first: 0,
        data: vec![ByteBuf::from(format!("{{\"order\":\"{order}\"}}").into_bytes())],
        finish: Some(1),
    });
    push.send_multipart([b"".as_slice(), message.encode().as_slice()], 0).unwrap();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        let frames = sub.recv_multipart(0).unwrap();
        match FanoutMsg::decode(&frames[1]) {
            Ok(FanoutMsg::Confirm(c)) if c.order == order => return true,
            Ok(FanoutMsg::Confirms(c)) if c.orders.iter().any(|o| o == order) => return true,
            _ => {}
        }
    }
    false
}

/// True when `member`'s fanout carries a heartbeat of its own naming
/// itself leader in `term` within `wait` (a quiet leader still announces
/// itself: its heartbeats are not stuck behind an entry that never comes).
fn hears_leader_heartbeat(context: &zmq::Context, dir: &Path, member: &Member, term: u64, wait: Duration) -> bool {
    let sub = context.socket(zmq::SUB).unwrap();
    sub.connect(&ep(dir, &format!("fanout-{}", member.id))).unwrap();
    sub.set_subscribe(orderly_common::ids::BROADCAST_TOPIC).unwrap();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        let frames = sub.recv_multipart(0).unwrap();
        if let Ok(FanoutMsg::Heartbeat(hb)) = FanoutMsg::decode(&frames[1]) {
            if hb.member == Some(member.id) && hb.leader == Some(member.id) && hb.term == term {
                return true;
            }
        }
    }
    false
}

fn pending_orders(member: &Member) -> Option<u64> {
    member.status()?.get("pending_orders")?.as_u64()
}

#[test]
fn three_members_elect_confirm_with_a_majority_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let (group, mut members) = write_group(dir.path());
    for member in &mut members {
        member.start(dir.path(), &group);
    }
    let context = zmq::Context::new();
    let (leader, term) = wait_leader(&members, &[0, 1, 2], 0).expect("a leader within the election wait");
    assert!(hears_leader_heartbeat(&context, dir.path(), &members[leader], term, Duration::from_secs(3)));
    assert!(send_and_confirm(&context, dir.path(), &members[leader], "o-1", CONFIRM_WAIT), "o-1 confirmed");

    // One follower down: a majority remains, confirms go on.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    members[followers[0]].kill();
    assert!(send_and_confirm(&context, dir.path(), &members[leader], "o-2", CONFIRM_WAIT), "o-2 confirmed by 2 of 3");

    // It comes back; the leader is killed: a survivor leads, with both orders.
    members[followers[0]].start(dir.path(), &group);
    std::thread::sleep(Duration::from_millis(1500)); // it catches up
    members[leader].kill();
    let killed = Instant::now();
    let (new_leader, new_term) = wait_leader(&members, &followers, term).expect("a new leader after the kill");
    let failover = killed.elapsed();
    eprintln!("failover: a new leader serving {failover:?} after kill -9 (term {term} -> {new_term})");
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    assert_eq!(pending_orders(&members[new_leader]), Some(2), "the new leader holds both confirmed orders");
    assert!(send_and_confirm(&context, dir.path(), &members[new_leader], "o-3", CONFIRM_WAIT), "o-3 confirmed");

    // Alone, the new leader confirms nothing.
    let other = followers.iter().copied().find(|&i| i != new_leader).unwrap();
    members[other].kill();
    assert!(
        !send_and_confirm(&context, dir.path(), &members[new_leader], "o-4", NO_CONFIRM_WAIT),
        "o-4 must not be confirmed without a majority"
    );
}

/// The members as the client libraries take them.
fn client_members(dir: &Path, members: &[Member]) -> orderly_common::members::Members {
    let list = members
        .iter()
        .map(|m| orderly_common::members::Member {
            id: m.id,
            intake: m.intake.parse().unwrap(),
            fanout: ep(dir, &format!("fanout-{}", m.id)).parse().unwrap(),
            control: ep(dir, &format!("control-{}", m.id)).parse().unwrap(),
            public_key: None,
        })
        .collect();
    orderly_common::members::Members::new(list).unwrap()
}

/// Sends `ids` with the real producer library; every one must be confirmed
/// within `wait` (the library resends to a new leader by itself).
fn send_all(producer: &mut orderly_producer::Producer, ids: &[String], wait: Duration) {
    let mut receipts = Vec::new();
    for id in ids {
        let order = orderly_producer::Order::new(id.clone(), vec![format!("{{\"id\":\"{id}\"}}").into_bytes()]);
        receipts.push((id, producer.send(order).expect("the outbox takes the order")));
    }
    for (id, receipt) in receipts {
        let outcome = receipt.wait(producer, wait).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(outcome.is_confirmed(), "{id}: {outcome:?}");
    }
}

#[test]
fn real_clients_follow_a_new_leader_after_a_kill_and_nothing_confirmed_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (group, mut members) = write_group(dir.path());
    for member in &mut members {
        member.start(dir.path(), &group);
    }
    let (leader, term) = wait_leader(&members, &[0, 1, 2], 0).expect("a leader within the election wait");
    let client_members = client_members(dir.path(), &members);
    let sink = dir.path().join("sink");
    std::fs::create_dir_all(&sink).unwrap(); // the worker CLI does this (`Handler::check`)
    let first = client_members.iter().next().unwrap().clone();
    let config = orderly_worker::io::Config {
        worker: "w1".into(),
        incarnation: 7,
        fanout: first.fanout,
        control: first.control,
        concurrency: 2,
        handler: std::sync::Arc::new(orderly_worker::handler::Sink { dir: sink.clone() }),
        heartbeat_interval_ms: 200,
        heartbeat_liveness: 5,
        drain_timeout_ms: 1000,
        dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
        curve: None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let (flag, worker_members) = (Arc::clone(&shutdown), client_members.clone());
    let worker = std::thread::spawn(move || orderly_worker::io::run_group(config, worker_members, &flag));
    let mut config = orderly_producer::ProducerConfig::with_members("p", client_members);
    config.confirm_timeout = Duration::from_secs(1);
    config.resend_backoff_max = Duration::from_secs(2);
    let mut producer = orderly_producer::Producer::connect(config).expect("the producer finds the leader");

    let before: Vec<String> = (0..20).map(|n| format!("before-{n}")).collect();
    send_all(&mut producer, &before, CONFIRM_WAIT);
    members[leader].kill();
    let killed = Instant::now();
    let after: Vec<String> = (0..20).map(|n| format!("after-{n}")).collect();
    send_all(&mut producer, &after, Duration::from_secs(30));
    eprintln!("real clients: 20 orders sent after kill -9 confirmed {:?} after it", killed.elapsed());
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    assert!(wait_leader(&members, &survivors, term).is_some(), "a new leader");

    // Every confirmed order reaches the worker's sink (at least once).
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = |ids: &[String]| -> Vec<String> {
        ids.iter().filter(|id| !orderly_worker::handler::sink_path(&sink, "p", id).exists()).cloned().collect()
    };
    let mut left: Vec<String> = missing(&before).into_iter().chain(missing(&after)).collect();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = missing(&left);
    }
    assert!(left.is_empty(), "confirmed but never delivered: {left:?}");
    shutdown.store(true, Ordering::Relaxed);
    let _ = worker.join();
}

#[test]
fn a_group_member_refuses_an_fsync_policy_other_than_always() {
    let dir = tempfile::tempdir().unwrap();
    let (group, _members) = write_group(dir.path());
    let output = Command::new(BROKER)
        .args(["run", "--group"])
        .arg(&group)
        .args(["--node-id", "1", "--fsync", "never", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only --fsync always"), "{stderr}");
}

// --- Compaction and snapshots (issue 16) ---

/// Small journal segments, so compaction has something to remove within
/// a short test.
const SMALL_SEGMENT_BYTES: &str = "65536";
/// How the journal names segment files (`journal::format`).
const SEGMENT_EXTENSION: &str = ".seg";

impl Member {
    /// [`Member::start`] with extra arguments.
    fn start_with(&mut self, dir: &Path, group: &Path, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("member-{}.log", self.id)))
            .unwrap();
        let child = Command::new(BROKER)
            .args(["run", "--group"])
            .arg(group)
            .args(["--node-id", &self.id.to_string(), "--heartbeat-interval-ms", "100", "--data-dir"])
            .arg(dir.join(format!("data-{}", self.id)))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SHOW_BROKER").is_some() { Stdio::inherit() } else { Stdio::from(log) })
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn applied(&self) -> Option<u64> {
        self.group_status()?["applied"].as_u64()
    }
}

/// Bytes of the files under `dir` (their length: preallocated space counts).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn start_worker(
    sink: &Path,
    members: orderly_common::members::Members,
    shutdown: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<orderly_worker::io::Exit, orderly_worker::io::IoError>> {
    std::fs::create_dir_all(sink).unwrap();
    let first = members.iter().next().unwrap().clone();
    let config = orderly_worker::io::Config {
        worker: "w1".into(),
        incarnation: 7,
        fanout: first.fanout,
        control: first.control,
        concurrency: 8,
        handler: std::sync::Arc::new(orderly_worker::handler::Sink { dir: sink.to_path_buf() }),
        heartbeat_interval_ms: 200,
        heartbeat_liveness: 5,
        drain_timeout_ms: 1000,
        dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
        curve: None,
    };
    let flag = std::sync::Arc::clone(shutdown);
    std::thread::spawn(move || orderly_worker::io::run_group(config, members, &flag))
}

fn producer(members: orderly_common::members::Members) -> orderly_producer::Producer {
    let mut config = orderly_producer::ProducerConfig::with_members("p", members);
    config.confirm_timeout = Duration::from_secs(1);
    config.resend_backoff_max = Duration::from_secs(2);
    orderly_producer::Producer::connect(config).expect("the producer finds the leader")
}

/// Sends `count` orders named `prefix-n` of about `bytes` each, `window` in
/// flight at a time; all must be confirmed.
fn send_windowed(
    producer: &mut orderly_producer::Producer,
    prefix: &str,
    count: usize,
    window: usize,
    bytes: usize,
) -> Vec<String> {
    let pad = "x".repeat(bytes);
    let ids: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
    for chunk in ids.chunks(window) {
        let mut receipts = Vec::new();
        for id in chunk {
            let order = orderly_producer::Order::new(
                id.clone(),
                vec![format!("{{\"id\":\"{id}\",\"pad\":\"{pad}\"}}").into_bytes()],
            );
            receipts.push((id, producer.send(order).expect("the outbox takes the order")));
        }
        for (id, receipt) in receipts {
            let outcome = receipt.wait(producer, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(outcome.is_confirmed(), "{id}: {outcome:?}");
        }
    }
    ids
}

fn wait_delivered(sink: &Path, ids: &[String], wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let missing = |ids: &[String]| -> Vec<String> {
        ids.iter().filter(|id| !orderly_worker::handler::sink_path(sink, "p", id).exists()).cloned().collect()
    };
    let mut left = missing(ids);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = missing(&left);
    }
    left
}

/// Under sustained load with small segments every member compacts both
/// of its journals: its data directory stays bounded while far more is
/// written than the bound.
#[test]
fn sustained_load_keeps_every_members_disk_bounded() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (group, mut members) = write_group(dir.path());
    for member in &mut members {
        // A short dedup window: an acked order's key stays live (in the
        // journal) for the window, so with the default of 10 minutes
        // nothing of this test could be compacted.
        let extra = ["--journal-segment-bytes", SMALL_SEGMENT_BYTES, "--dedup-window-ms", "1000"];
        member.start_with(dir.path(), &group, &extra);
    }
    wait_leader(&members, &[0, 1, 2], 0).expect("a leader");
    let client_members = client_members(dir.path(), &members);
    let sink = dir.path().join("sink");
    let shutdown = Arc::new(AtomicBool::new(false));
    let worker = start_worker(&sink, client_members.clone(), &shutdown);
    let mut producer = producer(client_members);
    let started = Instant::now();
    let (rounds, per_round, bytes) = (16, 300, 1000);
    let mut largest = 0;
    let mut all = Vec::new();
    for round in 0..rounds {
        let ids = send_windowed(&mut producer, &format!("r{round}"), per_round, 50, bytes);
        // Paced to the worker: what it has not acked is live and must stay
        // on disk, compaction or not.
        let left = wait_delivered(&sink, &ids, Duration::from_secs(30));
        assert!(left.is_empty(), "confirmed but never delivered: {} (first {:?})", left.len(), left.first());
        all.extend(ids);
        for member in &members {
            let data = dir.path().join(format!("data-{}", member.id));
            let bytes = dir_bytes(&data);
            if bytes > largest {
                largest = bytes;
                eprintln!(
                    "round {round}: member {} journal {} raft {}",
                    member.id,
                    dir_bytes(&data.join("journal")),
                    dir_bytes(&data.join("raft"))
                );
            }
        }
    }
    let left = wait_delivered(&sink, &all, Duration::from_secs(30));
    assert!(left.is_empty(), "confirmed but never delivered: {} (first {:?})", left.len(), left.first());
    for member in &members {
        let data = dir.path().join(format!("data-{}", member.id));
        let journal = dir_bytes(&data.join("journal"));
        let raft = dir_bytes(&data.join("raft"));
        let log = std::fs::read_to_string(dir.path().join(format!("member-{}.log", member.id))).unwrap_or_default();
        let removals = log.matches("removed a resolved segment").count();
        let barriers = log.matches("compaction barrier").count();
        eprintln!(
            "member {}: journal {journal} bytes ({removals} segments removed, {barriers} barriers lifted), raft {raft} bytes, status {:?}",
            member.id,
            member.group_status()
        );
    }
    let sent = (rounds * per_round * bytes) as u64;
    eprintln!(
        "sustained load: {} orders ({sent} bytes of payload) in {:?}; largest data dir {largest} bytes",
        all.len(),
        started.elapsed()
    );
    // Uncompacted, each member holds every payload twice (Raft log and
    // event journal): 2 × 4.8 MB here. Compacted: the Raft log's retained
    // entries (`RAFT_LOG_RETAIN_ENTRIES` plus a step, ~3.5 KB each here),
    // a few event-journal segments with their preallocation and reserve,
    // and the round not yet acked.
    const BOUND: u64 = 5 * 1024 * 1024;
    assert!(largest <= BOUND, "a member's data dir reached {largest} bytes (bound {BOUND}; payload sent {sent})");
    assert!(2 * sent > 1024 * 1024 + BOUND, "the load must be able to pass the bound without compaction");
    shutdown.store(true, Ordering::Relaxed);
    let _ = worker.join();
}

/// A follower whose disk is lost rejoins empty after the leader's Raft log
/// was compacted: it catches up by snapshot, and after the leader is
/// killed every confirmed order still reaches a worker.
#[test]
fn a_wiped_follower_catches_up_by_snapshot_and_nothing_confirmed_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (group, mut members) = write_group(dir.path());
    let extra = ["--journal-segment-bytes", SMALL_SEGMENT_BYTES];
    for member in &mut members {
        member.start_with(dir.path(), &group, &extra);
    }
    let (leader, term) = wait_leader(&members, &[0, 1, 2], 0).expect("a leader");
    // The highest-id follower: after the leader's death the other refuses
    // to vote while its own (shorter) lease runs, so this one most likely
    // leads next, serving from the state the snapshot gave it.
    let wiped = (0..3).rev().find(|&i| i != leader).unwrap();
    let client_members = client_members(dir.path(), &members);
    let mut producer = producer(client_members.clone());
    let mut confirmed = send_windowed(&mut producer, "a", 50, 10, 200);
    members[wiped].kill();
    std::fs::remove_dir_all(dir.path().join(format!("data-{}", members[wiped].id))).unwrap();
    // No worker yet: the orders stay live, and must survive in the snapshot.
    let leader_raft = dir.path().join(format!("data-{}/raft", members[leader].id));
    let first_segment = |path: &Path| -> Option<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(path).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names.into_iter().find(|n| n.ends_with(SEGMENT_EXTENSION))
    };
    let initial = first_segment(&leader_raft);
    let started = Instant::now();
    let mut round = 0;
    // One order at a time: one Raft entry each, until the leader's Raft log
    // has dropped its first segment (the follower's point, 0, is gone).
    while first_segment(&leader_raft) == initial {
        assert!(started.elapsed() < Duration::from_secs(60), "the leader's raft log was never compacted");
        confirmed.extend(send_windowed(&mut producer, &format!("b{round}"), 100, 1, 200));
        round += 1;
    }
    eprintln!("raft log compacted after {} orders in {:?}", confirmed.len(), started.elapsed());
    members[wiped].start_with(dir.path(), &group, &extra);
    let leader_applied = members[leader].applied().expect("the leader answers");
    let deadline = Instant::now() + Duration::from_secs(20);
    while members[wiped].applied().is_none_or(|a| a < leader_applied) {
        assert!(Instant::now() < deadline, "the wiped follower never caught up with {leader_applied}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path().join(format!("member-{}.log", members[wiped].id))).unwrap();
    assert!(log.contains("snapshot installed"), "the follower caught up without a snapshot");
    confirmed.extend(send_windowed(&mut producer, "c", 20, 5, 200));
    members[leader].kill();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (new_leader, _) = wait_leader(&members, &survivors, term).expect("a new leader");
    eprintln!("new leader: member {} (the wiped one: {})", members[new_leader].id, new_leader == wiped);
    let sink = dir.path().join("sink");
    let shutdown = Arc::new(AtomicBool::new(false));
    let worker = start_worker(&sink, client_members, &shutdown);
    let left = wait_delivered(&sink, &confirmed, Duration::from_secs(30));
    assert!(left.is_empty(), "confirmed but never delivered: {} (first {:?})", left.len(), left.first());
    shutdown.store(true, Ordering::Relaxed);
    let _ = worker.join();
}
