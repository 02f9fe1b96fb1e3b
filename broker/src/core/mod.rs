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
//!
//! The rooms: `event` (what is recorded and published), `apply` (the only
//! code that changes order state, and its table bookkeeping), `intake`
//! (producers' messages, confirms and rejects), `workers` (control
//! messages: heartbeats, acks, nacks), `dispatch` (pending orders to
//! workers, the payload cache), `timeouts` (time passing: liveness,
//! deadlines, expiry, the dedup window), `recovery` (replay and restart),
//! `status` (the operators' view, dead letters), `table` (the sealed
//! orders' slab: `u32` slots, each key stored once, handles for the
//! queues), `timings` (queue wait
//! and handler duration, for `/metrics`), `notice` (what the
//! operator's log is told: workers joining, lost, broken; dead letters) and
//! `invariants` (the derived counters re-checked against the tables).
//!
//! Redelivery (issue 15): an attempt is spent by a dispatch that failed
//! (nack, deadline, attempt time cap, a lost worker), not by one the worker
//! returned unrun or never received; a spent failure waits out a backoff
//! (`delayed`) unless its worker died; an order is not handed straight
//! back to the worker that dropped it while another has a free credit.

mod apply;
pub mod codec;
mod dispatch;
mod event;
mod intake;
mod invariants;
mod notice;
mod payload;
mod recovery;
mod status;
pub(crate) mod table;
mod timeouts;
mod timings;
mod workers;

use orderly_common::limits::{self, ORDER_BYTES_MAX};
use orderly_common::OrderKey;
// For the tests' items (`tests` uses this module's names).
#[cfg(test)]
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

pub use event::{AcceptedOrder, BatchEntry, Event, Fill, Outbound, Snapshot};
// `GroupView` is defined below, next to `Core`.
pub use notice::{LostWhy, Notice, NOTICES_QUEUED_MAX};
pub use status::{
    Counters, DeadLetter, DeadLetterPage, OrderInfo, OrderItems, OrderPlace, Status, WorkerMetrics, WorkerStatus,
};
pub use timings::{ConfirmTiming, Histogram, Timings, LATENCY_BUCKETS_US};

/// The cores' one time type (see `orderly_common::time`).
pub use orderly_common::time::Millis;

/// Hash maps keyed by order keys. foldhash, randomly seeded per process:
/// SipHash was a quarter of a replay's time; keys come from producers, so
/// the seed stays random.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use payload::PartialItems;
pub use payload::Payload;
use table::{Anchored, Handle, Table};

/// Where the journal holds a sealed order's whole payload: the record of
/// its `Accepted` or of its latest `Restored` copy.
pub type PayloadRef = orderly_journal::RecordAt;

/// Why intake is closed (see [`Core::intake_closed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeClosed {
    /// A `orderly_common::protocol::backpressure` kind.
    pub reason: &'static str,
    pub detail: String,
}

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
    /// Sealed, unacknowledged orders of one producer: past it that
    /// producer's new orders are rejected (`limit_reached`), so one
    /// producer cannot fill `pending_orders_max` and leave the others
    /// unread. Orders begun before it was reached may still be sealed.
    pub pending_orders_per_producer_max: usize,
    /// Item bytes of partial orders (held in RAM until sealed) at which
    /// intake pauses.
    pub partial_bytes_max: u64,
    /// Item bytes of sealed orders kept in RAM; beyond it the newest
    /// orders' payloads are dropped from RAM (written to the journal first
    /// if no single record holds them) and read back to dispatch them.
    pub payload_cache_bytes: u64,
    /// Delay after a failed first attempt; doubled after each further one
    /// (with jitter), up to `retry_delay_max_ms`. 0: no backoff.
    pub retry_delay_initial_ms: u64,
    /// Longest backoff (at most `limits::RETRY_DELAY_MS_MAX`).
    pub retry_delay_max_ms: u64,
    /// Longest time one attempt may be held, even while the worker's
    /// heartbeats list it (more than `ack_timeout_ms`).
    pub attempt_timeout_ms: u64,
    /// Dead letters at which intake closes (`dead_letters` backpressure).
    pub dead_letters_max: usize,
    /// Seeds the backoff's jitter (random in the broker, the simulation's
    /// seed there, so runs repeat).
    pub rand_seed: u64,
    /// Unix ms at the caller's `Millis` 0: wall time is `epoch + now`.
    pub epoch_unix_ms: u64,
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
            pending_orders_per_producer_max: limits::PENDING_ORDERS_PER_PRODUCER_MAX_DEFAULT,
            payload_cache_bytes: limits::PAYLOAD_CACHE_BYTES_DEFAULT,
            partial_bytes_max: limits::PARTIAL_BYTES_MAX_DEFAULT,
            retry_delay_initial_ms: limits::RETRY_DELAY_INITIAL_MS_DEFAULT,
            retry_delay_max_ms: limits::RETRY_DELAY_MAX_MS_DEFAULT,
            attempt_timeout_ms: limits::ATTEMPT_TIMEOUT_MS_DEFAULT,
            dead_letters_max: limits::DEAD_LETTERS_MAX_DEFAULT,
            rand_seed: incarnation,
            epoch_unix_ms: 0,
        }
    }

    fn worker_timeout_ms(&self) -> u64 {
        self.heartbeat_interval_ms * u64::from(self.heartbeat_liveness)
    }
}

