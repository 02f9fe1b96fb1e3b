//! The journal through the real binary: restart semantics after kill -9,
//! the data-directory lock, and `journal verify | repair | inspect` on a
//! damaged journal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::protocol::{
    split_frames, Ack, Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, ProducerHello,
};
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

const BROKER: &str = env!("CARGO_BIN_EXE_orderly-broker");
const WAIT: Duration = Duration::from_secs(20);

/// A broker process on ipc endpoints in `dir`, killed (-9) on drop.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(dir: &Path, extra: &[&str]) -> Broker {
        let _ = std::fs::remove_file(dir.join("control"));
        let child = Command::new(BROKER)
            .args(["run", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--intake", &endpoint(dir, "intake"), "--fanout", &endpoint(dir, "fanout")])
            .args(["--control", &endpoint(dir, "control")])
            .args(["--admin", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("broker starts");
        // The control socket is bound last, after recovery.
        let deadline = Instant::now() + WAIT;
        while !dir.join("control").exists() {
            assert!(Instant::now() < deadline, "broker did not bind in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(dir: &Path, name: &str) -> String {
    format!("ipc://{}", dir.join(name).display())
}

/// Raw sockets speaking the protocol, as a producer and a worker would.
struct Client {
    _context: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
}

impl Client {
    fn new(dir: &Path, push_to: &str, topic: &[u8]) -> Client {
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).unwrap();
        let sub = context.socket(zmq::SUB).unwrap();
        for s in [&push, &sub] {
            s.set_linger(0).unwrap();
        }
        sub.set_subscribe(topic).unwrap();
        sub.set_subscribe(BROADCAST_TOPIC).unwrap();
        push.connect(&endpoint(dir, push_to)).unwrap();
        sub.connect(&endpoint(dir, "fanout")).unwrap();
        Client { _context: context, push, sub }
    }

    fn send(&self, body: Vec<u8>) {
        self.push.send_multipart([b"t".to_vec(), body], 0).unwrap();
    }

    /// Next fanout message matching `want` within the wait limit.
    fn expect<T>(&self, what: &str, mut want: impl FnMut(FanoutMsg) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.sub.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            let frames = self.sub.recv_multipart(0).unwrap();
            let (_, body) = split_frames(&frames).unwrap();
            if let Some(found) = want(FanoutMsg::decode(body).unwrap()) {
                return found;
            }
        }
        panic!("timed out waiting for {what}");
    }
}

fn producer(dir: &Path) -> Client {
    let client = Client::new(dir, "intake", &producer_topic("p"));
    // Repeat hello until the welcome proves the subscription is live.
    let deadline = Instant::now() + WAIT;
    loop {
        client.send(IntakeMsg::Hello(ProducerHello { producer: "p".into(), nonce: 7 }).encode());
        if client.sub.poll(zmq::POLLIN, 100).unwrap() > 0 {
            let frames = client.sub.recv_multipart(0).unwrap();
            if matches!(FanoutMsg::decode(&frames[1]), Ok(FanoutMsg::Welcome(w)) if w.nonce == 7) {
                return client;
            }
        }
        assert!(Instant::now() < deadline, "no welcome");
    }
}

fn begin(order: &str) -> Vec<u8> {
    IntakeMsg::Begin(Begin { producer: "p".into(), order: order.into() }).encode()
}

fn item(order: &str, seq: u32) -> Vec<u8> {
    let data = ByteBuf::from(format!("\"{order}-{seq}\"").into_bytes());
    IntakeMsg::Item(Item { producer: "p".into(), order: order.into(), seq, data }).encode()
}

fn finish(order: &str, count: u32) -> Vec<u8> {
    IntakeMsg::Finish(Finish { producer: "p".into(), order: order.into(), count }).encode()
}

fn send_order(client: &Client, order: &str, items: u32) {
    client.send(begin(order));
    for seq in 0..items {
        client.send(item(order, seq));
    }
    client.send(finish(order, items));
}

fn confirmed(client: &Client, order: &str) {
    client.expect(&format!("confirm of {order}"), |m| match m {
        FanoutMsg::Confirm(c) if c.order == order => Some(()),
        FanoutMsg::Reject(r) if r.order == order => panic!("{order} rejected: {}", r.reason),
        _ => None,
    });
}

fn heartbeat(incarnation: u64, welcome: Option<u64>) -> Vec<u8> {
    let hb = Heartbeat {
        worker: "w".into(),
        incarnation,
        capacity: 8,
        in_flight: vec![],
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    };
    ControlMsg::Heartbeat(hb).encode()
}

/// Registers a worker and collects the dispatches it gets within `settle`.
fn worker_dispatches(dir: &Path, incarnation: u64, expected: usize) -> (Client, Vec<(OrderKey, u32, Vec<ByteBuf>)>) {
    let worker = Client::new(dir, "control", &worker_topic("w"));
    let mut got = Vec::new();
    let mut welcome = None;
    let deadline = Instant::now() + WAIT;
    let mut next_heartbeat = Instant::now();
    while got.len() < expected {
        assert!(Instant::now() < deadline, "got {} of {expected} dispatches", got.len());
        if Instant::now() >= next_heartbeat {
            worker.send(heartbeat(incarnation, welcome));
            next_heartbeat = Instant::now() + Duration::from_millis(200);
        }
        if worker.sub.poll(zmq::POLLIN, 50).unwrap() == 0 {
            continue;
        }
        let frames = worker.sub.recv_multipart(0).unwrap();
        match FanoutMsg::decode(&frames[1]).unwrap() {
            FanoutMsg::Welcome(w) => {
                welcome = Some(w.nonce);
                worker.send(heartbeat(incarnation, welcome));
            }
            FanoutMsg::Dispatch(d) => got.push((d.order, d.attempt, d.items)),
            _ => {}
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    (worker, got)
}

#[test]
fn restart_resumes_partials_redelivers_unacked_and_forgets_acked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // Run 1: order "sealed" complete, order "partial" with items 0..2 only.
    let broker = Broker::start(dir, &[]);
    let p = producer(dir);
    send_order(&p, "sealed", 3);
    p.send(begin("partial"));
    p.send(item("partial", 0));
    p.send(item("partial", 1));
    confirmed(&p, "sealed");
    // The partial's items are journaled in the same or the next turn; a
    // second order's confirm proves the broker is past them.
    send_order(&p, "marker", 1);
    confirmed(&p, "marker");
    broker.kill();

    // Run 2: the partial resumes; Finish seals it with items from both runs.
    let broker = Broker::start(dir, &[]);
    let p = producer(dir);
    p.send(item("partial", 2));
    p.send(finish("partial", 3));
    confirmed(&p, "partial");
    let (worker, got) = worker_dispatches(dir, 1, 3);
    let keys: Vec<&str> = got.iter().map(|(k, _, _)| k.id.as_str()).collect();
    assert_eq!(keys, ["marker", "partial", "sealed"]);
    let partial_items: Vec<&[u8]> = got[1].2.iter().map(|b| b.as_slice()).collect();
    assert_eq!(partial_items, [&b"\"partial-0\""[..], b"\"partial-1\"", b"\"partial-2\""]);
    // Acknowledge "sealed" and "marker" only, then crash.
    for order in ["sealed", "marker"] {
        let ack = Ack { worker: "w".into(), incarnation: 1, order: OrderKey::new("p", order), attempt: 1 };
        worker.send(ControlMsg::Ack(ack).encode());
    }
    // The journal has the acks once a later message's effect is visible.
    send_order(&p, "marker2", 1);
    confirmed(&p, "marker2");
    drop(worker);
    broker.kill();

    // Run 3: only the unacknowledged orders come back, as redeliveries.
    let _broker = Broker::start(dir, &[]);
    let (_worker, got) = worker_dispatches(dir, 2, 2);
    let summary: Vec<(&str, u32)> = got.iter().map(|(k, a, _)| (k.id.as_str(), *a)).collect();
    // Both were dispatched in run 2 (marker2 to the worker that was still
    // registered), so both come back as attempt 2.
    assert_eq!(summary, [("marker2", 2), ("partial", 2)]);
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Broker::start(dir.path(), &[]);
    let other = tempfile::tempdir().unwrap();
    let output = Command::new(BROKER)
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--intake", &endpoint(other.path(), "i"), "--fanout", &endpoint(other.path(), "f")])
        .args(["--control", &endpoint(other.path(), "c"), "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another broker is using the data directory"), "{stderr}");
}

fn journal_cmd(verb: &str, data_dir: &Path) -> Output {
    Command::new(BROKER).args(["journal", verb, "--data-dir"]).arg(data_dir).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A journal with several segments of pending orders, broker stopped.
fn journal_with_segments(dir: &Path) -> Vec<PathBuf> {
    let broker = Broker::start(dir, &["--journal-segment-bytes", "4096"]);
    let p = producer(dir);
    // One order per turn (confirm before the next), so the journal rolls
    // segments between commits.
    for n in 0..40 {
        send_order(&p, &format!("o{n}"), 5);
        confirmed(&p, &format!("o{n}"));
    }
    broker.kill();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("data/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "want several segments, got {}", segments.len());
    segments
}

#[test]
fn corruption_is_named_refused_and_repaired_by_moving_data_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let segments = journal_with_segments(dir.path());

    let inspect = journal_cmd("inspect", &data);
    assert!(inspect.status.success(), "{}", text(&inspect));
    assert!(text(&inspect).contains("pending orders:      40"), "{}", text(&inspect));
    assert!(journal_cmd("verify", &data).status.success());

    // Flip one byte inside a record of the first (not last) segment.
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&segments[0], &bytes).unwrap();

    let verify = journal_cmd("verify", &data);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    let name = segments[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(text(&verify).contains(&name) && text(&verify).contains("offset"), "{}", text(&verify));

    let start = Command::new(BROKER).args(["run", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(start.status.code(), Some(1));
    let message = text(&start);
    assert!(message.contains(&name) && message.contains("journal repair --data-dir"), "{message}");

    let repair = journal_cmd("repair", &data);
    assert!(repair.status.success(), "{}", text(&repair));
    assert!(text(&repair).contains("quarantine"), "{}", text(&repair));
    let quarantined: u64 = walk_bytes(&data.join("journal"), "quarantine");
    assert!(quarantined > 0, "the cut data was moved, not deleted");
    assert!(journal_cmd("verify", &data).status.success(), "verify passes after repair");
    let after = journal_cmd("inspect", &data);
    assert!(after.status.success(), "{}", text(&after));
}

#[test]
fn a_torn_tail_is_cut_off_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let segments = journal_with_segments(dir.path());
    let last = segments.last().unwrap();
    // Segments are preallocated (zeros past the last frame): cut inside the
    // last frame, as a crash while extending the file would.
    let report = orderly_journal::verify(&data.join("journal"), orderly_journal::RECORD_BYTES_MAX).unwrap();
    let len = report.segments.last().unwrap().bytes;
    let file = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(len - 3).unwrap();
    let verify = journal_cmd("verify", &data);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("torn tail"), "{}", text(&verify));
    let broker = Broker::start(dir.path(), &[]);
    broker.kill();
    let verify = journal_cmd("verify", &data);
    assert!(!text(&verify).contains("torn tail"), "start-up cut it off: {}", text(&verify));
}

/// Issue 13, reproduction 1: a bit flip in the first record of the only
/// (last) segment used to be taken for a torn tail and cut there, deleting
/// every confirmed order after it while `journal verify` said OK. Durable
/// data that changed is corruption: refused, named, never cut.
#[test]
fn a_bit_flip_in_the_last_segment_is_corruption_not_a_torn_tail() {
    const ORDERS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start(dir.path(), &[]);
    let p = producer(dir.path());
    for n in 0..ORDERS {
        send_order(&p, &format!("o{n}"), 2);
        confirmed(&p, &format!("o{n}"));
    }
    // A clean stop (SIGTERM): the broker seals its journal.
    let status = Command::new("kill").args(["-TERM", &broker.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut broker = broker;
    let _ = broker.child.wait();
    let inspect = journal_cmd("inspect", &data);
    assert!(text(&inspect).contains(&format!("pending orders:      {ORDERS}")), "{}", text(&inspect));

    let segment = data.join("journal/00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    // One bit in the body of the first record.
    let at = orderly_journal::FIRST_RECORD_OFFSET_V2 as usize + orderly_journal::RECORD_HEADER_BYTES + 4;
    bytes[at] ^= 0x08;
    std::fs::write(&segment, &bytes).unwrap();

    let verify = journal_cmd("verify", &data);
    assert_eq!(verify.status.code(), Some(1), "verify must fail: {}", text(&verify));
    assert!(!text(&verify).contains("journal OK"), "{}", text(&verify));
    let start = Command::new(BROKER).args(["run", "--data-dir"]).arg(&data).args(["--admin", "off"]).output().unwrap();
    assert_eq!(start.status.code(), Some(1), "the broker refuses to start: {}", text(&start));
    assert!(text(&start).contains("00000000000000000001.seg"), "{}", text(&start));
    assert!(!text(&start).contains("torn tail"), "nothing was cut: {}", text(&start));
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "the damaged segment is left as it was");
}

fn walk_bytes(dir: &Path, prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(prefix) && entry.path().is_dir() {
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                total += inner.unwrap().metadata().unwrap().len();
            }
        }
    }
    total
}
