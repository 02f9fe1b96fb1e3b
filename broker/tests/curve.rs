//! CURVE through the real broker binary: only authorized keys get in, ids
//! are bound to keys, revocation works on reload, secrets are guarded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic};
use orderly_common::protocol::{Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, ProducerHello};
use orderly_security::keys::{encode, write_pair, KeyPair};
use serde_bytes::ByteBuf;
use support::{ep, free_port, start_curve_broker, Broker, BROKER};

mod support;

const QUIET: Duration = Duration::from_millis(1500);

struct Keys {
    broker: KeyPair,
    shop: KeyPair,
    w1: KeyPair,
    stranger: KeyPair,
}

fn keys() -> Keys {
    let k = || KeyPair::generate().unwrap();
    Keys { broker: k(), shop: k(), w1: k(), stranger: k() }
}

fn authorized_text(keys: &Keys, with_shop: bool) -> String {
    let mut text = format!("# test keys\n{} worker w1\n", encode(&keys.w1.public));
    if with_shop {
        text.push_str(&format!("{} producer shop\n", encode(&keys.shop.public)));
    }
    text
}

fn start_broker(dir: &Path, keys: &Keys) -> Broker {
    start_curve_broker(dir, &keys.broker, &authorized_text(keys, true), &[])
}

fn status(broker: &Broker) -> serde_json::Value {
    serde_json::from_str(&orderly_broker::admin::request(&broker.admin, "GET", "/status").unwrap()).unwrap()
}

/// PUSH + SUB sockets, CURVE clients when `me` is given.
struct Client {
    _context: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
}

fn client(broker: &Broker, server: &KeyPair, me: Option<&KeyPair>, push_to: &str, topic: &[u8]) -> Client {
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    let sub = context.socket(zmq::SUB).unwrap();
    for s in [&push, &sub] {
        s.set_linger(0).unwrap();
        if let Some(me) = me {
            s.set_curve_serverkey(&server.public).unwrap();
            s.set_curve_publickey(&me.public).unwrap();
            s.set_curve_secretkey(&me.secret).unwrap();
        }
    }
    sub.set_subscribe(topic).unwrap();
    push.connect(&ep(&broker.dir, push_to)).unwrap();
    sub.connect(&ep(&broker.dir, "fanout")).unwrap();
    Client { _context: context, push, sub }
}

impl Client {
    fn send(&self, msg: IntakeMsg) {
        let _ = self.push.send_multipart([b"t".to_vec(), msg.encode()], zmq::DONTWAIT);
    }
    fn send_control(&self, msg: ControlMsg) {
        let _ = self.push.send_multipart([b"t".to_vec(), msg.encode()], zmq::DONTWAIT);
    }
    /// The first fanout message within `wait`.
    fn next(&self, wait: Duration) -> Option<FanoutMsg> {
        if self.sub.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let frames = self.sub.recv_multipart(0).unwrap();
        FanoutMsg::decode(&frames[1]).ok()
    }
    /// Repeats a producer hello until welcomed (true) or `wait` passes.
    fn hello(&self, producer: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.send(IntakeMsg::Hello(ProducerHello { producer: producer.into(), nonce: 9 }));
            if matches!(self.next(Duration::from_millis(100)), Some(FanoutMsg::Welcome(_))) {
                return true;
            }
        }
        false
    }
    fn order(&self, producer: &str, id: &str) {
        let (p, o) = (producer.to_string(), id.to_string());
        self.send(IntakeMsg::Begin(Begin { producer: p.clone(), order: o.clone() }));
        let data = ByteBuf::from(b"1".to_vec());
        self.send(IntakeMsg::Item(Item { producer: p.clone(), order: o.clone(), seq: 0, data }));
        self.send(IntakeMsg::Finish(Finish { producer: p, order: o, count: 1 }));
    }
    fn confirmed(&self, id: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(FanoutMsg::Confirm(c)) = self.next(Duration::from_millis(100)) {
                if c.order == id {
                    return true;
                }
            }
        }
        false
    }
}

