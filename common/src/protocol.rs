//! The wire protocol, version 1.
//!
//! Every message is two ZeroMQ frames: frame 0 is the topic (routing only),
//! frame 1 a MessagePack map `{"v": 1, "kind": "<kind>", "body": {...}}`.
//! Maps with named fields (never positional arrays) let a newer peer add
//! fields that an older one ignores. Decoding never panics: every malformed,
//! truncated, oversized, unknown or out-of-place input is a [`DecodeError`].
//! `docs/PROTOCOL.md` describes every message and field.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{validate_order_id, validate_peer_id, IdError, OrderKey};
use crate::limits::{
    CONTROL_FRAME_BYTES_MAX, FANOUT_FRAME_BYTES_MAX, HEARTBEAT_IN_FLIGHT_MAX, INTAKE_FRAME_BYTES_MAX, ITEM_BYTES_MAX,
    ORDER_ITEMS_MAX, REASON_BYTES_MAX, TOPIC_BYTES_MAX, WORKER_CONCURRENCY_MAX,
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
}

/// Worker → broker: the order was processed (POSACK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub worker: String,
    pub incarnation: u64,
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
}

/// Worker → broker: the worker is leaving with nothing in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    pub worker: String,
    pub incarnation: u64,
}

/// Broker → worker or producer: its subscription is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub nonce: u64,
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

/// Encodes a Dispatch from borrowed items, so the broker need not clone an
/// order to publish it.
#[derive(Serialize)]
struct DispatchRef<'a> {
    order: &'a OrderKey,
    attempt: u32,
    redelivered: bool,
    items: &'a [ByteBuf],
}

/// Broker → producer: the order is sealed (and, with the journal, durable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    pub order: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    /// Random per broker start: workers re-announce themselves on change.
    pub incarnation: u64,
    pub interval_ms: u64,
}

/// Messages on the broker's intake socket (producer PUSH → broker PULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeMsg {
    Hello(ProducerHello),
    Begin(Begin),
    Item(Item),
    Finish(Finish),
}

/// Messages on the broker's control socket (worker PUSH → broker PULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMsg {
    Heartbeat(Heartbeat),
    Ack(Ack),
    Nack(Nack),
    Bye(Bye),
}

/// Messages on the broker's fanout socket (broker PUB → worker/producer SUB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutMsg {
    Welcome(Welcome),
    Dispatch(Dispatch),
    Confirm(Confirm),
    Reject(Reject),
    Heartbeat(BrokerHeartbeat),
}

// ---------------------------------------------------------------- encoding

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    kind: &'a str,
    body: &'a T,
}

#[derive(Deserialize)]
struct Probe {
    v: u16,
    kind: String,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    body: T,
}

fn encode_as<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    let envelope = EnvelopeOut { v: PROTOCOL_VERSION, kind, body };
    // Serializing plain structs of strings, integers and bytes into a Vec
    // cannot fail; a failure here is a bug in this module.
    rmp_serde::to_vec_named(&envelope).expect("encoding a protocol message into memory cannot fail")
}

