//! The worker's `/metrics` (Prometheus text format 0.0.4, the `prometheus`
//! crate, as the broker's) and `/healthz`, served by [`MetricsServer`] on a
//! thread of its own.
//!
//! The io loop owns the numbers: it writes them into [`Metrics`] at most
//! once per [`crate::io::TURN_HOOK_INTERVAL_MS`] (and the handler
//! durations as orders end); the server thread only encodes the registry.
//! Families are named `orderly_worker_*` and differ from the broker's
//! per-worker families (`orderly_worker_in_flight{worker}`, ...), so both
//! can be scraped into one Prometheus without one name meaning two things.
//!
//! HTTP: [`orderly_http::HttpServer`] (hyper on a current-thread tokio
//! runtime: bounded connections, a header timeout, no keep-alive, a
//! whole-connection cap); this module only says what each path answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use orderly_http::metrics::Registrar;
use orderly_http::{Answer, HttpServer, Route, PROMETHEUS_TEXT};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Opts};

/// Raises a counter to the core's total (the io loop's).
pub(crate) use orderly_http::metrics::advance;

/// `/healthz` answers 503 once the io loop has not turned for this long:
/// the loop turns at least once a second (its longest poll), so this is a
/// hung loop, not an idle one.
pub const LOOP_STALL_MS_MAX: u64 = 10_000;
/// Handler duration buckets, in seconds: 1 ms to 30 min (the default
/// handler time limit).
const HANDLER_BUCKETS_SECONDS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0];

const _: () = assert!(LOOP_STALL_MS_MAX >= 5 * crate::io::TURN_HOOK_INTERVAL_MS);

/// A failure to start the metrics endpoint ("cannot serve worker metrics
/// on ADDR: ...").
pub type MetricsError = orderly_http::HttpError;

