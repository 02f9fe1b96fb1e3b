//! The producer library against a fake broker (raw ZeroMQ sockets in the
//! test): resends, typed rejects, backpressure, the on-disk outbox.

mod fake_broker;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_broker::{Action, FakeBroker};
use orderly_producer::{
    Order, Outcome, Producer, ProducerConfig, ProducerError, ReceiptState, RejectError, RejectReason,
};

/// Generous bound on any single wait: the tests finish far sooner.
const PATIENCE: Duration = Duration::from_secs(5);

fn config(broker: &FakeBroker, id: &str) -> ProducerConfig {
    let mut config = ProducerConfig::new(id, broker.intake.clone(), broker.fanout.clone());
    config.handshake_timeout = PATIENCE;
    config.confirm_timeout = Duration::from_millis(200);
    config.send_timeout = Duration::from_millis(300);
    config
}

fn order(id: &str, items: &[&str]) -> Order {
    Order::new(id, items.iter().map(|item| item.as_bytes().to_vec()).collect())
}

fn as_bytes(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|item| item.as_bytes().to_vec()).collect()
}

#[test]
fn an_unanswered_order_is_resent_after_the_confirm_timeout() {
    // The first copy is lost (as in a broker crash before its commit); only
    // the resend is confirmed.
    let broker = FakeBroker::start(|_, nth| if nth == 1 { Action::Ignore } else { Action::Confirm });
    let mut producer = Producer::connect(config(&broker, "resend")).expect("connects");
    let started = Instant::now();
    let receipt = producer.send(order("o-1", &["{\"a\": 1}", "[2]"])).expect("sent");
    assert_eq!(receipt.state(&producer), ReceiptState::Pending { attempts: 1 });
    assert_eq!(receipt.wait(&mut producer, PATIENCE).expect("answered"), Outcome::Confirmed);
    assert!(started.elapsed() >= Duration::from_millis(200), "not resent before the confirm timeout");
    let seen = broker.seen();
    assert_eq!(seen.finishes("o-1"), 2);
    assert_eq!(seen.items("o-1"), as_bytes(&["{\"a\": 1}", "[2]"]), "the resend carries the same items");
    assert_eq!(producer.stats().resends, 1);
    assert_eq!(receipt.state(&producer), ReceiptState::Unknown, "wait took the answer");
    producer.close(PATIENCE).expect("nothing left to flush");
}

#[test]
fn a_streamed_order_is_numbered_kept_and_resent_whole() {
    let broker = FakeBroker::start(|_, nth| if nth == 1 { Action::Ignore } else { Action::Confirm });
    let mut producer = Producer::connect(config(&broker, "stream")).expect("connects");
    let mut stream = producer.begin("s-1").expect("begun");
    assert_eq!(stream.item(b"\"first\"".to_vec()).expect("item"), 0);
    assert_eq!(stream.item(b"\"second\"".to_vec()).expect("item"), 1);
    let receipt = stream.finish().expect("finished");
    assert_eq!(receipt.wait(&mut producer, PATIENCE).expect("answered"), Outcome::Confirmed);
    let seen = broker.seen();
    assert_eq!((seen.finishes("s-1"), seen.begins["s-1"]), (2, 2), "the resend repeats Begin and Finish");
    assert_eq!(seen.items("s-1"), as_bytes(&["\"first\"", "\"second\""]));

    // A stream dropped unfinished is abandoned: nothing waits for it.
    let mut stream = producer.begin("s-2").expect("begun");
    stream.item(b"1".to_vec()).expect("item");
    drop(stream);
    assert_eq!(producer.pending(), 0);
}

