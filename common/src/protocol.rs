//! The wire protocol, version 1.
//!
//! Every message is two ZeroMQ frames: frame 0 is the topic (routing only),
//! frame 1 a MessagePack map `{"v": 1, "kind": "<kind>", "body": {...}}`.
//! Maps with named fields (never positional arrays) let a newer peer add
//! fields that an older one ignores. Decoding never panics: every malformed,
//! truncated, oversized, unknown or out-of-place input is a [`DecodeError`].
//! `docs/PROTOCOL.md` is the normative specification of every message and
//! field; `docs/protocol-vectors.json` (checked by `tests/vectors.rs`) pins
//! the bytes.

use std::marker::PhantomData;

use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{validate_peer_id, IdError, OrderKey};
use crate::limits::{
    ACKS_PER_MESSAGE_MAX, CONTROL_FRAME_BYTES_MAX, DISPATCHES_PER_MESSAGE_MAX, FANOUT_FRAME_BYTES_MAX,
    HEARTBEAT_IN_FLIGHT_MAX, ORDER_ITEMS_MAX, REASON_BYTES_MAX, TOPIC_BYTES_MAX, WORKER_CONCURRENCY_MAX,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Why a frame was not accepted as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message has {0} frames; expected 2 (topic, body)")]
    FrameCount(usize),
    #[error("frame is {len} bytes; the limit is {max}")]
    Oversized { len: usize, max: usize },
    #[error("message is truncated")]
    Truncated,
    #[error("message has {0} bytes after its end")]
    TrailingBytes(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported; this build speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
    #[error("unknown message kind {0:?} on the {1} socket")]
    UnknownKind(String, &'static str),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl From<IdError> for DecodeError {
    fn from(e: IdError) -> Self {
        DecodeError::Invalid { field: "id", reason: e.to_string() }
    }
}

fn classify(e: rmp_serde::decode::Error) -> DecodeError {
    use rmp_serde::decode::Error as E;
    match e {
        E::InvalidMarkerRead(io) | E::InvalidDataRead(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated
        }
        other => DecodeError::Malformed(other.to_string()),
    }
}

// ---------------------------------------------------------------- messages

/// Producer → broker (intake): announce a producer and prove its fanout
/// subscription works; the broker answers with [`Welcome`] on `p/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerHello {
    pub producer: String,
    pub nonce: u64,
}

/// Producer → broker: an order starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    pub producer: String,
    pub order: String,
}

/// Producer → broker: one item of an order, numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub producer: String,
    pub order: String,
    pub seq: u32,
    pub data: ByteBuf,
}

/// Producer → broker: consecutive items of one order in one frame — items
/// `first`, `first + 1`, … — optionally opening the order (`begin`) and
/// closing it (`finish`: the item count). It stands for the Begin, Item and
/// Finish messages it replaces, in that order, with the same meaning (so a
/// producer may mix both forms). A whole order in one frame (`begin`,
/// `first` 0, `finish` = the number of items) is one journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Items {
    pub producer: String,
    pub order: String,
    #[serde(default)]
    pub begin: bool,
    pub first: u32,
    pub data: Vec<ByteBuf>,
    #[serde(default)]
    pub finish: Option<u32>,
}

/// Producer → broker: several whole orders in one frame (since 0.4, issue
/// 20). Each entry stands for an [`Items`] message carrying that whole
/// order (`begin`, `first` 0, `finish` = its number of items), in the
/// order given, with the same meaning and its own confirm or reject. Sent
/// only to a broker whose [`Welcome::orders_max`] is not 0: an older
/// broker refuses the kind (`UnknownKind`) without telling the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orders {
    pub producer: String,
    /// 1..=`ORDERS_PER_MESSAGE_MAX` whole orders.
    pub orders: Vec<WholeOrder>,
}

/// One whole order inside [`Orders`]: its id and all its items, from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeOrder {
    pub order: String,
    pub data: Vec<ByteBuf>,
}

/// Producer → broker: an order is complete with `count` items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub producer: String,
    pub order: String,
    pub count: u32,
}

/// Worker → broker (control): the worker is alive, how much it can take,
/// and (once it has seen one) the welcome nonce it echoes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker: String,
    /// Random per process start: a restart under the same id is visible.
    pub incarnation: u64,
    /// Orders the worker runs at once.
    pub capacity: u32,
    /// Orders the worker holds right now.
    pub in_flight: Vec<OrderKey>,
    /// The last welcome nonce received on this worker's topic.
    #[serde(default)]
    pub welcome: Option<u64>,
    /// The worker is shutting down: send it nothing more.
    #[serde(default)]
    pub draining: bool,
    /// The worker's handler cannot run (a missing or non-executable
    /// command, a spawn error), and why: send it nothing until a heartbeat
    /// without it. Since 0.3.
    #[serde(default)]
    pub broken: Option<String>,
    /// The worker takes [`Dispatches`] messages of at most this many
    /// orders; 0 (what workers before 0.5 mean by leaving it out): one
    /// [`Dispatch`] per message. Brokers before 0.5 ignore the field.
    /// Since 0.5.
    #[serde(default)]
    pub dispatches_max: u32,
}

