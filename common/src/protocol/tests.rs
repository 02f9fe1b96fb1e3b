use super::*;
use crate::limits::{INTAKE_FRAME_BYTES_MAX, ITEM_BYTES_MAX};

fn item(seq: u32, data: &[u8]) -> IntakeMsg {
    IntakeMsg::Item(Item { producer: "p1".into(), order: "o-1".into(), seq, data: ByteBuf::from(data.to_vec()) })
}

#[test]
fn intake_round_trips() {
    let messages = [
        IntakeMsg::Hello(ProducerHello { producer: "p1".into(), nonce: 7 }),
        IntakeMsg::Begin(Begin { producer: "p1".into(), order: "o/1 é".into() }),
        item(3, b"{\"sku\":1}"),
        IntakeMsg::Finish(Finish { producer: "p1".into(), order: "o".into(), count: 10 }),
    ];
    for msg in messages {
        assert_eq!(IntakeMsg::decode(&msg.encode()).unwrap(), msg);
    }
}

#[test]
fn control_round_trips() {
    let key = OrderKey::new("p1", "o1");
    let messages = [
        ControlMsg::Heartbeat(Heartbeat {
            worker: "w1".into(),
            incarnation: 9,
            capacity: 4,
            in_flight: vec![key.clone()],
            welcome: Some(3),
            draining: false,
            broken: None,
            dispatches_max: 64,
        }),
        ControlMsg::Ack(Ack { worker: "w1".into(), incarnation: 9, order: key.clone(), attempt: 1 }),
        ControlMsg::Nack(Nack {
            worker: "w1".into(),
            incarnation: 9,
            order: key,
            attempt: 2,
            retry: false,
            reason: "exit 3".into(),
            delay_ms: None,
            returned: false,
        }),
        ControlMsg::Bye(Bye { worker: "w1".into(), incarnation: 9 }),
    ];
    for msg in messages {
        assert_eq!(ControlMsg::decode(&msg.encode()).unwrap(), msg);
    }
}

#[test]
fn fanout_round_trips() {
    let key = OrderKey::new("p1", "o1");
    let items = vec![ByteBuf::from(b"1".to_vec()), ByteBuf::from(b"[2]".to_vec())];
    let dispatch = Dispatch { order: key.clone(), attempt: 2, redelivered: true, items: items.clone() };
    let messages = [
        FanoutMsg::Welcome(Welcome { nonce: 1, orders_max: 0 }),
        FanoutMsg::Dispatch(dispatch.clone()),
        FanoutMsg::Confirm(Confirm { order: "o1".into() }),
        FanoutMsg::Reject(Reject { order: "o1".into(), reason: RejectReason::Gap { missing: 4 } }),
        FanoutMsg::Reject(Reject { order: "o1".into(), reason: RejectReason::UnknownOrder }),
        FanoutMsg::Heartbeat(BrokerHeartbeat {
            incarnation: 5,
            interval_ms: 1000,
            member: None,
            leader: None,
            term: 0,
        }),
        FanoutMsg::Heartbeat(BrokerHeartbeat {
            incarnation: 5,
            interval_ms: 1000,
            member: Some(2),
            leader: Some(3),
            term: 7,
        }),
        FanoutMsg::Backpressure(Backpressure {
            reason: backpressure::DISK_FULL.into(),
            detail: "no space left on device".into(),
            interval_ms: 1000,
        }),
    ];
    for msg in messages {
        assert_eq!(FanoutMsg::decode(&msg.encode()).unwrap(), msg);
    }
    let borrowed = encode_dispatch(&key, 2, true, &items);
    assert_eq!(FanoutMsg::decode(&borrowed).unwrap(), FanoutMsg::Dispatch(dispatch));
}

fn dispatch_n(n: usize) -> Vec<Dispatch> {
    (0..n)
        .map(|i| Dispatch {
            order: OrderKey::new("p1", format!("o{i}")),
            attempt: 1 + i as u32 % 3,
            redelivered: i % 3 > 0,
            items: vec![ByteBuf::from(format!("item {i}").into_bytes())],
        })
        .collect()
}

