//! The socket loop against a scripted broker on loopback: handshake,
//! dispatch and ack, bad frames, broker restart, and graceful drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_common::protocol::{BrokerHeartbeat, ControlMsg, Dispatch, FanoutMsg, Welcome};
use orderly_common::{Endpoint, OrderKey};
use orderly_worker::handler::{items_sha256, Exec, Handler, Noop, Sink};
use orderly_worker::io::{self, Config, Exit, IoError};
use serde_bytes::ByteBuf;

const WAIT: Duration = Duration::from_secs(10);
const NONCE: u64 = 77;

/// The broker's side of the sockets, driven by the test.
struct Broker {
    fanout: zmq::Socket,
    control: zmq::Socket,
    fanout_ep: Endpoint,
    control_ep: Endpoint,
    _context: zmq::Context,
}

impl Broker {
    fn bind() -> Broker {
        let context = zmq::Context::new();
        let fanout = context.socket(zmq::PUB).expect("PUB");
        let control = context.socket(zmq::PULL).expect("PULL");
        for socket in [&fanout, &control] {
            socket.set_linger(0).expect("linger");
            socket.bind("tcp://127.0.0.1:*").expect("bind on loopback");
        }
        control.set_rcvtimeo(100).expect("rcvtimeo");
        let endpoint = |s: &zmq::Socket| {
            s.get_last_endpoint().expect("endpoint").expect("utf-8").parse::<Endpoint>().expect("valid")
        };
        Broker { fanout_ep: endpoint(&fanout), control_ep: endpoint(&control), fanout, control, _context: context }
    }

    fn publish(&self, topic: &[u8], msg: &FanoutMsg) {
        self.fanout.send_multipart([topic, msg.encode().as_slice()], 0).expect("publish");
    }

    fn recv(&self) -> Option<ControlMsg> {
        let frames = self.control.recv_multipart(0).ok()?;
        assert_eq!(frames.len(), 2, "control messages are [topic, body]");
        assert_eq!(frames[0], b"w/w1/");
        Some(ControlMsg::decode(&frames[1]).expect("worker sends valid control messages"))
    }

    /// Receives until `want` picks a message, re-sending the welcome to
    /// every heartbeat that has not echoed it (PUB drops messages sent
    /// before the subscription exists).
    fn wait_for<T>(&self, mut want: impl FnMut(&ControlMsg) -> Option<T>) -> T {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            let Some(msg) = self.recv() else { continue };
            if let Some(found) = want(&msg) {
                return found;
            }
            if let ControlMsg::Heartbeat(hb) = &msg {
                if hb.welcome != Some(NONCE) {
                    self.publish(b"w/w1/", &FanoutMsg::Welcome(Welcome { nonce: NONCE, orders_max: 0 }));
                }
            }
        }
        panic!("the expected control message did not arrive within {WAIT:?}");
    }

    fn handshake(&self) {
        self.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.welcome == Some(NONCE)).then_some(()));
    }

    fn dispatch(&self, id: &str, items: &[&[u8]]) -> Dispatch {
        let dispatch = Dispatch {
            order: OrderKey::new("p1", id),
            attempt: 1,
            redelivered: false,
            items: items.iter().map(|i| ByteBuf::from(i.to_vec())).collect(),
        };
        self.publish(b"w/w1/", &FanoutMsg::Dispatch(dispatch.clone()));
        dispatch
    }

    fn wait_for_ack(&self, id: &str) {
        self.wait_for(|m| {
            let acked = match m {
                ControlMsg::Ack(a) => a.order.id == id,
                ControlMsg::Acks(a) => a.acks.iter().any(|a| a.order.id == id),
                _ => false,
            };
            acked.then_some(())
        });
    }
}

/// Heartbeat liveness that never runs out within a test: the scripted
/// broker sends no heartbeats unless a test says so.
const PATIENT: u32 = 1000;

fn start(
    broker: &Broker,
    handler: Arc<dyn Handler>,
    drain_timeout_ms: u64,
    heartbeat_liveness: u32,
) -> (Arc<AtomicBool>, JoinHandle<Result<Exit, IoError>>) {
    let config = Config {
        worker: "w1".into(),
        incarnation: 5,
        fanout: broker.fanout_ep.clone(),
        control: broker.control_ep.clone(),
        concurrency: 2,
        handler,
        heartbeat_interval_ms: 50,
        heartbeat_liveness,
        drain_timeout_ms,
        dispatches_max: 0,
        curve: None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    (shutdown, std::thread::spawn(move || io::run(config, &flag)))
}

fn is_bye(msg: &ControlMsg) -> Option<()> {
    matches!(msg, ControlMsg::Bye(b) if b.worker == "w1" && b.incarnation == 5).then_some(())
}

#[test]
fn handshake_dispatch_ack_and_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::bind();
    let (shutdown, worker) = start(&broker, Arc::new(Sink { dir: dir.path().to_path_buf() }), 5000, PATIENT);
    broker.handshake();
    // Garbage and wrongly framed messages are dropped, not fatal.
    broker.fanout.send_multipart([b"w/w1/".as_slice(), b"\xc1garbage"], 0).expect("publish");
    broker.fanout.send_multipart([b"w/w1/".as_slice(), b"a", b"b"], 0).expect("publish");
    let dispatch = broker.dispatch("o1", &[b"{\"n\": 1}", b"[2]"]);
    broker.wait_for_ack("o1");
    let line = std::fs::read_to_string(dir.path().join("deliveries.log")).expect("delivery logged");
    assert_eq!(line, format!("p1\to1\t1\t{}\n", items_sha256(&dispatch.items)));
    assert!(dir.path().join("p1").join("o1.json").is_file());

    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}

