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
#[cfg(feature = "outbox-postgres")]
mod postgres;
#[cfg(feature = "outbox-sqlite")]
mod sqlite;
pub(crate) mod store;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// `relay --print-schema`.
pub(crate) fn print_schema(database: &Database, table: &str) -> ExitCode {
    print!("{}", database.schema(table));
    ExitCode::from(exit::OK)
}

fn open_store(settings: &RelaySettings) -> anyhow::Result<Box<dyn Store>> {
    let claimer = format!("{}:{}", settings.producer.producer, std::process::id());
    let _ = &claimer;
    match &settings.database {
        #[cfg(feature = "outbox-sqlite")]
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(path, &settings.table, claimer)?)),
        #[cfg(feature = "outbox-postgres")]
        Database::Postgres(url) => Ok(Box::new(postgres::PostgresStore::open(url, &settings.table, claimer)?)),
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

/// Totals of a run, for the log and the closing line.
#[derive(Default)]
struct Tally {
    claimed: u64,
    sent: u64,
    confirmed: u64,
    rejected: u64,
}

/// `orderly-producer relay`: runs until SIGTERM or SIGINT, then waits for
/// the answers to what it sent.
pub(crate) fn run(settings: RelaySettings, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    let mut store = open_store(&settings)?;
    let window = settings.producer.outbox_orders_max;
    let mut producer = Producer::connect(settings.producer.clone())?;
    let mut core = RelayCore::new(window);
    let mut tally = Tally::default();
    let mut lag_logged = Instant::now();
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
            store.wait(wait)?;
        } else {
            producer.poll(if claimed > 0 { Duration::ZERO } else { IDLE_POLL })?;
        }
        take_answers(&mut *store, &mut core, &mut producer, &mut tally)?;
        if lag_logged.elapsed() >= LAG_LOG_INTERVAL {
            lag_logged = Instant::now();
            let lag_ms = store.lag()?.map_or(0, |lag| lag.as_millis());
            tracing::info!(
                lag_ms,
                in_flight = core.in_flight(),
                claimed = tally.claimed,
                sent = tally.sent,
                confirmed = tally.confirmed,
                "relay progress"
            );
        }
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
    if all.is_empty() {
        return Ok(());
    }
    store.mark(&all)
}