/// Worker → broker: the order was processed (POSACK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub worker: String,
    pub incarnation: u64,
    pub order: OrderKey,
    pub attempt: u32,
}

/// Worker → broker: several orders processed (POSACKs), one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acks {
    pub worker: String,
    pub incarnation: u64,
    pub acks: Vec<Acked>,
}

/// One POSACK inside [`Acks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    pub order: OrderKey,
    pub attempt: u32,
}

/// Worker → broker: the order failed. `retry = false` asks for it to be
/// dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub worker: String,
    pub incarnation: u64,
    pub order: OrderKey,
    pub attempt: u32,
    pub retry: bool,
    pub reason: String,
    /// Retry no sooner than this many ms from now (clamped to
    /// `limits::RETRY_DELAY_MS_MAX`); `None`: the broker's backoff. Since 0.3.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The worker hands the order back without having run it (no free
    /// slot, draining, its handler cannot run): requeued without spending
    /// an attempt, and preferably sent to another worker. Since 0.3.
    #[serde(default)]
    pub returned: bool,
}

/// Worker → broker: the worker is leaving with nothing in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    pub worker: String,
    pub incarnation: u64,
}

/// Broker → worker or producer: its subscription is live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub nonce: u64,
    /// To a producer: the broker takes [`Orders`] messages of at most this
    /// many orders; 0 (what brokers before 0.4 mean by leaving it out): it
    /// does not, send [`Items`]. Workers get 0 and ignore it. Since 0.4.
    #[serde(default)]
    pub orders_max: u32,
}

/// Broker → worker: one complete order to process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub order: OrderKey,
    /// 1 on first delivery.
    pub attempt: u32,
    pub redelivered: bool,
    pub items: Vec<ByteBuf>,
}

/// Broker → worker: several orders in one frame (since 0.5, issue 20),
/// sent only to a worker whose [`Heartbeat::dispatches_max`] is 2 or more.
/// Each entry is a [`Dispatch`], with the same meaning and its own ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatches {
    /// 1..=`DISPATCHES_PER_MESSAGE_MAX` orders.
    pub dispatches: Vec<Dispatch>,
}

/// Encodes a Dispatch from borrowed items, so the broker need not clone an
/// order to publish it. `I`: anything serialized as a sequence of byte
/// strings (`[ByteBuf]`, the broker's one-buffer payload).
#[derive(Serialize)]
struct DispatchRef<'a, I: Serialize + ?Sized> {
    order: OrderKeyRef<'a>,
    attempt: u32,
    redelivered: bool,
    items: &'a I,
}

/// Broker → producer: the order is sealed (and, with the journal, durable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    pub order: String,
}

/// Broker → producer: several orders sealed (and durable), one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirms {
    pub orders: Vec<String>,
}

/// Why the broker refused an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    #[error("sequence gap: item {missing} never arrived before Finish")]
    Gap { missing: u32 },
    #[error("Finish says {count} items but item {seq} arrived")]
    ExtraItem { count: u32, seq: u32 },
    #[error("order too large: {detail}")]
    TooLarge { detail: String },
    #[error("limit reached: {detail}")]
    LimitReached { detail: String },
    #[error("partial order expired after {age_ms} ms without Finish")]
    Expired { age_ms: u64 },
    #[error("Finish for an order the broker does not know (no Begin)")]
    UnknownOrder,
    #[error("malformed: {detail}")]
    Malformed { detail: String },
}

/// Broker → producer: the order was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub order: String,
    pub reason: RejectReason,
}

/// Broker → everyone (`b/`): the broker is alive.
///
/// In a group of brokers (Raft) every member sends them, and they carry
/// who leads: clients follow the announcement with the highest `term`
/// (see `orderly_common::members::Leadership`). A single broker sends
/// `member: None, leader: None, term: 0`; the three fields are
/// `#[serde(default)]`, so heartbeats of older brokers decode the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    /// Random per broker start: workers re-announce themselves on change.
    pub incarnation: u64,
    pub interval_ms: u64,
    /// The sending member's id in a group; `None` for a single broker.
    #[serde(default)]
    pub member: Option<u64>,
    /// The leader this member knows in `term`, if any (itself when it
    /// leads).
    #[serde(default)]
    pub leader: Option<u64>,
    /// The member's Raft term; 0 for a single broker.
    #[serde(default)]
    pub term: u64,
}

