//! The operators' view: [`Status`], [`Counters`], the dead-letter list and
//! `dlq retry`.

use orderly_common::OrderKey;
use serde::{Deserialize, Serialize};

use super::{Core, Event, Millis, Order, OrderState};

fn dead_letter(key: &OrderKey, order: &Order) -> DeadLetter {
    DeadLetter {
        producer: key.producer.clone(),
        id: key.id.clone(),
        attempts: order.attempts(),
        reason: order.dead_reason().unwrap_or_default(),
        items: order.count as usize,
        bytes: u64::from(order.bytes),
        last_worker: order.holder().map(str::to_owned),
        first_seen_unix_ms: known(order.first_seen_unix_ms),
        dead_since_unix_ms: known(order.dead_since_unix_ms()),
    }
}

/// A Unix time the journal may not know (0).
fn known(unix_ms: u64) -> Option<u64> {
    (unix_ms > 0).then_some(unix_ms)
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
    /// Acks and nacks from a worker that does not hold the order's
    /// current dispatch (nor, when none is current, held its latest one):
    /// refused, the order is left as it was.
    #[serde(default)]
    pub acks_refused: u64,
    /// New orders rejected (`limit_reached`) because their producer had
    /// `pending_orders_per_producer_max` sealed, unacknowledged orders.
    #[serde(default)]
    pub producer_limit_rejects: u64,
    /// Dead letters deleted by an operator (`dlq delete`).
    #[serde(default)]
    pub orders_discarded: u64,
    /// Dispatches a worker returned unrun (no attempt spent).
    #[serde(default)]
    pub orders_returned: u64,
    /// Attempts taken back at the attempt time cap.
    #[serde(default)]
    pub attempt_timeouts: u64,
}

/// A dead-lettered order, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub producer: String,
    pub id: String,
    pub attempts: u32,
    /// The last failure's reason.
    pub reason: String,
    pub items: usize,
    pub bytes: u64,
    /// The worker of its latest dispatch, if known.
    #[serde(default)]
    pub last_worker: Option<String>,
    /// When the broker sealed it (Unix ms), if known.
    #[serde(default)]
    pub first_seen_unix_ms: Option<u64>,
    /// When it was dead-lettered (Unix ms), if known.
    #[serde(default)]
    pub dead_since_unix_ms: Option<u64>,
}

/// One page of dead letters, in key order (see [`Core::dead_letters_page`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    /// Dead letters in all, not only on this page.
    pub total: usize,
    pub dead_letters: Vec<DeadLetter>,
    /// The last key of this page, to pass as `after` for the next one;
    /// `None` on the last page.
    pub next_after: Option<OrderKey>,
}

/// Where a sealed order is, for `orders show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderPlace {
    /// Waiting for a worker.
    Pending,
    /// Waiting for its retry delay to pass.
    Delayed,
    /// Dispatched, not yet acknowledged.
    InFlight,
    /// Dead-lettered.
    Dead,
}

/// One sealed order, for operators (`orders show`, `dlq show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    pub producer: String,
    pub id: String,
    pub place: OrderPlace,
    /// Deliveries so far.
    pub attempts: u32,
    pub items: usize,
    pub bytes: u64,
    /// The worker holding it (in flight) or of its latest dispatch.
    pub worker: Option<String>,
    /// The last failure's reason, if it failed before.
    pub last_reason: Option<String>,
    #[serde(default)]
    pub first_seen_unix_ms: Option<u64>,
    #[serde(default)]
    pub dead_since_unix_ms: Option<u64>,
    /// Delayed: how long until it may be dispatched again.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
}

/// Where a sealed order's items are (see [`Core::order_items`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderItems {
    InMemory(Vec<serde_bytes::ByteBuf>),
    /// Only the journal holds them: read them from this record.
    Journal(super::PayloadRef),
}

