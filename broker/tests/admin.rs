//! The admin endpoint through the real broker binary: Host and Origin
//! checks, the bearer token, start-up refusals, clients that are idle,
//! slow or never read delaying no one, and the dead-letter routes (paging,
//! show, delete) with the commands that use them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic};
use orderly_common::order_json::order_json;
use orderly_common::protocol::{Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Nack, ProducerHello};
use orderly_common::OrderKey;
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
    let (status, _, body) = http_with_head(addr, head, token);
    (status, body)
}

/// As [`http`], with the response's head (status line and headers) too.
fn http_with_head(addr: &str, head: &str, token: Option<&str>) -> (u16, String, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (0, String::new(), String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    if write!(stream, "{head}{auth}Connection: close\r\n\r\n").is_err() {
        return (0, String::new(), String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new(), String::new());
    }
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

fn post(broker: &Broker, path: &str, token: Option<&str>) -> (u16, String) {
    http(&broker.admin, &format!("POST {path} HTTP/1.1\r\nHost: {}\r\n", broker.admin), token)
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
    make_orders(broker, count, b"1", reason, true);
}

/// Sends `count` orders of one item; with `nack`, a worker then nacks each
/// without retry, else they stay pending (no worker).
fn make_orders(broker: &Broker, count: usize, item: &[u8], reason: &str, nack: bool) {
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
        let data = ByteBuf::from(item.to_vec());
        send(
            &intake,
            IntakeMsg::Item(Item { producer: producer.clone(), order: order.clone(), seq: 0, data }).encode(),
        );
        send(&intake, IntakeMsg::Finish(Finish { producer, order, count: 1 }).encode());
    }
    if !nack {
        let sealed = || get(broker, "/status", None).1.contains(&format!("\"pending_orders\": {count}"));
        while !sealed() {
            assert!(Instant::now() < deadline, "the orders were not sealed");
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
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
                dispatches_max: 0,
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
    // Wait for the answer's first byte rather than a fixed time: building
    // ~8 MiB of JSON takes a debug build seconds on a loaded machine, and
    // a scrape timed while it is still being built measured that, not a
    // stuck client. One byte read leaves the rest to fill the socket.
    stuck.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut first = [0u8; 1];
    stuck.read_exact(&mut first).expect("the /dlq answer starts within a minute");
    std::thread::sleep(Duration::from_millis(500));
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

/// The handler's view of `shop/ID` with one item `1`, as the worker renders it.
fn rendering(id: &str, attempt: u32) -> Vec<u8> {
    order_json(&OrderKey::new("shop", id), attempt, attempt > 1, &[b"1".as_slice()])
}

/// A header's value in a response head (names compared case-blind).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn dead_letters_come_in_pages_with_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 3, "poison");
    let ask = |path: &str| http_with_head(&broker.admin, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n"), None);
    let (status, head, body) = ask("/dlq?limit=2");
    assert_eq!(status, 200, "{body}");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = first.as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["o0", "o1"]);
    assert_eq!(header(&head, "x-orderly-total"), Some("3"), "{head}");
    assert_eq!(header(&head, "x-orderly-next-after"), Some("shop%2Fo1"), "{head}");
    let (_, head, body) = ask("/dlq?after=shop%2Fo1&limit=2");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert_eq!(second[0]["id"], "o2");
    assert_eq!(header(&head, "x-orderly-total"), Some("3"), "{head}");
    assert_eq!(header(&head, "x-orderly-next-after"), None, "the last page: {head}");
    let (_, _, body) = ask("/dlq/page?limit=2");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((page["total"].as_u64(), page["dead_letters"].as_array().unwrap().len()), (Some(3), 2));
    assert_eq!(page["next_after"], serde_json::json!({ "producer": "shop", "id": "o1" }));
    // The command pages the same way and says how to go on.
    let list = cli(&broker, &["dlq", "list", "--limit", "2"], false);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert!(text.contains("showing 2 of 3 dead letters"), "{text}");
    assert!(text.contains("next page: orderly-broker dlq list --after shop/o1 --limit 2"), "{text}");
    let rest = cli(&broker, &["dlq", "list", "--after", "shop/o1"], false);
    let text = String::from_utf8_lossy(&rest.stdout);
    assert!(text.contains("shop/o2") && text.contains("showing 1 of 3") && !text.contains("next page"), "{text}");
}

#[test]
fn show_gives_the_handler_s_view_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 1, "poison");
    let (status, body) = get(&broker, "/dlq/show?id=shop%2Fo0", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["order"]["place"], "dead");
    assert_eq!(view["order"]["attempts"], 1);
    assert!(view["order"]["last_reason"].as_str().unwrap().ends_with("poison"), "{body}");
    let raw: orderly_broker::admin::OrderView = serde_json::from_str(&body).unwrap();
    assert_eq!(raw.handler_view.unwrap().get().as_bytes(), rendering("o0", 1));
    let shown = cli(&broker, &["dlq", "show", "shop/o0"], true);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let mut expected = rendering("o0", 1);
    expected.push(b'\n');
    assert_eq!(String::from_utf8_lossy(&shown.stdout), String::from_utf8_lossy(&expected));
    let info = cli(&broker, &["dlq", "show", "--info", "shop/o0"], true);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("last reason      worker w1 refused it: poison")
            && text.ends_with(&*String::from_utf8_lossy(&expected)),
        "{text}"
    );
    // Not a dead letter, or no such order: 404 and exit 1.
    assert_eq!(get(&broker, "/dlq/show?id=shop%2Fnone", Some(TOKEN)).0, 404);
    let missing = cli(&broker, &["dlq", "show", "shop/none"], true);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no order shop/none"));
}

