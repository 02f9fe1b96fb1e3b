//! Trust boundaries between authorized clients (issue 14), through the real
//! broker binary with CURVE on: a worker key cannot retire orders it was
//! never sent, and one producer cannot starve another.

use std::path::Path;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic};
use orderly_common::protocol::{
    Acked, Acks, Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, ProducerHello, RejectReason,
};
use orderly_common::OrderKey;
use orderly_security::keys::KeyPair;
use serde_bytes::ByteBuf;
use support::{authorized_line, ep, start_curve_broker, Broker};

mod support;

const WAIT: Duration = Duration::from_secs(10);

/// The broker's key and the clients': producers `shop` and `flood`,
/// workers `w1` (honest) and `mallory` (authorized, never registers).
struct Keys {
    broker: KeyPair,
    shop: KeyPair,
    flood: KeyPair,
    w1: KeyPair,
    mallory: KeyPair,
}

fn keys() -> Keys {
    let k = || KeyPair::generate().unwrap();
    Keys { broker: k(), shop: k(), flood: k(), w1: k(), mallory: k() }
}

fn start_broker(dir: &Path, keys: &Keys, extra: &[&str]) -> Broker {
    let authorized = [(&keys.shop, "producer", "shop"), (&keys.flood, "producer", "flood")]
        .into_iter()
        .chain([(&keys.w1, "worker", "w1"), (&keys.mallory, "worker", "mallory")])
        .map(|(key, role, id)| authorized_line(key, role, id))
        .collect::<String>();
    start_curve_broker(dir, &keys.broker, &authorized, extra)
}

fn status(broker: &Broker) -> serde_json::Value {
    serde_json::from_str(&orderly_broker::admin::request(&broker.admin, "GET", "/status").unwrap()).unwrap()
}

