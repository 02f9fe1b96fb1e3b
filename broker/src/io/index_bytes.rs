//! Measurements, not checks: what a pending order costs the core's index
//! and the compaction anchors, as a replay builds them (payloads left on
//! disk), and what a key in the dedup window costs. Here, not in `core/`, because it reads this process's
//! resident size from /proc (the core does no IO). Each reads the whole
//! process's resident size, so run each in a process of its own (run
//! together, one counts the other's memory, or reuses the pages it freed):
//! `cargo test -p orderly-broker --release --lib index_bytes_per_pending_order -- --ignored --nocapture`
//! `cargo test -p orderly-broker --release --lib index_bytes_per_remembered_key -- --ignored --nocapture`.

use orderly_common::OrderKey;
use serde_bytes::ByteBuf;

use crate::compaction::Anchors;
use crate::core::{Core, CoreConfig, Event, Payload, PayloadRef};

/// Resident bytes of this process (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).expect("resident field").parse().expect("a number");
    pages * 4096
}

#[test]
#[ignore = "a measurement: prints bytes per pending order"]
fn index_bytes_per_pending_order() {
    const ORDERS: u64 = 1_000_000;
    let before = resident_bytes();
    let mut core = Core::new(CoreConfig::with_incarnation(42));
    let mut anchors = Anchors::default();
    core.reserve(ORDERS as usize);
    core.start_replay(0);
    let items = Payload::from(vec![ByteBuf::from(vec![b'x'; 100]); 10]);
    for i in 0..ORDERS {
        let key = OrderKey::new("backlog-p", format!("bench-{i}"));
        let event = Event::Accepted { key: key.clone(), items: items.clone(), at_unix_ms: 1 };
        core.apply(&event);
        anchors.observe(&mut core, &event, PayloadRef { seq: i + 1, segment: 1 + i / 50_000, offset: i * 1_100 });
    }
    let index = resident_bytes() - before;
    eprintln!("INDEX {ORDERS} pending orders: {} bytes an order (core, anchors in its entries)", index / ORDERS);
    assert_eq!(core.counters().orders_sealed, ORDERS);
    assert_eq!(anchors.live_orders(), ORDERS);
}

#[test]
#[ignore = "a measurement: prints bytes per remembered key"]
fn index_bytes_per_remembered_key() {
    const KEYS: u64 = 1_000_000;
    let mut core = Core::new(CoreConfig::with_incarnation(42));
    let mut anchors = Anchors::default();
    core.start_replay(0);
    let before = resident_bytes();
    for i in 0..KEYS {
        let key = OrderKey::new("backlog-p", format!("bench-{i}"));
        let segment = 1 + i / 50_000;
        let accepted = Event::Accepted { key: key.clone(), items: Payload::default(), at_unix_ms: 1 };
        core.apply(&accepted);
        anchors.observe(&mut core, &accepted, PayloadRef { seq: 2 * i + 1, segment, offset: i * 200 });
        // Each acknowledged at its own time, as at full load.
        core.start_replay(i);
        let acked = Event::Acked { key };
        core.apply(&acked);
        anchors.observe(&mut core, &acked, PayloadRef { seq: 2 * i + 2, segment, offset: i * 200 + 100 });
    }
    let remembered = resident_bytes() - before;
    eprintln!("INDEX {KEYS} remembered keys: {} bytes a key (table, expiry queue, anchors)", remembered / KEYS);
    assert_eq!(core.remembered_keys() as u64, KEYS);
    assert_eq!(anchors.live_orders(), KEYS);
}
