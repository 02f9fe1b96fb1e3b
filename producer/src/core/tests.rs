use orderly_common::protocol::{Confirm, Confirms, Reject, Welcome};

use super::*;

const SECOND: Millis = 1_000;

fn core(pack_items: bool) -> Core {
    batching_core(pack_items, 0, 0)
}

fn batching_core(pack_items: bool, batch_bytes_max: usize, linger_ms: Millis) -> Core {
    let outbox = OutboxConfig {
        confirm_timeout_ms: 5 * SECOND,
        resend_backoff_max_ms: 60 * SECOND,
        orders_max: 10,
        bytes_max: 1000,
        transmit_retry_ms: 50,
    };
    let producer = "p".into();
    Core::new(CoreConfig { producer, nonce: 7, pack_items, batch_bytes_max, linger_ms, hello_interval_ms: 100, outbox })
}

/// A core welcomed by a broker that takes `orders` batches of `orders_max`.
fn batching(batch_bytes_max: usize, linger_ms: Millis, orders_max: u32) -> Core {
    let mut core = batching_core(true, batch_bytes_max, linger_ms);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7, orders_max }), 0);
    core
}

/// The order ids of each message sent (everything offered is taken).
fn sent_ids(core: &mut Core) -> Vec<Vec<String>> {
    let ids = |msg: IntakeMsg| match msg {
        IntakeMsg::Orders(batch) => batch.orders.into_iter().map(|o| o.order).collect(),
        IntakeMsg::Items(items) => vec![items.order],
        other => panic!("not an order: {other:?}"),
    };
    drain(core).into_iter().map(ids).collect()
}

#[test]
fn orders_due_together_go_in_one_batch_each_keeping_its_items() {
    let mut core = batching(1024, 0, 1024);
    core.submit("a".into(), vec![b"x".to_vec(), b"y".to_vec()], 0);
    core.submit("b".into(), vec![], 0);
    core.submit("c".into(), vec![b"z".to_vec()], 0);
    let sent = drain(&mut core);
    let [IntakeMsg::Orders(batch)] = sent.as_slice() else { panic!("one batch: {sent:?}") };
    let orders: Vec<(&str, usize)> = batch.orders.iter().map(|o| (o.order.as_str(), o.data.len())).collect();
    assert_eq!(orders, [("a", 2), ("b", 0), ("c", 1)]);
    assert_eq!(batch.orders[0].data[1].as_ref(), b"y");
    let attempts: Vec<_> = std::iter::from_fn(|| core.poll_transmitted()).map(|t| (t.id, t.attempt)).collect();
    assert_eq!(attempts, [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)], "each order transmitted once");
}

#[test]
fn a_lone_order_and_a_broker_without_batches_get_packed_frames() {
    let mut core = batching(1024, 0, 1024);
    core.submit("a".into(), vec![b"x".to_vec()], 0);
    assert_eq!(kinds(&drain(&mut core)), ["items"], "a lone order goes at once, as before");
    let mut old_broker = batching(1024, 0, 0);
    old_broker.submit("a".into(), vec![], 0);
    old_broker.submit("b".into(), vec![], 0);
    assert_eq!(kinds(&drain(&mut old_broker)), ["items", "items"], "orders_max 0: no batches");
    let mut off = batching(0, 0, 1024);
    off.submit("a".into(), vec![], 0);
    off.submit("b".into(), vec![], 0);
    assert_eq!(kinds(&drain(&mut off)), ["items", "items"], "batch_bytes_max 0: no batches");
}

