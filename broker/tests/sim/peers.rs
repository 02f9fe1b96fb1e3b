//! The simulated peers: workers that speak the worker side of the protocol
//! (as `orderly-worker`'s core does) and producers that send orders.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use orderly_broker::core::Millis;
use orderly_common::protocol::{
    Ack, Begin, Bye, ControlMsg, Dispatch, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Items, Nack,
};
use orderly_common::OrderKey;

use super::model::{item_data, Kind, OrderModel};
use super::rng::Rng;

pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;
pub const HEARTBEAT_LIVENESS: u32 = 3;
const BROKER_TIMEOUT_MS: u64 = HEARTBEAT_INTERVAL_MS * HEARTBEAT_LIVENESS as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Alive,
    /// Sends nothing, runs nothing; what arrives waits in its socket.
    Frozen {
        until: Millis,
    },
    /// The process is gone (and with it its work and its subscription).
    Dead {
        restart_at: Option<Millis>,
    },
}

#[derive(Debug)]
pub struct Job {
    /// The latest attempt the broker sent for it.
    pub attempt: u32,
    pub done_at: Millis,
}

#[derive(Debug)]
pub struct SimWorker {
    pub id: String,
    pub life: Life,
    /// Bumped on every start: a packet addressed to an older process is lost.
    pub generation: u64,
    pub incarnation: u64,
    pub capacity: u32,
    pub jobs: BTreeMap<OrderKey, Job>,
    welcome: Option<u64>,
    broker_incarnation: Option<u64>,
    broker_heard_ms: Option<Millis>,
    broker_lost: bool,
    heartbeat_due_ms: Millis,
    pub draining: bool,
    /// Stuck: runs nothing until then, but keeps heartbeating.
    pub stuck_until: Option<Millis>,
    /// Fanout that arrived while frozen.
    pub backlog: Vec<FanoutMsg>,
    pub refused_dispatches: u64,
}

impl SimWorker {
    /// A worker whose process first starts at `start_at`.
    pub fn new(id: String, start_at: Millis) -> Self {
        SimWorker {
            id,
            life: Life::Dead { restart_at: Some(start_at) },
            generation: 0,
            incarnation: 0,
            capacity: 1,
            jobs: BTreeMap::new(),
            welcome: None,
            broker_incarnation: None,
            broker_heard_ms: None,
            broker_lost: false,
            heartbeat_due_ms: 0,
            draining: false,
            stuck_until: None,
            backlog: Vec::new(),
            refused_dispatches: 0,
        }
    }

    /// A new process: new incarnation, maybe a new capacity, nothing held.
    pub fn start(&mut self, rng: &mut Rng, now: Millis) {
        self.life = Life::Alive;
        self.generation += 1;
        self.incarnation = rng.next_u64();
        self.capacity = rng.range(1, 4) as u32;
        self.jobs.clear();
        self.welcome = None;
        self.broker_incarnation = None;
        self.broker_heard_ms = None;
        self.broker_lost = false;
        self.heartbeat_due_ms = now; // the first heartbeat is how the broker learns of us
        self.draining = false;
        self.stuck_until = None;
        self.backlog.clear();
    }

    pub fn kill(&mut self, restart_at: Option<Millis>) {
        self.life = Life::Dead { restart_at };
        self.jobs.clear();
        self.backlog.clear();
    }

    /// When this worker next acts on its own.
    pub fn next_time(&self) -> Option<Millis> {
        match self.life {
            Life::Dead { restart_at } => restart_at,
            Life::Frozen { until } => Some(until),
            Life::Alive => {
                let silence = match (self.broker_heard_ms, self.broker_lost) {
                    (Some(heard), false) => Some(heard + BROKER_TIMEOUT_MS),
                    _ => None,
                };
                let job = match self.stuck_until {
                    Some(until) => Some(until),
                    None => self.jobs.values().map(|j| j.done_at).min(),
                };
                [Some(self.heartbeat_due_ms), silence, job].into_iter().flatten().min()
            }
        }
    }

    pub fn heartbeat(&mut self, now: Millis) -> ControlMsg {
        self.heartbeat_due_ms = now + HEARTBEAT_INTERVAL_MS;
        ControlMsg::Heartbeat(Heartbeat {
            worker: self.id.clone(),
            incarnation: self.incarnation,
            capacity: self.capacity,
            in_flight: self.jobs.keys().cloned().collect(),
            welcome: self.welcome,
            draining: self.draining,
        })
    }