#[derive(Debug)]
struct Partial {
    began_ms: Millis,
    /// In one growing buffer while they arrive in order (see
    /// `PartialItems`).
    items: PartialItems,
    bytes: u64,
    /// Its compaction anchor (see `table`), carried to the order it seals.
    anchor: Option<NonZeroU64>,
}

/// What `bytes` of payload in `items` items cost against the byte bounds:
/// the payload plus `limits::ITEM_OVERHEAD_BYTES` an item, so that empty
/// items are not free.
fn charge(bytes: u64, items: usize) -> u64 {
    bytes + items as u64 * limits::ITEM_OVERHEAD_BYTES
}

impl Partial {
    fn charge(&self) -> u64 {
        charge(self.bytes, self.items.len())
    }
}

/// Where an order is: a one-byte tag. The worker of a dispatch is the
/// history's `holder`, a dead letter's reason its `last_reason`: a
/// pending order carries no string (issue 20: ≤ 128 bytes an order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderState {
    Pending,
    /// Dispatched to `History::holder`.
    InFlight,
    /// A dead letter; why is `History::last_reason`.
    Dead,
}

/// A worker's id, shared by the workers map and the orders' histories:
/// recording who holds an order copies a pointer, not the id.
type WorkerId = Arc<str>;

/// Where the journal holds a payload, packed: a record's sequence number
/// is never 0, so `Option<Stored>` takes no more room than `Stored`, and
/// segment id and offset are `u32`s (a segment ends at most one batch past
/// `orderly_journal::SEGMENT_BYTES_TARGET_MAX`, asserted to fit; 4 billion
/// segments are never reached): 16 bytes where `Option<PayloadRef>` took
/// 32, paid by every order of a backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    seq: NonZeroU64,
    segment: u32,
    offset: u32,
}

impl Stored {
    /// `None` for sequence number 0, which no journal record has.
    fn new(at: PayloadRef) -> Option<Stored> {
        let seq = NonZeroU64::new(at.seq)?;
        // The journal's own bound (see above): a journal breaking it is a
        // bug, and a payload the index cannot find again would be lost.
        let fits = |n: u64| {
            u32::try_from(n).unwrap_or_else(|_| {
                panic!(
                    "journal place {at:?} past u32: segments must stay under SEGMENT_BYTES_TARGET_MAX (1 GiB); \
                     a journal whose segments grew past 4 GiB (--journal-segment-bytes above 4 GiB, before 0.5.1) \
                     must be drained by the build that wrote it: nothing was lost, nothing was replayed"
                )
            })
        };
        Some(Stored { seq, segment: fits(at.segment), offset: fits(at.offset) })
    }

    fn at(self) -> PayloadRef {
        PayloadRef { seq: self.seq.get(), segment: self.segment.into(), offset: self.offset.into() }
    }
}

/// Where the journal holds an order's whole payload, or else its anchor: in
/// the 16 bytes of a [`Stored`] (issue 20: the anchor is paid by no
/// order whose payload one record holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// No one record holds its whole payload yet: a sealed partial order,
    /// anchored where it began until a `Restored` copy holds it, or an
    /// order whose record is not written yet (unanchored).
    Unstored { anchor: Option<NonZeroU32> },
    /// The record holding its whole payload (`Accepted`, `AcceptedBatch`,
    /// `Restored`): it anchors the order too, in its segment
    /// (`crate::compaction`'s rule: the latest such record).
    Stored(Stored),
}