#[test]
fn typed_rejects_reach_the_caller() {
    let broker = FakeBroker::start(|order, _| match order {
        "gap" => Action::Reject(RejectReason::Gap { missing: 1 }),
        "big" => Action::Reject(RejectReason::TooLarge { detail: "17 MiB".into() }),
        "full" => Action::Reject(RejectReason::LimitReached { detail: "partial orders".into() }),
        _ => Action::Confirm,
    });
    let mut producer = Producer::connect(config(&broker, "rejects")).expect("connects");
    let receipts = producer
        .send_batch(vec![order("gap", &["1"]), order("big", &["2"]), order("full", &["3"]), order("fine", &["4"])])
        .expect("sent");
    let gap = receipts[0].wait(&mut producer, PATIENCE).expect("answered");
    assert!(
        matches!(&gap, Outcome::Rejected(RejectError { order_id, reason: RejectReason::Gap { missing: 1 } }) if order_id == "gap"),
        "{gap:?}"
    );
    producer.flush(PATIENCE).expect("every order answered");
    let mut answers: Vec<_> = producer.poll_receipts().into_iter().map(|answer| answer.into_pair()).collect();
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    let [(big, big_result), (fine, fine_result), (full, full_result)] = answers.as_slice() else {
        panic!("three answers left after the wait took one: {answers:?}")
    };
    assert_eq!((big.as_str(), fine.as_str(), full.as_str()), ("big", "fine", "full"));
    assert!(matches!(big_result, Err(RejectError { reason: RejectReason::TooLarge { .. }, .. })));
    assert!(matches!(full_result, Err(RejectError { reason: RejectReason::LimitReached { .. }, .. })));
    assert_eq!(fine_result, &Ok(()));
    let message = big_result.as_ref().unwrap_err().to_string();
    assert!(message.contains("\"big\"") && message.contains("17 MiB"), "{message}");
    assert_eq!(producer.stats().rejected, 3);
}

#[test]
fn a_full_outbox_with_nothing_answered_is_backpressure() {
    let broker = FakeBroker::start(|_, _| Action::Ignore);
    let mut config = config(&broker, "full");
    config.outbox_orders_max = 2;
    let mut producer = Producer::connect(config).expect("connects");
    producer.send(order("a", &["1"])).expect("room for one");
    producer.send(order("b", &["2"])).expect("room for two");
    let started = Instant::now();
    let error = producer.send(order("c", &["3"])).expect_err("the outbox is full");
    let waited = started.elapsed();
    assert!(matches!(error, ProducerError::Backpressure { orders: 2, .. }), "{error:?}");
    assert!(error.to_string().starts_with("backpressure"), "{error}");
    assert!(waited >= Duration::from_millis(300) && waited < PATIENCE, "waited {waited:?}");
    assert!(!producer.is_pending("c"), "a refused order is not in the outbox");

    let error = producer.flush(Duration::from_millis(200)).expect_err("nothing is answered");
    assert!(matches!(error, ProducerError::Unanswered { unanswered: 2, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("backpressure") && message.contains("unreachable"), "{message}");
    assert!(error.is_timeout());
}

#[test]
fn the_disk_outbox_survives_a_crash_and_resends_on_the_next_connect() {
    let answering = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&answering);
    let broker =
        FakeBroker::start(move |_, _| if flag.load(Ordering::Relaxed) { Action::Confirm } else { Action::Ignore });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, "durable");
    config.outbox_dir = Some(dir.path().join("outbox"));
    // A long confirm timeout: the first producer must not get its resend in.
    config.confirm_timeout = Duration::from_secs(60);

    let mut first = Producer::connect(config.clone()).expect("connects");
    assert_eq!(first.recovered(), 0);
    first.send(order("d-1", &["1"])).expect("sent");
    first.send_batch(vec![order("d-2", &["2", "22"]), order("d-3", &[])]).expect("sent");
    let mut stream = first.begin("d-4").expect("begun");
    stream.item(b"4".to_vec()).expect("item");
    stream.finish().expect("finished");
    assert!(broker.wait_for(PATIENCE, |seen| seen.finishes.len() == 4), "the broker saw every order once");
    // A crash: no close, no flush; only what is on disk survives.
    drop(first);

    answering.store(true, Ordering::Relaxed);
    let mut second = Producer::connect(config.clone()).expect("reconnects");
    assert_eq!(second.recovered(), 4);
    let report = second.flush(PATIENCE).expect("the recovered orders are answered");
    assert_eq!(report.answered, 4);
    let mut confirmed: Vec<String> = second.poll_receipts().into_iter().map(|answer| answer.order_id).collect();
    confirmed.sort();
    assert_eq!(confirmed, ["d-1", "d-2", "d-3", "d-4"]);
    let seen = broker.seen();
    assert_eq!(seen.items("d-2"), as_bytes(&["2", "22"]), "recovered byte for byte");
    assert!(["d-1", "d-2", "d-3", "d-4"].iter().all(|id| seen.finishes(id) == 2), "{:?}", seen.finishes);
    second.close(PATIENCE).expect("closes");

    let third = Producer::connect(config).expect("reconnects");
    assert_eq!(third.recovered(), 0, "answered orders are not resent");
}

