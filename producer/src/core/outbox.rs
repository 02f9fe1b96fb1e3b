//! The [`Outbox`]: orders sent (or being sent) and not yet answered, with
//! their items, so any of them can be sent again; bounded in orders and
//! bytes. The [`Core`](super::Core) owns one; it is public for reading
//! (the io layer checks bounds and ids against it).

use std::collections::BTreeSet;

use orderly_common::protocol::RejectReason;
use orderly_common::time::Millis;

use crate::limits::{
    CONFIRM_TIMEOUT_DEFAULT, OUTBOX_BYTES_MAX_DEFAULT, OUTBOX_ORDERS_MAX_DEFAULT, RESEND_BACKOFF_MAX_DEFAULT,
    TRANSMIT_RETRY_DELAY,
};
use crate::HashMap;

/// The resolution of [`Millis`]: a time stamped `now` happened somewhere
/// in `[now, now + CLOCK_TICK_MS)`, so a wait measured from it adds a tick.
pub const CLOCK_TICK_MS: Millis = 1;

/// A duration in [`Millis`], saturating (no realistic duration overflows).
pub fn millis(duration: std::time::Duration) -> Millis {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How the outbox resends and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Wait this long after an order went out before sending it again.
    pub confirm_timeout_ms: Millis,
    /// The wait doubles with each attempt up to this cap.
    pub resend_backoff_max_ms: Millis,
    /// Orders held at most (see [`Outbox::has_room`]).
    pub orders_max: usize,
    /// Item bytes held at most.
    pub bytes_max: u64,
    /// Retry delay for an order the socket would not take (not an attempt).
    pub transmit_retry_ms: Millis,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            confirm_timeout_ms: millis(CONFIRM_TIMEOUT_DEFAULT),
            resend_backoff_max_ms: millis(RESEND_BACKOFF_MAX_DEFAULT),
            orders_max: OUTBOX_ORDERS_MAX_DEFAULT,
            bytes_max: OUTBOX_BYTES_MAX_DEFAULT,
            transmit_retry_ms: millis(TRANSMIT_RETRY_DELAY),
        }
    }
}

impl OutboxConfig {
    /// How long to wait for an answer after attempt `attempt` (1 = the
    /// first transmission): `confirm_timeout × 2^(attempt-1)`, capped.
    pub fn resend_delay_ms(&self, attempt: u32) -> Millis {
        let doublings = attempt.saturating_sub(1).min(63);
        let cap = self.resend_backoff_max_ms.max(self.confirm_timeout_ms);
        self.confirm_timeout_ms.checked_mul(1u64 << doublings).map_or(cap, |delay| delay.min(cap))
    }
}

/// An order that left the outbox because the broker answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The order id.
    pub id: String,
    /// `Ok` for a Confirm, the broker's reason for a Reject.
    pub verdict: Result<(), RejectReason>,
    /// Complete transmissions of the order (1 = no resend was needed).
    pub attempts: u32,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Begun with `Producer::begin`, items still coming: never resent (the
    /// broker has no Finish yet, and ours would come too early).
    Streaming,
    /// Complete: due for transmission at `next_at`.
    Complete { next_at: Millis },
}

#[derive(Debug)]
struct Entry {
    items: Vec<Vec<u8>>,
    bytes: u64,
    phase: Phase,
    /// Complete transmissions so far.
    attempts: u32,
}

