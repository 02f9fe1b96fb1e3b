//! The worker's sans-IO state machine.
//!
//! [`Core`] decides which dispatched orders to run and what to tell the
//! broker. Callers feed it inputs with the current time
//! ([`Core::handle_fanout`], [`Core::handle_done`], [`Core::handle_timeout`])
//! and drain what it wants done: [`Core::poll_control`] yields messages to
//! PUSH to the broker, [`Core::poll_job`] orders to run, and
//! [`Core::poll_event`] things worth logging. It does no IO and reads no
//! clock, so tests drive it with a virtual clock.
//!
//! Capacity is enforced here, not trusted to the broker: an order that
//! arrives while every slot is taken, while draining, or while the handler
//! is broken is not run. It is handed straight back with a *returned* Nack
//! (`returned: true`), which the broker requeues without spending an
//! attempt, and it stays out of the `in_flight` list of our heartbeats.
//!
//! A handler that *cannot run* (a missing command, a spawn error; see
//! [`Failure::cannot_run`]) makes the worker *broken*: its heartbeats carry
//! the reason so the broker sends it nothing, its orders are returned, and
//! after a backoff ([`PROBE_DELAY_MS_INITIAL`], doubling up to
//! [`PROBE_DELAY_MS_MAX`]) it clears the flag to probe with the next order.
//! A run that does start resets the backoff.
//!
//! In a group of brokers ([`Core::in_group`]) only the leader takes
//! control messages. The core follows the members' heartbeats
//! ([`Leadership`]); on a new leader it drops its welcome and heartbeats at
//! once ([`Core::poll_leader`] tells the caller where to send), so the new
//! leader welcomes us without waiting for a timer. Dispatches of a deposed
//! leader may still arrive: they run (delivery is at least once), and
//! their acks go to the current leader, which may refuse them.

use std::collections::{HashMap, VecDeque};

use orderly_common::limits::{self, ACKS_PER_MESSAGE_MAX, HEARTBEAT_IN_FLIGHT_MAX, REASON_BYTES_MAX};
use orderly_common::members::{Leadership, Members};
use orderly_common::protocol::{
    Ack, Acked, Acks, BrokerHeartbeat, Bye, ControlMsg, Dispatch, FanoutMsg, Heartbeat, Nack,
};
use orderly_common::OrderKey;

/// The cores' one time type (see `orderly_common::time`).
pub use orderly_common::time::Millis;

/// How long a broken handler is left alone before the first probe.
pub const PROBE_DELAY_MS_INITIAL: u64 = 1000;
/// The probe delay doubles after each failed probe up to this.
pub const PROBE_DELAY_MS_MAX: u64 = 60_000;
const _: () = assert!(PROBE_DELAY_MS_INITIAL > 0 && PROBE_DELAY_MS_INITIAL <= PROBE_DELAY_MS_MAX);

/// Settings of the core, already validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// This worker's id (a valid peer id).
    pub worker: String,
    /// Random per process start: lets the broker see a restart.
    pub incarnation: u64,
    /// Orders run at once, `1..=WORKER_CONCURRENCY_MAX`.
    pub capacity: u32,
    pub heartbeat_interval_ms: u64,
    /// Broker heartbeat intervals of silence before the broker is presumed
    /// lost.
    pub heartbeat_liveness: u32,
    /// Orders the broker may send in one `dispatches` message, advertised
    /// in every heartbeat (at most `DISPATCHES_PER_MESSAGE_MAX`); 0: one
    /// order per message, as before 0.5. Since 0.5.
    pub dispatches_max: u32,
}

impl CoreConfig {
    /// A config with the default heartbeat settings.
    pub fn new(worker: impl Into<String>, incarnation: u64, capacity: u32) -> Self {
        CoreConfig {
            worker: worker.into(),
            incarnation,
            capacity,
            heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
            heartbeat_liveness: limits::HEARTBEAT_LIVENESS_DEFAULT,
            dispatches_max: limits::WORKER_DISPATCHES_MAX_DEFAULT,
        }
    }

