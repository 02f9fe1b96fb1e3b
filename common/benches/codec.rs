//! Encode and decode cost of the wire protocol's hot messages.
//!
//! Intake (producer → broker): Begin, Item with 100 bytes of data, Finish.
//! Control (worker → broker): Ack. Fanout (broker → worker): a Dispatch of
//! 10 items of 100 bytes, encoded from borrowed items as the broker does, and
//! decoded as the worker does. Throughput is in messages and in frame bytes.
//!
//! ```text
//! cargo bench -p orderly-common --bench codec [-- DIVAN_ARGS]
//! ```

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use orderly_common::protocol::{encode_dispatch, Ack, Begin, ControlMsg, FanoutMsg, Finish, IntakeMsg, Item};
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

const PRODUCER: &str = "producer-1";
const WORKER: &str = "worker-1";
const ORDER: &str = "order-000001";
const ITEM_BYTES: usize = 100;
const DISPATCH_ITEMS: u32 = 10;
const INTAKE_KINDS: [&str; 3] = ["begin", "item", "finish"];

fn main() {
    divan::main();
}

fn intake_msg(kind: &str) -> IntakeMsg {
    let (producer, order) = (PRODUCER.to_string(), ORDER.to_string());
    match kind {
        "begin" => IntakeMsg::Begin(Begin { producer, order }),
        "item" => IntakeMsg::Item(Item { producer, order, seq: 0, data: ByteBuf::from(vec![0x5A; ITEM_BYTES]) }),
        "finish" => IntakeMsg::Finish(Finish { producer, order, count: DISPATCH_ITEMS }),
        _ => unreachable!("unknown intake kind {kind}"),
    }
}

fn ack_msg() -> ControlMsg {
    ControlMsg::Ack(Ack {
        worker: WORKER.to_string(),
        incarnation: 7,
        order: OrderKey::new(PRODUCER, ORDER),
        attempt: 1,
    })
}

fn dispatch_items() -> Vec<ByteBuf> {
    (0..DISPATCH_ITEMS).map(|seq| ByteBuf::from(vec![seq as u8; ITEM_BYTES])).collect()
}

/// One message and its frame bytes per iteration.
fn counted<'a, 'b>(bencher: Bencher<'a, 'b>, frame_bytes: usize) -> Bencher<'a, 'b> {
    bencher.counter(ItemsCount::new(1u32)).counter(BytesCount::new(frame_bytes))
}

#[divan::bench(args = INTAKE_KINDS)]
fn intake_encode(bencher: Bencher, kind: &str) {
    let msg = intake_msg(kind);
    counted(bencher, msg.encode().len()).bench(|| black_box(&msg).encode());
}

#[divan::bench(args = INTAKE_KINDS)]
fn intake_decode(bencher: Bencher, kind: &str) {
    let frame = intake_msg(kind).encode();
    assert!(IntakeMsg::decode(&frame).is_ok(), "the {kind} frame must decode");
    counted(bencher, frame.len()).bench(|| IntakeMsg::decode(black_box(&frame)));
}

#[divan::bench]
fn ack_encode(bencher: Bencher) {
    let msg = ack_msg();
    counted(bencher, msg.encode().len()).bench(|| black_box(&msg).encode());
}

#[divan::bench]
fn ack_decode(bencher: Bencher) {
    let frame = ack_msg().encode();
    assert!(ControlMsg::decode(&frame).is_ok(), "the ack frame must decode");
    counted(bencher, frame.len()).bench(|| ControlMsg::decode(black_box(&frame)));
}

#[divan::bench]
fn dispatch_encode(bencher: Bencher) {
    let (key, items) = (OrderKey::new(PRODUCER, ORDER), dispatch_items());
    let frame_bytes = encode_dispatch(&key, 1, false, &items).len();
    counted(bencher, frame_bytes).bench(|| encode_dispatch(black_box(&key), 1, false, black_box(&items)));
}

#[divan::bench]
fn dispatch_decode(bencher: Bencher) {
    let frame = encode_dispatch(&OrderKey::new(PRODUCER, ORDER), 1, false, &dispatch_items());
    assert!(matches!(FanoutMsg::decode(&frame), Ok(FanoutMsg::Dispatch(_))), "the dispatch frame must decode");
    counted(bencher, frame.len()).bench(|| FanoutMsg::decode(black_box(&frame)));
}
