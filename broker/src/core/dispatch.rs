//! Pending orders to workers ([`Core::pump`]), and the payload cache: which
//! sealed orders keep their items in RAM and where the journal holds the
//! others.

use std::num::NonZeroU64;
use std::sync::Arc;

use orderly_common::limits::{DISPATCHES_PER_MESSAGE_MAX, DISPATCH_BATCH_BYTES_MAX};
use orderly_common::protocol::{
    dispatch_body_bytes, encode_dispatch, encode_dispatch_body, DispatchesEncoder, OrderKeyRef,
};
use orderly_common::OrderKey;

use super::payload::Payload;
use super::table::Handle;
use super::{BatchEntry, Core, Event, Fill, OrderState, Outbound, PayloadRef, Stored, WorkerId};

/// A bound on one dispatch entry's encoding besides its items' bytes and
/// their framing (5 bytes each) and its key: field names, attempt, flags
/// and headers (about 80 bytes), with room to spare. Used to keep a batch
/// within [`DISPATCH_BATCH_BYTES_MAX`] before an order's items are read
/// from the journal.
const DISPATCH_ENTRY_OVERHEAD_BYTES: usize = 128;

/// The orders one pump chose for one batching worker, not yet sent.
struct Batch {
    worker: WorkerId,
    /// The worker's topic, shared with its entry.
    topic: Arc<[u8]>,
    /// Each order's handle and attempt, in the order chosen.
    orders: Vec<(Handle, u32)>,
    /// Bytes its encoding takes at most.
    bytes: usize,
    /// Orders it may hold: the worker's `dispatches_max`, bounded.
    orders_max: usize,
}

/// Where a chosen order's items are.
enum Items<'a> {
    Ram(&'a Payload),
    /// Only in the journal: the IO loop reads them ([`Fill`]).
    Journal(PayloadRef),
}

impl Core {
    /// Sends pending orders to ready workers with free credits, the worker
    /// with the most free credits first (ties: lowest id, for determinism),
    /// but not to the worker that last dropped the order while another
    /// has a free credit. The orders chosen for a worker that takes
    /// batches (`dispatches_max` ≥ 2) go out together in `dispatches`
    /// messages, bounded by count and bytes; each order keeps its own
    /// `Dispatched` event, attempt, credit and deadline.
    pub(super) fn pump(&mut self) {
        self.release_due();
        let mut batches: Vec<Batch> = Vec::new();
        while let Some(&handle) = self.pending.front() {
            let Some(order) =
                self.orders.by_handle(handle).filter(|o| o.state == OrderState::Pending && o.retry_at_ms().is_none())
            else {
                self.pending.pop_front(); // stale: acked, dead or delayed since queued
                continue;
            };
            let Some(worker) = self.choose_worker(order.avoid()) else { break };
            self.timings.queue_wait.observe_ms(order.queued_for_ms(self.now_ms));
            let entry_bytes = order.bytes as usize + order.count as usize * 5 + DISPATCH_ENTRY_OVERHEAD_BYTES;
            let attempt = order.attempts() + 1;
            self.pending.pop_front();
            // The key is made once, for the record; the message encodes it
            // from the table.
            let key = self.orders.key(handle).expect("a live handle");
            let entry_bytes = entry_bytes + key.producer.len() + key.id.len();
            self.record(Event::Dispatched { key: key.to_key(), worker: worker.clone(), attempt });
            let w = self.workers.get(&worker).expect("chosen from the known workers");
            let (orders_max, topic) = (w.dispatches_max as usize, w.topic.clone());
            if orders_max < 2 {
                let out = self.dispatch_out(topic, handle, attempt);
                self.outbound.push_back(out);
                continue;
            }
            let i = match batches.iter().position(|b| b.worker == worker) {
                Some(i) => i,
                None => {
                    let orders_max = orders_max.min(DISPATCHES_PER_MESSAGE_MAX);
                    batches.push(Batch { worker, topic, orders: Vec::new(), bytes: 0, orders_max });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[i];
            let full = batch.orders.len() >= batch.orders_max || batch.bytes + entry_bytes > DISPATCH_BATCH_BYTES_MAX;
            if full && !batch.orders.is_empty() {
                let orders = std::mem::take(&mut batch.orders);
                batch.bytes = 0;
                let out = self.batch_out(batch.topic.clone(), &orders);
                self.outbound.push_back(out);
            }
            let batch = &mut batches[i];
            batch.orders.push((handle, attempt));
            batch.bytes += entry_bytes;
        }
        for batch in batches {
            let out = self.batch_out(batch.topic, &batch.orders);
            self.outbound.push_back(out);
        }
        self.spill();
    }

    /// The key of a chosen order, as the message encodes it.
    fn key_ref(&self, handle: Handle) -> OrderKeyRef<'_> {
        self.orders.key(handle).expect("dispatched, not removed")
    }

    /// Where a chosen order's items are.
    fn items(&self, handle: Handle) -> Items<'_> {
        let order = self.orders.by_handle(handle).expect("dispatched, not removed");
        match (&order.items, order.stored()) {
            (Some(items), _) => Items::Ram(items),
            (None, Some(from)) => Items::Journal(from.at()),
            (None, None) => unreachable!("an order's payload is in RAM or in the journal: {:?}", self.key_ref(handle)),
        }
    }

    /// One order's `dispatch` message, its items from RAM or (filled by the
    /// IO loop) from the journal.
    fn dispatch_out(&self, topic: Arc<[u8]>, handle: Handle, attempt: u32) -> Outbound {
        match self.items(handle) {
            Items::Ram(items) => {
                Outbound::new(topic, encode_dispatch(self.key_ref(handle), attempt, attempt > 1, items))
            }
            Items::Journal(from) => {
                Outbound { fill: Some(self.fill(handle, attempt, from)), ..Outbound::new(topic, Vec::new()) }
            }
        }
    }