/// Broker → everyone (`b/`): the broker is not reading intake, and why.
/// Sent with its heartbeats (every `interval_ms`) for as long as intake
/// stays closed; nothing is sent when it opens again (the announcements
/// just stop). A producer whose hello or orders go unanswered reports the
/// latest one instead of guessing that the broker is down. Workers ignore
/// it. Later kinds of refusal reuse it with new `reason`s, so a receiver
/// must accept a `reason` it does not know (see [`backpressure`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backpressure {
    /// Why, machine-readable: one of the [`backpressure`] kinds, or a
    /// newer one.
    pub reason: String,
    /// Why, for people (counts and limits, the disk error).
    #[serde(default)]
    pub detail: String,
    /// The announcement repeats this often while intake stays closed.
    pub interval_ms: u64,
}

/// The `reason`s of [`Backpressure`] this build sends.
pub mod backpressure {
    /// The journal's disk is full: the broker records acks and dispatches
    /// in reserved space and takes no new orders until space returns.
    pub const DISK_FULL: &str = "disk_full";
    /// Sealed orders awaiting workers are at `pending_orders_max`.
    pub const PENDING_ORDERS: &str = "pending_orders";
    /// Item bytes held are at `pending_bytes_max`.
    pub const PENDING_BYTES: &str = "pending_bytes";
    /// Open partial orders are at `partial_orders_max`.
    pub const PARTIAL_ORDERS: &str = "partial_orders";
    /// Item bytes of partial orders are at `partial_bytes_max`.
    pub const PARTIAL_BYTES: &str = "partial_bytes";
    /// Dead letters are at `dead_letters_max`: an operator must retry or
    /// delete some (`orderly-broker dlq`).
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// Longest `reason` accepted.
    pub const REASON_KIND_BYTES_MAX: usize = 64;
}

/// Messages on the broker's intake socket (producer PUSH → broker PULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeMsg {
    Hello(ProducerHello),
    Begin(Begin),
    Item(Item),
    Items(Items),
    Orders(Orders),
    Finish(Finish),
}

/// Messages on the broker's control socket (worker PUSH → broker PULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMsg {
    Heartbeat(Heartbeat),
    Ack(Ack),
    Acks(Acks),
    Nack(Nack),
    Bye(Bye),
}

/// Messages on the broker's fanout socket (broker PUB → worker/producer SUB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutMsg {
    Welcome(Welcome),
    Dispatch(Dispatch),
    Dispatches(Dispatches),
    Confirm(Confirm),
    Confirms(Confirms),
    Reject(Reject),
    Heartbeat(BrokerHeartbeat),
    Backpressure(Backpressure),
}

// ---------------------------------------------------------------- encoding

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    kind: &'a str,
    body: &'a T,
}

fn encode_as<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    encode_sized(kind, body, 0)
}

/// Bytes an encoded message takes beyond its payload and ids: the
/// envelope, field names and integers (an estimate for
/// [`encode_sized`]; a larger message only grows its buffer).
const ENCODE_OVERHEAD_BYTES: usize = 128;

/// Bytes of MessagePack framing per item (a `bin 32` header) or sequence.
pub const ITEM_FRAMING_BYTES: usize = 5;

/// [`encode_as`] into a buffer sized for `payload_bytes` of items and
/// ids: a message with a payload is written without growing its buffer
/// (growth copied each dispatch and batch several times).
fn encode_sized<T: Serialize>(kind: &str, body: &T, payload_bytes: usize) -> Vec<u8> {
    let envelope = EnvelopeOut { v: PROTOCOL_VERSION, kind, body };
    let mut out = Vec::with_capacity(if payload_bytes == 0 { 0 } else { payload_bytes + ENCODE_OVERHEAD_BYTES });
    // Serializing plain structs of strings, integers and bytes into a Vec
    // cannot fail; a failure here is a bug in this module.
    rmp_serde::encode::write_named(&mut out, &envelope).expect("encoding a protocol message into memory cannot fail");
    out
}

/// Items to encode as a sequence of byte strings, with how many bytes
/// they take encoded (to size the message's buffer once).
pub trait ItemsOut: Serialize {
    /// The items' bytes plus their MessagePack framing.
    fn encoded_bytes(&self) -> usize;
}

impl ItemsOut for [ByteBuf] {
    fn encoded_bytes(&self) -> usize {
        items_encoded_bytes(self)
    }
}

impl ItemsOut for Vec<ByteBuf> {
    fn encoded_bytes(&self) -> usize {
        items_encoded_bytes(self)
    }
}

/// Bytes of `items` encoded as a sequence of byte strings.
pub fn items_encoded_bytes<D: AsRef<[u8]>>(items: &[D]) -> usize {
    items.iter().map(|d| d.as_ref().len() + ITEM_FRAMING_BYTES).sum::<usize>() + ITEM_FRAMING_BYTES
}

