//! Changing the members of a running group of real broker processes
//! (loopback, ipc endpoints), with the real producer and worker libraries
//! sending and handling orders throughout: a group of three adds a fourth
//! (`run --join`, `group add`: learner, caught up, voter), removes one of
//! the original three (`group remove`: it learns it is out and exits), then
//! loses its leader to kill -9. Every confirmed order reaches the worker;
//! the joiner's applied index reaches the leader's commit. Also: what the
//! commands refuse (an unknown member, a member that is not in the group,
//! a new member started without --join), with their exit codes.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{ep, free_port, BROKER};

/// Elections take 2.2 s and up: a leader within this.
const ELECTION_WAIT: Duration = Duration::from_secs(15);
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// The joiner replicates a short log: caught up within this.
const CATCH_UP_WAIT: Duration = Duration::from_secs(20);
/// A removed member hears of its removal with the commit and stops.
const REMOVED_EXIT_WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "membership-token-0123456789";

struct Member {
    id: u64,
    admin: String,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, dir: &Path, group: &Path, extra: &[&str]) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("member-{}.log", self.id)))
            .unwrap();
        let child = Command::new(BROKER)
            .args(["run", "--group"])
            .arg(group)
            .args(["--node-id", &self.id.to_string(), "--heartbeat-interval-ms", "100", "--admin-token"])
            .arg(dir.join("admin.token"))
            .arg("--data-dir")
            .arg(dir.join(format!("data-{}", self.id)))
            .args(extra)
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
        let mut stream = std::net::TcpStream::connect(&self.admin).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(stream, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let body: serde_json::Value = serde_json::from_str(text[text.find("\r\n\r\n")? + 4..].trim()).ok()?;
        body.get("group").cloned()
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.group_status()?.get(key)?.as_u64()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The [[member]] table of member `id` (endpoints in `dir`).
fn member_table(dir: &Path, member: &Member) -> String {
    let id = member.id;
    format!(
        "[[member]]\nid = {id}\nintake = \"{}\"\nfanout = \"{}\"\ncontrol = \"{}\"\npeer = \"{}\"\nadmin = \"{}\"\n\n",
        ep(dir, &format!("intake-{id}")),
        ep(dir, &format!("fanout-{id}")),
        ep(dir, &format!("control-{id}")),
        ep(dir, &format!("peer-{id}")),
        member.admin
    )
}

fn write_file(dir: &Path, name: &str, members: &[&Member]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, members.iter().map(|m| member_table(dir, m)).collect::<String>()).unwrap();
    path
}

