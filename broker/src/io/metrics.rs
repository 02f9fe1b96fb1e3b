//! What the loop reports about itself: one snapshot of its counters, shown
//! as the admin `/status` JSON and as Prometheus text on `/metrics`.
//!
//! `/metrics` is rendered by the `prometheus` crate in the classic text
//! format 0.0.4 (what `promtool check metrics` reads). The [`Metrics`]
//! registry is the loop's own: its counters and gauges are set from the
//! `Status`/`Stats` snapshot at each scrape, so the hot path touches no
//! shared registry. The latency histograms are the core's and the loop's
//! fixed-bucket [`Histogram`]s (plain counts, no atomics), turned into
//! histogram families at the scrape.

use std::time::Duration;

use orderly_http::metrics::Registrar;
use prometheus::proto::{Bucket, Metric, MetricFamily, MetricType};
use prometheus::{Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts};

use crate::admin::schema::{GroupReport, IntakeClosedReport, StatusReport};
use crate::core::{Histogram, IntakeClosed, Millis, Status, Timings, WorkerMetrics};

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

/// How far a follower's applied index may trail the commit index it knows
/// and still be ready (`/readyz`): a few turns' entries, so a member that
/// keeps up is ready and one replaying a backlog is not.
pub const READY_APPLIED_LAG_MAX: u64 = 32;

/// `GET /readyz`: the first check that fails (a short name and a detail
/// for people), or `None` when ready: the journal takes commits, the disk
/// is not full, intake is open and, in a group, this member leads or is a
/// follower that knows a leader and has applied within
/// [`READY_APPLIED_LAG_MAX`] of the commit index (a member cut off from a
/// majority knows no leader: its clients could not be served).
pub(super) fn readiness(journal_held: Option<&str>, stats: &Stats) -> Option<(&'static str, String)> {
    if let Some(why) = journal_held {
        return Some(("journal", format!("a commit waits for disk space: {why}")));
    }
    if stats.disk_full {
        return Some(("disk", "the journal's disk is full".to_owned()));
    }
    if let Some(closed) = &stats.intake_closed {
        return Some(("intake", format!("intake closed ({}): {}", closed.reason, closed.detail)));
    }
    let group = stats.group.as_ref()?;
    match group.role.as_str() {
        "leader" => None,
        "follower" if group.leader.is_none() => {
            Some(("group", format!("follower {} knows no leader (no majority reachable?)", group.member)))
        }
        "follower" if group.commit.saturating_sub(group.applied) <= READY_APPLIED_LAG_MAX => None,
        "follower" => Some((
            "group",
            format!(
                "follower behind: applied {} of commit {} (more than {READY_APPLIED_LAG_MAX} behind)",
                group.applied, group.commit
            ),
        )),
        role => Some(("group", format!("member {} is {role}, neither leader nor a caught-up follower", group.member))),
    }
}

/// What one scrape reads: the loop's snapshot, and the histograms.
pub(super) struct Scrape<'a> {
    pub status: &'a Status,
    pub stats: &'a Stats,
    pub workers: &'a [WorkerMetrics],
    /// The core's queue wait and handler duration.
    pub timings: &'a Timings,
    pub confirm_latency: &'a Histogram,
    pub journal_commit: &'a Histogram,
    /// When the oldest live order was sealed (Unix ms), if any.
    pub oldest_live_sealed_unix_ms: Option<u64>,
    /// The scrape's time (Unix ms, the core's clock).
    pub now_ms: Millis,
}

type Read = fn(&Status, &Stats) -> u64;

