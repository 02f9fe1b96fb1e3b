//! The journal's record bodies: one [`Event`] each, MessagePack with
//! structs as arrays. Pure functions, so the core's users (the IO loop,
//! `journal inspect`, tests, benches) share one encoding.

use orderly_common::OrderKey;

use super::{Event, Payload};

/// A journal record body that is not an event this build can use.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("journal record {seq} is not a broker event this build understands")]
    Undecodable {
        seq: u64,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error(
        "journal record {seq} is not a broker event this build understands: expected an order's payload, found {found}"
    )]
    NotPayload { seq: u64, found: String },
}

/// Encodes one event as a journal record body: structs as arrays (no field
/// names: a third of the bytes of an item record). The decoder reads both
/// forms, so journals written with named fields still replay.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut body = Vec::new();
    encode_event_into(event, &mut body);
    body
}

/// [`encode_event`] appended to `out`: the recorder encodes straight into
/// the journal's write buffer, so a record (its payload included) is
/// neither allocated on its own nor copied.
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) {
    rmp_serde::encode::write(out, event).expect("encoding an event into memory cannot fail");
}

/// Decodes one journal record body; `seq` names the record in the error.
pub fn decode_event(seq: u64, body: &[u8]) -> Result<Event, EventDecodeError> {
    rmp_serde::from_slice(body).map_err(|source| EventDecodeError::Undecodable { seq, source })
}

/// `key`'s items out of `event`, the decoded record `seq`, which must hold
/// that order's whole payload (see [`Event::for_each_payload_key`]).
pub fn take_payload(seq: u64, mut event: Event, key: &OrderKey) -> Result<Payload, EventDecodeError> {
    match event.payload_of_mut(key) {
        Some(items) => Ok(items.clone()), // shared, not copied
        None => Err(EventDecodeError::NotPayload { seq, found: event_name(&event) }),
    }
}