const _: () = assert!(std::mem::size_of::<Place>() == std::mem::size_of::<Stored>());

/// A segment id as an anchor kept in 4 bytes: segment ids count from 1 and
/// stay far below 2^32 (a `Stored`'s segment is a `u32` too).
fn anchor_u32(segment: NonZeroU64) -> NonZeroU32 {
    NonZeroU32::try_from(segment).unwrap_or_else(|_| panic!("journal segment {segment} past u32 (see `Stored`)"))
}

impl Anchored for Order {
    fn anchor(&self) -> Option<NonZeroU64> {
        match self.place {
            Place::Stored(stored) => {
                Some(NonZeroU64::new(stored.segment.into()).expect("journal segment ids start at 1"))
            }
            Place::Unstored { anchor } => anchor.map(NonZeroU64::from),
        }
    }

    fn set_anchor(&mut self, anchor: Option<NonZeroU64>) -> Option<NonZeroU64> {
        match &mut self.place {
            // Its payload's record anchors it; a later record (never in an
            // older segment) could only anchor it newer.
            Place::Stored(_) => anchor,
            Place::Unstored { anchor: old } => std::mem::replace(old, anchor.map(anchor_u32)).map(NonZeroU64::from),
        }
    }
}

/// A key in the dedup window: when it was acknowledged, and its anchor
/// (its `Acked`/`Discarded` record's segment, or the order's until then).
/// 16 bytes, and no more as a slab entry's `Option` (the time is stored
/// plus one, a `NonZeroU64`): a remembered key costs its slab entry (48
/// bytes), its hash slot and its handle in `Core::recent_order` (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    /// `at_ms + 1`. Exact milliseconds: the time is recorded
    /// (`Snapshot::Acked`), and a window cut short would forget early.
    at_ms_plus_one: NonZeroU64,
    anchor: Option<NonZeroU32>,
}

impl Remembered {
    fn new(at_ms: Millis, anchor: Option<NonZeroU64>) -> Self {
        let at_ms_plus_one = at_ms.checked_add(1).and_then(NonZeroU64::new).expect("a time short of u64::MAX ms");
        Remembered { at_ms_plus_one, anchor: anchor.map(anchor_u32) }
    }

    /// When it was acknowledged (or its window restarted).
    fn at_ms(&self) -> Millis {
        self.at_ms_plus_one.get() - 1
    }
}

const _: () = assert!(std::mem::size_of::<Option<Remembered>>() == 16);

impl Anchored for Remembered {
    fn anchor(&self) -> Option<NonZeroU64> {
        self.anchor.map(NonZeroU64::from)
    }

    fn set_anchor(&mut self, anchor: Option<NonZeroU64>) -> Option<NonZeroU64> {
        std::mem::replace(&mut self.anchor, anchor.map(anchor_u32)).map(NonZeroU64::from)
    }
}

#[derive(Debug)]
struct Order {
    /// The payload in RAM; `None` once only the journal holds it.
    items: Option<Payload>,
    /// The journal record holding the whole payload, once there is one;
    /// until then its anchor (see [`Place`]).
    place: Place,
    /// The items leave RAM once `stored` is known.
    spilling: bool,
    /// One record holds the whole payload (`Accepted` or `Restored`), or
    /// will at the end of this turn: spilling needs no copy.
    whole: bool,
    count: u32,
    /// Item bytes: at most `ORDER_BYTES_MAX` (and one journal record, whose
    /// length is a `u32`), so 4 bytes where a `u64` would cost 8 an order.
    bytes: u32,
    state: OrderState,
    /// What only dispatched or failed orders have, boxed: most of a
    /// backlog never was, and pays 8 bytes for it instead of 80.
    history: Option<Box<History>>,
    /// Unix ms; 0 when unknown (journals older than 0.3).
    first_seen_unix_ms: u64,
    /// Since when it waits for a worker (sealed, requeued, past its retry
    /// delay, revived): the start of its queue wait. Not recorded. The low
    /// 32 bits of the core's clock (`queued_since`): 4 bytes where 8 would
    /// make every order 8 bytes larger (alignment); waits are timed modulo
    /// 49 days (`queued_for_ms`).
    queued_ms: u32,
}

/// The low 32 bits of `now_ms`, for `Order::queued_ms`.
fn queued_since(now_ms: Millis) -> u32 {
    now_ms as u32
}

