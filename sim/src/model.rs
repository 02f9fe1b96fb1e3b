//! What the simulation knows independently of the core: every order it
//! made up, and a model of the delivery state rebuilt from the recorded
//! events alone. The invariants compare the two against the core.

use std::collections::{BTreeMap, HashMap};

use orderly_broker::core::{DeadLetter, Event, Payload, Snapshot, Status};
use orderly_common::protocol::RejectReason;
use orderly_common::OrderKey;
use orderly_journal::RecordAt;
use serde_bytes::ByteBuf;

use crate::broker::{segment_path, Appended};

/// How the simulated peers treat an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Processed normally (a worker may still nack it now and then).
    Normal,
    /// Sent with one item missing: must be rejected, never sealed.
    Gap,
    /// Every worker nacks it with `retry = true`: dead-lettered after
    /// exactly `max_attempts` deliveries.
    Poison,
    /// Every worker nacks it with `retry = false`: dead-lettered at once.
    Refuse,
    /// Begun, some items sent, never finished: must expire, never sealed.
    Abandoned,
}

/// The payload of item `seq` of `key`: recognisable, so a dispatch can be
/// checked item by item.
pub fn item_data(key: &OrderKey, seq: u32) -> ByteBuf {
    ByteBuf::from(format!("{}/{}#{seq}", key.producer, key.id).into_bytes())
}

/// One order, as the producer made it and as the events say it went.
#[derive(Debug)]
pub struct OrderModel {
    pub key: OrderKey,
    pub kind: Kind,
    /// The count the producer's Finish announces.
    pub count: u32,
    /// The item a gap order leaves out.
    pub skip: Option<u32>,
    /// Item bytes of the whole order (without the skipped item).
    pub bytes: u64,
    // From the events.
    pub begun: bool,
    pub partial: bool,
    pub partial_bytes: u64,
    /// Items held while partial: each is charged `ITEM_OVERHEAD_BYTES`.
    pub partial_items: u32,
    pub sealed: bool,
    pub dropped: bool,
    /// Attempts spent since it was sealed or last revived, across broker
    /// restarts: Dispatched events less the refunded ones (`Requeued` with
    /// `refunded`: returned unrun, or lost on the way).
    pub dispatches: u32,
    pub revivals: u32,
    pub in_flight_on: Option<String>,
    pub acked: bool,
    /// The key of the acked order left the dedup window: a resend would be
    /// a new order (a new life).
    pub forgotten: bool,
    pub dead: bool,
    /// Sealed in some life (a Confirm is right for it from then on).
    pub sealed_once: bool,
    pub lives: u32,
    // From the peers.
    /// Some worker sent a Nack with `retry = false` for it.
    pub refusal_sent: bool,
    pub confirmed: bool,
    pub rejected: bool,
    /// A Confirm or Reject for it was dropped by the network or a crash.
    pub reply_lost: bool,
    /// The broker published a Confirm for it (whether or not it arrived).
    pub confirm_published: bool,
    /// A broker crash took records of its current life that were not yet
    /// durable: its Begin or items (read from intake; the rest of the
    /// stream then meets a broker that never heard of it or misses items,
    /// and is refused as `UnknownOrder` or `Gap` — a correct order refused),
    /// or its Dropped (the Reject was published after a lazy commit: what
    /// is left of it is a partial order that must expire). A refusal the
    /// producer got may also be overtaken by a resend that is confirmed.
    pub stream_cut: bool,
    /// The records of its current life that make it sealed on replay (its
    /// Sealed or Accepted, copies of it, its Acked): a Confirm may leave
    /// only once one of them is durable.
    pub proofs: Vec<Proof>,
}

/// Where a record that makes an order sealed is on the simulated disk.
#[derive(Debug, Clone, Copy)]
pub struct Proof {
    pub at: RecordAt,
    pub frame_bytes: u64,
}

impl Proof {
    pub fn path(&self) -> std::path::PathBuf {
        segment_path(self.at.segment)
    }
}

/// What the core's byte bounds are charged for `bytes` of payload in
/// `items` items (see `orderly_common::limits::ITEM_OVERHEAD_BYTES`).
fn charge(bytes: u64, items: u32) -> u64 {
    bytes + u64::from(items) * orderly_common::limits::ITEM_OVERHEAD_BYTES
}

