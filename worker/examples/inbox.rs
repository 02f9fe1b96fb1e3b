//! A worker whose handler applies each order exactly once in effect, with
//! the inbox (`orderly_worker::inbox`), on SQLite or PostgreSQL.
//!
//! Per order, in ONE database transaction:
//! 1. count the delivery (`deliveries`: one row per delivery, duplicates
//!    included, so a test can see that the broker delivered twice);
//! 2. claim the order in the inbox (`orderly_inbox`);
//! 3. only if the claim is new, the business change: `applied.times`
//!    for the order goes up by one (a double apply would show 2).
//!
//! then commit, then acknowledge. A crash between commit and
//! acknowledgement makes the broker deliver the order again: step 1 runs
//! again, step 3 does not.
//!
//! ```text
//! cargo run -p orderly-worker --example inbox --features inbox-sqlite,inbox-postgres -- \
//!     --fanout tcp://127.0.0.1:5571 --control tcp://127.0.0.1:5572 \
//!     --database sqlite:/tmp/shop.db | postgres://postgres@127.0.0.1:5432/postgres \
//!     [--id w-inbox] [--concurrency 4] [--linger-ms 0]
//! ```
//!
//! `--linger-ms N` waits N ms after the commit before acknowledging: the
//! window in which a crash leaves an order done but unacknowledged (tests
//! use it to make a redelivery certain). Ctrl-C drains and exits.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderly_common::protocol::Dispatch;
use orderly_worker::core::Failure;
use orderly_worker::handler::Handler;
use orderly_worker::inbox::{Dialect, Inbox};
use orderly_worker::io::{self, Config};

/// How long an SQLite writer waits for the database lock.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;
/// Longest `--linger-ms` (a minute: it is a test aid, not a setting).
const LINGER_MS_MAX: u64 = 60_000;

/// The example's own tables, next to the inbox.
const BUSINESS_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS applied (
    producer text NOT NULL,
    order_id text NOT NULL,
    items bigint NOT NULL,
    times bigint NOT NULL,
    PRIMARY KEY (producer, order_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    producer text NOT NULL,
    order_id text NOT NULL,
    attempt bigint NOT NULL
);
";
const COUNT_DELIVERY: &str = "INSERT INTO deliveries (producer, order_id, attempt) VALUES ($1, $2, $3)";
const APPLY: &str = "INSERT INTO applied (producer, order_id, items, times) VALUES ($1, $2, $3, 1) \
                     ON CONFLICT (producer, order_id) DO UPDATE SET times = applied.times + 1";

/// Where the handler keeps its data.
#[derive(Clone)]
enum Database {
    Sqlite(String),
    Postgres(String),
}

impl Database {
    fn parse(url: &str) -> Result<Database, String> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if !path.is_empty() {
                return Ok(Database::Sqlite(path.to_owned()));
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        Err(format!("--database {url:?}: use sqlite:PATH or postgres://USER@HOST:PORT/DB"))
    }

    fn connect(&self) -> Result<Connection, Failure> {
        match self {
            Database::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path)?;
                connection.busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))?;
                connection.pragma_update(None, "journal_mode", "WAL")?;
                Ok(Connection::Sqlite(connection))
            }
            Database::Postgres(url) => Ok(Connection::Postgres(postgres::Client::connect(url, postgres::NoTls)?)),
        }
    }
}

enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

/// The handler: a few open connections, one per busy pool thread.
struct Apply {
    database: Database,
    inbox: Inbox,
    idle: Mutex<Vec<Connection>>,
    linger: Duration,
}

impl Apply {
    /// One transaction: count, claim, apply if new, commit.
    fn apply(&self, connection: &mut Connection, order: &Dispatch) -> Result<(), Failure> {
        let (producer, id) = (&order.order.producer, &order.order.id);
        let items = i64::try_from(order.items.len()).expect("items are bounded by the frame size");
        let attempt = i64::from(order.attempt);
        match connection {
            Connection::Postgres(client) => {
                let mut tx = client.transaction()?;
                tx.execute(COUNT_DELIVERY, &[producer, id, &attempt])?;
                self.inbox.once_postgres(&mut tx, &order.order, |tx| {
                    tx.execute(APPLY, &[producer, id, &items]).map_err(Failure::from)
                })?;
                tx.commit()?;
            }
            Connection::Sqlite(connection) => {
                // Immediate: take the write lock first, so a second writer
                // waits (busy timeout) rather than failing on an upgrade.
                let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(COUNT_DELIVERY, (producer, id, attempt))?;
                self.inbox.once_sqlite(&tx, &order.order, |tx| {
                    tx.execute(APPLY, (producer, id, items)).map_err(Failure::from)
                })?;
                tx.commit()?;
            }
        }
        Ok(())
    }
}