/// An event's variant name, for messages.
pub fn event_name(event: &Event) -> String {
    format!("{event:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
}

/// One event of every kind, payloads included (tests of the encoding).
#[cfg(test)]
pub(crate) fn one_event_of_each_kind() -> Vec<Event> {
    use super::{AcceptedOrder, Snapshot};
    use orderly_common::protocol::RejectReason;
    use serde_bytes::ByteBuf;
    let key = || OrderKey::new("producer-1", "order-000042");
    let item = |fill: u8| ByteBuf::from(vec![fill; 100]);
    let events = vec![
        Event::Begun { key: key(), at_ms: 5 },
        Event::ItemStored { key: key().into(), seq: 1, data: item(1) },
        Event::Sealed { key: key(), count: 10, at_unix_ms: 1_700_000_000_000 },
        Event::Accepted { key: key(), items: (0..10).map(item).collect(), at_unix_ms: 9 },
        Event::Dropped { key: key(), reason: RejectReason::Gap { missing: 3 } },
        Event::Dispatched { key: key(), worker: "worker-7".into(), attempt: 2 },
        Event::Acked { key: key() },
        Event::Requeued { key: key(), reason: "worker lost".into(), refunded: true, delay_ms: 250 },
        Event::DeadLettered { key: key(), reason: "failed 5 times".into(), at_unix_ms: 11 },
        Event::Restored { key: key(), snapshot: Snapshot::Partial { items: vec![(0, item(2)), (2, item(3))] } },
        Event::Restored {
            key: key(),
            snapshot: Snapshot::Sealed {
                items: vec![item(4)].into(),
                attempts: 3,
                dead: Some("no".into()),
                retry_in_ms: 7,
                first_seen_unix_ms: 8,
                dead_since_unix_ms: 9,
                last_reason: Some("crash".into()),
            },
        },
        Event::Restored { key: key(), snapshot: Snapshot::Acked { at_ms: 12 } },
        Event::Revived { key: key() },
        Event::Forgotten { key: key() },
        Event::Discarded { key: key() },
        Event::AcceptedBatch {
            orders: (0..3u8)
                .map(|n| AcceptedOrder { key: OrderKey::new("p", format!("o-{n}")), items: vec![item(n); 10].into() })
                .collect(),
            at_unix_ms: 13,
        },
    ];
    // Exhaustive (no `_` arm): a new kind of event fails to compile here
    // until it is added above.
    let kind = |event: &Event| match event {
        Event::Begun { .. } => 0,
        Event::ItemStored { .. } => 1,
        Event::Sealed { .. } => 2,
        Event::Accepted { .. } => 3,
        Event::Dropped { .. } => 4,
        Event::Dispatched { .. } => 5,
        Event::Acked { .. } => 6,
        Event::Requeued { .. } => 7,
        Event::DeadLettered { .. } => 8,
        Event::Restored { .. } => 9,
        Event::Revived { .. } => 10,
        Event::Forgotten { .. } => 11,
        Event::Discarded { .. } => 12,
        Event::AcceptedBatch { .. } => 13,
    };
    let kinds: std::collections::BTreeSet<usize> = events.iter().map(kind).collect();
    assert_eq!(kinds.len(), 14, "one event of each kind");
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    /// The record bytes are those of 0.5 (`rmp_serde::to_vec`), whether
    /// encoded alone or appended behind other bytes (the journal's batch).
    #[test]
    fn encoding_into_a_buffer_gives_the_bytes_of_0_5_for_every_kind() {
        for event in one_event_of_each_kind() {
            let old = rmp_serde::to_vec(&event).unwrap();
            assert_eq!(encode_event(&event), old, "{event:?}");
            let mut buffer = b"earlier records".to_vec();
            encode_event_into(&event, &mut buffer);
            assert_eq!(&buffer[..15], b"earlier records");
            assert_eq!(&buffer[15..], old, "{event:?}");
        }
    }

    /// The record bytes of every kind of event, pinned to 0.5.2's (the
    /// digest was taken from main 358c22b, when `Accepted` held a
    /// `Vec<ByteBuf>` and `ItemStored` its own key): the in-memory types
    /// may change, the bytes on disk may not. Each decodes back to itself.
    #[test]
    fn every_kind_of_event_encodes_to_the_bytes_of_0_5_2() {
        const GOLDEN_CRC32C: u32 = 0x56c5_9257;
        let mut bodies = Vec::new();
        for event in one_event_of_each_kind() {
            let body = encode_event(&event);
            assert_eq!(decode_event(1, &body).unwrap(), event);
            bodies.extend_from_slice(&body);
        }
        assert_eq!(
            crc32c::crc32c(&bodies),
            GOLDEN_CRC32C,
            "{:#010x} over {} bytes",
            crc32c::crc32c(&bodies),
            bodies.len()
        );
    }

    #[test]
    fn events_round_trip_and_named_records_still_decode() {
        let key = OrderKey::new("p", "o");
        let events = [
            Event::Begun { key: key.clone(), at_ms: 5 },
            Event::ItemStored { key: key.clone().into(), seq: 1, data: ByteBuf::from(b"x".to_vec()) },
            Event::Accepted { key: key.clone(), items: vec![ByteBuf::from(b"y".to_vec())].into(), at_unix_ms: 9 },
            Event::Dispatched { key: key.clone(), worker: "w".into(), attempt: 2 },
            Event::Acked { key },
        ];
        for event in events {
            assert_eq!(decode_event(1, &encode_event(&event)).unwrap(), event);
            // Journals written before the compact encoding used field names.
            let named = rmp_serde::to_vec_named(&event).unwrap();
            assert_eq!(decode_event(1, &named).unwrap(), event);
            assert!(encode_event(&event).len() < named.len());
        }
    }

    /// The events' layout before 0.3, variant for variant (structs as
    /// arrays: the new trailing fields are simply absent).
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldEvent {
        Begun { key: OrderKey, at_ms: u64 },
        ItemStored { key: OrderKey, seq: u32, data: ByteBuf },
        Sealed { key: OrderKey, count: u32 },
        Accepted { key: OrderKey, items: Vec<ByteBuf> },
        Dropped { key: OrderKey, reason: orderly_common::protocol::RejectReason },
        Dispatched { key: OrderKey, worker: String, attempt: u32 },
        Acked { key: OrderKey },
        Requeued { key: OrderKey, reason: String },
        DeadLettered { key: OrderKey, reason: String },
        Restored { key: OrderKey, snapshot: OldSnapshot },
    }

    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldSnapshot {
        Partial { items: Vec<(u32, ByteBuf)> },
        Sealed { items: Vec<ByteBuf>, attempts: u32, dead: Option<String> },
    }

    #[test]
    fn records_without_the_new_trailing_fields_still_decode() {
        use super::super::Snapshot;
        let key = OrderKey::new("p", "o");
        let items = vec![ByteBuf::from(b"y".to_vec())];
        let old_and_new = [
            (
                OldEvent::Sealed { key: key.clone(), count: 1 },
                Event::Sealed { key: key.clone(), count: 1, at_unix_ms: 0 },
            ),
            (
                OldEvent::Accepted { key: key.clone(), items: items.clone() },
                Event::Accepted { key: key.clone(), items: items.clone().into(), at_unix_ms: 0 },
            ),
            (
                OldEvent::Requeued { key: key.clone(), reason: "r".into() },
                Event::Requeued { key: key.clone(), reason: "r".into(), refunded: false, delay_ms: 0 },
            ),
            (
                OldEvent::DeadLettered { key: key.clone(), reason: "r".into() },
                Event::DeadLettered { key: key.clone(), reason: "r".into(), at_unix_ms: 0 },
            ),
            (
                OldEvent::Restored {
                    key: key.clone(),
                    snapshot: OldSnapshot::Sealed { items: items.clone(), attempts: 2, dead: None },
                },
                Event::Restored {
                    key: key.clone(),
                    snapshot: Snapshot::Sealed {
                        items: items.into(),
                        attempts: 2,
                        dead: None,
                        retry_in_ms: 0,
                        first_seen_unix_ms: 0,
                        dead_since_unix_ms: 0,
                        last_reason: None,
                    },
                },
            ),
        ];
        for (old, new) in old_and_new {
            let body = rmp_serde::to_vec(&old).unwrap();
            assert_eq!(decode_event(1, &body).unwrap(), new);
        }
    }

    #[test]
    fn a_payload_read_names_what_it_found_instead() {
        let acked = encode_event(&Event::Acked { key: OrderKey::new("p", "o") });
        let error = take_payload(7, decode_event(7, &acked).unwrap(), &OrderKey::new("p", "o")).unwrap_err();
        assert!(error.to_string().ends_with("expected an order's payload, found Acked"), "{error}");
    }

    #[test]
    fn the_decoder_s_cause_is_printed_once() {
        let error = decode_event(3, b"\xc1").unwrap_err();
        let cause = std::error::Error::source(&error).expect("a source").to_string();
        let shown = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(shown.matches(&cause).count(), 1, "{shown}");
    }
}