impl OrderModel {
    pub fn new(key: OrderKey, kind: Kind, count: u32, skip: Option<u32>) -> Self {
        let bytes = (0..count).filter(|&s| Some(s) != skip).map(|s| item_data(&key, s).len() as u64).sum();
        OrderModel {
            key,
            kind,
            count,
            skip,
            bytes,
            begun: false,
            partial: false,
            partial_bytes: 0,
            partial_items: 0,
            sealed: false,
            dropped: false,
            dispatches: 0,
            revivals: 0,
            in_flight_on: None,
            acked: false,
            forgotten: false,
            dead: false,
            sealed_once: false,
            lives: 0,
            refusal_sent: false,
            confirmed: false,
            rejected: false,
            reply_lost: false,
            confirm_published: false,
            stream_cut: false,
            proofs: Vec::new(),
        }
    }

    /// The same order as the producer made it and as the peers saw it,
    /// with nothing yet from the events.
    fn without_events(&self) -> Self {
        OrderModel {
            refusal_sent: self.refusal_sent,
            confirmed: self.confirmed,
            rejected: self.rejected,
            reply_lost: self.reply_lost,
            confirm_published: self.confirm_published,
            stream_cut: self.stream_cut,
            ..OrderModel::new(self.key.clone(), self.kind, self.count, self.skip)
        }
    }

    fn live(&self) -> bool {
        self.sealed && !self.acked && !self.dead
    }
}

