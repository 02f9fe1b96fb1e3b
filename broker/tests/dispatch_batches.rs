//! Dispatch batching (issue 20, since 0.5) through the real broker binary:
//! a worker that declares `dispatches_max` ≥ 2 gets the orders one round
//! chose for it in one `dispatches` message; one that does not (a worker
//! before 0.5: 0, what the field's absence means) still gets one
//! `dispatch` per order. Both workers are raw sockets speaking the wire
//! protocol, so what the broker sends is seen exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orderly_common::ids::worker_topic;
use orderly_common::protocol::{encode_orders, ControlMsg, FanoutMsg, Heartbeat};
use support::{ep, start_broker};

mod support;

/// Bounds every wait of the test.
const WAIT: Duration = Duration::from_secs(10);
/// Orders sent, in one `orders` message: one round dispatches them all.
const ORDERS: usize = 16;
/// Each worker's capacity: half the orders, so both get some.
const CAPACITY: u32 = ORDERS as u32 / 2;

fn heartbeat(worker: &str, welcome: Option<u64>, dispatches_max: u32) -> Vec<u8> {
    ControlMsg::Heartbeat(Heartbeat {
        worker: worker.into(),
        incarnation: 1,
        capacity: CAPACITY,
        in_flight: vec![],
        welcome,
        draining: false,
        broken: None,
        dispatches_max,
    })
    .encode()
}

#[test]
fn only_a_worker_that_asks_gets_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]);
    let context = zmq::Context::new();
    let (intake, control, sub) =
        (context.socket(zmq::PUSH).unwrap(), context.socket(zmq::PUSH).unwrap(), context.socket(zmq::SUB).unwrap());
    for s in [&intake, &control, &sub] {
        s.set_linger(0).unwrap();
    }
    intake.connect(&ep(&broker.dir, "intake")).unwrap();
    control.connect(&ep(&broker.dir, "control")).unwrap();
    sub.connect(&ep(&broker.dir, "fanout")).unwrap();
    // (id, dispatches_max): a worker before 0.5 and one of 0.5.
    let workers = [("old", 0), ("new", 64)];
    for (id, _) in workers {
        sub.set_subscribe(&worker_topic(id)).unwrap();
    }
    let send = |socket: &zmq::Socket, body: Vec<u8>| socket.send_multipart([b"t".to_vec(), body], 0).unwrap();
    let next = |wait: Duration| -> Option<(String, FanoutMsg)> {
        if sub.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let frames = sub.recv_multipart(0).unwrap();
        Some((String::from_utf8(frames[0].clone()).unwrap(), FanoutMsg::decode(&frames[1]).unwrap()))
    };

    // The handshake: heartbeat until welcomed, then echo the nonce.
    let mut welcomes: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while welcomes.len() < workers.len() {
        assert!(Instant::now() < deadline, "no welcome for every worker: {welcomes:?}");
        for (id, max) in workers {
            send(&control, heartbeat(id, welcomes.get(id).copied(), max));
        }
        while let Some((topic, msg)) = next(Duration::from_millis(50)) {
            if let FanoutMsg::Welcome(w) = msg {
                welcomes.insert(topic.trim_start_matches("w/").trim_end_matches('/').to_owned(), w.nonce);
            }
        }
    }
    for (id, max) in workers {
        send(&control, heartbeat(id, Some(welcomes[id]), max));
    }
    std::thread::sleep(Duration::from_millis(200)); // the echoes are read before the orders

    let ids: Vec<String> = (0..ORDERS).map(|n| format!("o{n}")).collect();
    let orders: Vec<(&str, &[&[u8]])> = ids.iter().map(|id| (id.as_str(), &[b"item" as &[u8]][..])).collect();
    send(&intake, encode_orders("p", &orders));

    // Every message each worker gets, as (kind, orders in it), until all
    // orders arrived; heartbeats keep both workers alive meanwhile.
    let mut got: BTreeMap<String, Vec<(&'static str, usize)>> = BTreeMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + WAIT;
    while seen < ORDERS {
        assert!(Instant::now() < deadline, "only {seen} of {ORDERS} orders dispatched: {got:?}");
        for (id, max) in workers {
            send(&control, heartbeat(id, Some(welcomes[id]), max));
        }
        while let Some((topic, msg)) = next(Duration::from_millis(50)) {
            let count = match &msg {
                FanoutMsg::Dispatch(_) => 1,
                FanoutMsg::Dispatches(b) => b.dispatches.len(),
                _ => continue,
            };
            seen += count;
            got.entry(topic).or_default().push((msg.kind(), count));
        }
    }
    let old = &got[&String::from_utf8(worker_topic("old")).unwrap()];
    let new = &got[&String::from_utf8(worker_topic("new")).unwrap()];
    assert!(old.iter().all(|&(kind, _)| kind == "dispatch"), "the old worker got a batch: {old:?}");
    assert_eq!(old.len(), CAPACITY as usize, "{got:?}");
    assert!(new.iter().any(|&(kind, n)| kind == "dispatches" && n >= 2), "the batching worker got no batch: {new:?}");
    assert_eq!(new.iter().map(|(_, n)| n).sum::<usize>(), CAPACITY as usize, "{got:?}");
}
