//! What the loop reports about itself: one snapshot of its counters, shown
//! as the admin `/status` JSON and as Prometheus text on `/metrics`.

use std::time::Duration;

use crate::admin::schema::{IntakeClosedReport, StatusReport};
use crate::core::{IntakeClosed, Status};

/// The loop's own counters (the core's are in [`Status`]), read at once.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub journal_segments: usize,
    pub journal_bytes: u64,
    pub journal_bytes_written: u64,
    pub journal_commits: u64,
    pub journal_commit_time: Duration,
    pub journal_payload_reads: u64,
    pub decode_errors_intake: u64,
    pub decode_errors_control: u64,
    pub identity_refused: u64,
    /// Fanout subscriptions refused (CURVE: not the key's own topic).
    pub subscriptions_refused: u64,
    pub zap_refused: u64,
    pub zap_admitted: u64,
    /// The journal cannot take new segments (see `backpressure`).
    pub disk_full: bool,
    /// Why intake is closed, if it is (the disk or a bound of the core).
    pub intake_closed: Option<IntakeClosed>,
    /// A group member's view (see `group`).
    pub group: Option<crate::admin::schema::GroupReport>,
}

/// `GET /status`.
pub(super) fn status_report(status: Status, stats: &Stats) -> StatusReport {
    StatusReport {
        status,
        journal_segments: stats.journal_segments,
        journal_bytes: stats.journal_bytes,
        journal_bytes_written: stats.journal_bytes_written,
        journal_commits: stats.journal_commits,
        journal_commit_seconds: stats.journal_commit_time.as_secs_f64(),
        journal_payload_reads: stats.journal_payload_reads,
        decode_errors_intake: stats.decode_errors_intake,
        decode_errors_control: stats.decode_errors_control,
        identity_refused: stats.identity_refused,
        zap_refused: stats.zap_refused,
        zap_admitted: stats.zap_admitted,
        disk_full: stats.disk_full,
        intake_closed: stats
            .intake_closed
            .as_ref()
            .map(|closed| IntakeClosedReport { reason: closed.reason.to_string(), detail: closed.detail.clone() }),
        group: stats.group.clone(),
    }
}

/// `GET /metrics`: Prometheus text format 0.0.4.
pub(super) fn prometheus_text(status: &Status, stats: &Stats) -> String {
    let c = &status.counters;
    let gauges = [
        ("orderly_partial_orders", status.partial_orders as u64),
        ("orderly_pending_orders", status.pending_orders as u64),
        ("orderly_in_flight_orders", status.in_flight_orders as u64),
        ("orderly_delayed_orders", status.delayed_orders as u64),
        ("orderly_dead_letters", status.dead_letters as u64),
        ("orderly_held_bytes", status.held_bytes),
        ("orderly_workers", status.workers.len() as u64),
        ("orderly_workers_broken", status.workers.iter().filter(|w| w.broken.is_some()).count() as u64),
        ("orderly_journal_segments", stats.journal_segments as u64),
        ("orderly_disk_full", u64::from(stats.disk_full)),
        ("orderly_intake_open", u64::from(stats.intake_closed.is_none())),
    ];
    let counters = [
        ("orderly_orders_sealed_total", c.orders_sealed),
        ("orderly_orders_acked_total", c.orders_acked),
        ("orderly_orders_rejected_total", c.orders_rejected),
        ("orderly_orders_dead_lettered_total", c.orders_dead_lettered),
        ("orderly_orders_discarded_total", c.orders_discarded),
        ("orderly_orders_revived_total", c.orders_revived),
        ("orderly_dispatches_total", c.dispatches),
        ("orderly_redeliveries_total", c.redeliveries),
        ("orderly_ack_timeouts_total", c.ack_timeouts),
        ("orderly_workers_expired_total", c.workers_expired),
        ("orderly_acks_refused_total", c.acks_refused),
        ("orderly_producer_limit_rejects_total", c.producer_limit_rejects),
        ("orderly_journal_bytes_written_total", stats.journal_bytes_written),
        ("orderly_journal_commits_total", stats.journal_commits),
        ("orderly_journal_payload_reads_total", stats.journal_payload_reads),
        ("orderly_journal_commit_microseconds_total", stats.journal_commit_time.as_micros() as u64),
        ("orderly_decode_errors_intake_total", stats.decode_errors_intake),
        ("orderly_decode_errors_control_total", stats.decode_errors_control),
        ("orderly_identity_refused_total", stats.identity_refused),
        ("orderly_subscriptions_refused_total", stats.subscriptions_refused),
        ("orderly_zap_refused_total", stats.zap_refused),
    ];
    let mut out = String::new();
    for (name, value) in gauges {
        out.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
    }
    for (name, value) in counters {
        out.push_str(&format!("# TYPE {name} counter\n{name} {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig};

    #[test]
    fn every_metric_has_its_type_line() {
        let status = Core::new(CoreConfig::with_incarnation(0)).status();
        let stats = Stats { journal_commit_time: Duration::from_micros(1_500), zap_refused: 2, ..Stats::default() };
        let text = prometheus_text(&status, &stats);
        assert!(text.starts_with("# TYPE orderly_partial_orders gauge\norderly_partial_orders 0\n"), "{text}");
        assert!(text.contains("\norderly_journal_commit_microseconds_total 1500\n"), "{text}");
        assert!(text.ends_with("# TYPE orderly_zap_refused_total counter\norderly_zap_refused_total 2\n"), "{text}");
        assert!(
            text.contains("\norderly_disk_full 0\n# TYPE orderly_intake_open gauge\norderly_intake_open 1\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2 * 32);
        let closed = IntakeClosed { reason: "disk_full", detail: "ENOSPC".into() };
        let full = Stats { disk_full: true, intake_closed: Some(closed), ..Stats::default() };
        let text = prometheus_text(&status, &full);
        assert!(
            text.contains("\norderly_disk_full 1\n# TYPE orderly_intake_open gauge\norderly_intake_open 0\n"),
            "{text}"
        );
    }
}
