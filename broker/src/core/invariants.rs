//! [`Core::check_invariants`]: the derived counters, totals and indexes the
//! core keeps up to date at many sites, recomputed from the primary tables
//! (orders, partials, workers, queues, the dedup window). A mismatch is a
//! bug in the core, never bad input, so it panics.
//!
//! Debug builds run the check after every input while the tables are small
//! (unit tests, the simulation), and spaced out while they are large, at an
//! amortised cost of `INVARIANT_CHECK_ENTRIES_PER_INPUT` entries per input;
//! release builds never run it on their own.

use std::fmt::Debug;

use orderly_common::OrderKey;

/// foldhash, as the core's tables: SipHash is slower, the more so in a
/// debug build.
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use super::{Core, Handle, HashMap, Order, OrderState, FOREIGN_KEYS_PER_WORKER_MAX};

/// Table entries (orders, partial orders, queued and remembered keys,
/// items in RAM) up to which debug builds re-check every invariant after
/// every input: a broken counter is caught at the input that broke it.
pub(super) const INVARIANT_CHECK_ENTRIES_FULL_MAX: usize = 256;

/// Entries checked per input, amortised, beyond that: the next check comes
/// 2^k inputs later, with 2^k at least the last check's entries over this.
/// An entry costs about a microsecond in a debug build, a whole input of the
/// core alone about ten (measured with 100k orders: +50 % for the core, less
/// for a debug broker with its IO); the scenario tests run debug brokers
/// with ~100k orders.
pub(super) const INVARIANT_CHECK_ENTRIES_PER_INPUT: usize = 4;

const _: () = assert!(INVARIANT_CHECK_ENTRIES_PER_INPUT > 0);
const _: () = assert!(INVARIANT_CHECK_ENTRIES_PER_INPUT <= INVARIANT_CHECK_ENTRIES_FULL_MAX);

/// What the tables add up to, to compare with the stored counters.
#[derive(Debug, Default)]
struct Totals {
    pending: usize,
    in_flight: usize,
    dead: usize,
    /// Item bytes of partial orders (with the per-item charge, as all three).
    partial_bytes: u64,
    /// Item bytes of sealed orders.
    order_bytes: u64,
    /// Item bytes of sealed orders counted in the cache.
    cached_bytes: u64,
    /// Pending and in-flight orders by producer.
    live_by_producer: HashMap<String, usize>,
    /// Entries and items visited: the check's cost.
    entries: usize,
}

/// Panics with the counter's name and both values when they differ.
fn check_counter<T: PartialEq + Debug>(name: &str, stored: T, recomputed: T) {
    assert!(
        stored == recomputed,
        "core invariant broken: `{name}` is {stored:?} but the tables add up to {recomputed:?}"
    );
}

fn item_bytes<D: AsRef<[u8]>>(items: impl IntoIterator<Item = D>) -> u64 {
    items.into_iter().map(|d| d.as_ref().len() as u64).sum()
}

impl Core {
    /// Recomputes every derived counter and index from the tables and
    /// panics, naming it, on any mismatch. O(entries + items in RAM).
    pub fn check_invariants(&self) {
        self.check_all();
        assert_eq!(self.intake_open(), self.intake_closed().is_none(), "intake_open and intake_closed disagree");
    }

    /// Called at the end of every input (`handle_*`, `retry_dead`,
    /// `finish_recovery`): a check in debug builds, amortised O(1).
    pub(super) fn after_input(&mut self) {
        if !cfg!(debug_assertions) || !self.invariant_checks {
            return;
        }
        if self.invariant_check_skip > 0 {
            self.invariant_check_skip -= 1;
            return;
        }
        let entries = self.check_all();
        if entries > INVARIANT_CHECK_ENTRIES_FULL_MAX {
            let every = (entries / INVARIANT_CHECK_ENTRIES_PER_INPUT).next_power_of_two();
            self.invariant_check_skip = every as u64 - 1;
        }
    }

    /// Turns debug builds' checks after inputs off (or on again): they
    /// allocate, so a test counting the core's own allocations turns them
    /// off. Release builds never check on their own.
    pub fn set_invariant_checks(&mut self, enabled: bool) {
        self.invariant_checks = enabled;
    }

