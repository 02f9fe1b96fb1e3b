//! Issue 19's two end-to-end tests: from the application's database to
//! the handler's business table, exactly once in effect. Everything is
//! real: PostgreSQL (the relay tests' guard), the broker binary,
//! `orderly-producer relay` processes, and the inbox example
//! (`worker/examples/inbox.rs`) as the handler process, which per order in
//! one transaction counts the delivery, claims the order in the inbox and,
//! only the first time, increments `applied.times`.
//!
//! Build the broker and the example first (scripts/test.sh does):
//! `cargo build -p orderly-broker -p orderly-worker --examples --features
//! inbox-sqlite,inbox-postgres`, then
//! `cargo nextest run -p orderly-producer-cli --test exactly_once`.

#![cfg(feature = "outbox-postgres")]

mod relay_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use relay_support::*;

/// Rows the application writes in test (a), in transactions of this many.
const ORDERS: usize = 10_000;
const ROWS_PER_TRANSACTION: usize = 10;
/// Every transaction `t` with `t % ROLLBACK_EVERY == 3` is rolled back.
const ROLLBACK_EVERY: usize = 7;
/// How long the first worker holds each done order before acknowledging:
/// longer than it takes us to see its commit and kill it, so at least one
/// order is committed but unacknowledged when it dies.
const LINGER_MS: &str = "3000";
/// Kill -9 rounds of the relay and of the broker in test (a).
const KILL_ROUNDS: usize = 3;
/// Bound on the end of each test: everything confirmed and applied.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The inbox example, built by `cargo build -p orderly-worker --examples
/// --features inbox-sqlite,inbox-postgres`.
fn inbox_example() -> PathBuf {
    let producer = assert_cmd::cargo::cargo_bin("orderly-producer");
    let path = producer.parent().unwrap().join("examples").join("inbox");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p orderly-worker --examples --features \
         inbox-sqlite,inbox-postgres` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The inbox example as a worker on `broker`, its tables in `database`.
fn start_inbox_worker(broker: &Broker, database: &str, id: &str, linger_ms: &str) -> Guard {
    let child = Command::new(inbox_example())
        .args(["--id", id, "--concurrency", "8", "--linger-ms", linger_ms, "--database", database])
        .args(["--fanout", &broker.fanout, "--control", &broker.control])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the inbox example");
    Guard(child)
}

/// Waits until the inbox example has created its tables.
fn wait_for_tables(db: &mut Client) {
    let sql = "SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('deliveries', 'applied', 'orderly_inbox')";
    wait_for("the inbox example's tables", Duration::from_secs(20), || count(db, sql) == 3);
}

/// The first column of a one-row query, as a count.
fn count(db: &mut Client, sql: &str) -> usize {
    db.query_one(sql, &[]).unwrap().get::<_, i64>(0) as usize
}

/// The set of `order_id`s a query returns.
fn ids(db: &mut Client, sql: &str) -> BTreeSet<String> {
    db.query(sql, &[]).unwrap().iter().map(|row| row.get(0)).collect()
}

/// The application: writes `orders` outbox rows in transactions of
/// [`ROWS_PER_TRANSACTION`], rolling some back, pausing `pause` between
/// transactions. Returns (committed, rolled back) order ids.
fn write_orders(url: &str, orders: usize, pause: Duration) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut app = Client::connect(url, NoTls).expect("connect the application");
    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    for t in 0..orders / ROWS_PER_TRANSACTION {
        let mut tx = app.transaction().unwrap();
        let ids: Vec<String> =
            (0..ROWS_PER_TRANSACTION).map(|i| format!("o-{}", t * ROWS_PER_TRANSACTION + i)).collect();
        for id in &ids {
            let items = format!("[{{\"sku\": \"{id}\", \"qty\": 1}}]");
            tx.execute("INSERT INTO orderly_outbox (order_id, items) VALUES ($1, $2::text::jsonb)", &[id, &items])
                .unwrap();
        }
        if t % ROLLBACK_EVERY == 3 {
            tx.rollback().unwrap();
            rolled_back.extend(ids);
        } else {
            tx.commit().unwrap();
            committed.extend(ids);
        }
        thread::sleep(pause);
    }
    (committed, rolled_back)
}

/// Waits until every committed row is confirmed in the outbox and applied
/// by the handler.
fn settle(db: &mut Client, committed: usize) {
    wait_for("every committed row confirmed and applied", SETTLE_TIMEOUT, || {
        count(db, "SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'") == committed
            && count(db, "SELECT COUNT(*) FROM applied") >= committed
    });
}

/// The end state both tests require: the outbox holds exactly the
/// committed rows, all confirmed; the handler saw every committed order
/// and no rolled-back one; each was applied exactly once. Returns
/// (deliveries, orders delivered more than once).
fn assert_exactly_once(
    db: &mut Client,
    committed: &BTreeSet<String>,
    rolled_back: &BTreeSet<String>,
) -> (usize, usize) {
    assert_eq!(ids(db, "SELECT order_id FROM orderly_outbox"), *committed, "the outbox holds the committed rows");
    assert_eq!(count(db, "SELECT COUNT(*) FROM orderly_outbox WHERE state <> 'confirmed'"), 0);
    let delivered = ids(db, "SELECT DISTINCT order_id FROM deliveries");
    assert_eq!(delivered, *committed, "every committed order delivered, and nothing else");
    assert!(delivered.is_disjoint(rolled_back));
    assert_eq!(ids(db, "SELECT order_id FROM applied"), *committed, "every committed order applied");
    let twice = ids(db, "SELECT order_id FROM applied WHERE times <> 1");
    assert!(twice.is_empty(), "orders applied more than once: {twice:?}");
    assert_eq!(ids(db, "SELECT order_id FROM orderly_inbox"), *committed, "the inbox records each order");
    let deliveries = count(db, "SELECT COUNT(*) FROM deliveries");
    let duplicated =
        count(db, "SELECT COUNT(*) FROM (SELECT order_id FROM deliveries GROUP BY order_id HAVING COUNT(*) > 1) d");
    (deliveries, duplicated)
}

/// Test (a): 10,000 orders written while the relay and the broker are each
/// killed with SIGKILL several times, and the first worker is killed with
/// orders done but unacknowledged. Every committed order is applied once
/// although some were delivered twice.
#[test]
fn ten_thousand_orders_applied_exactly_once_through_kill_9s() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let mut db = Client::connect(&pg.url, NoTls).expect("connect to the test's PostgreSQL");
    db.batch_execute(&schema(&pg.url)).unwrap();
    let broker_dir = dir.path().join("broker");
    let mut broker = start_broker(&broker_dir);
    // The first worker lingers after each commit, so killing it leaves
    // orders done but unacknowledged: the broker must deliver them again.
    let mut first_worker = start_inbox_worker(&broker, &pg.url, "w1", LINGER_MS);
    wait_for_tables(&mut db);
    let mut relay = start_relay(&broker, &pg.url, "1");
    let started = Instant::now();

    let url = pg.url.clone();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        thread::spawn(move || {
            let written = write_orders(&url, ORDERS, Duration::from_millis(5));
            writing.store(false, Ordering::Relaxed);
            written
        })
    };

    wait_for("the first worker's first commit", Duration::from_secs(20), || {
        count(&mut db, "SELECT COUNT(*) FROM deliveries") > 0
    });
    first_worker.kill();
    let _second_worker = start_inbox_worker(&broker, &pg.url, "w2", "0");

    let (mut relay_kills, mut broker_kills) = (0, 0);
    for _ in 0..KILL_ROUNDS {
        thread::sleep(Duration::from_millis(700));
        relay.kill();
        relay_kills += 1;
        relay = start_relay(&broker, &pg.url, "1");
        thread::sleep(Duration::from_millis(700));
        let (intake, fanout, control) = (broker.intake.clone(), broker.fanout.clone(), broker.control.clone());
        broker.kill();
        broker_kills += 1;
        broker = start_broker_on(&broker_dir, intake, fanout, control);
    }
    assert!(writing.load(Ordering::Relaxed), "the kills must happen while the application writes: write slower");
    let (committed, rolled_back) = writer.join().expect("the application thread");
    let written = started.elapsed();
    settle(&mut db, committed.len());
    let elapsed = started.elapsed();

    let (deliveries, duplicated) = assert_exactly_once(&mut db, &committed, &rolled_back);
    assert!(deliveries > committed.len(), "some orders were delivered twice ({deliveries} deliveries)");
    let claimed_again = count(&mut db, "SELECT COUNT(*) FROM orderly_outbox WHERE attempts > 1");
    let (p50, p99, max) = lag_ms(&mut db);
    eprintln!(
        "exactly once: {} committed ({} rolled back) written in {:.1} s, all applied once after {:.1} s \
         ({:.0} rows/s); {relay_kills} relay and {broker_kills} broker kill -9s; {deliveries} deliveries, \
         {duplicated} orders delivered more than once; {claimed_again} rows claimed by the relay more than once; \
         commit to confirm p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
        committed.len(),
        rolled_back.len(),
        written.as_secs_f64(),
        elapsed.as_secs_f64(),
        committed.len() as f64 / elapsed.as_secs_f64(),
    );
}

/// Test (b): two relays with one `--id` on one table while rows are
/// inserted. Prints how many rows each claimed and how many were sent
/// twice.
#[test]
fn two_relays_one_id_apply_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let mut db = Client::connect(&pg.url, NoTls).expect("connect to the test's PostgreSQL");
    db.batch_execute(&schema(&pg.url)).unwrap();
    let broker = start_broker(&dir.path().join("broker"));
    let _worker = start_inbox_worker(&broker, &pg.url, "w1", "0");
    wait_for_tables(&mut db);
    let tallies = [dir.path().join("relay-a.out"), dir.path().join("relay-b.out")];
    let mut relays: Vec<Guard> = tallies
        .iter()
        .map(|path| start_relay_to(&broker, &pg.url, "1", std::fs::File::create(path).unwrap().into()))
        .collect();
    let started = Instant::now();

    let (committed, rolled_back) = write_orders(&pg.url, 3_000, Duration::from_millis(2));
    settle(&mut db, committed.len());
    let elapsed = started.elapsed();
    let (deliveries, duplicated) = assert_exactly_once(&mut db, &committed, &rolled_back);

    // SIGTERM: each relay prints its tally and exits.
    for relay in &mut relays {
        signal(relay.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a relay did not exit within 10 s of SIGTERM");
            thread::sleep(Duration::from_millis(50));
        }
    }
    let claimed: Vec<u64> = tallies.iter().map(|path| claimed_rows(path)).collect();
    assert_eq!(claimed.len(), 2);
    let claimed_again = count(&mut db, "SELECT COUNT(*) FROM orderly_outbox WHERE attempts > 1");
    let sent_twice = claimed.iter().sum::<u64>() - committed.len() as u64;
    let (p50, p99, max) = lag_ms(&mut db);
    eprintln!(
        "two relays, one --id: {} committed rows ({} rolled back) all applied once in {:.1} s; rows claimed per \
         relay: {claimed:?}; claimed (so sent) twice: {sent_twice} ({claimed_again} rows with attempts > 1); \
         {deliveries} deliveries, {duplicated} orders delivered more than once; commit to confirm p50 {p50:.0} ms, \
         p99 {p99:.0} ms, max {max:.0} ms",
        committed.len(),
        rolled_back.len(),
        elapsed.as_secs_f64(),
    );
}

/// Commit-to-confirm time of the outbox rows (`confirmed_at -
/// created_at`; `created_at` is the insert's `clock_timestamp()`, a few
/// ms before these short transactions commit): p50, p99, max in ms.
fn lag_ms(db: &mut Client) -> (f64, f64, f64) {
    let row = db
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), \
             max(ms) FROM (SELECT extract(epoch FROM confirmed_at - created_at)::float8 * 1000 AS ms \
             FROM orderly_outbox WHERE state = 'confirmed') lags",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// "relay: claimed N rows, ..." from a relay's stdout.
fn claimed_rows(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let tally = text.lines().find_map(|line| line.strip_prefix("relay: claimed "));
    let number = tally.and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok());
    number.unwrap_or_else(|| panic!("no tally in the relay's output {}: {text:?}", path.display()))
}
