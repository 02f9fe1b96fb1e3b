//! Journal replay and the restart that ends it. Replay itself is
//! [`Core::apply`] of every record; this is what comes before and after.
//! Also the compaction anchors the core keeps for `crate::compaction`:
//! each key the core holds (partial, sealed or remembered) carries the
//! journal segment of its latest anchoring record, in its own entry.

use std::num::NonZeroU64;

use orderly_common::OrderKey;

use super::{Core, Event, Millis, OrderState};

impl Core {
    /// Anchors `key` in journal segment `segment`, wherever the core holds
    /// it. The anchor it had (`Some(None)`: none yet), or `None` when the
    /// core no longer holds the key (it left after the record was made, in
    /// the same turn): then nothing is live to anchor.
    pub fn anchor(&mut self, key: &OrderKey, segment: NonZeroU64) -> Option<Option<NonZeroU64>> {
        if let Some(partial) = self.partials.get_mut(key) {
            return Some(partial.anchor.replace(segment));
        }
        match self.orders.set_anchor(key, segment) {
            Some(old) => Some(old),
            None => self.recent.set_anchor(key, segment),
        }
    }

    /// [`Core::anchor`] for the record of an acknowledgement (`Acked`,
    /// `Discarded`): the key is in the dedup window unless it left in the
    /// same turn, and a remembered key is never partial or sealed too
    /// (`invariants`), so the window is probed first.
    pub fn anchor_remembered(&mut self, key: &OrderKey, segment: NonZeroU64) -> Option<Option<NonZeroU64>> {
        match self.recent.set_anchor(key, segment) {
            Some(old) => Some(old),
            None => self.anchor(key, segment),
        }
    }

    /// Hands `released` the anchor of every key that left since the last
    /// call (dropped, forgotten, replaced by a copy).
    pub fn drain_released_anchors(&mut self, released: impl FnMut(NonZeroU64)) {
        self.released_anchors
            .drain(..)
            .chain(self.orders.drain_released())
            .chain(self.recent.drain_released())
            .for_each(released);
    }

    /// The keys anchored in `segment`, sorted (compaction copies them
    /// forward in this order, so runs repeat).
    pub fn anchored_in(&self, segment: NonZeroU64) -> Vec<OrderKey> {
        let partials = self.partials.iter().filter(|(_, p)| p.anchor == Some(segment)).map(|(k, _)| (**k).clone());
        let orders = self.orders.anchored_in(segment).map(|k| k.to_key());
        let recent = self.recent.anchored_in(segment).map(|k| k.to_key());
        let mut keys: Vec<OrderKey> = partials.chain(orders).chain(recent).collect();
        keys.sort();
        keys
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
        self.requeue_in_flight();
        self.dead_letter_exhausted();
        self.pump();
        self.after_input();
    }

    /// In flight at the crash: pending again, first in line. Not an event
    /// (worker liveness is not recorded), so the counters move here.
    fn requeue_in_flight(&mut self) {
        let mut in_flight: Vec<OrderKey> =
            self.orders.iter().filter(|(_, o)| o.state == OrderState::InFlight).map(|(k, _)| k.to_key()).collect();
        in_flight.sort(); // table order depends on history; keep recovery deterministic
        for key in in_flight.into_iter().rev() {
            if let Some(order) = self.orders.get_mut(&key) {
                order.state = OrderState::Pending;
                self.in_flight_len -= 1;
                self.pending_len += 1;
                let handle = self.orders.handle(&key).expect("just found");
                self.pending.push_front(handle);
            }
        }
    }

    /// An order whose last allowed attempt was in flight at the crash (or
    /// copied forward in that state) has used its attempts: dead-letter it
    /// rather than deliver it once more per restart.
    fn dead_letter_exhausted(&mut self) {
        let max = self.config.max_attempts;
        let mut exhausted: Vec<(OrderKey, u32)> = self
            .orders
            .iter()
            .filter(|(_, o)| o.state == OrderState::Pending && o.attempts() >= max)
            .map(|(k, o)| (k.to_key(), o.attempts()))
            .collect();
        exhausted.sort();
        for (key, attempts) in exhausted {
            let reason = format!("the broker restarted during its last attempt; gave up after {attempts} attempts");
            let at_unix_ms = self.now_unix_ms();
            self.record(Event::DeadLettered { key, reason, at_unix_ms });
        }
    }
}