    /// Every check; returns the entries visited.
    fn check_all(&self) -> usize {
        let mut totals = Totals::default();
        self.check_partials(&mut totals);
        self.check_orders(&mut totals);
        check_counter("pending_len", self.pending_len, totals.pending);
        check_counter("in_flight_len", self.in_flight_len, totals.in_flight);
        check_counter("dead_len", self.dead_len, totals.dead);
        check_counter("partial_bytes", self.partial_bytes, totals.partial_bytes);
        check_counter("held_bytes", self.held_bytes, totals.partial_bytes + totals.order_bytes);
        check_counter("cached_bytes", self.cached_bytes, totals.cached_bytes);
        check_counter("live_by_producer", &self.live_by_producer, &totals.live_by_producer);
        totals.entries += self.check_workers();
        totals.entries += self.check_queues();
        totals.entries += self.check_delayed();
        totals.entries += self.check_recent();
        totals.entries
    }

    /// Each partial order's byte count is its items'; a key is a partial
    /// order, a sealed one or a remembered one, never two of them.
    fn check_partials(&self, totals: &mut Totals) {
        for (key, partial) in &self.partials {
            let bytes = item_bytes(partial.items.iter().map(|(_, d)| d));
            assert!(
                partial.bytes == bytes,
                "core invariant broken: partial {key} has {} bytes, its items {bytes}",
                partial.bytes
            );
            assert!(!self.orders.contains_key(key), "core invariant broken: {key} is both partial and sealed");
            assert!(!self.recent.contains_key(key), "core invariant broken: {key} is both partial and acknowledged");
            totals.partial_bytes += partial.charge();
            totals.entries += 1 + partial.items.len();
        }
    }

    fn check_orders(&self, totals: &mut Totals) {
        for (key, order) in self.orders.iter() {
            let key = &key.to_key();
            match order.state {
                OrderState::Pending => totals.pending += 1,
                OrderState::InFlight => totals.in_flight += 1,
                OrderState::Dead => totals.dead += 1,
            }
            if order.state != OrderState::Dead {
                *totals.live_by_producer.entry(key.producer.clone()).or_default() += 1;
            }
            totals.order_bytes += order.charge();
            if order.items.is_some() && !order.spilling {
                totals.cached_bytes += order.charge();
            }
            assert!(!self.recent.contains_key(key), "core invariant broken: {key} is both sealed and acknowledged");
            self.check_payload(key, order);
            if !self.replaying {
                self.check_order_live(key, order);
            }
            totals.entries += 1 + order.items.as_ref().map_or(0, |items| items.len());
        }
    }

    /// An order's items in RAM match its counts; it is spilling only while
    /// its items wait for the record that will hold them.
    fn check_payload(&self, key: &OrderKey, order: &Order) {
        if let Some(items) = &order.items {
            // Messages are formatted only on failure: this runs per order.
            let (count, bytes) = (items.len(), items.bytes());
            assert!(
                order.count as usize == count,
                "core invariant broken: {key} counts {} items, holds {count}",
                order.count
            );
            assert!(
                u64::from(order.bytes) == bytes,
                "core invariant broken: {key} counts {} bytes, holds {bytes}",
                order.bytes
            );
        }
        if order.spilling {
            assert!(order.items.is_some(), "core invariant broken: {key} is spilling without items in RAM");
            assert!(order.stored().is_none(), "core invariant broken: {key} is spilling but already stored");
        }
    }

    /// Outside a replay (which leaves payloads on disk until
    /// `payload_stored`, and knows no worker): the payload is in RAM or in
    /// the journal, an order in flight is held by its worker, and pending
    /// orders have attempts left (`fail` and `finish_recovery`
    /// dead-letter the others).
    fn check_order_live(&self, key: &OrderKey, order: &Order) {
        assert!(
            order.items.is_some() || order.stored().is_some(),
            "core invariant broken: {key}'s payload is neither in RAM nor in the journal"
        );
        let max = self.config.max_attempts;
        match order.state {
            OrderState::Pending => {
                assert!(
                    order.attempts() < max,
                    "core invariant broken: pending {key} has used {} attempts",
                    order.attempts()
                )
            }
            OrderState::InFlight => {
                assert!(
                    (1..=max).contains(&order.attempts()),
                    "core invariant broken: {key} in flight at attempt {}",
                    order.attempts()
                );
                let worker = order.holder().unwrap_or_default();
                let handle = self.orders.handle(key).expect("iterated from the table");
                let held = self.workers.get(worker).is_some_and(|w| w.in_flight.contains_key(&handle));
                assert!(held, "core invariant broken: {key} is in flight on {worker}, which does not hold it");
            }
            OrderState::Dead => {}
        }
    }

