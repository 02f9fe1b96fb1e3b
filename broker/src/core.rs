//! The broker's sans-IO state machine.
//!
//! [`Core`] owns every order and every worker the broker knows. Callers feed
//! it inputs with the current time ([`Core::handle_intake`],
//! [`Core::handle_control`], [`Core::handle_timeout`]) and drain what it
//! wants done: [`Core::poll_event`] yields the state changes (the journal
//! records, once the journal exists) and [`Core::poll_outbound`] the
//! messages to publish. It does no IO and reads no clock.
//!
//! Every change to orders goes through [`Core::apply`] as an [`Event`], so
//! replaying the recorded events rebuilds the same state. Worker liveness is
//! deliberately *not* an event: after a restart no worker is known, and every
//! order that was in flight is pending again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::limits::{self, ORDER_BYTES_MAX, WORKERS_MAX};
use orderly_common::protocol::{
    encode_dispatch, BrokerHeartbeat, Confirm, Confirms, ControlMsg, FanoutMsg, Heartbeat, IntakeMsg, Items, Reject,
    RejectReason, Welcome,
};
use orderly_common::OrderKey;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The cores' one time type (see `orderly_common::time`).
pub use orderly_common::time::Millis;

/// Hash maps keyed by order keys. foldhash, randomly seeded per process:
/// SipHash was a quarter of a replay's time; keys come from producers, so
/// the seed stays random.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An order key shared by the order table and its queues.
type Shared = Arc<OrderKey>;

/// Where the journal holds a sealed order's whole payload: the record of
/// its `Accepted` or of its latest `Restored` copy.
pub type PayloadRef = orderly_journal::RecordAt;

/// Settings of the core, already validated by the caller.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Random per broker start; workers notice a restart by its change.
    pub incarnation: u64,
    pub heartbeat_interval_ms: u64,
    /// Heartbeat intervals a worker may stay silent before it is dead.
    pub heartbeat_liveness: u32,
    /// Deliveries of one order before it is dead-lettered.
    pub max_attempts: u32,
    pub partial_orders_max: usize,
    pub pending_orders_max: usize,
    pub pending_bytes_max: u64,
    pub partial_age_max_ms: u64,
    /// An order in flight this long without an ack (and not listed in the
    /// worker's heartbeats meanwhile) is taken back and redelivered.
    pub ack_timeout_ms: u64,
    /// How long the key of an acknowledged order is remembered, so that a
    /// resend is confirmed again instead of processed twice.
    pub dedup_window_ms: u64,
    /// Keys remembered at most; past it the oldest are forgotten early.
    pub dedup_keys_max: usize,
    /// Item bytes in one order (at most `limits::ORDER_BYTES_MAX`).
    pub order_bytes_max: u64,
    /// Items in one order (at most `limits::ORDER_ITEMS_MAX`).
    pub order_items_max: u32,
    /// Open partial orders of one producer: past it a Begin is rejected
    /// (`limit_reached`), so one producer cannot take every partial slot.
    pub partial_orders_per_producer_max: usize,
    /// Item bytes of partial orders (held in RAM until sealed) at which
    /// intake pauses.
    pub partial_bytes_max: u64,
    /// Item bytes of sealed orders kept in RAM; beyond it the newest
    /// orders' payloads are dropped from RAM (written to the journal first
    /// if no single record holds them) and read back to dispatch them.
    pub payload_cache_bytes: u64,
}

impl CoreConfig {
    pub fn with_incarnation(incarnation: u64) -> Self {
        CoreConfig {
            incarnation,
            heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
            heartbeat_liveness: limits::HEARTBEAT_LIVENESS_DEFAULT,
            max_attempts: limits::MAX_ATTEMPTS_DEFAULT,
            partial_orders_max: limits::PARTIAL_ORDERS_MAX_DEFAULT,
            pending_orders_max: limits::PENDING_ORDERS_MAX_DEFAULT,
            pending_bytes_max: limits::PENDING_BYTES_MAX_DEFAULT,
            partial_age_max_ms: limits::PARTIAL_AGE_MAX_MS_DEFAULT,
            ack_timeout_ms: limits::ACK_TIMEOUT_MS_DEFAULT,
            dedup_window_ms: limits::DEDUP_WINDOW_MS_DEFAULT,
            dedup_keys_max: limits::DEDUP_KEYS_MAX_DEFAULT,
            order_bytes_max: ORDER_BYTES_MAX as u64,
            order_items_max: limits::ORDER_ITEMS_MAX,
            partial_orders_per_producer_max: limits::PARTIAL_ORDERS_PER_PRODUCER_MAX_DEFAULT,
            payload_cache_bytes: limits::PAYLOAD_CACHE_BYTES_DEFAULT,
            partial_bytes_max: limits::PARTIAL_BYTES_MAX_DEFAULT,
        }
    }

    fn worker_timeout_ms(&self) -> u64 {
        self.heartbeat_interval_ms * u64::from(self.heartbeat_liveness)
    }
}

/// A change of order state: what the journal records and replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A partial order was opened by Begin.
    Begun { key: OrderKey, at_ms: Millis },
    /// One item of a partial order arrived.
    ItemStored { key: OrderKey, seq: u32, data: ByteBuf },
    /// Finish arrived and every item 0..count is present: the order is
    /// complete and pending.
    Sealed { key: OrderKey, count: u32 },
    /// A whole order arrived in one `items` message: complete and pending,
    /// with its items, in one record (no Begun/ItemStored before it).
    Accepted { key: OrderKey, items: Vec<ByteBuf> },
    /// A partial order was discarded and the producer told why.
    Dropped { key: OrderKey, reason: RejectReason },
    /// A pending order was sent to a worker.
    Dispatched { key: OrderKey, worker: String, attempt: u32 },
    /// A worker acknowledged the order: it is done and forgotten.
    Acked { key: OrderKey },
    /// An in-flight order goes back to the queue.
    Requeued { key: OrderKey, reason: String },
    /// An order failed `max_attempts` times (or was refused for good).
    DeadLettered { key: OrderKey, reason: String },
    /// The whole state of one live order, written when compaction copies it
    /// out of an old journal segment. Replay replaces whatever it knew of
    /// the order with this; live, it changes nothing.
    Restored { key: OrderKey, snapshot: Snapshot },
    /// An operator sent a dead letter back to the queue with fresh attempts.
    Revived { key: OrderKey },
    /// An acknowledged order's key left the dedup window.
    Forgotten { key: OrderKey },
}