/// An order's past, once it has one (see `Order::history`).
#[derive(Debug, Default)]
struct History {
    /// The worker of the latest dispatch (in flight, or taken back since):
    /// the only one whose ack or nack counts once no dispatch is current
    /// (a late ack of a requeued order or a dead letter). `None` until the
    /// first dispatch, and after a restart that compacted it away.
    holder: Option<WorkerId>,
    /// Deliveries so far; the next dispatch is attempt `attempts + 1`.
    /// Here, not in `Order`: an order never dispatched has none, and every
    /// dispatch makes the history anyway (`holder`).
    attempts: u32,
    /// The worker that last returned, lost or failed it: not chosen again
    /// while another has a free credit. Not recorded.
    avoid: Option<WorkerId>,
    /// The last failure's (or requeue's) reason; a dead letter's reason
    /// while it is one.
    last_reason: Option<String>,
    /// Unix ms; 0 when not dead (or unknown).
    dead_since_unix_ms: u64,
    /// Pending but waiting for its retry delay until then (in `delayed`,
    /// not in `pending`). Only a failed or restored order waits.
    retry_at_ms: Option<Millis>,
}

#[derive(Debug)]
struct Worker {
    incarnation: u64,
    capacity: u32,
    /// Orders dispatched to this worker, by handle: a dispatch copies
    /// 8 bytes, not the key.
    in_flight: BTreeMap<Handle, Held>,
    /// Orders its latest heartbeat listed that were not dispatched to it
    /// (held since before a broker restart, or since the broker took them
    /// back): they occupy its slots all the same. At most
    /// `FOREIGN_KEYS_PER_WORKER_MAX`.
    foreign: BTreeSet<OrderKey>,
    /// Its handler cannot run, and why: it is sent nothing.
    broken: Option<String>,
    last_seen_ms: Millis,
    /// The worker is shutting down: dispatch nothing more to it.
    draining: bool,
    nonce: u64,
    /// The worker echoed our welcome: its subscription is live.
    ready: bool,
    /// It returned an order unrun (full, draining, broken) since its last
    /// heartbeat: it is sent nothing until the next heartbeat tells its
    /// state, or a lone worker and the order would bounce between them
    /// at wire speed.
    returning: bool,
    /// Orders it takes in one `dispatches` message (its heartbeat's
    /// `dispatches_max`; 0 or 1: one `dispatch` per order). Since 0.5.
    dispatches_max: u32,
    /// Its topic on the fanout socket, made once and shared by every
    /// message to it.
    topic: Arc<[u8]>,
}

/// One order a worker holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    sent_ms: Millis,
    /// Requeued when no ack arrives by then; each heartbeat that lists the
    /// order moves it to `now + ack_timeout_ms`.
    deadline_ms: Millis,
}

impl Order {
    /// Deliveries so far (see `History::attempts`).
    fn attempts(&self) -> u32 {
        self.history.as_ref().map_or(0, |h| h.attempts)
    }

    /// Sets the deliveries so far; 0 makes no history.
    fn set_attempts(&mut self, attempts: u32) {
        if attempts > 0 || self.history.is_some() {
            self.history_mut().attempts = attempts;
        }
    }

    /// Starts its queue wait at `at_ms` (which may lie ahead: a retry delay).
    fn set_queued(&mut self, at_ms: Millis) {
        self.queued_ms = queued_since(at_ms);
    }

    /// How long it has waited for a worker at `now_ms`: 0 while its wait
    /// lies ahead. Modulo 2^32 ms, so a wait read as ahead (over 24 days)
    /// counts 0 too.
    fn queued_for_ms(&self, now_ms: Millis) -> Millis {
        let waited = queued_since(now_ms).wrapping_sub(self.queued_ms);
        if waited > u32::MAX / 2 {
            0
        } else {
            Millis::from(waited)
        }
    }

    /// Its history, made on first use.
    fn history_mut(&mut self) -> &mut History {
        self.history.get_or_insert_default()
    }

    fn holder(&self) -> Option<&str> {
        self.history.as_ref().and_then(|h| h.holder.as_deref())
    }

    fn holder_id(&self) -> Option<&WorkerId> {
        self.history.as_ref().and_then(|h| h.holder.as_ref())
    }