/// Orders sent (or being sent) and not yet answered, with their items, so
/// any of them can be sent again; bounded in orders and bytes.
///
/// An order is *due* when it has never gone out completely, when the socket
/// refused it last time ([`Outbox::transmit_blocked`]), or when its answer
/// is overdue: `confirm_timeout` after its first transmission, then with
/// the wait doubling up to `resend_backoff_max`. Resending is safe: the
/// broker keys orders by (producer, order id), confirms a sealed order
/// again instead of sealing it twice, and fills a partial order's gaps.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    entries: HashMap<String, Entry>,
    /// `(next_at, id)` of every complete order: the next due is the first.
    schedule: BTreeSet<(Millis, String)>,
    bytes: u64,
    /// Answers for orders not in the outbox (repeats after a resend).
    unexpected_answers: u64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Self {
        Outbox { config, entries: HashMap::default(), schedule: BTreeSet::new(), bytes: 0, unexpected_answers: 0 }
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Orders held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no order awaits an answer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Item bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True if `id` awaits an answer (or is being streamed).
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Answers that matched no order in the outbox: repeated confirms of a
    /// resent order, or answers meant for an earlier run.
    pub fn unexpected_answers(&self) -> u64 {
        self.unexpected_answers
    }

    /// True if `orders` more orders with `bytes` more item bytes fit now.
    pub fn has_room(&self, orders: usize, bytes: u64) -> bool {
        self.entries.len() + orders <= self.config.orders_max && self.bytes + bytes <= self.config.bytes_max
    }

    /// True if that much could ever fit (in an empty outbox): when false,
    /// waiting for room is pointless.
    pub fn could_fit(&self, orders: usize, bytes: u64) -> bool {
        orders <= self.config.orders_max && bytes <= self.config.bytes_max
    }

    /// Ids of the orders held, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.entries.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The items of an order held.
    pub fn items(&self, id: &str) -> Option<&[Vec<u8>]> {
        self.entries.get(id).map(|entry| entry.items.as_slice())
    }

    /// Item bytes of an order held.
    pub fn order_bytes(&self, id: &str) -> Option<u64> {
        self.entries.get(id).map(|entry| entry.bytes)
    }

    /// Complete transmissions of an order held.
    pub fn attempts(&self, id: &str) -> Option<u32> {
        self.entries.get(id).map(|entry| entry.attempts)
    }

    /// Adds a complete order, due at once. The caller checked that `id` is
    /// not held (an invariant, asserted) and, for new orders, that there is
    /// room; orders recovered from disk are added whatever the bounds (they
    /// were accepted before), and only delay new sends.
    pub fn insert(&mut self, id: String, items: Vec<Vec<u8>>, now: Millis) {
        assert!(!self.entries.contains_key(&id), "order {id:?} is already in the outbox");
        let bytes = items_bytes(&items);
        self.bytes += bytes;
        self.schedule.insert((now, id.clone()));
        let entry = Entry { items, bytes, phase: Phase::Complete { next_at: now }, attempts: 0 };
        self.entries.insert(id, entry);
    }

    /// Adds an order whose items will come one by one ([`Outbox::push_item`]).
    pub fn begin_stream(&mut self, id: String) {
        assert!(!self.entries.contains_key(&id), "order {id:?} is already in the outbox");
        let entry = Entry { items: Vec::new(), bytes: 0, phase: Phase::Streaming, attempts: 0 };
        self.entries.insert(id, entry);
    }

    /// Appends an item to a streamed order and returns its seq; `None` if
    /// the order is no longer held (the broker rejected it meanwhile).
    pub fn push_item(&mut self, id: &str, item: Vec<u8>) -> Option<u32> {
        let entry = self.entries.get_mut(id)?;
        assert_eq!(entry.phase, Phase::Streaming, "order {id:?} is not being streamed");
        let seq = u32::try_from(entry.items.len()).expect("items per order are bounded far below u32::MAX");
        let bytes = item.len() as u64;
        entry.items.push(item);
        entry.bytes += bytes;
        self.bytes += bytes;
        Some(seq)
    }

    /// Ends a stream: the order is complete. If its Finish went out (every
    /// message of the stream was transmitted) this counts as its first
    /// attempt; otherwise the whole order is due at once. False if the
    /// order is no longer held.
    pub fn finish_stream(&mut self, id: &str, transmitted: bool, now: Millis) -> bool {
        let Some(entry) = self.entries.get_mut(id) else { return false };
        assert_eq!(entry.phase, Phase::Streaming, "order {id:?} is not being streamed");
        entry.phase = Phase::Complete { next_at: now };
        self.schedule.insert((now, id.to_owned()));
        if transmitted {
            self.transmitted(id, now);
        }
        true
    }

    /// Drops an order without an answer (a stream abandoned before its
    /// Finish). True if it was held.
    pub fn abandon(&mut self, id: &str) -> bool {
        self.remove(id).is_some()
    }

    /// The due order with the earliest deadline, if any is due at `now`.
    pub fn next_due(&self, now: Millis) -> Option<&str> {
        self.schedule.first().filter(|(at, _)| *at <= now).map(|(_, id)| id.as_str())
    }

    /// Every order due at `now`, earliest deadline first.
    pub fn due(&self, now: Millis) -> impl Iterator<Item = &str> {
        self.schedule.iter().take_while(move |(at, _)| *at <= now).map(|(_, id)| id.as_str())
    }

    /// When the next order falls due (it may be in the past).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.schedule.first().map(|(at, _)| *at)
    }

    /// The whole order (Begin, items, Finish) went out at `now`: one more
    /// attempt, and the next is due after the backoff for that attempt —
    /// plus one tick: `now` is a whole millisecond, so the send happened
    /// anywhere in `[now, now + 1)`, and a resend must never come before
    /// the full backoff has passed.
    pub fn transmitted(&mut self, id: &str, now: Millis) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        entry.attempts = entry.attempts.saturating_add(1);
        let next_at = now.saturating_add(self.config.resend_delay_ms(entry.attempts)).saturating_add(CLOCK_TICK_MS);
        reschedule(&mut self.schedule, id, entry, next_at);
    }

    /// Every complete order is due at `now` (a new leader took over: what
    /// the old one did not confirm may be lost with it). Streams still
    /// being streamed are not: they go whole at their Finish.
    pub fn all_due(&mut self, now: Millis) {
        for (id, entry) in &mut self.entries {
            if matches!(entry.phase, Phase::Complete { .. }) {
                reschedule(&mut self.schedule, id, entry, now);
            }
        }
    }

    /// The socket would not take the order (high-water mark, or no broker
    /// connected): try again shortly. Not an attempt — it may have gone out
    /// in part, which is harmless, since the retry sends it all again.
    pub fn transmit_blocked(&mut self, id: &str, now: Millis) {
        let Some(entry) = self.entries.get_mut(id) else { return };
        let next_at = now.saturating_add(self.config.transmit_retry_ms);
        reschedule(&mut self.schedule, id, entry, next_at);
    }

    /// The broker answered `id`: the order leaves the outbox. `None` (and
    /// counted as unexpected) for an order not held, and for a Confirm of an
    /// order still being streamed (an answer to an earlier order with the
    /// same id: the broker cannot have sealed this one without its Finish).
    /// A Reject of a stream is taken: the broker dropped the partial order.
    pub fn answer(&mut self, id: &str, verdict: Result<(), RejectReason>) -> Option<Answered> {
        let streaming = match self.entries.get(id) {
            Some(entry) => entry.phase == Phase::Streaming,
            None => {
                self.unexpected_answers += 1;
                return None;
            }
        };
        if streaming && verdict.is_ok() {
            self.unexpected_answers += 1;
            return None;
        }
        let entry = self.remove(id)?;
        Some(Answered { id: id.to_owned(), verdict, attempts: entry.attempts })
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        if let Phase::Complete { next_at } = entry.phase {
            self.schedule.remove(&(next_at, id.to_owned()));
        }
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

fn reschedule(schedule: &mut BTreeSet<(Millis, String)>, id: &str, entry: &mut Entry, next_at: Millis) {
    let Phase::Complete { next_at: old } = entry.phase else {
        panic!("order {id:?} is scheduled while it is being streamed");
    };
    let key = (old, id.to_owned());
    let removed = schedule.remove(&key);
    assert!(removed, "order {id:?} was missing from the schedule");
    schedule.insert((next_at, key.1));
    entry.phase = Phase::Complete { next_at };
}

/// Total payload bytes of some items.
pub fn items_bytes(items: &[Vec<u8>]) -> u64 {
    items.iter().map(|item| item.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Millis = 1_000;

    fn config() -> OutboxConfig {
        OutboxConfig {
            confirm_timeout_ms: 5 * SECOND,
            resend_backoff_max_ms: 60 * SECOND,
            orders_max: 3,
            bytes_max: 10,
            transmit_retry_ms: SECOND / 20,
        }
    }

    fn items(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes.iter().map(|&n| vec![b'x'; n]).collect()
    }

    /// Transmits everything due at `now` (as the io layer would when the
    /// socket takes it) and returns the ids, in order.
    fn transmit_due(outbox: &mut Outbox, now: Millis) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(id) = outbox.next_due(now).map(str::to_owned) {
            outbox.transmitted(&id, now);
            sent.push(id);
        }
        sent
    }

    #[test]
    fn new_orders_are_due_at_once_and_resent_after_the_confirm_timeout() {
        let mut outbox = Outbox::new(config());
        outbox.insert("a".into(), items(&[1, 2]), 0);
        assert_eq!(transmit_due(&mut outbox, 0), ["a"]);
        assert_eq!(outbox.next_deadline(), Some(5 * SECOND + CLOCK_TICK_MS));
        assert!(transmit_due(&mut outbox, 5 * SECOND).is_empty(), "nothing is due before the timeout has passed");
        assert_eq!(transmit_due(&mut outbox, 5 * SECOND + CLOCK_TICK_MS), ["a"]);
        assert_eq!(outbox.attempts("a"), Some(2));
        assert_eq!(outbox.items("a"), Some(items(&[1, 2]).as_slice()), "a resend sends the same items");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = config();
        let delays: Vec<Millis> = (1..=6).map(|attempt| config.resend_delay_ms(attempt) / SECOND).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
        assert_eq!(config.resend_delay_ms(u32::MAX), 60 * SECOND, "no overflow however many attempts");

        let mut outbox = Outbox::new(config);
        outbox.insert("a".into(), items(&[1]), 0);
        let mut now = 0;
        let mut sends = Vec::new();
        // Walk the virtual clock from deadline to deadline: no sleeping.
        for _ in 0..6 {
            assert_eq!(transmit_due(&mut outbox, now), ["a"]);
            sends.push(now / SECOND);
            now = outbox.next_deadline().expect("the unanswered order stays scheduled");
        }
        assert_eq!(sends, [0, 5, 15, 35, 75, 135]);
    }

    #[test]
    fn answered_orders_leave_the_outbox_once() {
        let mut outbox = Outbox::new(config());
        outbox.insert("a".into(), items(&[3]), 0);
        outbox.insert("b".into(), items(&[4]), 0);
        transmit_due(&mut outbox, 100);
        let answered = outbox.answer("a", Ok(())).expect("a is held");
        assert_eq!((answered.attempts, answered.verdict), (1, Ok(())));
        let gap = Err(RejectReason::Gap { missing: 0 });
        assert_eq!(outbox.answer("b", gap.clone()).map(|a| a.verdict), Some(gap));
        assert_eq!(outbox.answer("a", Ok(())), None, "a repeated confirm is not a second answer");
        assert_eq!(outbox.unexpected_answers(), 1);
        assert!(outbox.is_empty());
        assert_eq!((outbox.bytes(), outbox.next_deadline()), (0, None), "bytes and schedule are released");
    }

    #[test]
    fn bounds_count_orders_and_bytes() {
        let mut outbox = Outbox::new(config());
        assert!(outbox.has_room(3, 10));
        assert!(!outbox.has_room(4, 0) && !outbox.has_room(1, 11));
        assert!(!outbox.could_fit(1, 11), "an order larger than the outbox never fits");
        outbox.insert("a".into(), items(&[6]), 0);
        assert!(outbox.has_room(1, 4) && !outbox.has_room(1, 5));
        outbox.insert("b".into(), items(&[]), 0);
        outbox.insert("c".into(), items(&[]), 0);
        assert!(!outbox.has_room(1, 0), "three orders is the bound");
        outbox.answer("a", Ok(()));
        assert!(outbox.has_room(1, 10), "an answer frees its order and its bytes");
    }

    #[test]
    fn a_blocked_transmission_is_retried_soon_and_is_not_an_attempt() {
        let mut outbox = Outbox::new(config());
        outbox.insert("a".into(), items(&[1]), 0);
        assert_eq!(outbox.next_due(0), Some("a"));
        outbox.transmit_blocked("a", 0);
        assert_eq!(outbox.next_due(0), None);
        assert_eq!(outbox.next_deadline(), Some(SECOND / 20));
        assert_eq!(outbox.attempts("a"), Some(0));
        assert_eq!(transmit_due(&mut outbox, SECOND / 20), ["a"]);
        assert_eq!(
            outbox.next_deadline(),
            Some(SECOND / 20 + 5 * SECOND + CLOCK_TICK_MS),
            "the confirm timeout starts now"
        );
    }

    #[test]
    fn due_orders_come_earliest_deadline_first() {
        let mut outbox = Outbox::new(config());
        outbox.insert("late".into(), items(&[]), 10);
        outbox.insert("early".into(), items(&[]), 5);
        assert_eq!(transmit_due(&mut outbox, 20), ["early", "late"]);
    }

    #[test]
    fn streams_are_not_resent_before_their_finish() {
        let mut outbox = Outbox::new(config());
        outbox.begin_stream("s".into());
        assert_eq!(outbox.push_item("s", b"ab".to_vec()), Some(0));
        assert_eq!(outbox.push_item("s", b"c".to_vec()), Some(1));
        assert_eq!(outbox.bytes(), 3);
        assert_eq!(outbox.next_deadline(), None, "a stream is never due");
        assert_eq!(outbox.answer("s", Ok(())), None, "a confirm before our Finish is for an earlier order");
        assert!(outbox.finish_stream("s", true, 100));
        assert_eq!(outbox.attempts("s"), Some(1));
        assert_eq!(outbox.next_deadline(), Some(100 + 5 * SECOND + CLOCK_TICK_MS));
        assert_eq!(transmit_due(&mut outbox, 100 + 5 * SECOND + CLOCK_TICK_MS), ["s"]);
    }

    #[test]
    fn a_stream_that_did_not_fully_go_out_is_due_at_its_finish() {
        let mut outbox = Outbox::new(config());
        outbox.begin_stream("s".into());
        outbox.push_item("s", b"a".to_vec());
        outbox.finish_stream("s", false, 7);
        assert_eq!((outbox.next_due(7), outbox.attempts("s")), (Some("s"), Some(0)));
    }

    #[test]
    fn a_rejected_or_abandoned_stream_leaves_the_outbox() {
        let mut outbox = Outbox::new(config());
        outbox.begin_stream("s".into());
        outbox.push_item("s", b"a".to_vec());
        let expired = Err(RejectReason::Expired { age_ms: 1 });
        assert_eq!(outbox.answer("s", expired).map(|a| a.attempts), Some(0));
        assert_eq!(outbox.push_item("s", b"b".to_vec()), None, "items after the reject are refused");
        assert!(!outbox.finish_stream("s", true, 10));
        outbox.begin_stream("t".into());
        outbox.push_item("t", b"abc".to_vec());
        assert!(outbox.abandon("t"));
        assert_eq!((outbox.len(), outbox.bytes()), (0, 0));
    }
}
