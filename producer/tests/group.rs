//! The producer against a group of three brokers, over real ZeroMQ: it
//! sends to the leader alone and follows a new leader at once. The group
//! is scripted (`scripted_group`), standing in for the replicated broker
//! group until it exists.

mod scripted_group;

use std::time::{Duration, Instant};

use orderly_producer::{Order, Outcome, Producer, ProducerConfig};
use scripted_group::{Group, Received};

/// Far above how long the failover may take: a resend after it would
/// fail the test.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

fn order(id: &str) -> Order {
    Order::new(id, vec![br#"{"sku": "A1"}"#.to_vec()])
}

fn is_order(id: &'static str) -> impl Fn(&Received) -> bool {
    move |what| *what == Received::Order(id.into())
}

#[test]
fn unconfirmed_orders_reach_a_new_leader_at_once_and_are_confirmed() {
    let group = Group::start(3);
    let mut config = ProducerConfig::with_members("p-1", group.members.clone());
    config.confirm_timeout = CONFIRM_TIMEOUT;
    config.resend_backoff_max = CONFIRM_TIMEOUT;
    config.handshake_timeout = Duration::from_secs(5);
    let mut producer = Producer::connect(config).expect("welcomed by the leader");
    assert_eq!(producer.leader(), Some(1));

    let first = producer.send(order("a")).unwrap();
    assert_eq!(first.wait(&mut producer, Duration::from_secs(5)).unwrap(), Outcome::Confirmed);

    // The leader takes "b" and "c" but does not confirm them: then it is
    // deposed.
    group.hold_confirms(true);
    let receipts = [producer.send(order("b")).unwrap(), producer.send(order("c")).unwrap()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while group.received(1).iter().filter(|what| matches!(what, Received::Order(_))).count() < 3 {
        assert!(Instant::now() < deadline, "b and c reach member 1: {:?}", group.received(1));
        producer.poll(Duration::from_millis(10)).unwrap();
    }
    let elected = Instant::now();
    group.elect(2);
    group.hold_confirms(false);

    for receipt in &receipts {
        assert_eq!(receipt.wait(&mut producer, Duration::from_secs(3)).unwrap(), Outcome::Confirmed);
    }
    let failover = elected.elapsed();
    assert!(failover < Duration::from_secs(1), "confirmed by the new leader after {failover:?}, not a timer");
    assert_eq!(producer.leader(), Some(2));
    for id in ["b", "c"] {
        assert!(
            group.wait_for(2, Duration::ZERO, is_order(id)).is_some(),
            "{id} went to member 2: {:?} / {:?}",
            group.received(1),
            group.received(2)
        );
    }
    assert!(group.wait_for(2, Duration::ZERO, is_order("a")).is_none(), "a was confirmed: not resent");
    assert!(group.wait_for(3, Duration::ZERO, |what| matches!(what, Received::Order(_))).is_none(), "a follower");

    // The deposed member 1 still announces itself (older term): ignored.
    let later = producer.send(order("d")).unwrap();
    assert_eq!(later.wait(&mut producer, Duration::from_secs(3)).unwrap(), Outcome::Confirmed);
    assert!(group.wait_for(1, Duration::ZERO, is_order("d")).is_none(), "nothing more to member 1");
    assert_eq!(producer.leader(), Some(2));
    producer.close(Duration::from_secs(2)).unwrap();
}

#[test]
fn with_no_leader_announced_connect_fails_after_its_handshake_timeout() {
    // Members that exist but say nothing: bound sockets of a test context.
    let context = zmq::Context::new();
    let mut sockets = Vec::new();
    let mut members = Vec::new();
    for id in 1..=3 {
        let mut endpoints = Vec::new();
        for kind in [zmq::PULL, zmq::XPUB, zmq::PULL] {
            let socket = context.socket(kind).unwrap();
            socket.set_linger(0).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            endpoints.push(socket.get_last_endpoint().unwrap().unwrap().parse().unwrap());
            sockets.push(socket);
        }
        let [intake, fanout, control] = endpoints.try_into().unwrap();
        members.push(orderly_common::members::Member { id, intake, fanout, control, public_key: None });
    }
    let members = orderly_common::members::Members::new(members).unwrap();
    let mut config = ProducerConfig::with_members("p-1", members);
    config.handshake_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = Producer::connect(config).expect_err("no leader: no welcome");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(error.to_string().contains("no member announced a leader"), "{error}");
}