    /// A `dispatches` message of the orders chosen for one worker (a lone
    /// order goes as a `dispatch`): encoded here into one buffer when every
    /// payload is in RAM, else its entries wait for the IO loop
    /// ([`Outbound::batch`]).
    fn batch_out(&self, topic: Arc<[u8]>, orders: &[(Handle, u32)]) -> Outbound {
        if let [(handle, attempt)] = *orders {
            return self.dispatch_out(topic, handle, attempt);
        }
        let in_ram: Option<usize> = orders
            .iter()
            .map(|&(handle, _)| match self.items(handle) {
                Items::Ram(items) => Some(dispatch_body_bytes(self.key_ref(handle), items)),
                Items::Journal(_) => None,
            })
            .sum();
        let Some(bytes) = in_ram else {
            let batch = orders.iter().map(|&(handle, attempt)| self.entry(handle, attempt)).collect();
            return Outbound { batch, ..Outbound::new(topic, Vec::new()) };
        };
        let mut encoder = DispatchesEncoder::new(orders.len(), bytes);
        for &(handle, attempt) in orders {
            let Items::Ram(items) = self.items(handle) else { unreachable!("every payload is in RAM: sized above") };
            encoder.push(self.key_ref(handle), attempt, attempt > 1, items);
        }
        Outbound::new(topic, encoder.finish())
    }

    /// One order of a batch some of whose items the IO loop reads from the
    /// journal: its body encoded from RAM now, or what to read.
    fn entry(&self, handle: Handle, attempt: u32) -> BatchEntry {
        match self.items(handle) {
            Items::Ram(items) => {
                BatchEntry::Encoded(encode_dispatch_body(self.key_ref(handle), attempt, attempt > 1, items))
            }
            Items::Journal(from) => BatchEntry::Fill(self.fill(handle, attempt, from)),
        }
    }

    /// A dispatch for the IO loop to encode from the journal.
    fn fill(&self, handle: Handle, attempt: u32, from: PayloadRef) -> Fill {
        let key = self.orders.key(handle).expect("dispatched, not removed").to_key();
        Fill { key, attempt, from }
    }

    /// The worker for an order that `avoid` last dropped: `avoid` only if
    /// no other worker can take it.
    fn choose_worker(&self, avoid: Option<&str>) -> Option<WorkerId> {
        let mut best: Option<(&WorkerId, u32)> = None;
        let mut avoided = None;
        for (id, w) in &self.workers {
            let free = w.free_credits();
            if !w.takes_orders() || free == 0 {
                continue;
            }
            if avoid == Some(&**id) {
                avoided = Some(id);
            } else if best.is_none_or(|(_, f)| free > f) {
                best = Some((id, free));
            }
        }
        best.map(|(id, _)| id).or(avoided).cloned()
    }

    /// Drops payloads from RAM, newest orders first, while the cache is
    /// over its budget. An order whose payload no single record holds (it
    /// came item by item) gets a `Restored` copy first; its items leave RAM
    /// when the copy is recorded ([`Core::payload_stored`]).
    fn spill(&mut self) {
        self.drop_stale_cached();
        while self.cached_bytes > self.config.payload_cache_bytes {
            let Some(handle) = self.cached.pop_back() else { break };
            let Some(order) = self.orders.by_handle_mut(handle) else { continue };
            let Some(items) = &order.items else { continue };
            if order.spilling {
                continue;
            }
            self.cached_bytes -= order.charge();
            if order.stored().is_some() {
                order.items = None;
                continue;
            }
            order.spilling = true;
            if order.whole {
                continue; // its record is being written this turn
            }
            let items = items.clone(); // shared, not copied
            let order = self.orders.by_handle(handle).expect("spilling, not removed");
            let snapshot = self.sealed_snapshot(order, items);
            let key = self.orders.key(handle).expect("spilling, not removed").to_key();
            // Not applied: live, the copy changes nothing (as compaction's).
            self.events.push_back(Event::Restored { key, snapshot });
        }
    }

    /// Orders acknowledged while cached leave stale keys, mostly at the
    /// front (the oldest go first): drop them, so the queue stays as long
    /// as the cache holds orders.
    fn drop_stale_cached(&mut self) {
        while let Some(&handle) = self.cached.front() {
            if self.orders.by_handle(handle).is_some_and(|o| o.items.is_some()) {
                break;
            }
            self.cached.pop_front();
        }
    }

    /// The journal now holds `key`'s whole payload at `at` (the record of
    /// an `Accepted`, `AcceptedBatch` or `Restored` event), which anchors
    /// the key too: the anchor it had, as [`Core::anchor`] returns it. The
    /// IO loop calls this for every such record it appends, and replay for
    /// every one it reads (through `compaction::Anchors::observe`). One
    /// probe of the table for both.
    pub fn payload_stored(&mut self, key: &OrderKey, at: PayloadRef) -> Option<Option<NonZeroU64>> {
        let segment = NonZeroU64::new(at.segment).expect("journal segment ids start at 1");
        // A key is never partial and sealed at once (`invariants`): the
        // sealed orders are probed first, as the likely place.
        match self.orders.get_mut(key) {
            Some(order) => Some(order.set_stored(at)),
            None => self.anchor(key, segment),
        }
    }

    /// Where the journal holds `key`'s payload, when RAM does not.
    pub fn payload_ref(&self, key: &OrderKey) -> Option<PayloadRef> {
        self.orders.get(key).filter(|o| o.items.is_none()).and_then(|o| o.stored()).map(Stored::at)
    }
}
