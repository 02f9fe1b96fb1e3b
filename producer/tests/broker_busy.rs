//! A broker that is up but not reading intake says why (`backpressure` on
//! `b/`), and the producer reports that instead of "no broker".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orderly_common::protocol::{backpressure, Backpressure, FanoutMsg};
use orderly_producer::{Endpoint, Producer, ProducerConfig, ProducerError};

#[test]
fn a_handshake_with_a_busy_broker_reports_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let intake: Endpoint = format!("ipc://{}/intake", dir.path().display()).parse().expect("endpoint");
    let fanout: Endpoint = format!("ipc://{}/fanout", dir.path().display()).parse().expect("endpoint");
    let context = zmq::Context::new();
    // Bound, never read: the broker is not reading intake.
    let pull = context.socket(zmq::PULL).expect("PULL");
    let publisher = context.socket(zmq::PUB).expect("PUB");
    for socket in [&pull, &publisher] {
        socket.set_linger(0).expect("LINGER");
    }
    pull.bind(intake.as_str()).expect("bind intake");
    publisher.bind(fanout.as_str()).expect("bind fanout");
    let stop = Arc::new(AtomicBool::new(false));
    let announcing = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let message = Backpressure {
                reason: backpressure::DISK_FULL.into(),
                detail: "no space left on device".into(),
                interval_ms: 50,
            };
            let body = FanoutMsg::Backpressure(message).encode();
            while !stop.load(Ordering::Relaxed) {
                publisher.send_multipart([b"b/".as_slice(), body.as_slice()], 0).expect("publish");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut config = ProducerConfig::new("held-back", intake, fanout);
    config.handshake_timeout = Duration::from_millis(1500);
    let error = Producer::connect(config).expect_err("no welcome");
    stop.store(true, Ordering::Relaxed);
    announcing.join().expect("announcer");
    match &error {
        ProducerError::BrokerBusy { reason, detail, .. } => {
            assert_eq!((reason.as_str(), detail.as_str()), ("disk_full", "no space left on device"));
        }
        other => panic!("expected BrokerBusy, got {other:?}"),
    }
    assert!(error.is_timeout(), "exit code 4 like any other timeout");
    let text = error.to_string();
    assert!(text.contains("not taking orders: disk_full: no space left on device"), "{text}");
    assert!(!text.contains("is the broker running"), "{text}");
    drop(pull);
}
