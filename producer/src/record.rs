//! The on-disk outbox's records, how a replay rebuilds the outbox from them,
//! and when compaction may drop a segment. No IO: `disk` does the files.
//!
//! # Record format
//!
//! Each journal record body is one MessagePack map (rmp-serde, named
//! fields, the enum externally tagged):
//!
//! | record | body | meaning |
//! |--------|------|---------|
//! | Sent | `{"sent": {"id": str, "items": [bin]}}` | the order, item for item; committed (fsynced) before its first message is sent |
//! | Answered | `{"answered": {"id": str, "confirmed": bool}}` | the broker confirmed (or rejected) it: it leaves the outbox |
//!
//! An order is *live* when its latest Sent has no later Answered. A later
//! Sent for the same id replaces the earlier (compaction copies live orders
//! forward this way). Unknown fields are ignored; an unknown record kind is
//! an error naming its seq, never skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use crate::limits::COMPACTION_LIVE_PERCENT_MAX;
use crate::HashMap;

/// A record as written (borrowing the items, so nothing is copied).
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum RecordOut<'a> {
    Sent { id: &'a str, items: Vec<&'a Bytes> },
    Answered { id: &'a str, confirmed: bool },
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The order was handed to the outbox with these items.
    Sent {
        /// Order id.
        id: String,
        /// Items, byte for byte.
        items: Vec<ByteBuf>,
    },
    /// The broker answered the order.
    Answered {
        /// Order id.
        id: String,
        /// Confirmed (true) or rejected (false).
        confirmed: bool,
    },
}

fn encode(record: &RecordOut<'_>) -> Vec<u8> {
    // Strings, booleans and byte strings into a Vec cannot fail to encode;
    // a failure is a bug here.
    rmp_serde::to_vec_named(record).expect("encoding an outbox record into memory cannot fail")
}

/// Encodes a Sent record.
pub fn encode_sent(id: &str, items: &[Vec<u8>]) -> Vec<u8> {
    encode(&RecordOut::Sent { id, items: items.iter().map(|item| Bytes::new(item)).collect() })
}

/// Encodes an Answered record.
pub fn encode_answered(id: &str, confirmed: bool) -> Vec<u8> {
    encode(&RecordOut::Answered { id, confirmed })
}

/// Decodes a record body (from disk: anything may be there).
pub fn decode(body: &[u8]) -> Result<Record, rmp_serde::decode::Error> {
    rmp_serde::from_slice(body)
}

/// A live order found by a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Order id.
    pub id: String,
    /// Items, byte for byte.
    pub items: Vec<Vec<u8>>,
    /// Seq of its latest Sent record.
    pub seq: u64,
    /// Segment of its latest Sent record (its anchor).
    pub segment_id: u64,
    /// Encoded size of that record.
    pub record_bytes: u64,
}

/// Rebuilds the set of live orders from records in journal order.
#[derive(Debug, Default)]
pub struct Replay {
    live: HashMap<String, Recovered>,
    /// Answered records seen (including those for orders already gone).
    pub answered: u64,
}

impl Replay {
    /// Applies one record; `record_bytes` is the size of its encoded body.
    pub fn apply(&mut self, seq: u64, segment_id: u64, record_bytes: u64, record: Record) {
        match record {
            Record::Sent { id, items } => {
                let items = items.into_iter().map(ByteBuf::into_vec).collect();
                self.live.insert(id.clone(), Recovered { id, items, seq, segment_id, record_bytes });
            }
            Record::Answered { id, .. } => {
                self.answered += 1;
                self.live.remove(&id);
            }
        }
    }

    /// The live orders, oldest Sent first (the order they are resent in).
    pub fn finish(self) -> Vec<Recovered> {
        let mut live: Vec<Recovered> = self.live.into_values().collect();
        live.sort_by_key(|order| order.seq);
        live
    }
}

/// What is live in one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    /// Live orders anchored there.
    pub orders: u64,
    /// Bytes of their Sent records.
    pub bytes: u64,
}

/// Which segment holds each live order's latest Sent record, so compaction
/// knows when the oldest segment holds nothing live.
#[derive(Debug, Default)]
pub struct Anchors {
    by_order: HashMap<String, (u64, u64)>,
    by_segment: BTreeMap<u64, Live>,
}

impl Anchors {
    /// `id`'s latest Sent record (of `record_bytes`) is in `segment_id`;
    /// replaces an earlier anchor.
    pub fn anchor(&mut self, id: &str, segment_id: u64, record_bytes: u64) {
        self.release(id);
        self.by_order.insert(id.to_owned(), (segment_id, record_bytes));
        let live = self.by_segment.entry(segment_id).or_default();
        live.orders += 1;
        live.bytes += record_bytes;
    }

    /// `id` is answered (or gone); true if it was anchored.
    pub fn release(&mut self, id: &str) -> bool {
        let Some((segment_id, bytes)) = self.by_order.remove(id) else { return false };
        let live = self.by_segment.get_mut(&segment_id).expect("an anchored order's segment is counted");
        live.orders -= 1;
        live.bytes -= bytes;
        if live.orders == 0 {
            self.by_segment.remove(&segment_id);
        }
        true
    }

    /// What is live in `segment_id`.
    pub fn live(&self, segment_id: u64) -> Live {
        self.by_segment.get(&segment_id).copied().unwrap_or_default()
    }