fn heartbeat(worker: &str, welcome: Option<u64>) -> ControlMsg {
    ControlMsg::Heartbeat(Heartbeat {
        worker: worker.into(),
        incarnation: 1,
        capacity: 4,
        in_flight: vec![],
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
}

#[test]
fn authorized_keys_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let broker = start_broker(dir.path(), &keys);
    let shop = client(&broker, &keys.broker, Some(&keys.shop), "intake", &producer_topic("shop"));
    assert!(shop.hello("shop", Duration::from_secs(10)), "no welcome for an authorized producer");
    shop.order("shop", "o1");
    assert!(shop.confirmed("o1", Duration::from_secs(10)));
    let w1 = client(&broker, &keys.broker, Some(&keys.w1), "control", &worker_topic("w1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut welcome = None;
    loop {
        assert!(Instant::now() < deadline, "the authorized worker got no dispatch");
        w1.send_control(heartbeat("w1", welcome));
        match w1.next(Duration::from_millis(100)) {
            Some(FanoutMsg::Welcome(w)) => welcome = Some(w.nonce),
            Some(FanoutMsg::Dispatch(d)) => {
                assert_eq!(d.order.id, "o1");
                break;
            }
            _ => {}
        }
    }
}

#[test]
fn strangers_plaintext_clients_and_keyless_subscribers_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let broker = start_broker(dir.path(), &keys);
    // A key not in the file.
    let stranger = client(&broker, &keys.broker, Some(&keys.stranger), "intake", &producer_topic("shop"));
    assert!(!stranger.hello("shop", QUIET), "an unknown key was welcomed");
    stranger.order("shop", "evil");
    // No CURVE at all.
    let plain = client(&broker, &keys.broker, None, "intake", b"");
    assert!(!plain.hello("shop", QUIET), "a plaintext client was welcomed");
    plain.order("shop", "evil2");
    // A keyless subscriber sees nothing, even while real traffic flows.
    let shop = client(&broker, &keys.broker, Some(&keys.shop), "intake", &producer_topic("shop"));
    assert!(shop.hello("shop", Duration::from_secs(10)));
    shop.order("shop", "real");
    assert!(shop.confirmed("real", Duration::from_secs(10)));
    assert!(plain.next(QUIET).is_none(), "a subscriber without a key received a message");
    let v = status(&broker);
    assert_eq!(v["counters"]["orders_sealed"], 1, "{v}");
    assert!(v["zap_refused"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn keys_are_bound_to_their_role_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let broker = start_broker(dir.path(), &keys);
    // w1's key claiming to be w2.
    let imposter = client(&broker, &keys.broker, Some(&keys.w1), "control", &worker_topic("w2"));
    for _ in 0..10 {
        imposter.send_control(heartbeat("w2", None));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(imposter.next(Duration::from_millis(300)).is_none(), "the imposter was welcomed");
    // The shop's producer key on the control socket.
    let wrong_socket = client(&broker, &keys.broker, Some(&keys.shop), "control", &worker_topic("shop"));
    wrong_socket.send_control(heartbeat("shop", None));
    std::thread::sleep(QUIET);
    let v = status(&broker);
    assert_eq!(v["workers"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["identity_refused"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["zap_refused"].as_u64().unwrap() >= 1, "the producer key was admitted to control: {v}");
}

#[test]
fn a_revoked_key_is_refused_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let broker = start_broker(dir.path(), &keys);
    let shop = client(&broker, &keys.broker, Some(&keys.shop), "intake", &producer_topic("shop"));
    assert!(shop.hello("shop", Duration::from_secs(10)));
    shop.order("shop", "before");
    assert!(shop.confirmed("before", Duration::from_secs(10)));
    std::fs::write(dir.path().join("authorized"), authorized_text(&keys, false)).unwrap();
    let hup = Command::new("kill").args(["-HUP", &broker.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    // The open connection is refused per message; a new one at the handshake.
    shop.order("shop", "after");
    assert!(!shop.confirmed("after", QUIET), "a revoked key still got an order confirmed");
    let fresh = client(&broker, &keys.broker, Some(&keys.shop), "intake", &producer_topic("shop"));
    assert!(!fresh.hello("shop", QUIET), "a revoked key connected again");
    assert_eq!(status(&broker)["counters"]["orders_sealed"], 1);
}

#[test]
fn a_world_readable_secret_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let (secret, _) = write_pair(&keys.broker, &dir.path().join("broker")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.path().join("authorized"), authorized_text(&keys, true)).unwrap();
    let out = Command::new(BROKER)
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--curve-secret-key")
        .arg(&secret)
        .arg("--authorized-keys")
        .arg(dir.path().join("authorized"))
        .args(["--admin", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&secret.display().to_string()) && stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn plaintext_on_a_reachable_address_needs_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(BROKER)
            .args(["run", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--intake", &format!("tcp://0.0.0.0:{}", free_port())])
            .args(["--fanout", &ep(dir.path(), "f"), "--control", &ep(dir.path(), "c"), "--admin", "off"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = run(&[]).wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refusing to bind tcp://0.0.0.0") && stderr.contains("--allow-insecure"), "{stderr}");
    let mut allowed = run(&["--allow-insecure"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(allowed.try_wait().unwrap().is_none(), "--allow-insecure did not start the broker");
    let _ = allowed.kill();
    let _ = allowed.wait();
}