/// Gauges read off the snapshot: name, help, value.
const GAUGES: &[(&str, &str, Read)] = &[
    ("orderly_partial_orders", "Orders begun, not yet complete.", |s, _| s.partial_orders as u64),
    ("orderly_pending_orders", "Sealed orders waiting for a worker (delayed ones included).", |s, _| {
        s.pending_orders as u64
    }),
    ("orderly_in_flight_orders", "Orders dispatched, not yet acknowledged.", |s, _| s.in_flight_orders as u64),
    ("orderly_delayed_orders", "Pending orders waiting out their retry delay.", |s, _| s.delayed_orders as u64),
    ("orderly_dead_letters", "Dead-lettered orders kept for an operator.", |s, _| s.dead_letters as u64),
    ("orderly_held_bytes", "Item bytes of partial and live orders, as the byte bounds count them.", |s, _| {
        s.held_bytes
    }),
    ("orderly_cached_bytes", "Item bytes of sealed orders held in RAM.", |s, _| s.cached_bytes),
    ("orderly_partial_bytes", "Item bytes of partial orders.", |s, _| s.partial_bytes),
    ("orderly_workers", "Workers the broker knows.", |s, _| s.workers.len() as u64),
    ("orderly_workers_broken", "Workers whose handler cannot run.", |s, _| {
        s.workers.iter().filter(|w| w.broken.is_some()).count() as u64
    }),
    ("orderly_journal_segments", "Journal segment files on disk.", |_, t| t.journal_segments as u64),
    ("orderly_journal_bytes", "Bytes of the journal's segments on disk.", |_, t| t.journal_bytes),
    ("orderly_disk_full", "1 while the journal's disk is full (intake closed).", |_, t| u64::from(t.disk_full)),
    ("orderly_intake_open", "1 while intake is read; 0 while a bound or the disk closes it.", |_, t| {
        u64::from(t.intake_closed.is_none())
    }),
];

/// Counters read off the snapshot: name, help, value.
const COUNTERS: &[(&str, &str, Read)] = &[
    ("orderly_orders_sealed_total", "Orders sealed (complete and queued).", |s, _| s.counters.orders_sealed),
    ("orderly_orders_acked_total", "Orders acknowledged by a worker.", |s, _| s.counters.orders_acked),
    ("orderly_orders_rejected_total", "Orders rejected to their producer.", |s, _| s.counters.orders_rejected),
    ("orderly_orders_dead_lettered_total", "Orders dead-lettered.", |s, _| s.counters.orders_dead_lettered),
    ("orderly_orders_discarded_total", "Dead letters deleted by an operator.", |s, _| s.counters.orders_discarded),
    ("orderly_orders_revived_total", "Dead letters retried by an operator.", |s, _| s.counters.orders_revived),
    ("orderly_orders_deduplicated_total", "Resent finishes confirmed again without a second order.", |s, _| {
        s.counters.orders_deduplicated
    }),
    ("orderly_orders_returned_total", "Dispatches a worker returned unrun.", |s, _| s.counters.orders_returned),
    ("orderly_dispatches_total", "Orders sent to workers.", |s, _| s.counters.dispatches),
    ("orderly_redeliveries_total", "Dispatches after the first of an order.", |s, _| s.counters.redeliveries),
    ("orderly_ack_timeouts_total", "Dispatches taken back for want of an ack.", |s, _| s.counters.ack_timeouts),
    ("orderly_attempt_timeouts_total", "Attempts taken back at the attempt time cap.", |s, _| {
        s.counters.attempt_timeouts
    }),
    ("orderly_duplicate_acks_total", "Acks of orders already done.", |s, _| s.counters.duplicate_acks),
    ("orderly_stale_nacks_total", "Nacks of an attempt a requeue overtook.", |s, _| s.counters.stale_nacks),
    ("orderly_acks_refused_total", "Acks and nacks from a worker not holding the order.", |s, _| {
        s.counters.acks_refused
    }),
    ("orderly_orphan_items_total", "Items of no open order.", |s, _| s.counters.orphan_items),
    ("orderly_duplicate_items_total", "Items received twice.", |s, _| s.counters.duplicate_items),
    ("orderly_workers_expired_total", "Workers lost to silence.", |s, _| s.counters.workers_expired),
    ("orderly_workers_refused_total", "Workers refused (the worker limit).", |s, _| s.counters.workers_refused),
    ("orderly_producer_limit_rejects_total", "New orders refused at the per-producer pending limit.", |s, _| {
        s.counters.producer_limit_rejects
    }),
    ("orderly_journal_bytes_written_total", "Bytes the journal wrote, framing and compaction included.", |_, t| {
        t.journal_bytes_written
    }),
    ("orderly_journal_commits_total", "Journal group commits.", |_, t| t.journal_commits),
    ("orderly_journal_payload_reads_total", "Payloads read back from the journal.", |_, t| t.journal_payload_reads),
    ("orderly_decode_errors_intake_total", "Undecodable intake messages dropped.", |_, t| t.decode_errors_intake),
    ("orderly_decode_errors_control_total", "Undecodable control messages dropped.", |_, t| t.decode_errors_control),
    ("orderly_identity_refused_total", "Messages whose claimed id was not their key's.", |_, t| t.identity_refused),
    ("orderly_subscriptions_refused_total", "Fanout subscriptions refused (CURVE).", |_, t| t.subscriptions_refused),
    ("orderly_zap_refused_total", "CURVE handshakes refused.", |_, t| t.zap_refused),
    ("orderly_zap_admitted_total", "CURVE handshakes admitted.", |_, t| t.zap_admitted),
];

