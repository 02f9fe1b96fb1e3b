//! The outbox relay speaks TLS to a real PostgreSQL (`ssl = on`, a CA and
//! server certificate made by the test with the `openssl` command line,
//! pg_hba.conf taking only `hostssl` on TCP): `sslmode=verify-full` with the
//! CA relays rows end to end through a real broker and worker; `disable`,
//! a wrong CA and a wrong host name fail at once with a clear error; bad
//! TLS settings in the URL are bad usage (exit 2). Needs the
//! `outbox-postgres` feature and Debian's `postgresql` and `openssl`.

#![cfg(feature = "outbox-postgres")]

mod relay_support;

use std::time::Duration;

use postgres::Client;
use postgres_native_tls::MakeTlsConnector;
use relay_support::*;

/// Only TLS over TCP; the Unix socket stays open for nothing but is
/// harmless (the relay connects over TCP).
const HBA_TLS_ONLY: &str = "local all all trust\n\
                            hostssl all all 127.0.0.1/32 trust\n\
                            hostnossl all all 127.0.0.1/32 reject\n";
/// TLS and plain both taken on TCP.
const HBA_EITHER: &str = "local all all trust\n\
                          host all all 127.0.0.1/32 trust\n";
/// Rows the application writes.
const ROWS: usize = 50;
/// How long a relay may take to fail at the database (it does not wait for
/// a broker first).
const FAIL_WITHIN: Duration = Duration::from_secs(15);
/// How long a relay may take to log its connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(15);

/// A PostgreSQL taking only TLS on TCP, and the certificates.
fn tls_postgres(dir: &std::path::Path) -> (Postgres, TestCerts) {
    tls_postgres_with(dir, HBA_TLS_ONLY)
}

/// A PostgreSQL with TLS on and `hba` as its pg_hba.conf, and the
/// certificates.
fn tls_postgres_with(dir: &std::path::Path, hba: &str) -> (Postgres, TestCerts) {
    let certs = make_certs(&dir.join("certs"));
    let pg = Postgres::start();
    pg.enable_tls(&certs, hba);
    (pg, certs)
}

/// `pg`'s URL with `query` appended.
fn url(pg: &Postgres, query: &str) -> String {
    format!("{}?{query}", pg.url)
}

/// The test's own client (the application), over TLS with the CA checked.
fn app_client(pg: &Postgres, certs: &TestCerts) -> Client {
    let ca = native_tls::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let connector = native_tls::TlsConnector::builder().add_root_certificate(ca).build().unwrap();
    let config: postgres::Config = url(pg, "sslmode=require").parse().unwrap();
    config.connect(MakeTlsConnector::new(connector)).expect("the test connects over TLS")
}

