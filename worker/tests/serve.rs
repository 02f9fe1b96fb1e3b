//! `--serve` end to end: the real broker binary, real orders from the
//! producer library, the worker's io loop with a [`Serve`] handler running
//! the scripted Python handler `tests/helpers/serve_script.py` (stdlib
//! only). Every wait is bounded; the broker is killed (by its pid) and the
//! worker stopped when a test ends, passed or not.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_producer::{Order, Outcome, Producer, ProducerConfig};
use orderly_test_support::{broker_binary, broker_command, ep, free_port, get, workspace};
use orderly_worker::io::{self, Config, Exit, IoError};
use orderly_worker::serve::Serve;
use serde_json::Value;

/// Longest any one wait of these tests lasts.
const WAIT: Duration = Duration::from_secs(30);

/// A real broker on IPC endpoints in a temp dir, killed when dropped.
struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    admin: String,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = format!("127.0.0.1:{}", free_port());
        let child = broker_command(&broker_binary(), dir.path())
            .args(["--admin", &admin, "--fsync", "never", "--retry-delay-initial-ms", "100"])
            .spawn()
            .expect("start the broker");
        let broker = Broker { child, dir, admin };
        let deadline = Instant::now() + WAIT;
        while broker.status().is_none() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn endpoint(&self, name: &str) -> orderly_common::Endpoint {
        ep(self.dir.path(), name).parse().expect("valid endpoint")
    }

    /// `GET /status` as JSON, if the broker answers.
    fn status(&self) -> Option<Value> {
        let (status, body) = get(&self.admin, "/status");
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    fn counter(&self, pointer: &str) -> u64 {
        self.status().and_then(|status| status.pointer(pointer)?.as_u64()).unwrap_or(0)
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&Broker) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            let status = self.status();
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; status {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_acked(&self, count: u64) {
        self.wait_until(&format!("{count} orders acked"), |b| b.counter("/counters/orders_acked") >= count);
    }

    /// Sends the orders and waits until the broker confirmed each.
    fn send(&self, orders: Vec<(&str, Vec<Vec<u8>>)>) {
        let config = ProducerConfig::new("p1", self.endpoint("intake"), self.endpoint("fanout"));
        let mut producer = Producer::connect(config).expect("producer connects");
        let receipts: Vec<_> =
            orders.into_iter().map(|(id, items)| producer.send(Order::new(id, items)).expect("order sent")).collect();
        for receipt in receipts {
            let outcome = receipt.wait(&mut producer, WAIT).expect("an answer");
            assert!(matches!(outcome, Outcome::Confirmed), "{outcome:?}");
        }
        producer.close(Duration::from_secs(5)).expect("producer closes");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill(); // our own child, by pid
        let _ = self.child.wait();
    }
}

/// The worker's io loop in a thread, stopped when dropped.
struct Worker {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Exit, IoError>>>,
    log: PathBuf,
}

impl Worker {
    /// `serve_script.py` in `processes` copies, `concurrency` orders at once.
    fn start(broker: &Broker, processes: u32, concurrency: u32, timeout_ms: Option<u64>) -> Worker {
        let script = workspace().join("tests/helpers/serve_script.py");
        let log = broker.dir.path().join("serve.log");
        let command = format!("exec python3 '{}' '{}'", script.display(), log.display());
        let config = Config {
            worker: "w1".into(),
            incarnation: rand_incarnation(),
            fanout: broker.endpoint("fanout"),
            control: broker.endpoint("control"),
            concurrency,
            handler: Arc::new(Serve { command, processes, timeout_ms, worker: "w1".into() }),
            heartbeat_interval_ms: 200,
            heartbeat_liveness: 5,
            drain_timeout_ms: 5000,
            dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
            curve: None,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let thread = std::thread::spawn(move || io::run(config, &flag));
        Worker { shutdown, thread: Some(thread), log }
    }

    /// Every order the handler processes got, in order.
    fn log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("log lines are JSON")).collect()
    }

    fn entries(&self, id: &str) -> Vec<Value> {
        self.log().into_iter().filter(|entry| entry["id"] == id).collect()
    }

    /// Stops the worker; it must drain and exit within a bounded time.
    fn stop(mut self) -> Exit {
        self.shutdown.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + WAIT;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the worker did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().expect("no panic").expect("clean exit")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        // A failed test leaves the thread to stop on its own: the flag is set.
    }
}

fn rand_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    (nanos as u64) ^ u64::from(std::process::id())
}

