//! Every bound in orderly, named, in one place.
//!
//! A limit reached is a typed error or backpressure, never unbounded growth.
//! The compile-time assertions at the bottom state how the limits relate.

/// Bytes in a producer or worker id (`[A-Za-z0-9._-]`).
pub const PEER_ID_BYTES_MAX: usize = 64;
/// Bytes in an order id (any UTF-8).
pub const ORDER_ID_BYTES_MAX: usize = 256;
/// Bytes in one item's payload.
pub const ITEM_BYTES_MAX: usize = 1024 * 1024;
/// Items in one order.
pub const ORDER_ITEMS_MAX: u32 = 100_000;
/// Sum of item payload bytes in one order.
pub const ORDER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Item bytes of one order in a broker group (`--group`): a whole order's
/// record must fit one Raft entry (4 MiB, `replication::node`) with its
/// items' framing, so a group caps `--order-bytes-max` here.
pub const GROUP_ORDER_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Bytes in a failure reason (NACK, reject, dead letter).
pub const REASON_BYTES_MAX: usize = 1024;
/// Order keys a worker may list as in flight in one heartbeat.
pub const HEARTBEAT_IN_FLIGHT_MAX: usize = 1024;
/// POSACKs in one `acks` message.
pub const ACKS_PER_MESSAGE_MAX: usize = 1024;
/// Order ids in one `confirms` message.
pub const CONFIRMS_PER_MESSAGE_MAX: usize = 1024;
/// Item payload bytes a producer packs into one `items` frame; with the
/// per-item msgpack framing it stays under the intake frame limit.
pub const PACKED_FRAME_BYTES_MAX: usize = 256 * 1024;
/// Whole orders in one `orders` intake message (issue 20): as many as one
/// `confirms` message can answer, so a batch is confirmed in one message.
pub const ORDERS_PER_MESSAGE_MAX: usize = 1024;
/// Orders in one `dispatches` fanout message (since 0.5, issue 20): the
/// most a worker may ask for in `Heartbeat::dispatches_max` that counts.
pub const DISPATCHES_PER_MESSAGE_MAX: usize = 256;
/// Encoded dispatch bytes the broker packs into one `dispatches` message;
/// an order larger than this goes alone, as a `dispatch`.
pub const DISPATCH_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Orders a worker takes in one `dispatches` message unless configured
/// otherwise (`--dispatches-max`; 0 keeps one order per message).
pub const WORKER_DISPATCHES_MAX_DEFAULT: u32 = 64;
/// Concurrency (credits) one worker may advertise.
pub const WORKER_CONCURRENCY_MAX: u32 = 1024;
/// Workers the broker tracks at once.
pub const WORKERS_MAX: usize = 4096;
/// Bytes of message metadata around the payload of a frame (ids, counters,
/// msgpack markers). Generous on purpose: it only sizes frame limits.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest frame accepted on the broker's intake and control sockets
/// (`ZMQ_MAXMSGSIZE`): one item plus its envelope.
pub const INTAKE_FRAME_BYTES_MAX: usize = ITEM_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX;
/// Largest control frame: a heartbeat listing its in-flight orders.
pub const CONTROL_FRAME_BYTES_MAX: usize =
    HEARTBEAT_IN_FLIGHT_MAX * (PEER_ID_BYTES_MAX + ORDER_ID_BYTES_MAX + 16) + FRAME_OVERHEAD_BYTES_MAX;
/// Largest frame a worker or producer accepts from the fanout socket: a
/// whole order, each item costing at most 5 bytes of msgpack framing.
pub const FANOUT_FRAME_BYTES_MAX: usize = ORDER_BYTES_MAX + ORDER_ITEMS_MAX as usize * 5 + FRAME_OVERHEAD_BYTES_MAX;
/// Bytes in a topic frame (`w/<id>/`, `p/<id>/`, `b/`).
pub const TOPIC_BYTES_MAX: usize = PEER_ID_BYTES_MAX + 3;