    /// Timers of a live worker: heartbeat and broker silence. Finished jobs
    /// are taken by the caller with [`SimWorker::take_done`].
    pub fn on_timer(&mut self, now: Millis, out: &mut Vec<ControlMsg>) {
        if self.stuck_until.is_some_and(|until| now >= until) {
            self.stuck_until = None;
        }
        if now >= self.heartbeat_due_ms {
            out.push(self.heartbeat(now));
        }
        if let (Some(heard), false) = (self.broker_heard_ms, self.broker_lost) {
            if now >= heard + BROKER_TIMEOUT_MS {
                // Keep heartbeating without a welcome: the broker welcomes us
                // anew when it is back.
                self.broker_lost = true;
                self.welcome = None;
            }
        }
    }

    /// Jobs finished by `now` (none while stuck), oldest first.
    pub fn take_done(&mut self, now: Millis) -> Vec<(OrderKey, u32)> {
        if self.stuck_until.is_some() {
            return Vec::new();
        }
        let mut done: Vec<(Millis, OrderKey)> =
            self.jobs.iter().filter(|(_, j)| j.done_at <= now).map(|(k, j)| (j.done_at, k.clone())).collect();
        done.sort();
        done.into_iter()
            .map(|(_, key)| {
                let job = self.jobs.remove(&key).expect("listed above");
                (key, job.attempt)
            })
            .collect()
    }

    pub fn answer(&self, key: OrderKey, attempt: u32, outcome: Result<(), bool>) -> ControlMsg {
        let (worker, incarnation) = (self.id.clone(), self.incarnation);
        match outcome {
            Ok(()) => ControlMsg::Ack(Ack { worker, incarnation, order: key, attempt }),
            Err(retry) => {
                let reason = if retry { "simulated failure" } else { "simulated refusal" }.to_string();
                ControlMsg::Nack(Nack { worker, incarnation, order: key, attempt, retry, reason })
            }
        }
    }

    pub fn bye(&self) -> ControlMsg {
        ControlMsg::Bye(Bye { worker: self.id.clone(), incarnation: self.incarnation })
    }

    /// One fanout message. `processing_ms` is how long a newly accepted
    /// order will take.
    pub fn on_fanout(&mut self, msg: FanoutMsg, now: Millis, processing_ms: u64, out: &mut Vec<ControlMsg>) {
        self.broker_heard_ms = Some(now);
        self.broker_lost = false;
        match msg {
            FanoutMsg::Welcome(welcome) => {
                self.welcome = Some(welcome.nonce);
                out.push(self.heartbeat(now)); // echo at once
            }
            FanoutMsg::Dispatch(dispatch) => self.on_dispatch(dispatch, now + processing_ms),
            FanoutMsg::Heartbeat(hb) => {
                if self.broker_incarnation.replace(hb.incarnation).is_some_and(|old| old != hb.incarnation) {
                    // A new broker process: our nonce means nothing to it.
                    self.welcome = None;
                    out.push(self.heartbeat(now));
                }
            }
            FanoutMsg::Confirm(_) | FanoutMsg::Confirms(_) | FanoutMsg::Reject(_) => unreachable!("routed by topic"),
        }
    }

    fn on_dispatch(&mut self, dispatch: Dispatch, done_at: Millis) {
        if let Some(job) = self.jobs.get_mut(&dispatch.order) {
            // Already running: answer for the newest attempt.
            job.attempt = job.attempt.max(dispatch.attempt);
        } else if self.draining || self.jobs.len() >= self.capacity as usize {
            // Not taken: it stays out of our heartbeats, so the broker sees.
            self.refused_dispatches += 1;
        } else {
            self.jobs.insert(dispatch.order, Job { attempt: dispatch.attempt, done_at });
        }
    }
}

/// A producer: sends its orders one message at a time over one ordered,
/// reliable connection, and sends an order again (whole) when no Confirm or
/// Reject came for it in time, as a client retrying would.
pub struct SimProducer {
    pub id: String,
    /// Indexes into the model's orders, in sending order.
    pub orders: Vec<usize>,
    next_order: usize,
    /// The rest of the order being sent, and which order that is.
    queue: VecDeque<IntakeMsg>,
    current: usize,
    /// When the next message may go.
    pub next_at: Millis,
    /// Finished orders without an answer, with when to send them again.
    awaiting: BTreeMap<usize, Millis>,
    resent: BTreeMap<usize, u32>,
    answered: BTreeSet<usize>,
    resend_after_ms: u64,
    resends_max: u32,
}

