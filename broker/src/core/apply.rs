//! [`Core::apply`]: the only code that changes order state, one function per
//! event kind, and the bookkeeping of the tables and their derived counters
//! (`invariants` re-checks them). The live path and journal replay both come
//! through here, so they cannot disagree.

use std::sync::Arc;

use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

use super::{
    charge, Anchored, Core, Event, Handle, Held, Millis, Notice, Order, OrderState, Partial, PartialItems, Payload,
    Place, Remembered, Snapshot, WorkerId,
};

impl Core {
    /// Applies `event` and queues it to be recorded.
    pub(super) fn record(&mut self, event: Event) {
        self.apply(&event);
        if let Event::DeadLettered { key, reason, .. } = &event {
            let attempts = self.orders.get(key).map_or(0, |o| o.attempts());
            self.notify(Notice::DeadLettered { key: key.clone(), attempts, reason: reason.clone() });
        }
        self.events.push_back(event);
    }

    /// Applies one state change. The live path and journal replay both come
    /// through here, so they cannot disagree.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Restored { key, snapshot } => self.restore(key, snapshot),
            Event::Revived { key } => self.apply_revived(key),
            Event::Begun { key, at_ms } => self.apply_begun(key, *at_ms),
            Event::ItemStored { key, seq, data } => self.apply_item_stored(key, *seq, data),
            Event::Sealed { key, count, at_unix_ms } => self.apply_sealed(key, *count, *at_unix_ms),
            Event::Accepted { key, items, at_unix_ms } => self.apply_accepted(key, items, *at_unix_ms),
            Event::AcceptedBatch { orders, at_unix_ms } => {
                for order in orders {
                    self.apply_accepted(&order.key, &order.items, *at_unix_ms);
                }
            }
            Event::Dropped { key, .. } => self.remove_partial(key),
            Event::Dispatched { key, worker, attempt } => self.apply_dispatched(key, worker, *attempt),
            Event::Acked { key } => self.apply_acked(key),
            Event::Discarded { key } => self.apply_discarded(key),
            Event::Forgotten { key } => {
                self.recent.remove(key);
            }
            Event::Requeued { key, reason, refunded, delay_ms } => {
                self.apply_requeued(key, reason, *refunded, *delay_ms)
            }
            Event::DeadLettered { key, reason, at_unix_ms } => self.apply_dead_lettered(key, reason, *at_unix_ms),
        }
    }

    fn apply_revived(&mut self, key: &OrderKey) {
        let Some(handle) = self.orders.handle(key) else { return };
        let order = self.orders.by_handle_mut(handle).expect("found above");
        if order.state != OrderState::Dead {
            return;
        }
        order.state = OrderState::Pending;
        order.set_attempts(0);
        if let Some(history) = order.history.as_mut() {
            history.dead_since_unix_ms = 0;
        }
        order.set_queued(self.now_ms);
        self.dead_len -= 1;
        self.enter_pending(key);
        self.pending.push_back(handle);
        self.counters.orders_revived += 1;
    }

    fn apply_begun(&mut self, key: &OrderKey, at_ms: Millis) {
        let partial = Partial { began_ms: at_ms, items: PartialItems::default(), bytes: 0, anchor: None };
        self.insert_partial(key, partial);
    }

    /// Adds a partial order; one it replaces releases its anchor.
    fn insert_partial(&mut self, key: &OrderKey, partial: Partial) {
        if let Some(old) = self.partials.insert(Arc::new(key.clone()), partial) {
            self.released_anchors.extend(old.anchor);
        }
    }

    fn apply_item_stored(&mut self, key: &OrderKey, seq: u32, data: &ByteBuf) {
        if let Some(p) = self.partials.get_mut(key) {
            let before = p.charge();
            p.bytes += data.len() as u64;
            if let Some(old) = p.items.insert(seq, data) {
                p.bytes -= old as u64; // replay of a seq it holds
            }
            let after = p.charge();
            self.held_bytes = self.held_bytes + after - before;
            self.partial_bytes = self.partial_bytes + after - before;
        }
    }

    fn apply_sealed(&mut self, key: &OrderKey, count: u32, at_unix_ms: u64) {
        let Some(partial) = self.partials.remove(key) else { return };
        assert_eq!(partial.items.len(), count as usize, "sealed with a gap: {key}");
        // Its bytes stay held: they move from the partial to the order.
        self.partial_bytes -= partial.charge();
        // No single record holds these items: they stay in RAM, also
        // through a replay, until `spill` writes a copy.
        // The items that came in order are already in the payload's buffer.
        let items = partial.items.into_payload();
        let mut order = self.new_order(Some(items), partial.bytes, count, false);
        order.first_seen_unix_ms = at_unix_ms;
        let handle = self.insert_order(key, order);
        // Still anchored where it began.
        self.orders.carry_anchor(handle, partial.anchor);
        self.pending.push_back(handle);
        self.enter_pending(key);
        self.counters.orders_sealed += 1;
    }

    pub(super) fn apply_accepted(&mut self, key: &OrderKey, items: &Payload, at_unix_ms: u64) {
        self.remove_partial(key);
        if self.orders.contains_key(key) {
            return;
        }
        let mut order = self.whole_order(items);
        order.first_seen_unix_ms = at_unix_ms;
        let handle = self.insert_order(key, order);
        self.pending.push_back(handle);
        self.enter_pending(key);
        self.counters.orders_sealed += 1;
    }

    fn apply_dispatched(&mut self, key: &OrderKey, worker: &str, attempt: u32) {
        let Some(handle) = self.orders.handle(key) else { return };
        // Live, only orders past their delay are dispatched; a replay meets
        // the delay's end only as this dispatch.
        self.undelay(key, handle);
        let order = self.orders.by_handle_mut(handle).expect("found above");
        if order.state == OrderState::Pending {
            self.pending_len -= 1;
            self.in_flight_len += 1;
        }
        order.set_attempts(attempt);
        order.state = OrderState::InFlight;
        // The known worker's id is shared, not copied (no allocation live;
        // a replay's dispatches name workers no longer known).
        let holder = match self.workers.get_key_value(worker) {
            Some((id, _)) => id.clone(),
            None => WorkerId::from(worker),
        };
        order.history_mut().holder = Some(holder);
        if let Some(w) = self.workers.get_mut(worker) {
            let held = Held { sent_ms: self.now_ms, deadline_ms: self.now_ms + self.config.ack_timeout_ms };
            // A key it listed as held besides is counted once, as ours now.
            if !w.foreign.is_empty() {
                w.foreign.remove(key);
            }
            w.in_flight.insert(handle, held);
        }
        self.counters.dispatches += 1;
        if attempt > 1 {
            self.counters.redeliveries += 1;
        }
    }

    fn apply_acked(&mut self, key: &OrderKey) {
        if self.retire(key) {
            self.counters.orders_acked += 1;
            self.last_ack_unix_ms = self.now_unix_ms();
        }
    }

    fn apply_discarded(&mut self, key: &OrderKey) {
        if self.retire(key) {
            self.counters.orders_discarded += 1;
        }
    }

    /// An order is done (acknowledged, or deleted by an operator): it
    /// leaves, and its key is remembered for the dedup window — even when
    /// the order itself is unknown: on replay its earlier records may be
    /// compacted away. The time is the input's (at replay: the recovery's,
    /// so a window restarts in full after a restart — never shorter).
    /// False if the order was unknown.
    fn retire(&mut self, key: &OrderKey) -> bool {
        let remembered = self.remember(key, self.now_ms);
        let Some((handle, order)) = self.orders.take(key) else { return false };
        self.leave_delayed(key, order.retry_at_ms());
        // Live on in the dedup window: still anchored until its `Acked` or
        // `Discarded` record anchors it anew.
        self.recent.carry_anchor(remembered, order.anchor());
        self.leave_state(key, handle, order.state, order.in_flight_to());
        self.held_bytes -= order.charge();
        self.uncache(&order);
        true
    }

    fn apply_requeued(&mut self, key: &OrderKey, reason: &str, refunded: bool, delay_ms: u64) {
        let Some(handle) = self.orders.handle(key) else { return };
        let order = self.orders.by_handle_mut(handle).expect("found above");
        match order.state {
            OrderState::Dead => return,
            // Only in a replay: a `Restored` copy written while the order
            // was in flight restores it pending, with the attempt counted.
            // The refund and the delay still apply (a delayed order's key
            // left in the queue is skipped as stale by `pump`).
            OrderState::Pending => {
                if refunded {
                    order.set_attempts(order.attempts().saturating_sub(1));
                }
                order.history_mut().last_reason = Some(reason.to_owned());
                if delay_ms > 0 && order.retry_at_ms().is_none() {
                    let at = self.now_ms.saturating_add(delay_ms);
                    order.set_retry_at(Some(at));
                    self.delayed.insert((at, key.clone()));
                }
                return;
            }
            OrderState::InFlight => {}
        }
        let old = order.state;
        let holder = order.holder_id().cloned();
        order.state = OrderState::Pending;
        order.history_mut().avoid = holder.clone();
        if refunded {
            order.set_attempts(order.attempts().saturating_sub(1));
        }
        order.history_mut().last_reason = Some(reason.to_owned());
        order.set_queued(self.now_ms.saturating_add(delay_ms));
        self.leave_state(key, handle, old, holder.as_deref());
        self.enter_pending(key);
        if delay_ms > 0 {
            let at = self.now_ms.saturating_add(delay_ms);
            self.orders.by_handle_mut(handle).expect("known").set_retry_at(Some(at));
            self.delayed.insert((at, key.clone()));
        } else {
            // Redeliveries go first: they are the oldest work.
            self.pending.push_front(handle);
        }
    }

    /// Delayed orders whose delay ended go to the front of the queue, the
    /// earliest first. Time passing, not an event: a replay restarts the
    /// delays.
    pub(super) fn release_due(&mut self) {
        let mut due = Vec::new();
        while let Some((at, _)) = self.delayed.first() {
            if *at > self.now_ms {
                break;
            }
            let (at, key) = self.delayed.pop_first().expect("first exists");
            if let Some(order) = self.orders.get_mut(&key) {
                order.set_retry_at(None);
                // Its queue wait starts when the delay ends.
                order.set_queued(at);
            }
            if let Some(handle) = self.orders.handle(&key) {
                due.push(handle);
            }
        }
        for key in due.into_iter().rev() {
            self.pending.push_front(key);
        }
    }

    /// Ends the retry delay of `key`'s order (`handle`), if it has one (it
    /// leaves the delayed set).
    fn undelay(&mut self, key: &OrderKey, handle: Handle) {
        let Some(order) = self.orders.by_handle_mut(handle) else { return };
        let at = order.retry_at_ms();
        order.set_retry_at(None);
        self.leave_delayed(key, at);
    }

    /// `key`'s order, delayed until `at` if at all, leaves the delayed set.
    fn leave_delayed(&mut self, key: &OrderKey, at: Option<Millis>) {
        if let Some(at) = at {
            self.delayed.remove(&(at, key.clone()));
        }
    }

    fn apply_dead_lettered(&mut self, key: &OrderKey, reason: &str, at_unix_ms: u64) {
        let Some(handle) = self.orders.handle(key) else { return };
        self.undelay(key, handle);
        let order = self.orders.by_handle_mut(handle).expect("found above");
        let holder = order.holder_id().cloned();
        let history = order.history_mut();
        history.dead_since_unix_ms = at_unix_ms;
        history.last_reason = Some(reason.to_owned());
        let old = std::mem::replace(&mut order.state, OrderState::Dead);
        self.leave_state(key, handle, old, holder.as_deref());
        self.dead_len += 1;
        self.counters.orders_dead_lettered += 1;
    }

    /// [`Event::Restored`]: replaces whatever is known of `key`.
    fn restore(&mut self, key: &OrderKey, snapshot: &Snapshot) {
        self.forget(key);
        self.recent.remove(key);
        match snapshot {
            Snapshot::Acked { at_ms } => {
                self.remember(key, *at_ms);
            }
            Snapshot::Partial { items } => {
                let bytes: u64 = items.iter().map(|(_, d)| d.len() as u64).sum();
                let items = items.iter().cloned().collect();
                let partial = Partial { began_ms: self.now_ms, items, bytes, anchor: None };
                self.held_bytes += partial.charge();
                self.partial_bytes += partial.charge();
                self.insert_partial(key, partial);
            }
            Snapshot::Sealed {
                items,
                attempts,
                dead,
                retry_in_ms,
                first_seen_unix_ms,
                dead_since_unix_ms,
                last_reason,
            } => {
                let mut order = self.whole_order(items);
                order.set_attempts(*attempts);
                order.state = if dead.is_some() { OrderState::Dead } else { OrderState::Pending };
                order.first_seen_unix_ms = *first_seen_unix_ms;
                // A dead letter's reason is its last reason (they never
                // differ while it is one).
                let last_reason = dead.clone().or_else(|| last_reason.clone());
                if *dead_since_unix_ms != 0 || last_reason.is_some() {
                    let history = order.history_mut();
                    history.dead_since_unix_ms = *dead_since_unix_ms;
                    history.last_reason = last_reason;
                }
                let delayed = dead.is_none() && *retry_in_ms > 0;
                let at = self.now_ms.saturating_add(*retry_in_ms);
                if delayed {
                    order.set_retry_at(Some(at));
                }
                let handle = self.insert_order(key, order);
                if dead.is_some() {
                    self.dead_len += 1;
                } else if delayed {
                    self.enter_pending(key);
                    self.delayed.insert((at, key.clone()));
                } else {
                    self.enter_pending(key);
                    self.pending.push_back(handle);
                }
            }
        }
    }

    /// The event that recreates `key`'s current state, for compaction;
    /// `None` when the order is resolved (acked or dropped). The inverse of
    /// `restore`.
    pub fn snapshot(&self, key: &OrderKey) -> Option<Event> {
        let snapshot = if let Some(remembered) = self.recent.get(key) {
            Snapshot::Acked { at_ms: remembered.at_ms() }
        } else if let Some(p) = self.partials.get(key) {
            Snapshot::Partial { items: p.items.iter().map(|(s, d)| (s, ByteBuf::from(d.to_vec()))).collect() }
        } else {
            let order = self.orders.get(key)?;
            // Without its items in RAM the copy is filled from the journal by
            // the caller (see `payload_ref`).
            self.sealed_snapshot(order, order.items.clone().unwrap_or_default())
        };
        Some(Event::Restored { key: key.clone(), snapshot })
    }

    /// A sealed order's copy with `items` (see [`Core::snapshot`]).
    pub(super) fn sealed_snapshot(&self, order: &Order, items: Payload) -> Snapshot {
        Snapshot::Sealed {
            items,
            attempts: order.attempts(),
            dead: order.dead_reason(),
            // The wait left now; a replay restarts it from its own time.
            retry_in_ms: order.retry_at_ms().map_or(0, |at| at.saturating_sub(self.now_ms).max(1)),
            first_seen_unix_ms: order.first_seen_unix_ms,
            dead_since_unix_ms: order.dead_since_unix_ms(),
            last_reason: order.last_reason().map(str::to_owned),
        }
    }

    /// Forgets all there is about `key` (for [`Event::Restored`]).
    fn forget(&mut self, key: &OrderKey) {
        self.remove_partial(key);
        if let Some((handle, order)) = self.orders.take(key) {
            self.leave_delayed(key, order.retry_at_ms());
            self.released_anchors.extend(order.anchor());
            self.leave_state(key, handle, order.state, order.in_flight_to());
            self.held_bytes -= order.charge();
            self.uncache(&order);
        }
    }

    /// A partial order leaves, and its bytes with it.
    fn remove_partial(&mut self, key: &OrderKey) {
        if let Some(p) = self.partials.remove(key) {
            self.held_bytes -= p.charge();
            self.partial_bytes -= p.charge();
            self.released_anchors.extend(p.anchor);
        }
    }

    /// Undoes the bookkeeping of the state an order leaves; `holder`: the
    /// worker of its current dispatch, when it is in flight.
    fn leave_state(&mut self, key: &OrderKey, handle: Handle, state: OrderState, holder: Option<&str>) {
        match state {
            OrderState::Pending => {
                self.pending_len -= 1;
                self.leave_live(&key.producer);
            }
            OrderState::InFlight => {
                self.in_flight_len -= 1;
                self.leave_live(&key.producer);
                if let Some(w) = holder.and_then(|h| self.workers.get_mut(h)) {
                    w.in_flight.remove(&handle);
                }
            }
            OrderState::Dead => self.dead_len -= 1,
        }
    }

    /// An order becomes pending (sealed, requeued, revived, restored).
    fn enter_pending(&mut self, key: &OrderKey) {
        self.pending_len += 1;
        // Look up before inserting: `entry` would clone the producer id on
        // every order, and this runs once per sealed order.
        match self.live_by_producer.get_mut(&key.producer) {
            Some(count) => *count += 1,
            None => {
                self.live_by_producer.insert(key.producer.clone(), 1);
            }
        }
    }

    fn leave_live(&mut self, producer: &str) {
        let count = self.live_by_producer.get_mut(producer).expect("a live order counts for its producer");
        *count -= 1;
        if *count == 0 {
            self.live_by_producer.remove(producer);
        }
    }

    /// Adds a sealed order; the queues hold its handle.
    fn insert_order(&mut self, key: &OrderKey, order: Order) -> Handle {
        let cached = order.items.is_some();
        let handle = self.orders.insert(key, order);
        if cached {
            self.cached.push_back(handle);
        }
        handle
    }

    /// An order leaves: its items leave the cache.
    fn uncache(&mut self, order: &Order) {
        if order.items.is_some() && !order.spilling {
            self.cached_bytes -= order.charge();
        }
    }

    /// A new pending order, counted in the cache while its items are in
    /// RAM. `whole`: one record holds its whole payload.
    fn new_order(&mut self, items: Option<Payload>, bytes: u64, count: u32, whole: bool) -> Order {
        if items.is_some() {
            self.cached_bytes += charge(bytes, count as usize);
        }
        let state = OrderState::Pending;
        // A record's length is a `u32`, so no order's items can pass it.
        let bytes = u32::try_from(bytes).expect("an order's items fit one journal record");
        Order {
            items,
            place: Place::Unstored { anchor: None },
            spilling: false,
            whole,
            count,
            bytes,
            state,
            history: None,
            first_seen_unix_ms: 0,
            queued_ms: super::queued_since(self.now_ms),
        }
    }

    /// A new order whose whole payload `items` one record holds (`Accepted`,
    /// `Restored`), counted in `held_bytes`: in RAM live, left on disk
    /// during a replay (`payload_stored` tells where).
    fn whole_order(&mut self, items: &Payload) -> Order {
        let bytes = items.bytes();
        self.held_bytes += charge(bytes, items.len());
        // The record's payload itself, shared: no copy.
        let kept = (!self.replaying).then(|| items.clone());
        self.new_order(kept, bytes, items.len() as u32, true)
    }

    /// Restarts a remembered key's window at the current time; false if
    /// the key is not remembered (one probe to ask and touch).
    pub(super) fn touch_recent(&mut self, key: &OrderKey) -> bool {
        let Some(at_ms) = self.recent.get(key).map(Remembered::at_ms) else { return false };
        if at_ms != self.now_ms {
            self.remember(key, self.now_ms);
        }
        true
    }

    /// Remembers `key` as acknowledged at `at_ms`; its handle in `recent`.
    fn remember(&mut self, key: &OrderKey, at_ms: Millis) -> Handle {
        // A key it holds keeps its anchor, and gets a new handle: the
        // old one in `recent_order` goes stale.
        let handle = self.recent.renew(key, |old| Remembered::new(at_ms, old.and_then(|r| r.anchor())));
        self.recent_order.push_back(handle);
        handle
    }
}