impl Handler for Apply {
    fn handle(&self, order: &Dispatch) -> Result<(), Failure> {
        let pooled = self.idle.lock().expect("no panics while held").pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.database.connect()?,
        };
        // A failed transaction rolls back on drop; the connection is
        // dropped too, so a broken one is not reused.
        if let Err(failure) = self.apply(&mut connection, order) {
            eprintln!("inbox example: order {}: {} (retried)", order.order.id, failure.reason);
            return Err(failure);
        }
        self.idle.lock().expect("no panics while held").push(connection);
        std::thread::sleep(self.linger);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the inbox example (table {})", self.inbox.table())
    }
}

/// Creates the inbox and business tables if missing.
fn create_tables(database: &Database, inbox: &Inbox) -> Result<(), Box<dyn std::error::Error>> {
    match database.connect().map_err(|f| f.reason)? {
        Connection::Postgres(mut client) => {
            client.batch_execute(&inbox.schema(Dialect::Postgres))?;
            client.batch_execute(BUSINESS_SCHEMA)?;
        }
        Connection::Sqlite(connection) => {
            connection.execute_batch(&inbox.schema(Dialect::Sqlite))?;
            connection.execute_batch(BUSINESS_SCHEMA)?;
        }
    }
    Ok(())
}

/// `--name value` from the arguments.
fn setting(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    args.windows(2).find(|pair| pair[0] == flag).map(|pair| pair[1].clone())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!(
            "usage: inbox --fanout EP --control EP --database (sqlite:PATH | postgres://...) \
             [--id ID] [--concurrency N] [--linger-ms N]"
        );
        return Ok(());
    }
    let required = |name: &str, example: &str| {
        setting(&args, name).ok_or_else(|| format!("--{name} is required, e.g. --{name} {example}"))
    };
    let fanout = required("fanout", "tcp://127.0.0.1:5571")?.parse()?;
    let control = required("control", "tcp://127.0.0.1:5572")?.parse()?;
    let database = Database::parse(&required("database", "sqlite:/tmp/shop.db")?)?;
    let worker = setting(&args, "id").unwrap_or_else(|| "w-inbox".to_owned());
    orderly_common::ids::validate_peer_id("worker id", &worker)?;
    let concurrency: u32 = setting(&args, "concurrency").map_or(Ok(4), |n| n.parse())?;
    if !(1..=orderly_common::limits::WORKER_CONCURRENCY_MAX).contains(&concurrency) {
        let max = orderly_common::limits::WORKER_CONCURRENCY_MAX;
        return Err(format!("--concurrency is 1 to {max}, not {concurrency}").into());
    }
    let linger_ms: u64 = setting(&args, "linger-ms").map_or(Ok(0), |n| n.parse())?;
    if linger_ms > LINGER_MS_MAX {
        return Err(format!("--linger-ms is at most {LINGER_MS_MAX}, not {linger_ms}").into());
    }
    let inbox = Inbox::default();
    create_tables(&database, &inbox)?;
    let handler = Apply { database, inbox, idle: Mutex::new(Vec::new()), linger: Duration::from_millis(linger_ms) };
    let config = Config {
        worker,
        incarnation: rand::random(),
        fanout,
        control,
        concurrency,
        handler: Arc::new(handler),
        heartbeat_interval_ms: orderly_common::limits::HEARTBEAT_INTERVAL_MS_DEFAULT,
        heartbeat_liveness: orderly_common::limits::HEARTBEAT_LIVENESS_DEFAULT,
        drain_timeout_ms: 30_000,
        dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
        curve: None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    install_signal_flag(&shutdown);
    let exit = io::run(config, &shutdown)?;
    println!("stopped: {exit:?}");
    Ok(())
}

/// Sets `flag` on SIGINT or SIGTERM (as examples/custom_handler.rs).
fn install_signal_flag(flag: &Arc<AtomicBool>) {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(Arc::clone(flag));
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(flag) = FLAG.get() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `on_signal` has the signature signal() wants.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}
