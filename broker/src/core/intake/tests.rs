//! `orders` messages (issue 20): several whole orders, one record, one
//! confirm message; each order keeps its own confirm or reject.

use orderly_common::protocol::{Begin, Confirm, Confirms, Item, Orders, WholeOrder};

use super::*;
use crate::core::CoreConfig;

fn batch(orders: &[(&str, usize)]) -> IntakeMsg {
    let orders = orders
        .iter()
        .map(|(id, n)| WholeOrder {
            order: (*id).into(),
            data: (0..*n).map(|i| ByteBuf::from(vec![i as u8; 3])).collect(),
        })
        .collect();
    IntakeMsg::Orders(Orders { producer: "p".into(), orders })
}

fn events(core: &mut Core) -> Vec<Event> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn published(core: &mut Core) -> Vec<FanoutMsg> {
    std::iter::from_fn(|| core.poll_outbound()).map(|o| FanoutMsg::decode(&o.body).unwrap()).collect()
}

fn keys(event: &Event) -> Vec<String> {
    let mut keys = Vec::new();
    event.for_each_payload_key(|key| keys.push(key.id.clone()));
    keys
}

#[test]
fn a_batch_is_one_record_and_one_confirm_message_in_order() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    core.handle_intake(batch(&[("a", 2), ("b", 0), ("c", 1)]), 0);
    let recorded = events(&mut core);
    let [event @ Event::AcceptedBatch { orders, .. }] = recorded.as_slice() else { panic!("one batch: {recorded:?}") };
    assert_eq!(keys(event), ["a", "b", "c"]);
    assert_eq!(orders[0].items.len(), 2);
    let confirms = FanoutMsg::Confirms(Confirms { orders: vec!["a".into(), "b".into(), "c".into()] });
    assert_eq!(published(&mut core), [confirms]);
    assert_eq!(core.status().pending_orders, 3);

    // Replayed, the record gives the same state.
    let mut replayed = Core::new(CoreConfig::with_incarnation(2));
    replayed.apply(event);
    assert_eq!(replayed.status().pending_orders, 3);

    // The whole batch resent: confirmed again, nothing recorded twice.
    core.handle_intake(batch(&[("a", 2), ("b", 0), ("c", 1)]), 1);
    assert!(events(&mut core).is_empty());
    assert_eq!(published(&mut core).len(), 1, "one confirms message again");
}

#[test]
fn each_order_of_a_batch_keeps_its_own_answer() {
    let config = CoreConfig { order_bytes_max: 5, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config);
    // "big" is over the byte bound; "a" appears twice (the second is a
    // resend within the batch); "solo" is accepted alone.
    core.handle_intake(batch(&[("a", 1), ("big", 2), ("a", 1), ("solo", 0)]), 0);
    let recorded = events(&mut core);
    let [event @ Event::AcceptedBatch { .. }] = recorded.as_slice() else { panic!("one batch: {recorded:?}") };
    assert_eq!(keys(event), ["a", "solo"]);
    let out = published(&mut core);
    // Confirms go first (Core::poll_outbound), then the turn's other answers.
    assert_eq!(out[0], FanoutMsg::Confirms(Confirms { orders: vec!["a".into(), "a".into(), "solo".into()] }));
    assert!(
        matches!(&out[1], FanoutMsg::Reject(r) if r.order == "big" && matches!(r.reason, RejectReason::TooLarge { .. })),
        "{out:?}"
    );
    assert_eq!(core.status().counters.orders_deduplicated, 1);
}

#[test]
fn a_batch_of_one_new_order_is_the_record_older_brokers_know() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    core.handle_intake(batch(&[("a", 1)]), 0);
    core.handle_intake(batch(&[("a", 1), ("b", 1)]), 0);
    let recorded = events(&mut core);
    assert!(matches!(&recorded[..], [Event::Accepted { .. }, Event::Accepted { .. }]), "{recorded:?}");
}

#[test]
fn an_order_begun_in_another_form_is_merged_not_sealed_twice() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    core.handle_intake(IntakeMsg::Begin(Begin { producer: "p".into(), order: "a".into() }), 0);
    let data = ByteBuf::from(vec![0u8; 3]);
    core.handle_intake(IntakeMsg::Item(Item { producer: "p".into(), order: "a".into(), seq: 0, data }), 0);
    events(&mut core);
    core.handle_intake(batch(&[("a", 2), ("b", 1)]), 1);
    let recorded = events(&mut core);
    let kinds: Vec<String> = recorded.iter().map(crate::core::codec::event_name).collect();
    // a: its missing item stored, then sealed (count 2); b: accepted.
    assert_eq!(kinds, ["ItemStored", "Sealed", "Accepted"], "{recorded:?}");
    assert_eq!(core.status().pending_orders, 2);
}

#[test]
fn producers_are_told_that_batches_are_taken() {
    let mut core = Core::new(CoreConfig::with_incarnation(1));
    let hello = orderly_common::protocol::ProducerHello { producer: "p".into(), nonce: 9 };
    core.handle_intake(IntakeMsg::Hello(hello), 0);
    let out = published(&mut core);
    let [FanoutMsg::Welcome(welcome)] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!((welcome.nonce, welcome.orders_max), (9, limits::ORDERS_PER_MESSAGE_MAX as u32));
}

#[test]
fn a_batch_read_below_the_producer_s_bound_is_taken_whole_and_intake_closes() {
    let config =
        CoreConfig { pending_orders_max: 2, pending_orders_per_producer_max: 2, ..CoreConfig::with_incarnation(1) };
    let mut core = Core::new(config);
    core.handle_intake(batch(&[("a", 1), ("b", 1), ("c", 1)]), 0);
    let recorded = events(&mut core);
    let [event @ Event::AcceptedBatch { .. }] = recorded.as_slice() else { panic!("one batch: {recorded:?}") };
    assert_eq!(keys(event), ["a", "b", "c"], "past the bound by less than one batch");
    assert!(!core.intake_open(), "the global bound closes intake: backpressure, not rejects");
    published(&mut core);
    // Read at the bound, a batch's new orders are refused one by one.
    core.handle_intake(batch(&[("d", 1), ("a", 1)]), 1);
    let out = published(&mut core);
    assert_eq!(out[0], FanoutMsg::Confirm(Confirm { order: "a".into() }), "a resend is still confirmed");
    assert!(
        matches!(&out[1], FanoutMsg::Reject(r) if r.order == "d" && matches!(r.reason, RejectReason::LimitReached { .. })),
        "{out:?}"
    );
}