impl IntakeMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            IntakeMsg::Hello(_) => "hello",
            IntakeMsg::Begin(_) => "begin",
            IntakeMsg::Item(_) => "item",
            IntakeMsg::Finish(_) => "finish",
        }
    }

    pub fn producer(&self) -> &str {
        match self {
            IntakeMsg::Hello(m) => &m.producer,
            IntakeMsg::Begin(m) => &m.producer,
            IntakeMsg::Item(m) => &m.producer,
            IntakeMsg::Finish(m) => &m.producer,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            IntakeMsg::Hello(m) => encode_as(self.kind(), m),
            IntakeMsg::Begin(m) => encode_as(self.kind(), m),
            IntakeMsg::Item(m) => encode_as(self.kind(), m),
            IntakeMsg::Finish(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes and validates one intake body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = probe(bytes, INTAKE_FRAME_BYTES_MAX)?;
        let msg = match kind.as_str() {
            "hello" => IntakeMsg::Hello(body(bytes)?),
            "begin" => IntakeMsg::Begin(body(bytes)?),
            "item" => IntakeMsg::Item(body(bytes)?),
            "finish" => IntakeMsg::Finish(body(bytes)?),
            _ => return Err(DecodeError::UnknownKind(kind, "intake")),
        };
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        validate_peer_id("producer id", self.producer())?;
        match self {
            IntakeMsg::Hello(_) => Ok(()),
            IntakeMsg::Begin(m) => Ok(validate_order_id(&m.order)?),
            IntakeMsg::Item(m) => {
                validate_order_id(&m.order)?;
                if m.data.len() > ITEM_BYTES_MAX {
                    return invalid("item data", format!("{} bytes; the limit is {ITEM_BYTES_MAX}", m.data.len()));
                }
                if m.seq >= ORDER_ITEMS_MAX {
                    return invalid("item seq", format!("{}; the limit is {}", m.seq, ORDER_ITEMS_MAX - 1));
                }
                Ok(())
            }
            IntakeMsg::Finish(m) => {
                validate_order_id(&m.order)?;
                if m.count > ORDER_ITEMS_MAX {
                    return invalid("finish count", format!("{}; the limit is {ORDER_ITEMS_MAX}", m.count));
                }
                Ok(())
            }
        }
    }
}

impl ControlMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMsg::Heartbeat(_) => "heartbeat",
            ControlMsg::Ack(_) => "ack",
            ControlMsg::Nack(_) => "nack",
            ControlMsg::Bye(_) => "bye",
        }
    }

    pub fn worker(&self) -> &str {
        match self {
            ControlMsg::Heartbeat(m) => &m.worker,
            ControlMsg::Ack(m) => &m.worker,
            ControlMsg::Nack(m) => &m.worker,
            ControlMsg::Bye(m) => &m.worker,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            ControlMsg::Heartbeat(m) => encode_as(self.kind(), m),
            ControlMsg::Ack(m) => encode_as(self.kind(), m),
            ControlMsg::Nack(m) => encode_as(self.kind(), m),
            ControlMsg::Bye(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes and validates one control body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = probe(bytes, CONTROL_FRAME_BYTES_MAX)?;
        let msg = match kind.as_str() {
            "heartbeat" => ControlMsg::Heartbeat(body(bytes)?),
            "ack" => ControlMsg::Ack(body(bytes)?),
            "nack" => ControlMsg::Nack(body(bytes)?),
            "bye" => ControlMsg::Bye(body(bytes)?),
            _ => return Err(DecodeError::UnknownKind(kind, "control")),
        };
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
                Ok(())
            }
            ControlMsg::Ack(m) => Ok(m.order.validate()?),
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
            FanoutMsg::Confirm(_) => "confirm",
            FanoutMsg::Reject(_) => "reject",
            FanoutMsg::Heartbeat(_) => "heartbeat",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            FanoutMsg::Welcome(m) => encode_as(self.kind(), m),
            FanoutMsg::Dispatch(m) => encode_as(self.kind(), m),
            FanoutMsg::Confirm(m) => encode_as(self.kind(), m),
            FanoutMsg::Reject(m) => encode_as(self.kind(), m),
            FanoutMsg::Heartbeat(m) => encode_as(self.kind(), m),
        }
    }

    /// Decodes one fanout body (workers and producers trust the broker's
    /// framing no more than the broker trusts theirs).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = probe(bytes, FANOUT_FRAME_BYTES_MAX)?;
        let msg = match kind.as_str() {
            "welcome" => FanoutMsg::Welcome(body(bytes)?),
            "dispatch" => {
                let d: Dispatch = body(bytes)?;
                d.order.validate()?;
                if d.items.len() > ORDER_ITEMS_MAX as usize {
                    return invalid("items", format!("{} items; the limit is {ORDER_ITEMS_MAX}", d.items.len()));
                }
                FanoutMsg::Dispatch(d)
            }
            "confirm" => FanoutMsg::Confirm(body(bytes)?),
            "reject" => FanoutMsg::Reject(body(bytes)?),
            "heartbeat" => FanoutMsg::Heartbeat(body(bytes)?),
            _ => return Err(DecodeError::UnknownKind(kind, "fanout")),
        };
        Ok(msg)
    }
}

/// Encodes a Dispatch without copying the order's items.
pub fn encode_dispatch(order: &OrderKey, attempt: u32, redelivered: bool, items: &[ByteBuf]) -> Vec<u8> {
    encode_as("dispatch", &DispatchRef { order, attempt, redelivered, items })
}

/// Checks the frame count and the topic frame of a received message and
/// returns the body frame.
pub fn split_frames(frames: &[Vec<u8>]) -> Result<(&[u8], &[u8]), DecodeError> {
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

/// Reads the version and kind, refusing oversized frames before parsing
/// and trailing bytes after the message.
fn probe(bytes: &[u8], max: usize) -> Result<String, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversized { len: bytes.len(), max });
    }
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let probe = Probe::deserialize(&mut de).map_err(classify)?;
    let used = de.position() as usize;
    if used < bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    if probe.v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(probe.v));
    }
    Ok(probe.kind)
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice::<EnvelopeIn<T>>(bytes).map(|e| e.body).map_err(classify)
}

#[cfg(test)]
mod tests;
