//! The simulated peers: thin fault wrappers around the real sans-IO cores.
//! A [`SimWorker`] owns an `orderly_worker::core::Core` and plays its
//! process and handler (processing times, outcomes, kill, freeze, stuck,
//! drain); a [`SimProducer`] owns an `orderly_producer::core::Core` and
//! plays the application that submits orders. Neither re-implements any of
//! the protocol: what they send is what the cores say.

use std::collections::{BTreeMap, VecDeque};

use orderly_common::protocol::{ControlMsg, FanoutMsg};
use orderly_common::time::Millis;
use orderly_common::OrderKey;
use orderly_producer::core as producer;
use orderly_worker::core::{self as worker, Failure};

use super::rng::Rng;

pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;
pub const HEARTBEAT_LIVENESS: u32 = 3;

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

/// An order the core handed out to run.
#[derive(Debug)]
pub struct Job {
    pub attempt: u32,
    pub done_at: Millis,
}

/// A worker process around a real worker core.
#[derive(Debug)]
pub struct SimWorker {
    pub id: String,
    pub life: Life,
    /// Bumped on every start: a packet addressed to an older process is lost.
    pub generation: u64,
    core: Option<worker::Core>,
    /// The handler's runs, from `poll_job` until their end.
    pub jobs: BTreeMap<OrderKey, Job>,
    /// Stuck: runs nothing until then, but keeps heartbeating.
    pub stuck_until: Option<Millis>,
    /// Until then the handler cannot run (a broken deployment): every job
    /// that ends reports so, and the worker core returns its orders.
    pub broken_until: Option<Millis>,
    /// Fanout that arrived while frozen.
    pub backlog: Vec<FanoutMsg>,
    /// Dispatches the cores of earlier processes refused.
    refused_before: u64,
    /// In a group of brokers: the members whose heartbeats its core
    /// follows (see `orderly_worker::core::Core::in_group`).
    pub members: Option<orderly_common::members::Members>,
}

impl SimWorker {
    /// A worker whose process first starts at `start_at`.
    pub fn new(id: String, start_at: Millis) -> Self {
        SimWorker {
            id,
            life: Life::Dead { restart_at: Some(start_at) },
            generation: 0,
            core: None,
            jobs: BTreeMap::new(),
            stuck_until: None,
            broken_until: None,
            backlog: Vec::new(),
            refused_before: 0,
            members: None,
        }
    }

    fn core(&mut self) -> &mut worker::Core {
        self.core.as_mut().expect("a live worker process has a core")
    }

    pub fn incarnation(&self) -> u64 {
        self.core.as_ref().map_or(0, |core| core.config().incarnation)
    }

    /// In a group: the member its core sends control to (`None` until a
    /// leader is announced, and for a single broker).
    pub fn leader(&self) -> Option<u64> {
        self.core.as_ref().and_then(worker::Core::leader)
    }

    pub fn capacity(&self) -> u32 {
        self.core.as_ref().map_or(0, |core| core.config().capacity)
    }

    pub fn refused_dispatches(&self) -> u64 {
        self.refused_before + self.core.as_ref().map_or(0, |core| core.counters().refused_dispatches)
    }

    /// A new process: a new core with a new incarnation and maybe another
    /// capacity; nothing held.
    pub fn start(&mut self, rng: &mut Rng, now: Millis) {
        self.kill(None);
        self.life = Life::Alive;
        self.generation += 1;
        let incarnation = rng.next_u64();
        let config = worker::CoreConfig {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            heartbeat_liveness: HEARTBEAT_LIVENESS,
            // Half the worker processes take `dispatches` batches (issue
            // 20), of 2 to 4 orders (the count bound is met too); the
            // others one order per message, as workers before 0.5.
            dispatches_max: if incarnation & 1 == 1 { 2 + (incarnation >> 1) as u32 % 3 } else { 0 },
            ..worker::CoreConfig::new(self.id.clone(), incarnation, rng.range(1, 4) as u32)
        };
        let mut core = match &self.members {
            Some(members) => worker::Core::in_group(config, members),
            None => worker::Core::new(config),
        };
        core.handle_timeout(now); // the first heartbeat is how the broker learns of us
        self.core = Some(core);
    }

    /// The process is gone: its core, its runs and its socket's backlog.
    pub fn kill(&mut self, restart_at: Option<Millis>) {
        self.refused_before = self.refused_dispatches();
        self.core = None;
        self.life = Life::Dead { restart_at };
        self.jobs.clear();
        self.backlog.clear();
        self.stuck_until = None;
        self.broken_until = None;
    }

    /// When this worker next acts on its own.
    pub fn next_time(&self) -> Option<Millis> {
        match self.life {
            Life::Dead { restart_at } => restart_at,
            Life::Frozen { until } => Some(until),
            Life::Alive => {
                let core = self.core.as_ref().expect("alive");
                let job = match self.stuck_until {
                    Some(until) => Some(until),
                    None => self.jobs.values().map(|j| j.done_at).min(),
                };
                [Some(core.poll_timeout()), job].into_iter().flatten().min()
            }
        }
    }

    /// One fanout message for the core; orders it takes run for a random
    /// time up to `processing_ms_max`.
    pub fn on_fanout(&mut self, msg: FanoutMsg, now: Millis, rng: &mut Rng, processing_ms_max: u64) {
        self.core().handle_fanout(msg, now);
        while let Some(dispatch) = self.core().poll_job() {
            let done_at = now + rng.range(1, processing_ms_max);
            self.jobs.insert(dispatch.order, Job { attempt: dispatch.attempt, done_at });
        }
    }

