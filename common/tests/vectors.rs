//! The wire protocol's test vectors (`docs/protocol-vectors.json`): bytes
//! and their meaning, normative together with `docs/PROTOCOL.md`, checked
//! here against the real decoder and encoder and by the Python client's
//! tests against theirs.
//!
//! This file is also their generator: `ORDERLY_UPDATE_VECTORS=1 cargo test
//! -p orderly-common --test vectors` rewrites the file from [`vectors`];
//! without it the test fails when the file differs from what the code
//! produces, so the vectors cannot drift from the code.
//!
//! Each vector is checked from the file on disk, on its own: a valid body
//! decodes, its MessagePack projection equals `decoded`, and it re-encodes
//! to exactly its bytes when `canonical` (and to other bytes when not); an
//! invalid body is refused with the error kind named.

use std::collections::BTreeSet;
use std::path::PathBuf;

use orderly_common::ids::{producer_topic, worker_topic, BROADCAST_TOPIC};
use orderly_common::limits::{
    DISPATCHES_PER_MESSAGE_MAX, ORDERS_PER_MESSAGE_MAX, ORDER_ID_BYTES_MAX, ORDER_ITEMS_MAX, PEER_ID_BYTES_MAX,
    REASON_BYTES_MAX, WORKER_CONCURRENCY_MAX,
};
use orderly_common::protocol::{
    backpressure, encode_dispatch, encode_dispatch_body, encode_dispatches, encode_items, encode_orders, Ack, Acked,
    Acks, Backpressure, Begin, BrokerHeartbeat, Bye, Confirm, Confirms, ControlMsg, DecodeError, Dispatch, Dispatches,
    FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Items, Nack, Orders, ProducerHello, Reject, RejectReason, Welcome,
    WholeOrder,
};
use orderly_common::OrderKey;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_bytes::ByteBuf;
use serde_json::{json, Map, Value};

/// The file's format number: bump it when its shape changes.
const FORMAT: u64 = 1;
/// Set to `1` to rewrite the file from the code.
const UPDATE_ENV: &str = "ORDERLY_UPDATE_VECTORS";

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol-vectors.json")
}

// ------------------------------------------------------------ hand-made bodies

/// A MessagePack value written by hand, for bodies the Rust encoder never
/// writes (older or newer encoders, other libraries, broken peers).
#[derive(Clone)]
enum Mp {
    Map(Vec<(&'static str, Mp)>),
    Arr(Vec<Mp>),
    Str(String),
    Bin(Vec<u8>),
    /// In the smallest form, as every conforming encoder writes it.
    Uint(u64),
    /// Always `0xcf` + 8 bytes, as BigInt encoders write it.
    Uint64Form(u64),
    /// Always `0xd3` + 8 bytes (a signed 64-bit form).
    Int64Form(i64),
    Nil,
    Bool(bool),
}

fn s(text: &str) -> Mp {
    Mp::Str(text.to_owned())
}

fn map(fields: Vec<(&'static str, Mp)>) -> Mp {
    Mp::Map(fields)
}

/// `{"v": 1, "kind": kind, "body": body}`.
fn envelope(kind: &str, body: Mp) -> Mp {
    map(vec![("v", Mp::Uint(1)), ("kind", s(kind)), ("body", body)])
}

fn key(producer: &str, id: &str) -> Mp {
    map(vec![("producer", s(producer)), ("id", s(id))])
}

impl Mp {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Mp::Map(fields) => {
                write_len(out, fields.len(), 0x80, 0xde);
                for (name, value) in fields {
                    Mp::Str((*name).to_owned()).write(out);
                    value.write(out);
                }
            }
            Mp::Arr(values) => {
                write_len(out, values.len(), 0x90, 0xdc);
                values.iter().for_each(|value| value.write(out));
            }
            Mp::Str(text) => {
                match text.len() {
                    len @ 0..=31 => out.push(0xa0 | len as u8),
                    len @ 32..=255 => out.extend([0xd9, len as u8]),
                    len => {
                        out.push(0xda);
                        out.extend((len as u16).to_be_bytes());
                    }
                }
                out.extend(text.as_bytes());
            }
            Mp::Bin(data) => {
                match data.len() {
                    len @ 0..=255 => out.extend([0xc4, len as u8]),
                    len => {
                        out.push(0xc5);
                        out.extend((len as u16).to_be_bytes());
                    }
                }
                out.extend(data);
            }
            Mp::Uint(n) => match *n {
                0..=0x7f => out.push(*n as u8),
                0x80..=0xff => out.extend([0xcc, *n as u8]),
                0x100..=0xffff => {
                    out.push(0xcd);
                    out.extend((*n as u16).to_be_bytes());
                }
                0x1_0000..=0xffff_ffff => {
                    out.push(0xce);
                    out.extend((*n as u32).to_be_bytes());
                }
                _ => Mp::Uint64Form(*n).write(out),
            },
            Mp::Uint64Form(n) => {
                out.push(0xcf);
                out.extend(n.to_be_bytes());
            }
            Mp::Int64Form(n) => {
                out.push(0xd3);
                out.extend(n.to_be_bytes());
            }
            Mp::Nil => out.push(0xc0),
            Mp::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        }
    }
}

/// Map and array headers: fix form up to 15 entries, else the 16-bit form.
fn write_len(out: &mut Vec<u8>, len: usize, fix: u8, wide: u8) {
    if len <= 15 {
        out.push(fix | len as u8);
    } else {
        out.push(wide);
        out.extend((len as u16).to_be_bytes());
    }
}

// ------------------------------------------------------------ projection

/// The JSON projection of a MessagePack value (see PROTOCOL.md, "Test
/// vectors"): map → object, array → array, str → string, int → number,
/// nil → null, bool → bool, bin → `{"$bin": hex}`; no floats or exts.
struct Projection(Value);

impl<'de> Deserialize<'de> for Projection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProjectionVisitor)
    }
}

