//! Producers' messages: Hello, Begin, Item, Items, Orders, Finish. Each is
//! checked against the limits and recorded, and its producer gets a confirm
//! (after the turn's commit) or a reject.

use orderly_common::ids::producer_topic;
use orderly_common::limits;
use orderly_common::protocol::{
    Confirm, Confirms, FanoutMsg, IntakeMsg, IntakeRef, ItemData, ItemsRef, OrdersRef, Reject, RejectReason, Welcome,
};
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

use super::{AcceptedOrder, ConfirmTiming, Core, Event, Millis, Outbound, Payload};

impl Core {
    /// Handles one decoded intake message: [`Core::handle_intake_ref`] on
    /// it borrowed (the simulation and tests come through here, so they
    /// run the broker's own path).
    pub fn handle_intake(&mut self, msg: IntakeMsg, now_ms: Millis) {
        self.handle_intake_ref(msg.as_ref_msg(), now_ms);
    }

    /// Handles one intake message borrowed from its frame: items are copied
    /// once, into the partial order's buffer or the order's payload (and
    /// the journal record), never into a buffer of their own first.
    pub fn handle_intake_ref(&mut self, msg: IntakeRef<'_>, now_ms: Millis) {
        self.now_ms = now_ms;
        match msg {
            IntakeRef::Hello(hello) => {
                // `orders_max` tells the producer it may batch whole orders.
                let orders_max = limits::ORDERS_PER_MESSAGE_MAX as u32;
                let body = FanoutMsg::Welcome(Welcome { nonce: hello.nonce, orders_max }).encode();
                self.outbound.push_back(Outbound::new(producer_topic(&hello.producer), body));
            }
            IntakeRef::Begin(begin) => self.on_begin(OrderKey::new(begin.producer, begin.order), now_ms),
            IntakeRef::Item(item) => self.on_item(&item.producer, &item.order, item.seq, &item.data),
            IntakeRef::Items(items) => self.on_items(items, now_ms),
            IntakeRef::Orders(orders) => self.on_orders(orders, now_ms),
            IntakeRef::Finish(finish) => self.on_finish(OrderKey::new(finish.producer, finish.order), finish.count),
        }
        self.pump();
        self.after_input();
    }