    fn avoid(&self) -> Option<&str> {
        self.history.as_ref().and_then(|h| h.avoid.as_deref())
    }

    fn last_reason(&self) -> Option<&str> {
        self.history.as_ref().and_then(|h| h.last_reason.as_deref())
    }

    fn retry_at_ms(&self) -> Option<Millis> {
        self.history.as_ref().and_then(|h| h.retry_at_ms)
    }

    /// Sets or clears its retry time (clearing makes no history).
    fn set_retry_at(&mut self, at: Option<Millis>) {
        match (at, self.history.as_mut()) {
            (None, None) => {}
            (at, Some(history)) => history.retry_at_ms = at,
            (at, None) => self.history_mut().retry_at_ms = at,
        }
    }

    fn dead_since_unix_ms(&self) -> u64 {
        self.history.as_ref().map_or(0, |h| h.dead_since_unix_ms)
    }

    /// Why the order is a dead letter, if it is one.
    fn dead_reason(&self) -> Option<String> {
        match self.state {
            OrderState::Dead => Some(self.last_reason().unwrap_or_default().to_owned()),
            OrderState::Pending | OrderState::InFlight => None,
        }
    }

    fn charge(&self) -> u64 {
        charge(u64::from(self.bytes), self.count as usize)
    }

    /// The record holding its whole payload, once there is one.
    fn stored(&self) -> Option<Stored> {
        match self.place {
            Place::Stored(stored) => Some(stored),
            Place::Unstored { .. } => None,
        }
    }

    /// The journal holds its whole payload at `at`: its items may leave
    /// RAM, and that record anchors it. The anchor it gives up (see
    /// [`Anchored::set_anchor`]). Sequence numbers start at 1
    /// (`orderly_journal`); a 0 would be a journal bug: the payload stays
    /// in RAM then, and the order where it was anchored.
    fn set_stored(&mut self, at: PayloadRef) -> Option<NonZeroU64> {
        let Some(stored) = Stored::new(at) else { return NonZeroU64::new(at.segment) };
        let old = self.anchor();
        self.place = Place::Stored(stored);
        if self.spilling {
            self.spilling = false;
            self.items = None; // counted out of the cache by `spill`
        }
        old
    }

    /// `worker` holds the current dispatch or, when none is current
    /// (requeued, dead-lettered), held the latest one.
    fn held_by(&self, worker: &str) -> bool {
        self.holder() == Some(worker)
    }

    /// The worker holding its current dispatch, if one is current.
    fn in_flight_to(&self) -> Option<&str> {
        match self.state {
            OrderState::InFlight => self.holder(),
            OrderState::Pending | OrderState::Dead => None,
        }
    }
}

impl Worker {
    /// Slots not taken by orders dispatched to it nor by ones it says it
    /// holds besides.
    fn free_credits(&self) -> u32 {
        self.capacity.saturating_sub((self.in_flight.len() + self.foreign.len()) as u32)
    }

    /// Orders may be sent to it now.
    fn takes_orders(&self) -> bool {
        self.ready && !self.draining && self.broken.is_none() && !self.returning
    }
}

/// Keys of orders a worker holds without the broker's dispatch that are
/// counted against its credits: as many as a heartbeat may list.
const FOREIGN_KEYS_PER_WORKER_MAX: usize = limits::HEARTBEAT_IN_FLIGHT_MAX;