/// Borrowed items serialized as a sequence of byte strings, without
/// collecting them first.
pub struct ItemSeq<'a, D>(pub &'a [D]);

impl<D: AsRef<[u8]>> Serialize for ItemSeq<'_, D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|d| serde_bytes::Bytes::new(d.as_ref())))
    }
}

impl IntakeMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            IntakeMsg::Hello(_) => "hello",
            IntakeMsg::Begin(_) => "begin",
            IntakeMsg::Item(_) => "item",
            IntakeMsg::Items(_) => "items",
            IntakeMsg::Orders(_) => "orders",
            IntakeMsg::Finish(_) => "finish",
        }
    }

    pub fn producer(&self) -> &str {
        match self {
            IntakeMsg::Hello(m) => &m.producer,
            IntakeMsg::Begin(m) => &m.producer,
            IntakeMsg::Item(m) => &m.producer,
            IntakeMsg::Items(m) => &m.producer,
            IntakeMsg::Orders(m) => &m.producer,
            IntakeMsg::Finish(m) => &m.producer,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            IntakeMsg::Hello(m) => encode_as(self.kind(), m),
            IntakeMsg::Begin(m) => encode_as(self.kind(), m),
            IntakeMsg::Item(m) => encode_as(self.kind(), m),
            IntakeMsg::Items(m) => encode_as(self.kind(), m),
            IntakeMsg::Orders(m) => encode_as(self.kind(), m),
            IntakeMsg::Finish(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes and validates one intake body: [`IntakeRef::decode`] and
    /// a copy (the broker itself keeps the borrowed form).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        IntakeRef::decode(bytes).map(|msg| msg.to_owned_msg())
    }
}

impl ControlMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMsg::Heartbeat(_) => "heartbeat",
            ControlMsg::Ack(_) => "ack",
            ControlMsg::Acks(_) => "acks",
            ControlMsg::Nack(_) => "nack",
            ControlMsg::Bye(_) => "bye",
        }
    }

    pub fn worker(&self) -> &str {
        match self {
            ControlMsg::Heartbeat(m) => &m.worker,
            ControlMsg::Ack(m) => &m.worker,
            ControlMsg::Acks(m) => &m.worker,
            ControlMsg::Nack(m) => &m.worker,
            ControlMsg::Bye(m) => &m.worker,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            ControlMsg::Heartbeat(m) => encode_as(self.kind(), m),
            ControlMsg::Ack(m) => encode_as(self.kind(), m),
            ControlMsg::Acks(m) => encode_as(self.kind(), m),
            ControlMsg::Nack(m) => encode_as(self.kind(), m),
            ControlMsg::Bye(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes and validates one control body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: ControlMsg = decode_envelope(bytes, CONTROL_FRAME_BYTES_MAX)?;
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        validate_peer_id("worker id", self.worker())?;
        match self {
            ControlMsg::Heartbeat(m) => {
                if m.capacity == 0 || m.capacity > WORKER_CONCURRENCY_MAX {
                    return invalid("capacity", format!("{}; it must be 1..={WORKER_CONCURRENCY_MAX}", m.capacity));
                }
                if m.in_flight.len() > HEARTBEAT_IN_FLIGHT_MAX {
                    return invalid(
                        "in_flight",
                        format!("{} orders; the limit is {HEARTBEAT_IN_FLIGHT_MAX}", m.in_flight.len()),
                    );
                }
                m.in_flight.iter().try_for_each(|k| k.validate())?;
                if m.broken.as_ref().is_some_and(|b| b.len() > REASON_BYTES_MAX) {
                    let len = m.broken.as_ref().map_or(0, String::len);
                    return invalid("broken", format!("{len} bytes; the limit is {REASON_BYTES_MAX}"));
                }
                Ok(())
            }
            ControlMsg::Ack(m) => Ok(m.order.validate()?),
            ControlMsg::Acks(m) => {
                if m.acks.len() > ACKS_PER_MESSAGE_MAX {
                    return invalid("acks", format!("{} acks; the limit is {ACKS_PER_MESSAGE_MAX}", m.acks.len()));
                }
                m.acks.iter().try_for_each(|a| a.order.validate())?;
                Ok(())
            }
            ControlMsg::Nack(m) => {
                m.order.validate()?;
                if m.reason.len() > REASON_BYTES_MAX {
                    return invalid("reason", format!("{} bytes; the limit is {REASON_BYTES_MAX}", m.reason.len()));
                }
                Ok(())
            }
            ControlMsg::Bye(_) => Ok(()),
        }
    }
}

impl FanoutMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            FanoutMsg::Welcome(_) => "welcome",
            FanoutMsg::Dispatch(_) => "dispatch",
            FanoutMsg::Dispatches(_) => "dispatches",
            FanoutMsg::Confirm(_) => "confirm",
            FanoutMsg::Confirms(_) => "confirms",
            FanoutMsg::Reject(_) => "reject",
            FanoutMsg::Heartbeat(_) => "heartbeat",
            FanoutMsg::Backpressure(_) => "backpressure",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            FanoutMsg::Welcome(m) => encode_as(self.kind(), m),
            FanoutMsg::Dispatch(m) => encode_as(self.kind(), m),
            FanoutMsg::Dispatches(m) => encode_as(self.kind(), m),
            FanoutMsg::Confirm(m) => encode_as(self.kind(), m),
            FanoutMsg::Confirms(m) => encode_as(self.kind(), m),
            FanoutMsg::Reject(m) => encode_as(self.kind(), m),
            FanoutMsg::Heartbeat(m) => encode_as(self.kind(), m),
            FanoutMsg::Backpressure(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes one fanout body (workers and producers trust the broker's
    /// framing no more than the broker trusts theirs).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: FanoutMsg = decode_envelope(bytes, FANOUT_FRAME_BYTES_MAX)?;
        match &msg {
            FanoutMsg::Dispatch(d) => validate_dispatch(d)?,
            FanoutMsg::Dispatches(m) => {
                if m.dispatches.is_empty() || m.dispatches.len() > DISPATCHES_PER_MESSAGE_MAX {
                    let len = m.dispatches.len();
                    return invalid("dispatches", format!("{len} orders; it must be 1..={DISPATCHES_PER_MESSAGE_MAX}"));
                }
                m.dispatches.iter().try_for_each(validate_dispatch)?;
            }
            FanoutMsg::Backpressure(b) => {
                let max = backpressure::REASON_KIND_BYTES_MAX;
                if b.reason.is_empty() || b.reason.len() > max {
                    return invalid("backpressure reason", format!("{} bytes; it must be 1..={max}", b.reason.len()));
                }
                if b.detail.len() > REASON_BYTES_MAX {
                    return invalid(
                        "backpressure detail",
                        format!("{} bytes; the limit is {REASON_BYTES_MAX}", b.detail.len()),
                    );
                }
            }
            _ => {}
        }
        Ok(msg)
    }
}

/// One dispatch's order key and item count, checked as every receiver
/// checks them.
fn validate_dispatch(d: &Dispatch) -> Result<(), DecodeError> {
    d.order.validate()?;
    if d.items.len() > ORDER_ITEMS_MAX as usize {
        return invalid("items", format!("{} items; the limit is {ORDER_ITEMS_MAX}", d.items.len()));
    }
    Ok(())
}

/// An order's key as two borrowed strings, so that a broker keeping keys
/// in its own form encodes a dispatch without making an [`OrderKey`]: it
/// encodes exactly as an `OrderKey` does (the same field names, in order),
/// and sorts alike (the same fields, in the same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OrderKeyRef<'a> {
    pub producer: &'a str,
    pub id: &'a str,
}