#[test]
fn two_producers_cannot_share_an_outbox() {
    let broker = FakeBroker::start(|_, _| Action::Confirm);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, "shared");
    config.outbox_dir = Some(dir.path().to_path_buf());
    let _first = Producer::connect(config.clone()).expect("connects");
    let error = Producer::connect(config).expect_err("the outbox is locked");
    assert!(matches!(&error, ProducerError::OutboxLocked { dir: locked } if locked == dir.path()), "{error:?}");
    assert!(error.to_string().contains("two producers cannot share an outbox"), "{error}");
}

#[test]
fn no_broker_is_a_clear_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = |name: &str| format!("ipc://{}", Path::new(dir.path()).join(name).display()).parse().unwrap();
    let mut config = ProducerConfig::new("lonely", endpoint("intake"), endpoint("fanout"));
    config.handshake_timeout = Duration::from_millis(300);
    let error = Producer::connect(config).expect_err("nobody answers");
    assert!(matches!(error, ProducerError::NoBroker { .. }), "{error:?}");
    assert!(error.to_string().contains("no answer from a broker"), "{error}");
}

#[test]
fn bad_orders_and_duplicates_are_refused_before_sending() {
    let broker = FakeBroker::start(|_, _| Action::Ignore);
    let mut producer = Producer::connect(config(&broker, "checks")).expect("connects");
    let error = producer.send(order("", &["1"])).expect_err("empty id");
    assert!(matches!(error, ProducerError::InvalidOrder { .. }), "{error:?}");
    let huge = Order::new("huge", vec![vec![b'x'; orderly_common::limits::ITEM_BYTES_MAX + 1]]);
    assert!(matches!(producer.send(huge), Err(ProducerError::InvalidOrder { .. })));
    producer.send(order("twice", &["1"])).expect("sent");
    let error = producer.send(order("twice", &["1"])).expect_err("still pending");
    assert!(matches!(error, ProducerError::DuplicateOrder { .. }), "{error:?}");
    let error = producer.send_batch(vec![order("x", &[]), order("x", &[])]).expect_err("twice in a batch");
    assert!(matches!(error, ProducerError::DuplicateOrder { .. }), "{error:?}");
    assert_eq!(producer.pending_ids(), ["twice"]);
}

#[test]
fn uncollected_answers_are_bounded() {
    let broker = FakeBroker::start(|_, _| Action::Confirm);
    let mut config = config(&broker, "forgetful");
    config.answers_kept_max = 2;
    let mut producer = Producer::connect(config).expect("connects");
    let receipts = producer.send_batch(vec![order("a", &[]), order("b", &[]), order("c", &[])]).expect("sent");
    producer.flush(PATIENCE).expect("answered");
    assert_eq!(producer.stats().answers_dropped, 1);
    assert_eq!(receipts[0].state(&producer), ReceiptState::Unknown, "the oldest answer was dropped");
    assert_eq!(receipts[2].state(&producer), ReceiptState::Answered(Outcome::Confirmed));
    assert!(matches!(receipts[0].wait(&mut producer, PATIENCE), Err(ProducerError::UnknownReceipt { .. })));
    let ids: Vec<String> = producer.poll_receipts().into_iter().map(|answer| answer.order_id).collect();
    assert_eq!(ids, ["b", "c"]);
}