impl Event {
    /// The order whose whole payload this event's record holds: an
    /// `Accepted`, or a `Restored` copy of a sealed order.
    pub fn payload_key(&self) -> Option<&OrderKey> {
        match self {
            Event::Accepted { key, .. } | Event::Restored { key, snapshot: Snapshot::Sealed { .. } } => Some(key),
            _ => None,
        }
    }

    /// The items of such an event (see [`Event::payload_key`]).
    pub fn payload(&self) -> Option<&[ByteBuf]> {
        match self {
            Event::Accepted { items, .. } | Event::Restored { snapshot: Snapshot::Sealed { items, .. }, .. } => {
                Some(items)
            }
            _ => None,
        }
    }

    /// [`Event::payload`], to fill in or take.
    pub fn payload_mut(&mut self) -> Option<&mut Vec<ByteBuf>> {
        match self {
            Event::Accepted { items, .. } | Event::Restored { snapshot: Snapshot::Sealed { items, .. }, .. } => {
                Some(items)
            }
            _ => None,
        }
    }
}

/// One live order, as compaction copies it forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Snapshot {
    Partial {
        items: Vec<(u32, ByteBuf)>,
    },
    Sealed {
        items: Vec<ByteBuf>,
        attempts: u32,
        dead: Option<String>,
    },
    /// Acknowledged at `at_ms`; remembered for the dedup window.
    Acked {
        at_ms: Millis,
    },
}

/// A message the broker wants published on its fanout socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: Vec<u8>,
    /// Empty when `fill` is set.
    pub body: Vec<u8>,
    /// A dispatch whose items are only in the journal: the IO loop reads
    /// them and encodes the body.
    pub fill: Option<Fill>,
}

impl Outbound {
    fn new(topic: Vec<u8>, body: Vec<u8>) -> Self {
        Outbound { topic, body, fill: None }
    }
}

/// A dispatch to encode from the journal (see [`Outbound::fill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub key: OrderKey,
    pub attempt: u32,
    pub from: PayloadRef,
}

/// Counters for logs and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub orders_sealed: u64,
    pub orders_acked: u64,
    pub orders_rejected: u64,
    pub orders_dead_lettered: u64,
    pub dispatches: u64,
    pub redeliveries: u64,
    pub duplicate_acks: u64,
    pub stale_nacks: u64,
    pub orphan_items: u64,
    pub duplicate_items: u64,
    pub workers_expired: u64,
    pub workers_refused: u64,
    pub ack_timeouts: u64,
    pub orders_revived: u64,
    /// Finishes of orders already sealed or recently acknowledged
    /// (resends), confirmed again without a second order.
    pub orders_deduplicated: u64,
}

/// A dead-lettered order, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub producer: String,
    pub id: String,
    pub attempts: u32,
    pub reason: String,
    pub items: usize,
    pub bytes: u64,
}

#[derive(Debug)]
struct Partial {
    began_ms: Millis,
    items: BTreeMap<u32, ByteBuf>,
    bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OrderState {
    Pending,
    InFlight { worker: String },
    Dead { reason: String },
}

#[derive(Debug)]
struct Order {
    /// The payload in RAM; `None` once only the journal holds it.
    items: Option<Vec<ByteBuf>>,
    /// The journal record holding the whole payload, once there is one.
    stored: Option<PayloadRef>,
    /// The items leave RAM once `stored` is known.
    spilling: bool,
    /// One record holds the whole payload (`Accepted` or `Restored`), or
    /// will at the end of this turn: spilling needs no copy.
    whole: bool,
    count: u32,
    bytes: u64,
    /// Deliveries so far; the next dispatch is attempt `attempts + 1`.
    attempts: u32,
    state: OrderState,
}

#[derive(Debug)]
struct Worker {
    incarnation: u64,
    capacity: u32,
    /// Orders dispatched to this worker.
    in_flight: BTreeMap<OrderKey, Held>,
    last_seen_ms: Millis,
    /// The worker is shutting down: dispatch nothing more to it.
    draining: bool,
    nonce: u64,
    /// The worker echoed our welcome: its subscription is live.
    ready: bool,
}

/// One order a worker holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    sent_ms: Millis,
    /// Requeued when no ack arrives by then; each heartbeat that lists the
    /// order moves it to `now + ack_timeout_ms`.
    deadline_ms: Millis,
}

impl Worker {
    fn free_credits(&self) -> u32 {
        self.capacity.saturating_sub(self.in_flight.len() as u32)
    }
}

/// A snapshot of one worker for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub ready: bool,
    pub capacity: u32,
    pub in_flight: u32,
}

/// A snapshot of the core for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub partial_orders: usize,
    pub pending_orders: usize,
    pub in_flight_orders: usize,
    pub dead_letters: usize,
    pub held_bytes: u64,
    /// Payload bytes of sealed orders in RAM; the rest are read back from
    /// the journal to dispatch.
    pub cached_bytes: u64,
    /// Item bytes of partial orders (in RAM).
    pub partial_bytes: u64,
    pub workers: Vec<WorkerStatus>,
    pub counters: Counters,
}

