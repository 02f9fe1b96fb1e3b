//! The admin endpoint through the real broker binary: Host and Origin
//! checks, the bearer token, start-up refusals, and clients that are idle,
//! slow or never read delaying no one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic};
use orderly_common::protocol::{Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Nack, ProducerHello};
use serde_bytes::ByteBuf;
use support::{ep, free_port, BROKER};

mod support;

const TOKEN: &str = "test-token-0123456789abcdef";
/// A scrape must be answered within this, whatever other clients do.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

struct Broker {
    child: Child,
    dir: PathBuf,
    admin: String,
    token_file: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token file with `mode`.
fn token_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn broker_command(dir: &Path, admin: &str) -> Command {
    let mut command = Command::new(BROKER);
    command
        .args(["run", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--intake", &ep(dir, "intake"), "--fanout", &ep(dir, "fanout"), "--control", &ep(dir, "control")])
        .args(["--admin", admin, "--heartbeat-interval-ms", "200", "--fsync", "never"])
        .env_remove("ORDERLY_BROKER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A broker with `--admin-token`, its admin on loopback (or on every
/// interface with `bind_all`; the tests still talk to 127.0.0.1 only).
fn start_broker(dir: &Path, bind_all: bool) -> Broker {
    let port = free_port();
    let bind = if bind_all { format!("0.0.0.0:{port}") } else { format!("127.0.0.1:{port}") };
    let token_file = token_file(dir, 0o600);
    let child = broker_command(dir, &bind).arg("--admin-token").arg(&token_file).spawn().unwrap();
    let admin = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(&admin, "GET /status HTTP/1.1\r\nHost: localhost\r\n", Some(TOKEN)).0 != 200 {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child, dir: dir.to_path_buf(), admin, token_file }
}

/// Sends `head` (request line and headers, each ending in CRLF), with the
/// token when given, and returns (status, body); status 0 when the
/// connection failed or timed out.
fn http(addr: &str, head: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (0, String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    if write!(stream, "{head}{auth}Connection: close\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get(broker: &Broker, path: &str, token: Option<&str>) -> (u16, String) {
    http(&broker.admin, &format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", broker.admin), token)
}

fn dead_letter_count(broker: &Broker) -> usize {
    let (status, body) = get(broker, "/status", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["dead_letters"].as_u64().unwrap() as usize
}

/// Makes `count` dead letters (producer `shop`, orders `o0`..): a producer
/// sends the orders, a worker nacks each without retry, `reason` given.
fn make_dead_letters(broker: &Broker, count: usize, reason: &str) {
    let context = zmq::Context::new();
    let socket = |kind, endpoint: &str, topic: &[u8]| {
        let s = context.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        if kind == zmq::SUB {
            s.set_subscribe(topic).unwrap();
        }
        s.connect(&ep(&broker.dir, endpoint)).unwrap();
        s
    };
    let (intake, shop) = (socket(zmq::PUSH, "intake", b""), socket(zmq::SUB, "fanout", &producer_topic("shop")));
    let send = |s: &zmq::Socket, bytes: Vec<u8>| s.send_multipart([b"t".to_vec(), bytes], 0).unwrap();
    let next = |s: &zmq::Socket, wait_ms: i64| -> Option<FanoutMsg> {
        (s.poll(zmq::POLLIN, wait_ms).unwrap() > 0).then(|| FanoutMsg::decode(&s.recv_multipart(0).unwrap()[1]).ok())?
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the producer was not welcomed");
        send(&intake, IntakeMsg::Hello(ProducerHello { producer: "shop".into(), nonce: 9 }).encode());
        if matches!(next(&shop, 100), Some(FanoutMsg::Welcome(_))) {
            break;
        }
    }
    for n in 0..count {
        let (producer, order) = ("shop".to_string(), format!("o{n}"));
        send(&intake, IntakeMsg::Begin(Begin { producer: producer.clone(), order: order.clone() }).encode());
        let data = ByteBuf::from(b"1".to_vec());
        send(
            &intake,
            IntakeMsg::Item(Item { producer: producer.clone(), order: order.clone(), seq: 0, data }).encode(),
        );
        send(&intake, IntakeMsg::Finish(Finish { producer, order, count: 1 }).encode());
    }
    let (control, w1) = (socket(zmq::PUSH, "control", b""), socket(zmq::SUB, "fanout", &worker_topic("w1")));
    let mut welcome = None;
    let mut beat = Instant::now() - Duration::from_secs(1);
    while dead_letter_count(broker) < count {
        assert!(Instant::now() < deadline, "only {} dead letters", dead_letter_count(broker));
        if beat.elapsed() > Duration::from_millis(100) {
            let heartbeat = Heartbeat {
                worker: "w1".into(),
                incarnation: 1,
                capacity: 1000,
                in_flight: vec![],
                welcome,
                draining: false,
                broken: None,
            };
            send(&control, ControlMsg::Heartbeat(heartbeat).encode());
            beat = Instant::now();
        }
        while let Some(message) = next(&w1, 20) {
            match message {
                FanoutMsg::Welcome(w) => welcome = Some(w.nonce),
                FanoutMsg::Dispatch(d) => {
                    let nack = Nack {
                        worker: "w1".into(),
                        incarnation: 1,
                        order: d.order,
                        attempt: d.attempt,
                        retry: false,
                        reason: reason.into(),
                        delay_ms: None,
                        returned: false,
                    };
                    send(&control, ControlMsg::Nack(nack).encode());
                }
                _ => {}
            }
        }
    }
}

#[test]
fn a_cross_origin_post_is_refused_and_revives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 1, "poison");
    // What a page on evil.example sends with fetch(..., {method: "POST"}),
    // even with the token (a browser could hold one in a stored header).
    let head = format!("POST /dlq/retry?all=1 HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\n", broker.admin);
    let (status, body) = http(&broker.admin, &head, Some(TOKEN));
    assert_eq!(status, 403, "{body}");
    assert_eq!(dead_letter_count(&broker), 1, "a cross-origin POST revived a dead letter");
    // The endpoint's own origin is fine.
    let own = format!("POST /dlq/retry?all=1 HTTP/1.1\r\nHost: {0}\r\nOrigin: http://{0}\r\n", broker.admin);
    assert_eq!(http(&broker.admin, &own, Some(TOKEN)), (200, "{\n  \"revived\": 1\n}\n".into()));
}

#[test]
fn a_foreign_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    // DNS rebinding: evil.example now resolves to 127.0.0.1.
    let (status, body) = http(&broker.admin, "GET /status HTTP/1.1\r\nHost: evil.example:5573\r\n", None);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("pending_orders"), "{body}");
    assert_eq!(http(&broker.admin, "GET /status HTTP/1.1\r\nHost: localhost:5573\r\n", None).0, 200);
}

#[test]
fn idle_and_slow_clients_do_not_delay_a_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&broker.admin).unwrap()).collect();
    let mut slow = TcpStream::connect(&broker.admin).unwrap();
    slow.write_all(b"GET /sta").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, body) = get(&broker, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < SCRAPE_TIMEOUT, "the scrape took {:?}", started.elapsed());
    drop((idle, slow));
}

#[test]
fn a_client_that_never_reads_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    // ~2 KiB of JSON per letter (each '"' is escaped): ~8 MiB, more than
    // loopback's socket buffers hold.
    make_dead_letters(&broker, 4000, &"\"".repeat(1000));
    let mut stuck = TcpStream::connect(&broker.admin).unwrap();
    write!(stuck, "GET /dlq HTTP/1.1\r\nHost: {}\r\n\r\n", broker.admin).unwrap();
    // Time for the IO loop to build the answer (a debug build is slow at
    // it) and for the server to fill the socket.
    std::thread::sleep(Duration::from_millis(2000));
    let started = Instant::now();
    let (status, body) = get(&broker, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < SCRAPE_TIMEOUT, "the scrape took {:?}", started.elapsed());
    drop(stuck);
}