/// The worker's metric families and the registry that encodes them.
pub struct Metrics {
    registrar: Registrar,
    pub(crate) orders_done: IntCounter,
    pub(crate) orders_failed: IntCounter,
    pub(crate) orders_returned: IntCounter,
    pub(crate) orders_refused: IntCounter,
    pub(crate) decode_errors: IntCounter,
    pub(crate) running: IntGauge,
    pub(crate) capacity: IntGauge,
    pub(crate) broken: IntGauge,
    pub(crate) welcomed: IntGauge,
    pub(crate) broker_silence: Gauge,
    pub(crate) handler_duration: Histogram,
    /// Milliseconds since `born` of the loop's latest turn (`/healthz`).
    turned_ms: AtomicU64,
    born: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The families of worker `worker` (a label of `orderly_worker_build_info`).
    pub fn new(worker: &str) -> Metrics {
        let registrar = Registrar::new();
        let orders_done =
            registrar.counter("orderly_worker_orders_done_total", "Orders the handler finished (acknowledged).");
        let orders_failed = registrar.counter(
            "orderly_worker_orders_failed_total",
            "Orders the handler failed (nacked: retried or dead-lettered).",
        );
        let orders_returned = registrar.counter(
            "orderly_worker_orders_returned_total",
            "Orders handed back unrun because the handler could not run.",
        );
        let orders_refused = registrar
            .counter("orderly_worker_dispatches_refused_total", "Dispatches refused (no capacity, draining, broken).");
        let decode_errors = registrar
            .counter("orderly_worker_decode_errors_total", "Undecodable fanout messages dropped by this worker.");
        let running = registrar.gauge("orderly_worker_orders_running", "Orders running in this worker's handler now.");
        let capacity = registrar.gauge("orderly_worker_capacity", "Orders this worker runs at once (--concurrency).");
        let broken =
            registrar.gauge("orderly_worker_handler_broken", "1 while the handler cannot run (no orders are taken).");
        let welcomed =
            registrar.gauge("orderly_worker_welcomed", "1 while a broker has welcomed this worker (it gets orders).");
        let broker_silence = registrar.float_gauge(
            "orderly_worker_broker_silence_seconds",
            "Time since the latest message from the broker (heartbeats included); since start if none yet.",
        );
        let handler_duration = registrar.add(
            Histogram::with_opts(
                HistogramOpts::new("orderly_worker_handler_duration_seconds", "One run of the handler, start to end.")
                    .buckets(HANDLER_BUCKETS_SECONDS.to_vec()),
            )
            .expect("a valid histogram"),
        );
        let mut build = Opts::new("orderly_worker_build_info", "The worker's version and id (value 1).")
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("worker", worker);
        if let Some(commit) = option_env!("ORDERLY_GIT_COMMIT") {
            build = build.const_label("commit", commit);
        }
        registrar.build_info(build);
        registrar.process();
        Metrics {
            registrar,
            orders_done,
            orders_failed,
            orders_returned,
            orders_refused,
            decode_errors,
            running,
            capacity,
            broken,
            welcomed,
            broker_silence,
            handler_duration,
            turned_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Text format 0.0.4 of every family.
    pub fn encode(&self) -> String {
        self.registrar.encode()
    }

    /// Notes that the io loop turned (for `/healthz`).
    pub(crate) fn turned(&self) {
        let now_ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.turned_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether the io loop turned within [`LOOP_STALL_MS_MAX`].
    pub fn loop_alive(&self) -> bool {
        let now_ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.turned_ms.load(Ordering::Relaxed)) <= LOOP_STALL_MS_MAX
    }
}

/// The running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    /// Where it listens (the port chosen when port 0 was asked for).
    pub addr: SocketAddr,
    _server: HttpServer,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` and `GET /healthz` from a
    /// thread of its own until dropped.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let route: Arc<Route> = Arc::new(move |path: &str| answer(&metrics, path));
        let server = HttpServer::start(addr, "worker metrics", route)?;
        tracing::info!(addr = %server.addr, "metrics endpoint listening (GET /metrics, /healthz)");
        Ok(MetricsServer { addr: server.addr, _server: server })
    }
}

/// What `GET path` answers.
fn answer(metrics: &Metrics, path: &str) -> Answer {
    match path {
        "/metrics" => Answer::ok(PROMETHEUS_TEXT, metrics.encode()),
        "/healthz" if metrics.loop_alive() => Answer::ok("text/plain", "ok\n".to_owned()),
        "/healthz" => Answer {
            status: 503,
            content_type: "text/plain",
            body: format!("the worker's loop has not turned for over {LOOP_STALL_MS_MAX} ms\n"),
        },
        path => Answer::not_found(path, "GET /metrics or GET /healthz"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answers_metrics_healthz_and_names_the_paths_it_serves() {
        let metrics = Metrics::new("w1");
        let scrape = answer(&metrics, "/metrics");
        assert_eq!((scrape.status, scrape.content_type), (200, PROMETHEUS_TEXT));
        assert!(scrape.body.contains("# TYPE orderly_worker_capacity gauge"), "{}", scrape.body);
        let health = answer(&metrics, "/healthz");
        assert_eq!((health.status, health.content_type, health.body.as_str()), (200, "text/plain", "ok\n"));
        let missing = answer(&metrics, "/nowhere");
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (404, "no /nowhere here: try GET /metrics or GET /healthz\n")
        );
    }

    #[test]
    fn healthz_is_503_once_the_loop_stalls() {
        let mut metrics = Metrics::new("w1");
        // Born long ago and never turned since: a hung loop.
        metrics.born = Instant::now()
            .checked_sub(Duration::from_millis(LOOP_STALL_MS_MAX + 1_000))
            .expect("the clock is past its origin");
        let health = answer(&metrics, "/healthz");
        assert_eq!(health.status, 503, "{}", health.body);
        assert!(health.body.contains("has not turned for over 10000 ms"), "{}", health.body);
        metrics.turned();
        assert_eq!(answer(&metrics, "/healthz").status, 200);
    }
}