impl SimProducer {
    pub fn new(id: String, start_at: Millis, resend_after_ms: u64, resends_max: u32) -> Self {
        SimProducer {
            id,
            orders: Vec::new(),
            next_order: 0,
            queue: VecDeque::new(),
            current: usize::MAX,
            next_at: start_at,
            awaiting: BTreeMap::new(),
            resent: BTreeMap::new(),
            answered: BTreeSet::new(),
            resend_after_ms,
            resends_max,
        }
    }

    pub fn done(&self) -> bool {
        self.queue.is_empty() && self.next_order == self.orders.len() && self.awaiting.is_empty()
    }

    pub fn resends(&self) -> u32 {
        self.resent.values().sum()
    }

    fn resend_due(&self) -> Option<(Millis, usize)> {
        self.awaiting.iter().map(|(&order, &at)| (at, order)).min()
    }

    /// When this producer next sends something.
    pub fn next_time(&self) -> Option<Millis> {
        if !self.queue.is_empty() {
            return Some(self.next_at);
        }
        let new = (self.next_order < self.orders.len()).then_some(self.next_at);
        let resend = self.resend_due().map(|(at, _)| at.max(self.next_at));
        [new, resend].into_iter().flatten().min()
    }

    /// A Confirm or Reject arrived for `order`.
    pub fn answered(&mut self, order: usize) {
        self.answered.insert(order);
        self.awaiting.remove(&order);
    }

    /// The next intake message at `now`; `true` with it when it ends an
    /// order.
    pub fn next_msg(&mut self, orders: &[OrderModel], now: Millis) -> (IntakeMsg, bool) {
        if self.queue.is_empty() {
            self.current = match self.resend_due() {
                Some((at, order)) if at <= now => {
                    self.awaiting.remove(&order);
                    *self.resent.entry(order).or_default() += 1;
                    order
                }
                _ => {
                    self.next_order += 1;
                    self.orders[self.next_order - 1]
                }
            };
            self.fill(&orders[self.current]);
        }
        let msg = self.queue.pop_front().expect("filled above");
        if matches!(msg, IntakeMsg::Finish(_) | IntakeMsg::Items(Items { finish: Some(_), .. })) {
            let order = self.current;
            let resent = self.resent.get(&order).copied().unwrap_or(0);
            if !self.answered.contains(&order) && resent < self.resends_max {
                self.awaiting.insert(order, now + self.resend_after_ms);
            }
        }
        (msg, self.queue.is_empty())
    }

    fn fill(&mut self, o: &OrderModel) {
        // Every other order goes packed (`items` frames of up to three
        // consecutive items; a whole order of at most three is one frame),
        // so both forms meet every fault.
        if o.key.id.bytes().last().is_some_and(|b| b % 2 == 0) {
            return self.fill_packed(o);
        }
        let (producer, order) = (o.key.producer.clone(), o.key.id.clone());
        self.queue.push_back(IntakeMsg::Begin(Begin { producer: producer.clone(), order: order.clone() }));
        for seq in (0..o.count).filter(|&s| Some(s) != o.skip) {
            let (producer, order, data) = (producer.clone(), order.clone(), item_data(&o.key, seq));
            self.queue.push_back(IntakeMsg::Item(Item { producer, order, seq, data }));
        }
        if o.kind != Kind::Abandoned {
            self.queue.push_back(IntakeMsg::Finish(Finish { producer, order, count: o.count }));
        }
    }

    fn fill_packed(&mut self, o: &OrderModel) {
        const FRAME_ITEMS_MAX: usize = 3;
        let seqs: Vec<u32> = (0..o.count).filter(|&s| Some(s) != o.skip).collect();
        // Runs of consecutive seqs, cut into frames.
        let mut frames: Vec<Vec<u32>> = Vec::new();
        for seq in seqs {
            match frames.last_mut() {
                Some(f) if f.len() < FRAME_ITEMS_MAX && f.last() == Some(&(seq - 1)) => f.push(seq),
                _ => frames.push(vec![seq]),
            }
        }
        if frames.is_empty() {
            frames.push(Vec::new());
        }
        let last = frames.len() - 1;
        for (n, seqs) in frames.into_iter().enumerate() {
            let finish = (n == last && o.kind != Kind::Abandoned).then_some(o.count);
            self.queue.push_back(IntakeMsg::Items(Items {
                producer: o.key.producer.clone(),
                order: o.key.id.clone(),
                begin: n == 0,
                first: seqs.first().copied().unwrap_or(0),
                data: seqs.iter().map(|&s| item_data(&o.key, s)).collect(),
                finish,
            }));
        }
    }
}
