//! The relay's `/metrics` (Prometheus text format 0.0.4, the `prometheus`
//! crate, as the broker's and the worker's), served by
//! [`orderly_http::HttpServer`]. The loop writes the numbers; the
//! server thread only encodes them. Families are named `orderly_relay_*`.

use std::net::SocketAddr;
use std::sync::Arc;

use orderly_http::{Answer, HttpServer, Route, PROMETHEUS_TEXT};
use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Opts, Registry, TextEncoder};

use super::Tally;

/// The relay's metric families and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    lag: Gauge,
    in_flight: IntGauge,
    claimed: IntCounter,
    reclaimed: IntCounter,
    sent: IntCounter,
    confirmed: IntCounter,
    rejected: IntCounter,
    released: IntCounter,
    renewed: IntCounter,
    retired: IntCounter,
}

impl Metrics {
    /// The families of relay `id` (a label of `orderly_relay_build_info`).
    pub(crate) fn new(id: &str, table: &str) -> Metrics {
        let registry = Registry::new();
        let add = |collector: Box<dyn prometheus::core::Collector>| {
            registry.register(collector).expect("family names are unique");
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid counter");
            add(Box::new(counter.clone()));
            counter
        };
        let claimed = counter("orderly_relay_rows_claimed_total", "Outbox rows this relay claimed (resends included).");
        let reclaimed = counter(
            "orderly_relay_rows_reclaimed_total",
            "Rows claimed again after an earlier claim ran out unconfirmed (a relay died or was slow): resends.",
        );
        let sent =
            counter("orderly_relay_orders_sent_total", "Orders sent to the broker (one per row, or per order id).");
        let confirmed = counter("orderly_relay_rows_confirmed_total", "Rows marked confirmed on the broker's confirm.");
        let rejected = counter(
            "orderly_relay_rows_rejected_total",
            "Rows marked rejected: bad rows, or orders the broker refused for good (see the error column).",
        );
        let released = counter(
            "orderly_relay_rows_released_total",
            "Rows given back at once because the broker was at a limit (claimed again later).",
        );
        let renewed =
            counter("orderly_relay_claims_renewed_total", "Claims extended because their rows were still in flight.");
        let retired = counter(
            "orderly_relay_rows_retired_total",
            "Confirmed rows deleted, or moved to --archive-table, by --retention.",
        );
        let in_flight =
            IntGauge::new("orderly_relay_rows_in_flight", "Rows sent and not yet answered.").expect("a valid gauge");
        add(Box::new(in_flight.clone()));
        let lag = Gauge::new(
            "orderly_relay_lag_seconds",
            "Age of the oldest pending (unconfirmed) outbox row; 0 when none is pending.",
        )
        .expect("a valid gauge");
        add(Box::new(lag.clone()));
        let build = Opts::new("orderly_relay_build_info", "The relay's version, id and table (value 1).")
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("id", id)
            .const_label("table", table);
        let build_info = IntGauge::with_opts(build).expect("a valid gauge");
        build_info.set(1);
        add(Box::new(build_info));
        #[cfg(target_os = "linux")]
        add(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Metrics { registry, lag, in_flight, claimed, reclaimed, sent, confirmed, rejected, released, renewed, retired }
    }

    /// Brings the families up to the loop's totals.
    pub(crate) fn update(&self, tally: &Tally, in_flight: usize, lag_seconds: Option<f64>) {
        advance(&self.claimed, tally.claimed);
        advance(&self.reclaimed, tally.reclaimed);
        advance(&self.sent, tally.sent);
        advance(&self.confirmed, tally.confirmed);
        advance(&self.rejected, tally.rejected);
        advance(&self.released, tally.released);
        advance(&self.renewed, tally.renewed);
        advance(&self.retired, tally.retired);
        self.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        if let Some(lag) = lag_seconds {
            self.lag.set(lag);
        }
    }

    /// Text format 0.0.4 of every family.
    pub(crate) fn encode(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding to a Vec fails only on a malformed family, which `new` rules out.
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("families encode");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Raises `counter` to `total` (the loop keeps totals; Prometheus counters
/// only go up by increments).
fn advance(counter: &IntCounter, total: u64) {
    let delta = total.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

/// Serves `GET /metrics` on `addr` until the returned server is dropped.
pub(crate) fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<HttpServer, orderly_http::HttpError> {
    let route: Arc<Route> = Arc::new(move |path: &str| match path {
        "/metrics" => Answer::ok(PROMETHEUS_TEXT, metrics.encode()),
        path => Answer::not_found(path, "GET /metrics"),
    });
    let server = HttpServer::start(addr, "relay-metrics", route)?;
    tracing::info!(addr = %server.addr, "relay metrics listening (GET /metrics)");
    Ok(server)
}