    fn broker_timeout_ms(&self) -> u64 {
        self.heartbeat_interval_ms.saturating_mul(u64::from(self.heartbeat_liveness))
    }
}

/// Why a handler did not process an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// True: try again (maybe elsewhere). False: the order can never
    /// succeed; the broker dead-letters it at once.
    pub retry: bool,
    pub reason: String,
    /// Retry no sooner than this (the handler asked); `None`: the broker's
    /// own backoff. Clamped to `limits::RETRY_DELAY_MS_MAX` in the Nack.
    pub delay_ms: Option<u64>,
    /// The handler could not run at all (command missing or not executable,
    /// spawn error): the order was never processed, so it is returned
    /// without spending an attempt and the worker turns broken.
    pub cannot_run: bool,
}

impl Failure {
    pub fn retry(reason: impl Into<String>) -> Self {
        Failure { retry: true, reason: reason.into(), delay_ms: None, cannot_run: false }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure { retry: false, reason: reason.into(), delay_ms: None, cannot_run: false }
    }

    /// A retryable failure that asks for a delay before the next attempt.
    pub fn retry_later(reason: impl Into<String>, delay_ms: Option<u64>) -> Self {
        Failure { delay_ms, ..Failure::retry(reason) }
    }

    /// The handler could not run (see [`Failure::cannot_run`]).
    pub fn cannot_run(reason: impl Into<String>) -> Self {
        Failure { cannot_run: true, ..Failure::retry(reason) }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (self.cannot_run, self.retry) {
            (true, _) => "handler cannot run",
            (false, true) => "retryable failure",
            (false, false) => "permanent failure",
        };
        write!(f, "{kind}: {}", self.reason)?;
        match self.delay_ms {
            Some(delay_ms) => write!(f, " (retry in {delay_ms} ms)"),
            None => Ok(()),
        }
    }
}

/// Why a dispatched order was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    NoCapacity,
    /// The worker is shutting down.
    Draining,
    /// The handler cannot run; the worker waits for its next probe.
    Broken,
}

/// Something that happened that the IO loop should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The order is already running here; the copy was ignored.
    DuplicateDispatch { order: OrderKey, attempt: u32 },
    /// The order was not run; it was returned to the broker.
    Refused { order: OrderKey, attempt: u32, why: Refusal },
    /// The handler cannot run: the worker turned broken (from healthy, or
    /// again after a probe, `probes_failed` > 0) and returns its orders
    /// until a probe in `probe_in_ms`.
    HandlerBroken { reason: String, probes_failed: u32, probe_in_ms: u64 },
    /// The probe delay passed: the next order tries the handler again.
    HandlerProbing,
    /// A run started after the handler had been broken.
    HandlerRecovered,
    /// The first broker heartbeat arrived.
    BrokerFound { incarnation: u64 },
    /// The broker restarted (new incarnation): we announced ourselves again.
    BrokerRestarted { old: u64, new: u64 },
    /// No word from the broker for `silent_ms`: the welcome is dropped so
    /// the broker re-welcomes us when it is back.
    BrokerLost { silent_ms: u64 },
    /// The broker is heard again after [`Event::BrokerLost`].
    BrokerBack,
    /// In a group: a new leader was announced; we announced ourselves to it.
    LeaderChanged { leader: u64, term: u64 },
}

/// Counters for logs and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub orders_started: u64,
    pub orders_acked: u64,
    pub orders_nacked: u64,
    pub duplicate_dispatches: u64,
    pub refused_dispatches: u64,
    /// Orders handed back unrun because the handler could not run them.
    pub orders_returned: u64,
    /// Times the worker turned broken (first break and failed probes).
    pub handler_breaks: u64,
    pub broker_restarts: u64,
    pub broker_losses: u64,
    /// In a group: new leaders followed.
    pub leader_changes: u64,
}