struct ProjectionVisitor;

impl<'de> Visitor<'de> for ProjectionVisitor {
    type Value = Projection;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a MessagePack value without floats or extensions")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Projection, E> {
        Ok(Projection(Value::Bool(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Projection, E> {
        Ok(Projection(Value::from(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Projection, E> {
        Ok(Projection(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Projection, E> {
        Ok(Projection(Value::String(v.to_owned())))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Projection, E> {
        Ok(Projection(json!({ "$bin": hex::encode(v) })))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Projection, E> {
        Ok(Projection(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Projection, E> {
        Ok(Projection(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Projection, D::Error> {
        Projection::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Projection, A::Error> {
        let mut values = Vec::new();
        while let Some(Projection(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Projection(Value::Array(values)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Projection, A::Error> {
        let mut object = Map::new();
        while let Some(Projection(name)) = access.next_key()? {
            let Value::String(name) = name else { return Err(de::Error::custom("a map key that is not a string")) };
            let Projection(value) = access.next_value()?;
            if object.insert(name.clone(), value).is_some() {
                return Err(de::Error::custom(format!("map key {name:?} twice")));
            }
        }
        Ok(Projection(Value::Object(object)))
    }
}

fn project(body: &[u8]) -> Value {
    let Projection(value) = rmp_serde::from_slice(body).expect("a vector's body is MessagePack");
    value
}

// ------------------------------------------------------------ the vectors

enum Expect {
    /// Decodes; `canonical`: the Rust encoder writes exactly these bytes.
    Valid { canonical: bool },
    /// Refused with this `DecodeError` kind.
    Error(&'static str),
}

struct Vector {
    name: String,
    socket: &'static str,
    topic: Vec<u8>,
    body: Vec<u8>,
    expect: Expect,
}

/// Collects the vectors of one socket and topic at a time.
struct Builder {
    out: Vec<Vector>,
}

impl Builder {
    fn push(&mut self, name: &str, socket: &'static str, topic: &[u8], body: Vec<u8>, expect: Expect) {
        assert!(self.out.iter().all(|v| v.name != name), "two vectors named {name:?}");
        self.out.push(Vector { name: name.to_owned(), socket, topic: topic.to_vec(), body, expect });
    }
    fn canonical(&mut self, name: &str, socket: &'static str, topic: &[u8], body: Vec<u8>) {
        self.push(name, socket, topic, body, Expect::Valid { canonical: true });
    }
    fn other_encoder(&mut self, name: &str, socket: &'static str, topic: &[u8], body: Mp) {
        self.push(name, socket, topic, body.bytes(), Expect::Valid { canonical: false });
    }
    fn error(&mut self, name: &str, socket: &'static str, topic: &[u8], body: Vec<u8>, kind: &'static str) {
        self.push(name, socket, topic, body, Expect::Error(kind));
    }
}

const P: &str = "p1";
const W: &str = "w1";
/// Not JSON, not UTF-8: items are opaque bytes on the wire.
const BINARY_ITEM: &[u8] = &[0x00, 0xff, 0xfe, 0x80, 0x0a];

fn order(id: &str) -> OrderKey {
    OrderKey::new(P, id)
}

fn bufs(items: &[&[u8]]) -> Vec<ByteBuf> {
    items.iter().map(|item| ByteBuf::from(item.to_vec())).collect()
}

fn heartbeat(welcome: Option<u64>, in_flight: Vec<OrderKey>) -> Heartbeat {
    Heartbeat {
        worker: W.into(),
        incarnation: 0x1234_5678_9abc_def0,
        capacity: 16,
        in_flight,
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    }
}

fn nack(retry: bool, reason: &str, delay_ms: Option<u64>, returned: bool) -> Nack {
    Nack {
        worker: W.into(),
        incarnation: 0x1234_5678_9abc_def0,
        order: order("o-1"),
        attempt: 2,
        retry,
        reason: reason.into(),
        delay_ms,
        returned,
    }
}

fn intake_vectors(b: &mut Builder) {
    let t = producer_topic(P);
    let t = t.as_slice();
    let hello = |nonce| IntakeMsg::Hello(ProducerHello { producer: P.into(), nonce }).encode();
    b.canonical("intake hello", "intake", t, hello(42));
    b.canonical("intake hello, nonce u64::MAX", "intake", t, hello(u64::MAX));
    let hello_with = |nonce: Mp| envelope("hello", map(vec![("producer", s(P)), ("nonce", nonce)]));
    b.other_encoder("intake hello, nonce in the uint64 form", "intake", t, hello_with(Mp::Uint64Form(42)));
    b.other_encoder("intake hello, nonce in the int64 form", "intake", t, hello_with(Mp::Int64Form(42)));
    b.canonical(
        "intake begin",
        "intake",
        t,
        IntakeMsg::Begin(Begin { producer: P.into(), order: "o-1".into() }).encode(),
    );
    let odd_id = IntakeMsg::Begin(Begin { producer: P.into(), order: "o/1 é".into() }).encode();
    b.canonical("intake begin, order id with a slash and non-ASCII", "intake", t, odd_id);
    let item = |seq, data: &[u8]| {
        IntakeMsg::Item(Item { producer: P.into(), order: "o-1".into(), seq, data: ByteBuf::from(data.to_vec()) })
            .encode()
    };
    b.canonical("intake item", "intake", t, item(0, br#"{"sku":"A-1","qty":2}"#));
    b.canonical("intake item, not JSON", "intake", t, item(1, BINARY_ITEM));
    b.canonical("intake item, empty", "intake", t, item(2, b""));
    let items = |begin, first, data: &[&[u8]], finish| {
        let message =
            IntakeMsg::Items(Items { producer: P.into(), order: "o-2".into(), begin, first, data: bufs(data), finish })
                .encode();
        assert_eq!(message, encode_items(P, "o-2", begin, first, data, finish), "both encoders agree");
        message
    };
    b.canonical("intake items, a whole order", "intake", t, items(true, 0, &[b"{\"a\":1}", BINARY_ITEM], Some(2)));
    b.canonical("intake items, a middle run (finish nil)", "intake", t, items(false, 2, &[b"3", b"4"], None));
    b.canonical("intake items, an empty order", "intake", t, items(true, 0, &[], Some(0)));
    let older_items = envelope(
        "items",
        map(vec![
            ("producer", s(P)),
            ("order", s("o-2")),
            ("first", Mp::Uint(2)),
            ("data", Mp::Arr(vec![Mp::Bin(b"3".to_vec())])),
        ]),
    );
    b.other_encoder("intake items, begin and finish absent", "intake", t, older_items);
    let orders = |orders: &[(&str, &[&[u8]])]| {
        let message = IntakeMsg::Orders(Orders {
            producer: P.into(),
            orders: orders.iter().map(|(id, data)| WholeOrder { order: (*id).into(), data: bufs(data) }).collect(),
        })
        .encode();
        assert_eq!(message, encode_orders(P, orders), "both encoders agree");
        message
    };
    let two: &[(&str, &[&[u8]])] = &[("o-3", &[b"{\"a\":1}", BINARY_ITEM]), ("o-4", &[b"{\"b\":2}"])];
    b.canonical("intake orders, two whole orders", "intake", t, orders(two));
    b.canonical("intake orders, one order without items", "intake", t, orders(&[("o-5", &[])]));
    let finish = IntakeMsg::Finish(Finish { producer: P.into(), order: "o-1".into(), count: 3 }).encode();
    b.canonical("intake finish", "intake", t, finish);
    let newer_finish = map(vec![
        ("v", Mp::Uint(1)),
        ("trace", s("abc")),
        ("kind", s("finish")),
        ("body", map(vec![("producer", s(P)), ("order", s("o-1")), ("count", Mp::Uint(3)), ("priority", Mp::Uint(9))])),
        ("sent_unix_ms", Mp::Uint(1_700_000_000_000)),
    ]);
    b.other_encoder("intake finish, unknown fields in envelope and body", "intake", t, newer_finish);
}

fn control_vectors(b: &mut Builder) {
    let t = worker_topic(W);
    let t = t.as_slice();
    let first = ControlMsg::Heartbeat(heartbeat(None, vec![])).encode();
    b.canonical("control heartbeat, first (welcome nil, nothing held)", "control", t, first);
    let full = Heartbeat {
        incarnation: u64::MAX,
        capacity: WORKER_CONCURRENCY_MAX,
        draining: true,
        broken: Some("sh: ./handle: not found".into()),
        dispatches_max: DISPATCHES_PER_MESSAGE_MAX as u32,
        ..heartbeat(Some(u64::MAX), vec![order("o-1"), OrderKey::new("p2", "o/2 é")])
    };
    b.canonical("control heartbeat, every field, u64::MAX", "control", t, ControlMsg::Heartbeat(full).encode());
    b.canonical(
        "control heartbeat, welcome echoed",
        "control",
        t,
        ControlMsg::Heartbeat(heartbeat(Some(7), vec![order("o-1")])).encode(),
    );
    let older = envelope(
        "heartbeat",
        map(vec![
            ("worker", s(W)),
            ("incarnation", Mp::Uint(9)),
            ("capacity", Mp::Uint(4)),
            ("in_flight", Mp::Arr(vec![key(P, "o-1")])),
        ]),
    );
    b.other_encoder(
        "control heartbeat, welcome, draining, broken and dispatches_max absent (a worker before 0.3)",
        "control",
        t,
        older,
    );
    let ack = Ack { worker: W.into(), incarnation: 9, order: order("o-1"), attempt: 1 };
    b.canonical("control ack", "control", t, ControlMsg::Ack(ack).encode());
    let acks = |acks| ControlMsg::Acks(Acks { worker: W.into(), incarnation: 9, acks }).encode();
    let two = vec![Acked { order: order("o-1"), attempt: 1 }, Acked { order: order("o-2"), attempt: 3 }];
    b.canonical("control acks", "control", t, acks(two));
    b.canonical("control acks, empty", "control", t, acks(vec![]));
    b.canonical(
        "control nack, retry with a delay",
        "control",
        t,
        ControlMsg::Nack(nack(true, "exit 75", Some(60_000), false)).encode(),
    );
    b.canonical(
        "control nack, permanent",
        "control",
        t,
        ControlMsg::Nack(nack(false, "bad order: no sku", None, false)).encode(),
    );
    b.canonical(
        "control nack, returned unrun",
        "control",
        t,
        ControlMsg::Nack(nack(true, "refused: no free slot", None, true)).encode(),
    );
    let older_nack = envelope(
        "nack",
        map(vec![
            ("worker", s(W)),
            ("incarnation", Mp::Uint(9)),
            ("order", key(P, "o-1")),
            ("attempt", Mp::Uint(2)),
            ("retry", Mp::Bool(true)),
            ("reason", s("exit 1")),
            ("hint", Mp::Nil),
        ]),
    );
    b.other_encoder("control nack, delay_ms and returned absent, an unknown nil field", "control", t, older_nack);
    b.canonical("control bye", "control", t, ControlMsg::Bye(Bye { worker: W.into(), incarnation: 9 }).encode());
}

fn fanout_vectors(b: &mut Builder) {
    let (tw, tp, tb) = (worker_topic(W), producer_topic(P), BROADCAST_TOPIC);
    let (tw, tp) = (tw.as_slice(), tp.as_slice());
    let welcome = |nonce| FanoutMsg::Welcome(Welcome { nonce, orders_max: 0 }).encode();
    b.canonical("fanout welcome, to a worker, u64::MAX", "fanout", tw, welcome(u64::MAX));
    b.canonical("fanout welcome, to a producer of a broker before 0.4 (orders_max 0)", "fanout", tp, welcome(42));
    let batching = FanoutMsg::Welcome(Welcome { nonce: 42, orders_max: ORDERS_PER_MESSAGE_MAX as u32 }).encode();
    b.canonical("fanout welcome, to a producer, orders batches taken", "fanout", tp, batching);
    let older_welcome = envelope("welcome", map(vec![("nonce", Mp::Uint(42))]));
    b.other_encoder("fanout welcome, orders_max absent (a broker before 0.4)", "fanout", tp, older_welcome);
    let dispatch = |attempt: u32, items: &[&[u8]]| {
        let d = Dispatch { order: order("o-1"), attempt, redelivered: attempt > 1, items: bufs(items) };
        let message = FanoutMsg::Dispatch(d.clone()).encode();
        assert_eq!(message, encode_dispatch(&d.order, d.attempt, d.redelivered, &d.items), "both encoders agree");
        message
    };
    b.canonical("fanout dispatch, JSON and non-JSON items", "fanout", tw, dispatch(1, &[b"{\"sku\":1}", BINARY_ITEM]));
    b.canonical("fanout dispatch, redelivered, no items", "fanout", tw, dispatch(3, &[]));
    let batch = vec![
        Dispatch { order: order("o-1"), attempt: 1, redelivered: false, items: bufs(&[b"{\"sku\":1}", BINARY_ITEM]) },
        Dispatch { order: OrderKey::new("p2", "o/2 é"), attempt: 2, redelivered: true, items: vec![] },
    ];
    let message = FanoutMsg::Dispatches(Dispatches { dispatches: batch.clone() }).encode();
    let bodies: Vec<Vec<u8>> =
        batch.iter().map(|d| encode_dispatch_body((&d.order).into(), d.attempt, d.redelivered, &d.items)).collect();
    assert_eq!(message, encode_dispatches(&bodies), "both encoders agree");
    b.canonical("fanout dispatches, two orders (to a worker with dispatches_max >= 2)", "fanout", tw, message);
    b.canonical("fanout confirm", "fanout", tp, FanoutMsg::Confirm(Confirm { order: "o-1".into() }).encode());
    let confirms = |orders: &[&str]| {
        FanoutMsg::Confirms(Confirms { orders: orders.iter().map(|o| (*o).to_owned()).collect() }).encode()
    };
    b.canonical("fanout confirms", "fanout", tp, confirms(&["o-1", "o-2", "o/3 é"]));
    b.canonical("fanout confirms, empty", "fanout", tp, confirms(&[]));
    let reasons = [
        ("gap", RejectReason::Gap { missing: 4 }),
        ("extra_item", RejectReason::ExtraItem { count: 2, seq: 5 }),
        ("too_large", RejectReason::TooLarge { detail: "17000000 bytes; the limit is 16777216".into() }),
        ("limit_reached", RejectReason::LimitReached { detail: "10000 partial orders of p1".into() }),
        ("expired", RejectReason::Expired { age_ms: 600_000 }),
        ("unknown_order", RejectReason::UnknownOrder),
        ("malformed", RejectReason::Malformed { detail: "items and finish disagree".into() }),
    ];
    for (name, reason) in reasons {
        let reject = FanoutMsg::Reject(Reject { order: "o-1".into(), reason }).encode();
        b.canonical(&format!("fanout reject, {name}"), "fanout", tp, reject);
    }
    let heartbeat = |member, leader, term| {
        FanoutMsg::Heartbeat(BrokerHeartbeat { incarnation: u64::MAX, interval_ms: 1000, member, leader, term })
            .encode()
    };
    b.canonical("fanout heartbeat, single broker", "fanout", tb, heartbeat(None, None, 0));
    b.canonical("fanout heartbeat, group member", "fanout", tb, heartbeat(Some(2), Some(3), 7));
    b.canonical("fanout heartbeat, group election (no leader)", "fanout", tb, heartbeat(Some(2), None, 8));
    let older = envelope("heartbeat", map(vec![("incarnation", Mp::Uint(5)), ("interval_ms", Mp::Uint(1000))]));
    b.other_encoder("fanout heartbeat, member, leader and term absent", "fanout", tb, older);
    let pressure = FanoutMsg::Backpressure(Backpressure {
        reason: backpressure::DISK_FULL.into(),
        detail: "no space left on device".into(),
        interval_ms: 1000,
    });
    b.canonical("fanout backpressure", "fanout", tb, pressure.encode());
    let newer = envelope(
        "backpressure",
        map(vec![("reason", s("quota")), ("interval_ms", Mp::Uint(1000)), ("retry_after_ms", Mp::Uint(5000))]),
    );
    b.other_encoder("fanout backpressure, an unknown reason, detail absent", "fanout", tb, newer);
}

fn error_vectors(b: &mut Builder) {
    let (tp, tw, tb) = (producer_topic(P), worker_topic(W), BROADCAST_TOPIC);
    let (tp, tw) = (tp.as_slice(), tw.as_slice());
    let hello = IntakeMsg::Hello(ProducerHello { producer: P.into(), nonce: 42 }).encode();
    let v2 = map(vec![
        ("v", Mp::Uint(2)),
        ("kind", s("hello")),
        ("body", map(vec![("producer", s(P)), ("nonce", Mp::Uint(42))])),
    ]);
    b.error("error: version 2", "intake", tp, v2.bytes(), "UnsupportedVersion");
    let ack = ControlMsg::Ack(Ack { worker: W.into(), incarnation: 9, order: order("o-1"), attempt: 1 }).encode();
    b.error("error: a control kind on intake", "intake", tp, ack, "UnknownKind");
    let dispatch = encode_dispatch(&order("o-1"), 1, false, &bufs(&[b"1"]));
    b.error("error: a fanout kind on control", "control", tw, dispatch, "UnknownKind");
    let hello_on_fanout = hello.clone();
    b.error("error: an intake kind on fanout", "fanout", tp, hello_on_fanout, "UnknownKind");
    let empty = envelope("dispatches", map(vec![("dispatches", Mp::Arr(vec![]))]));
    b.error("error: dispatches, empty", "fanout", tw, empty.bytes(), "Invalid");
    let unknown = envelope("frobnicate", map(vec![]));
    b.error("error: an unknown kind", "fanout", tb, unknown.bytes(), "UnknownKind");
    let no_reason = envelope(
        "nack",
        map(vec![
            ("worker", s(W)),
            ("incarnation", Mp::Uint(9)),
            ("order", key(P, "o-1")),
            ("attempt", Mp::Uint(2)),
            ("retry", Mp::Bool(true)),
        ]),
    );
    b.error("error: nack without its required reason", "control", tw, no_reason.bytes(), "Malformed");
    let text_nonce = envelope("hello", map(vec![("producer", s(P)), ("nonce", s("42"))]));
    b.error("error: a nonce sent as a string", "intake", tp, text_nonce.bytes(), "Malformed");
    let negative = envelope("hello", map(vec![("producer", s(P)), ("nonce", Mp::Int64Form(-1))]));
    b.error("error: a negative nonce", "intake", tp, negative.bytes(), "Malformed");
    let wide_attempt = envelope(
        "ack",
        map(vec![
            ("worker", s(W)),
            ("incarnation", Mp::Uint(9)),
            ("order", key(P, "o-1")),
            ("attempt", Mp::Uint(1 << 32)),
        ]),
    );
    b.error("error: a u32 field above 2^32-1", "control", tw, wide_attempt.bytes(), "Malformed");
    let body_first = map(vec![
        ("body", map(vec![("producer", s(P)), ("nonce", Mp::Uint(42))])),
        ("v", Mp::Uint(1)),
        ("kind", s("hello")),
    ]);
    b.error("error: body before v and kind", "intake", tp, body_first.bytes(), "Malformed");
    let array = Mp::Arr(vec![Mp::Uint(1), s("hello"), map(vec![("producer", s(P)), ("nonce", Mp::Uint(42))])]);
    b.error("error: an envelope that is not a map", "intake", tp, array.bytes(), "Malformed");
    b.error("error: truncated", "intake", tp, hello[..hello.len() - 4].to_vec(), "Truncated");
    b.error("error: empty body", "intake", tp, vec![], "Truncated");
    let mut trailing = hello.clone();
    trailing.extend([0xc0, 0xc0]);
    b.error("error: trailing bytes", "intake", tp, trailing, "TrailingBytes");
    let begin = |producer: &str, order: &str| {
        IntakeMsg::Begin(Begin { producer: producer.into(), order: order.into() }).encode()
    };
    b.error("error: a producer id with a slash", "intake", tp, begin("p/1", "o-1"), "Invalid");
    let long_peer = "p".repeat(PEER_ID_BYTES_MAX + 1);
    b.error("error: a producer id over 64 bytes", "intake", tp, begin(&long_peer, "o-1"), "Invalid");
    b.error("error: an empty order id", "intake", tp, begin(P, ""), "Invalid");
    let long_order = "o".repeat(ORDER_ID_BYTES_MAX + 1);
    b.error("error: an order id over 256 bytes", "intake", tp, begin(P, &long_order), "Invalid");
    let seq =
        IntakeMsg::Item(Item { producer: P.into(), order: "o-1".into(), seq: ORDER_ITEMS_MAX, data: ByteBuf::new() });
    b.error("error: an item seq past the order's limit", "intake", tp, seq.encode(), "Invalid");
    let count = IntakeMsg::Finish(Finish { producer: P.into(), order: "o-1".into(), count: ORDER_ITEMS_MAX + 1 });
    b.error("error: a finish count past the limit", "intake", tp, count.encode(), "Invalid");
    let no_orders = IntakeMsg::Orders(Orders { producer: P.into(), orders: vec![] });
    b.error("error: an orders message without orders", "intake", tp, no_orders.encode(), "Invalid");
    let bad_id = |order: &str| {
        IntakeMsg::Orders(Orders {
            producer: P.into(),
            orders: vec![
                WholeOrder { order: "o-1".into(), data: vec![] },
                WholeOrder { order: order.into(), data: vec![] },
            ],
        })
    };
    b.error("error: an orders message with an empty order id", "intake", tp, bad_id("").encode(), "Invalid");
    for capacity in [0, WORKER_CONCURRENCY_MAX + 1] {
        let hb = ControlMsg::Heartbeat(Heartbeat { capacity, ..heartbeat(None, vec![]) }).encode();
        b.error(&format!("error: heartbeat capacity {capacity}"), "control", tw, hb, "Invalid");
    }
    let reason = "r".repeat(REASON_BYTES_MAX + 1);
    let long_reason = ControlMsg::Nack(nack(true, &reason, None, false)).encode();
    b.error("error: a nack reason over 1024 bytes", "control", tw, long_reason, "Invalid");
    let bad_key =
        ControlMsg::Ack(Ack { worker: W.into(), incarnation: 9, order: OrderKey::new("p 1", "o"), attempt: 1 });
    b.error("error: an ack for an invalid order key", "control", tw, bad_key.encode(), "Invalid");
    let bad_worker = ControlMsg::Bye(Bye { worker: "w1/".into(), incarnation: 9 }).encode();
    b.error("error: a worker id with a slash", "control", tw, bad_worker, "Invalid");
    let empty_reason =
        FanoutMsg::Backpressure(Backpressure { reason: String::new(), detail: String::new(), interval_ms: 1000 });
    b.error("error: a backpressure reason that is empty", "fanout", tb, empty_reason.encode(), "Invalid");
}

/// Every vector, in the file's order.
fn vectors() -> Vec<Vector> {
    let mut b = Builder { out: Vec::new() };
    intake_vectors(&mut b);
    control_vectors(&mut b);
    fanout_vectors(&mut b);
    error_vectors(&mut b);
    b.out
}

/// The file's text, as the generator writes it.
fn generate() -> String {
    let vectors: Vec<Value> = vectors()
        .into_iter()
        .map(|v| {
            let mut object = Map::new();
            object.insert("name".into(), v.name.into());
            object.insert("socket".into(), v.socket.into());
            object.insert("topic".into(), String::from_utf8(v.topic).expect("topics are ASCII").into());
            object.insert("body_hex".into(), hex::encode(&v.body).into());
            match v.expect {
                Expect::Valid { canonical } => {
                    object.insert("decoded".into(), project(&v.body));
                    object.insert("canonical".into(), canonical.into());
                }
                Expect::Error(kind) => {
                    object.insert("error".into(), kind.into());
                }
            }
            Value::Object(object)
        })
        .collect();
    let file = json!({ "format": FORMAT, "vectors": vectors });
    serde_json::to_string_pretty(&file).expect("JSON values always serialize") + "\n"
}

// ------------------------------------------------------------ the checks

/// What a body decodes to on one socket: the message's kind and its
/// re-encoding, or the error's kind.
fn decode(socket: &str, body: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
    let result = match socket {
        "intake" => IntakeMsg::decode(body).map(|m| (m.kind().to_owned(), m.encode())),
        "control" => ControlMsg::decode(body).map(|m| (m.kind().to_owned(), m.encode())),
        "fanout" => FanoutMsg::decode(body).map(|m| (fanout_kind(&m), m.encode())),
        other => panic!("a vector for socket {other:?}: it must be intake, control or fanout"),
    };
    result.map_err(|error| error_kind(&error))
}

fn error_kind(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::FrameCount(_) => "FrameCount",
        DecodeError::Oversized { .. } => "Oversized",
        DecodeError::Truncated => "Truncated",
        DecodeError::TrailingBytes(_) => "TrailingBytes",
        DecodeError::Malformed(_) => "Malformed",
        DecodeError::UnsupportedVersion(_) => "UnsupportedVersion",
        DecodeError::UnknownKind(..) => "UnknownKind",
        DecodeError::Invalid { .. } => "Invalid",
    }
}

/// A fanout message's kind, each reject reason its own (`reject/gap`).
fn fanout_kind(message: &FanoutMsg) -> String {
    match message {
        FanoutMsg::Reject(reject) => format!("reject/{}", reject_reason(&reject.reason)),
        other => other.kind().to_owned(),
    }
}

fn reject_reason(reason: &RejectReason) -> &'static str {
    match reason {
        RejectReason::Gap { .. } => "gap",
        RejectReason::ExtraItem { .. } => "extra_item",
        RejectReason::TooLarge { .. } => "too_large",
        RejectReason::LimitReached { .. } => "limit_reached",
        RejectReason::Expired { .. } => "expired",
        RejectReason::UnknownOrder => "unknown_order",
        RejectReason::Malformed { .. } => "malformed",
    }
}

/// Every kind the code has, per socket. The matches are exhaustive on
/// purpose: a new message kind or reject reason stops this compiling until
/// it is listed here, and then [`every_kind_has_a_vector`] asks for its
/// vector.
fn every_kind() -> BTreeSet<(String, String)> {
    fn intake(m: &IntakeMsg) -> &'static str {
        match m {
            IntakeMsg::Hello(_)
            | IntakeMsg::Begin(_)
            | IntakeMsg::Item(_)
            | IntakeMsg::Items(_)
            | IntakeMsg::Orders(_)
            | IntakeMsg::Finish(_) => m.kind(),
        }
    }
    fn control(m: &ControlMsg) -> &'static str {
        match m {
            ControlMsg::Heartbeat(_)
            | ControlMsg::Ack(_)
            | ControlMsg::Acks(_)
            | ControlMsg::Nack(_)
            | ControlMsg::Bye(_) => m.kind(),
        }
    }
    let (p, o) = (|| P.to_owned(), || "o".to_owned());
    let intake_all = [
        IntakeMsg::Hello(ProducerHello { producer: p(), nonce: 0 }),
        IntakeMsg::Begin(Begin { producer: p(), order: o() }),
        IntakeMsg::Item(Item { producer: p(), order: o(), seq: 0, data: ByteBuf::new() }),
        IntakeMsg::Items(Items { producer: p(), order: o(), begin: false, first: 0, data: vec![], finish: None }),
        IntakeMsg::Orders(Orders { producer: p(), orders: vec![] }),
        IntakeMsg::Finish(Finish { producer: p(), order: o(), count: 0 }),
    ];
    let control_all = [
        ControlMsg::Heartbeat(heartbeat(None, vec![])),
        ControlMsg::Ack(Ack { worker: W.into(), incarnation: 0, order: order("o"), attempt: 1 }),
        ControlMsg::Acks(Acks { worker: W.into(), incarnation: 0, acks: vec![] }),
        ControlMsg::Nack(nack(true, "", None, false)),
        ControlMsg::Bye(Bye { worker: W.into(), incarnation: 0 }),
    ];
    let reasons = [
        RejectReason::Gap { missing: 0 },
        RejectReason::ExtraItem { count: 0, seq: 0 },
        RejectReason::TooLarge { detail: String::new() },
        RejectReason::LimitReached { detail: String::new() },
        RejectReason::Expired { age_ms: 0 },
        RejectReason::UnknownOrder,
        RejectReason::Malformed { detail: String::new() },
    ];
    let mut fanout_all = vec![
        FanoutMsg::Welcome(Welcome { nonce: 0, orders_max: 0 }),
        FanoutMsg::Dispatch(Dispatch { order: order("o"), attempt: 1, redelivered: false, items: vec![] }),
        FanoutMsg::Dispatches(Dispatches { dispatches: vec![] }),
        FanoutMsg::Confirm(Confirm { order: o() }),
        FanoutMsg::Confirms(Confirms { orders: vec![] }),
        FanoutMsg::Heartbeat(BrokerHeartbeat { incarnation: 0, interval_ms: 1, member: None, leader: None, term: 0 }),
        FanoutMsg::Backpressure(Backpressure { reason: "x".into(), detail: String::new(), interval_ms: 1 }),
    ];
    fanout_all.extend(reasons.into_iter().map(|reason| FanoutMsg::Reject(Reject { order: o(), reason })));
    // The exhaustive match over fanout kinds.
    for m in &fanout_all {
        match m {
            FanoutMsg::Welcome(_)
            | FanoutMsg::Dispatch(_)
            | FanoutMsg::Dispatches(_)
            | FanoutMsg::Confirm(_)
            | FanoutMsg::Confirms(_)
            | FanoutMsg::Reject(_)
            | FanoutMsg::Heartbeat(_)
            | FanoutMsg::Backpressure(_) => {}
        }
    }
    let mut kinds = BTreeSet::new();
    kinds.extend(intake_all.iter().map(|m| ("intake".to_owned(), intake(m).to_owned())));
    kinds.extend(control_all.iter().map(|m| ("control".to_owned(), control(m).to_owned())));
    kinds.extend(fanout_all.iter().map(|m| ("fanout".to_owned(), fanout_kind(m))));
    kinds
}

/// The file on disk; while it is being rewritten, what the generator writes.
fn read_file() -> Value {
    if updating() {
        return serde_json::from_str(&generate()).expect("the generator writes JSON");
    }
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; run {UPDATE_ENV}=1 cargo test -p orderly-common --test vectors", path.display())
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var(UPDATE_ENV).as_deref() == Ok("1")
}

fn field<'a>(vector: &'a Value, name: &str) -> &'a Value {
    vector.get(name).unwrap_or_else(|| panic!("vector {:?} has no {name:?}", vector.get("name")))
}

fn text<'a>(vector: &'a Value, name: &str) -> &'a str {
    field(vector, name).as_str().unwrap_or_else(|| panic!("vector {:?}: {name:?} is not a string", vector.get("name")))
}

#[test]
fn vectors_file_matches_the_generator() {
    let generated = generate();
    let path = vectors_path();
    if updating() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} differs from what the code generates: if the change is intended, run \
         {UPDATE_ENV}=1 cargo test -p orderly-common --test vectors and review the diff",
        path.display()
    );
}

#[test]
fn every_vector_holds() {
    let file = read_file();
    assert_eq!(file["format"], json!(FORMAT), "the file's format");
    let vectors = file["vectors"].as_array().expect("\"vectors\" is an array");
    assert!(!vectors.is_empty());
    for vector in vectors {
        let name = text(vector, "name");
        let socket = text(vector, "socket");
        let topic = text(vector, "topic");
        assert!(
            topic == "b/" || ((topic.starts_with("w/") || topic.starts_with("p/")) && topic.ends_with('/')),
            "{name}: topic {topic:?}"
        );
        let body = hex::decode(text(vector, "body_hex")).unwrap_or_else(|e| panic!("{name}: body_hex: {e}"));
        match vector.get("error") {
            Some(expected) => {
                assert!(
                    vector.get("decoded").is_none() && vector.get("canonical").is_none(),
                    "{name}: error and decoded"
                );
                match decode(socket, &body) {
                    Ok((kind, _)) => panic!("{name}: decoded as {kind}; expected the error {expected}"),
                    Err(kind) => assert_eq!(json!(kind), *expected, "{name}: the error"),
                }
            }
            None => {
                let (kind, encoded) = decode(socket, &body).unwrap_or_else(|e| panic!("{name}: refused with {e}"));
                assert_eq!(project(&body), *field(vector, "decoded"), "{name}: decoded");
                let canonical = field(vector, "canonical").as_bool().expect("canonical is a bool");
                if canonical {
                    assert_eq!(hex::encode(&encoded), hex::encode(&body), "{name} ({kind}): re-encoded");
                } else {
                    assert_ne!(encoded, body, "{name} ({kind}): canonical false, yet the encoder writes these bytes");
                }
            }
        }
    }
}

#[test]
fn every_kind_has_a_vector() {
    let file = read_file();
    let mut covered = BTreeSet::new();
    let mut errors = BTreeSet::new();
    for vector in file["vectors"].as_array().expect("\"vectors\" is an array") {
        let body = hex::decode(text(vector, "body_hex")).expect("hex");
        match decode(text(vector, "socket"), &body) {
            Ok((kind, _)) => {
                covered.insert((text(vector, "socket").to_owned(), kind));
            }
            Err(kind) => {
                errors.insert(kind);
            }
        }
    }
    let missing: Vec<_> = every_kind().difference(&covered).cloned().collect();
    assert!(missing.is_empty(), "kinds without a valid vector: {missing:?}");
    for kind in ["UnsupportedVersion", "UnknownKind", "Malformed", "Truncated", "TrailingBytes", "Invalid"] {
        assert!(errors.contains(kind), "no vector for the error {kind}");
    }
}
