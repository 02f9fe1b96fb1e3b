//! The outbox in PostgreSQL (`postgres://…`). Claims lock their rows with
//! `FOR UPDATE SKIP LOCKED`, so relays on one table never wait on each
//! other; the schema's trigger NOTIFYs on insert, so an idle relay wakes
//! at the commit instead of at its next poll. TLS as libpq's `sslmode`
//! (see [`SslMode`]), through the system OpenSSL (native-tls).

use std::time::Duration;

use anyhow::Context;
use orderly_cli::ConfigError;
use postgres::config::SslMode as DriverSslMode;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};
use postgres_native_tls::MakeTlsConnector;

use super::core::{Marks, Row};
use super::store::{PostgresUrl, SslMode, Store, COLUMNS};

pub(crate) struct PostgresStore {
    client: Client,
    table: String,
    /// Written into `claimed_by`: which relay process holds a claim.
    claimer: String,
}

impl PostgresStore {
    /// Connects, checks that `table` exists (the error says how to create
    /// it) and LISTENs on its channel.
    pub(crate) fn open(
        url: &str,
        table: &str,
        archive: Option<&str>,
        claimer: String,
    ) -> anyhow::Result<PostgresStore> {
        let mut client = connect(url)?;
        for name in std::iter::once(table).chain(archive) {
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .context("cannot read the database's schema")?
                .get(0);
            if !exists {
                let archive_flag = archive.map(|a| format!(" --archive-table {a}")).unwrap_or_default();
                anyhow::bail!(
                    "the PostgreSQL database has no table {name}: create it with `orderly-producer relay \
                     --print-schema --table {table}{archive_flag} | psql URL`"
                );
            }
        }
        client.batch_execute(&format!("LISTEN {table}")).context("cannot LISTEN for new outbox rows")?;
        Ok(PostgresStore { client, table: table.to_owned(), claimer })
    }
}

/// Connects with the URL's `sslmode` and logs (info) whether TLS is on.
/// The URL may hold a password: no error repeats it.
fn connect(url: &str) -> anyhow::Result<Client> {
    let url = PostgresUrl::parse(url).map_err(|e| ConfigError::Usage(format!("--database: {e}")))?;
    let mut config: Config = url.driver_url.parse().map_err(|e: postgres::Error| {
        // The driver's Display is the kind only; the why is its source.
        let why = std::error::Error::source(&e).map(|why| format!(" ({why})")).unwrap_or_default();
        ConfigError::Usage(format!(
            "--database is not a PostgreSQL URL the relay can use: {e}{why}: write \
                 postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=verify-full&sslrootcert=PATH]"
        ))
    })?;
    // verify-ca and verify-full are `require` to the driver; the connector
    // does their checks.
    config.ssl_mode(match url.ssl_mode {
        SslMode::Disable => DriverSslMode::Disable,
        SslMode::Prefer => DriverSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
    });
    let connector = tls_connector(&url)?;
    let mut client = match config.connect(connector) {
        Ok(client) => client,
        // As libpq: `prefer` tries again without TLS when the handshake
        // fails (the driver itself falls back only when the server has no TLS).
        Err(error) if url.ssl_mode == SslMode::Prefer && tls_cause(&error).is_some() => {
            let why = tls_cause(&error).map(ToString::to_string).unwrap_or_default();
            tracing::warn!(error = %why, "TLS to PostgreSQL failed; sslmode=prefer: connecting without TLS");
            config.ssl_mode(DriverSslMode::Disable);
            config.connect(NoTls).context("cannot connect to the PostgreSQL database of --database")?
        }
        Err(error) => {
            const CANNOT: &str = "cannot connect to the PostgreSQL database of --database";
            // native-tls repeats OpenSSL's words as its own source: said once.
            if let Some(tls) = tls_cause(&error) {
                anyhow::bail!("{CANNOT}{}: {error}: {tls}", tls_hint(&url));
            }
            let hint = if url.ssl_mode == SslMode::Disable && error.as_db_error().is_some() {
                " (sslmode=disable: a server that takes only TLS refuses it; write sslmode=verify-full)"
            } else {
                ""
            };
            return Err(anyhow::Error::new(error).context(format!("{CANNOT}{hint}")));
        }
    };
    // The server's view, so `prefer` reports what it got.
    let row = client
        .query_opt("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl", &[])
        .context("cannot read the connection's TLS state (pg_stat_ssl)")?;
    match row {
        Some(row) => tracing::info!(
            sslmode = url.ssl_mode.as_str(),
            tls_version = row.get::<_, Option<String>>(0).unwrap_or_default(),
            "connected to PostgreSQL over TLS"
        ),
        None => tracing::info!(sslmode = url.ssl_mode.as_str(), "connected to PostgreSQL without TLS"),
    }
    Ok(client)
}

/// The TLS connector for `sslmode`: the chain checked as [`checks_chain`]
/// says, the host name in verify-full only. An unreadable `sslrootcert` is
/// bad usage.
fn tls_connector(url: &PostgresUrl) -> anyhow::Result<MakeTlsConnector> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &url.root_cert {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::Usage(format!(
                "--database: sslrootcert={shown} cannot be read ({e}): write sslrootcert=PATH of a readable PEM \
                 file holding the CA certificate that signed the server's, or sslrootcert=system"
            ))
        })?;
        let certificates = native_tls::Certificate::stack_from_pem(&pem).unwrap_or_default();
        if certificates.is_empty() {
            return Err(ConfigError::Usage(format!(
                "--database: sslrootcert={shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----): write the \
                 path of the CA certificate that signed the server's"
            ))
            .into());
        }
        builder.disable_built_in_roots(true);
        for certificate in certificates {
            builder.add_root_certificate(certificate);
        }
    }
    builder.danger_accept_invalid_certs(!checks_chain(url));
    builder.danger_accept_invalid_hostnames(url.ssl_mode != SslMode::VerifyFull);
    let connector = builder.build().context("cannot set up TLS (OpenSSL) for the PostgreSQL connection")?;
    Ok(MakeTlsConnector::new(connector))
}