/// The borrowed encoding (entries encoded one by one, then wrapped) is
/// byte for byte what the owned message encodes to, for both array
/// headers (fixarray below 16 entries, array16 from 16).
#[test]
fn dispatches_round_trip_and_borrowed_encoding_matches() {
    for n in [1, 2, 15, 16, 17, DISPATCHES_PER_MESSAGE_MAX] {
        let dispatches = dispatch_n(n);
        let owned = FanoutMsg::Dispatches(Dispatches { dispatches: dispatches.clone() });
        let bodies: Vec<Vec<u8>> = dispatches
            .iter()
            .map(|d| encode_dispatch_body((&d.order).into(), d.attempt, d.redelivered, &d.items))
            .collect();
        let borrowed = encode_dispatches(&bodies);
        assert_eq!(borrowed, owned.encode(), "{n} entries");
        assert_eq!(FanoutMsg::decode(&borrowed).unwrap(), owned);
        // Entries written straight into the message's one buffer (the
        // broker's path), sized once: the same bytes, no regrowth.
        let bytes = dispatches.iter().map(|d| dispatch_body_bytes((&d.order).into(), &d.items)).sum();
        let mut encoder = DispatchesEncoder::new(n, bytes);
        dispatches.iter().for_each(|d| encoder.push(&d.order, d.attempt, d.redelivered, &d.items));
        let direct = encoder.finish();
        assert!(direct.capacity() <= bytes + 48, "{n} entries: sized once, {} > {bytes} + 48", direct.capacity());
        assert_eq!(direct, owned.encode(), "{n} entries, written directly");
    }
}

#[test]
fn dispatches_out_of_bounds_are_refused() {
    for n in [0, DISPATCHES_PER_MESSAGE_MAX + 1] {
        let msg = FanoutMsg::Dispatches(Dispatches { dispatches: dispatch_n(n) }).encode();
        match FanoutMsg::decode(&msg) {
            Err(DecodeError::Invalid { field: "dispatches", reason }) => {
                assert!(reason.contains(&format!("{n} orders")), "{reason}")
            }
            other => panic!("{n} entries: {other:?}"),
        }
    }
    // Each entry is checked as a lone dispatch is.
    let mut bad = dispatch_n(3);
    bad[1].order = OrderKey::new("p1", "");
    let msg = FanoutMsg::Dispatches(Dispatches { dispatches: bad }).encode();
    assert!(matches!(FanoutMsg::decode(&msg), Err(DecodeError::Invalid { .. })));
}

/// A heartbeat without `dispatches_max` (a worker before 0.5) decodes as
/// 0; one with it decodes on a build whose Heartbeat lacks the field (a
/// broker before 0.5 skips fields it does not know).
#[test]
fn heartbeat_dispatches_max_is_optional_both_ways() {
    #[derive(Serialize, Deserialize)]
    struct OldHeartbeat {
        worker: String,
        incarnation: u64,
        capacity: u32,
        in_flight: Vec<OrderKey>,
    }
    let old = OldHeartbeat { worker: "w1".into(), incarnation: 1, capacity: 2, in_flight: vec![] };
    let ControlMsg::Heartbeat(hb) = ControlMsg::decode(&encode_as("heartbeat", &old)).unwrap() else {
        panic!("not a heartbeat")
    };
    assert_eq!(hb.dispatches_max, 0);
    let new = Heartbeat { dispatches_max: 64, ..hb };
    let body = rmp_serde::to_vec_named(&new).unwrap();
    let read: OldHeartbeat = rmp_serde::from_slice(&body).expect("an older Heartbeat ignores the new field");
    assert_eq!(read.capacity, 2);
}

#[test]
fn unknown_fields_are_tolerated() {
    #[derive(Serialize)]
    struct FutureBegin<'a> {
        producer: &'a str,
        order: &'a str,
        priority: u8,
    }
    #[derive(Serialize)]
    struct FutureEnvelope<'a> {
        v: u16,
        kind: &'a str,
        trace_id: &'a str,
        body: FutureBegin<'a>,
    }
    let bytes = rmp_serde::to_vec_named(&FutureEnvelope {
        v: 1,
        kind: "begin",
        trace_id: "abc",
        body: FutureBegin { producer: "p", order: "o", priority: 3 },
    })
    .unwrap();
    assert_eq!(IntakeMsg::decode(&bytes).unwrap(), IntakeMsg::Begin(Begin { producer: "p".into(), order: "o".into() }));
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let bytes = item(1, b"hello world").encode();
    for cut in 0..bytes.len() {
        let err = IntakeMsg::decode(&bytes[..cut]).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated | DecodeError::Malformed(_)), "cut at {cut}: {err:?}");
    }
    assert_eq!(IntakeMsg::decode(&[]).unwrap_err(), DecodeError::Truncated);
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    assert!(matches!(IntakeMsg::decode(b"\xc1\xc1\xc1"), Err(DecodeError::Malformed(_))));
    assert!(matches!(IntakeMsg::decode(b"not msgpack at all"), Err(DecodeError::Malformed(_))));
    let mut bytes = item(1, b"x").encode();
    bytes.extend_from_slice(b"junk");
    assert_eq!(IntakeMsg::decode(&bytes).unwrap_err(), DecodeError::TrailingBytes(4));
}