/// Whether the handler can run, and the probe backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    /// Why the handler cannot run, while broken: sent in heartbeats.
    broken: Option<String>,
    /// When to clear `broken` and try again.
    probe_due_ms: Option<Millis>,
    /// Delay before the next probe if the handler breaks (again).
    probe_delay_ms: u64,
    /// Breaks since the last run that started: 0 is healthy.
    breaks: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { broken: None, probe_due_ms: None, probe_delay_ms: PROBE_DELAY_MS_INITIAL, breaks: 0 }
    }
}

/// The worker's state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    /// Orders running here, with the latest attempt the broker sent.
    /// Hashed (foldhash), not ordered: a B-tree of order keys was ~17 %
    /// of the worker's samples at full load; heartbeats sort the keys.
    in_flight: HashMap<OrderKey, u32, foldhash::fast::RandomState>,
    /// Last welcome nonce received; echoed in every heartbeat.
    welcome: Option<u64>,
    broker_incarnation: Option<u64>,
    /// Last time any fanout message arrived (all of them prove the broker
    /// is alive and our subscription works).
    broker_heard_ms: Option<Millis>,
    broker_lost: bool,
    heartbeat_due_ms: Millis,
    draining: bool,
    health: Health,
    control: VecDeque<ControlMsg>,
    jobs: VecDeque<Dispatch>,
    events: VecDeque<Event>,
    counters: Counters,
    /// In a group: who leads. `None` for a single broker.
    leadership: Option<Leadership>,
    /// A new leader the io layer has not been told of yet.
    leader_changed: Option<u64>,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        assert!(config.heartbeat_interval_ms > 0 && config.heartbeat_liveness > 0);
        assert!(config.capacity > 0 && config.capacity <= limits::WORKER_CONCURRENCY_MAX);
        Core {
            config,
            in_flight: HashMap::default(),
            welcome: None,
            broker_incarnation: None,
            broker_heard_ms: None,
            broker_lost: false,
            // Due at once: the first heartbeat is how the broker learns of us.
            heartbeat_due_ms: 0,
            draining: false,
            health: Health::default(),
            control: VecDeque::new(),
            jobs: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            leadership: None,
            leader_changed: None,
        }
    }

    /// A core for a group of brokers: it follows the leader the members'
    /// heartbeats announce (see the module docs).
    pub fn in_group(config: CoreConfig, members: &Members) -> Self {
        Core { leadership: Some(Leadership::new(members)), ..Core::new(config) }
    }

    /// In a group, the leader we send control messages to, once announced.
    pub fn leader(&self) -> Option<u64> {
        self.leadership.as_ref().and_then(Leadership::leader)
    }

    /// In a group: the member that leads now, once per change. The caller
    /// sends control messages to it alone from now on.
    pub fn poll_leader(&mut self) -> Option<u64> {
        self.leader_changed.take()
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// The welcome nonce our heartbeats echo, if any.
    pub fn welcome(&self) -> Option<u64> {
        self.welcome
    }

    /// Next message to PUSH to the broker's control socket.
    pub fn poll_control(&mut self) -> Option<ControlMsg> {
        self.control.pop_front()
    }

    /// Next order to run; report its end with [`Core::handle_done`].
    pub fn poll_job(&mut self) -> Option<Dispatch> {
        self.jobs.pop_front()
    }

    /// Next thing worth logging.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Millis {
        let silence = match (self.broker_heard_ms, self.broker_lost) {
            (Some(heard), false) => heard.saturating_add(self.config.broker_timeout_ms()),
            _ => Millis::MAX,
        };
        let probe = self.health.probe_due_ms.unwrap_or(Millis::MAX);
        self.heartbeat_due_ms.min(silence).min(probe)
    }

    /// Why the handler cannot run, while the worker is broken.
    pub fn broken(&self) -> Option<&str> {
        self.health.broken.as_deref()
    }

    // ------------------------------------------------------------ fanout

    /// Handles one decoded message from the fanout socket.
    pub fn handle_fanout(&mut self, msg: FanoutMsg, now_ms: Millis) {
        self.heard_broker(now_ms);
        match msg {
            FanoutMsg::Welcome(welcome) => {
                self.welcome = Some(welcome.nonce);
                // Echo at once: the broker dispatches to us only after it.
                self.queue_heartbeat(now_ms);
            }
            FanoutMsg::Dispatch(dispatch) => self.on_dispatch(dispatch),
            // Each entry is a dispatch of its own: the same duplicate,
            // credit and refusal rules, its own ack or nack.
            FanoutMsg::Dispatches(batch) => batch.dispatches.into_iter().for_each(|d| self.on_dispatch(d)),
            FanoutMsg::Heartbeat(hb) => self.on_broker_heartbeat(hb, now_ms),
            // Producer traffic: never on a worker's topics, ignored if it is.
            FanoutMsg::Confirm(_) | FanoutMsg::Confirms(_) | FanoutMsg::Reject(_) => {}
            // For producers: a broker not reading intake still dispatches.
            FanoutMsg::Backpressure(_) => {}
        }
    }

    fn heard_broker(&mut self, now_ms: Millis) {
        self.broker_heard_ms = Some(now_ms);
        if self.broker_lost {
            self.broker_lost = false;
            self.events.push_back(Event::BrokerBack);
        }
    }

    fn on_dispatch(&mut self, dispatch: Dispatch) {
        let (order, attempt) = (dispatch.order.clone(), dispatch.attempt);
        if let Some(latest) = self.in_flight.get_mut(&order) {
            // The broker may have redelivered while we run it (it thought us
            // dead, or it restarted): answer for the attempt it now waits for.
            *latest = (*latest).max(attempt);
            self.counters.duplicate_dispatches += 1;
            self.events.push_back(Event::DuplicateDispatch { order, attempt });
            return;
        }
        let why = if self.draining {
            Refusal::Draining
        } else if self.health.broken.is_some() {
            Refusal::Broken
        } else if self.in_flight.len() >= self.config.capacity as usize {
            Refusal::NoCapacity
        } else {
            self.in_flight.insert(order, attempt);
            self.counters.orders_started += 1;
            self.jobs.push_back(dispatch);
            return;
        };
        self.counters.refused_dispatches += 1;
        let reason = match why {
            Refusal::NoCapacity => "refused: no free slot".to_owned(),
            Refusal::Draining => "refused: the worker is shutting down".to_owned(),
            Refusal::Broken => {
                format!("refused: the handler cannot run: {}", self.health.broken.as_deref().unwrap_or(""))
            }
        };
        self.queue_returned(order.clone(), attempt, &reason);
        self.events.push_back(Event::Refused { order, attempt, why });
    }

    /// Hands an order back unrun: the broker requeues it without spending
    /// an attempt.
    fn queue_returned(&mut self, order: OrderKey, attempt: u32, reason: &str) {
        self.control.push_back(ControlMsg::Nack(Nack {
            worker: self.config.worker.clone(),
            incarnation: self.config.incarnation,
            order,
            attempt,
            retry: true,
            reason: truncate_on_char_boundary(reason, REASON_BYTES_MAX).to_owned(),
            delay_ms: None,
            returned: true,
        }));
    }

    fn on_broker_heartbeat(&mut self, hb: BrokerHeartbeat, now_ms: Millis) {
        if let Some(leadership) = &mut self.leadership {
            if let Some((leader, term)) = leadership.observe(&hb) {
                self.follow(leader, term, &hb, now_ms);
                return;
            }
            // Only the leader's restarts matter: the other members do not
            // take our messages.
            if hb.member.is_none() || hb.member != leadership.leader() {
                return;
            }
        }
        match self.broker_incarnation.replace(hb.incarnation) {
            None => self.events.push_back(Event::BrokerFound { incarnation: hb.incarnation }),
            Some(old) if old != hb.incarnation => {
                // A new broker process does not know us: our nonce is stale.
                self.welcome = None;
                self.counters.broker_restarts += 1;
                self.events.push_back(Event::BrokerRestarted { old, new: hb.incarnation });
                self.queue_heartbeat(now_ms);
            }
            Some(_) => {}
        }
    }

    /// A new leader: it does not know our welcome; announce ourselves to it
    /// at once.
    fn follow(&mut self, leader: u64, term: u64, hb: &BrokerHeartbeat, now_ms: Millis) {
        self.leader_changed = Some(leader);
        self.welcome = None;
        // Its incarnation, once a heartbeat of its own says it.
        self.broker_incarnation = (hb.member == Some(leader)).then_some(hb.incarnation);
        self.counters.leader_changes += 1;
        self.events.push_back(Event::LeaderChanged { leader, term });
        self.queue_heartbeat(now_ms);
    }

    // ------------------------------------------------------------ results

    /// Reports the end of an order returned by [`Core::poll_job`]. Queues
    /// the Ack or Nack; a handler that could not run turns the worker
    /// broken (see the module docs).
    pub fn handle_done(&mut self, order: OrderKey, attempt: u32, outcome: Result<(), Failure>, now_ms: Millis) {
        // A redelivery that arrived while the order ran raised the attempt.
        let attempt = self.in_flight.remove(&order).map_or(attempt, |latest| latest.max(attempt));
        let worker = self.config.worker.clone();
        let incarnation = self.config.incarnation;
        let msg = match outcome {
            Ok(()) => {
                self.handler_ran(now_ms);
                self.counters.orders_acked += 1;
                ControlMsg::Ack(Ack { worker, incarnation, order, attempt })
            }
            Err(failure) if failure.cannot_run => {
                self.counters.orders_returned += 1;
                self.handler_broke(&failure.reason, now_ms);
                self.queue_returned(order, attempt, &failure.reason);
                return;
            }
            Err(failure) => {
                self.handler_ran(now_ms);
                self.counters.orders_nacked += 1;
                let reason = truncate_on_char_boundary(&failure.reason, REASON_BYTES_MAX).to_owned();
                ControlMsg::Nack(Nack {
                    worker,
                    incarnation,
                    order,
                    attempt,
                    retry: failure.retry,
                    reason,
                    delay_ms: failure.delay_ms.map(|delay_ms| delay_ms.min(limits::RETRY_DELAY_MS_MAX)),
                    returned: false,
                })
            }
        };
        self.control.push_back(msg);
    }

    /// A run started (whatever its outcome): the handler works, so the
    /// backoff starts over and a broken flag goes.
    fn handler_ran(&mut self, now_ms: Millis) {
        if self.health.breaks == 0 {
            return;
        }
        let was_broken = self.health.broken.is_some();
        self.health = Health::default();
        self.events.push_back(Event::HandlerRecovered);
        if was_broken {
            self.queue_heartbeat(now_ms);
        }
    }

    fn handler_broke(&mut self, reason: &str, now_ms: Millis) {
        if self.health.broken.is_some() {
            return; // another order of the same break: already reported
        }
        let probe_in_ms = self.health.probe_delay_ms;
        self.events.push_back(Event::HandlerBroken {
            reason: reason.to_owned(),
            probes_failed: self.health.breaks,
            probe_in_ms,
        });
        self.counters.handler_breaks += 1;
        self.health.breaks = self.health.breaks.saturating_add(1);
        self.health.broken = Some(truncate_on_char_boundary(reason, REASON_BYTES_MAX).to_owned());
        self.health.probe_due_ms = Some(now_ms.saturating_add(probe_in_ms));
        self.health.probe_delay_ms = probe_in_ms.saturating_mul(2).min(PROBE_DELAY_MS_MAX);
        // Tell the broker now, not at the next heartbeat: every dispatch
        // until then is a round trip for nothing.
        self.queue_heartbeat(now_ms);
    }

    // ------------------------------------------------------------ time

    /// Advances time: our heartbeats and the broker's liveness.
    pub fn handle_timeout(&mut self, now_ms: Millis) {
        if self.health.probe_due_ms.is_some_and(|due| now_ms >= due) {
            // Unbroken heartbeat at once: the broker may dispatch again.
            self.health.probe_due_ms = None;
            self.health.broken = None;
            self.events.push_back(Event::HandlerProbing);
            self.queue_heartbeat(now_ms);
        }
        if now_ms >= self.heartbeat_due_ms {
            self.queue_heartbeat(now_ms);
        }
        let Some(heard_ms) = self.broker_heard_ms else { return };
        let silent_ms = now_ms.saturating_sub(heard_ms);
        if !self.broker_lost && silent_ms >= self.config.broker_timeout_ms() {
            // Keep heartbeating: ZeroMQ reconnects by itself, and a
            // heartbeat without a welcome makes the broker welcome us anew.
            self.broker_lost = true;
            self.welcome = None;
            self.counters.broker_losses += 1;
            self.events.push_back(Event::BrokerLost { silent_ms });
        }
    }

    /// The keys a heartbeat lists: sorted (the same list whatever the
    /// map's random seed: the simulation replays a seed exactly), at most
    /// `HEARTBEAT_IN_FLIGHT_MAX`.
    fn heartbeat_keys(&self) -> Vec<OrderKey> {
        let mut keys: Vec<OrderKey> = self.in_flight.keys().cloned().collect();
        keys.sort_unstable();
        keys.truncate(HEARTBEAT_IN_FLIGHT_MAX);
        keys
    }

    fn queue_heartbeat(&mut self, now_ms: Millis) {
        self.heartbeat_due_ms = now_ms.saturating_add(self.config.heartbeat_interval_ms);
        let heartbeat = Heartbeat {
            worker: self.config.worker.clone(),
            incarnation: self.config.incarnation,
            capacity: self.config.capacity,
            in_flight: self.heartbeat_keys(),
            welcome: self.welcome,
            draining: self.draining,
            broken: self.health.broken.clone(),
            dispatches_max: self.config.dispatches_max.min(limits::DISPATCHES_PER_MESSAGE_MAX as u32),
        };
        self.control.push_back(ControlMsg::Heartbeat(heartbeat));
    }

    // ------------------------------------------------------------ shutdown

    /// Takes no new orders from now on; the running ones finish.
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// True once draining and nothing is in flight.
    pub fn is_drained(&self) -> bool {
        self.draining && self.in_flight.is_empty()
    }

    /// The goodbye to send last. The broker requeues whatever it still
    /// thinks we hold.
    pub fn bye(&self) -> ControlMsg {
        ControlMsg::Bye(Bye { worker: self.config.worker.clone(), incarnation: self.config.incarnation })
    }
}

/// Acks queued back to back travel as one `acks` message: a turn that
/// finished many orders sends one frame, not one per order. Packs `msg`
/// into the last message of `queue` if both are acks (up to
/// `ACKS_PER_MESSAGE_MAX`); otherwise hands it back to be queued.
pub fn pack_ack(queue: &mut VecDeque<ControlMsg>, msg: ControlMsg) -> Option<ControlMsg> {
    let ControlMsg::Ack(ack) = &msg else { return Some(msg) };
    let acked = Acked { order: ack.order.clone(), attempt: ack.attempt };
    match queue.back_mut() {
        Some(ControlMsg::Acks(acks)) if acks.acks.len() < ACKS_PER_MESSAGE_MAX => {
            acks.acks.push(acked);
            None
        }
        Some(ControlMsg::Ack(last)) => {
            let first = Acked { order: last.order.clone(), attempt: last.attempt };
            let (worker, incarnation) = (last.worker.clone(), last.incarnation);
            *queue.back_mut().expect("matched above") =
                ControlMsg::Acks(Acks { worker, incarnation, acks: vec![first, acked] });
            None
        }
        _ => Some(msg),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char
/// boundary.
pub fn truncate_on_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
