//! The outbox relay on SQLite, end to end with a real broker and worker:
//! rows written in committed and rolled-back transactions while the relay
//! runs; the relay is killed with SIGKILL mid-run and started again.
//! Needs the `outbox-sqlite` feature:
//! `cargo nextest run -p orderly-producer-cli --features outbox-sqlite`.

#![cfg(feature = "outbox-sqlite")]

mod relay_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use relay_support::*;
use rusqlite::Connection;

/// Transactions the application writes, and rows in each.
const TRANSACTIONS: usize = 100;
const ROWS_PER_TRANSACTION: usize = 10;

#[test]
fn every_committed_row_is_delivered_and_no_rolled_back_one_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let url = format!("sqlite:{}", path.display());
    let mut app = Connection::open(&path).unwrap();
    app.pragma_update(None, "journal_mode", "WAL").unwrap();
    app.busy_timeout(Duration::from_secs(10)).unwrap();
    app.execute_batch(&schema(&url)).unwrap();

    let broker = start_broker(&dir.path().join("broker"));
    let sink = dir.path().join("sink");
    let _worker = start_worker(&broker, &sink);
    let mut relay = start_relay(&broker, &url, "0.05");
    let started = Instant::now();

    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    for t in 0..TRANSACTIONS {
        let pause = t == TRANSACTIONS / 2;
        if pause {
            broker.pause();
        }
        let transaction = app.transaction().unwrap();
        let ids: Vec<String> =
            (0..ROWS_PER_TRANSACTION).map(|i| format!("o-{}", t * ROWS_PER_TRANSACTION + i)).collect();
        for id in &ids {
            transaction
                .execute(
                    "INSERT INTO orderly_outbox (order_id, items) VALUES (?1, ?2)",
                    (id, format!("[{{\"n\": \"{id}\"}}, 2]")),
                )
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
        if pause {
            // Mid-run, with rows claimed and unconfirmed (the broker is
            // stopped): the next relay takes them once their lease runs out.
            let claimed = "SELECT COUNT(*) FROM orderly_outbox WHERE state = 'pending' AND claimed_by IS NOT NULL";
            wait_for("rows claimed while the broker is stopped", Duration::from_secs(10), || {
                app.query_row(claimed, [], |r| r.get::<_, i64>(0)).unwrap() > 0
            });
            relay.kill();
            broker.resume();
            relay = start_relay(&broker, &url, "0.05");
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let count = |sql: &str| -> usize { app.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize };
    wait_for("every committed row confirmed", Duration::from_secs(60), || {
        count("SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'") == committed.len()
    });
    let elapsed = started.elapsed();
    assert_eq!(count("SELECT COUNT(*) FROM orderly_outbox"), committed.len());
    wait_for("every committed row delivered", Duration::from_secs(30), || delivered(&sink).len() >= committed.len());
    let delivered = delivered(&sink);
    assert_eq!(delivered, committed, "the worker got exactly the committed orders");
    assert!(delivered.is_disjoint(&rolled_back));
    let claimed_twice = count("SELECT COUNT(*) FROM orderly_outbox WHERE attempts > 1");
    assert!(claimed_twice > 0, "the restarted relay claimed again the rows the killed one left unconfirmed");
    eprintln!(
        "{} committed rows confirmed in {:.2} s ({:.0} rows/s, writer paced); {claimed_twice} claimed more than once",
        committed.len(),
        elapsed.as_secs_f64(),
        committed.len() as f64 / elapsed.as_secs_f64()
    );
}