/// Why the TLS handshake failed (the server's certificate refused, or TLS
/// itself), when the connection failed there and not before or after it.
fn tls_cause(error: &postgres::Error) -> Option<&native_tls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<native_tls::Error>() {
            return Some(tls);
        }
        cause = error.source();
    }
    None
}

/// Whether the server's certificate chain is checked: in the verify modes
/// and, as libpq, in any mode once `sslrootcert` names a file.
fn checks_chain(url: &PostgresUrl) -> bool {
    matches!(url.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) || url.root_cert.is_some()
}

/// What to do when the handshake failed with these settings.
fn tls_hint(url: &PostgresUrl) -> &'static str {
    if checks_chain(url) {
        " (the server's certificate was refused: give the CA that signed it with sslrootcert=PATH, and for \
         verify-full connect by a host name the certificate holds)"
    } else {
        " (the TLS handshake failed)"
    }
}

impl Store for PostgresStore {
    fn claim(&mut self, limit: usize, lease: Duration) -> anyhow::Result<Vec<Row>> {
        let table = &self.table;
        let sql = format!(
            "UPDATE {table} SET claimed_by = $1, claimed_until = now() + $2::bigint * interval '1 millisecond', \
             attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM {table} WHERE state = 'pending' \
             AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, order_id, items::text, attempts"
        );
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&sql, &[&self.claimer, &lease_ms, &limit])
            .with_context(|| format!("cannot claim rows of {table}"))?;
        let mut rows: Vec<Row> = rows
            .iter()
            .map(|r| Row {
                id: r.get(0),
                order_id: r.get(1),
                items: r.get(2),
                attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
            })
            .collect();
        // RETURNING comes in no promised order; oldest first is.
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    fn mark(&mut self, marks: &Marks) -> anyhow::Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let table = &self.table;
        let mut transaction = self.client.transaction().context("cannot begin the marking transaction")?;
        if !marks.confirmed.is_empty() {
            transaction.execute(
                &format!(
                    "UPDATE {table} SET state = 'confirmed', confirmed_at = now(), claimed_until = NULL \
                     WHERE id = ANY($1)"
                ),
                &[&marks.confirmed],
            )?;
        }
        for (id, reason) in &marks.rejected {
            transaction.execute(
                &format!("UPDATE {table} SET state = 'rejected', error = $2, claimed_until = NULL WHERE id = $1"),
                &[id, reason],
            )?;
        }
        if !marks.released.is_empty() {
            transaction.execute(
                &format!("UPDATE {table} SET claimed_by = NULL, claimed_until = NULL WHERE id = ANY($1)"),
                &[&marks.released],
            )?;
        }
        transaction.commit().with_context(|| format!("cannot mark rows of {table}"))
    }

    fn renew(&mut self, ids: &[i64], lease: Duration) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let table = &self.table;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.client
            .execute(
                &format!(
                    "UPDATE {table} SET claimed_until = now() + $2::bigint * interval '1 millisecond' \
                     WHERE id = ANY($1) AND state = 'pending' AND claimed_by = $3"
                ),
                &[&ids, &lease_ms, &self.claimer],
            )
            .with_context(|| format!("cannot renew claims on rows of {table}"))?;
        Ok(())
    }

    fn retire(&mut self, age: Duration, archive: Option<&str>, limit: usize) -> anyhow::Result<usize> {
        let table = &self.table;
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement, so one transaction: the rows deleted are the rows
        // copied. SKIP LOCKED: twin relays retire disjoint batches.
        let delete = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE state = 'confirmed' \
             AND confirmed_at <= now() - $1::bigint * interval '1 millisecond' \
             ORDER BY confirmed_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        );
        let sql = match archive {
            Some(archive) => format!(
                "WITH gone AS ({delete} RETURNING {COLUMNS}) INSERT INTO {archive} ({COLUMNS}) SELECT {COLUMNS} FROM gone"
            ),
            None => delete,
        };
        let removed = self
            .client
            .execute(&sql, &[&age_ms, &limit])
            .with_context(|| format!("cannot retire confirmed rows of {table}"))?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    fn lag(&mut self) -> anyhow::Result<Option<Duration>> {
        // The lowest pending id is the oldest pending row (ids grow with
        // inserts), found through the pending index without a scan.
        let sql = format!(
            "SELECT EXTRACT(EPOCH FROM (clock_timestamp() - created_at))::float8 FROM {} WHERE state = 'pending' \
             ORDER BY id LIMIT 1",
            self.table
        );
        let row = self.client.query_opt(&sql, &[]).context("cannot read the lag")?;
        Ok(row.map(|row| Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0))))
    }

    fn lease_end(&mut self) -> anyhow::Result<Option<Duration>> {
        let sql = format!(
            "SELECT EXTRACT(EPOCH FROM (MIN(claimed_until) - clock_timestamp()))::float8 FROM {} \
             WHERE state = 'pending'",
            self.table
        );
        let seconds: Option<f64> = self.client.query_one(&sql, &[]).context("cannot read the claims' leases")?.get(0);
        Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut notifications = self.client.notifications();
        // One notification is enough to look; drop the rest, they say the same.
        if notifications.timeout_iter(timeout).next().context("cannot wait for notifications")?.is_some() {
            while notifications.iter().next().context("cannot read notifications")?.is_some() {}
        }
        Ok(())
    }
}