#[test]
fn trailing_bytes_are_counted_whatever_they_hold() {
    // The borrowing reader does not count what it read: a whole second
    // message, one complete value (nil) and a cut value must all be found
    // and counted.
    let one = item(1, b"x").encode();
    let cut_array = [0xdc, 0x00];
    for tail in [&one[..], &[0xc0][..], &cut_array[..]] {
        let mut bytes = one.clone();
        bytes.extend_from_slice(tail);
        assert_eq!(IntakeMsg::decode(&bytes).unwrap_err(), DecodeError::TrailingBytes(tail.len()), "tail {tail:x?}");
    }
    assert_eq!(IntakeMsg::decode(&one).unwrap(), item(1, b"x"));
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    let bytes = vec![0u8; INTAKE_FRAME_BYTES_MAX + 1];
    assert_eq!(
        IntakeMsg::decode(&bytes).unwrap_err(),
        DecodeError::Oversized { len: INTAKE_FRAME_BYTES_MAX + 1, max: INTAKE_FRAME_BYTES_MAX }
    );
    // An item just above its own limit fits the frame but is still refused.
    let big = item(0, &vec![b'x'; ITEM_BYTES_MAX + 1]).encode();
    assert!(matches!(IntakeMsg::decode(&big), Err(DecodeError::Invalid { field: "item data", .. })));
}

#[test]
fn wrong_version_kind_and_socket_are_typed() {
    let bytes =
        rmp_serde::to_vec_named(&EnvelopeOut { v: 2, kind: "begin", body: &Welcome { nonce: 1, orders_max: 0 } })
            .unwrap();
    assert_eq!(IntakeMsg::decode(&bytes).unwrap_err(), DecodeError::UnsupportedVersion(2));
    let ack = ControlMsg::Bye(Bye { worker: "w".into(), incarnation: 1 }).encode();
    assert_eq!(IntakeMsg::decode(&ack).unwrap_err(), DecodeError::UnknownKind("bye".into(), "intake"));
}

#[test]
fn invalid_ids_are_refused() {
    let bad = IntakeMsg::Begin(Begin { producer: "p/1".into(), order: "o".into() }).encode();
    assert!(matches!(IntakeMsg::decode(&bad), Err(DecodeError::Invalid { .. })));
    let empty = IntakeMsg::Begin(Begin { producer: "p".into(), order: String::new() }).encode();
    assert!(matches!(IntakeMsg::decode(&empty), Err(DecodeError::Invalid { .. })));
    let zero = ControlMsg::Heartbeat(Heartbeat {
        worker: "w".into(),
        incarnation: 1,
        capacity: 0,
        in_flight: vec![],
        welcome: None,
        draining: false,
        broken: None,
        dispatches_max: 0,
    })
    .encode();
    assert!(matches!(ControlMsg::decode(&zero), Err(DecodeError::Invalid { field: "capacity", .. })));
}

#[test]
fn frames_are_checked() {
    assert_eq!(split_frames(&[b"x".to_vec()]).unwrap_err(), DecodeError::FrameCount(1));
    assert!(split_frames(&[b"t".to_vec(), b"b".to_vec()]).is_ok());
    assert!(matches!(split_frames(&[vec![b't'; 100], b"b".to_vec()]), Err(DecodeError::Oversized { .. })));
}

#[test]
fn random_bytes_never_panic() {
    // A cheap deterministic fuzz pass; cargo-fuzz targets come with issue 8.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = item(2, b"payload").encode();
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        let flips = 1 + (next() % 4) as usize;
        for _ in 0..flips {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let _ = IntakeMsg::decode(&bytes);
        let _ = ControlMsg::decode(&bytes);
        let _ = FanoutMsg::decode(&bytes);
    }
}