/// The broker's state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    /// Keys shared with their `ItemStored` records (no copy of the key an
    /// item).
    partials: BTreeMap<Arc<OrderKey>, Partial>,
    /// A key reused to look up each item's partial order, so an item that
    /// arrives allocates no key (see `intake`).
    item_key: OrderKey,
    /// Anchors of partial orders that left (the tables keep their own),
    /// until the anchor counts take them (see `recovery`).
    released_anchors: Vec<NonZeroU64>,
    /// Sealed orders, each key stored once (see `table`); the queues below
    /// hold their handles.
    orders: Table<Order>,
    /// Keys of acknowledged orders still in the dedup window, with when.
    /// In a table like the orders' (each key stored once, in a slab), so
    /// an acknowledgement copies the key once, not twice.
    recent: Table<Remembered>,
    /// `recent` in acknowledgement order, for expiry; may hold stale
    /// handles (a key that left, or whose time moved on: a key
    /// remembered again gets a new handle, see `Table::renew`), so the
    /// time is not kept twice.
    recent_order: VecDeque<Handle>,
    /// Dispatch queue; may hold stale keys (acked while pending), skipped.
    pending: VecDeque<Handle>,
    pending_len: usize,
    /// Pending orders waiting for their retry delay, by when it ends
    /// (counted in `pending_len` too).
    delayed: BTreeSet<(Millis, OrderKey)>,
    in_flight_len: usize,
    /// `pending_len + in_flight_len` by producer (no zero entries), for
    /// `pending_orders_per_producer_max`.
    live_by_producer: HashMap<String, usize>,
    dead_len: usize,
    /// Item bytes held by partial and live orders. Like the two below, it
    /// includes `limits::ITEM_OVERHEAD_BYTES` an item (see `charge`).
    held_bytes: u64,
    /// Item bytes of sealed orders in RAM (see `payload_cache_bytes`).
    cached_bytes: u64,
    /// Item bytes of partial orders (always in RAM).
    partial_bytes: u64,
    /// Sealed orders whose items are in RAM, oldest first; may hold stale
    /// keys. The newest leave RAM first: they are dispatched last.
    cached: VecDeque<Handle>,
    /// Replaying the journal: payloads stay on disk.
    replaying: bool,
    workers: BTreeMap<WorkerId, Worker>,
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
    /// When an ack last retired an order (Unix ms; 0: none yet), for `/status`.
    last_ack_unix_ms: u64,
    /// The backoff's jitter (see `rand_seed`).
    rng: Rng,
    notices: VecDeque<Notice>,
    notices_omitted: u64,
    /// Inputs to handle before debug builds check the invariants again
    /// (see `invariants`).
    invariant_check_skip: u64,
    /// Debug builds check the invariants (see [`Core::set_invariant_checks`]).
    invariant_checks: bool,
    /// Since when the IO loop has not read intake because the journal's
    /// disk is full (see [`Core::set_disk_paused`]).
    disk_paused_since: Option<Millis>,
    /// What the heartbeats say of the group (see [`Core::set_group_view`]).
    group_view: GroupView,
    /// Queue wait and handler duration (see `timings`).
    timings: Timings,
    /// The confirms waiting in `confirms`, for the loop's latency
    /// histogram; moved to `confirm_timing` when they are flushed.
    confirms_timing: Option<ConfirmTiming>,
    /// The latest flushed confirms' timing (see [`Core::take_confirm_timing`]).
    confirm_timing: Option<ConfirmTiming>,
}