impl OrderKeyRef<'_> {
    /// The owned key.
    pub fn to_key(self) -> OrderKey {
        OrderKey::new(self.producer, self.id)
    }
}

impl<'a> From<&'a OrderKey> for OrderKeyRef<'a> {
    fn from(key: &'a OrderKey) -> Self {
        OrderKeyRef { producer: &key.producer, id: &key.id }
    }
}

/// Encodes a Dispatch without copying the order's items. `items`: what
/// serializes as a sequence of byte strings (`[ByteBuf]`, or since 0.5
/// the broker's one-buffer payload); anything else makes a message that
/// workers refuse.
pub fn encode_dispatch<'k, I: ItemsOut + ?Sized>(
    order: impl Into<OrderKeyRef<'k>>,
    attempt: u32,
    redelivered: bool,
    items: &I,
) -> Vec<u8> {
    let order = order.into();
    let payload_bytes = items.encoded_bytes() + order.producer.len() + order.id.len();
    encode_sized("dispatch", &DispatchRef { order, attempt, redelivered, items }, payload_bytes)
}

/// Bytes one dispatch body takes besides its key's strings and its items
/// ([`ItemsOut::encoded_bytes`]), at most: the map and string headers,
/// field names, attempt and flag (58 bytes for the longest ids).
const DISPATCH_BODY_OVERHEAD_BYTES: usize = 64;

/// Bytes a `dispatches` message takes besides its entries, at most: the
/// envelope, field names and the array's header (40 bytes).
const DISPATCHES_HEADER_BYTES: usize = 48;

