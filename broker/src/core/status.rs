//! The operators' view: [`Status`], [`Counters`], the dead-letter list and
//! `dlq retry`.

use orderly_common::OrderKey;
use serde::{Deserialize, Serialize};

use super::{Core, Event, Millis, OrderState};

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
}

impl Core {
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
        self.after_input();
        revived
    }
}