/// A snapshot of one worker for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub ready: bool,
    pub capacity: u32,
    pub in_flight: u32,
    /// Orders the broker may still send it now.
    #[serde(default)]
    pub credits: u32,
    #[serde(default)]
    pub draining: bool,
    /// Its handler cannot run, and why (the worker said so): it is sent
    /// nothing until it recovers.
    #[serde(default)]
    pub broken: Option<String>,
}

/// One worker's numbers for `/metrics` (beyond `/status`'s keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMetrics {
    pub id: String,
    /// Orders dispatched to it, not yet acknowledged.
    pub in_flight: u32,
    /// Its capacity less the orders it holds (ours and those its
    /// heartbeat lists besides), whether or not it takes orders now.
    pub credits: u32,
    /// When its latest message arrived.
    pub last_seen_ms: Millis,
    pub broken: bool,
}

/// A snapshot of the core for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub partial_orders: usize,
    pub pending_orders: usize,
    /// Pending orders waiting for their retry delay (counted in
    /// `pending_orders` too).
    #[serde(default)]
    pub delayed_orders: usize,
    pub in_flight_orders: usize,
    pub dead_letters: usize,
    /// Item bytes of partial and live orders. This and the two byte counts
    /// below include `limits::ITEM_OVERHEAD_BYTES` for every item: what
    /// the byte bounds are charged, not the bare payload.
    pub held_bytes: u64,
    /// Payload bytes of sealed orders in RAM; the rest are read back from
    /// the journal to dispatch.
    pub cached_bytes: u64,
    /// Item bytes of partial orders (in RAM).
    pub partial_bytes: u64,
    pub workers: Vec<WorkerStatus>,
    pub counters: Counters,
    /// When an ack last retired an order (Unix ms), `None` before the
    /// first: a benchmark's end without polling fast. Since 0.5.
    #[serde(default)]
    pub last_ack_unix_ms: Option<u64>,
}

impl Core {
    pub fn status(&self) -> Status {
        Status {
            partial_orders: self.partials.len(),
            pending_orders: self.pending_len,
            delayed_orders: self.delayed.len(),
            in_flight_orders: self.in_flight_len,
            dead_letters: self.dead_len,
            held_bytes: self.held_bytes,
            cached_bytes: self.cached_bytes,
            partial_bytes: self.partial_bytes,
            workers: self
                .workers
                .iter()
                .map(|(id, w)| WorkerStatus {
                    id: id.to_string(),
                    ready: w.ready,
                    capacity: w.capacity,
                    in_flight: w.in_flight.len() as u32,
                    credits: if w.takes_orders() { w.free_credits() } else { 0 },
                    draining: w.draining,
                    broken: w.broken.clone(),
                })
                .collect(),
            counters: self.counters.clone(),
            last_ack_unix_ms: known(self.last_ack_unix_ms),
        }
    }

    /// Every worker's numbers for `/metrics`, by id.
    pub fn worker_metrics(&self) -> Vec<WorkerMetrics> {
        self.workers
            .iter()
            .map(|(id, w)| WorkerMetrics {
                id: id.to_string(),
                in_flight: w.in_flight.len() as u32,
                credits: w.free_credits(),
                last_seen_ms: w.last_seen_ms,
                broken: w.broken.is_some(),
            })
            .collect()
    }

    /// When the oldest sealed, unacknowledged order (pending, delayed or in
    /// flight; not dead) was sealed, in Unix ms; `None` when there is none
    /// or no such order's time is known (journals older than 0.3). A scan
    /// of the live orders: for a scrape, not for every turn.
    pub fn oldest_live_sealed_unix_ms(&self) -> Option<u64> {
        self.orders
            .values()
            .filter(|o| !matches!(o.state, OrderState::Dead) && o.first_seen_unix_ms > 0)
            .map(|o| o.first_seen_unix_ms)
            .min()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Dead letters, sorted by key, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        self.dead_letters_page(None, limit).dead_letters
    }