/// A group member's view of the group, announced in its heartbeats;
/// the default (a single broker) is `None`, `None`, 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupView {
    pub member: Option<u64>,
    pub leader: Option<u64>,
    pub term: u64,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        assert!(config.heartbeat_interval_ms > 0 && config.heartbeat_liveness > 0);
        assert!(config.max_attempts > 0);
        assert!(config.retry_delay_initial_ms <= config.retry_delay_max_ms);
        assert!(config.retry_delay_max_ms <= limits::RETRY_DELAY_MS_MAX);
        assert!(config.attempt_timeout_ms > config.ack_timeout_ms);
        Core {
            nonce_next: config.incarnation | 1,
            rng: Rng(orderly_common::rng::SplitMix64::new(config.rand_seed)),
            config,
            partials: BTreeMap::new(),
            item_key: OrderKey::new(String::new(), String::new()),
            released_anchors: Vec::new(),
            orders: Table::default(),
            recent: Table::default(),
            recent_order: VecDeque::new(),
            pending: VecDeque::new(),
            pending_len: 0,
            delayed: BTreeSet::new(),
            in_flight_len: 0,
            live_by_producer: HashMap::default(),
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
            last_ack_unix_ms: 0,
            notices: VecDeque::new(),
            notices_omitted: 0,
            invariant_check_skip: 0,
            invariant_checks: true,
            disk_paused_since: None,
            group_view: GroupView::default(),
            timings: Timings::default(),
            confirms_timing: None,
            confirm_timing: None,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Sets what heartbeats announce of the group (the IO loop of a group
    /// member calls it on every change of leader or term).
    pub fn set_group_view(&mut self, view: GroupView) {
        self.group_view = view;
    }

    pub fn group_view(&self) -> GroupView {
        self.group_view
    }

    /// Next state change to record, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next message to publish. Publish only after the events produced
    /// before it are durable.
    pub fn poll_outbound(&mut self) -> Option<Outbound> {
        if !self.confirms.is_empty() {
            // Confirms go out before the turn's dispatches: a producer's
            // confirm latency is what users wait on, and a dispatch sent
            // first sets the worker (on the same cores) to work ahead of it.
            let queued = self.outbound.len();
            self.flush_confirms();
            let confirms = self.outbound.len() - queued;
            self.outbound.rotate_right(confirms);
        }
        self.outbound.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Millis {
        let timeout = self.config.worker_timeout_ms();
        let expiry = self.workers.values().map(|w| w.last_seen_ms + timeout).min();
        let deadline = self.workers.values().flat_map(|w| w.in_flight.values().map(|h| h.deadline_ms)).min();
        let retry = self.delayed.first().map(|(at, _)| *at);
        [Some(self.heartbeat_due_ms), Some(self.partial_sweep_due_ms), expiry, deadline, retry]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
    }

    /// False while a bound on partial orders, pending orders or held bytes
    /// is reached: the IO loop stops reading intake until it is true again,
    /// so producers block at their high-water mark and nothing is dropped.
    pub fn intake_open(&self) -> bool {
        self.dead_len < self.config.dead_letters_max
            && self.partials.len() < self.config.partial_orders_max
            && self.pending_len + self.in_flight_len < self.config.pending_orders_max
            && self.held_bytes < self.config.pending_bytes_max
            && self.partial_bytes < self.config.partial_bytes_max
    }

    /// Which bound keeps intake closed, if one does: a
    /// `orderly_common::protocol::backpressure` kind and a detail for
    /// people (for the `backpressure` announcement and `status`).
    pub fn intake_closed(&self) -> Option<IntakeClosed> {
        use orderly_common::protocol::backpressure;
        let c = &self.config;
        let (reason, detail) = if self.dead_len >= c.dead_letters_max {
            (
                backpressure::DEAD_LETTERS,
                format!(
                    "{} dead letters (limit {}): inspect them with `orderly-broker dlq list`, then \
                     `orderly-broker dlq retry` or `orderly-broker dlq delete` them",
                    self.dead_len, c.dead_letters_max
                ),
            )
        } else if self.partials.len() >= c.partial_orders_max {
            (
                backpressure::PARTIAL_ORDERS,
                format!("{} open partial orders (limit {})", self.partials.len(), c.partial_orders_max),
            )
        } else if self.pending_len + self.in_flight_len >= c.pending_orders_max {
            let held = self.pending_len + self.in_flight_len;
            (backpressure::PENDING_ORDERS, format!("{held} orders await workers (limit {})", c.pending_orders_max))
        } else if self.held_bytes >= c.pending_bytes_max {
            (
                backpressure::PENDING_BYTES,
                format!("{} item bytes held (limit {})", self.held_bytes, c.pending_bytes_max),
            )
        } else if self.partial_bytes >= c.partial_bytes_max {
            let bytes = self.partial_bytes;
            (
                backpressure::PARTIAL_BYTES,
                format!("{bytes} item bytes of partial orders (limit {})", c.partial_bytes_max),
            )
        } else {
            return None;
        };
        Some(IntakeClosed { reason, detail })
    }

    /// Queue wait and handler duration so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The confirms the latest [`Core::poll_outbound`] released: how many
    /// orders and when their input was read. The loop takes it after
    /// publishing them; untaken, the next flush replaces it.
    pub fn take_confirm_timing(&mut self) -> Option<ConfirmTiming> {
        self.confirm_timing.take()
    }

    /// Confirms wait for this turn's commit: it must be durable.
    pub fn confirms_waiting(&self) -> bool {
        !self.confirms.is_empty()
    }

    /// Wall time (Unix ms) of the input being handled.
    fn now_unix_ms(&self) -> u64 {
        self.config.epoch_unix_ms.saturating_add(self.now_ms)
    }

    /// Keys in the dedup window.
    pub fn remembered_keys(&self) -> usize {
        self.recent.len()
    }
}

/// The backoff's jitter: a seeded SplitMix64 (the simulation replays a
/// seed exactly).
#[derive(Debug)]
struct Rng(orderly_common::rng::SplitMix64);

impl Rng {
    /// Uniform in `lo..=hi` (`lo <= hi`).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo;
        if span == u64::MAX {
            return self.0.next_u64();
        }
        lo + self.0.next_u64() % (span + 1)
    }
}

#[cfg(test)]
mod tests;