#[test]
fn posts_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 1, "poison");
    let head = format!("POST /dlq/retry?all=1 HTTP/1.1\r\nHost: {}\r\n", broker.admin);
    assert_eq!(http(&broker.admin, &head, None).0, 401);
    assert_eq!(http(&broker.admin, &head, Some("wrong-token-0123456789abcdef")).0, 401);
    assert_eq!(dead_letter_count(&broker), 1);
    assert_eq!(http(&broker.admin, &head, Some(TOKEN)), (200, "{\n  \"revived\": 1\n}\n".into()));
    // Reads stay open on loopback; the probes answer.
    assert_eq!(get(&broker, "/dlq", None).0, 200);
    assert_eq!(get(&broker, "/healthz", None), (200, "ok\n".into()));
    assert_eq!(get(&broker, "/readyz", None), (200, "ok\n".into()));
}

#[test]
fn beyond_loopback_only_the_probes_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), true);
    for path in ["/status", "/dlq", "/metrics"] {
        assert_eq!(get(&broker, path, None).0, 401, "{path}");
        assert_eq!(get(&broker, path, Some(TOKEN)).0, 200, "{path}");
    }
    assert_eq!(get(&broker, "/healthz", None).0, 200);
    assert_eq!(get(&broker, "/readyz", None).0, 200);
}

fn cli(broker: &Broker, args: &[&str], token: bool) -> Output {
    let mut command = Command::new(BROKER);
    command.args(args).args(["--admin", &broker.admin]).env_remove("ORDERLY_BROKER_ADMIN_TOKEN");
    if token {
        command.env("ORDERLY_BROKER_ADMIN_TOKEN", &broker.token_file);
    }
    command.output().unwrap()
}

#[test]
fn the_commands_send_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), true);
    make_dead_letters(&broker, 1, "poison");
    let text = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let refused = cli(&broker, &["status"], false);
    assert!(!refused.status.success() && text(&refused).contains("401"), "{}", text(&refused));
    let status = cli(&broker, &["status"], true);
    assert!(status.status.success() && text(&status).contains("dead letters      1"), "{}", text(&status));
    let list = cli(&broker, &["dlq", "list", "--admin-token", broker.token_file.to_str().unwrap()], false);
    assert!(
        list.status.success() && text(&list).contains("shop/o0") && text(&list).contains("poison"),
        "{}",
        text(&list)
    );
    let retry = cli(&broker, &["dlq", "retry", "shop/o0"], true);
    assert!(retry.status.success() && text(&retry).contains("1 dead letters returned"), "{}", text(&retry));
    std::fs::set_permissions(&broker.token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = cli(&broker, &["status"], true);
    assert!(!loose.status.success() && text(&loose).contains("chmod 600"), "{}", text(&loose));
}

/// Waits (bounded) for a broker that should refuse to start.
fn exit_of(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("the broker started: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_admin_endpoint_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let child = broker_command(dir.path(), "0.0.0.0:0").stderr(Stdio::piped()).spawn().unwrap();
    let output = exit_of(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token FILE") && stderr.contains("0.0.0.0:0"), "{stderr}");
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), 0o644);
    let admin = format!("127.0.0.1:{}", free_port());
    let child =
        broker_command(dir.path(), &admin).arg("--admin-token").arg(&token).stderr(Stdio::piped()).spawn().unwrap();
    let output = exit_of(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin token file") && stderr.contains("chmod 600"), "{stderr}");
}
