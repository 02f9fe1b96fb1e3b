//! The admin endpoint's JSON, defined once: the IO loop serializes these
//! and the `status` / `dlq` commands deserialize them, so a renamed field
//! fails to parse (naming the field) instead of printing `?`.

use orderly_common::order_json::order_json;
use orderly_common::OrderKey;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::{DeadLetter, Status};
pub use crate::core::{DeadLetterPage, OrderInfo, OrderPlace};

/// `GET /status`: the core's [`Status`] with the IO loop's counters, as one
/// flat JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub status: Status,
    pub journal_segments: usize,
    pub journal_bytes: u64,
    pub journal_bytes_written: u64,
    /// Group commits (one write each; one fsync each under `always`).
    pub journal_commits: u64,
    /// Time spent in them, writes and fsyncs included.
    pub journal_commit_seconds: f64,
    /// Payloads read back from the journal (dispatch, compaction copies).
    pub journal_payload_reads: u64,
    pub decode_errors_intake: u64,
    pub decode_errors_control: u64,
    pub identity_refused: u64,
    pub zap_refused: u64,
    pub zap_admitted: u64,
    /// The journal's disk is full: no intake until space returns (newer
    /// than the fields above: absent from an older broker's answer).
    #[serde(default)]
    pub disk_full: bool,
    /// Why intake is closed (the disk or one of the core's bounds);
    /// `null` while it is open.
    #[serde(default)]
    pub intake_closed: Option<IntakeClosedReport>,
    /// A group member's view of the group; absent for a single broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupReport>,
}

/// A group member's part of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub member: u64,
    /// The leader this member knows, if any.
    pub leader: Option<u64>,
    pub term: u64,
    /// `leader` (serving), `catching_up` (elected, applying the log
    /// before serving) or `follower`.
    pub role: String,
    /// The last Raft index applied to this member's journal.
    pub applied: u64,
    pub commit: u64,
    /// Intake and control messages a non-serving member read and dropped.
    pub dropped_messages: u64,
    /// Peer messages whose claimed sender was not the transport's.
    pub peer_refused: u64,
    /// The voting members, as this member's configuration has them.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Members receiving the log without a vote (added, catching up).
    #[serde(default)]
    pub learners: Vec<u64>,
    /// On the leader, every member's replication progress (empty on a
    /// follower, which does not track it). Since 0.3.
    #[serde(default)]
    pub members: Vec<MemberProgress>,
}

/// A leader's view of one member's log, in [`GroupReport::members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    pub id: u64,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// The highest Raft index known to be in its log.
    pub matched: u64,
    /// `probe`, `replicate` or `snapshot`: how the leader sends to it.
    pub state: String,
    /// Heard from within the last election timeout.
    pub active: bool,
}

/// What `POST /group/add` and `/group/remove` answer once the change is
/// applied on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipReport {
    /// The Raft index of the change's entry.
    pub index: u64,
    /// `add_learner` or `remove`.
    pub change: String,
    pub member: u64,
}

/// Why the broker is not reading intake: what producers are told in
/// `backpressure` (docs/PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeClosedReport {
    /// A `backpressure` reason: `disk_full`, `pending_orders`, ...
    pub reason: String,
    pub detail: String,
}

/// `GET /dlq`: the dead letters, oldest first, at most
/// [`super::DLQ_LIST_MAX`] of them (a JSON array).
pub type DeadLetters = Vec<DeadLetter>;

/// `POST /dlq/delete`: how many dead letters were deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReport {
    pub deleted: u64,
}

/// `GET /orders/show` and `/dlq/show`: one order and what a handler
/// receives for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderView {
    pub order: OrderInfo,
    /// The JSON object a handler receives, byte for byte (kept raw, so
    /// whitespace and number spelling inside items survive). Items that
    /// are not JSON are in it as base64 (`common/src/order_json.rs`). An
    /// `Option` so older brokers' `null` still reads.
    pub handler_view: Option<Box<RawValue>>,
}

impl OrderView {
    /// Renders `items` as a handler sees them: on the latest dispatch for
    /// an order in flight or dead, on the next one for a pending order.
    pub fn new<I: AsRef<[u8]>>(order: OrderInfo, items: &[I]) -> OrderView {
        let attempt = match order.place {
            OrderPlace::Pending | OrderPlace::Delayed => order.attempts.saturating_add(1),
            OrderPlace::InFlight | OrderPlace::Dead => order.attempts.max(1),
        };
        let key = OrderKey::new(order.producer.as_str(), order.id.as_str());
        let json = order_json(&key, attempt, attempt > 1, items);
        let text = String::from_utf8(json).expect("order_json renders UTF-8");
        let raw = RawValue::from_string(text).expect("order_json renders JSON");
        OrderView { order, handler_view: Some(raw) }
    }
}