/// Messages the broker drains from its sockets into one loop batch (one
/// journal write and one fsync per batch, once the journal exists).
pub const BATCH_LEN_MAX: usize = 4096;
/// Intake bytes the broker reads in one loop batch at most (the message
/// that crosses it is the batch's last). A batch's decoded orders, their
/// journal records and its write buffer all grow with what it reads, and
/// a queue built up in ZeroMQ (a paused intake, a slow fsync) would
/// otherwise be read in one go: up to `BATCH_LEN_MAX` packed messages of up
/// to 1 MiB each. 2 MiB is ~2,000 orders of 10 × 100 B a batch, one fsync
/// each: far above the throughput targets even at a slow fsync.
pub const INTAKE_BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Default bound on open partial orders before intake pauses.
pub const PARTIAL_ORDERS_MAX_DEFAULT: usize = 100_000;
/// Default bound on one producer's open partial orders (a Begin past it is
/// rejected as `limit_reached`).
pub const PARTIAL_ORDERS_PER_PRODUCER_MAX_DEFAULT: usize = 10_000;
/// Default bound on sealed, unacknowledged orders before intake pauses.
pub const PENDING_ORDERS_MAX_DEFAULT: usize = 1_000_000;
/// Default bound on one producer's sealed, unacknowledged orders: past it
/// that producer's new orders are rejected as `limit_reached`, so one
/// producer cannot take every pending slot and leave the others unread.
/// Off by default (the global bound): the producer library reports
/// `limit_reached` as a final rejection, so a lower default would refuse a
/// lone producer while the queue has room. Operators sharing a broker set
/// it (half the global bound leaves a second producer room).
pub const PENDING_ORDERS_PER_PRODUCER_MAX_DEFAULT: usize = PENDING_ORDERS_MAX_DEFAULT;
/// What one item costs beyond its payload bytes, charged to every
/// aggregate byte bound (partial bytes, pending/held bytes, the payload
/// cache), so that items with little or no payload cannot hold unbounded
/// RAM or journal under "0 bytes". Sized from what an item really costs:
/// in a partial order a `BTreeMap<u32, ByteBuf>` entry (28 bytes, in nodes
/// about half full when filled in order: ~60) plus the `ByteBuf` header's
/// heap chunk for a small payload (16–32); in a sealed order a `Vec<ByteBuf>`
/// slot (24) plus that chunk; in the journal an `item` record (~49 bytes:
/// header, key, seq) or 2–5 bytes of msgpack framing in an `Accepted` one.
/// Measured: a 100,000-empty-item partial order took ~12 MiB of RSS (~126
/// bytes an item), so 128 covers the worst of these.
pub const ITEM_OVERHEAD_BYTES: u64 = 128;
/// Default bound on item bytes of partial and pending orders (in the
/// journal; RAM holds at most the payload cache of them).
pub const PENDING_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;
/// Default bound on item bytes of partial orders (in RAM until sealed)
/// before intake pauses.
pub const PARTIAL_BYTES_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Default item bytes of sealed orders the broker keeps in RAM; the rest
/// stay in the journal and are read back to dispatch. 16 MiB (32 before
/// issue 20): a full-throughput run holds at most ~2 MiB in it (`/status`
/// cached bytes), so the rest only added to a large backlog's RSS; not
/// lower, for one maximal order to fit (asserted below).
pub const PAYLOAD_CACHE_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// Default age after which an unfinished partial order is rejected.
pub const PARTIAL_AGE_MAX_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default number of delivery attempts before an order is dead-lettered.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 5;
/// Default time an order may stay in flight without an ack (or a heartbeat
/// listing it) before it is redelivered.
pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest retry delay a `nack` may ask for; longer ones are clamped.
pub const RETRY_DELAY_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Default delay before an order's second attempt after a failed first one;
/// it doubles with each further failure (with jitter), up to the maximum.
pub const RETRY_DELAY_INITIAL_MS_DEFAULT: u64 = 1000;
/// Default longest delay between two attempts of one order.
pub const RETRY_DELAY_MAX_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Default longest time one attempt may be held, even while the worker's
/// heartbeats list it: a hung handler does not hold its order for ever.
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 60 * 60 * 1000;
/// Default number of dead letters at which intake closes (each costs RAM
/// and journal space until an operator retries or deletes it).
pub const DEAD_LETTERS_MAX_DEFAULT: usize = 100_000;
/// Default time the key of an acknowledged order is remembered, so that a
/// resend is confirmed again rather than processed twice.
pub const DEDUP_WINDOW_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default bound on remembered keys (about 100 bytes each).
pub const DEDUP_KEYS_MAX_DEFAULT: usize = 1_000_000;
/// Default heartbeat interval, both directions.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 1000;
/// Default heartbeats missed before a peer is declared dead.
pub const HEARTBEAT_LIVENESS_DEFAULT: u32 = 3;
/// Socket high-water mark (messages) on every socket.
pub const SOCKET_HWM_DEFAULT: i32 = 100_000;
/// LINGER on every socket: long enough to flush a final ack, short enough
/// that no process hangs on exit.
pub const SOCKET_LINGER_MS: i32 = 2000;