#[test]
fn batches_are_bounded_by_bytes_and_by_the_broker_s_count() {
    // Each order costs 100 + 5 (item) + 1 (id) + 24 (entry) = 130 bytes.
    let mut core = batching(300, 0, 1024);
    for id in ["a", "b", "c", "d", "e"] {
        core.submit(id.into(), vec![vec![0; 100]], 0);
    }
    assert_eq!(sent_ids(&mut core), [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
    let mut core = batching(1024, 0, 2);
    for id in ["a", "b", "c"] {
        core.submit(id.into(), vec![], 0);
    }
    assert_eq!(sent_ids(&mut core), [vec!["a", "b"], vec!["c"]]);
    let mut big = batching(300, 0, 1024);
    big.submit("big".into(), vec![vec![0; 400]], 0);
    big.submit("small".into(), vec![], 0);
    assert_eq!(kinds(&drain(&mut big)), ["items", "items"], "an order above the budget goes alone");
}

#[test]
fn a_refused_batch_goes_again_whole_after_the_retry_delay() {
    let mut core = batching(1024, 0, 1024);
    core.submit("a".into(), vec![], 0);
    core.submit("b".into(), vec![], 0);
    core.poll_transmit().expect("the batch");
    core.handle_send_refused();
    assert_eq!(core.poll_transmitted(), None, "not an attempt");
    core.handle_timeout(50);
    assert_eq!(sent_ids(&mut core), [vec!["a", "b"]]);
}

#[test]
fn while_orders_keep_coming_a_batch_lingers_for_more() {
    let mut core = batching(1024, 5, 1024);
    core.submit("a".into(), vec![], 10);
    assert_eq!(kinds(&drain(&mut core)), ["items"], "after a quiet spell, at once");
    core.submit("b".into(), vec![], 12);
    assert!(drain(&mut core).is_empty(), "orders are flowing: b lingers");
    assert_eq!(core.poll_timeout(), 17, "at most a linger after b was due");
    core.submit("c".into(), vec![], 14);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(17);
    assert_eq!(sent_ids(&mut core), [vec!["b", "c"]]);
    core.submit("d".into(), vec![], 40);
    assert_eq!(kinds(&drain(&mut core)), ["items"], "a quiet spell again: at once");
}

#[test]
fn a_new_leader_must_offer_batches_again() {
    let mut core = batching(1024, 0, 1024);
    core.follow(2);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 8, orders_max: 0 }), 1);
    core.submit("a".into(), vec![], 1);
    core.submit("b".into(), vec![], 1);
    assert_eq!(kinds(&drain(&mut core)), ["items", "items"], "the new leader takes no batches");
}

fn welcomed(pack_items: bool) -> Core {
    let mut core = core(pack_items);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7, orders_max: 0 }), 0);
    core
}

/// Sends everything offered (the socket takes it all) and returns the
/// decoded messages.
fn drain(core: &mut Core) -> Vec<IntakeMsg> {
    let mut sent = Vec::new();
    while let Some(body) = core.poll_transmit() {
        sent.push(IntakeMsg::decode(body).expect("the core encodes valid messages"));
        core.handle_sent();
    }
    sent
}

fn kinds(msgs: &[IntakeMsg]) -> Vec<&'static str> {
    msgs.iter().map(IntakeMsg::kind).collect()
}

#[test]
fn the_hello_repeats_until_our_welcome_and_orders_wait_for_it() {
    let mut core = core(false);
    core.submit("a".into(), vec![b"x".to_vec()], 0);
    assert_eq!(kinds(&drain(&mut core)), ["hello"]);
    assert_eq!(core.poll_timeout(), 100, "the next hello, not the order");
    core.handle_timeout(100);
    assert_eq!(kinds(&drain(&mut core)), ["hello"]);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 8, orders_max: 0 }), 150);
    assert!(!core.welcomed(), "a welcome for another connection");
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7, orders_max: 0 }), 160);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish"]);
    assert_eq!(core.poll_transmitted(), Some(Transmitted { id: "a".into(), attempt: 1 }));
    assert_eq!(core.poll_timeout(), 160 + 5 * SECOND + CLOCK_TICK_MS);
}

#[test]
fn orders_are_packed_when_asked() {
    let mut core = welcomed(true);
    core.submit("a".into(), vec![b"x".to_vec(), b"y".to_vec()], 0);
    let sent = drain(&mut core);
    let [IntakeMsg::Items(items)] = sent.as_slice() else { panic!("one packed frame: {sent:?}") };
    assert!(items.begin);
    assert_eq!((items.first, items.data.len(), items.finish), (0, 2, Some(2)));
}

#[test]
fn a_refused_message_holds_everything_back_and_the_order_goes_again_whole() {
    let mut core = welcomed(false);
    core.submit("a".into(), vec![b"x".to_vec()], 10);
    core.submit("b".into(), vec![], 10);
    core.poll_transmit().expect("a's Begin");
    core.handle_sent();
    core.poll_transmit().expect("a's item");
    core.handle_send_refused();
    assert!(core.is_blocked() && core.poll_transmit().is_none());
    assert_eq!(core.poll_timeout(), 60, "the retry delay");
    assert_eq!(core.poll_transmitted(), None, "not an attempt");
    core.handle_writable();
    assert_eq!(kinds(&drain(&mut core)), ["begin", "finish"], "b is due; a waits for its retry");
    core.handle_timeout(60);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish"]);
    assert_eq!((core.outbox().attempts("a"), core.outbox().attempts("b")), (Some(1), Some(1)));
}