/// Bytes the body of one Dispatch of `order` and `items` takes encoded, at
/// most: to size a [`DispatchesEncoder`] (or a body) once.
pub fn dispatch_body_bytes<I: ItemsOut + ?Sized>(order: OrderKeyRef<'_>, items: &I) -> usize {
    items.encoded_bytes() + order.producer.len() + order.id.len() + DISPATCH_BODY_OVERHEAD_BYTES
}

/// Encodes the body of one Dispatch (no envelope), without copying the
/// order's items: an entry for [`DispatchesEncoder::push_encoded`].
pub fn encode_dispatch_body<I: ItemsOut + ?Sized>(
    order: OrderKeyRef<'_>,
    attempt: u32,
    redelivered: bool,
    items: &I,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(dispatch_body_bytes(order, items));
    write_dispatch_body(&mut out, order, attempt, redelivered, items);
    out
}

fn write_dispatch_body<I: ItemsOut + ?Sized>(
    out: &mut Vec<u8>,
    order: OrderKeyRef<'_>,
    attempt: u32,
    redelivered: bool,
    items: &I,
) {
    rmp_serde::encode::write_named(out, &DispatchRef { order, attempt, redelivered, items })
        .expect("encoding a protocol message into memory cannot fail");
}

/// Encodes a `dispatches` message (see [`Dispatches`]) entry by entry into
/// one buffer, sized once: the same bytes as [`FanoutMsg::encode`] gives
/// for the decoded message, without a buffer per entry.
#[derive(Debug)]
pub struct DispatchesEncoder {
    out: Vec<u8>,
    /// Entries announced in the array's header and not yet written.
    left: usize,
}

impl DispatchesEncoder {
    /// A message of `count` entries (at most [`DISPATCHES_PER_MESSAGE_MAX`])
    /// whose bodies take `bodies_bytes` (the sum of their
    /// [`dispatch_body_bytes`], or of the lengths of encoded bodies).
    pub fn new(count: usize, bodies_bytes: usize) -> Self {
        const _: () = assert!(PROTOCOL_VERSION < 0x80, "the version is written as a positive fixint");
        const _: () = assert!(DISPATCHES_PER_MESSAGE_MAX <= u16::MAX as usize, "the count fits an array16 header");
        assert!(count <= DISPATCHES_PER_MESSAGE_MAX, "a batch holds at most DISPATCHES_PER_MESSAGE_MAX entries");
        let mut out = Vec::with_capacity(bodies_bytes + DISPATCHES_HEADER_BYTES);
        // {"v": 1, "kind": "dispatches", "body": {"dispatches": [...]}}, as
        // rmp_serde writes a struct: a map with string keys.
        out.push(0x83);
        push_fixstr(&mut out, "v");
        out.push(PROTOCOL_VERSION as u8);
        push_fixstr(&mut out, "kind");
        push_fixstr(&mut out, "dispatches");
        push_fixstr(&mut out, "body");
        out.push(0x81);
        push_fixstr(&mut out, "dispatches");
        if count < 16 {
            out.push(0x90 | count as u8);
        } else {
            out.push(0xdc);
            out.extend_from_slice(&(count as u16).to_be_bytes());
        }
        DispatchesEncoder { out, left: count }
    }

    /// Writes the next entry, without copying the order's items.
    pub fn push<'k, I: ItemsOut + ?Sized>(
        &mut self,
        order: impl Into<OrderKeyRef<'k>>,
        attempt: u32,
        redelivered: bool,
        items: &I,
    ) {
        self.take_slot();
        write_dispatch_body(&mut self.out, order.into(), attempt, redelivered, items);
    }

    /// Writes the next entry, a body made by [`encode_dispatch_body`].
    pub fn push_encoded(&mut self, body: &[u8]) {
        self.take_slot();
        self.out.extend_from_slice(body);
    }

    fn take_slot(&mut self) {
        self.left = self.left.checked_sub(1).expect("more dispatches written than announced");
    }

    /// The message.
    pub fn finish(self) -> Vec<u8> {
        assert_eq!(self.left, 0, "fewer dispatches written than announced");
        self.out
    }
}

/// Encodes a `dispatches` message around bodies made by
/// [`encode_dispatch_body`], copied as they are (see [`DispatchesEncoder`]).
pub fn encode_dispatches<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<u8> {
    let bytes = bodies.iter().map(|b| b.as_ref().len()).sum();
    let mut encoder = DispatchesEncoder::new(bodies.len(), bytes);
    bodies.iter().for_each(|b| encoder.push_encoded(b.as_ref()));
    encoder.finish()
}