/// Waits until the relay's log says it connected, and returns the log.
fn wait_for_connected(log: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + CONNECT_WITHIN;
    loop {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains("connected to PostgreSQL") {
            return said;
        }
        assert!(!said.contains("orderly-producer: error"), "the relay failed: {said}");
        assert!(std::time::Instant::now() < deadline, "no connection logged in {CONNECT_WITHIN:?}; the log: {said}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn verify_full_with_the_ca_relays_every_row_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, certs) = tls_postgres(dir.path());
    let mut app = app_client(&pg, &certs);
    app.batch_execute(&schema(&pg.url)).unwrap();
    let broker = start_broker(&dir.path().join("broker"));
    let sink = dir.path().join("sink");
    let _worker = start_worker(&broker, &sink);
    let log = dir.path().join("relay.log");
    let database = url(&pg, &format!("sslmode=verify-full&sslrootcert={}", certs.ca.display()));
    let _relay = start_relay_logged(&broker, &database, &log);

    let mut ids = std::collections::BTreeSet::new();
    for n in 0..ROWS {
        let id = format!("tls-{n}");
        app.execute("INSERT INTO orderly_outbox (order_id, items) VALUES ($1, '[1]')", &[&id]).unwrap();
        ids.insert(id);
    }
    let said = wait_for_connected(&log);
    assert!(said.contains("connected to PostgreSQL over TLS") && said.contains("verify-full"), "{said}");
    wait_for("every row confirmed", Duration::from_secs(30), || {
        let sql = "SELECT COUNT(*) FROM orderly_outbox WHERE state = 'confirmed'";
        app.query_one(sql, &[]).unwrap().get::<_, i64>(0) as usize == ROWS
    });
    wait_for("every row delivered", Duration::from_secs(30), || delivered(&sink).len() >= ROWS);
    assert_eq!(delivered(&sink), ids);
}

#[test]
fn refused_tls_fails_at_once_with_a_clear_error_and_weaker_modes_connect() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, certs) = tls_postgres(dir.path());
    // With the table there, a relay that wrongly connects runs on (and
    // relay_fails says so) instead of failing for want of a table.
    app_client(&pg, &certs).batch_execute(&schema(&pg.url)).unwrap();
    let (ca, other_ca) = (certs.ca.display(), certs.other_ca.display());

    // A hostssl-only server refuses a relay without TLS.
    let (code, said) = relay_fails(&url(&pg, "sslmode=disable"), FAIL_WITHIN);
    eprint!("{said}");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no encryption") && said.contains("write sslmode=verify-full"), "{said}");

    // A CA that did not sign the server's certificate.
    let (code, said) = relay_fails(&url(&pg, &format!("sslmode=verify-full&sslrootcert={other_ca}")), FAIL_WITHIN);
    eprint!("{said}");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("certificate verify failed") && said.contains("sslrootcert=PATH"), "{said}");

    // The right CA, but a host name the certificate does not hold (the
    // TCP connection still goes to 127.0.0.1, through hostaddr).
    let port = pg.port();
    let wrong_host = format!("postgres://postgres@db.invalid:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={ca}");
    let (code, said) = relay_fails(&format!("{wrong_host}&sslmode=verify-full"), FAIL_WITHIN);
    eprint!("{said}");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("certificate verify failed") && said.contains("host name"), "{said}");

    // The same URL connects where the host name is not checked (so the
    // failure above is the host name's), and prefer and require connect
    // over TLS without a CA (each killed when its guard drops).
    let broker = start_broker(&dir.path().join("broker"));
    for (n, database) in [
        format!("{wrong_host}&sslmode=verify-ca"),
        url(&pg, "sslmode=prefer"),
        pg.url.clone(),
        url(&pg, "sslmode=require"),
    ]
    .iter()
    .enumerate()
    {
        let log = dir.path().join(format!("relay-{n}.log"));
        let _relay = start_relay_logged(&broker, database, &log);
        let said = wait_for_connected(&log);
        assert!(said.contains("connected to PostgreSQL over TLS"), "{database}: {said}");
    }
}

#[test]
fn prefer_falls_back_to_plain_when_the_handshake_fails_and_require_checks_a_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, certs) = tls_postgres_with(dir.path(), HBA_EITHER);
    app_client(&pg, &certs).batch_execute(&schema(&pg.url)).unwrap();
    let other_ca = certs.other_ca.display();
    let broker = start_broker(&dir.path().join("broker"));

    // As libpq: sslrootcert makes even prefer check the chain, and prefer
    // then connects without TLS rather than not at all.
    for (n, (query, says)) in [
        (format!("sslmode=prefer&sslrootcert={other_ca}"), "sslmode=prefer: connecting without TLS"),
        ("sslmode=disable".to_owned(), "connected to PostgreSQL without TLS"),
    ]
    .iter()
    .enumerate()
    {
        let log = dir.path().join(format!("relay-{n}.log"));
        let _relay = start_relay_logged(&broker, &url(&pg, query), &log);
        let said = wait_for_connected(&log);
        assert!(said.contains(says) && said.contains("connected to PostgreSQL without TLS"), "{query}: {said}");
    }
    // require with a CA given checks the chain (libpq's verify-ca).
    let (code, said) = relay_fails(&url(&pg, &format!("sslmode=require&sslrootcert={other_ca}")), FAIL_WITHIN);
    eprint!("{said}");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("certificate verify failed") && said.contains("sslrootcert=PATH"), "{said}");
}

#[test]
fn bad_tls_settings_in_the_url_are_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    // No server is needed: these fail before any connection.
    for (query, says) in [
        (
            "sslmode=verify_full".to_owned(),
            "write sslmode=disable, prefer (the default), require, verify-ca or verify-full",
        ),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem".to_owned(),
            "sslrootcert=/nonexistent/ca.pem cannot be read",
        ),
        (format!("sslmode=verify-ca&sslrootcert={}", not_pem.display()), "holds no PEM certificate"),
    ] {
        let (code, said) = relay_fails(&format!("postgres://postgres@127.0.0.1:1/postgres?{query}"), FAIL_WITHIN);
        assert_eq!(code, 2, "{query}: {said}");
        assert!(said.contains(says), "{query}: {said}");
    }
}
