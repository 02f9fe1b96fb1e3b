//! `orderly-producer relay`: the transactional outbox's relay. The
//! application INSERTs `(order_id, items)` into an outbox table in its own
//! transaction; the relay claims committed rows, sends them as orders and
//! marks a row confirmed only once the broker confirmed it. A relay killed
//! at any point leaves its rows pending: the next claim (after the lease)
//! sends them again, and the broker's dedup window confirms a resent order
//! without processing it twice.
//!
//! `core` decides (sans-IO), `store` names what a table must do, `sqlite`
//! and `postgres` do it; this module is the loop between them and the
//! producer.

pub(crate) mod core;
mod metrics;
#[cfg(feature = "outbox-postgres")]
mod postgres;
#[cfg(feature = "outbox-sqlite")]
mod sqlite;
pub(crate) mod store;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderly_cli::exit;
use orderly_producer::{Outcome, Producer, ProducerConfig, ProducerError};

use self::core::{Marks, RelayCore};
use self::store::{Database, Store};
use crate::session::IDLE_POLL;

/// Rows taken by one claim, at most: one short transaction, and the rest
/// of the window stays for the next claim.
const CLAIM_ROWS_MAX: usize = 256;
/// Waited past a lease's end before claiming: clocks (the relay's, the
/// database's) differ by a little.
const LEASE_END_MARGIN: Duration = Duration::from_millis(20);
/// How often the lag (oldest pending row's age) is logged.
const LAG_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the lag is read for `--metrics` (one indexed query).
const LAG_READ_INTERVAL: Duration = Duration::from_secs(1);
/// How often confirmed rows past `--retention` are looked for, at most
/// (a short retention is looked at every half retention; `--retention 0`
/// after every turn that confirmed rows).
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);
/// Rows one retention statement deletes (or archives), at most: one short
/// transaction that holds back neither the application nor the claims.
const RETENTION_BATCH_ROWS: usize = 1000;
/// Retention statements per look, at most, so a large backlog of old rows
/// is worked off over several looks while the relay keeps sending.
const RETENTION_BATCHES_PER_LOOK: usize = 10;

/// `relay`: the validated flags.
pub(crate) struct RelaySettings {
    pub(crate) producer: ProducerConfig,
    pub(crate) database: Database,
    pub(crate) table: String,
    /// Longest sleep between claims when nothing is pending (SQLite), or
    /// between looks when no notification comes (PostgreSQL).
    pub(crate) poll_interval: Duration,
    /// How long a claim keeps other relays (and this one after a restart)
    /// off a row; a row unconfirmed by then is claimed and sent again.
    pub(crate) claim_lease: Duration,
    /// At the end (SIGTERM/SIGINT): how long to wait for answers.
    pub(crate) answer_timeout: Duration,
    /// Confirmed rows older than this are deleted (or archived).
    pub(crate) retention: Duration,
    /// Where retired rows go instead of being deleted.
    pub(crate) archive_table: Option<String>,
    /// Where `/metrics` is served, if anywhere.
    pub(crate) metrics: Option<SocketAddr>,
}

/// `relay --print-schema`.
pub(crate) fn print_schema(database: &Database, table: &str, archive: Option<&str>) -> ExitCode {
    print!("{}", database.schema(table, archive));
    ExitCode::from(exit::OK)
}

fn open_store(settings: &RelaySettings) -> anyhow::Result<Box<dyn Store>> {
    let claimer = format!("{}:{}", settings.producer.producer, std::process::id());
    let _ = &claimer;
    let archive = settings.archive_table.as_deref();
    let _ = archive;
    match &settings.database {
        #[cfg(feature = "outbox-sqlite")]
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(path, &settings.table, archive, claimer)?)),
        #[cfg(feature = "outbox-postgres")]
        Database::Postgres(url) => Ok(Box::new(postgres::PostgresStore::open(url, &settings.table, archive, claimer)?)),
        #[allow(unreachable_patterns)]
        database => {
            let feature = match database {
                Database::Sqlite(_) => "outbox-sqlite",
                Database::Postgres(_) => "outbox-postgres",
            };
            Err(orderly_cli::ConfigError::Usage(format!(
                "this orderly-producer was built without the {feature} feature: rebuild it with `cargo build -p \
                 orderly-producer-cli --features {feature}`"
            ))
            .into())
        }
    }
}