#[test]
fn answers_come_once_and_resends_back_off() {
    let mut core = welcomed(false);
    core.submit("a".into(), vec![], 0);
    core.submit("b".into(), vec![], 0);
    drain(&mut core);
    core.handle_timeout(5 * SECOND + CLOCK_TICK_MS);
    assert_eq!(drain(&mut core).len(), 4, "both resent after the confirm timeout");
    let attempts: Vec<u32> = std::iter::from_fn(|| core.poll_transmitted()).map(|t| t.attempt).collect();
    assert_eq!(attempts, [1, 1, 2, 2]);
    core.handle_fanout(FanoutMsg::Confirms(Confirms { orders: vec!["a".into(), "a".into()] }), 6 * SECOND);
    let reason = RejectReason::Gap { missing: 0 };
    core.handle_fanout(FanoutMsg::Reject(Reject { order: "b".into(), reason: reason.clone() }), 6 * SECOND);
    core.handle_fanout(FanoutMsg::Confirm(Confirm { order: "c".into() }), 6 * SECOND);
    let answers: Vec<_> = std::iter::from_fn(|| core.poll_answer()).map(|a| (a.id, a.verdict, a.attempts)).collect();
    assert_eq!(answers, [("a".into(), Ok(()), 2), ("b".into(), Err(reason), 2)]);
    assert_eq!(core.unexpected_answers(), 2);
    assert_eq!(core.poll_timeout(), Millis::MAX, "nothing left to send");
}

#[test]
fn a_live_stream_goes_out_as_it_comes_and_its_finish_is_the_first_attempt() {
    let mut core = welcomed(false);
    core.begin_stream("s".into(), 0);
    assert_eq!(core.push_item("s", b"a".to_vec(), 0), Some(0));
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item"]);
    assert_eq!(core.push_item("s", b"b".to_vec(), 1), Some(1));
    assert!(core.finish_stream("s", 2));
    let sent = drain(&mut core);
    assert_eq!(kinds(&sent), ["item", "finish"]);
    assert!(matches!(&sent[1], IntakeMsg::Finish(f) if f.count == 2));
    assert_eq!(core.poll_transmitted(), Some(Transmitted { id: "s".into(), attempt: 1 }));
    assert_eq!(core.poll_timeout(), 2 + 5 * SECOND + CLOCK_TICK_MS);
}

#[test]
fn a_stream_cut_by_a_refusal_is_sent_whole_at_its_finish() {
    let mut core = welcomed(false);
    core.begin_stream("s".into(), 0);
    core.poll_transmit().expect("the Begin");
    core.handle_send_refused();
    core.push_item("s", b"a".to_vec(), 10);
    core.handle_writable();
    assert!(drain(&mut core).is_empty(), "not live any more, and not due before its Finish");
    core.finish_stream("s", 20);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish"]);
}

#[test]
fn a_rejected_or_abandoned_stream_sends_nothing_more() {
    let mut core = welcomed(false);
    core.begin_stream("s".into(), 0);
    core.push_item("s", b"a".to_vec(), 0);
    let expired = RejectReason::Expired { age_ms: 1 };
    core.handle_fanout(FanoutMsg::Reject(Reject { order: "s".into(), reason: expired }), 1);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.push_item("s", b"b".to_vec(), 2), None);
    core.begin_stream("t".into(), 3);
    assert!(core.abandon_stream("t"));
    assert!(drain(&mut core).is_empty() && core.outbox().is_empty());
}

#[test]
fn the_latest_backpressure_announcement_is_kept_while_fresh() {
    let mut core = core(true);
    assert_eq!(core.backpressure(), None);
    let announced = |detail: &str| {
        FanoutMsg::Backpressure(Backpressure {
            reason: orderly_common::protocol::backpressure::DISK_FULL.into(),
            detail: detail.into(),
            interval_ms: SECOND,
        })
    };
    core.handle_fanout(announced("first"), SECOND);
    core.handle_fanout(announced("latest"), 2 * SECOND);
    let kept = core.backpressure().expect("kept");
    assert_eq!((kept.reason.as_str(), kept.detail.as_str()), ("disk_full", "latest"));
    // Nothing new goes out because of it: it only explains silence.
    assert!(matches!(drain(&mut core)[..], [IntakeMsg::Hello(_)]));
    core.handle_timeout(2 * SECOND + BACKPRESSURE_FRESH_INTERVALS * SECOND);
    assert!(core.backpressure().is_some(), "still within its fresh intervals");
    core.handle_timeout(3 * SECOND + BACKPRESSURE_FRESH_INTERVALS * SECOND);
    assert_eq!(core.backpressure(), None, "the announcements stopped: intake is open again");
}

// ------------------------------------------------------------ groups

fn members() -> orderly_common::members::Members {
    use orderly_common::members::{Member, Members};
    let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}").parse().unwrap();
    Members::new(
        (1..=3)
            .map(|id| Member { id, intake: endpoint(1), fanout: endpoint(2), control: endpoint(3), public_key: None })
            .collect(),
    )
    .unwrap()
}

fn announce(member: u64, leader: u64, term: u64) -> FanoutMsg {
    use orderly_common::protocol::BrokerHeartbeat;
    FanoutMsg::Heartbeat(BrokerHeartbeat {
        incarnation: member,
        interval_ms: 100,
        member: Some(member),
        leader: Some(leader),
        term,
    })
}