/// Which of a scrape's histograms.
type Pick = for<'a> fn(&Scrape<'a>) -> &'a Histogram;

/// The histograms: name, help, and which of the scrape's.
const HISTOGRAMS: &[(&str, &str, Pick)] = &[
    (
        "orderly_confirm_latency_seconds",
        "An order's finish (or items message) read until its confirm published, the group commit included.",
        |s| s.confirm_latency,
    ),
    ("orderly_queue_wait_seconds", "Sealed (or requeued, or past its retry delay) until dispatched.", |s| {
        &s.timings.queue_wait
    }),
    ("orderly_handler_duration_seconds", "Dispatched until the worker's ack.", |s| &s.timings.handler),
    ("orderly_journal_commit_seconds", "One journal group commit, write and fsync.", |s| s.journal_commit),
];

/// Group roles, one `orderly_group_role` series each.
const GROUP_ROLES: [&str; 3] = ["leader", "catching_up", "follower"];

/// The loop's registry and the metrics in it.
pub(super) struct Metrics {
    registrar: Registrar,
    gauges: Vec<(IntGauge, Read)>,
    counters: Vec<(IntCounter, Read)>,
    oldest_pending_age: Gauge,
    worker_in_flight: IntGaugeVec,
    worker_credits: IntGaugeVec,
    worker_heartbeat_age: GaugeVec,
    worker_broken: IntGaugeVec,
    group: Option<GroupMetrics>,
}

/// A group member's families (registered only in a group).
struct GroupMetrics {
    role: IntGaugeVec,
    term: IntGauge,
    commit: IntGauge,
    applied: IntGauge,
    dropped: IntCounter,
    peer_refused: IntCounter,
}