fn json_item(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn pid_of(entry: &Value) -> u64 {
    entry["pid"].as_u64().expect("pid")
}

fn process_alive(pid: u64) -> bool {
    // A zombie would still have a /proc entry: the worker reaps its children.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn serve_acks_orders_and_binary_items_arrive_as_base64() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 4, None);
    broker.send(vec![
        ("ack-1", vec![json_item("{\"sku\": \"A\"}")]),
        ("binary-1", vec![vec![0xff, 0x00, 0x01], json_item("{\"a\":1}")]),
        ("stray-1", vec![json_item("1")]),
    ]);
    broker.wait_acked(3);
    let binary = worker.entries("binary-1");
    assert_eq!(binary.len(), 1, "{binary:?}");
    // The script decodes base64 items and re-serializes JSON ones.
    assert_eq!(binary[0]["items_hex"], serde_json::json!(["ff0001", hex(b"{\"a\": 1}")]));
    assert_eq!(binary[0]["env_serve"], "1");
    assert_eq!(binary[0]["env_worker"], "w1");
    // The stray lines were ignored, and the order still acked once.
    assert_eq!(worker.entries("stray-1").len(), 1);
    assert_eq!(broker.counter("/dead_letters"), 0);
    let pid = pid_of(&binary[0]);
    assert_eq!(worker.stop(), Exit::Drained);
    // On exit stdin was closed: the handler exited and was reaped.
    assert!(!process_alive(pid), "handler process {pid} outlived the worker");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_nack_with_a_delay_is_retried_no_sooner() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 2, None);
    broker.send(vec![("delay-1", vec![json_item("{}")])]);
    broker.wait_acked(1);
    let entries = worker.entries("delay-1");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let waited = entries[1]["time"].as_f64().unwrap() - entries[0]["time"].as_f64().unwrap();
    assert!(waited >= 1.45, "attempt 2 came {waited} s after attempt 1; the handler asked for 1.5 s");
    assert_eq!(entries[1]["attempt"], 2);
    worker.stop();
}

#[test]
fn a_nack_without_retry_dead_letters_the_order() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 2, None);
    broker.send(vec![("final-1", vec![json_item("{}")])]);
    broker.wait_until("a dead letter", |b| b.counter("/dead_letters") == 1);
    assert_eq!(worker.entries("final-1").len(), 1, "not retried");
    assert_eq!(broker.counter("/counters/orders_acked"), 0);
    worker.stop();
}

#[test]
fn a_process_that_dies_mid_order_is_restarted_and_nothing_is_lost() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 4, None);
    broker.send(vec![
        ("die-1", vec![json_item("{}")]),
        ("ack-1", vec![json_item("{}")]),
        ("ack-2", vec![json_item("{}")]),
    ]);
    broker.wait_acked(3);
    let died = worker.entries("die-1");
    assert!(died.len() >= 2, "{died:?}");
    assert_ne!(pid_of(&died[0]), pid_of(died.last().unwrap()), "acked by a restarted process");
    worker.stop();
}

#[test]
fn a_hung_process_is_restarted_after_the_time_limit_and_the_order_redelivered() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 2, Some(1000));
    let sent = Instant::now();
    broker.send(vec![("hang-1", vec![json_item("{}")])]);
    broker.wait_acked(1);
    assert!(sent.elapsed() >= Duration::from_millis(1000), "not before the time limit");
    let hung = worker.entries("hang-1");
    assert_eq!(hung.len(), 2, "{hung:?}");
    let first = pid_of(&hung[0]);
    assert_ne!(first, pid_of(&hung[1]), "a new process answered");
    assert!(!process_alive(first), "the hung process {first} was killed");
    worker.stop();
}

#[test]
fn two_processes_share_the_orders() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 2, 4, None);
    // Each process acks once it holds two: with the fewest-held rule each
    // gets two of the four.
    let orders = ["hold-2-a", "hold-2-b", "hold-2-c", "hold-2-d"];
    broker.send(orders.iter().map(|id| (*id, vec![json_item("{}")])).collect());
    broker.wait_acked(4);
    let mut processes: Vec<String> =
        worker.log().iter().map(|entry| entry["process"].as_str().unwrap_or("?").to_owned()).collect();
    processes.sort();
    assert_eq!(processes, ["0", "0", "1", "1"]);
    worker.stop();
}

#[test]
fn one_process_holds_several_orders_at_once() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 3, None);
    // Acked only once the process holds all three: it must get them
    // before answering any.
    broker.send(vec![
        ("hold-3-a", vec![json_item("{}")]),
        ("hold-3-b", vec![json_item("{}")]),
        ("hold-3-c", vec![json_item("{}")]),
    ]);
    broker.wait_acked(3);
    assert_eq!(worker.log().len(), 3);
    worker.stop();
}

#[test]
fn a_line_over_the_limit_restarts_the_process_and_the_order_is_redelivered() {
    let broker = Broker::start();
    let worker = Worker::start(&broker, 1, 2, None);
    broker.send(vec![("long-1", vec![json_item("{}")])]);
    broker.wait_acked(1);
    let entries = worker.entries("long-1");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_ne!(pid_of(&entries[0]), pid_of(&entries[1]), "a new process answered");
    worker.stop();
}
