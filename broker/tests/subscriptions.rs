//! Fanout subscriptions under CURVE, through the real broker binary: an
//! authorized key reads only its own topic and the broadcast `b/`, never
//! another worker's dispatches or another producer's confirms (issue 14,
//! attack 2).

use std::path::Path;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::protocol::{Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, ProducerHello};
use orderly_security::keys::KeyPair;
use serde_bytes::ByteBuf;
use support::{authorized_line, ep, start_curve_broker, Broker};

mod support;

const WAIT: Duration = Duration::from_secs(10);

/// A CURVE broker admitting `clients` (key, role, id).
fn start_broker(dir: &Path, clients: &[(&KeyPair, &str, &str)]) -> Broker {
    let lines: String = clients.iter().map(|(key, role, id)| authorized_line(key, role, id)).collect();
    start_curve_broker(dir, &KeyPair::generate().unwrap(), &lines, &[])
}

/// A CURVE client: PUSH to `push_to`, SUB to the fanout with `topics`.
struct Client {
    _context: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
}

fn client(broker: &Broker, me: &KeyPair, push_to: &str, topics: &[&[u8]]) -> Client {
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    let sub = context.socket(zmq::SUB).unwrap();
    for s in [&push, &sub] {
        s.set_linger(0).unwrap();
        s.set_curve_serverkey(&broker.public).unwrap();
        s.set_curve_publickey(&me.public).unwrap();
        s.set_curve_secretkey(&me.secret).unwrap();
    }
    for topic in topics {
        sub.set_subscribe(topic).unwrap();
    }
    push.connect(&ep(&broker.dir, push_to)).unwrap();
    sub.connect(&ep(&broker.dir, "fanout")).unwrap();
    Client { _context: context, push, sub }
}

impl Client {
    fn send(&self, body: Vec<u8>) {
        let _ = self.push.send_multipart([b"t".to_vec(), body], zmq::DONTWAIT);
    }
    /// The next fanout message within `wait`: its topic and body.
    fn next(&self, wait: Duration) -> Option<(Vec<u8>, FanoutMsg)> {
        if self.sub.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let frames = self.sub.recv_multipart(0).unwrap();
        Some((frames[0].clone(), FanoutMsg::decode(&frames[1]).ok()?))
    }
    /// The topics of what arrives within `window` (at most 100).
    fn topics_within(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut topics = Vec::new();
        while topics.len() < 100 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            let Some((topic, _)) = self.next(left) else { break };
            topics.push(String::from_utf8_lossy(&topic).into_owned());
        }
        topics
    }
    /// Repeats a producer hello until welcomed.
    fn hello(&self, producer: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.send(IntakeMsg::Hello(ProducerHello { producer: producer.into(), nonce: 9 }).encode());
            if matches!(self.next(Duration::from_millis(100)), Some((_, FanoutMsg::Welcome(_)))) {
                return true;
            }
        }
        false
    }
    /// One order of one item; true once it is confirmed.
    fn order(&self, producer: &str, id: &str) -> bool {
        let (p, o) = (producer.to_string(), id.to_string());
        self.send(IntakeMsg::Begin(Begin { producer: p.clone(), order: o.clone() }).encode());
        let data = ByteBuf::from(b"secret".to_vec());
        self.send(IntakeMsg::Item(Item { producer: p.clone(), order: o.clone(), seq: 0, data }).encode());
        self.send(IntakeMsg::Finish(Finish { producer: p, order: o, count: 1 }).encode());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some((_, FanoutMsg::Confirm(c))) = self.next(Duration::from_millis(100)) {
                if c.order == id {
                    return true;
                }
            }
        }
        false
    }
    /// Heartbeats as `worker` until a dispatch arrives; its order id.
    fn dispatched(&self, worker: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        let mut welcome = None;
        while Instant::now() < deadline {
            let heartbeat = Heartbeat {
                worker: worker.into(),
                incarnation: 1,
                capacity: 4,
                in_flight: vec![],
                welcome,
                draining: false,
                broken: None,
                dispatches_max: 0,
            };
            self.send(ControlMsg::Heartbeat(heartbeat).encode());
            match self.next(Duration::from_millis(100)) {
                Some((_, FanoutMsg::Welcome(w))) => welcome = Some(w.nonce),
                Some((_, FanoutMsg::Dispatch(d))) => return Some(d.order.id),
                _ => {}
            }
        }
        None
    }
}

fn metric(broker: &Broker, name: &str) -> u64 {
    let text = orderly_broker::admin::request(&broker.admin, "GET", "/metrics").unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn keys_read_only_their_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let k = || KeyPair::generate().unwrap();
    let (shop, shop2, w1, w2, dual) = (k(), k(), k(), k(), k());
    let broker = start_broker(
        dir.path(),
        &[(&shop, "producer", "shop"), (&shop2, "producer", "shop2"), (&w1, "worker", "w1"), (&w2, "worker", "w2")]
            .into_iter()
            // A producer whose id is a worker's: the role comes from the key.
            .chain([(&dual, "producer", "w1")])
            .collect::<Vec<_>>(),
    );
    let shop_topic = producer_topic("shop");
    let w1_topic = worker_topic("w1");
    // Spies, each an authorized key subscribing beyond its own topics.
    let worker_spy =
        client(&broker, &w2, "control", &[b"", b"w/", &w1_topic, b"p/", &shop_topic, b"b", b"w/w1", b"w/w1/x"]);
    let producer_spy = client(&broker, &shop2, "intake", &[&shop_topic, b"p/", b"", &w1_topic]);
    let dual_spy = client(&broker, &dual, "intake", &[&w1_topic, b"w/"]);
    std::thread::sleep(Duration::from_millis(500));

    // The legitimate clients still work end to end.
    let producer = client(&broker, &shop, "intake", &[&shop_topic, BROADCAST_TOPIC]);
    assert!(producer.hello("shop"), "no welcome for an authorized producer");
    assert!(producer.order("shop", "o1"), "no confirm for an authorized producer");
    let worker = client(&broker, &w1, "control", &[&w1_topic, BROADCAST_TOPIC]);
    assert_eq!(worker.dispatched("w1").as_deref(), Some("o1"), "the authorized worker got no dispatch");

    for (name, spy) in [("worker w2", &worker_spy), ("producer shop2", &producer_spy), ("producer w1", &dual_spy)] {
        let topics = spy.topics_within(Duration::from_millis(500));
        assert!(topics.is_empty(), "{name} read others' messages on {topics:?}");
    }
    // The spies' own topics still work: the same keys, subscribed properly.
    let w2_ok = client(&broker, &w2, "control", &[&worker_topic("w2"), BROADCAST_TOPIC]);
    assert!(w2_ok.next(WAIT).is_some(), "worker w2 got no broadcast on b/");
    let shop2_ok = client(&broker, &shop2, "intake", &[&producer_topic("shop2")]);
    assert!(shop2_ok.hello("shop2"), "producer shop2 got no welcome on its own topic");
    // 8 + 4 + 2 refused subscriptions.
    assert!(metric(&broker, "orderly_subscriptions_refused_total") >= 14);
}