/// Totals of a run, for the log, the metrics and the closing line.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) claimed: u64,
    /// Claimed rows that had been claimed before (resends).
    pub(crate) reclaimed: u64,
    /// Orders sent (rows sharing an order id go as one).
    pub(crate) sent: u64,
    pub(crate) confirmed: u64,
    pub(crate) rejected: u64,
    pub(crate) released: u64,
    /// Claims extended while their rows were in flight.
    pub(crate) renewed: u64,
    /// Confirmed rows deleted or archived by the retention rule.
    pub(crate) retired: u64,
}

/// When the loop last did each of its periodic chores.
struct Chores {
    lag_logged: Instant,
    lag_read: Instant,
    renewed: Instant,
    retired: Instant,
}

/// `orderly-producer relay`: runs until SIGTERM or SIGINT, then waits for
/// the answers to what it sent.
pub(crate) fn run(settings: RelaySettings, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let mut store = open_store(&settings)?;
    let metrics =
        settings.metrics.map(|_| Arc::new(metrics::Metrics::new(&settings.producer.producer, &settings.table)));
    let _server = match (settings.metrics, &metrics) {
        (Some(addr), Some(metrics)) => Some(metrics::serve(addr, Arc::clone(metrics))?),
        _ => None,
    };
    let window = settings.producer.outbox_orders_max;
    let mut producer = Producer::connect(settings.producer.clone())?;
    let mut core = RelayCore::new(window);
    let mut tally = Tally::default();
    let now = Instant::now();
    // The first look for old rows at once (checked: an Instant cannot go
    // before the clock's start, e.g. just after boot).
    let retired = now.checked_sub(RETENTION_INTERVAL).unwrap_or(now);
    let mut chores = Chores { lag_logged: now, lag_read: now, renewed: now, retired };
    tracing::info!(table = %settings.table, window, "relay started");
    while !stop.load(Ordering::Relaxed) {
        let claimed = claim_and_send(&mut *store, &mut core, &mut producer, &settings, &mut tally)?;
        if claimed == 0 && core.in_flight() == 0 {
            producer.poll(Duration::ZERO)?;
            // Nothing of ours in flight, so a claimed pending row is another
            // relay's: look again when its lease runs out, in case it died.
            let wait = match store.lease_end()? {
                Some(lease_end) => settings.poll_interval.min(lease_end + LEASE_END_MARGIN),
                None => settings.poll_interval,
            };
            store.wait(wait.min(RETENTION_INTERVAL))?;
        } else {
            producer.poll(if claimed > 0 { Duration::ZERO } else { IDLE_POLL })?;
        }
        let confirmed_before = tally.confirmed;
        take_answers(&mut *store, &mut core, &mut producer, &mut tally)?;
        renew_claims(&mut *store, &core, &settings, &mut tally, &mut chores)?;
        let confirmed_now = settings.retention.is_zero() && tally.confirmed > confirmed_before;
        if confirmed_now || chores.retired.elapsed() >= retention_interval(settings.retention) {
            chores.retired = Instant::now();
            retire(&mut *store, &settings, &mut tally);
        }
        report(&mut *store, &core, &tally, metrics.as_deref(), &mut chores)?;
    }
    let deadline = Instant::now() + settings.answer_timeout;
    while core.in_flight() > 0 && Instant::now() < deadline {
        producer.poll(IDLE_POLL)?;
        take_answers(&mut *store, &mut core, &mut producer, &mut tally)?;
    }
    orderly_cli::println_lossy!(
        "relay: claimed {} rows, sent {} orders: {} rows confirmed, {} rejected, {} unanswered (they stay pending \
         and are sent again)",
        tally.claimed,
        tally.sent,
        tally.confirmed,
        tally.rejected,
        core.in_flight()
    );
    Ok(ExitCode::from(exit::OK))
}

/// Extends the claims of the rows in flight once half their lease is
/// gone, so a slow broker does not let a twin relay claim and resend them.
/// Renewing every half lease keeps each claim ahead of its end, whenever
/// in the period its row was claimed.
fn renew_claims(
    store: &mut dyn Store,
    core: &RelayCore,
    settings: &RelaySettings,
    tally: &mut Tally,
    chores: &mut Chores,
) -> anyhow::Result<()> {
    if chores.renewed.elapsed() < settings.claim_lease / 2 {
        return Ok(());
    }
    chores.renewed = Instant::now();
    let ids = core.rows_in_flight();
    if ids.is_empty() {
        return Ok(());
    }
    store.renew(&ids, settings.claim_lease)?;
    tally.renewed += ids.len() as u64;
    tracing::debug!(rows = ids.len(), "claims renewed on rows still in flight");
    Ok(())
}