    /// Timers of a live worker (heartbeat, broker silence); returns the runs
    /// that ended by `now` (none while stuck), oldest first, for the caller
    /// to decide their outcomes.
    pub fn on_timer(&mut self, now: Millis) -> Vec<(OrderKey, u32)> {
        if self.stuck_until.is_some_and(|until| now >= until) {
            self.stuck_until = None;
        }
        self.core().handle_timeout(now);
        if self.stuck_until.is_some() {
            return Vec::new();
        }
        let mut done: Vec<(Millis, OrderKey)> =
            self.jobs.iter().filter(|(_, j)| j.done_at <= now).map(|(k, j)| (j.done_at, k.clone())).collect();
        done.sort();
        done.into_iter().map(|(_, key)| (key.clone(), self.jobs.remove(&key).expect("listed").attempt)).collect()
    }

    /// The handler's verdict on a run: `Err(retry)` for a failure.
    pub fn finish(&mut self, order: OrderKey, attempt: u32, end: RunEnd, now: Millis) {
        let outcome = match end {
            _ if self.broken_until.is_some_and(|until| now < until) => {
                Err(Failure::cannot_run("simulated: the handler's command is missing"))
            }
            RunEnd::Ack => Ok(()),
            RunEnd::Retry { delay_ms } => Err(Failure::retry_later("simulated failure", delay_ms)),
            RunEnd::Refuse => Err(Failure::permanent("simulated refusal")),
        };
        self.core().handle_done(order, attempt, outcome, now);
    }

    pub fn start_drain(&mut self) -> bool {
        let core = self.core();
        let started = !core.is_draining();
        core.start_drain();
        started
    }

    /// Draining and nothing running: time for the Bye.
    pub fn is_drained(&self) -> bool {
        self.core.as_ref().is_some_and(worker::Core::is_drained)
    }

    pub fn bye(&self) -> ControlMsg {
        self.core.as_ref().expect("alive").bye()
    }

    /// What the core wants sent, acks queued back to back packed into
    /// `acks` messages as the worker's io loop packs them.
    pub fn take_control(&mut self) -> Vec<ControlMsg> {
        let mut out = VecDeque::new();
        if let Some(core) = self.core.as_mut() {
            while let Some(msg) = core.poll_control() {
                if let Some(msg) = worker::pack_ack(&mut out, msg) {
                    out.push_back(msg);
                }
            }
        }
        out.into()
    }
}

/// How an order is handed to the producer core.
/// How a handler's run of one order ends, as the application decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Ack,
    /// A retryable failure, maybe asking for a delay.
    Retry {
        delay_ms: Option<u64>,
    },
    /// A permanent failure (`retry = false`).
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// Whole, with `submit`.
    Whole,
    /// Streamed item by item, then finished.
    Stream,
    /// Streamed, then abandoned before its Finish.
    Abandon,
}

/// The application around a real producer core: it submits its orders at
/// random times; the core sends, resends and takes the answers.
pub struct SimProducer {
    pub id: String,
    pub core: producer::Core,
    /// Indexes into the model's orders, in submission order.
    pub orders: Vec<usize>,
    next_order: usize,
    /// When the next order is submitted.
    pub next_at: Millis,
    /// Transmissions after an order's first.
    pub resends: u32,
}

impl SimProducer {
    pub fn new(id: String, nonce: u64, pack_items: bool, start_at: Millis, resend_after_ms: u64) -> Self {
        let outbox = producer::OutboxConfig {
            confirm_timeout_ms: resend_after_ms,
            resend_backoff_max_ms: resend_after_ms * 4,
            ..producer::OutboxConfig::default()
        };
        // Batching and its linger come from the nonce's spare bits rather
        // than new draws, so every seed's other choices stay as they were:
        // half the producers batch whole orders due together (`orders`
        // messages; only packing producers do), some of them lingering.
        let batch_bytes_max = if nonce & 1 == 1 { orderly_common::limits::PACKED_FRAME_BYTES_MAX } else { 0 };
        let linger_ms = (nonce >> 1) % 4;
        let config = producer::CoreConfig {
            producer: id.clone(),
            nonce,
            pack_items,
            batch_bytes_max,
            linger_ms,
            hello_interval_ms: 100,
            outbox,
        };
        SimProducer {
            id,
            core: producer::Core::new(config),
            orders: Vec::new(),
            next_order: 0,
            next_at: start_at,
            resends: 0,
        }
    }

    /// Every order submitted and answered (or abandoned).
    pub fn done(&self) -> bool {
        self.next_order == self.orders.len() && self.core.outbox().is_empty()
    }

    /// When this producer next acts: a submission or the core's timeout.
    pub fn next_time(&self) -> Option<Millis> {
        let submit = (self.next_order < self.orders.len()).then_some(self.next_at);
        let core = Some(self.core.poll_timeout()).filter(|&at| at != Millis::MAX);
        [submit, core].into_iter().flatten().min()
    }

    /// The order to submit now, if one is due.
    pub fn due_order(&self, now: Millis) -> Option<usize> {
        (self.next_order < self.orders.len() && self.next_at <= now).then(|| self.orders[self.next_order])
    }

    /// The due order was submitted; the next comes after `gap_ms`.
    pub fn submitted(&mut self, now: Millis, gap_ms: u64) {
        self.next_order += 1;
        self.next_at = now + gap_ms;
    }
}