fn hello_nonce(msgs: &[IntakeMsg]) -> u64 {
    match msgs {
        [IntakeMsg::Hello(hello)] => hello.nonce,
        other => panic!("one hello expected: {other:?}"),
    }
}

/// A group core that follows member 1 (term 1) and was welcomed by it.
fn led_by_member_1() -> (Core, u64) {
    let mut core = Core::in_group(core(false).config().clone(), &members());
    core.handle_fanout(announce(1, 1, 1), 0);
    assert_eq!(core.poll_leader(), Some(1));
    let nonce = hello_nonce(&drain(&mut core));
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce, orders_max: 0 }), 0);
    assert!(core.welcomed());
    (core, nonce)
}

#[test]
fn in_a_group_nothing_goes_out_before_a_leader_is_announced() {
    let mut core = Core::in_group(core(false).config().clone(), &members());
    core.submit("a".into(), vec![], 0);
    assert!(drain(&mut core).is_empty(), "not even a hello");
    assert_eq!(core.poll_timeout(), Millis::MAX);
    core.handle_fanout(announce(2, 3, 4), 10); // a follower names the leader
    assert_eq!((core.poll_leader(), core.leader()), (Some(3), Some(3)));
    assert_eq!(core.poll_leader(), None, "told once");
    assert_eq!(kinds(&drain(&mut core)), ["hello"]);
}

#[test]
fn a_new_leader_gets_a_new_handshake_and_every_unconfirmed_order_at_once() {
    let (mut core, first_nonce) = led_by_member_1();
    core.submit("a".into(), vec![b"x".to_vec()], 10);
    core.submit("b".into(), vec![], 10);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish", "begin", "finish"]);
    core.handle_fanout(announce(2, 2, 2), 100);
    assert_eq!(core.poll_leader(), Some(2));
    assert!(!core.welcomed());
    let nonce = hello_nonce(&drain(&mut core));
    assert_ne!(nonce, first_nonce, "a new handshake");
    // The old leader's late welcome does not prove the new subscription.
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: first_nonce, orders_max: 0 }), 110);
    assert!(!core.welcomed() && drain(&mut core).is_empty());
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce, orders_max: 0 }), 120);
    // At 120 ms, far before the 5 s confirm timeout.
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish", "begin", "finish"]);
    let attempts: Vec<u32> = std::iter::from_fn(|| core.poll_transmitted()).map(|t| t.attempt).collect();
    assert_eq!(attempts, [1, 1, 2, 2]);
}

#[test]
fn older_terms_are_ignored_and_the_deposed_leaders_confirms_still_count() {
    let (mut core, _) = led_by_member_1();
    core.submit("a".into(), vec![], 0);
    core.submit("b".into(), vec![], 0);
    drain(&mut core);
    core.handle_fanout(announce(2, 2, 5), 10);
    assert_eq!(core.poll_leader(), Some(2));
    core.handle_fanout(announce(1, 1, 4), 20); // the deposed leader, still talking
    assert_eq!((core.poll_leader(), core.leader()), (None, Some(2)));
    // It committed "a" before it lost its majority: the confirm is good.
    core.handle_fanout(FanoutMsg::Confirm(Confirm { order: "a".into() }), 30);
    assert_eq!(core.poll_answer().map(|answer| answer.id), Some("a".into()));
    let nonce = hello_nonce(&drain(&mut core));
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce, orders_max: 0 }), 40);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "finish"], "only b is resent");
}

#[test]
fn a_half_sent_order_and_a_live_stream_go_whole_to_the_new_leader() {
    let (mut core, _) = led_by_member_1();
    core.submit("a".into(), vec![b"x".to_vec()], 0);
    core.poll_transmit().expect("a's Begin");
    core.handle_sent();
    core.begin_stream("s".into(), 0);
    core.push_item("s", b"y".to_vec(), 0);
    core.handle_fanout(announce(3, 3, 2), 10);
    let nonce = hello_nonce(&drain(&mut core));
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce, orders_max: 0 }), 20);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "finish"], "a whole; s waits for its Finish");
    core.push_item("s", b"z".to_vec(), 30);
    assert!(drain(&mut core).is_empty(), "s is no longer live");
    core.finish_stream("s", 40);
    assert_eq!(kinds(&drain(&mut core)), ["begin", "item", "item", "finish"]);
}

#[test]
fn a_single_broker_core_ignores_group_announcements() {
    let mut core = welcomed(false);
    core.submit("a".into(), vec![], 0);
    drain(&mut core);
    core.handle_fanout(announce(1, 1, 1), 10);
    assert_eq!(core.poll_leader(), None);
    assert!(core.welcomed() && drain(&mut core).is_empty());
}