    fn on_begin(&mut self, key: OrderKey, now_ms: Millis) {
        // A resent Begin for an order we hold (or recently finished) is a
        // no-op: resends fill gaps and are never processed twice.
        if self.partials.contains_key(&key) || self.orders.contains_key(&key) {
            return;
        }
        // Keep a remembered key for the rest of this resend, so a window
        // that ends between its Begin and its Finish cannot turn the
        // Finish into an unknown_order reject.
        if self.touch_recent(&key) {
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
        if self.producer_at_limit(&key) {
            return;
        }
        self.record(Event::Begun { key, at_ms: now_ms });
    }

    /// A new order of a producer at `pending_orders_per_producer_max` is
    /// read and rejected (`limit_reached`): a PULL socket cannot pause one
    /// peer, and not reading would starve every other producer. The
    /// producer backs off and resends; resends of orders it has here are
    /// answered before this check.
    fn producer_at_limit(&mut self, key: &OrderKey) -> bool {
        let max = self.config.pending_orders_per_producer_max;
        let live = self.live_by_producer.get(&key.producer).copied().unwrap_or(0);
        if live < max {
            return false;
        }
        self.counters.producer_limit_rejects += 1;
        let detail =
            format!("producer {} has {live} orders awaiting workers (limit {max}); resend later", key.producer);
        self.reject(key, RejectReason::LimitReached { detail });
        true
    }

    /// Open partial orders of `producer`, counting at most `cap` (keys sort
    /// by producer first, so this is one short range scan).
    fn partials_of(&self, producer: &str, cap: usize) -> usize {
        let from = OrderKey::new(producer, "");
        self.partials.range(from..).take_while(|(k, _)| k.producer == producer).take(cap).count()
    }

    fn on_item(&mut self, producer: &str, order: &str, seq: u32, data: &[u8]) {
        // Looked up with a reused key: an item allocates neither its key
        // (its record shares the partial's) nor a lookup key.
        // (Taken out while in use; empty strings do not allocate.)
        let mut key = std::mem::replace(&mut self.item_key, OrderKey::new(String::new(), String::new()));
        key.producer.clear();
        key.producer.push_str(producer);
        key.id.clear();
        key.id.push_str(order);
        self.on_item_of(&key, seq, data);
        self.item_key = key;
    }

    fn on_item_of(&mut self, key: &OrderKey, seq: u32, data: &[u8]) {
        let Some((shared, partial)) = self.partials.get_key_value(key) else {
            if self.touch_recent(key) {
                self.counters.duplicate_items += 1;
            } else if self.orders.contains_key(key) {
                self.counters.duplicate_items += 1; // a resend of a sealed order
            } else {
                self.counters.orphan_items += 1; // no Begin, or already rejected
            }
            return;
        };
        if partial.items.contains(seq) {
            self.counters.duplicate_items += 1;
            return;
        }
        let bytes = partial.bytes + data.len() as u64;
        let bytes_max = self.config.order_bytes_max;
        if bytes > bytes_max {
            let detail = format!("items reach {bytes} bytes; the limit is {bytes_max}");
            self.drop_partial(key.clone(), RejectReason::TooLarge { detail });
            return;
        }
        let items_max = self.config.order_items_max;
        if seq >= items_max {
            let detail = format!("item {seq} is beyond the limit of {items_max} items");
            self.drop_partial(key.clone(), RejectReason::TooLarge { detail });
            return;
        }
        let key = shared.clone();
        self.record(Event::ItemStored { key, seq, data: ByteBuf::from(data.to_vec()) });
    }

    /// An `items` message: a whole order in one record when it is one, else
    /// the Begin, Items and Finish it stands for.
    fn on_items(&mut self, m: ItemsRef<'_>, now_ms: Millis) {
        let key = OrderKey::new(m.producer, m.order);
        let whole = m.begin && m.first == 0 && m.finish == Some(m.data.len() as u32);
        if whole && !self.partials.contains_key(&key) {
            return self.on_whole(key, &m.data);
        }
        if m.begin {
            self.on_begin(key.clone(), now_ms);
        }
        for (i, data) in m.data.iter().enumerate() {
            self.on_item_of(&key, m.first + i as u32, data);
        }
        if let Some(count) = m.finish {
            self.on_finish(key, count);
        }
    }

    /// A whole order at once: the checks of Begin, Item and Finish together.
    fn on_whole(&mut self, key: OrderKey, items: &[ItemData<'_>]) {
        let at_unix_ms = self.now_unix_ms();
        if self.admit_whole(&key, items, true) {
            self.record(Event::Accepted { key: key.clone(), items: payload_of(items), at_unix_ms });
            self.confirm(&key);
        }
    }

    /// Whether a whole order is taken: a resend of one held or remembered
    /// is confirmed again, one past a bound rejected; `Some(items)`: it is
    /// new and within bounds, to record. `producer_bound`: check the
    /// producer's pending bound (a batch checks it once, when read).
    fn admit_whole(&mut self, key: &OrderKey, items: &[ItemData<'_>], producer_bound: bool) -> bool {
        // A key is sealed or remembered, never both (`invariants`): a
        // remembered one is touched in the same probe.
        if self.orders.contains_key(key) || self.touch_recent(key) {
            self.counters.orders_deduplicated += 1;
            self.confirm(key); // a resent order: confirm again
            return false;
        }
        if producer_bound && self.producer_at_limit(key) {
            return false;
        }
        let items_max = self.config.order_items_max;
        if items.len() as u64 > u64::from(items_max) {
            let detail = format!("{} items, beyond the limit of {items_max} items", items.len());
            self.reject(key, RejectReason::TooLarge { detail });
            return false;
        }
        let bytes: u64 = items.iter().map(|d| d.len() as u64).sum();
        let bytes_max = self.config.order_bytes_max;
        if bytes > bytes_max {
            let detail = format!("items reach {bytes} bytes; the limit is {bytes_max}");
            self.reject(key, RejectReason::TooLarge { detail });
            return false;
        }
        true
    }

    /// An `orders` message: each whole order is checked as if it came
    /// alone (its own confirm or reject, in the order given), and the new
    /// ones go into ONE journal record, so a batch costs one append. Each
    /// is applied at once, so a repeated id later in the batch is a resend.
    ///
    /// Bounds on pending orders are checked when a message is read, as for
    /// one order per message: a batch read below the producer's bound is
    /// taken whole (so it may pass the bound by at most one batch,
    /// `ORDERS_PER_MESSAGE_MAX`), and intake then closes before the next
    /// message — backpressure, not a reject of the batch's tail.
    fn on_orders(&mut self, m: OrdersRef<'_>, now_ms: Millis) {
        let at_unix_ms = self.now_unix_ms();
        let live = self.live_by_producer.get(&*m.producer).copied().unwrap_or(0);
        let producer_bound = live >= self.config.pending_orders_per_producer_max;
        let mut accepted = Vec::with_capacity(m.orders.len());
        for whole in m.orders {
            let key = OrderKey::new(&*m.producer, &*whole.order);
            if self.partials.contains_key(&key) {
                // Partly sent before in another form: merge as `items` would.
                let finish = Some(whole.data.len() as u32);
                let (producer, order) = (m.producer.clone(), whole.order);
                let items = ItemsRef { producer, order, begin: true, first: 0, data: whole.data, finish };
                self.on_items(items, now_ms);
                continue;
            }
            if self.admit_whole(&key, &whole.data, producer_bound) {
                let items = payload_of(&whole.data);
                self.apply_accepted(&key, &items, at_unix_ms);
                self.confirm(&key);
                accepted.push(AcceptedOrder { key, items });
            }
        }
        match accepted.len() {
            0 => {}
            // A lone order keeps the record older brokers can replay.
            1 => {
                let AcceptedOrder { key, items } = accepted.pop().expect("one order");
                self.events.push_back(Event::Accepted { key, items, at_unix_ms });
            }
            _ => self.events.push_back(Event::AcceptedBatch { orders: accepted, at_unix_ms }),
        }
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
        if let Some(seq) = partial.items.first_from(count) {
            self.drop_partial(key, RejectReason::ExtraItem { count, seq });
            return;
        }
        if partial.items.len() < count as usize {
            let missing = partial.items.first_missing(count).unwrap_or(count);
            self.drop_partial(key, RejectReason::Gap { missing });
            return;
        }
        let at_unix_ms = self.now_unix_ms();
        self.record(Event::Sealed { key: key.clone(), count, at_unix_ms });
        self.confirm(&key);
    }

    pub(super) fn drop_partial(&mut self, key: OrderKey, reason: RejectReason) {
        self.reject(&key, reason.clone());
        self.record(Event::Dropped { key, reason });
    }

    /// Confirms wait in `confirms` until the outbound queue is drained, so
    /// one producer's confirms of a turn go out as one message.
    fn confirm(&mut self, key: &OrderKey) {
        self.confirms.entry(key.producer.clone()).or_default().push(key.id.clone());
        let timing = self.confirms_timing.get_or_insert(ConfirmTiming { read_ms: self.now_ms, orders: 0 });
        timing.orders += 1;
    }

    /// Moves the waiting confirms to the outbound queue: a `confirm` for a
    /// single order, `confirms` for several.
    pub(super) fn flush_confirms(&mut self) {
        self.confirm_timing = self.confirms_timing.take();
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
}

/// Items borrowed from an intake frame, copied once: into the payload the
/// order and its record share.
fn payload_of(items: &[ItemData<'_>]) -> Payload {
    Payload::from_items(items.iter().map(|d| &**d))
}

#[cfg(test)]
mod tests;