impl Metrics {
    /// Every family, registered once; `group`: a group member's too.
    pub(super) fn new(group: bool) -> Metrics {
        let registrar = Registrar::new();
        let gauges = GAUGES.iter().map(|&(name, help, read)| (registrar.gauge(name, help), read)).collect();
        let counters = COUNTERS.iter().map(|&(name, help, read)| (registrar.counter(name, help), read)).collect();
        let oldest_pending_age = registrar.float_gauge(
            "orderly_oldest_pending_age_seconds",
            "Age of the oldest sealed, unacknowledged order (0 when none): how far behind the workers are.",
        );
        let per_worker = |name: &str, help: &str| {
            registrar.add(IntGaugeVec::new(Opts::new(name, help), &["worker"]).expect("a valid gauge"))
        };
        let worker_in_flight = per_worker("orderly_worker_in_flight", "Orders dispatched to the worker, not acked.");
        let worker_credits = per_worker("orderly_worker_credits", "The worker's capacity less the orders it holds.");
        let worker_broken = per_worker("orderly_worker_broken", "1 while the worker says its handler cannot run.");
        let worker_heartbeat_age = registrar.add(
            GaugeVec::new(
                Opts::new("orderly_worker_heartbeat_age_seconds", "Time since the worker's latest message."),
                &["worker"],
            )
            .expect("a valid gauge"),
        );
        let mut build = Opts::new("orderly_build_info", "The broker's version (value 1).")
            .const_label("version", env!("CARGO_PKG_VERSION"));
        // Set by a packaging build that knows its commit.
        if let Some(commit) = option_env!("ORDERLY_GIT_COMMIT") {
            build = build.const_label("commit", commit);
        }
        registrar.build_info(build);
        registrar.process();
        let group = group.then(|| GroupMetrics {
            role: registrar.add(
                IntGaugeVec::new(
                    Opts::new("orderly_group_role", "1 for this member's role in the group, 0 for the others."),
                    &["role"],
                )
                .expect("a valid gauge"),
            ),
            term: registrar.gauge("orderly_group_term", "The Raft term this member knows."),
            commit: registrar.gauge("orderly_group_commit_index", "The Raft commit index this member knows."),
            applied: registrar
                .gauge("orderly_group_applied_index", "The last Raft index applied to this member's journal."),
            dropped: registrar.counter(
                "orderly_group_dropped_messages_total",
                "Client messages a member not serving read and dropped.",
            ),
            peer_refused: registrar.counter(
                "orderly_group_peer_refused_total",
                "Peer messages whose claimed sender was not the transport's.",
            ),
        });
        Metrics {
            registrar,
            gauges,
            counters,
            oldest_pending_age,
            worker_in_flight,
            worker_credits,
            worker_heartbeat_age,
            worker_broken,
            group,
        }
    }

    /// `GET /metrics`: Prometheus text format 0.0.4.
    pub(super) fn render(&self, scrape: &Scrape) -> String {
        self.update(scrape);
        let mut families = self.registrar.gather();
        families.extend(HISTOGRAMS.iter().map(|&(name, help, which)| histogram_family(name, help, which(scrape))));
        families.sort_by(|a, b| a.get_name().cmp(b.get_name()));
        orderly_http::metrics::encode(&families)
    }

    fn update(&self, scrape: &Scrape) {
        let (status, stats) = (scrape.status, scrape.stats);
        for (gauge, read) in &self.gauges {
            gauge.set(read(status, stats) as i64);
        }
        for (counter, read) in &self.counters {
            set_counter(counter, read(status, stats));
        }
        let oldest = scrape.oldest_live_sealed_unix_ms.map_or(0, |at| scrape.now_ms.saturating_sub(at));
        self.oldest_pending_age.set(seconds_ms(oldest));
        // Rebuilt at each scrape, so a worker that left disappears.
        for vec in [&self.worker_in_flight, &self.worker_credits, &self.worker_broken] {
            vec.reset();
        }
        self.worker_heartbeat_age.reset();
        for w in scrape.workers {
            let id = [w.id.as_str()];
            self.worker_in_flight.with_label_values(&id).set(i64::from(w.in_flight));
            self.worker_credits.with_label_values(&id).set(i64::from(w.credits));
            self.worker_broken.with_label_values(&id).set(i64::from(w.broken));
            let age = scrape.now_ms.saturating_sub(w.last_seen_ms);
            self.worker_heartbeat_age.with_label_values(&id).set(seconds_ms(age));
        }
        if let (Some(metrics), Some(report)) = (&self.group, &stats.group) {
            metrics.update(report);
        }
    }
}

impl GroupMetrics {
    fn update(&self, report: &GroupReport) {
        for role in GROUP_ROLES {
            self.role.with_label_values(&[role]).set(i64::from(report.role == role));
        }
        self.term.set(report.term as i64);
        self.commit.set(report.commit as i64);
        self.applied.set(report.applied as i64);
        set_counter(&self.dropped, report.dropped_messages);
        set_counter(&self.peer_refused, report.peer_refused);
    }
}

