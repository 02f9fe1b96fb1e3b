//! Every bound and default of the producer, named, in one place.
//!
//! A limit reached is a typed error or backpressure, never unbounded growth.
//! The compile-time assertions at the bottom state how the limits relate.
//! Wire limits (item, order and frame sizes) live in
//! `orderly_common::limits`; these are the producer's own.

use std::time::Duration;

use orderly_common::limits::{ORDER_BYTES_MAX, PACKED_FRAME_BYTES_MAX};

/// Default time an order may wait for its Confirm or Reject before it is
/// sent again (Begin, every item, Finish). Long enough that a busy broker's
/// fsync does not trigger resends, short enough that a lost order (a broker
/// crash before its journal commit) is retried soon.
pub const CONFIRM_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Default cap of the exponential resend backoff: a broker that stays down
/// for an hour sees each unanswered order about once a minute, not a storm.
pub const RESEND_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(60);

/// Default bound on orders in the outbox (sent or being sent, not yet
/// answered).
pub const OUTBOX_ORDERS_MAX_DEFAULT: usize = 10_000;

/// Default bound on the item bytes the outbox holds.
pub const OUTBOX_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default time `send`, `send_batch`, `begin` and `OrderStream::item` wait
/// for room in a full outbox before they fail with `Backpressure`.
pub const SEND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Default time `connect` waits for the broker's Welcome.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Default bound on answers received but not yet collected (by
/// `poll_receipts`, `Receipt::wait`): beyond it the oldest is dropped (and
/// counted), so a caller that never collects cannot grow memory.
pub const ANSWERS_KEPT_MAX_DEFAULT: usize = 100_000;

/// Orders in one `send_batch` (one journal commit, so one fsync).
pub const SEND_BATCH_ORDERS_MAX: usize = 4096;

/// Default bound on the bytes of one batch of whole orders (an `orders`
/// message): their items plus framing and ids, as Kafka's `batch.size`.
/// Also the most a batch may hold (it keeps the frame under the broker's
/// intake limit).
pub const BATCH_BYTES_MAX: usize = PACKED_FRAME_BYTES_MAX;

/// Default linger (Kafka's `linger.ms`): 0, so orders go as soon as they
/// are at hand — every order due at once (a `send_batch`, resends) still
/// goes in one message. Above 0, while orders keep coming (the previous
/// batch left less than a linger ago) a batch that is not full waits up to
/// this long for more; a lone order after a quiet spell goes at once.
pub const BATCH_LINGER_DEFAULT: Duration = Duration::ZERO;

/// Longest linger accepted: lingering adds to every confirm's latency.
pub const BATCH_LINGER_MAX: Duration = Duration::from_millis(100);

/// The Hello is repeated this often until the Welcome arrives: one sent
/// before our subscription reached the broker gets a Welcome we never see.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(100);

/// When the intake socket is at its high-water mark (or not connected), an
/// order that could not be transmitted is tried again this much later. It
/// does not count as an attempt: nothing reached the broker.
pub const TRANSMIT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Longest single wait inside the waiting loops (room in the outbox,
/// flush), so resends stay on time while waiting.
pub const POLL_SLICE: Duration = Duration::from_millis(50);

/// Fanout messages taken from the socket in one `poll` before the caller
/// gets control back (one journal commit for their Answered records).
pub const RECEIVE_BATCH_LEN_MAX: usize = 4096;

/// Size at which the on-disk outbox starts a new segment. Compaction only
/// removes whole segments, and copies forward at most half of one, so a
/// small segment keeps the copying and the dead bytes on disk small.
pub const OUTBOX_SEGMENT_BYTES_TARGET: u64 = 16 * 1024 * 1024;

/// The oldest segment is compacted (its live orders copied forward, then it
/// is removed) once at most this share of its bytes is still live.
pub const COMPACTION_LIVE_PERCENT_MAX: u64 = 50;

/// Whatever their live share, old segments are compacted while the on-disk
/// outbox holds more than this many times `outbox_bytes_max` (plus two
/// segments): an order that is never answered cannot pin dead data behind
/// it for ever.
pub const OUTBOX_DISK_FACTOR_MAX: u64 = 2;

const _: () = assert!(CONFIRM_TIMEOUT_DEFAULT.as_millis() <= RESEND_BACKOFF_MAX_DEFAULT.as_millis());
const _: () = assert!(OUTBOX_BYTES_MAX_DEFAULT >= ORDER_BYTES_MAX as u64);
const _: () = assert!(SEND_BATCH_ORDERS_MAX <= OUTBOX_ORDERS_MAX_DEFAULT);
const _: () = assert!(TRANSMIT_RETRY_DELAY.as_millis() < CONFIRM_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(POLL_SLICE.as_millis() <= HELLO_INTERVAL.as_millis());
const _: () = assert!(COMPACTION_LIVE_PERCENT_MAX > 0 && COMPACTION_LIVE_PERCENT_MAX < 100);
const _: () = assert!(OUTBOX_DISK_FACTOR_MAX >= 1);
// A Sent record of the largest order (items plus a few bytes of framing
// each) must fit in one journal record.
const _: () = assert!(
    (ORDER_BYTES_MAX as u64) + (orderly_common::limits::ORDER_ITEMS_MAX as u64) * 5 + 64 * 1024
        <= orderly_journal::RECORD_BYTES_MAX as u64
);

/// A broker's `backpressure` announcement counts as current for this many
/// of its intervals (it repeats every interval while intake is closed, so
/// one lost copy does not make it stale).
pub const BACKPRESSURE_FRESH_INTERVALS: u64 = 3;
