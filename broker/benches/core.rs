//! Orders per second through the broker's sans-IO core, no sockets, no
//! journal: one iteration feeds a whole order (Begin, 10 Items of 100 bytes,
//! Finish — or the same packed in one `items` message) to a core with one ready worker, drains the events and the
//! outbound messages (Confirm, Dispatch), and acks the order, so the worker's
//! credits and the live orders stay bounded. Messages are built before each
//! sample, untimed: the figure is the core's own cost (codec: see
//! `orderly-common`'s `codec` bench).
//!
//! ```text
//! cargo bench -p orderly-broker --bench core [-- DIVAN_ARGS]
//! ```

use std::cell::RefCell;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use orderly_broker::core::{Core, CoreConfig, Event, Millis};
use orderly_common::ids::worker_topic;
use orderly_common::protocol::{Ack, Begin, ControlMsg, FanoutMsg, Finish, Heartbeat, IntakeMsg, Item, Items};
use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

const PRODUCER: &str = "producer-1";
const WORKER: &str = "worker-1";
const WORKER_INCARNATION: u64 = 7;
const WORKER_CAPACITY: u32 = 1024;
const ORDER_ITEMS: u32 = 10;
const ITEM_BYTES: usize = 100;
/// The core reads no clock; every input carries this time, so no deadline
/// ever passes.
const NOW_MS: Millis = 1;
/// Acked keys stay in the core's dedup window (swept only by timeouts, which
/// this bench does not drive): a fresh core is built after this many orders,
/// between samples, so a long run neither grows without bound nor measures
/// an ever larger map.
const ORDERS_PER_CORE_MAX: u64 = 100_000;
/// The order `Rig::new` sends through to check the core; timed orders count
/// from 1.
const WARM_UP_ORDER_ID: u64 = 0;

fn main() {
    divan::main();
}

/// Everything fed to the core for one order.
struct OrderInput {
    intake: Vec<IntakeMsg>,
    ack: ControlMsg,
}

/// The same order packed into one `items` frame (the producer library's
/// default): one message, one `Accepted` event.
fn packed_order_input(id: u64) -> OrderInput {
    let OrderInput { intake, ack } = order_input(id);
    let (producer, order) = (PRODUCER.to_string(), format!("order-{id:012}"));
    let data = intake
        .into_iter()
        .filter_map(|m| match m {
            IntakeMsg::Item(item) => Some(item.data),
            _ => None,
        })
        .collect();
    let items = Items { producer, order, begin: true, first: 0, data, finish: Some(ORDER_ITEMS) };
    OrderInput { intake: vec![IntakeMsg::Items(items)], ack }
}

fn order_input(id: u64) -> OrderInput {
    let (producer, order) = (PRODUCER.to_string(), format!("order-{id:012}"));
    let mut intake = Vec::with_capacity(ORDER_ITEMS as usize + 2);
    intake.push(IntakeMsg::Begin(Begin { producer: producer.clone(), order: order.clone() }));
    for seq in 0..ORDER_ITEMS {
        let data = ByteBuf::from(vec![seq as u8; ITEM_BYTES]);
        intake.push(IntakeMsg::Item(Item { producer: producer.clone(), order: order.clone(), seq, data }));
    }
    intake.push(IntakeMsg::Finish(Finish { producer: producer.clone(), order: order.clone(), count: ORDER_ITEMS }));
    let key = OrderKey::new(producer, order);
    let ack =
        ControlMsg::Ack(Ack { worker: WORKER.to_string(), incarnation: WORKER_INCARNATION, order: key, attempt: 1 });
    OrderInput { intake, ack }
}

fn heartbeat(welcome: Option<u64>) -> ControlMsg {
    ControlMsg::Heartbeat(Heartbeat {
        worker: WORKER.to_string(),
        incarnation: WORKER_INCARNATION,
        capacity: WORKER_CAPACITY,
        in_flight: Vec::new(),
        welcome,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
}

/// What draining the core after one input found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Drained {
    events: usize,
    acked: usize,
    outbound: usize,
    dispatches: usize,
}

/// Feeds one order and its ack, draining after each: the timed work.
fn feed_order(core: &mut Core, input: OrderInput) -> Drained {
    let mut drained = Drained::default();
    for msg in input.intake {
        core.handle_intake(msg, NOW_MS);
    }
    drain(core, &mut drained);
    core.handle_control(input.ack, NOW_MS);
    drain(core, &mut drained);
    drained
}

fn drain(core: &mut Core, drained: &mut Drained) {
    while let Some(event) = core.poll_event() {
        drained.acked += usize::from(matches!(event, Event::Acked { .. }));
        drained.events += 1;
        black_box(event);
    }
    while let Some(outbound) = core.poll_outbound() {
        // The one Dispatch starts with the worker's topic; the Confirm goes to
        // the producer's.
        drained.dispatches += usize::from(outbound.topic.starts_with(b"w/"));
        drained.outbound += 1;
        black_box(outbound);
    }
}

/// A core with one ready worker, checked to carry an order end to end.
struct Rig {
    core: Core,
    orders_fed: u64,
}

impl Rig {
    fn new() -> Rig {
        let mut core = Core::new(CoreConfig::with_incarnation(1));
        core.handle_control(heartbeat(None), NOW_MS);
        let nonce = welcome_nonce(&mut core).expect("the first heartbeat is answered with a Welcome");
        core.handle_control(heartbeat(Some(nonce)), NOW_MS);
        while core.poll_event().is_some() || core.poll_outbound().is_some() {}
        let drained = feed_order(&mut core, order_input(WARM_UP_ORDER_ID));
        assert_eq!((drained.acked, drained.dispatches), (1, 1), "an order must be dispatched and acked: {drained:?}");
        Rig { core, orders_fed: 1 }
    }
}

fn welcome_nonce(core: &mut Core) -> Option<u64> {
    let topic = worker_topic(WORKER);
    while let Some(outbound) = core.poll_outbound() {
        if *outbound.topic == *topic {
            if let Ok(FanoutMsg::Welcome(welcome)) = FanoutMsg::decode(&outbound.body) {
                return Some(welcome.nonce);
            }
        }
    }
    None
}

#[divan::bench]
fn order_through_core(bencher: Bencher) {
    bench_orders(bencher, order_input);
}

#[divan::bench]
fn packed_order_through_core(bencher: Bencher) {
    bench_orders(bencher, packed_order_input);
}

fn bench_orders(bencher: Bencher, make: fn(u64) -> OrderInput) {
    let rig = RefCell::new(Rig::new());
    // Order ids never repeat, not even across a fresh core: inputs made for
    // the old one may still be fed to the new one.
    let mut order_id = 0;
    bencher
        .counter(ItemsCount::new(1u32))
        // Input generation runs before each sample and is not timed.
        .with_inputs(|| {
            let mut rig = rig.borrow_mut();
            if rig.orders_fed >= ORDERS_PER_CORE_MAX {
                *rig = Rig::new();
            }
            rig.orders_fed += 1;
            order_id += 1;
            make(order_id)
        })
        .bench_local_values(|input| feed_order(&mut rig.borrow_mut().core, input));
}
