use orderly_common::protocol::{Confirm, Confirms, Reject, Welcome};

use super::*;

const SECOND: Millis = 1_000;

fn core(pack_items: bool) -> Core {
    let outbox = OutboxConfig {
        confirm_timeout_ms: 5 * SECOND,
        resend_backoff_max_ms: 60 * SECOND,
        orders_max: 10,
        bytes_max: 1000,
        transmit_retry_ms: 50,
    };
    Core::new(CoreConfig { producer: "p".into(), nonce: 7, pack_items, hello_interval_ms: 100, outbox })
}

fn welcomed(pack_items: bool) -> Core {
    let mut core = core(pack_items);
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7 }), 0);
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
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 8 }), 150);
    assert!(!core.welcomed(), "a welcome for another connection");
    core.handle_fanout(FanoutMsg::Welcome(Welcome { nonce: 7 }), 160);
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
