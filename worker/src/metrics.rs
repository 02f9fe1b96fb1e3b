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
//! HTTP: hyper's HTTP/1 server on a current-thread tokio runtime, as the
//! broker's admin endpoint (broker/src/admin/server.rs): bounded
//! connections, a header timeout, no keep-alive, a whole-connection cap.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::{oneshot, Semaphore};

/// Connections served at once; more wait in the listen queue. A scrape is
/// one short request, so a few are plenty.
const CONNECTIONS_MAX: usize = 16;
/// How long a connection may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection's whole life: one request, answered and written.
const CONNECTION_DURATION_MAX: Duration = Duration::from_secs(10);
/// Request head bytes read at most (hyper's smallest buffer is 8 KiB).
const REQUEST_BYTES_MAX: usize = 8192;
/// `/healthz` answers 503 once the io loop has not turned for this long:
/// the loop turns at least once a second (its longest poll), so this is a
/// hung loop, not an idle one.
pub const LOOP_STALL_MS_MAX: u64 = 10_000;
/// Handler duration buckets, in seconds: 1 ms to 30 min (the default
/// handler time limit).
const HANDLER_BUCKETS_SECONDS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0];

const _: () = assert!(LOOP_STALL_MS_MAX >= 5 * crate::io::TURN_HOOK_INTERVAL_MS);

/// A failure to start the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve worker metrics on {addr}: is the address right and the port free?")]
pub struct MetricsError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The worker's metric families and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
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
        let registry = Registry::new();
        let add = |collector: Box<dyn prometheus::core::Collector>| {
            registry.register(collector).expect("family names are unique");
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid counter");
            add(Box::new(counter.clone()));
            counter
        };
        let orders_done = counter("orderly_worker_orders_done_total", "Orders the handler finished (acknowledged).");
        let orders_failed = counter(
            "orderly_worker_orders_failed_total",
            "Orders the handler failed (nacked: retried or dead-lettered).",
        );
        let orders_returned = counter(
            "orderly_worker_orders_returned_total",
            "Orders handed back unrun because the handler could not run.",
        );
        let orders_refused =
            counter("orderly_worker_dispatches_refused_total", "Dispatches refused (no capacity, draining, broken).");
        let decode_errors =
            counter("orderly_worker_decode_errors_total", "Undecodable fanout messages dropped by this worker.");
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid gauge");
            add(Box::new(gauge.clone()));
            gauge
        };
        let running = gauge("orderly_worker_orders_running", "Orders running in this worker's handler now.");
        let capacity = gauge("orderly_worker_capacity", "Orders this worker runs at once (--concurrency).");
        let broken = gauge("orderly_worker_handler_broken", "1 while the handler cannot run (no orders are taken).");
        let welcomed = gauge("orderly_worker_welcomed", "1 while a broker has welcomed this worker (it gets orders).");
        let broker_silence = Gauge::new(
            "orderly_worker_broker_silence_seconds",
            "Time since the latest message from the broker (heartbeats included); since start if none yet.",
        )
        .expect("a valid gauge");
        add(Box::new(broker_silence.clone()));
        let handler_duration = Histogram::with_opts(
            HistogramOpts::new("orderly_worker_handler_duration_seconds", "One run of the handler, start to end.")
                .buckets(HANDLER_BUCKETS_SECONDS.to_vec()),
        )
        .expect("a valid histogram");
        add(Box::new(handler_duration.clone()));
        let mut build = Opts::new("orderly_worker_build_info", "The worker's version and id (value 1).")
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("worker", worker);
        if let Some(commit) = option_env!("ORDERLY_GIT_COMMIT") {
            build = build.const_label("commit", commit);
        }
        let build_info = IntGauge::with_opts(build).expect("a valid gauge");
        build_info.set(1);
        add(Box::new(build_info));
        #[cfg(target_os = "linux")]
        add(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Metrics {
            registry,
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
        let mut buffer = Vec::new();
        // Encoding to a Vec fails only on a malformed family, which `new` rules out.
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("families encode");
        String::from_utf8(buffer).expect("the text format is UTF-8")
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

/// Raises `counter` to `total` (the core keeps totals; Prometheus counters
/// only go up by increments).
pub(crate) fn advance(counter: &IntCounter, total: u64) {
    let delta = total.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

/// The running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` and `GET /healthz` from a
    /// thread of its own until dropped.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let error = |addr| move |source| MetricsError { addr, source };
        let listener = TcpListener::bind(addr).map_err(error(addr))?;
        let addr = listener.local_addr().map_err(error(addr))?;
        listener.set_nonblocking(true).map_err(error(addr))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(error(addr))?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || runtime.block_on(serve(listener, metrics, stopped)))
            .map_err(error(addr))?;
        tracing::info!(%addr, "metrics endpoint listening (GET /metrics, /healthz)");
        Ok(MetricsServer { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves until `stopped` fires; the runtime, dropped with the thread,
/// cancels every connection task.
async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stopped: oneshot::Receiver<()>) {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => drop(tokio::spawn(accept_loop(listener, metrics))),
        Err(error) => tracing::error!(%error, "metrics endpoint: cannot register the listener"),
    }
    let _ = stopped.await;
}

/// Accepts while a connection slot is free; each connection is a task.
async fn accept_loop(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // E.g. out of file descriptors: wait rather than spin.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(REQUEST_BYTES_MAX)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_DURATION_MAX, connection).await {
                tracing::debug!(%error, "metrics connection failed");
            }
            drop(slot);
        });
    }
}

fn answer<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method().as_str(), request.uri().path()) {
        ("GET" | "HEAD", "/metrics") => (200, "text/plain; version=0.0.4; charset=utf-8", metrics.encode()),
        ("GET" | "HEAD", "/healthz") if metrics.loop_alive() => (200, "text/plain", "ok\n".to_owned()),
        ("GET" | "HEAD", "/healthz") => {
            (503, "text/plain", format!("the worker's loop has not turned for over {LOOP_STALL_MS_MAX} ms\n"))
        }
        ("GET" | "HEAD", path) => (404, "text/plain", format!("no {path} here: try GET /metrics or GET /healthz\n")),
        (method, _) => (405, "text/plain", format!("{method} is not served here: only GET /metrics and /healthz\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
