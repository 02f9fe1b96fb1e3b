//! The relay's retention rule, metrics and claim renewal, on SQLite and a
//! real PostgreSQL, with a real broker and worker: confirmed rows are moved
//! to the archive table (`--retention 0 --archive-table`) or deleted once
//! older than `--retention`, rejected rows stay; `/metrics` counts what
//! happened and passes `promtool check metrics`; rows held up by a stopped
//! broker past their lease are not claimed again (their claims renewed).

mod relay_support;

use std::time::Duration;

use relay_support::*;

/// Rows the application writes into each table.
const ROWS: usize = 30;
/// A row the relay cannot send: its order id is over the 256-byte limit.
fn bad_order_id() -> String {
    "x".repeat(300)
}

/// What the tests ask of the application's connection, in either dialect.
trait App {
    fn exec(&mut self, sql: &str);
    fn count(&mut self, sql: &str) -> usize;
}

#[cfg(feature = "outbox-sqlite")]
impl App for rusqlite::Connection {
    fn exec(&mut self, sql: &str) {
        self.execute_batch(sql).unwrap();
    }
    fn count(&mut self, sql: &str) -> usize {
        self.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize
    }
}

#[cfg(feature = "outbox-postgres")]
impl App for postgres::Client {
    fn exec(&mut self, sql: &str) {
        self.batch_execute(sql).unwrap();
    }
    fn count(&mut self, sql: &str) -> usize {
        self.query_one(sql, &[]).unwrap().get::<_, i64>(0) as usize
    }
}

/// One transaction of `rows` rows `PREFIX-i` into `table`.
fn write_rows(app: &mut dyn App, table: &str, prefix: &str, rows: usize) {
    let values: Vec<String> = (0..rows).map(|i| format!("('{prefix}-{i}', '[1, 2]')")).collect();
    app.exec(&format!("BEGIN; INSERT INTO {table} (order_id, items) VALUES {}; COMMIT;", values.join(", ")));
}