#[test]
fn orders_show_tells_where_a_pending_order_is() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_orders(&broker, 1, b"1", "", false);
    let (status, body) = get(&broker, "/orders/show?id=shop%2Fo0", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((view["order"]["place"].as_str(), view["order"]["attempts"].as_u64()), (Some("pending"), Some(0)));
    // Shown as its first dispatch will be.
    let raw: orderly_broker::admin::OrderView = serde_json::from_str(&body).unwrap();
    assert_eq!(raw.handler_view.unwrap().get().as_bytes(), rendering("o0", 1));
    let (status, body) = get(&broker, "/dlq/show?id=shop%2Fo0", Some(TOKEN));
    assert_eq!(status, 404);
    assert!(body.contains("not a dead letter (it is pending)"), "{body}");
    let shown = cli(&broker, &["orders", "show", "shop/o0"], true);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("place            pending"), "{text}");
    assert!(text.ends_with(&format!("{}\n", String::from_utf8_lossy(&rendering("o0", 1)))), "{text}");
}

#[test]
fn showing_and_deleting_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 1, "poison");
    for path in ["/dlq/show?id=shop%2Fo0", "/orders/show?id=shop%2Fo0"] {
        let (status, body) = get(&broker, path, None);
        assert_eq!(status, 401, "{path}");
        assert!(!body.contains("items"), "{body}");
        assert_eq!(get(&broker, path, Some("wrong-token-0123456789abcdef")).0, 401, "{path}");
    }
    assert_eq!(post(&broker, "/dlq/delete?all=1", None).0, 401);
    assert_eq!(dead_letter_count(&broker), 1, "a delete without the token deleted");
    let refused = cli(&broker, &["dlq", "delete", "--all"], false);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("401"));
}

#[test]
fn deletes_are_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_broker(dir.path(), false);
    make_dead_letters(&broker, 3, "poison");
    assert_eq!(post(&broker, "/dlq/delete?id=shop%2Fo0", Some(TOKEN)), (200, "{\n  \"deleted\": 1\n}\n".into()));
    let again = cli(&broker, &["dlq", "delete", "shop/o0"], true);
    assert_eq!(again.status.code(), Some(1), "deleting what is gone fails");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no dead letter shop/o0"));
    let all = cli(&broker, &["dlq", "delete", "--all"], true);
    assert!(all.status.success() && String::from_utf8_lossy(&all.stdout).contains("2 dead letters deleted"));
    let none = cli(&broker, &["dlq", "delete", "--all"], true);
    assert!(none.status.success() && String::from_utf8_lossy(&none.stdout).contains("0 dead letters deleted"));
    // A clean stop (SIGTERM) and a start on the same data directory.
    let stopped = Command::new("kill").arg(broker.child.id().to_string()).status().unwrap();
    assert!(stopped.success());
    assert!(broker.child.wait().unwrap().success());
    let broker = start_broker(dir.path(), false);
    assert_eq!(dead_letter_count(&broker), 0, "deleted dead letters came back");
    assert_eq!(get(&broker, "/orders/show?id=shop%2Fo1", Some(TOKEN)).0, 404);
}

#[test]
fn show_renders_an_item_that_is_not_json_in_base64() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), false);
    make_orders(&broker, 1, b"\xff not json", "", false);
    let shown = cli(&broker, &["orders", "show", "shop/o0"], true);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("place            pending"), "{text}");
    // b"\xff not json" in base64, listed as item 0.
    assert!(text.contains(r#""items":[{"base64":"/yBub3QganNvbg=="}],"base64_items":[0]}"#), "{text}");
}
