//! The admin endpoint's JSON, defined once: the IO loop serializes these
//! and the `status` / `dlq` commands deserialize them, so a renamed field
//! fails to parse (naming the field) instead of printing `?`.

use serde::{Deserialize, Serialize};

use crate::core::{DeadLetter, Status};

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