/// Polls the status until `done` holds (true) or `WAIT` passes (false).
fn wait_status(broker: &Broker, done: impl Fn(&serde_json::Value) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done(&status(broker)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A CURVE client: PUSH to intake or control, SUB to its topic.
struct Client {
    _context: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
}

fn client(broker: &Broker, server: &KeyPair, me: &KeyPair, push_to: &str, topic: &[u8]) -> Client {
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    let sub = context.socket(zmq::SUB).unwrap();
    for s in [&push, &sub] {
        s.set_linger(0).unwrap();
        s.set_curve_serverkey(&server.public).unwrap();
        s.set_curve_publickey(&me.public).unwrap();
        s.set_curve_secretkey(&me.secret).unwrap();
    }
    sub.set_subscribe(topic).unwrap();
    push.connect(&ep(&broker.dir, push_to)).unwrap();
    sub.connect(&ep(&broker.dir, "fanout")).unwrap();
    Client { _context: context, push, sub }
}

impl Client {
    fn send(&self, body: Vec<u8>) {
        self.push.send_multipart([b"t".to_vec(), body], 0).unwrap();
    }
    fn next(&self, wait: Duration) -> Option<FanoutMsg> {
        if self.sub.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let frames = self.sub.recv_multipart(0).unwrap();
        FanoutMsg::decode(&frames[1]).ok()
    }
    fn hello(&self, producer: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.send(IntakeMsg::Hello(ProducerHello { producer: producer.into(), nonce: 9 }).encode());
            if matches!(self.next(Duration::from_millis(100)), Some(FanoutMsg::Welcome(_))) {
                return true;
            }
        }
        false
    }
    fn order(&self, producer: &str, id: &str) {
        let (p, o) = (producer.to_string(), id.to_string());
        self.send(IntakeMsg::Begin(Begin { producer: p.clone(), order: o.clone() }).encode());
        let data = ByteBuf::from(b"1".to_vec());
        self.send(IntakeMsg::Item(Item { producer: p.clone(), order: o.clone(), seq: 0, data }).encode());
        self.send(IntakeMsg::Finish(Finish { producer: p, order: o, count: 1 }).encode());
    }
    /// Confirms and `limit_reached` rejects, until `count` of them arrived
    /// or `WAIT` passed.
    fn answers(&self, count: usize) -> (Vec<String>, Vec<String>) {
        let (mut confirmed, mut limited) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && confirmed.len() + limited.len() < count {
            match self.next(Duration::from_millis(100)) {
                Some(FanoutMsg::Confirm(c)) => confirmed.push(c.order),
                Some(FanoutMsg::Confirms(c)) => confirmed.extend(c.orders),
                Some(FanoutMsg::Reject(r)) if matches!(r.reason, RejectReason::LimitReached { .. }) => {
                    limited.push(r.order)
                }
                _ => {}
            }
        }
        (confirmed, limited)
    }
}

fn acks(worker: &str, orders: &[OrderKey]) -> Vec<u8> {
    let acks = orders.iter().map(|order| Acked { order: order.clone(), attempt: 1 }).collect();
    ControlMsg::Acks(Acks { worker: worker.into(), incarnation: 7, acks }).encode()
}

fn heartbeat(worker: &str, welcome: Option<u64>, in_flight: Vec<OrderKey>) -> Vec<u8> {
    ControlMsg::Heartbeat(Heartbeat {
        worker: worker.into(),
        incarnation: 7,
        capacity: 8,
        in_flight,
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
    .encode()
}

/// Issue 14, attack 1: an authorized worker key that never registered acks
/// a producer's pending orders under its own id. Before: they were retired
/// and never processed. Now: refused and counted; a real worker gets them.
#[test]
fn a_worker_key_cannot_retire_orders_it_was_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let broker = start_broker(dir.path(), &keys, &[]);
    let shop = client(&broker, &keys.broker, &keys.shop, "intake", &producer_topic("shop"));
    assert!(shop.hello("shop"), "no welcome for the producer");
    let ids: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
    for id in &ids {
        shop.order("shop", id);
    }
    assert_eq!(shop.answers(ids.len()).0.len(), ids.len(), "the orders were not all confirmed");

    let mallory = client(&broker, &keys.broker, &keys.mallory, "control", &worker_topic("mallory"));
    let keys_of: Vec<OrderKey> = ids.iter().map(|id| OrderKey::new("shop", id.as_str())).collect();
    mallory.send(acks("mallory", &keys_of));
    assert!(
        wait_status(&broker, |v| v["counters"]["acks_refused"] == ids.len()),
        "the stranger's acks were not refused: {}",
        status(&broker)
    );
    let v = status(&broker);
    assert_eq!(v["pending_orders"], ids.len(), "a stranger's ack retired orders: {v}");
    assert_eq!(v["counters"]["orders_acked"], 0, "{v}");

    // The real worker still gets every order and retires it.
    let w1 = client(&broker, &keys.broker, &keys.w1, "control", &worker_topic("w1"));
    let (mut welcome, mut got) = (None, Vec::<OrderKey>::new());
    let deadline = Instant::now() + WAIT;
    while got.len() < ids.len() {
        assert!(Instant::now() < deadline, "w1 got only {got:?}");
        w1.send(heartbeat("w1", welcome, got.clone()));
        match w1.next(Duration::from_millis(100)) {
            Some(FanoutMsg::Welcome(w)) => welcome = Some(w.nonce),
            Some(FanoutMsg::Dispatch(d)) => got.push(d.order),
            _ => {}
        }
    }
    w1.send(acks("w1", &got));
    assert!(wait_status(&broker, |v| v["counters"]["orders_acked"] == ids.len()), "{}", status(&broker));
}

/// Issue 14, attack 4: with no worker, one producer floods 1-byte orders.
/// Before: it filled `--pending-orders-max`, intake closed, and a second
/// producer's hello was never read ("no answer from a broker"). Now: past
/// its share it gets `limit_reached`, and the second is read and confirmed.
#[test]
fn a_flooding_producer_cannot_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    // A share of 20 per producer, of 40 in all.
    let broker =
        start_broker(dir.path(), &keys, &["--pending-orders-max", "40", "--pending-orders-per-producer-max", "20"]);
    let flood = client(&broker, &keys.broker, &keys.flood, "intake", &producer_topic("flood"));
    assert!(flood.hello("flood"));
    for i in 0..60 {
        flood.order("flood", &format!("f{i}"));
    }
    let (confirmed, limited) = flood.answers(60);
    assert_eq!(confirmed.len(), 20, "the flood's confirms");
    assert_eq!(limited.len(), 40, "the flood's limit_reached rejects");

    let shop = client(&broker, &keys.broker, &keys.shop, "intake", &producer_topic("shop"));
    assert!(shop.hello("shop"), "the second producer's hello was never answered");
    shop.order("shop", "s1");
    assert_eq!(shop.answers(1).0, vec!["s1".to_string()], "{}", status(&broker));
    let v = status(&broker);
    assert_eq!(v["counters"]["producer_limit_rejects"], 40, "{v}");
    assert_eq!(v["pending_orders"], 21, "{v}");
}
