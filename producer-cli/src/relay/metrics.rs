//! The relay's `/metrics` (Prometheus text format 0.0.4, the `prometheus`
//! crate, as the broker's and the worker's), served by
//! [`orderly_http::HttpServer`]. The loop writes the numbers; the
//! server thread only encodes them. Families are named `orderly_relay_*`.

use std::net::SocketAddr;
use std::sync::Arc;

use orderly_http::metrics::{advance, Registrar};
use orderly_http::{Answer, HttpServer, Route, PROMETHEUS_TEXT};
use prometheus::{Gauge, IntCounter, IntGauge, Opts};

use super::Tally;

/// The relay's metric families and the registry that encodes them.
pub(crate) struct Metrics {
    registrar: Registrar,
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
        let registrar = Registrar::new();
        let claimed =
            registrar.counter("orderly_relay_rows_claimed_total", "Outbox rows this relay claimed (resends included).");
        let reclaimed = registrar.counter(
            "orderly_relay_rows_reclaimed_total",
            "Rows claimed again after an earlier claim ran out unconfirmed (a relay died or was slow): resends.",
        );
        let sent = registrar
            .counter("orderly_relay_orders_sent_total", "Orders sent to the broker (one per row, or per order id).");
        let confirmed =
            registrar.counter("orderly_relay_rows_confirmed_total", "Rows marked confirmed on the broker's confirm.");
        let rejected = registrar.counter(
            "orderly_relay_rows_rejected_total",
            "Rows marked rejected: bad rows, or orders the broker refused for good (see the error column).",
        );
        let released = registrar.counter(
            "orderly_relay_rows_released_total",
            "Rows given back at once because the broker was at a limit (claimed again later).",
        );
        let renewed = registrar
            .counter("orderly_relay_claims_renewed_total", "Claims extended because their rows were still in flight.");
        let retired = registrar.counter(
            "orderly_relay_rows_retired_total",
            "Confirmed rows deleted, or moved to --archive-table, by --retention.",
        );
        let in_flight = registrar.gauge("orderly_relay_rows_in_flight", "Rows sent and not yet answered.");
        let lag = registrar.float_gauge(
            "orderly_relay_lag_seconds",
            "Age of the oldest pending (unconfirmed) outbox row; 0 when none is pending.",
        );
        let build = Opts::new("orderly_relay_build_info", "The relay's version, id and table (value 1).")
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("id", id)
            .const_label("table", table);
        registrar.build_info(build);
        registrar.process();
        Metrics { registrar, lag, in_flight, claimed, reclaimed, sent, confirmed, rejected, released, renewed, retired }
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
        self.registrar.encode()
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
