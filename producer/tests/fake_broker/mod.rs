//! A fake broker made of raw ZeroMQ sockets, for tests of the producer: a
//! PULL (intake) and a PUB (fanout) bound on `ipc://` paths in a temp dir.
//! It answers Hello with Welcome on `p/<id>/`, records every Begin, Item
//! and Finish, and answers each Finish as a scripted policy says.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_common::ids::producer_topic;
use orderly_common::protocol::{
    split_frames, Begin, Confirm, FanoutMsg, Finish, IntakeMsg, Item, Items, Reject, RejectReason, Welcome,
};
use orderly_common::Endpoint;

/// What the fake broker does with a Finish.
#[derive(Debug, Clone)]
pub enum Action {
    Confirm,
    Reject(RejectReason),
    /// Say nothing, as a broker that crashed before its journal commit.
    Ignore,
}

/// Decides the answer to the `nth` Finish (from 1) of an order.
pub type Policy = Box<dyn FnMut(&str, u32) -> Action + Send>;

/// What the fake broker received.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub hellos: u32,
    pub begins: HashMap<String, u32>,
    pub finishes: HashMap<String, u32>,
    /// Items by order and seq (a repeat overwrites: the same bytes).
    pub items: HashMap<String, BTreeMap<u32, Vec<u8>>>,
}

impl Seen {
    pub fn finishes(&self, order: &str) -> u32 {
        self.finishes.get(order).copied().unwrap_or(0)
    }

    pub fn items(&self, order: &str) -> Vec<Vec<u8>> {
        self.items.get(order).map(|items| items.values().cloned().collect()).unwrap_or_default()
    }
}

pub struct FakeBroker {
    pub intake: Endpoint,
    pub fanout: Endpoint,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeBroker {
    /// Binds and starts answering with `policy`.
    pub fn start(policy: impl FnMut(&str, u32) -> Action + Send + 'static) -> FakeBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let intake: Endpoint = format!("ipc://{}/intake", dir.path().display()).parse().expect("endpoint");
        let fanout: Endpoint = format!("ipc://{}/fanout", dir.path().display()).parse().expect("endpoint");
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL).expect("PULL");
        let publisher = context.socket(zmq::PUB).expect("PUB");
        for socket in [&pull, &publisher] {
            socket.set_linger(0).expect("LINGER");
        }
        pull.bind(intake.as_str()).expect("bind intake");
        publisher.bind(fanout.as_str()).expect("bind fanout");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Serve { pull, publisher, policy: Box::new(policy), seen: Arc::clone(&seen), _context: context };
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || state.run(&stop_flag));
        FakeBroker { intake, fanout, seen, stop, thread: Some(thread), _dir: dir }
    }

    /// A copy of what it received so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until `check` holds for what it received (at most `timeout`).
    pub fn wait_for(&self, timeout: Duration, check: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(&self.seen()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        check(&self.seen())
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Serve {
    // Sockets before the context, so they close first.
    pull: zmq::Socket,
    publisher: zmq::Socket,
    policy: Policy,
    seen: Arc<Mutex<Seen>>,
    _context: zmq::Context,
}

impl Serve {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut items = [self.pull.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, 20).is_err() || !items[0].is_readable() {
                continue;
            }
            while let Ok(frames) = self.pull.recv_multipart(zmq::DONTWAIT) {
                let Ok(msg) = split_frames(&frames).and_then(|(_, body)| IntakeMsg::decode(body)) else { continue };
                self.handle(msg);
            }
        }
    }

    fn handle(&mut self, msg: IntakeMsg) {
        if let IntakeMsg::Orders(m) = msg {
            // Whole orders, each as its packed frame (this broker's Welcome
            // offers no batches, as a broker before 0.4).
            for whole in m.orders {
                let (producer, order, finish) = (m.producer.clone(), whole.order, Some(whole.data.len() as u32));
                self.handle(IntakeMsg::Items(Items {
                    producer,
                    order,
                    begin: true,
                    first: 0,
                    data: whole.data,
                    finish,
                }));
            }
            return;
        }
        if let IntakeMsg::Items(m) = msg {
            // What a packed frame stands for, in order.
            if m.begin {
                self.handle(IntakeMsg::Begin(Begin { producer: m.producer.clone(), order: m.order.clone() }));
            }
            for (i, data) in m.data.into_iter().enumerate() {
                let (producer, order, seq) = (m.producer.clone(), m.order.clone(), m.first + i as u32);
                self.handle(IntakeMsg::Item(Item { producer, order, seq, data }));
            }
            if let Some(count) = m.finish {
                self.handle(IntakeMsg::Finish(Finish { producer: m.producer, order: m.order, count }));
            }
            return;
        }
        let mut seen = self.seen.lock().expect("lock");
        match msg {
            IntakeMsg::Items(_) | IntakeMsg::Orders(_) => unreachable!("expanded above"),
            IntakeMsg::Hello(hello) => {
                seen.hellos += 1;
                drop(seen);
                self.publish(&hello.producer, FanoutMsg::Welcome(Welcome { nonce: hello.nonce, orders_max: 0 }));
            }
            IntakeMsg::Begin(begin) => *seen.begins.entry(begin.order).or_default() += 1,
            IntakeMsg::Item(item) => {
                seen.items.entry(item.order).or_default().insert(item.seq, item.data.into_vec());
            }
            IntakeMsg::Finish(finish) => {
                let nth = {
                    let count = seen.finishes.entry(finish.order.clone()).or_default();
                    *count += 1;
                    *count
                };
                drop(seen);
                let answer = match (self.policy)(&finish.order, nth) {
                    Action::Confirm => FanoutMsg::Confirm(Confirm { order: finish.order }),
                    Action::Reject(reason) => FanoutMsg::Reject(Reject { order: finish.order, reason }),
                    Action::Ignore => return,
                };
                self.publish(&finish.producer, answer);
            }
        }
    }

    fn publish(&self, producer: &str, msg: FanoutMsg) {
        let topic = producer_topic(producer);
        let _ = self.publisher.send_multipart([topic.as_slice(), msg.encode().as_slice()], 0);
    }
}
