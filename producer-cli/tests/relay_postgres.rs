//! The outbox relay on a real PostgreSQL, end to end with a real broker
//! and worker: two relays with one `--id` share the table (`FOR UPDATE
//! SKIP LOCKED`) while rows are written in committed and rolled-back
//! transactions; one relay is killed with SIGKILL mid-run (the broker
//! stopped, so it dies with rows unconfirmed) and started again; an idle
//! relay wakes on NOTIFY, not at its (long) poll interval. Needs the
//! `outbox-postgres` feature and Debian's `postgresql` package:
//! `cargo nextest run -p orderly-producer-cli --features outbox-postgres`.

#![cfg(feature = "outbox-postgres")]

mod relay_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use relay_support::*;

/// Transactions the application writes, and rows in each.
const TRANSACTIONS: usize = 100;
const ROWS_PER_TRANSACTION: usize = 10;
/// The relays' poll interval: long, so only NOTIFY explains a quick pick-up.
const POLL_INTERVAL: &str = "10";

#[test]
fn two_relays_deliver_every_committed_row_across_a_kill_9_and_wake_on_notify() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let mut app = Client::connect(&pg.url, NoTls).expect("connect to the test's PostgreSQL");
    app.batch_execute(&schema(&pg.url)).unwrap();

    let broker = start_broker(&dir.path().join("broker"));
    let sink = dir.path().join("sink");
    let _worker = start_worker(&broker, &sink);
    let mut first = start_relay(&broker, &pg.url, POLL_INTERVAL);
    let _second = start_relay(&broker, &pg.url, POLL_INTERVAL);
    let started = Instant::now();

    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    // From mid-run the broker is stopped until the first relay holds
    // claimed, unconfirmed rows (the second may win the claims for a while);
    // then the first is killed and started again.
    let mut paused = false;
    for t in 0..TRANSACTIONS {
        if t == TRANSACTIONS / 2 {
            broker.pause();
            paused = true;
        }
        let mut transaction = app.transaction().unwrap();
        let ids: Vec<String> =
            (0..ROWS_PER_TRANSACTION).map(|i| format!("o-{}", t * ROWS_PER_TRANSACTION + i)).collect();
        for id in &ids {
            let items = format!("[{{\"n\": \"{id}\"}}, 2]");
            transaction
                .execute("INSERT INTO orderly_outbox (order_id, items) VALUES ($1, $2::text::jsonb)", &[id, &items])
                .unwrap();
        }
        // Every seventh transaction fails after writing its rows.
        if t % 7 == 3 {
            transaction.rollback().unwrap();
            rolled_back.extend(ids);
        } else {
            transaction.commit().unwrap();
            committed.extend(ids);
        }
        if paused && holds_claims(&mut app, first.pid()) {
            first.kill();
            broker.resume();
            paused = false;
            first = start_relay(&broker, &pg.url, POLL_INTERVAL);
        }
        std::thread::sleep(Duration::from_millis(if paused { 100 } else { 5 }));
    }
    assert!(!paused, "the first relay never claimed a row while the broker was stopped");

    // Under the 10 s poll interval: the killed relay's rows are taken over
    // when their lease runs out, not at the next poll.
    wait_for("every committed row confirmed", Duration::from_secs(8), || {
        count(&mut app, "SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'") == committed.len()
    });
    let elapsed = started.elapsed();
    assert_eq!(count(&mut app, "SELECT COUNT(*) FROM orderly_outbox"), committed.len());
    wait_for("every committed row delivered", Duration::from_secs(30), || delivered(&sink).len() >= committed.len());
    let got = delivered(&sink);
    assert_eq!(got, committed, "the worker got exactly the committed orders");
    assert!(got.is_disjoint(&rolled_back));
    let claimed_twice = count(&mut app, "SELECT COUNT(*) FROM orderly_outbox WHERE attempts > 1");
    assert!(claimed_twice > 0, "a relay claimed again the rows the killed one left unconfirmed");
    let by_relay: Vec<(String, i64)> = app
        .query("SELECT claimed_by, COUNT(*) FROM orderly_outbox GROUP BY claimed_by ORDER BY claimed_by", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    eprintln!(
        "{} committed rows confirmed in {:.2} s ({:.0} rows/s, writer paced); {claimed_twice} claimed more than once; \
         last claimed by (relay:pid, rows): {by_relay:?}",
        committed.len(),
        elapsed.as_secs_f64(),
        committed.len() as f64 / elapsed.as_secs_f64()
    );

    // Both relays idle now: a new row is picked up at its commit, well
    // before the 10 s poll.
    let inserted = Instant::now();
    app.execute("INSERT INTO orderly_outbox (order_id, items) VALUES ('late-1', '[1]')", &[]).unwrap();
    wait_for("the late row confirmed (NOTIFY)", Duration::from_secs(3), || {
        count(&mut app, "SELECT COUNT(*) FROM orderly_outbox WHERE order_id = 'late-1' AND state = 'confirmed'") == 1
    });
    eprintln!("an idle relay confirmed a new row {:.0} ms after its commit", inserted.elapsed().as_secs_f64() * 1e3);
}

/// The first column of a one-row query, as a count.
fn count(app: &mut Client, sql: &str) -> usize {
    app.query_one(sql, &[]).unwrap().get::<_, i64>(0) as usize
}

/// Whether the relay with this PID holds claimed rows not yet confirmed.
fn holds_claims(app: &mut Client, pid: u32) -> bool {
    let claimer = format!("shop-1:{pid}");
    let sql = "SELECT COUNT(*) FROM orderly_outbox WHERE state = 'pending' AND claimed_by = $1";
    app.query_one(sql, &[&claimer]).unwrap().get::<_, i64>(0) > 0
}