/// Two relays on one database: `orderly_outbox` archived as soon as
/// confirmed (with metrics), `outbox_b` deleted 4 s after.
fn retention_moves_or_deletes_confirmed_rows_and_keeps_rejected_ones(url: &str, app: &mut dyn App) {
    let dir = tempfile::tempdir().unwrap();
    app.exec(&schema_with(url, &["--archive-table", "orderly_archive"]));
    app.exec(&schema_with(url, &["--table", "outbox_b"]));
    let broker = start_broker(&dir.path().join("broker"));
    let _worker = start_worker(&broker, &dir.path().join("sink"));
    let metrics = free_addr();
    let _archiving = start_relay_with(
        &broker,
        url,
        &["--retention", "0", "--archive-table", "orderly_archive", "--metrics", &metrics],
    );
    let _deleting = start_relay_with(&broker, url, &["--table", "outbox_b", "--retention", "4s"]);

    let mut before = None;
    wait_for("the relay's /metrics", Duration::from_secs(10), || {
        before = scrape(&metrics);
        before.is_some()
    });
    let before = before.unwrap();
    assert_eq!(sample(&before, "orderly_relay_rows_confirmed_total"), Some(0.0), "{before}");
    assert!(before.contains("orderly_relay_build_info{id=\"shop-1\",table=\"orderly_outbox\""), "{before}");

    write_rows(app, "orderly_outbox", "a", ROWS);
    app.exec(&format!("INSERT INTO orderly_outbox (order_id, items) VALUES ('{}', '[1]')", bad_order_id()));
    write_rows(app, "outbox_b", "b", ROWS);

    // Archived: gone from the outbox but for the rejected row, every
    // confirmed row in the archive with its columns.
    wait_for("every confirmed row archived", Duration::from_secs(20), || {
        app.count("SELECT COUNT(*) FROM orderly_archive") == ROWS
    });
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orderly_archive WHERE state = 'confirmed' AND order_id LIKE 'a-%'"),
        ROWS
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orderly_archive WHERE confirmed_at IS NOT NULL AND attempts >= 1"),
        ROWS
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM orderly_outbox"), 1, "only the rejected row stays");
    assert_eq!(app.count("SELECT COUNT(*) FROM orderly_outbox WHERE state = 'rejected' AND error IS NOT NULL"), 1);

    // Deleted, but only once 4 s old: all still there after a look for
    // old rows (every 2 s, half the retention) has passed.
    wait_for("every row of outbox_b confirmed", Duration::from_secs(20), || {
        app.count("SELECT COUNT(*) FROM outbox_b WHERE state = 'confirmed'") == ROWS
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox_b"), ROWS, "rows deleted before their retention ran out");
    wait_for("outbox_b's confirmed rows deleted after 4 s", Duration::from_secs(10), || {
        app.count("SELECT COUNT(*) FROM outbox_b") == 0
    });

    let mut after = String::new();
    wait_for("the metrics to count the archived rows", Duration::from_secs(5), || {
        after = scrape(&metrics).unwrap_or_default();
        sample(&after, "orderly_relay_rows_retired_total") == Some(ROWS as f64)
    });
    for (name, value) in [
        ("orderly_relay_rows_claimed_total", ROWS + 1),
        ("orderly_relay_orders_sent_total", ROWS),
        ("orderly_relay_rows_confirmed_total", ROWS),
        ("orderly_relay_rows_rejected_total", 1),
        ("orderly_relay_rows_in_flight", 0),
        ("orderly_relay_lag_seconds", 0),
    ] {
        assert_eq!(sample(&after, name), Some(value as f64), "{name} in\n{after}");
    }
    match promtool_check(&after) {
        Some((passed, said)) => assert!(passed, "promtool check metrics: {said}\n{after}"),
        None => eprintln!("promtool not installed: the scrape's format was not checked"),
    }
    let unserved = alerted_relay_names().into_iter().filter(|name| sample(&after, name).is_none()).collect::<Vec<_>>();
    assert!(unserved.is_empty(), "deploy/prometheus-alerts.yml alerts on names the relay does not serve: {unserved:?}");
}

/// Every `orderly_relay_*` name deploy/prometheus-alerts.yml uses: a renamed
/// family fails here, not the pager.
fn alerted_relay_names() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus-alerts.yml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names: Vec<String> = text
        .match_indices("orderly_relay_")
        .map(|(at, _)| text[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect())
        .collect();
    names.sort();
    names.dedup();
    assert!(!names.is_empty(), "no orderly_relay_ name in {path}");
    names
}

/// A relay whose rows wait on a stopped broker for three leases renews its
/// claims: no row is claimed twice (without renewal the relay itself claims
/// them again at each lease's end).
fn claims_are_renewed_while_the_broker_is_slow(url: &str, app: &mut dyn App) {
    let dir = tempfile::tempdir().unwrap();
    app.exec(&schema_with(url, &[]));
    let broker = start_broker(&dir.path().join("broker"));
    let sink = dir.path().join("sink");
    let _worker = start_worker(&broker, &sink);
    let _relay = start_relay_with(&broker, url, &[]); // --claim-lease 1
    let _twin = start_relay_with(&broker, url, &[]);
    // The handshake first: a row confirmed means both ends are up.
    write_rows(app, "orderly_outbox", "warm", 1);
    wait_for("the first row confirmed", Duration::from_secs(20), || {
        app.count("SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'") == 1
    });
    broker.pause();
    write_rows(app, "orderly_outbox", "slow", ROWS);
    wait_for("every row claimed", Duration::from_secs(10), || {
        app.count("SELECT COUNT(*) FROM orderly_outbox WHERE state = 'pending' AND claimed_by IS NULL") == 0
    });
    std::thread::sleep(Duration::from_secs(3));
    broker.resume();
    wait_for("every row confirmed", Duration::from_secs(20), || {
        app.count("SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'") == ROWS + 1
    });
    assert_eq!(app.count("SELECT COUNT(*) FROM orderly_outbox WHERE attempts > 1"), 0, "rows were claimed again");
}

#[cfg(feature = "outbox-sqlite")]
fn sqlite_app(dir: &std::path::Path) -> (String, rusqlite::Connection) {
    let path = dir.join("app.db");
    let app = rusqlite::Connection::open(&path).unwrap();
    app.pragma_update(None, "journal_mode", "WAL").unwrap();
    app.busy_timeout(Duration::from_secs(10)).unwrap();
    (format!("sqlite:{}", path.display()), app)
}

#[cfg(feature = "outbox-sqlite")]
#[test]
fn sqlite_retention_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut app) = sqlite_app(dir.path());
    retention_moves_or_deletes_confirmed_rows_and_keeps_rejected_ones(&url, &mut app);
}

#[cfg(feature = "outbox-sqlite")]
#[test]
fn sqlite_claims_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut app) = sqlite_app(dir.path());
    claims_are_renewed_while_the_broker_is_slow(&url, &mut app);
}

#[cfg(feature = "outbox-postgres")]
#[test]
fn postgres_retention_and_metrics() {
    let pg = Postgres::start();
    let mut app = postgres::Client::connect(&pg.url, postgres::NoTls).expect("connect to the test's PostgreSQL");
    retention_moves_or_deletes_confirmed_rows_and_keeps_rejected_ones(&pg.url, &mut app);
}

#[cfg(feature = "outbox-postgres")]
#[test]
fn postgres_claims_renewed() {
    let pg = Postgres::start();
    let mut app = postgres::Client::connect(&pg.url, postgres::NoTls).expect("connect to the test's PostgreSQL");
    claims_are_renewed_while_the_broker_is_slow(&pg.url, &mut app);
}
