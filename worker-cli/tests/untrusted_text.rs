//! Issue 14, attack 7, through the real binary: an order id and a handler's
//! stderr (which becomes the nack reason) are untrusted text. A newline in
//! them must not forge a log line, an ESC must not reach the terminal.
//!
//! The broker here is two raw sockets: a PUB the worker subscribes to and a
//! PULL it sends heartbeats and nacks to.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::worker_topic;
use orderly_common::protocol::{split_frames, ControlMsg, Dispatch, FanoutMsg};
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

const WAIT: Duration = Duration::from_secs(20);
const FORGED: &str = "FORGED-LOG-LINE";

/// The worker process, killed on drop even if the test fails.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoint(dir: &Path, name: &str) -> String {
    format!("ipc://{}", dir.join(name).display())
}

#[test]
fn ids_and_reasons_cannot_forge_worker_log_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = zmq::Context::new();
    let (publisher, pull) = (context.socket(zmq::PUB).unwrap(), context.socket(zmq::PULL).unwrap());
    for socket in [&publisher, &pull] {
        socket.set_linger(0).unwrap();
    }
    publisher.bind(&endpoint(dir.path(), "fanout")).unwrap();
    pull.bind(&endpoint(dir.path(), "control")).unwrap();
    // The handler fails with a stderr that tries the same tricks.
    let command = format!("printf 'boom\\n{FORGED} from stderr \\033[2J\\n' >&2; exit 1");
    let child = Command::new(env!("CARGO_BIN_EXE_orderly-worker"))
        .args(["run", "--id", "w1", "--log-level", "debug", "--exec", &command])
        .args(["--fanout", &endpoint(dir.path(), "fanout"), "--control", &endpoint(dir.path(), "control")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let mut worker = Worker(child);

    let order = OrderKey::new("p1", format!("o-1\n{FORGED} from the id \x1b[2J\u{202e}"));
    let dispatch = FanoutMsg::Dispatch(Dispatch {
        order: order.clone(),
        attempt: 1,
        redelivered: false,
        items: vec![ByteBuf::from(b"{}".to_vec())],
    });
    // Publish until the nack comes back: the subscription takes a moment.
    let deadline = Instant::now() + WAIT;
    let nacked = loop {
        assert!(Instant::now() < deadline, "no nack from the worker");
        publisher.send_multipart([worker_topic("w1"), dispatch.encode()], 0).unwrap();
        if pull.poll(zmq::POLLIN, 200).unwrap() == 0 {
            continue;
        }
        let frames = pull.recv_multipart(0).unwrap();
        let (_, body) = split_frames(&frames).unwrap();
        if let Ok(ControlMsg::Nack(nack)) = ControlMsg::decode(body) {
            break nack;
        }
    };
    assert_eq!(nacked.order, order, "the wire keeps the id exactly");

    // SIGTERM drains and exits; stderr then holds every log line.
    let _ = Command::new("kill").arg(worker.0.id().to_string()).status();
    let mut stderr = String::new();
    worker.0.stderr.take().expect("piped").read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("order failed"), "the failure is logged:\n{stderr}");
    for line in stderr.lines() {
        assert!(!line.starts_with(FORGED), "a forged log line:\n{stderr}");
    }
    assert!(!stderr.contains('\x1b'), "an ESC reached the log:\n{stderr:?}");
    assert!(!stderr.contains('\u{202e}'), "a bidi override reached the log:\n{stderr:?}");
}