/// A msgpack fixstr (shorter than 32 bytes).
fn push_fixstr(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() < 32);
    out.push(0xa0 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes an `items` message from borrowed items (see [`Items`]).
pub fn encode_items<D: AsRef<[u8]>>(
    producer: &str,
    order: &str,
    begin: bool,
    first: u32,
    data: &[D],
    finish: Option<u32>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(bound = "")]
    struct ItemsRef<'a, D: AsRef<[u8]>> {
        producer: &'a str,
        order: &'a str,
        begin: bool,
        first: u32,
        data: ItemSeq<'a, D>,
        finish: Option<u32>,
    }
    let payload_bytes = items_encoded_bytes(data) + producer.len() + order.len();
    encode_sized("items", &ItemsRef { producer, order, begin, first, data: ItemSeq(data), finish }, payload_bytes)
}

/// Encodes an `orders` message from borrowed orders (see [`Orders`]):
/// `(order id, items)` pairs, each a whole order.
pub fn encode_orders<D: AsRef<[u8]>>(producer: &str, orders: &[(&str, &[D])]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(bound = "")]
    struct WholeRef<'a, D: AsRef<[u8]>> {
        order: &'a str,
        data: ItemSeq<'a, D>,
    }
    /// The orders, serialized as they are iterated (no list of them).
    struct OrderSeq<'a, D>(&'a [(&'a str, &'a [D])]);
    impl<D: AsRef<[u8]>> Serialize for OrderSeq<'_, D> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(|(order, items)| WholeRef { order, data: ItemSeq(items) }))
        }
    }
    #[derive(Serialize)]
    #[serde(bound = "")]
    struct OrdersRef<'a, D: AsRef<[u8]>> {
        producer: &'a str,
        orders: OrderSeq<'a, D>,
    }
    // An order's own framing (a 2-array, the id's header) fits in ITEM_FRAMING_BYTES * 2.
    let payload_bytes = producer.len()
        + orders
            .iter()
            .map(|(order, items)| order.len() + items_encoded_bytes(items) + 2 * ITEM_FRAMING_BYTES)
            .sum::<usize>();
    encode_sized("orders", &OrdersRef { producer, orders: OrderSeq(orders) }, payload_bytes)
}

/// Splits an order's items into the runs that [`encode_items`] frames
/// carry: each run's payload (plus 5 bytes of framing per item) at most
/// `budget` bytes, an item larger than that alone in its run. Returns the
/// end index of each run; an order without items is one empty run.
pub fn pack_runs<D: AsRef<[u8]>>(items: &[D], budget: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut used = 0;
    for (i, item) in items.iter().enumerate() {
        let cost = item.as_ref().len() + 5;
        if used > 0 && used + cost > budget {
            ends.push(i);
            used = 0;
        }
        used += cost;
    }
    ends.push(items.len());
    ends
}

/// Checks the frame count and the topic frame of a received message and
/// returns the body frame.
pub fn split_frames<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Result<(&[u8], &[u8]), DecodeError> {
    match frames {
        [topic, body] => {
            if topic.len() > TOPIC_BYTES_MAX {
                return Err(DecodeError::Oversized { len: topic.len(), max: TOPIC_BYTES_MAX });
            }
            Ok((topic, body))
        }
        _ => Err(DecodeError::FrameCount(frames.len())),
    }
}

fn invalid<T>(field: &'static str, reason: String) -> Result<T, DecodeError> {
    Err(DecodeError::Invalid { field, reason })
}

// ---------------------------------------------------------------- decoding

/// A family of messages (one socket's): maps a kind to its body type.
/// `'de`: the frame's lifetime, for families that borrow from it.
trait Family<'de>: Sized {
    const SOCKET: &'static str;
    /// Deserializes the body of `kind` from the map's next value; `None`
    /// for a kind this family does not have.
    fn body<A: MapAccess<'de>>(kind: &str, map: &mut A) -> Result<Option<Self>, A::Error>;
}

macro_rules! family {
    // `$de`: the frame's lifetime, named by the caller so that a borrowing
    // family can use it in its type.
    ($de:lifetime, $family:ty, $socket:literal, { $($kind:literal => $variant:ident),* $(,)? }) => {
        impl<$de> Family<$de> for $family {
            const SOCKET: &'static str = $socket;
            fn body<A: MapAccess<$de>>(kind: &str, map: &mut A) -> Result<Option<Self>, A::Error> {
                Ok(Some(match kind {
                    $($kind => Self::$variant(map.next_value()?),)*
                    _ => return Ok(None),
                }))
            }
        }
    };
}

// The intake family is decoded borrowed (`IntakeRef`); `IntakeMsg::decode`
// copies that.
mod intake_ref;
pub use intake_ref::{
    owned_items, BeginRef, FinishRef, IntakeRef, ItemData, ItemRef, ItemsRef, OrdersRef, WholeOrderRef,
};

family!('de, IntakeRef<'de>, "intake", {
    "hello" => Hello, "begin" => Begin, "item" => Item, "items" => Items, "orders" => Orders, "finish" => Finish,
});