/// `POST /dlq/retry`: how many dead letters went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryReport {
    pub revived: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Counters, WorkerStatus};

    fn report() -> StatusReport {
        StatusReport {
            status: Status {
                partial_orders: 1,
                pending_orders: 2,
                delayed_orders: 1,
                in_flight_orders: 3,
                dead_letters: 4,
                held_bytes: 5,
                cached_bytes: 6,
                partial_bytes: 7,
                workers: vec![WorkerStatus {
                    id: "w1".into(),
                    ready: true,
                    capacity: 8,
                    in_flight: 3,
                    credits: 5,
                    draining: false,
                    broken: Some("exit 127".into()),
                }],
                counters: Counters { orders_sealed: 9, ..Counters::default() },
                last_ack_unix_ms: Some(1_790_000_000_000),
            },
            journal_segments: 2,
            journal_bytes: 4096,
            journal_bytes_written: 8192,
            journal_commits: 10,
            journal_commit_seconds: 0.25,
            journal_payload_reads: 11,
            decode_errors_intake: 12,
            decode_errors_control: 13,
            identity_refused: 14,
            zap_refused: 15,
            zap_admitted: 16,
            disk_full: true,
            intake_closed: Some(IntakeClosedReport { reason: "disk_full".into(), detail: "ENOSPC".into() }),
            group: None,
        }
    }

    #[test]
    fn a_status_report_round_trips_as_one_flat_object() {
        let text = serde_json::to_string_pretty(&report()).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&text).unwrap(), report());
        // The core's fields sit beside the loop's (flattened), first.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["partial_orders"], 1);
        assert_eq!(value["workers"][0]["id"], "w1");
        assert_eq!(value["journal_segments"], 2);
        assert_eq!(value["intake_closed"]["reason"], "disk_full");
        assert!(text.starts_with("{\n  \"partial_orders\": 1,"), "{text}");
    }

    fn info(place: OrderPlace, attempts: u32) -> OrderInfo {
        OrderInfo {
            producer: "shop".into(),
            id: "o/1".into(),
            place,
            attempts,
            items: 2,
            bytes: 10,
            worker: Some("w1".into()),
            last_reason: Some("exit 3".into()),
            first_seen_unix_ms: None,
            dead_since_unix_ms: None,
            retry_in_ms: None,
        }
    }

    #[test]
    fn an_order_view_carries_the_handler_s_bytes_through_pretty_json() {
        let items: [&[u8]; 2] = [b"{\"b\": 1,  \"a\":2.50}", b" 7 "];
        let view = OrderView::new(info(OrderPlace::Dead, 3), &items);
        let expected = order_json(&OrderKey::new("shop", "o/1"), 3, true, &items);
        let text = serde_json::to_string_pretty(&view).unwrap();
        let back: OrderView = serde_json::from_str(&text).unwrap();
        assert_eq!(back.handler_view.unwrap().get().as_bytes(), expected.as_slice());
        assert!(!text.contains("base64"), "{text}");
        // A pending order is shown as its next dispatch will be.
        let pending = OrderView::new(info(OrderPlace::Pending, 0), &items);
        assert!(pending.handler_view.unwrap().get().contains("\"attempt\":1,\"redelivered\":false"));
    }

    #[test]
    fn an_order_view_shows_an_item_that_is_not_json_in_base64() {
        let view = OrderView::new(info(OrderPlace::Dead, 1), &[b"{}".as_slice(), b"\xff\x00\x01"]);
        let text = view.handler_view.unwrap().get().to_owned();
        assert!(text.ends_with(r#""items":[{},{"base64":"/wAB"}],"base64_items":[1]}"#), "{text}");
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let mut value = serde_json::to_value(report()).unwrap();
        value.as_object_mut().unwrap().remove("journal_bytes");
        let error = serde_json::from_value::<StatusReport>(value).unwrap_err();
        assert!(error.to_string().contains("journal_bytes"), "{error}");
        let renamed = serde_json::json!({ "revive": 1 });
        let error = serde_json::from_value::<RetryReport>(renamed).unwrap_err();
        assert!(error.to_string().contains("revived"), "{error}");
    }
}