const _: () = assert!(INTAKE_FRAME_BYTES_MAX > ITEM_BYTES_MAX + ORDER_ID_BYTES_MAX + PEER_ID_BYTES_MAX);
// A loop batch holds at least one largest intake message.
const _: () = assert!(INTAKE_BATCH_BYTES_MAX >= INTAKE_FRAME_BYTES_MAX);
const _: () = assert!(FANOUT_FRAME_BYTES_MAX > ORDER_BYTES_MAX);
const _: () = assert!(ITEM_BYTES_MAX <= ORDER_BYTES_MAX);
const _: () = assert!(GROUP_ORDER_BYTES_MAX <= ORDER_BYTES_MAX);
const _: () = assert!(FANOUT_FRAME_BYTES_MAX < i32::MAX as usize);
const _: () = assert!(CONTROL_FRAME_BYTES_MAX < FANOUT_FRAME_BYTES_MAX);
const _: () = assert!(WORKER_CONCURRENCY_MAX as usize <= HEARTBEAT_IN_FLIGHT_MAX);
const _: () = assert!(MAX_ATTEMPTS_DEFAULT >= 1);
const _: () = assert!(PENDING_ORDERS_PER_PRODUCER_MAX_DEFAULT >= 1);
const _: () = assert!(PENDING_ORDERS_PER_PRODUCER_MAX_DEFAULT <= PENDING_ORDERS_MAX_DEFAULT);
// One maximal order (every item empty) fits the default byte bounds many
// times over: the per-item charge throttles floods, not ordinary orders.
const _: () = assert!(ORDER_ITEMS_MAX as u64 * ITEM_OVERHEAD_BYTES * 8 <= PARTIAL_BYTES_MAX_DEFAULT);
const _: () = assert!(ORDER_ITEMS_MAX as u64 * ITEM_OVERHEAD_BYTES <= PAYLOAD_CACHE_BYTES_DEFAULT);
const _: () = assert!(ACKS_PER_MESSAGE_MAX <= HEARTBEAT_IN_FLIGHT_MAX);
const _: () = assert!(PACKED_FRAME_BYTES_MAX <= ITEM_BYTES_MAX);
const _: () = assert!(ORDERS_PER_MESSAGE_MAX <= CONFIRMS_PER_MESSAGE_MAX);
// A full batch of dispatches (envelope included) fits a fanout frame.
const _: () = assert!(DISPATCH_BATCH_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX <= FANOUT_FRAME_BYTES_MAX);
const _: () = assert!(DISPATCHES_PER_MESSAGE_MAX <= WORKER_CONCURRENCY_MAX as usize);
const _: () = assert!(WORKER_DISPATCHES_MAX_DEFAULT as usize <= DISPATCHES_PER_MESSAGE_MAX);
// A batch of orders (ids and framing included) under the packing budget
// stays under the intake frame limit.
const _: () =
    assert!(PACKED_FRAME_BYTES_MAX + ORDERS_PER_MESSAGE_MAX * (ORDER_ID_BYTES_MAX + 16) < INTAKE_FRAME_BYTES_MAX);
const _: () = assert!(ACK_TIMEOUT_MS_DEFAULT > HEARTBEAT_INTERVAL_MS_DEFAULT * HEARTBEAT_LIVENESS_DEFAULT as u64);
const _: () = assert!(RETRY_DELAY_INITIAL_MS_DEFAULT <= RETRY_DELAY_MAX_MS_DEFAULT);
const _: () = assert!(RETRY_DELAY_MAX_MS_DEFAULT <= RETRY_DELAY_MS_MAX);
const _: () = assert!(ATTEMPT_TIMEOUT_MS_DEFAULT > ACK_TIMEOUT_MS_DEFAULT);
const _: () = assert!(DEAD_LETTERS_MAX_DEFAULT >= 1);