/// The broker's state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    partials: BTreeMap<OrderKey, Partial>,
    /// Sealed orders. The key is shared (`Arc`) with the queues below, so
    /// a pending order costs one copy of its key, not three.
    orders: HashMap<Shared, Order>,
    /// Keys of acknowledged orders still in the dedup window, with when.
    recent: HashMap<OrderKey, Millis>,
    /// `recent` in acknowledgement order, for expiry; may hold stale pairs.
    recent_order: VecDeque<(Millis, OrderKey)>,
    /// Dispatch queue; may hold stale keys (acked while pending), skipped.
    pending: VecDeque<Shared>,
    pending_len: usize,
    in_flight_len: usize,
    dead_len: usize,
    /// Item bytes held by partial and live orders.
    held_bytes: u64,
    /// Item bytes of sealed orders in RAM (see `payload_cache_bytes`).
    cached_bytes: u64,
    /// Item bytes of partial orders (always in RAM).
    partial_bytes: u64,
    /// Sealed orders whose items are in RAM, oldest first; may hold stale
    /// keys. The newest leave RAM first: they are dispatched last.
    cached: VecDeque<Shared>,
    /// Replaying the journal: payloads stay on disk.
    replaying: bool,
    workers: BTreeMap<String, Worker>,
    nonce_next: u64,
    heartbeat_due_ms: Millis,
    partial_sweep_due_ms: Millis,
    /// Time of the input being handled (inputs carry it; no clock is read).
    now_ms: Millis,
    events: VecDeque<Event>,
    outbound: VecDeque<Outbound>,
    /// Order ids to confirm, by producer (see [`Core::confirm`]).
    confirms: BTreeMap<String, Vec<String>>,
    counters: Counters,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        assert!(config.heartbeat_interval_ms > 0 && config.heartbeat_liveness > 0);
        assert!(config.max_attempts > 0);
        Core {
            nonce_next: config.incarnation | 1,
            config,
            partials: BTreeMap::new(),
            orders: HashMap::default(),
            recent: HashMap::default(),
            recent_order: VecDeque::new(),
            pending: VecDeque::new(),
            pending_len: 0,
            in_flight_len: 0,
            dead_len: 0,
            held_bytes: 0,
            cached_bytes: 0,
            partial_bytes: 0,
            cached: VecDeque::new(),
            replaying: false,
            workers: BTreeMap::new(),
            heartbeat_due_ms: 0,
            partial_sweep_due_ms: 0,
            now_ms: 0,
            events: VecDeque::new(),
            outbound: VecDeque::new(),
            confirms: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Next state change to record, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next message to publish. Publish only after the events produced
    /// before it are durable.
    pub fn poll_outbound(&mut self) -> Option<Outbound> {
        if !self.confirms.is_empty() {
            self.flush_confirms();
        }
        self.outbound.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Millis {
        let timeout = self.config.worker_timeout_ms();
        let expiry = self.workers.values().map(|w| w.last_seen_ms + timeout).min();
        let deadline = self.workers.values().flat_map(|w| w.in_flight.values().map(|h| h.deadline_ms)).min();
        [Some(self.heartbeat_due_ms), Some(self.partial_sweep_due_ms), expiry, deadline]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
    }

    /// False while a bound on partial orders, pending orders or held bytes
    /// is reached: the IO loop stops reading intake until it is true again,
    /// so producers block at their high-water mark and nothing is dropped.
    pub fn intake_open(&self) -> bool {
        self.partials.len() < self.config.partial_orders_max
            && self.pending_len + self.in_flight_len < self.config.pending_orders_max
            && self.held_bytes < self.config.pending_bytes_max
            && self.partial_bytes < self.config.partial_bytes_max
    }

    pub fn status(&self) -> Status {
        Status {
            partial_orders: self.partials.len(),
            pending_orders: self.pending_len,
            in_flight_orders: self.in_flight_len,
            dead_letters: self.dead_len,
            held_bytes: self.held_bytes,
            cached_bytes: self.cached_bytes,
            partial_bytes: self.partial_bytes,
            workers: self
                .workers
                .iter()
                .map(|(id, w)| WorkerStatus {
                    id: id.clone(),
                    ready: w.ready,
                    capacity: w.capacity,
                    in_flight: w.in_flight.len() as u32,
                })
                .collect(),
            counters: self.counters.clone(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    // ------------------------------------------------------------ intake

    /// Handles one decoded intake message.
    pub fn handle_intake(&mut self, msg: IntakeMsg, now_ms: Millis) {
        self.now_ms = now_ms;
        match msg {
            IntakeMsg::Hello(hello) => {
                let body = FanoutMsg::Welcome(Welcome { nonce: hello.nonce }).encode();
                self.outbound.push_back(Outbound::new(producer_topic(&hello.producer), body));
            }
            IntakeMsg::Begin(begin) => self.on_begin(OrderKey::new(begin.producer, begin.order), now_ms),
            IntakeMsg::Item(item) => self.on_item(OrderKey::new(item.producer, item.order), item.seq, item.data),
            IntakeMsg::Items(items) => self.on_items(items, now_ms),
            IntakeMsg::Finish(finish) => self.on_finish(OrderKey::new(finish.producer, finish.order), finish.count),
        }
        self.pump();
    }

    fn on_begin(&mut self, key: OrderKey, now_ms: Millis) {
        // A resent Begin for an order we hold (or recently finished) is a
        // no-op: resends fill gaps and are never processed twice.
        if self.partials.contains_key(&key) || self.orders.contains_key(&key) {
            return;
        }
        if self.recent.contains_key(&key) {
            // Keep the key for the rest of this resend, so a window that
            // ends between its Begin and its Finish cannot turn the Finish
            // into an unknown_order reject.
            self.touch_recent(&key);
            return;
        }
        if self.partials.len() >= self.config.partial_orders_max {
            let detail = format!("{} open partial orders", self.partials.len());
            self.reject(&key, RejectReason::LimitReached { detail });
            return;
        }
        let max = self.config.partial_orders_per_producer_max;
        if self.partials_of(&key.producer, max) >= max {
            let detail = format!("producer {} has {max} open partial orders (finish some first)", key.producer);
            self.reject(&key, RejectReason::LimitReached { detail });
            return;
        }
        self.record(Event::Begun { key, at_ms: now_ms });
    }

    /// Open partial orders of `producer`, counting at most `cap` (keys sort
    /// by producer first, so this is one short range scan).
    fn partials_of(&self, producer: &str, cap: usize) -> usize {
        let from = OrderKey::new(producer, "");
        self.partials.range(from..).take_while(|(k, _)| k.producer == producer).take(cap).count()
    }

    fn on_item(&mut self, key: OrderKey, seq: u32, data: ByteBuf) {
        let Some(partial) = self.partials.get(&key) else {
            if self.recent.contains_key(&key) {
                self.touch_recent(&key);
                self.counters.duplicate_items += 1;
            } else if self.orders.contains_key(&key) {
                self.counters.duplicate_items += 1; // a resend of a sealed order
            } else {
                self.counters.orphan_items += 1; // no Begin, or already rejected
            }
            return;
        };
        if partial.items.contains_key(&seq) {
            self.counters.duplicate_items += 1;
            return;
        }
        let bytes = partial.bytes + data.len() as u64;
        let bytes_max = self.config.order_bytes_max;
        if bytes > bytes_max {
            let detail = format!("items reach {bytes} bytes; the limit is {bytes_max}");
            self.drop_partial(key, RejectReason::TooLarge { detail });
            return;
        }
        let items_max = self.config.order_items_max;
        if seq >= items_max {
            let detail = format!("item {seq} is beyond the limit of {items_max} items");
            self.drop_partial(key, RejectReason::TooLarge { detail });
            return;
        }
        self.record(Event::ItemStored { key, seq, data });
    }

    /// An `items` message: a whole order in one record when it is one, else
    /// the Begin, Items and Finish it stands for.
    fn on_items(&mut self, m: Items, now_ms: Millis) {
        let key = OrderKey::new(m.producer, m.order);
        let whole = m.begin && m.first == 0 && m.finish == Some(m.data.len() as u32);
        if whole && !self.partials.contains_key(&key) {
            return self.on_whole(key, m.data);
        }
        if m.begin {
            self.on_begin(key.clone(), now_ms);
        }
        for (i, data) in m.data.into_iter().enumerate() {
            self.on_item(key.clone(), m.first + i as u32, data);
        }
        if let Some(count) = m.finish {
            self.on_finish(key, count);
        }
    }

    /// A whole order at once: the checks of Begin, Item and Finish together.
    fn on_whole(&mut self, key: OrderKey, items: Vec<ByteBuf>) {
        if self.orders.contains_key(&key) || self.recent.contains_key(&key) {
            if self.recent.contains_key(&key) {
                self.touch_recent(&key);
            }
            self.counters.orders_deduplicated += 1;
            self.confirm(&key); // a resent order: confirm again
            return;
        }
        let items_max = self.config.order_items_max;
        if items.len() as u64 > u64::from(items_max) {
            let detail = format!("{} items, beyond the limit of {items_max} items", items.len());
            return self.reject(&key, RejectReason::TooLarge { detail });
        }
        let bytes: u64 = items.iter().map(|d| d.len() as u64).sum();
        let bytes_max = self.config.order_bytes_max;
        if bytes > bytes_max {
            let detail = format!("items reach {bytes} bytes; the limit is {bytes_max}");
            return self.reject(&key, RejectReason::TooLarge { detail });
        }
        self.record(Event::Accepted { key: key.clone(), items });
        self.confirm(&key);
    }

    fn on_finish(&mut self, key: OrderKey, count: u32) {
        let Some(partial) = self.partials.get(&key) else {
            if self.orders.contains_key(&key) || self.recent.contains_key(&key) {
                self.counters.orders_deduplicated += 1;
                self.confirm(&key); // a resent order: confirm again
            } else {
                self.reject(&key, RejectReason::UnknownOrder);
            }
            return;
        };
        if count > self.config.order_items_max {
            let detail = format!("{count} items; the limit is {}", self.config.order_items_max);
            self.drop_partial(key, RejectReason::TooLarge { detail });
            return;
        }
        if let Some((&seq, _)) = partial.items.range(count..).next() {
            self.drop_partial(key, RejectReason::ExtraItem { count, seq });
            return;
        }
        if partial.items.len() < count as usize {
            let missing = (0..count).find(|s| !partial.items.contains_key(s)).unwrap_or(count);
            self.drop_partial(key, RejectReason::Gap { missing });
            return;
        }
        self.record(Event::Sealed { key: key.clone(), count });
        self.confirm(&key);
    }

    fn drop_partial(&mut self, key: OrderKey, reason: RejectReason) {
        self.reject(&key, reason.clone());
        self.record(Event::Dropped { key, reason });
    }

    /// Confirms wait in `confirms` until the outbound queue is drained, so
    /// one producer's confirms of a turn go out as one message.
    fn confirm(&mut self, key: &OrderKey) {
        self.confirms.entry(key.producer.clone()).or_default().push(key.id.clone());
    }

    /// Confirms wait for this turn's commit: it must be durable.
    pub fn confirms_waiting(&self) -> bool {
        !self.confirms.is_empty()
    }

    /// Moves the waiting confirms to the outbound queue: a `confirm` for a
    /// single order, `confirms` for several.
    fn flush_confirms(&mut self) {
        for (producer, mut ids) in std::mem::take(&mut self.confirms) {
            let topic = producer_topic(&producer);
            while !ids.is_empty() {
                let rest = ids.split_off(ids.len().min(limits::CONFIRMS_PER_MESSAGE_MAX));
                let body = if ids.len() == 1 {
                    FanoutMsg::Confirm(Confirm { order: ids.pop().expect("one id") }).encode()
                } else {
                    FanoutMsg::Confirms(Confirms { orders: ids }).encode()
                };
                self.outbound.push_back(Outbound::new(topic.clone(), body));
                ids = rest;
            }
        }
    }

    fn reject(&mut self, key: &OrderKey, reason: RejectReason) {
        self.counters.orders_rejected += 1;
        let body = FanoutMsg::Reject(Reject { order: key.id.clone(), reason }).encode();
        self.outbound.push_back(Outbound::new(producer_topic(&key.producer), body));
    }

    // ------------------------------------------------------------ control

    /// Handles one decoded control message.
    pub fn handle_control(&mut self, msg: ControlMsg, now_ms: Millis) {
        self.now_ms = now_ms;
        match msg {
            ControlMsg::Heartbeat(hb) => self.on_heartbeat(hb, now_ms),
            ControlMsg::Ack(ack) => {
                self.touch(&ack.worker, ack.incarnation, now_ms);
                self.on_ack(ack.order);
            }
            ControlMsg::Acks(acks) => {
                self.touch(&acks.worker, acks.incarnation, now_ms);
                for ack in acks.acks {
                    self.on_ack(ack.order);
                }
            }
            ControlMsg::Nack(nack) => {
                self.touch(&nack.worker, nack.incarnation, now_ms);
                let current = self.orders.get(&nack.order).is_some_and(|o| {
                    o.attempts == nack.attempt && o.state == OrderState::InFlight { worker: nack.worker.clone() }
                });
                if !current {
                    self.counters.stale_nacks += 1;
                } else if !nack.retry {
                    let reason = format!("worker {} refused it: {}", nack.worker, nack.reason);
                    self.record(Event::DeadLettered { key: nack.order, reason });
                } else {
                    let reason = format!("worker {} failed it: {}", nack.worker, nack.reason);
                    self.fail(nack.order, reason);
                }
            }
            ControlMsg::Bye(bye) => {
                if self.workers.get(&bye.worker).is_some_and(|w| w.incarnation == bye.incarnation) {
                    self.remove_worker(&bye.worker, "worker said bye");
                }
            }
        }
        self.pump();
    }

    /// Any POSACK retires the order, even one dead-lettered in the meantime:
    /// it was processed after all (a late ack).
    fn on_ack(&mut self, key: OrderKey) {
        match self.orders.get(&key) {
            Some(_) => self.record(Event::Acked { key }),
            None => self.counters.duplicate_acks += 1,
        }
    }

    fn on_heartbeat(&mut self, hb: Heartbeat, now_ms: Millis) {
        let known = self.workers.get(&hb.worker).map(|w| w.incarnation);
        if known.is_some_and(|inc| inc != hb.incarnation) {
            // Restarted under the same id: what the old process held is lost.
            self.remove_worker(&hb.worker, "worker restarted");
        }
        if !self.workers.contains_key(&hb.worker) {
            if self.workers.len() >= WORKERS_MAX {
                self.counters.workers_refused += 1;
                return;
            }
            let nonce = self.next_nonce();
            let worker = Worker {
                incarnation: hb.incarnation,
                capacity: hb.capacity,
                in_flight: BTreeMap::new(),
                last_seen_ms: now_ms,
                draining: false,
                nonce,
                ready: false,
            };
            self.workers.insert(hb.worker.clone(), worker);
        }
        let worker = self.workers.get_mut(&hb.worker).expect("inserted above");
        worker.last_seen_ms = now_ms;
        worker.capacity = hb.capacity;
        worker.draining = hb.draining;
        if worker.ready {
            self.reconcile(&hb, now_ms);
        } else {
            if hb.welcome == Some(worker.nonce) {
                worker.ready = true;
            } else {
                // Not echoed yet: the welcome may have gone out before the
                // subscription existed (slow joiner), so send it again.
                let body = FanoutMsg::Welcome(Welcome { nonce: worker.nonce }).encode();
                self.outbound.push_back(Outbound::new(worker_topic(&hb.worker), body));
            }
        }
    }

    /// Requeues orders the worker should hold but does not list: the
    /// dispatch was lost (PUB drops at its high-water mark) or refused. Only
    /// dispatches older than (liveness + 1) heartbeat intervals are judged,
    /// so one still on its way is not mistaken for a lost one.
    fn reconcile(&mut self, hb: &Heartbeat, now_ms: Millis) {
        let Some(worker) = self.workers.get(&hb.worker) else { return };
        // A heartbeat is judged by when it arrives, not when it was written,
        // so allow as much delay as liveness itself does (plus one interval).
        let grace_ms = self.config.heartbeat_interval_ms * (u64::from(self.config.heartbeat_liveness) + 1);
        let held: BTreeSet<&OrderKey> = hb.in_flight.iter().collect();
        let lost: Vec<OrderKey> = worker
            .in_flight
            .iter()
            .filter(|(key, h)| now_ms >= h.sent_ms + grace_ms && !held.contains(key))
            .map(|(key, _)| key.clone())
            .collect();
        let extended_ms = now_ms + self.config.ack_timeout_ms;
        if let Some(worker) = self.workers.get_mut(&hb.worker) {
            for key in &hb.in_flight {
                if let Some(h) = worker.in_flight.get_mut(key) {
                    h.deadline_ms = h.deadline_ms.max(extended_ms);
                }
            }
        }
        for key in lost {
            self.fail(key, format!("worker {} does not hold it (dispatch lost or refused)", hb.worker));
        }
    }

    fn touch(&mut self, worker: &str, incarnation: u64, now_ms: Millis) {
        if let Some(w) = self.workers.get_mut(worker) {
            if w.incarnation == incarnation {
                w.last_seen_ms = now_ms;
            }
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce_next = self.nonce_next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.nonce_next
    }

    fn remove_worker(&mut self, id: &str, why: &str) {
        let Some(worker) = self.workers.remove(id) else { return };
        for key in worker.in_flight.into_keys() {
            self.fail(key, format!("{why} ({id})"));
        }
    }

    /// A delivery attempt failed: requeue, or dead-letter once attempts are
    /// used up.
    fn fail(&mut self, key: OrderKey, reason: String) {
        let attempts = self.orders.get(&key).map_or(0, |o| o.attempts);
        if attempts >= self.config.max_attempts {
            let reason = format!("{reason}; gave up after {attempts} attempts");
            self.record(Event::DeadLettered { key, reason });
        } else {
            self.record(Event::Requeued { key, reason });
        }
    }

    // ------------------------------------------------------------ time

    /// Advances time: broker heartbeats, dead workers, expired partials.
    pub fn handle_timeout(&mut self, now_ms: Millis) {
        self.now_ms = now_ms;
        if now_ms >= self.heartbeat_due_ms {
            self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
            let body = FanoutMsg::Heartbeat(BrokerHeartbeat {
                incarnation: self.config.incarnation,
                interval_ms: self.config.heartbeat_interval_ms,
            })
            .encode();
            self.outbound.push_back(Outbound::new(BROADCAST_TOPIC.to_vec(), body));
        }
        let timeout = self.config.worker_timeout_ms();
        let dead: Vec<String> =
            self.workers.iter().filter(|(_, w)| now_ms >= w.last_seen_ms + timeout).map(|(id, _)| id.clone()).collect();
        for id in dead {
            self.counters.workers_expired += 1;
            self.remove_worker(&id, "worker missed its heartbeats");
        }
        let overdue: Vec<(OrderKey, String)> = self
            .workers
            .iter()
            .flat_map(|(id, w)| {
                w.in_flight.iter().filter(|(_, h)| now_ms >= h.deadline_ms).map(move |(k, _)| (k.clone(), id.clone()))
            })
            .collect();
        for (key, worker) in overdue {
            self.counters.ack_timeouts += 1;
            let reason = format!("no ack from worker {worker} within {} ms", self.config.ack_timeout_ms);
            self.fail(key, reason);
        }
        if now_ms >= self.partial_sweep_due_ms {
            self.partial_sweep_due_ms = now_ms + self.config.heartbeat_interval_ms;
            self.sweep_recent(now_ms);
            let age_max = self.config.partial_age_max_ms;
            let expired: Vec<(OrderKey, u64)> = self
                .partials
                .iter()
                .filter(|(_, p)| now_ms.saturating_sub(p.began_ms) > age_max)
                .map(|(k, p)| (k.clone(), now_ms - p.began_ms))
                .collect();
            for (key, age_ms) in expired {
                self.drop_partial(key, RejectReason::Expired { age_ms });
            }
        }
        self.pump();
    }

    // ------------------------------------------------------------ dispatch

    /// Sends pending orders to ready workers with free credits, the worker
    /// with the most free credits first (ties: lowest id, for determinism).
    fn pump(&mut self) {
        while let Some(key) = self.pending.front() {
            if !self.orders.get(key).is_some_and(|o| o.state == OrderState::Pending) {
                self.pending.pop_front(); // stale: acked or dead while queued
                continue;
            }
            let Some(worker) = self.choose_worker() else { break };
            let key = OrderKey::clone(&self.pending.pop_front().expect("front exists"));
            let attempt = self.orders[&key].attempts + 1;
            self.record(Event::Dispatched { key: key.clone(), worker: worker.clone(), attempt });
            let order = &self.orders[&key];
            let topic = worker_topic(&worker);
            let out = match (&order.items, order.stored) {
                (Some(items), _) => Outbound::new(topic, encode_dispatch(&key, attempt, attempt > 1, items)),
                (None, Some(from)) => Outbound { topic, body: Vec::new(), fill: Some(Fill { key, attempt, from }) },
                (None, None) => unreachable!("an order's payload is in RAM or in the journal: {key}"),
            };
            self.outbound.push_back(out);
        }
        self.spill();
    }

    /// Drops payloads from RAM, newest orders first, while the cache is
    /// over its budget. An order whose payload no single record holds (it
    /// came item by item) gets a `Restored` copy first; its items leave RAM
    /// when the copy is recorded ([`Core::payload_stored`]).
    fn spill(&mut self) {
        // Orders acknowledged while cached leave stale keys, mostly at the
        // front (the oldest go first): drop them, so the queue stays as
        // long as the cache holds orders.
        while let Some(key) = self.cached.front() {
            if self.orders.get(key).is_some_and(|o| o.items.is_some()) {
                break;
            }
            self.cached.pop_front();
        }
        while self.cached_bytes > self.config.payload_cache_bytes {
            let Some(key) = self.cached.pop_back() else { break };
            let Some(order) = self.orders.get_mut(&key) else { continue };
            let Some(items) = &order.items else { continue };
            if order.spilling {
                continue;
            }
            self.cached_bytes -= order.bytes;
            if order.stored.is_some() {
                order.items = None;
                continue;
            }
            order.spilling = true;
            if order.whole {
                continue; // its record is being written this turn
            }
            let dead = match &order.state {
                OrderState::Dead { reason } => Some(reason.clone()),
                _ => None,
            };
            let snapshot = Snapshot::Sealed { items: items.clone(), attempts: order.attempts, dead };
            // Not applied: live, the copy changes nothing (as compaction's).
            self.events.push_back(Event::Restored { key: OrderKey::clone(&key), snapshot });
        }
    }

    /// The journal now holds `key`'s whole payload at `at` (the record of
    /// an `Accepted` or `Restored` event). The IO loop calls this for every
    /// such record it appends, and replay for every one it reads.
    pub fn payload_stored(&mut self, key: &OrderKey, at: PayloadRef) {
        let Some(order) = self.orders.get_mut(key) else { return };
        order.stored = Some(at);
        if order.spilling {
            order.spilling = false;
            order.items = None; // counted out of the cache by `spill`
        }
    }

    /// Where the journal holds `key`'s payload, when RAM does not.
    pub fn payload_ref(&self, key: &OrderKey) -> Option<PayloadRef> {
        self.orders.get(key).filter(|o| o.items.is_none()).and_then(|o| o.stored)
    }

    fn choose_worker(&self) -> Option<String> {
        let mut best: Option<(&String, u32)> = None;
        for (id, w) in &self.workers {
            let free = w.free_credits();
            if w.ready && !w.draining && free > 0 && best.is_none_or(|(_, f)| free > f) {
                best = Some((id, free));
            }
        }
        best.map(|(id, _)| id.clone())
    }

    // ------------------------------------------------------------ apply

    fn record(&mut self, event: Event) {
        self.apply(&event);
        self.events.push_back(event);
    }

    /// The event that recreates `key`'s current state, for compaction;
    /// `None` when the order is resolved (acked or dropped).
    pub fn snapshot(&self, key: &OrderKey) -> Option<Event> {
        let snapshot = if let Some(&at_ms) = self.recent.get(key) {
            Snapshot::Acked { at_ms }
        } else if let Some(p) = self.partials.get(key) {
            Snapshot::Partial { items: p.items.iter().map(|(s, d)| (*s, d.clone())).collect() }
        } else {
            let order = self.orders.get(key)?;
            let dead = match &order.state {
                OrderState::Dead { reason } => Some(reason.clone()),
                _ => None,
            };
            // Without its items in RAM the copy is filled from the journal by
            // the caller (see `payload_ref`).
            Snapshot::Sealed { items: order.items.clone().unwrap_or_default(), attempts: order.attempts, dead }
        };
        Some(Event::Restored { key: key.clone(), snapshot })
    }

    /// Dead letters, sorted by key, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        let mut dead: Vec<DeadLetter> = self
            .orders
            .iter()
            .filter_map(|(key, order)| match &order.state {
                OrderState::Dead { reason } => Some(DeadLetter {
                    producer: key.producer.clone(),
                    id: key.id.clone(),
                    attempts: order.attempts,
                    reason: reason.clone(),
                    items: order.count as usize,
                    bytes: order.bytes,
                }),
                _ => None,
            })
            .collect();
        dead.sort_by(|a, b| (&a.producer, &a.id).cmp(&(&b.producer, &b.id)));
        dead.truncate(limit);
        dead
    }

    /// Sends dead letters back to the queue with fresh attempts: one order,
    /// or all of them with `None`. Returns how many were revived.
    pub fn retry_dead(&mut self, which: Option<&OrderKey>, now_ms: Millis) -> usize {
        self.now_ms = now_ms;
        let keys: Vec<OrderKey> = match which {
            Some(key) => vec![key.clone()],
            None => {
                let mut keys: Vec<OrderKey> = self.orders.keys().map(|k| OrderKey::clone(k)).collect();
                keys.sort();
                keys
            }
        };
        let mut revived = 0;
        for key in keys {
            if self.orders.get(&key).is_some_and(|o| matches!(o.state, OrderState::Dead { .. })) {
                self.record(Event::Revived { key });
                revived += 1;
            }
        }
        self.pump();
        revived
    }

    /// Ends a replay: no worker is known after a restart, so every order
    /// that was in flight is pending again (first in line, as the oldest
    /// work), and partial orders get their full age limit from `now_ms`
    /// (their recorded times came from the previous process's clock).
    pub fn finish_recovery(&mut self, now_ms: Millis) {
        self.now_ms = now_ms;
        self.replaying = false;
        for partial in self.partials.values_mut() {
            partial.began_ms = now_ms;
        }
        let mut in_flight: Vec<&Shared> = self
            .orders
            .iter()
            .filter(|(_, o)| matches!(o.state, OrderState::InFlight { .. }))
            .map(|(k, _)| k)
            .collect();
        in_flight.sort(); // HashMap order is random; keep recovery deterministic
        let keys: Vec<Shared> = in_flight.into_iter().cloned().collect();
        for key in keys.into_iter().rev() {
            if let Some(order) = self.orders.get_mut(&key) {
                order.state = OrderState::Pending;
                self.in_flight_len -= 1;
                self.pending_len += 1;
                self.pending.push_front(key);
            }
        }
        // An order whose last allowed attempt was in flight at the crash (or
        // copied forward in that state) has used its attempts: dead-letter
        // it rather than deliver it once more per restart.
        let max = self.config.max_attempts;
        let mut exhausted: Vec<(OrderKey, u32)> = self
            .orders
            .iter()
            .filter(|(_, o)| o.state == OrderState::Pending && o.attempts >= max)
            .map(|(k, o)| (OrderKey::clone(k), o.attempts))
            .collect();
        exhausted.sort();
        for (key, attempts) in exhausted {
            let reason = format!("the broker restarted during its last attempt; gave up after {attempts} attempts");
            self.record(Event::DeadLettered { key, reason });
        }
        self.pump();
    }

    /// Restarts a remembered key's window at the current time.
    fn touch_recent(&mut self, key: &OrderKey) {
        if self.recent.get(key) != Some(&self.now_ms) {
            self.remember(key, self.now_ms);
        }
    }

    fn remember(&mut self, key: &OrderKey, at_ms: Millis) {
        self.recent.insert(key.clone(), at_ms);
        self.recent_order.push_back((at_ms, key.clone()));
    }

    /// Records `Forgotten` for keys past the dedup window (or beyond the
    /// key bound, oldest first).
    fn sweep_recent(&mut self, now_ms: Millis) {
        while let Some((at_ms, key)) = self.recent_order.front() {
            let current = self.recent.get(key) == Some(at_ms);
            let expired = now_ms.saturating_sub(*at_ms) >= self.config.dedup_window_ms;
            let over = self.recent.len() > self.config.dedup_keys_max;
            if current && !(expired || over) {
                break;
            }
            let (_, key) = self.recent_order.pop_front().expect("front exists");
            if current {
                self.record(Event::Forgotten { key });
            }
        }
    }

    /// Makes room for `orders` sealed orders at once (before a replay, so
    /// the table does not grow by rehashing a million keys).
    pub fn reserve(&mut self, orders: usize) {
        self.orders.reserve(orders.min(self.config.pending_orders_max));
    }

    /// Sets the clock before a replay, so replayed acknowledgements start
    /// their dedup window at recovery time.
    pub fn start_replay(&mut self, now_ms: Millis) {
        self.now_ms = now_ms;
        self.replaying = true;
    }

    /// Keys in the dedup window.
    pub fn remembered_keys(&self) -> usize {
        self.recent.len()
    }

    /// Forgets all there is about `key` (for [`Event::Restored`]).
    fn forget(&mut self, key: &OrderKey) {
        if let Some(p) = self.partials.remove(key) {
            self.held_bytes -= p.bytes;
            self.partial_bytes -= p.bytes;
        }
        if let Some(order) = self.orders.remove(key) {
            self.leave_state(key, &order.state);
            self.held_bytes -= order.bytes;
            self.uncache(&order);
        }
    }

    /// Adds a sealed order; its key is shared with the queues.
    fn insert_order(&mut self, key: &OrderKey, order: Order) -> Shared {
        let shared = Arc::new(key.clone());
        if order.items.is_some() {
            self.cached.push_back(Arc::clone(&shared));
        }
        self.orders.insert(Arc::clone(&shared), order);
        shared
    }

    /// The shared key of a known order.
    fn shared(&self, key: &OrderKey) -> Shared {
        Arc::clone(self.orders.get_key_value(key).expect("the order is known").0)
    }

    /// An order leaves: its items leave the cache.
    fn uncache(&mut self, order: &Order) {
        if order.items.is_some() && !order.spilling {
            self.cached_bytes -= order.bytes;
        }
    }

    /// A new pending order, counted in the cache while its items are in
    /// RAM. `whole`: one record holds its whole payload.
    fn new_order(&mut self, items: Option<Vec<ByteBuf>>, bytes: u64, count: u32, whole: bool) -> Order {
        if items.is_some() {
            self.cached_bytes += bytes;
        }
        Order { items, stored: None, spilling: false, whole, count, bytes, attempts: 0, state: OrderState::Pending }
    }

    /// A new order whose whole payload `items` one record holds (`Accepted`,
    /// `Restored`), counted in `held_bytes`: in RAM live, left on disk
    /// during a replay (`payload_stored` tells where).
    fn whole_order(&mut self, items: &[ByteBuf]) -> Order {
        let bytes: u64 = items.iter().map(|d| d.len() as u64).sum();
        self.held_bytes += bytes;
        let kept = (!self.replaying).then(|| items.to_vec());
        self.new_order(kept, bytes, items.len() as u32, true)
    }

    fn restore(&mut self, key: &OrderKey, snapshot: &Snapshot) {
        self.forget(key);
        self.recent.remove(key);
        match snapshot {
            Snapshot::Acked { at_ms } => self.remember(key, *at_ms),
            Snapshot::Partial { items } => {
                let bytes: u64 = items.iter().map(|(_, d)| d.len() as u64).sum();
                self.held_bytes += bytes;
                self.partial_bytes += bytes;
                let partial = Partial { began_ms: self.now_ms, items: items.iter().cloned().collect(), bytes };
                self.partials.insert(key.clone(), partial);
            }
            Snapshot::Sealed { items, attempts, dead } => {
                let mut order = self.whole_order(items);
                order.attempts = *attempts;
                order.state = match dead {
                    Some(reason) => OrderState::Dead { reason: reason.clone() },
                    None => OrderState::Pending,
                };
                let shared = self.insert_order(key, order);
                if dead.is_some() {
                    self.dead_len += 1;
                } else {
                    self.pending_len += 1;
                    self.pending.push_back(shared);
                }
            }
        }
    }

    /// Applies one state change. The live path and journal replay both come
    /// through here, so they cannot disagree.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Restored { key, snapshot } => self.restore(key, snapshot),
            Event::Revived { key } => {
                let Some(order) = self.orders.get_mut(key) else { return };
                if !matches!(order.state, OrderState::Dead { .. }) {
                    return;
                }
                order.state = OrderState::Pending;
                order.attempts = 0;
                self.dead_len -= 1;
                self.pending_len += 1;
                let shared = self.shared(key);
                self.pending.push_back(shared);
                self.counters.orders_revived += 1;
            }
            Event::Begun { key, at_ms } => {
                let partial = Partial { began_ms: *at_ms, items: BTreeMap::new(), bytes: 0 };
                self.partials.insert(key.clone(), partial);
            }
            Event::ItemStored { key, seq, data } => {
                if let Some(p) = self.partials.get_mut(key) {
                    p.bytes += data.len() as u64;
                    self.held_bytes += data.len() as u64;
                    self.partial_bytes += data.len() as u64;
                    p.items.insert(*seq, data.clone());
                }
            }
            Event::Sealed { key, count } => {
                let Some(partial) = self.partials.remove(key) else { return };
                assert_eq!(partial.items.len(), *count as usize, "sealed with a gap: {key}");
                self.partial_bytes -= partial.bytes;
                // No single record holds these items: they stay in RAM, also
                // through a replay, until `spill` writes a copy.
                let items = partial.items.into_values().collect();
                let order = self.new_order(Some(items), partial.bytes, *count, false);
                let shared = self.insert_order(key, order);
                self.pending.push_back(shared);
                self.pending_len += 1;
                self.counters.orders_sealed += 1;
            }
            Event::Accepted { key, items } => {
                if let Some(p) = self.partials.remove(key) {
                    self.held_bytes -= p.bytes;
                    self.partial_bytes -= p.bytes;
                }
                if self.orders.contains_key(key) {
                    return;
                }
                let order = self.whole_order(items);
                let shared = self.insert_order(key, order);
                self.pending.push_back(shared);
                self.pending_len += 1;
                self.counters.orders_sealed += 1;
            }
            Event::Dropped { key, .. } => {
                if let Some(p) = self.partials.remove(key) {
                    self.held_bytes -= p.bytes;
                    self.partial_bytes -= p.bytes;
                }
            }
            Event::Dispatched { key, worker, attempt } => {
                let Some(order) = self.orders.get_mut(key) else { return };
                if order.state == OrderState::Pending {
                    self.pending_len -= 1;
                    self.in_flight_len += 1;
                }
                order.attempts = *attempt;
                order.state = OrderState::InFlight { worker: worker.clone() };
                if let Some(w) = self.workers.get_mut(worker) {
                    let held = Held { sent_ms: self.now_ms, deadline_ms: self.now_ms + self.config.ack_timeout_ms };
                    w.in_flight.insert(key.clone(), held);
                }
                self.counters.dispatches += 1;
                if *attempt > 1 {
                    self.counters.redeliveries += 1;
                }
            }
            Event::Acked { key } => {
                // Remembered even when the order itself is unknown: on replay
                // its earlier records may be compacted away. The time is the
                // input's (at replay: the recovery's, so a window restarts in
                // full after a restart — never shorter).
                self.remember(key, self.now_ms);
                let Some(order) = self.orders.remove(key) else { return };
                self.leave_state(key, &order.state);
                self.held_bytes -= order.bytes;
                self.uncache(&order);
                self.counters.orders_acked += 1;
            }
            Event::Forgotten { key } => {
                self.recent.remove(key);
            }
            Event::Requeued { key, .. } => {
                let Some(order) = self.orders.get_mut(key) else { return };
                let old = std::mem::replace(&mut order.state, OrderState::Pending);
                self.leave_state(key, &old);
                self.pending_len += 1;
                // Redeliveries go first: they are the oldest work.
                let shared = self.shared(key);
                self.pending.push_front(shared);
            }
            Event::DeadLettered { key, reason } => {
                let Some(order) = self.orders.get_mut(key) else { return };
                let old = std::mem::replace(&mut order.state, OrderState::Dead { reason: reason.clone() });
                self.leave_state(key, &old);
                self.dead_len += 1;
                self.counters.orders_dead_lettered += 1;
            }
        }
    }

    /// Undoes the bookkeeping of the state an order leaves.
    fn leave_state(&mut self, key: &OrderKey, state: &OrderState) {
        match state {
            OrderState::Pending => self.pending_len -= 1,
            OrderState::InFlight { worker } => {
                self.in_flight_len -= 1;
                if let Some(w) = self.workers.get_mut(worker) {
                    w.in_flight.remove(key);
                }
            }
            OrderState::Dead { .. } => self.dead_len -= 1,
        }
    }
}

pub mod codec;
#[cfg(test)]
mod tests;