family!('de, ControlMsg, "control", {
    "heartbeat" => Heartbeat, "ack" => Ack, "acks" => Acks, "nack" => Nack, "bye" => Bye,
});
family!('de, FanoutMsg, "fanout", {
    "welcome" => Welcome, "dispatch" => Dispatch, "dispatches" => Dispatches, "confirm" => Confirm, "confirms" => Confirms, "reject" => Reject,
    "heartbeat" => Heartbeat, "backpressure" => Backpressure,
});

/// What the envelope held, short of a parse error.
enum Opened<M> {
    Message(M),
    Version(u16),
    UnknownKind(String),
}

/// Reads the envelope in one pass: `v` and `kind` come before `body` (every
/// encoder here writes them so), so the body is parsed straight into its
/// type. Unknown envelope fields are skipped.
struct EnvelopeVisitor<M>(PhantomData<M>);

impl<'de, M: Family<'de>> Visitor<'de> for EnvelopeVisitor<M> {
    type Value = Opened<M>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map {v, kind, body}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version: Option<u16> = None;
        // Borrowed from the frame: no allocation per message.
        let mut kind: Option<&'de str> = None;
        let mut opened: Option<Opened<M>> = None;
        while let Some(field) = map.next_key::<Field>()? {
            // Once the answer is known (even a refusal), the rest is skipped:
            // the map must still be read to its end.
            match field {
                Field::V if opened.is_none() => {
                    let v: u16 = map.next_value()?;
                    if v != PROTOCOL_VERSION {
                        opened = Some(Opened::Version(v));
                    }
                    version = Some(v);
                }
                Field::Kind if opened.is_none() => kind = Some(map.next_value()?),
                Field::Body if opened.is_none() => {
                    if version.is_none() {
                        return Err(de::Error::custom("\"v\" must come before \"body\""));
                    }
                    let Some(kind) = kind else {
                        return Err(de::Error::custom("\"kind\" must come before \"body\""));
                    };
                    opened = Some(match M::body(kind, &mut map)? {
                        Some(m) => Opened::Message(m),
                        None => {
                            map.next_value::<de::IgnoredAny>()?;
                            Opened::UnknownKind(kind.to_string())
                        }
                    });
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        match opened {
            Some(opened) => Ok(opened),
            None if version.is_none() => Err(de::Error::missing_field("v")),
            None if kind.is_none() => Err(de::Error::missing_field("kind")),
            None => Err(de::Error::missing_field("body")),
        }
    }
}

/// An envelope field name, matched without allocating.
enum Field {
    V,
    Kind,
    Body,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                self.visit_bytes(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
                Ok(match v {
                    b"v" => Field::V,
                    b"kind" => Field::Kind,
                    b"body" => Field::Body,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// Decodes one envelope of family `M`, refusing oversized frames before
/// parsing and trailing bytes after the message.
fn decode_envelope<'de, M: Family<'de>>(bytes: &'de [u8], max: usize) -> Result<M, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversized { len: bytes.len(), max });
    }
    // The borrowing reader hands out slices of the frame; `new(Cursor)`
    // copied every string and byte string through a scratch buffer first
    // (~9 % of the broker's samples per item, docs/PERF-PROGRESS.md).
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let message = match de.deserialize_map(EnvelopeVisitor::<M>(PhantomData)).map_err(classify)? {
        Opened::Message(m) => m,
        Opened::Version(v) => return Err(DecodeError::UnsupportedVersion(v)),
        Opened::UnknownKind(kind) => return Err(DecodeError::UnknownKind(kind, M::SOCKET)),
    };
    if !at_end(&mut de) {
        return Err(match envelope_len(bytes) {
            Some(len) => DecodeError::TrailingBytes(bytes.len() - len),
            None => DecodeError::Malformed("bytes after the end of the message".into()),
        });
    }
    Ok(message)
}

/// Whether the borrowing reader has read its whole frame. rmp-serde 1.3
/// does not say how far that reader got, but reading a further value
/// fails on its first byte (its marker) exactly when no byte is left.
fn at_end<'de>(de: &mut rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'de, [u8]>>) -> bool {
    use rmp_serde::decode::Error as E;
    matches!(
        de::IgnoredAny::deserialize(de),
        Err(E::InvalidMarkerRead(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof
    )
}

/// The length of the value at the start of `bytes` (an envelope that
/// decoded): the count for a [`DecodeError::TrailingBytes`]. Only a
/// refused message is read this second time, through a reader that counts.
fn envelope_len(bytes: &[u8]) -> Option<usize> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de::IgnoredAny::deserialize(&mut de).ok()?;
    usize::try_from(de.position()).ok()
}

#[cfg(test)]
mod tests;
