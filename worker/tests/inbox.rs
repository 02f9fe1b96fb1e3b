//! The inbox on real databases: a SQLite file and a private PostgreSQL
//! server (the relay tests' guard, shared by path rather than copied).
#![cfg(all(feature = "inbox-sqlite", feature = "inbox-postgres"))]

#[path = "../../producer-cli/tests/relay_support/mod.rs"]
mod relay_support;

use std::sync::mpsc;
use std::time::Duration;

use orderly_common::OrderKey;
use orderly_worker::core::Failure;
use orderly_worker::inbox::{Dialect, Inbox};

fn key(id: &str) -> OrderKey {
    OrderKey { producer: "shop-1".into(), id: id.into() }
}

#[test]
fn sqlite_first_claim_wins_and_rollback_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = rusqlite::Connection::open(dir.path().join("inbox.db")).unwrap();
    let inbox = Inbox::new("my_inbox").unwrap();
    db.execute_batch(&inbox.schema(Dialect::Sqlite)).unwrap();
    db.execute_batch("CREATE TABLE applied (order_id text PRIMARY KEY, times integer NOT NULL)").unwrap();
    let apply = |db: &mut rusqlite::Connection, id: &str| -> Result<Option<()>, Failure> {
        let tx = db.transaction().unwrap();
        let done = inbox.once_sqlite(&tx, &key(id), |tx| {
            tx.execute(
                "INSERT INTO applied VALUES (?1, 1) ON CONFLICT (order_id) DO UPDATE SET times = times + 1",
                [id],
            )?;
            Ok::<_, Failure>(())
        })?;
        tx.commit()?;
        Ok(done)
    };
    assert_eq!(apply(&mut db, "o-1").unwrap(), Some(()));
    assert_eq!(apply(&mut db, "o-1").unwrap(), None, "a duplicate is skipped");
    assert_eq!(apply(&mut db, "o-2").unwrap(), Some(()));
    // Another producer's order with the same id is another order.
    let tx = db.transaction().unwrap();
    assert!(inbox.claim_sqlite(&tx, &OrderKey { producer: "shop-2".into(), id: "o-1".into() }).unwrap());
    // Rolled back: the claim is gone with the work.
    drop(tx);
    let tx = db.transaction().unwrap();
    assert!(inbox.claim_sqlite(&tx, &OrderKey { producer: "shop-2".into(), id: "o-1".into() }).unwrap());
    tx.commit().unwrap();
    let times: Vec<i64> = db
        .prepare("SELECT times FROM applied ORDER BY order_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(times, [1, 1]);
    let processed_at: i64 = db.query_row("SELECT min(processed_at) FROM my_inbox", [], |r| r.get(0)).unwrap();
    assert!(processed_at > 1_700_000_000_000, "processed_at is Unix ms: {processed_at}");
}

#[test]
fn sqlite_missing_table_is_a_retryable_error() {
    let mut db = rusqlite::Connection::open_in_memory().unwrap();
    let tx = db.transaction().unwrap();
    let error = Inbox::default().claim_sqlite(&tx, &key("o-1")).unwrap_err();
    assert!(error.to_string().contains("no such table: orderly_inbox"), "{error}");
    let failure: Failure = error.into();
    assert!(failure.retry && !failure.cannot_run);
}

/// PostgreSQL: claims, duplicates, and the same order in two transactions
/// at once — the second waits for the first, then sees its outcome.
#[test]
fn postgres_claims_and_concurrent_duplicates() {
    let server = relay_support::Postgres::start();
    let inbox = Inbox::default();
    let mut db = postgres::Client::connect(&server.url, postgres::NoTls).unwrap();
    db.batch_execute(&inbox.schema(Dialect::Postgres)).unwrap();

    let mut tx = db.transaction().unwrap();
    assert!(inbox.claim_postgres(&mut tx, &key("o-1")).unwrap());
    assert!(!inbox.claim_postgres(&mut tx, &key("o-1")).unwrap(), "a duplicate in the same transaction");
    tx.commit().unwrap();
    let mut tx = db.transaction().unwrap();
    assert_eq!(inbox.once_postgres(&mut tx, &key("o-1"), |_| Ok::<_, Failure>(())).unwrap(), None);
    assert_eq!(inbox.once_postgres(&mut tx, &key("o-2"), |_| Ok::<_, Failure>(7)).unwrap(), Some(7));
    tx.commit().unwrap();

    // The first transaction commits: the waiting second one skips.
    // It rolls back: the second one claims.
    for (commit_first, second_claims) in [(true, false), (false, true)] {
        let id = format!("race-{commit_first}");
        let mut first = db.transaction().unwrap();
        assert!(inbox.claim_postgres(&mut first, &key(&id)).unwrap());
        let (sender, receiver) = mpsc::channel();
        let (url, inbox2, id2) = (server.url.clone(), inbox.clone(), id.clone());
        let second = std::thread::spawn(move || {
            let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = other.transaction().unwrap();
            let claimed = inbox2.claim_postgres(&mut tx, &key(&id2)).unwrap();
            tx.commit().unwrap();
            sender.send(claimed).unwrap();
        });
        assert_eq!(
            receiver.recv_timeout(Duration::from_millis(500)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "the second claim must wait for the first transaction"
        );
        if commit_first {
            first.commit().unwrap()
        } else {
            first.rollback().unwrap()
        }
        let claimed = receiver.recv_timeout(Duration::from_secs(10)).expect("the second claim finishes");
        assert_eq!(claimed, second_claims, "commit_first = {commit_first}");
        second.join().unwrap();
    }
    let rows: i64 = db.query_one("SELECT count(*) FROM orderly_inbox", &[]).unwrap().get(0);
    assert_eq!(rows, 4);
}