    /// Dead letters in key order after `after` (from the first with
    /// `None`), at most `limit`, with the total and where the next page
    /// starts.
    pub fn dead_letters_page(&self, after: Option<&OrderKey>, limit: usize) -> DeadLetterPage {
        let mut dead: Vec<(OrderKey, &Order)> = self
            .orders
            .iter()
            .filter(|(_, order)| matches!(order.state, OrderState::Dead))
            .map(|(key, order)| (key.to_key(), order))
            .collect();
        let total = dead.len();
        dead.retain(|(key, _)| after.is_none_or(|after| key > after));
        dead.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = dead.len() > limit;
        dead.truncate(limit);
        let next_after = if more { dead.last().map(|(key, _)| key.clone()) } else { None };
        let dead_letters = dead.into_iter().map(|(key, order)| dead_letter(&key, order)).collect();
        DeadLetterPage { total, dead_letters, next_after }
    }

    /// A sealed order (pending, delayed, in flight or dead), for operators.
    pub fn order_info(&self, key: &OrderKey) -> Option<OrderInfo> {
        let order = self.orders.get(key)?;
        let (place, worker) = match &order.state {
            OrderState::Pending if order.retry_at_ms().is_some() => {
                (OrderPlace::Delayed, order.holder().map(str::to_owned))
            }
            OrderState::Pending => (OrderPlace::Pending, order.holder().map(str::to_owned)),
            OrderState::InFlight => (OrderPlace::InFlight, order.holder().map(str::to_owned)),
            OrderState::Dead => (OrderPlace::Dead, order.holder().map(str::to_owned)),
        };
        Some(OrderInfo {
            producer: key.producer.clone(),
            id: key.id.clone(),
            place,
            attempts: order.attempts(),
            items: order.count as usize,
            bytes: u64::from(order.bytes),
            worker,
            last_reason: order.last_reason().map(str::to_owned).or_else(|| order.dead_reason()),
            first_seen_unix_ms: known(order.first_seen_unix_ms),
            dead_since_unix_ms: known(order.dead_since_unix_ms()),
            retry_in_ms: order.retry_at_ms().map(|at| at.saturating_sub(self.now_ms)),
        })
    }

    /// A sealed order's items: in RAM, or where the journal holds them.
    pub fn order_items(&self, key: &OrderKey) -> Option<OrderItems> {
        let order = self.orders.get(key)?;
        match (&order.items, order.stored()) {
            (Some(items), _) => Some(OrderItems::InMemory(items.to_vec())),
            (None, Some(at)) => Some(OrderItems::Journal(at.at())),
            (None, None) => None,
        }
    }

    /// Deletes dead letters (journaled as [`Event::Discarded`]): one
    /// order, or all of them with `None`. Returns how many were deleted.
    pub fn discard_dead(&mut self, which: Option<&OrderKey>, now_ms: Millis) -> usize {
        self.now_ms = now_ms;
        let mut keys: Vec<OrderKey> = match which {
            Some(key) => vec![key.clone()],
            None => self.orders.keys().collect(),
        };
        keys.sort();
        let mut discarded = 0;
        for key in keys {
            if self.orders.get(&key).is_some_and(|o| matches!(o.state, OrderState::Dead)) {
                self.record(Event::Discarded { key });
                discarded += 1;
            }
        }
        self.after_input();
        discarded
    }

    /// Sends dead letters back to the queue with fresh attempts: one order,
    /// or all of them with `None`. Returns how many were revived.
    pub fn retry_dead(&mut self, which: Option<&OrderKey>, now_ms: Millis) -> usize {
        self.now_ms = now_ms;
        let keys: Vec<OrderKey> = match which {
            Some(key) => vec![key.clone()],
            None => {
                let mut keys: Vec<OrderKey> = self.orders.keys().collect();
                keys.sort();
                keys
            }
        };
        let mut revived = 0;
        for key in keys {
            if self.orders.get(&key).is_some_and(|o| matches!(o.state, OrderState::Dead)) {
                self.record(Event::Revived { key });
                revived += 1;
            }
        }
        self.pump();
        self.after_input();
        revived
    }
}