    /// Live orders anchored in `segment_id`, sorted.
    pub fn ids_in(&self, segment_id: u64) -> Vec<String> {
        let mut ids: Vec<String> =
            self.by_order.iter().filter(|(_, (segment, _))| *segment == segment_id).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    /// Live orders on disk.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_order.len()
    }
}

/// What to do with the oldest segment (never the active one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// Nothing in it is live: delete it.
    Remove,
    /// Copy its live orders' Sent records forward, then delete it.
    CopyForward,
    /// Leave it: most of it is live, and the disk is within its budget.
    Keep,
}

/// Decides about the oldest segment of `oldest_bytes` with `live` in it,
/// when the outbox holds `journal_bytes` on disk and may hold `budget_bytes`.
pub fn compaction_step(oldest_bytes: u64, live: Live, journal_bytes: u64, budget_bytes: u64) -> CompactStep {
    if live.orders == 0 {
        CompactStep::Remove
    } else if live.bytes.saturating_mul(100) <= oldest_bytes.saturating_mul(COMPACTION_LIVE_PERCENT_MAX)
        || journal_bytes > budget_bytes
    {
        CompactStep::CopyForward
    } else {
        CompactStep::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: &str, items: &[&[u8]]) -> Record {
        let items: Vec<Vec<u8>> = items.iter().map(|item| item.to_vec()).collect();
        decode(&encode_sent(id, &items)).expect("a record we wrote decodes")
    }

    fn answered(id: &str) -> Record {
        decode(&encode_answered(id, true)).expect("a record we wrote decodes")
    }

    #[test]
    fn records_round_trip_byte_for_byte() {
        let items = vec![b"{\"a\": 1}".to_vec(), vec![0, 255, 7], Vec::new()];
        let Record::Sent { id, items: read } = decode(&encode_sent("o-é", &items)).unwrap() else { panic!() };
        assert_eq!(id, "o-é");
        assert_eq!(read.into_iter().map(ByteBuf::into_vec).collect::<Vec<_>>(), items);
        assert_eq!(
            decode(&encode_answered("x", false)).unwrap(),
            Record::Answered { id: "x".into(), confirmed: false }
        );
        assert!(decode(b"\x81\xa4nope\xc0").is_err(), "an unknown record kind is an error");
        assert!(decode(&encode_sent("a", &items)[..5]).is_err(), "a cut record is an error");
    }

    #[test]
    fn replay_keeps_sent_but_not_answered_in_sent_order() {
        let mut replay = Replay::default();
        replay.apply(1, 1, 10, sent("a", &[b"1"]));
        replay.apply(2, 1, 10, sent("b", &[b"2"]));
        replay.apply(3, 1, 10, sent("c", &[]));
        replay.apply(4, 2, 10, answered("b"));
        replay.apply(5, 2, 10, answered("never-sent"));
        let live = replay.finish();
        let ids: Vec<(&str, u64)> = live.iter().map(|o| (o.id.as_str(), o.segment_id)).collect();
        assert_eq!(ids, [("a", 1), ("c", 1)]);
        assert_eq!(live[0].items, [b"1".to_vec()]);
    }

    #[test]
    fn replay_takes_a_copied_forward_sent_and_a_resend_after_an_answer() {
        let mut replay = Replay::default();
        replay.apply(1, 1, 10, sent("a", &[b"1"]));
        replay.apply(2, 1, 10, sent("b", &[b"2"]));
        replay.apply(3, 1, 10, answered("b"));
        // Compaction copied `a` forward (the old segment may survive a
        // crash before its removal); `b` was sent again as a new order.
        replay.apply(4, 2, 10, sent("a", &[b"1"]));
        replay.apply(5, 2, 10, sent("b", &[b"3"]));
        let live = replay.finish();
        let got: Vec<(&str, u64, u64)> = live.iter().map(|o| (o.id.as_str(), o.seq, o.segment_id)).collect();
        assert_eq!(got, [("a", 4, 2), ("b", 5, 2)]);
        assert_eq!(live[1].items, [b"3".to_vec()]);
    }

    #[test]
    fn anchors_count_live_orders_per_segment() {
        let mut anchors = Anchors::default();
        anchors.anchor("a", 1, 100);
        anchors.anchor("b", 1, 50);
        anchors.anchor("c", 2, 10);
        assert_eq!(anchors.live(1), Live { orders: 2, bytes: 150 });
        assert_eq!(anchors.ids_in(1), ["a", "b"]);
        anchors.anchor("a", 2, 100);
        assert_eq!((anchors.live(1), anchors.live(2)), (Live { orders: 1, bytes: 50 }, Live { orders: 2, bytes: 110 }));
        assert!(anchors.release("b") && !anchors.release("b"));
        assert_eq!(anchors.live(1), Live::default());
        assert_eq!(anchors.len(), 2);
    }

    #[test]
    fn compaction_removes_dead_copies_mostly_dead_and_keeps_mostly_live() {
        let none = Live::default();
        let some = |bytes| Live { orders: 1, bytes };
        assert_eq!(compaction_step(1000, none, 5000, 10_000), CompactStep::Remove);
        assert_eq!(compaction_step(1000, some(500), 5000, 10_000), CompactStep::CopyForward);
        assert_eq!(compaction_step(1000, some(501), 5000, 10_000), CompactStep::Keep);
        assert_eq!(compaction_step(1000, some(900), 10_001, 10_000), CompactStep::CopyForward, "over the budget");
    }
}