#[test]
fn batched_messages_round_trip() {
    let items = IntakeMsg::Items(Items {
        producer: "p1".into(),
        order: "o1".into(),
        begin: true,
        first: 0,
        data: vec![ByteBuf::from(b"a".to_vec()), ByteBuf::from(Vec::new())],
        finish: Some(2),
    });
    assert_eq!(IntakeMsg::decode(&items.encode()).unwrap(), items);
    let acks = ControlMsg::Acks(Acks {
        worker: "w1".into(),
        incarnation: 3,
        acks: vec![Acked { order: OrderKey::new("p1", "o1"), attempt: 1 }],
    });
    assert_eq!(ControlMsg::decode(&acks.encode()).unwrap(), acks);
    let confirms = FanoutMsg::Confirms(Confirms { orders: vec!["a".into(), "b".into()] });
    assert_eq!(FanoutMsg::decode(&confirms.encode()).unwrap(), confirms);
}

#[test]
fn batched_messages_are_bounded() {
    let past = IntakeMsg::Items(Items {
        producer: "p1".into(),
        order: "o1".into(),
        begin: false,
        first: crate::limits::ORDER_ITEMS_MAX,
        data: vec![ByteBuf::from(b"a".to_vec())],
        finish: None,
    });
    assert!(matches!(IntakeMsg::decode(&past.encode()), Err(DecodeError::Invalid { field: "items", .. })));
    let ack = Acked { order: OrderKey::new("p1", "o1"), attempt: 1 };
    let many = ControlMsg::Acks(Acks {
        worker: "w1".into(),
        incarnation: 3,
        acks: vec![ack; crate::limits::ACKS_PER_MESSAGE_MAX + 1],
    });
    assert!(matches!(ControlMsg::decode(&many.encode()), Err(DecodeError::Invalid { field: "acks", .. })));
}

#[test]
fn envelope_fields_in_another_order_are_refused_or_skipped() {
    // An unknown envelope field is skipped wherever it is.
    #[derive(Serialize)]
    struct Extra<'a> {
        x: u8,
        v: u16,
        kind: &'a str,
        body: Begin,
        y: &'a str,
    }
    let begin = Begin { producer: "p".into(), order: "o".into() };
    let bytes = rmp_serde::to_vec_named(&Extra { x: 1, v: 1, kind: "begin", body: begin.clone(), y: "z" }).unwrap();
    assert_eq!(IntakeMsg::decode(&bytes).unwrap(), IntakeMsg::Begin(begin.clone()));
    // The body before the kind cannot be typed in one pass: refused.
    #[derive(Serialize)]
    struct BodyFirst<'a> {
        v: u16,
        body: Begin,
        kind: &'a str,
    }
    let bytes = rmp_serde::to_vec_named(&BodyFirst { v: 1, body: begin, kind: "begin" }).unwrap();
    assert!(matches!(IntakeMsg::decode(&bytes), Err(DecodeError::Malformed(_))));
}

#[test]
fn packing_fills_frames_up_to_the_budget() {
    let items = vec![vec![0u8; 10]; 10]; // 15 bytes each with framing
    assert_eq!(pack_runs(&items, 45), vec![3, 6, 9, 10]);
    assert_eq!(pack_runs(&items, 1000), vec![10]);
    assert_eq!(pack_runs(&Vec::<Vec<u8>>::new(), 45), vec![0]);
    // An item over the budget travels alone.
    let mixed = vec![vec![0u8; 5], vec![0u8; 100], vec![0u8; 5]];
    assert_eq!(pack_runs(&mixed, 50), vec![1, 2, 3]);
    // The borrowed encoder writes what the owned message decodes to.
    let body = encode_items("p", "o", true, 0, &mixed, Some(3));
    let IntakeMsg::Items(m) = IntakeMsg::decode(&body).unwrap() else { panic!("not items") };
    assert_eq!((m.begin, m.first, m.data.len(), m.finish), (true, 0, 3, Some(3)));
}

