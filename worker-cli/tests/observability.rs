//! What monitoring and systemd see of a real worker process next to a real
//! broker (its binary, on IPC endpoints in a temp dir): `--metrics` passes
//! `promtool check metrics` and counts what ran; READY=1 comes when the
//! worker has found its broker, not before; WATCHDOG=1 while its loop
//! turns. Every wait is bounded; every process is killed by its PID.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderly_test_support::{broker_binary, broker_command, ep, free_port, get, promtool_check, Running};

/// Longest any one wait of these tests lasts.
const WAIT: Duration = Duration::from_secs(30);
/// How long a worker without a broker is watched for a premature READY=1.
const NO_BROKER_WATCH: Duration = Duration::from_millis(1500);

/// A real broker on IPC endpoints in `dir`, without an admin endpoint.
fn start_broker(dir: &Path) -> Running {
    let command = broker_command(&broker_binary(), dir).args(["--admin", "off", "--fsync", "never"]).spawn();
    Running(command.expect("start the broker"))
}

/// `orderly-worker run --noop` against the broker in `dir`, plus `extra`.
fn worker_command(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderly-worker"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORDERLY_WORKER_") || key == "NOTIFY_SOCKET" {
            command.env_remove(key);
        }
    }
    command
        .args(["run", "--id", "w1", "--noop", "--heartbeat-interval-ms", "200"])
        .args(["--fanout", &ep(dir, "fanout"), "--control", &ep(dir, "control")])
        .args(extra)
        .stdout(Stdio::null());
    command
}

/// The value of the sample line `name` (no labels) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `done` holds for the text, or fails after [`WAIT`].
fn scrape_until(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, text) = get(addr, "/metrics");
        if status == 200 && done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; last scrape ({status}):\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `count` orders with the real producer library; each confirmed.
fn send_orders(dir: &Path, count: usize) {
    let config = orderly_producer::ProducerConfig::new(
        "shop",
        ep(dir, "intake").parse().expect("endpoint"),
        ep(dir, "fanout").parse().expect("endpoint"),
    );
    let mut producer = orderly_producer::Producer::connect(config).expect("the producer connects");
    let receipts: Vec<_> = (0..count)
        .map(|n| {
            let order = orderly_producer::Order::new(format!("o-{n}"), vec![b"{}".to_vec()]);
            producer.send(order).expect("the outbox takes the order")
        })
        .collect();
    for receipt in receipts {
        let outcome = receipt.wait(&mut producer, WAIT).expect("a confirm");
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }
}

#[test]
fn worker_metrics_pass_promtool_and_count_what_ran() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _broker = start_broker(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("worker.log")).expect("worker log");
    let _worker = Running(worker_command(dir.path(), &["--metrics", &addr]).stderr(log).spawn().expect("worker"));
    scrape_until(&addr, "welcomed", |text| sample(text, "orderly_worker_welcomed") == Some(1.0));
    send_orders(dir.path(), 3);
    let text = scrape_until(&addr, "3 orders done", |text| {
        sample(text, "orderly_worker_orders_done_total") == Some(3.0)
            && sample(text, "orderly_worker_handler_duration_seconds_count") == Some(3.0)
    });
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed: {said}\n{text}");
    for family in [
        "orderly_worker_orders_done_total counter",
        "orderly_worker_orders_failed_total counter",
        "orderly_worker_orders_returned_total counter",
        "orderly_worker_decode_errors_total counter",
        "orderly_worker_orders_running gauge",
        "orderly_worker_capacity gauge",
        "orderly_worker_handler_broken gauge",
        "orderly_worker_welcomed gauge",
        "orderly_worker_broker_silence_seconds gauge",
        "orderly_worker_handler_duration_seconds histogram",
        "orderly_worker_build_info gauge",
        "process_resident_memory_bytes gauge",
    ] {
        assert!(text.contains(&format!("\n# TYPE {family}\n")), "no TYPE {family}:\n{text}");
        let name = family.split(' ').next().expect("a name");
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
    }
    assert_eq!(sample(&text, "orderly_worker_capacity"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "orderly_worker_handler_broken"), Some(0.0), "{text}");
    // Heartbeats every 200 ms: the broker is never long silent.
    let silence = sample(&text, "orderly_worker_broker_silence_seconds").expect("silence");
    assert!(silence < 5.0, "broker silent for {silence} s:\n{text}");
    assert!(text.contains("orderly_worker_build_info{version=\""), "{text}");
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = get(&addr, "/nowhere");
    assert!(status == 404 && body.contains("/metrics"), "{status} {body}");
}

#[test]
fn a_bad_or_taken_metrics_address_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = worker_command(dir.path(), &["--metrics", "localhost"]).output().expect("worker runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--metrics"), "{output:?}");
    // Taken: a port this test holds.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let mut command = worker_command(dir.path(), &["--metrics", &addr]);
    let mut child = Running(command.stderr(Stdio::piped()).spawn().expect("worker"));
    let status = child.exit_within(WAIT, "a worker whose metrics port is taken");
    let mut stderr = String::new();
    child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot serve worker metrics on {addr}")), "{stderr}");
}

/// Under systemd (`Type=notify`): no READY=1 while no broker answers (the
/// watchdog pings go on: the loop turns), READY=1 with `STATUS=broker
/// found` once one does. NOTIFY_SOCKET is a datagram socket this test
/// binds; WATCHDOG_PID must be the worker's own, so a shell sets it to
/// its PID and execs.
#[test]
fn systemd_hears_ready_once_the_worker_found_its_broker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let worker = worker_command(dir.path(), &[]);
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(worker.get_program())
        .args(worker.get_args())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let _worker = Running(child);
    let mut heard = Vec::new();
    let mut listen = |until: &dyn Fn(&[String]) -> bool, within: Duration| {
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        while started.elapsed() < within && !until(&heard) {
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        heard.clone()
    };
    let is_ready = |m: &String| m.lines().any(|l| l == "READY=1");
    let pings = |heard: &[String]| heard.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count();
    let early = listen(&|_| false, NO_BROKER_WATCH);
    assert!(!early.iter().any(is_ready), "READY=1 without a broker: {early:?}");
    assert!(pings(&early) >= 2, "the loop turns without a broker, yet too few WATCHDOG=1: {early:?}");
    let _broker = start_broker(dir.path());
    let heard = listen(&|heard| heard.iter().any(is_ready), WAIT);
    let ready = heard.iter().find(|m| is_ready(m));
    assert!(ready.is_some_and(|m| m.contains("STATUS=broker found")), "no READY=1: {heard:?}");
}
