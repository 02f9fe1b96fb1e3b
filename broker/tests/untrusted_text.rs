//! Issue 14, attack 7, through the real binary: order ids and nack reasons
//! come from peers. A newline in them must not forge a line of the broker's
//! log, and an escape sequence must not reach the operator's terminal
//! through `orderly-broker dlq list`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::protocol::{encode_items, ControlMsg, FanoutMsg, Heartbeat, IntakeMsg, Nack, ProducerHello};
use orderly_common::OrderKey;
use orderly_test_support::{broker_command, ep, Running};

const BROKER: &str = env!("CARGO_BIN_EXE_orderly-broker");
const WAIT: Duration = Duration::from_secs(20);
const FORGED: &str = "FORGED-LOG-LINE";

/// Starts the broker and returns it with its admin address, read from its
/// log (it binds port 0); killed on drop.
fn start_broker(dir: &Path, log: &Path) -> (Running, String) {
    let child = broker_command(Path::new(BROKER), dir)
        .args(["--admin", "127.0.0.1:0", "--log-level", "debug"])
        .env_remove("RUST_LOG")
        // The test reads the log, even with SHOW_BROKER set.
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("broker starts");
    let broker = Running(child);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the broker did not log its admin address");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .filter(|l| l.contains("admin endpoint listening"))
            .find_map(|l| l.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next()));
        if let (Some(addr), true) = (addr, dir.join("control").exists()) {
            return (broker, addr.to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw PUSH + SUB pair, as a producer or worker would hold.
struct Peer {
    _context: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
}

impl Peer {
    fn new(dir: &Path, push_to: &str, topic: &[u8]) -> Peer {
        let context = zmq::Context::new();
        let (push, sub) = (context.socket(zmq::PUSH).unwrap(), context.socket(zmq::SUB).unwrap());
        for socket in [&push, &sub] {
            socket.set_linger(0).unwrap();
        }
        sub.set_subscribe(topic).unwrap();
        sub.set_subscribe(BROADCAST_TOPIC).unwrap();
        push.connect(&ep(dir, push_to)).unwrap();
        sub.connect(&ep(dir, "fanout")).unwrap();
        Peer { _context: context, push, sub }
    }

    fn send(&self, body: Vec<u8>) {
        self.push.send_multipart([b"t".to_vec(), body], 0).unwrap();
    }

    fn next(&self, wait_ms: i64) -> Option<FanoutMsg> {
        if self.sub.poll(zmq::POLLIN, wait_ms).unwrap() == 0 {
            return None;
        }
        let frames = self.sub.recv_multipart(0).unwrap();
        Some(FanoutMsg::decode(&frames[1]).unwrap())
    }
}

fn heartbeat(welcome: Option<u64>) -> Vec<u8> {
    let hb = Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        capacity: 1,
        in_flight: vec![],
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    };
    ControlMsg::Heartbeat(hb).encode()
}

/// Sends `id` as a whole order and waits for its confirm.
fn send_order(dir: &Path, id: &str) -> Peer {
    let producer = Peer::new(dir, "intake", &producer_topic("p1"));
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no welcome for the producer");
        producer.send(IntakeMsg::Hello(ProducerHello { producer: "p1".into(), nonce: 7 }).encode());
        if matches!(producer.next(100), Some(FanoutMsg::Welcome(w)) if w.nonce == 7) {
            break;
        }
    }
    producer.send(encode_items("p1", id, true, 0, &[b"{}"], Some(1)));
    loop {
        assert!(Instant::now() < deadline, "no confirm");
        if matches!(producer.next(100), Some(FanoutMsg::Confirm(c)) if c.order == id) {
            return producer;
        }
    }
}

/// Registers worker `w1`, takes one dispatch and nacks it for good.
fn nack_for_good(dir: &Path, reason: &str) -> OrderKey {
    let worker = Peer::new(dir, "control", &worker_topic("w1"));
    let deadline = Instant::now() + WAIT;
    let mut welcome = None;
    let mut next_heartbeat = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "no dispatch");
        if Instant::now() >= next_heartbeat {
            worker.send(heartbeat(welcome));
            next_heartbeat = Instant::now() + Duration::from_millis(200);
        }
        match worker.next(50) {
            Some(FanoutMsg::Welcome(w)) => {
                welcome = Some(w.nonce);
                worker.send(heartbeat(welcome));
            }
            Some(FanoutMsg::Dispatch(d)) => {
                let nack = Nack {
                    worker: "w1".into(),
                    incarnation: 1,
                    order: d.order.clone(),
                    attempt: d.attempt,
                    retry: false,
                    reason: reason.into(),
                    delay_ms: None,
                    returned: false,
                };
                worker.send(ControlMsg::Nack(nack).encode());
                return d.order;
            }
            _ => {}
        }
    }
}

fn dlq_list(admin: &str) -> Vec<u8> {
    let output = Command::new(BROKER).args(["dlq", "list", "--admin", admin]).output().expect("dlq list runs");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

#[test]
fn ids_and_reasons_cannot_forge_log_lines_or_rewrite_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (dir, log) = (dir.path(), dir.path().join("broker.log"));
    let (_broker, admin) = start_broker(dir, &log);
    let id = format!("o-1\n{FORGED} from the id \x1b[2J\u{202e}");
    let _producer = send_order(dir, &id);
    let order = nack_for_good(dir, &format!("bad\n{FORGED} from the reason \x1b[2J\x1b]0;title\x07"));
    assert_eq!(order.id, id, "the wire keeps the id exactly");

    // The dead letter shows up in `dlq list` once the nack is handled.
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        assert!(Instant::now() < deadline, "the dead letter never showed up");
        let listed = dlq_list(&admin);
        if listed.starts_with(b"p1/") {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8(listed).expect("utf-8");
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "an escape sequence reached the terminal: {text:?}");
    assert!(!text.contains('\u{202e}'), "a bidi override reached the terminal: {text:?}");
    assert!(text.lines().all(|line| !line.starts_with(FORGED)), "a forged line: {text:?}");
    assert!(text.contains(&format!("o-1\\n{FORGED} from the id \\x1b[2J\\u{{202e}}")), "{text:?}");
    assert!(text.ends_with("1 dead letters\n"), "{text:?}");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().all(|line| !line.starts_with(FORGED)), "a forged log line:\n{logged}");
    assert!(!logged.contains('\x1b'), "an ESC reached the log:\n{logged:?}");
}
