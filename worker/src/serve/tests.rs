use super::*;

fn key(id: &str) -> OrderKey {
    OrderKey::new("p1", id)
}

#[test]
fn an_ack_names_its_order() {
    let answer = parse_answer(br#"{"producer":"p1","id":"o-7","result":"ack"}"#).expect("valid");
    assert_eq!(answer, Answer { order: key("o-7"), outcome: Ok(()) });
    // A trailing CR (a handler writing CRLF) and unknown fields are fine.
    let answer =
        parse_answer(b"{\"id\":\"o\",\"producer\":\"p1\",\"result\":\"ack\",\"took_ms\":3,\"x\":{}}\r").expect("valid");
    assert_eq!(answer.outcome, Ok(()));
}

#[test]
fn a_nack_carries_retry_delay_and_reason() {
    let line = br#"{"producer":"p1","id":"o","result":"nack","retry":true,"delay_ms":5000,"reason":"db down"}"#;
    let answer = parse_answer(line).expect("valid");
    assert_eq!(answer.outcome, Err(Failure::retry_later("db down", Some(5000))));
    let answer = parse_answer(br#"{"producer":"p1","id":"o","result":"nack"}"#).expect("valid");
    assert_eq!(answer.outcome, Err(Failure::retry(NACK_REASON_DEFAULT)));
    let answer = parse_answer(br#"{"producer":"p1","id":"o","result":"nack","retry":false,"reason":"bad"}"#).unwrap();
    assert_eq!(answer.outcome, Err(Failure::permanent("bad")));
    // A delay past 24 h is clamped.
    let answer = parse_answer(br#"{"producer":"p1","id":"o","result":"nack","delay_ms":99999999999}"#).unwrap();
    assert_eq!(answer.outcome, Err(Failure::retry_later(NACK_REASON_DEFAULT, Some(RETRY_DELAY_MS_MAX))));
    // Escaped strings are decoded.
    let answer = parse_answer(br#"{"producer":"p1","id":"a\"b\n","result":"ack"}"#).unwrap();
    assert_eq!(answer.order, key("a\"b\n"));
}

#[test]
fn bad_lines_say_what_is_wrong() {
    let bad = |line: &[u8]| parse_answer(line).expect_err("bad line").to_string();
    assert!(bad(b"hello from print()").starts_with("not a JSON answer object"));
    assert!(bad(br#"{"producer":"p1","result":"ack"}"#).contains("missing field `id`"));
    assert!(bad(br#"{"producer":"p1","id":"o"}"#).contains("missing field `result`"));
    assert!(bad(br#"{"producer":"p1","id":7,"result":"ack"}"#).contains("invalid type"));
    assert!(bad(br#"{"producer":"p1","id":"o","result":"nack","delay_ms":-1}"#).contains("invalid value"));
    assert_eq!(
        bad(br#"{"producer":"p1","id":"o","result":"done"}"#),
        "\"result\" is \"done\"; expected \"ack\" or \"nack\""
    );
    assert!(bad(b"[1,2]").starts_with("not a JSON answer object"));
    assert!(bad(b"\xff\xfe").starts_with("not a JSON answer object"));
}

#[test]
fn lines_are_split_and_bounded() {
    let (lines, consumed) = split_lines(b"a\nbc\n\npartial", 10).expect("short lines");
    assert_eq!(lines, [b"a".as_slice(), b"bc", b""]);
    assert_eq!(consumed, 6);
    assert_eq!(split_lines(b"", 10), Ok((vec![], 0)));
    // A complete line over the limit, and an unfinished one, are errors.
    assert_eq!(split_lines(b"ok\n0123456789ab\n", 10), Err(12));
    assert_eq!(split_lines(b"ok\n0123456789ab", 10), Err(12));
    assert!(split_lines(b"0123456789\n0123456789", 10).is_ok(), "exactly the limit is fine");
}

#[test]
fn an_order_line_is_one_line_with_the_same_meaning() {
    let order = Dispatch {
        order: key("o\n1"),
        attempt: 1,
        redelivered: false,
        items: vec![
            serde_bytes::ByteBuf::from(b"{\"a\":\r\n [1,\n2]}\n".to_vec()),
            serde_bytes::ByteBuf::from(vec![0xff, b'\n']),
        ],
    };
    let mut out = b"before\n".to_vec();
    write_order_line(&mut out, &order);
    let line = &out[b"before\n".len()..];
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(line.ends_with(b"\n") && !line.contains(&b'\r'));
    let value: serde_json::Value = serde_json::from_slice(line).expect("JSON");
    assert_eq!(value["id"], "o\n1");
    assert_eq!(value["items"][0], serde_json::json!({"a": [1, 2]}));
    assert_eq!(value["items"][1]["base64"], "/wo=");
    assert_eq!(value["base64_items"], serde_json::json!([1]));
}