/// A counter to the snapshot's value. The snapshot's counters only grow,
/// except when a group member rebuilds its core: then it starts over,
/// which Prometheus reads as a counter reset.
fn set_counter(counter: &IntCounter, value: u64) {
    if value < counter.get() {
        counter.reset();
    }
    counter.inc_by(value - counter.get());
}

fn seconds_ms(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// A histogram family of one series from fixed buckets.
fn histogram_family(name: &str, help: &str, histogram: &Histogram) -> MetricFamily {
    let buckets = histogram
        .cumulative()
        .map(|(bound_us, count)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(bound_us as f64 / 1e6);
            bucket.set_cumulative_count(count);
            bucket
        })
        .collect();
    let mut proto = prometheus::proto::Histogram::default();
    proto.set_sample_count(histogram.count());
    proto.set_sample_sum(histogram.sum_us() as f64 / 1e6);
    proto.set_bucket(buckets);
    let mut metric = Metric::default();
    metric.set_histogram(proto);
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig};

    fn scrape<'a>(
        status: &'a Status,
        stats: &'a Stats,
        workers: &'a [WorkerMetrics],
        timings: &'a Timings,
        histogram: &'a Histogram,
    ) -> Scrape<'a> {
        Scrape {
            status,
            stats,
            workers,
            timings,
            confirm_latency: histogram,
            journal_commit: histogram,
            oldest_live_sealed_unix_ms: Some(1_000),
            now_ms: 3_500,
        }
    }

    /// Every `# TYPE` line follows the `# HELP` line of the same family.
    fn assert_help_and_type_on_every_family(text: &str) {
        let lines: Vec<&str> = text.lines().collect();
        let mut families = 0;
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(i > 0 && lines[i - 1].starts_with(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
                families += 1;
            }
        }
        let helps = lines.iter().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(families, helps, "{text}");
    }

    #[test]
    fn every_family_has_help_and_type_and_base_units() {
        let status = Core::new(CoreConfig::with_incarnation(0)).status();
        let stats = Stats { journal_commit_time: Duration::from_micros(1_500), zap_refused: 2, ..Stats::default() };
        let mut histogram = Histogram::default();
        histogram.observe_us(1_500);
        let timings = Timings::default();
        let metrics = Metrics::new(false);
        let text = metrics.render(&scrape(&status, &stats, &[], &timings, &histogram));
        assert_help_and_type_on_every_family(&text);
        assert!(text.contains("\norderly_zap_refused_total 2\n"), "{text}");
        assert!(text.contains("# TYPE orderly_journal_commit_seconds histogram\n"), "{text}");
        assert!(text.contains("\norderly_journal_commit_seconds_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("\norderly_journal_commit_seconds_bucket{le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("\norderly_journal_commit_seconds_bucket{le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains("\norderly_journal_commit_seconds_sum 0.0015\n"), "{text}");
        assert!(text.contains("\norderly_queue_wait_seconds_count 0\n"), "{text}");
        assert!(text.contains("\norderly_oldest_pending_age_seconds 2.5\n"), "{text}");
        assert!(text.contains("\norderly_intake_open 1\n"), "{text}");
        assert!(text.contains(&format!("orderly_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(!text.contains("microseconds"), "{text}");
        assert!(!text.contains("orderly_group_"), "a single broker has no group families:\n{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let (name, kind) = line["# TYPE ".len()..].split_once(' ').unwrap();
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");

        let closed = IntakeClosed { reason: "disk_full", detail: "ENOSPC".into() };
        let full = Stats { disk_full: true, intake_closed: Some(closed), ..Stats::default() };
        let text = metrics.render(&scrape(&status, &full, &[], &timings, &histogram));
        assert!(text.contains("\norderly_disk_full 1\n"), "{text}");
        assert!(text.contains("\norderly_intake_open 0\n"), "{text}");
    }

    #[test]
    fn per_worker_gauges_follow_the_workers_and_counters_follow_the_snapshot() {
        let mut status = Core::new(CoreConfig::with_incarnation(0)).status();
        let stats = Stats::default();
        let (timings, histogram) = (Timings::default(), Histogram::default());
        let worker = |id: &str| WorkerMetrics {
            id: id.into(),
            in_flight: 2,
            credits: 6,
            last_seen_ms: 3_000,
            broken: id == "w2",
        };
        let metrics = Metrics::new(false);
        status.counters.orders_acked = 7;
        let both = [worker("w1"), worker("w2")];
        let text = metrics.render(&scrape(&status, &stats, &both, &timings, &histogram));
        assert!(text.contains("\norderly_worker_in_flight{worker=\"w1\"} 2\n"), "{text}");
        assert!(text.contains("\norderly_worker_credits{worker=\"w2\"} 6\n"), "{text}");
        assert!(text.contains("\norderly_worker_broken{worker=\"w2\"} 1\n"), "{text}");
        assert!(text.contains("\norderly_worker_heartbeat_age_seconds{worker=\"w1\"} 0.5\n"), "{text}");
        assert!(text.contains("\norderly_orders_acked_total 7\n"), "{text}");
        // w2 left: it disappears; a counter that started over is reset.
        status.counters.orders_acked = 3;
        let text = metrics.render(&scrape(&status, &stats, &both[..1], &timings, &histogram));
        assert!(!text.contains("w2"), "{text}");
        assert!(text.contains("\norderly_orders_acked_total 3\n"), "{text}");
    }

    #[test]
    fn a_group_member_has_its_role_term_and_indexes() {
        let status = Core::new(CoreConfig::with_incarnation(0)).status();
        let report = GroupReport {
            member: 2,
            leader: Some(1),
            term: 4,
            role: "follower".into(),
            applied: 90,
            commit: 100,
            dropped_messages: 5,
            peer_refused: 0,
            voters: vec![1, 2, 3],
            learners: vec![],
            members: vec![],
        };
        let stats = Stats { group: Some(report), ..Stats::default() };
        let (timings, histogram) = (Timings::default(), Histogram::default());
        let text = Metrics::new(true).render(&scrape(&status, &stats, &[], &timings, &histogram));
        assert_help_and_type_on_every_family(&text);
        assert!(text.contains("\norderly_group_role{role=\"follower\"} 1\n"), "{text}");
        assert!(text.contains("\norderly_group_role{role=\"leader\"} 0\n"), "{text}");
        assert!(text.contains("\norderly_group_term 4\n"), "{text}");
        assert!(text.contains("\norderly_group_commit_index 100\n"), "{text}");
        assert!(text.contains("\norderly_group_applied_index 90\n"), "{text}");
        assert!(text.contains("\norderly_group_dropped_messages_total 5\n"), "{text}");
        assert_eq!(readiness(None, &stats), None, "10 behind is caught up");
        let mut behind = stats.clone();
        behind.group.as_mut().unwrap().applied = 100 - READY_APPLIED_LAG_MAX - 1;
        assert_eq!(readiness(None, &behind).map(|(check, _)| check), Some("group"));
        behind.group.as_mut().unwrap().role = "catching_up".into();
        assert!(readiness(None, &behind).unwrap().1.contains("catching_up"));
        let mut alone = stats.clone();
        alone.group.as_mut().unwrap().leader = None;
        assert!(readiness(None, &alone).unwrap().1.contains("knows no leader"));
    }

    #[test]
    fn readiness_names_the_check_that_failed() {
        assert_eq!(readiness(None, &Stats::default()), None);
        assert_eq!(readiness(Some("ENOSPC"), &Stats::default()).map(|(c, _)| c), Some("journal"));
        let full = Stats { disk_full: true, ..Stats::default() };
        assert_eq!(readiness(None, &full).map(|(c, _)| c), Some("disk"));
        let closed = IntakeClosed { reason: "pending_orders", detail: "1 orders await workers (limit 1)".into() };
        let closed = Stats { intake_closed: Some(closed), ..Stats::default() };
        let (check, detail) = readiness(None, &closed).unwrap();
        assert_eq!(check, "intake");
        assert!(detail.contains("pending_orders"), "{detail}");
    }
}
