//! A scripted group of brokers for the clients' io tests: it stands in for
//! the replicated broker group (issue 16) until that exists.
//!
//! Each member is a thread binding, on free loopback ports, an XPUB
//! (fanout) and two PULLs (intake, control). Every member publishes `b/`
//! heartbeats with its id, the leader it knows and that leader's term
//! every [`HEARTBEAT_MS`]; a deposed leader goes on announcing itself in
//! its old term (as a partitioned Raft leader would), so clients must
//! ignore older terms. Only the current leader answers: Hellos with
//! Welcomes, whole orders with Confirms (unless confirms are held), worker
//! heartbeats without its nonce with a Welcome. Every member records what
//! reached it. The test switches the leader with [`Group::elect`].
//!
//! Shared by the producer's and the worker's tests (the worker's include
//! this file by path).

#![allow(dead_code)] // Each test binary uses a different part.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::members::{Member, Members};
use orderly_common::protocol::{split_frames, BrokerHeartbeat, Confirm, ControlMsg, FanoutMsg, IntakeMsg, Welcome};
use orderly_common::Endpoint;

/// How often every member announces the leader it knows.
pub const HEARTBEAT_MS: u64 = 50;

/// What reached a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Hello,
    /// A whole order (its Finish, or its last packed frame).
    Order(String),
    /// A worker heartbeat, with the welcome nonce it echoed.
    Heartbeat(Option<u64>),
}

#[derive(Debug)]
struct State {
    leader: u64,
    term: u64,
    /// The leader confirms nothing while set (orders stay unconfirmed).
    hold_confirms: bool,
    /// (member, what, when).
    log: Vec<(u64, Received, Instant)>,
}

/// The welcome nonce member `id` gives workers.
pub fn worker_nonce(id: u64) -> u64 {
    1000 + id
}

pub struct Group {
    pub members: Members,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Group {
    /// `size` members with ids from 1; member 1 leads in term 1.
    pub fn start(size: u64) -> Group {
        let state = Arc::new(Mutex::new(State { leader: 1, term: 1, hold_confirms: false, log: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut members = Vec::new();
        let mut threads = Vec::new();
        for id in 1..=size {
            let (tx, rx) = std::sync::mpsc::channel();
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || run_member(id, &state, &stop, &tx)));
            members.push(rx.recv_timeout(Duration::from_secs(5)).expect("the member bound its sockets"));
        }
        Group { members: Members::new(members).expect("valid members"), state, stop, threads }
    }

    /// `leader` leads from now on, in a newer term.
    pub fn elect(&self, leader: u64) {
        let mut state = self.state.lock().unwrap();
        state.leader = leader;
        state.term += 1;
    }

    pub fn hold_confirms(&self, hold: bool) {
        self.state.lock().unwrap().hold_confirms = hold;
    }

    /// What reached `member`, in order.
    pub fn received(&self, member: u64) -> Vec<Received> {
        let state = self.state.lock().unwrap();
        state.log.iter().filter(|(id, ..)| *id == member).map(|(_, what, _)| what.clone()).collect()
    }

    /// Waits up to `timeout` until `member` received something `want`
    /// accepts; returns when it arrived.
    pub fn wait_for(&self, member: u64, timeout: Duration, want: impl Fn(&Received) -> bool) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state.lock().unwrap();
            let found = state.log.iter().find(|(id, what, _)| *id == member && want(what));
            if let Some((.., at)) = found {
                return Some(*at);
            }
            drop(state);
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn bind(context: &zmq::Context, kind: zmq::SocketType) -> (zmq::Socket, Endpoint) {
    let socket = context.socket(kind).expect("socket");
    socket.set_linger(0).expect("linger");
    socket.bind("tcp://127.0.0.1:*").expect("bind on loopback");
    let endpoint = socket.get_last_endpoint().expect("endpoint").expect("utf-8").parse().expect("valid endpoint");
    (socket, endpoint)
}

fn run_member(id: u64, state: &Mutex<State>, stop: &AtomicBool, ready: &std::sync::mpsc::Sender<Member>) {
    let context = zmq::Context::new();
    let (fanout, fanout_ep) = bind(&context, zmq::XPUB);
    let (intake, intake_ep) = bind(&context, zmq::PULL);
    let (control, control_ep) = bind(&context, zmq::PULL);
    ready
        .send(Member { id, intake: intake_ep, fanout: fanout_ep, control: control_ep, public_key: None })
        .expect("test waits");
    let publish = |topic: &[u8], msg: FanoutMsg| {
        let _ = fanout.send_multipart([topic, msg.encode().as_slice()], zmq::DONTWAIT);
    };
    // The (leader, term) this member announces; a deposed leader keeps its own.
    let mut view = (1, 1);
    let mut heartbeat_due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        {
            let state = state.lock().unwrap();
            if state.leader == id || view.0 != id {
                view = (state.leader, state.term);
            }
        }
        if Instant::now() >= heartbeat_due {
            heartbeat_due = Instant::now() + Duration::from_millis(HEARTBEAT_MS);
            let heartbeat = BrokerHeartbeat {
                incarnation: id,
                interval_ms: HEARTBEAT_MS,
                member: Some(id),
                leader: Some(view.0),
                term: view.1,
            };
            publish(BROADCAST_TOPIC, FanoutMsg::Heartbeat(heartbeat));
        }
        let mut items =
            [fanout.as_poll_item(zmq::POLLIN), intake.as_poll_item(zmq::POLLIN), control.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 10).expect("poll");
        // After the wait, so what arrived meets the script as it is now.
        let (leading, hold) = {
            let state = state.lock().unwrap();
            if state.leader == id || view.0 != id {
                view = (state.leader, state.term);
            }
            (state.leader == id, state.hold_confirms)
        };
        // Subscriptions: nothing to do with them.
        while fanout.recv_bytes(zmq::DONTWAIT).is_ok() {}
        let log = |what: Received| state.lock().unwrap().log.push((id, what, Instant::now()));
        while let Ok(frames) = intake.recv_multipart(zmq::DONTWAIT) {
            let Ok((_, body)) = split_frames(&frames) else { continue };
            let Ok(msg) = IntakeMsg::decode(body) else { continue };
            let (producer, order) = match msg {
                IntakeMsg::Hello(hello) => {
                    log(Received::Hello);
                    if leading {
                        publish(
                            &producer_topic(&hello.producer),
                            FanoutMsg::Welcome(Welcome { nonce: hello.nonce, orders_max: 0 }),
                        );
                    }
                    continue;
                }
                IntakeMsg::Finish(finish) => (finish.producer, finish.order),
                IntakeMsg::Items(items) if items.finish.is_some() => (items.producer, items.order),
                _ => continue,
            };
            log(Received::Order(order.clone()));
            if leading && !hold {
                publish(&producer_topic(&producer), FanoutMsg::Confirm(Confirm { order }));
            }
        }
        while let Ok(frames) = control.recv_multipart(zmq::DONTWAIT) {
            let Ok((_, body)) = split_frames(&frames) else { continue };
            let Ok(ControlMsg::Heartbeat(heartbeat)) = ControlMsg::decode(body) else { continue };
            log(Received::Heartbeat(heartbeat.welcome));
            if leading && heartbeat.welcome != Some(worker_nonce(id)) {
                publish(
                    &worker_topic(&heartbeat.worker),
                    FanoutMsg::Welcome(Welcome { nonce: worker_nonce(id), orders_max: 0 }),
                );
            }
        }
    }
}