/// How long between looks for rows past `retention`: rows outlive it by
/// half of it at most, and by [`RETENTION_INTERVAL`] at most.
fn retention_interval(retention: Duration) -> Duration {
    if retention.is_zero() {
        RETENTION_INTERVAL
    } else {
        RETENTION_INTERVAL.min(retention / 2)
    }
}

/// Deletes (or archives) confirmed rows past the retention, a bounded
/// number of batches per look. A failure is logged and tried again at the
/// next look: relaying goes on (the table only grows meanwhile).
fn retire(store: &mut dyn Store, settings: &RelaySettings, tally: &mut Tally) {
    for _ in 0..RETENTION_BATCHES_PER_LOOK {
        match store.retire(settings.retention, settings.archive_table.as_deref(), RETENTION_BATCH_ROWS) {
            Ok(removed) => {
                tally.retired += removed as u64;
                if removed < RETENTION_BATCH_ROWS {
                    return;
                }
            }
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "retention failed: confirmed rows stay for now");
                return;
            }
        }
    }
}

/// Reads the lag for the metrics and logs `relay progress` now and then.
fn report(
    store: &mut dyn Store,
    core: &RelayCore,
    tally: &Tally,
    metrics: Option<&metrics::Metrics>,
    chores: &mut Chores,
) -> anyhow::Result<()> {
    let log = chores.lag_logged.elapsed() >= LAG_LOG_INTERVAL;
    let read = metrics.is_some() && chores.lag_read.elapsed() >= LAG_READ_INTERVAL;
    let lag = if log || read {
        chores.lag_read = Instant::now();
        Some(store.lag()?.unwrap_or_default())
    } else {
        None
    };
    if let Some(metrics) = metrics {
        metrics.update(tally, core.in_flight(), lag.map(|lag| lag.as_secs_f64()));
    }
    if log {
        chores.lag_logged = Instant::now();
        tracing::info!(
            lag_ms = lag.unwrap_or_default().as_millis(),
            in_flight = core.in_flight(),
            claimed = tally.claimed,
            resent = tally.reclaimed,
            sent = tally.sent,
            confirmed = tally.confirmed,
            rejected = tally.rejected,
            retired = tally.retired,
            "relay progress"
        );
    }
    Ok(())
}

/// Claims what the window has room for, marks bad rows rejected and sends
/// the rest. Returns the rows claimed.
fn claim_and_send(
    store: &mut dyn Store,
    core: &mut RelayCore,
    producer: &mut Producer,
    settings: &RelaySettings,
    tally: &mut Tally,
) -> anyhow::Result<usize> {
    let room = core.room().min(CLAIM_ROWS_MAX);
    if room == 0 {
        return Ok(0);
    }
    let rows = store.claim(room, settings.claim_lease)?;
    let claimed = rows.len();
    tally.claimed += claimed as u64;
    tally.reclaimed += rows.iter().filter(|row| row.attempts > 1).count() as u64;
    let (orders, marks) = core.claimed(rows);
    for (id, reason) in &marks.rejected {
        tracing::warn!(row = id, reason = %reason, "outbox row cannot be sent: marked rejected");
    }
    tally.rejected += marks.rejected.len() as u64;
    store.mark(&marks)?;
    if orders.is_empty() {
        return Ok(claimed);
    }
    let ids: Vec<String> = orders.iter().map(|order| order.id.clone()).collect();
    match producer.send_batch(orders) {
        Ok(_) => tally.sent += ids.len() as u64,
        // The window is the producer's too, so this is the broker holding
        // back: the rows come back when their lease runs out.
        Err(error @ (ProducerError::Backpressure { .. } | ProducerError::BrokerBusy { .. })) => {
            tracing::warn!(%error, orders = ids.len(), "the broker is not taking orders: they are claimed again later");
            core.forget(&ids);
        }
        Err(error) => return Err(error.into()),
    }
    Ok(claimed)
}

/// Marks the rows of every answered order.
fn take_answers(
    store: &mut dyn Store,
    core: &mut RelayCore,
    producer: &mut Producer,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut all = Marks::default();
    for answer in producer.poll_receipts() {
        if let Outcome::Rejected(error) = &answer.outcome {
            tracing::warn!(order = %answer.order_id, %error, "the broker rejected an outbox order");
        }
        let marks = core.answered(&answer.order_id, &answer.outcome);
        all.confirmed.extend(marks.confirmed);
        all.rejected.extend(marks.rejected);
        all.released.extend(marks.released);
    }
    tally.confirmed += all.confirmed.len() as u64;
    tally.rejected += all.rejected.len() as u64;
    tally.released += all.released.len() as u64;
    if all.is_empty() {
        return Ok(());
    }
    store.mark(&all)
}