/// The order model plus the totals the core's status must match.
pub struct Model {
    pub max_attempts: u32,
    pub partial_age_max_ms: u64,
    pub orders: Vec<OrderModel>,
    index: HashMap<OrderKey, usize>,
    partials: usize,
    pending: usize,
    dead: usize,
    held_bytes: u64,
    /// Orders in flight per worker id, from Dispatched minus resolutions.
    in_flight: BTreeMap<String, u32>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl OrderModel {
    /// A Begun or an Accepted starts a new life of the order: legal only
    /// when it is not partial and, if it was sealed before, its key was
    /// forgotten — a resend of a live, dead or remembered order must be
    /// recognised instead.
    fn start_life(&mut self, what: &str) -> Check {
        let key = &self.key;
        ensure!(!self.partial, "{key}: {what} while partial");
        ensure!(
            !self.sealed || (self.acked && self.forgotten),
            "{key}: a resend was {what} as a second order (acked {}, dead {}, key forgotten {})",
            self.acked,
            self.dead,
            self.forgotten
        );
        self.begun = true;
        self.dropped = false;
        self.acked = false;
        self.forgotten = false;
        self.dispatches = 0;
        self.lives += 1;
        Ok(())
    }

    /// `items` are exactly the items the producer sent, in order.
    fn check_items(&self, items: &Payload, what: &str) -> Check {
        let key = &self.key;
        ensure!(items.len() == self.count as usize, "{key}: {what} {} of {} items", items.len(), self.count);
        for (seq, data) in items.items().enumerate() {
            ensure!(data == item_data(key, seq as u32).as_slice(), "{key}: item {seq} {what} with the wrong data");
        }
        Ok(())
    }
}

impl Model {
    pub fn new(max_attempts: u32, partial_age_max_ms: u64) -> Self {
        Model {
            max_attempts,
            partial_age_max_ms,
            orders: Vec::new(),
            index: HashMap::new(),
            partials: 0,
            pending: 0,
            dead: 0,
            held_bytes: 0,
            in_flight: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, order: OrderModel) -> usize {
        let idx = self.orders.len();
        self.index.insert(order.key.clone(), idx);
        self.orders.push(order);
        idx
    }

    pub fn find(&self, key: &OrderKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Whether `reason` is how the broker must refuse order `i`: a gap
    /// order for its gap, an abandoned one once expired.
    pub fn rightly_refused(&self, i: usize, reason: &RejectReason) -> bool {
        let o = &self.orders[i];
        match (o.kind, reason) {
            (_, RejectReason::UnknownOrder | RejectReason::Gap { .. } | RejectReason::Expired { .. })
                if o.stream_cut =>
            {
                true
            }
            (Kind::Gap, RejectReason::Gap { missing }) => Some(*missing) == o.skip,
            (Kind::Abandoned, RejectReason::Expired { age_ms }) => *age_ms > self.partial_age_max_ms,
            _ => false,
        }
    }

    fn lookup(&self, key: &OrderKey) -> Result<usize, String> {
        self.find(key).ok_or_else(|| format!("event for an order no producer sent: {key}"))
    }

    /// Folds one recorded event into the model, checking that it is a legal
    /// transition. Returns the order it touched.
    pub fn on_event(&mut self, event: &Event) -> Result<usize, String> {
        let max_attempts = self.max_attempts;
        match event {
            Event::Begun { key, .. } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                o.start_life("begun")?;
                o.partial = true;
                o.partial_bytes = 0;
                o.partial_items = 0;
                o.sealed = false;
                self.partials += 1;
                Ok(i)
            }
            Event::ItemStored { key, seq, data } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.partial, "{key}: item {seq} stored for an order that is not partial");
                ensure!(*seq < o.count && Some(*seq) != o.skip, "{key}: item {seq} was never sent");
                ensure!(*data == item_data(key, *seq), "{key}: item {seq} stored with the wrong data");
                o.partial_bytes += data.len() as u64;
                o.partial_items += 1;
                self.held_bytes += charge(data.len() as u64, 1);
                Ok(i)
            }
            Event::Sealed { key, count, .. } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.kind != Kind::Gap, "invariant 3: {key} was sent with a gap (item {:?}) but sealed", o.skip);
                ensure!(o.kind != Kind::Abandoned, "{key} was never finished but sealed");
                ensure!(o.partial && !o.sealed, "{key}: sealed but not partial (sealed before: {})", o.sealed);
                ensure!(*count == o.count, "{key}: sealed with count {count}, the producer said {}", o.count);
                ensure!(o.partial_bytes == o.bytes, "{key}: sealed holding {} of {} bytes", o.partial_bytes, o.bytes);
                o.partial = false;
                o.sealed = true;
                o.sealed_once = true;
                self.partials -= 1;
                self.pending += 1;
                Ok(i)
            }
            Event::Accepted { key, items, .. } => {
                // A whole order in one record: Begun, every item and Sealed.
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.kind != Kind::Gap, "invariant 3: {key} was sent with a gap (item {:?}) but accepted", o.skip);
                ensure!(o.kind != Kind::Abandoned, "{key} was never finished but accepted");
                o.check_items(items, "accepted")?;
                o.start_life("accepted")?;
                o.sealed = true;
                o.sealed_once = true;
                o.partial_bytes = o.bytes;
                o.partial_items = o.count;
                self.held_bytes += charge(o.bytes, o.count);
                self.pending += 1;
                Ok(i)
            }
            Event::Restored { key, snapshot: Snapshot::Sealed { items, dead, .. } } => {
                // Live, only a spill writes one: a full copy of a sealed
                // order so its items can leave RAM. It changes nothing.
                let i = self.lookup(key)?;
                let o = &self.orders[i];
                ensure!(o.sealed && !o.acked, "{key}: copied while not a live sealed order");
                ensure!(
                    dead.is_some() == o.dead,
                    "{key}: copied as dead {}, the model says {}",
                    dead.is_some(),
                    o.dead
                );
                o.check_items(items, "copied")?;
                Ok(i)
            }
            Event::Dropped { key, reason } => {
                let i = self.lookup(key)?;
                let rightly = self.rightly_refused(i, reason);
                let o = &mut self.orders[i];
                ensure!(o.partial, "{key}: dropped but not partial");
                ensure!(rightly, "{key} ({:?}, skip {:?}) dropped as {reason:?}", o.kind, o.skip);
                o.partial = false;
                o.dropped = true;
                self.partials -= 1;
                self.held_bytes -= charge(o.partial_bytes, o.partial_items);
                Ok(i)
            }
            Event::Dispatched { key, worker, attempt } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(
                    o.live(),
                    "{key}: dispatched but not live (sealed {}, acked {}, dead {})",
                    o.sealed,
                    o.acked,
                    o.dead
                );
                ensure!(
                    o.in_flight_on.is_none(),
                    "{key}: dispatched to {worker} while in flight on {:?}",
                    o.in_flight_on
                );
                ensure!(
                    *attempt <= max_attempts,
                    "invariant 4: {key} dispatched as attempt {attempt} > max_attempts {max_attempts} \
                     (previous dispatches: {})",
                    o.dispatches
                );
                ensure!(*attempt == o.dispatches + 1, "{key}: attempt {attempt} after {} dispatches", o.dispatches);
                o.dispatches += 1;
                o.in_flight_on = Some(worker.to_string());
                self.pending -= 1;
                *self.in_flight.entry(worker.to_string()).or_default() += 1;
                Ok(i)
            }
            Event::Acked { key } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                if o.sealed && !o.acked && o.dead {
                    // A late ack retires a dead letter: it was processed.
                    o.dead = false;
                    self.dead -= 1;
                } else {
                    ensure!(o.live(), "{key}: acked but not live");
                    self.leave_live(i);
                }
                let o = &mut self.orders[i];
                o.acked = true;
                self.held_bytes -= charge(o.bytes, o.count);
                Ok(i)
            }
            Event::Discarded { key } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.sealed && !o.acked && o.dead, "{key}: discarded but not a dead letter");
                o.dead = false;
                o.acked = true;
                self.dead -= 1;
                self.held_bytes -= charge(o.bytes, o.count);
                Ok(i)
            }
            Event::Requeued { key, reason, refunded, .. } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                // Live, a requeue comes from in flight; after a restart a core
                // could also requeue what it recovered as pending.
                ensure!(o.live(), "{key}: requeued but not live ({reason})");
                if *refunded {
                    ensure!(o.dispatches > 0, "{key}: an attempt refunded before any dispatch ({reason})");
                    o.dispatches -= 1;
                }
                self.leave_live(i);
                self.pending += 1;
                Ok(i)
            }
            Event::DeadLettered { key, reason, .. } => {
                let i = self.lookup(key)?;
                let o = &self.orders[i];
                ensure!(o.live(), "{key}: dead-lettered but not live ({reason})");
                if o.refusal_sent {
                    ensure!(o.dispatches <= max_attempts, "{key}: dead after {} dispatches", o.dispatches);
                } else {
                    ensure!(
                        o.dispatches == max_attempts,
                        "invariant 4: {key} ({:?}, never refused) dead-lettered after {} dispatches, \
                         max_attempts is {max_attempts}: {reason}",
                        o.kind,
                        o.dispatches
                    );
                }
                self.leave_live(i);
                self.orders[i].dead = true;
                self.dead += 1;
                Ok(i)
            }
            Event::Forgotten { key } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.acked && !o.forgotten, "{key}: forgotten but not acked and remembered");
                o.forgotten = true;
                Ok(i)
            }
            Event::Revived { key } => {
                let i = self.lookup(key)?;
                let o = &mut self.orders[i];
                ensure!(o.sealed && !o.acked && o.dead, "{key}: revived but not dead");
                // A new life: attempts start again from 1.
                o.dead = false;
                o.dispatches = 0;
                o.revivals += 1;
                self.dead -= 1;
                self.pending += 1;
                Ok(i)
            }
            other => Err(format!(
                "the simulation does not model the event {other:?}; teach broker/tests/sim/model.rs about it"
            )),
        }
    }

    /// Takes a live order out of pending or in flight.
    fn leave_live(&mut self, i: usize) {
        match self.orders[i].in_flight_on.take() {
            Some(worker) => *self.in_flight.get_mut(&worker).expect("counted at dispatch") -= 1,
            None => self.pending -= 1,
        }
    }

    /// Forgets what the events said (not what the peers did): a power cut
    /// may take the unsynced end of the journal, so the model is folded
    /// again from what the reopened journal still holds.
    pub fn reset_events(&mut self) {
        for o in &mut self.orders {
            *o = o.without_events();
        }
        self.partials = 0;
        self.pending = 0;
        self.dead = 0;
        self.held_bytes = 0;
        self.in_flight.clear();
    }

    /// Notes a record that makes its order sealed on replay (a new life
    /// starts the list again). Records of other kinds change nothing.
    pub fn note_proof(&mut self, record: &Appended) {
        use orderly_broker::core::Snapshot;
        let proof = Proof { at: record.at, frame_bytes: record.frame_bytes };
        let (key, proves) = match &record.event {
            Event::Begun { key, .. } => (key, false),
            Event::Accepted { key, .. } => (key, true),
            Event::Sealed { key, .. } | Event::Acked { key } | Event::Discarded { key } => (key, true),
            Event::Restored { key, snapshot: Snapshot::Sealed { .. } | Snapshot::Acked { .. } } => (key, true),
            _ => return,
        };
        let Some(i) = self.find(key) else { return };
        let o = &mut self.orders[i];
        if matches!(record.event, Event::Begun { .. } | Event::Accepted { .. }) {
            o.proofs.clear();
        }
        if proves {
            o.proofs.push(proof);
        }
    }

    /// Partial orders left over from a cut stream whose producer was
    /// answered: they wait for their expiry, nobody waits for them.
    pub fn stale_partials(&self) -> usize {
        let answered = |o: &&OrderModel| o.rejected || o.reply_lost || o.kind == Kind::Abandoned;
        self.orders.iter().filter(|o| o.partial && o.stream_cut).filter(answered).count()
    }

    /// Invariant 6 after a reopen: every order whose Confirm was published
    /// is still sealed in what the journal replays.
    pub fn check_confirmed_kept(&self) -> Check {
        for o in &self.orders {
            ensure!(
                !o.confirm_published || o.sealed_once,
                "invariant 6: {} was confirmed, but the reopened journal does not hold it",
                o.key
            );
        }
        Ok(())
    }

    /// A restarted core knows no worker: everything in flight is pending.
    pub fn on_recovery(&mut self) {
        for o in &mut self.orders {
            if o.in_flight_on.take().is_some() {
                self.pending += 1;
            }
        }
        self.in_flight.clear();
    }

    /// Invariants 1 (totals) and 2: the core's status against the model.
    pub fn check_status(&self, status: &Status) -> Check {
        for w in &status.workers {
            ensure!(
                w.in_flight <= w.capacity,
                "invariant 2: worker {} has {} in flight, capacity {}",
                w.id,
                w.in_flight,
                w.capacity
            );
            let modelled = self.in_flight.get(&w.id).copied().unwrap_or(0);
            ensure!(
                modelled == w.in_flight,
                "worker {}: the events put {modelled} in flight, status says {}",
                w.id,
                w.in_flight
            );
        }
        for (id, &n) in &self.in_flight {
            ensure!(n == 0 || status.workers.iter().any(|w| w.id == *id), "{n} orders in flight on unknown {id}");
        }
        let in_flight: u32 = self.in_flight.values().sum();
        let modelled = (self.partials, self.pending, in_flight as usize, self.dead, self.held_bytes);
        let actual = (
            status.partial_orders,
            status.pending_orders,
            status.in_flight_orders,
            status.dead_letters,
            status.held_bytes,
        );
        ensure!(
            modelled == actual,
            "invariant 1: (partial, pending, in flight, dead, held bytes) from the events {modelled:?}, \
             the core's status {actual:?}"
        );
        Ok(())
    }

    /// Invariant 1 for one order: the core's snapshot of it agrees with the
    /// events (a sealed order that is neither acked nor dead is pending or in
    /// flight, with every item and the right attempt count).
    pub fn check_order(&self, i: usize, snapshot: Option<Event>) -> Check {
        let o = &self.orders[i];
        let key = &o.key;
        match snapshot {
            None => {
                ensure!(!o.partial, "{key}: partial in the events, unknown to the core");
                ensure!(
                    !o.sealed || o.acked,
                    "invariant 1: {key} sealed (dead {}) and never acked, but the core lost it",
                    o.dead
                );
                ensure!(!o.sealed || o.forgotten, "{key}: acked, not forgotten, but the core does not remember it");
            }
            Some(Event::Restored { snapshot: Snapshot::Acked { .. }, .. }) => {
                ensure!(
                    o.sealed && o.acked && !o.forgotten,
                    "{key}: remembered as acked, but acked {} forgotten {}",
                    o.acked,
                    o.forgotten
                );
            }
            Some(Event::Restored { snapshot: Snapshot::Partial { items }, .. }) => {
                ensure!(o.partial, "{key}: partial in the core, not in the events");
                let bytes: u64 = items.iter().map(|(_, d)| d.len() as u64).sum();
                ensure!(bytes == o.partial_bytes, "{key}: partial holds {bytes} bytes, the events {}", o.partial_bytes);
            }
            Some(Event::Restored { snapshot: Snapshot::Sealed { items, attempts, dead, .. }, .. }) => {
                ensure!(o.sealed && !o.acked, "{key}: live in the core, but sealed {} acked {}", o.sealed, o.acked);
                ensure!(dead.is_some() == o.dead, "{key}: dead in the core {:?}, in the events {}", dead, o.dead);
                ensure!(
                    attempts == o.dispatches,
                    "{key}: {attempts} attempts in the core, {} dispatches",
                    o.dispatches
                );
                let expected: Vec<ByteBuf> = (0..o.count).map(|s| item_data(key, s)).collect();
                ensure!(items.to_vec() == expected, "{key}: the core holds other items than were sent");
            }
            Some(other) => return Err(format!("{key}: snapshot is not a Restored event: {other:?}")),
        }
        Ok(())
    }

    /// The dead letters an operator sees are the dead orders of the events,
    /// with their attempts, items and bytes.
    pub fn check_dead_letters(&self, listed: &[DeadLetter]) -> Check {
        let mut modelled: Vec<(&str, &str, u32, usize, u64)> = self
            .orders
            .iter()
            .filter(|o| o.dead)
            .map(|o| (o.key.producer.as_str(), o.key.id.as_str(), o.dispatches, o.count as usize, o.bytes))
            .collect();
        modelled.sort();
        let listed: Vec<(&str, &str, u32, usize, u64)> =
            listed.iter().map(|d| (d.producer.as_str(), d.id.as_str(), d.attempts, d.items, d.bytes)).collect();
        ensure!(modelled == listed, "dead letters: the events say {modelled:?}, the core lists {listed:?}");
        Ok(())
    }

    /// Dead orders, in key order.
    pub fn dead_keys(&self) -> Vec<OrderKey> {
        let mut keys: Vec<OrderKey> = self.orders.iter().filter(|o| o.dead).map(|o| o.key.clone()).collect();
        keys.sort();
        keys
    }

    /// Invariant 5, at quiescence: every order reached its end.
    pub fn check_final(&self) -> Check {
        for o in &self.orders {
            let key = &o.key;
            if o.stream_cut && (o.rejected || o.reply_lost || o.kind == Kind::Abandoned) && !o.sealed {
                // Refused after a crash cut its stream (see `stream_cut`),
                // or abandoned anyway; it may still wait as a partial order
                // for its expiry.
                continue;
            }
            ensure!(!o.partial && o.in_flight_on.is_none(), "invariant 5: {key} not settled");
            ensure!(o.begun, "{key}: never begun");
            if matches!(o.kind, Kind::Gap | Kind::Abandoned) {
                ensure!(o.dropped && !o.sealed, "invariant 3: {:?} order {key} not dropped", o.kind);
                ensure!(o.rejected || o.reply_lost, "invariant 3: the producer of {key} got no Reject");
                continue;
            }
            ensure!(o.sealed, "{key} ({:?}) was sent whole but never sealed", o.kind);
            ensure!(o.acked || o.dead, "invariant 5: {key} sealed but neither acked nor dead-lettered");
            ensure!(o.confirmed || o.reply_lost, "{key}: sealed, its Confirm never lost, but never received");
            match o.kind {
                Kind::Poison => ensure!(
                    o.dead && o.dispatches == self.max_attempts,
                    "invariant 5: poison {key}: dead {} after {} dispatches",
                    o.dead,
                    o.dispatches
                ),
                Kind::Refuse => ensure!(o.dead, "invariant 5: refused {key} not dead-lettered"),
                // Dead only by exhausting its attempts (checked when the
                // DeadLettered event was folded in).
                Kind::Normal | Kind::Gap | Kind::Abandoned => {}
            }
        }
        Ok(())
    }
}