#[test]
fn broker_restart_makes_the_worker_announce_itself_again() {
    let broker = Broker::bind();
    let (shutdown, worker) = start(&broker, Arc::new(Noop), 5000, PATIENT);
    broker.handshake();
    let heartbeat = |incarnation| {
        FanoutMsg::Heartbeat(BrokerHeartbeat { incarnation, interval_ms: 50, member: None, leader: None, term: 0 })
    };
    broker.publish(b"b/", &heartbeat(1));
    broker.publish(b"b/", &heartbeat(2));
    // The new broker's nonce is unknown: the worker drops the old one.
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.welcome.is_none()).then_some(()));
    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}

#[test]
fn silent_broker_makes_the_worker_ask_for_a_new_welcome() {
    let broker = Broker::bind();
    let (shutdown, worker) = start(&broker, Arc::new(Noop), 5000, 3);
    broker.handshake();
    // No broker traffic for 3 intervals of 50 ms: the welcome is dropped.
    let started = Instant::now();
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.welcome.is_none()).then_some(()));
    assert!(started.elapsed() >= Duration::from_millis(100), "not before the liveness timeout");
    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}

#[test]
fn drain_waits_for_running_orders_before_bye() {
    let broker = Broker::bind();
    let (shutdown, worker) =
        start(&broker, Arc::new(Exec { command: "cat >/dev/null; sleep 0.3".into(), timeout_ms: None }), 5000, PATIENT);
    broker.handshake();
    broker.dispatch("slow", &[b"{}"]);
    // Started once it is listed in flight; then ask for shutdown.
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if !hb.in_flight.is_empty()).then_some(()));
    shutdown.store(true, Ordering::Relaxed);
    let first = broker
        .wait_for(|m| matches!(m, ControlMsg::Ack(_) | ControlMsg::Acks(_) | ControlMsg::Bye(_)).then(|| m.kind()));
    assert_eq!(first, "ack", "the running order finishes before the bye");
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}

#[test]
fn drain_timeout_leaves_running_orders_to_the_broker() {
    let broker = Broker::bind();
    let (shutdown, worker) =
        start(&broker, Arc::new(Exec { command: "sleep 2".into(), timeout_ms: None }), 200, PATIENT);
    broker.handshake();
    broker.dispatch("stuck", &[b"{}"]);
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if !hb.in_flight.is_empty()).then_some(()));
    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    let exit = worker.join().expect("no panic").expect("clean exit");
    assert_eq!(exit, Exit::DrainTimedOut { abandoned: 1 });
}

fn returned_nack(id: &'static str) -> impl FnMut(&ControlMsg) -> Option<String> {
    move |m| match m {
        ControlMsg::Nack(n) if n.order.id == id && n.returned && n.retry => Some(n.reason.clone()),
        _ => None,
    }
}

#[test]
fn a_missing_handler_returns_orders_turns_broken_and_probes_again() {
    let broker = Broker::bind();
    let handler = Arc::new(Exec { command: "/nonexistent/handler".into(), timeout_ms: Some(5000) });
    let (shutdown, worker) = start(&broker, handler, 5000, PATIENT);
    broker.handshake();
    broker.dispatch("o1", &[b"{}"]);
    let reason = broker.wait_for(returned_nack("o1"));
    assert!(reason.contains("127"), "{reason}");
    let broken_at = Instant::now();
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.broken.is_some()).then_some(()));
    // While broken, a dispatch is returned unrun.
    broker.dispatch("o2", &[b"{}"]);
    let reason = broker.wait_for(returned_nack("o2"));
    assert!(reason.contains("cannot run"), "{reason}");
    // The probe: a heartbeat without `broken`, about a second later.
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.broken.is_none()).then_some(()));
    let waited = broken_at.elapsed();
    assert!(waited >= Duration::from_millis(800), "probed after {waited:?}");
    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}

#[test]
fn a_serve_command_that_does_not_exist_turns_the_worker_broken() {
    let broker = Broker::bind();
    let serve = orderly_worker::serve::Serve {
        command: "/nonexistent/handler".into(),
        processes: 1,
        timeout_ms: Some(5000),
        worker: "w1".into(),
    };
    let (shutdown, worker) = start(&broker, Arc::new(serve), 5000, PATIENT);
    broker.handshake();
    broker.dispatch("o1", &[b"{}"]);
    let reason = broker.wait_for(returned_nack("o1"));
    assert!(reason.contains("127") && reason.contains("not found"), "{reason}");
    broker.wait_for(|m| matches!(m, ControlMsg::Heartbeat(hb) if hb.broken.is_some()).then_some(()));
    // While broken, a dispatch is returned unrun.
    broker.dispatch("o2", &[b"{}"]);
    let reason = broker.wait_for(returned_nack("o2"));
    assert!(reason.contains("cannot run"), "{reason}");
    shutdown.store(true, Ordering::Relaxed);
    broker.wait_for(is_bye);
    assert_eq!(worker.join().expect("no panic").expect("clean exit"), Exit::Drained);
}