/// The member among `alive` that says it is the serving leader.
fn wait_leader(members: &[Member], alive: &[usize]) -> Option<usize> {
    let deadline = Instant::now() + ELECTION_WAIT;
    while Instant::now() < deadline {
        if let Some(&i) = alive.iter().find(|&&i| members[i].group_status().is_some_and(|g| g["role"] == "leader")) {
            return Some(i);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn group_command(dir: &Path, args: &[&str], group: &Path) -> Output {
    Command::new(BROKER)
        .args(["group"])
        .args(args)
        .arg("--group")
        .arg(group)
        .arg("--admin-token")
        .arg(dir.join("admin.token"))
        .output()
        .unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn send_all(producer: &mut orderly_producer::Producer, ids: &[String]) {
    let mut receipts = Vec::new();
    for id in ids {
        let order = orderly_producer::Order::new(id.clone(), vec![format!("{{\"id\":\"{id}\"}}").into_bytes()]);
        receipts.push((id, producer.send(order).expect("the outbox takes the order")));
    }
    for (id, receipt) in receipts {
        let outcome = receipt.wait(producer, CONFIRM_WAIT).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(outcome.is_confirmed(), "{id}: {outcome:?}");
    }
}

fn batch(name: &str) -> Vec<String> {
    (0..10).map(|n| format!("{name}-{n}")).collect()
}

#[test]
fn add_a_fourth_remove_an_original_then_lose_the_leader_and_every_confirmed_order_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let token = dir.join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut members: Vec<Member> =
        (1..=4).map(|id| Member { id, admin: format!("127.0.0.1:{}", free_port()), child: None }).collect();
    let three = write_file(dir, "group-3.toml", &[&members[0], &members[1], &members[2]]);
    let four = write_file(dir, "group-4.toml", &members.iter().collect::<Vec<_>>());
    for member in &mut members[..3] {
        member.start(dir, &three, &[]);
    }
    wait_leader(&members, &[0, 1, 2]).expect("a leader");

    // Real clients on all four members' endpoints (the fourth is down yet).
    let client_members = orderly_replication::Group::load(&four).unwrap().client_members().unwrap();
    let sink = dir.join("sink");
    std::fs::create_dir_all(&sink).unwrap();
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
    let mut sent = batch("three");
    send_all(&mut producer, &sent);

    // Refusals: member 9 is in no file; member 4 is not in the group yet.
    let unknown = group_command(dir, &["add", "--node-id", "9"], &four);
    assert_eq!(unknown.status.code(), Some(2), "{}", show(&unknown));
    let not_member = group_command(dir, &["remove", "--node-id", "4"], &four);
    assert_eq!(not_member.status.code(), Some(3), "{}", show(&not_member));
    assert!(
        String::from_utf8_lossy(&not_member.stderr).contains("member 4 is not in the group"),
        "{}",
        show(&not_member)
    );

    // Started without --join, the fourth took the file's members as its
    // voters: `group add` refuses it.
    members[3].start(dir, &four, &[]);
    let deadline = Instant::now() + ELECTION_WAIT;
    while members[3].group_status().is_none() {
        assert!(Instant::now() < deadline, "member 4 answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    let no_join = group_command(dir, &["add", "--node-id", "4"], &four);
    assert_eq!(no_join.status.code(), Some(3), "{}", show(&no_join));
    assert!(String::from_utf8_lossy(&no_join.stderr).contains("without --join"), "{}", show(&no_join));
    members[3].kill();
    std::fs::remove_dir_all(dir.join("data-4")).unwrap();

    // The fourth joins: started with --join, added through the leader.
    members[3].start(dir, &four, &["--join"]);
    let added = Instant::now();
    let add = group_command(dir, &["add", "--node-id", "4", "--timeout-secs", "40"], &four);
    assert_eq!(add.status.code(), Some(0), "{}", show(&add));
    assert!(String::from_utf8_lossy(&add.stdout).contains("member 4 is a voter"), "{}", show(&add));
    eprintln!("add: member 4 a voter {:?} after `group add` started", added.elapsed());
    let again = group_command(dir, &["add", "--node-id", "4", "--timeout-secs", "10"], &four);
    assert_eq!(again.status.code(), Some(0), "a repeated add finds it a voter: {}", show(&again));
    sent.extend(batch("four"));
    send_all(&mut producer, &sent[10..]);
    let leader = wait_leader(&members, &[0, 1, 2, 3]).expect("a leader");
    let commit = members[leader].number("commit").expect("the leader's commit");
    let deadline = Instant::now() + CATCH_UP_WAIT;
    while members[3].number("applied").unwrap_or(0) < commit {
        assert!(Instant::now() < deadline, "member 4 did not apply up to the leader's commit {commit}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let voters = members[leader].group_status().unwrap()["voters"].clone();
    assert_eq!(voters, serde_json::json!([1, 2, 3, 4]));

    // One of the original three goes (a follower): it learns it and exits.
    let removed = (0..3).find(|&i| i != leader).unwrap();
    let remove_id = members[removed].id.to_string();
    let remove = group_command(dir, &["remove", "--node-id", &remove_id], &four);
    assert_eq!(remove.status.code(), Some(0), "{}", show(&remove));
    let deadline = Instant::now() + REMOVED_EXIT_WAIT;
    let status = loop {
        if let Some(status) = members[removed].child.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "member {remove_id} still runs after its removal");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "a removed member stops cleanly");
    members[removed].child = None;
    if std::env::var_os("SHOW_BROKER").is_none() {
        let log = std::fs::read_to_string(dir.join(format!("member-{remove_id}.log"))).unwrap();
        assert!(log.contains("removed from the group"), "{log}");
    }
    // Started again, it refuses: it is no longer a member.
    let mut again = Command::new(BROKER);
    again.args(["run", "--group"]).arg(&four).args(["--node-id", &remove_id, "--data-dir"]);
    let refused = again.arg(dir.join(format!("data-{remove_id}"))).output().unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("was removed from the group"), "{}", show(&refused));
    sent.extend(batch("removed"));
    send_all(&mut producer, &sent[20..]);

    // The leader is killed: two of the three voters left elect another.
    let alive: Vec<usize> = (0..4).filter(|&i| i != removed).collect();
    let leader = wait_leader(&members, &alive).expect("a leader");
    members[leader].kill();
    let killed = Instant::now();
    sent.extend(batch("after-kill"));
    send_all(&mut producer, &sent[30..]);
    eprintln!("after kill -9 of member {}: 10 orders confirmed {:?} later", members[leader].id, killed.elapsed());
    let survivors: Vec<usize> = alive.into_iter().filter(|&i| i != leader).collect();
    assert!(wait_leader(&members, &survivors).is_some(), "a new leader");

    // Every confirmed order reaches the worker's sink (at least once).
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = |ids: &[String]| -> Vec<String> {
        ids.iter().filter(|id| !orderly_worker::handler::sink_path(&sink, "p", id).exists()).cloned().collect()
    };
    let mut left = missing(&sent);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = missing(&left);
    }
    assert!(left.is_empty(), "confirmed but never delivered: {left:?}");
    shutdown.store(true, Ordering::Relaxed);
    let _ = worker.join();
}

/// Removing the leader: it hands leadership over, `group remove` asks the
/// new leader, the old one exits, and the two left go on confirming.
#[test]
fn removing_the_leader_hands_over_first() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let token = dir.join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut members: Vec<Member> =
        (1..=3).map(|id| Member { id, admin: format!("127.0.0.1:{}", free_port()), child: None }).collect();
    let group = write_file(dir, "group.toml", &members.iter().collect::<Vec<_>>());
    for member in &mut members {
        member.start(dir, &group, &[]);
    }
    let leader = wait_leader(&members, &[0, 1, 2]).expect("a leader");
    let leader_id = members[leader].id.to_string();
    let started = Instant::now();
    let remove = group_command(dir, &["remove", "--node-id", &leader_id, "--timeout-secs", "30"], &group);
    assert_eq!(remove.status.code(), Some(0), "{}", show(&remove));
    eprintln!("removing the leader took {:?} (handover included)", started.elapsed());
    let deadline = Instant::now() + REMOVED_EXIT_WAIT;
    while members[leader].child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the removed leader still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    members[leader].child = None;
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = wait_leader(&members, &rest).expect("a leader of the two left");
    let status = members[new_leader].group_status().unwrap();
    assert_eq!(status["voters"].as_array().unwrap().len(), 2, "{status}");
    // With the other one down, removing the leader would leave a single
    // dead voter: refused (no live majority), exit 3.
    let other = rest.into_iter().find(|&i| i != new_leader).unwrap();
    members[other].kill();
    std::thread::sleep(Duration::from_millis(500));
    let alone = members[new_leader].id.to_string();
    let refused = group_command(dir, &["remove", "--node-id", &alone, "--timeout-secs", "5"], &group);
    assert_eq!(refused.status.code(), Some(3), "{}", show(&refused));
}
