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
        handler: orderly_worker::handler::Handler::Sink { dir: sink.clone() },
        heartbeat_interval_ms: 200,
        heartbeat_liveness: 5,
        drain_timeout_ms: 1000,
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