    /// Each worker holds only orders in flight on it, none before its
    /// welcome; together they hold every order in flight (outside a replay).
    fn check_workers(&self) -> usize {
        let mut held = 0;
        for (id, worker) in &self.workers {
            assert!(worker.ready || worker.in_flight.is_empty(), "core invariant broken: {id} holds orders unwelcomed");
            for (&handle, h) in &worker.in_flight {
                let key = self.orders.key(handle).map(|k| k.to_key());
                let key = key.unwrap_or_else(|| panic!("core invariant broken: worker {id} holds an order that left"));
                let on_it = self.orders.by_handle(handle).is_some_and(|o| o.in_flight_to() == Some(&**id));
                assert!(on_it, "core invariant broken: worker {id} holds {key}, which is not in flight on it");
                assert!(h.sent_ms <= h.deadline_ms, "core invariant broken: {key}'s deadline precedes its dispatch");
                assert!(
                    h.deadline_ms <= h.sent_ms + self.config.attempt_timeout_ms,
                    "core invariant broken: {key}'s deadline is beyond the attempt time cap"
                );
            }
            assert!(
                worker.foreign.len() <= FOREIGN_KEYS_PER_WORKER_MAX,
                "core invariant broken: worker {id} has {} foreign keys",
                worker.foreign.len()
            );
            for key in &worker.foreign {
                let handle = self.orders.handle(key);
                assert!(
                    !handle.is_some_and(|handle| worker.in_flight.contains_key(&handle)),
                    "core invariant broken: worker {id} counts {key} both as dispatched and as foreign"
                );
            }
            held += worker.in_flight.len() + worker.foreign.len();
        }
        if !self.replaying {
            let foreign: usize = self.workers.values().map(|w| w.foreign.len()).sum();
            check_counter("in_flight_len (held by workers)", self.in_flight_len, held - foreign);
        }
        self.workers.len() + held
    }

    /// The queues may hold stale keys, but never miss one: every pending
    /// order is in `pending`, every order counted in the cache in `cached`
    /// (`spill` finds what to drop there).
    fn check_queues(&self) -> usize {
        let pending: HashSet<Handle> = self.pending.iter().copied().collect();
        let cached: HashSet<Handle> = self.cached.iter().copied().collect();
        for (handle, key, order) in self.orders.iter_handles() {
            if order.state == OrderState::Pending && order.retry_at_ms().is_none() {
                assert!(
                    pending.contains(&handle),
                    "core invariant broken: pending {key:?} is not in the pending queue"
                );
            }
            if order.items.is_some() && !order.spilling {
                assert!(cached.contains(&handle), "core invariant broken: cached {key:?} is not in the cache queue");
            }
        }
        self.pending.len() + self.cached.len()
    }

    /// The delayed set holds exactly the pending orders with a retry time,
    /// at that time (`release_due` and `poll_timeout` read it).
    fn check_delayed(&self) -> usize {
        for (at, key) in &self.delayed {
            let order = self.orders.get(key);
            assert!(
                order.is_some_and(|o| o.state == OrderState::Pending && o.retry_at_ms() == Some(*at)),
                "core invariant broken: delayed {key} ({at}) is not a pending order delayed until then"
            );
        }
        let delayed = self.orders.values().filter(|o| o.retry_at_ms().is_some()).count();
        check_counter("delayed (orders with a retry time)", self.delayed.len(), delayed);
        self.delayed.len()
    }

    /// Every remembered key has its current handle in `recent_order`, so
    /// `sweep_recent` forgets it in time.
    fn check_recent(&self) -> usize {
        let order: HashSet<Handle> = self.recent_order.iter().copied().collect();
        for (handle, key, remembered) in self.recent.iter_handles() {
            assert!(
                order.contains(&handle),
                "core invariant broken: remembered {key:?} ({}) is not queued to expire",
                remembered.at_ms()
            );
        }
        self.recent.len() + self.recent_order.len()
    }

    /// Knocks `pending_len` off by one, to show the check catches it.
    #[cfg(test)]
    pub(super) fn desync_pending_len_for_test(&mut self) {
        self.pending_len += 1;
    }
}