/// The fuzzer's seeds are valid messages (so it starts from the real
/// grammar); this keeps them valid as the protocol grows.
#[test]
fn fuzz_seeds_decode() {
    macro_rules! seed {
        ($name:literal) => {
            (&include_bytes!(concat!("../../../fuzz/corpus/decode/", $name))[..], $name)
        };
    }
    let intake =
        [seed!("begin"), seed!("item"), seed!("finish"), seed!("hello"), seed!("items"), seed!("items_partial")];
    for (bytes, name) in intake {
        IntakeMsg::decode(bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    for (bytes, name) in [seed!("ack"), seed!("acks"), seed!("bye"), seed!("heartbeat"), seed!("nack")] {
        ControlMsg::decode(bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    for (bytes, name) in [seed!("confirms"), seed!("dispatch"), seed!("reject")] {
        FanoutMsg::decode(bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
}

#[test]
fn backpressure_tolerates_unknown_fields_and_reasons() {
    #[derive(Serialize)]
    struct FutureBackpressure<'a> {
        reason: &'a str,
        interval_ms: u64,
        retry_after_ms: u64,
    }
    let body = FutureBackpressure { reason: "quota_exceeded", interval_ms: 500, retry_after_ms: 9 };
    let bytes = encode_as("backpressure", &body);
    // A reason this build does not know, a field it does not know, and no
    // detail: all accepted.
    let expected = Backpressure { reason: "quota_exceeded".into(), detail: String::new(), interval_ms: 500 };
    assert_eq!(FanoutMsg::decode(&bytes).unwrap(), FanoutMsg::Backpressure(expected));
    assert_eq!(
        FanoutMsg::decode(&encode_as(
            "backpressure",
            &Backpressure { reason: String::new(), detail: String::new(), interval_ms: 1 }
        )),
        Err(DecodeError::Invalid { field: "backpressure reason", reason: "0 bytes; it must be 1..=64".into() })
    );
    let long = Backpressure { reason: "x".into(), detail: "d".repeat(REASON_BYTES_MAX + 1), interval_ms: 1 };
    assert!(matches!(
        FanoutMsg::decode(&encode_as("backpressure", &long)),
        Err(DecodeError::Invalid { field: "backpressure detail", .. })
    ));
    // Not a message of the other sockets.
    assert!(matches!(IntakeMsg::decode(&bytes), Err(DecodeError::UnknownKind(..))));
}

#[test]
fn a_heartbeat_without_group_fields_is_a_single_brokers() {
    // What brokers before groups send: no member, leader or term.
    #[derive(Serialize)]
    struct OldHeartbeat {
        incarnation: u64,
        interval_ms: u64,
    }
    let bytes = encode_as("heartbeat", &OldHeartbeat { incarnation: 9, interval_ms: 250 });
    let expected = BrokerHeartbeat { incarnation: 9, interval_ms: 250, member: None, leader: None, term: 0 };
    assert_eq!(FanoutMsg::decode(&bytes).unwrap(), FanoutMsg::Heartbeat(expected));
}

/// Messages with a payload are written into the buffer sized for them
/// up front: a buffer that had to grow has another capacity than the one
/// it was given (each growth copied the message so far).
#[test]
fn messages_with_a_payload_never_grow_their_buffer() {
    let key = OrderKey::new("producer-1", "order-with-a-longer-id-0001");
    for (count, size) in [(1, 0), (1, 1), (10, 100), (3, 300), (2, 70_000), (1000, 10)] {
        let items: Vec<ByteBuf> = (0..count).map(|i| ByteBuf::from(vec![i as u8; size])).collect();
        let sized = |payload: usize| payload + ENCODE_OVERHEAD_BYTES;

        let dispatch = encode_dispatch(&key, u32::MAX, true, &items);
        let hint = items_encoded_bytes(&items) + key.producer.len() + key.id.len();
        assert_eq!(dispatch.capacity(), sized(hint), "dispatch of {count} × {size} B grew");

        let message = encode_items(&key.producer, &key.id, true, u32::MAX, &items, Some(u32::MAX));
        let hint = items_encoded_bytes(&items) + key.producer.len() + key.id.len();
        assert_eq!(message.capacity(), sized(hint), "items of {count} × {size} B grew");

        let orders: Vec<(&str, &[ByteBuf])> = vec![(key.id.as_str(), &items[..]); 3];
        let message = encode_orders(&key.producer, &orders);
        let hint = key.producer.len() + 3 * (key.id.len() + items_encoded_bytes(&items) + 2 * ITEM_FRAMING_BYTES);
        assert_eq!(message.capacity(), sized(hint), "orders of {count} × {size} B grew");
    }
}

/// The broker's decode borrows ids and items from the frame, and its owned
/// copy is the message that was sent (`IntakeMsg::decode` is that copy).
#[test]
fn intake_decodes_borrowed_from_the_frame() {
    use std::borrow::Cow;
    let items = IntakeMsg::Items(Items {
        producer: "p1".into(),
        order: "o-1".into(),
        begin: true,
        first: 0,
        data: vec![ByteBuf::from(b"a".to_vec()), ByteBuf::from(Vec::new())],
        finish: Some(2),
    });
    let orders = IntakeMsg::Orders(Orders {
        producer: "p1".into(),
        orders: vec![WholeOrder { order: "o-2".into(), data: vec![ByteBuf::from(b"bc".to_vec())] }],
    });
    for msg in [item(3, b"{\"sku\":1}"), items, orders] {
        let frame = msg.encode();
        let decoded = IntakeRef::decode(&frame).unwrap();
        let borrowed = |data: &[u8]| frame.as_ptr_range().contains(&data.as_ptr()) || data.is_empty();
        match &decoded {
            IntakeRef::Item(m) => {
                assert!(matches!((&m.producer, &m.order), (Cow::Borrowed(_), Cow::Borrowed(_))));
                assert!(matches!(m.data.0, Cow::Borrowed(_)) && borrowed(&m.data));
            }
            IntakeRef::Items(m) => assert!(m.data.iter().all(|d| matches!(d.0, Cow::Borrowed(_)) && borrowed(d))),
            IntakeRef::Orders(m) => {
                assert!(m.orders.iter().flat_map(|o| &o.data).all(|d| matches!(d.0, Cow::Borrowed(_)) && borrowed(d)))
            }
            other => panic!("decoded as {other:?}"),
        }
        assert_eq!(decoded.to_owned_msg(), msg);
        assert_eq!(msg.as_ref_msg(), decoded);
    }
}

/// PROTOCOL.md says an item is a `bin`; the decoder has always also taken
/// one sent as an array of integers (0..=255) or as a `str`, and still does
/// (copied, as the frame holds no such bytes), with the same refusals.
#[test]
fn an_item_sent_as_an_array_of_integers_or_a_str_is_still_taken() {
    #[derive(Serialize)]
    struct LooseItem<D> {
        producer: &'static str,
        order: &'static str,
        seq: u32,
        data: D,
    }
    let frame = |data| encode_as("item", &LooseItem { producer: "p1", order: "o-1", seq: 0, data });
    assert_eq!(IntakeMsg::decode(&frame(vec![104u8, 105])).unwrap(), item(0, b"hi"));
    let as_str = encode_as("item", &LooseItem { producer: "p1", order: "o-1", seq: 0, data: "hi" });
    assert_eq!(IntakeMsg::decode(&as_str).unwrap(), item(0, b"hi"));
    // An integer out of a byte's range is refused, as it was.
    let error =
        IntakeMsg::decode(&encode_as("item", &LooseItem { producer: "p1", order: "o-1", seq: 0, data: [300u16] }));
    assert!(matches!(error, Err(DecodeError::Malformed(_))), "{error:?}");
}

/// An item that is no byte array at all is refused in the words of 0.5.1's
/// owned decode (`ByteBuf`'s "expected byte array"), borrowed or owned, in
/// each message that carries items (`item`, `items`, `orders`).
#[test]
fn an_item_that_is_no_byte_array_is_refused_as_before() {
    #[derive(Serialize)]
    struct LooseItem {
        producer: &'static str,
        order: &'static str,
        seq: u32,
        data: u64,
    }
    #[derive(Serialize)]
    struct LooseOrder {
        order: &'static str,
        data: Vec<u64>,
    }
    #[derive(Serialize)]
    struct LooseOrders {
        producer: &'static str,
        orders: Vec<LooseOrder>,
    }
    #[derive(Serialize)]
    struct LooseItems {
        producer: &'static str,
        order: &'static str,
        begin: bool,
        first: u32,
        data: Vec<u64>,
        finish: Option<u32>,
    }
    let frames = [
        encode_as(
            "items",
            &LooseItems { producer: "p1", order: "o-1", begin: true, first: 0, data: vec![7], finish: None },
        ),
        encode_as("item", &LooseItem { producer: "p1", order: "o-1", seq: 0, data: 7 }),
        encode_as("orders", &LooseOrders { producer: "p1", orders: vec![LooseOrder { order: "o-1", data: vec![7] }] }),
    ];
    for frame in frames {
        for error in [IntakeRef::decode(&frame).map(drop), IntakeMsg::decode(&frame).map(drop)] {
            let text = error.expect_err("an integer is no item").to_string();
            assert!(text.contains("expected byte array"), "{text}");
        }
    }
}
