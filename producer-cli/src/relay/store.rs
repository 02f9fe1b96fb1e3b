//! The outbox table: where it lives (`--database`), its schema in each
//! dialect, and what the relay asks of it ([`Store`]).

use std::path::PathBuf;
use std::time::Duration;

use super::core::{Marks, Row};

/// Longest table name: PostgreSQL's identifier limit (63 bytes).
const TABLE_NAME_BYTES_MAX: usize = 63;

/// The database a `--database` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// `sqlite:PATH` (or `sqlite://PATH`): a file on this host.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`: handed to the driver as given.
    Postgres(String),
}

impl Database {
    /// Parses `--database`; the error says which forms are understood.
    pub(crate) fn parse(url: &str) -> Result<Database, String> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(format!("{url:?} names no file: write sqlite:/var/lib/shop/app.db"));
            }
            return Ok(Database::Sqlite(path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Checked now, so a bad sslmode is bad usage before anything runs.
            PostgresUrl::parse(url)?;
            return Ok(Database::Postgres(url.to_owned()));
        }
        Err(format!(
            "{url:?} is not a database URL this relay knows: write sqlite:PATH or postgres://USER@HOST:PORT/DBNAME"
        ))
    }

    /// The SQL that creates the outbox table (and, for PostgreSQL, the
    /// trigger that wakes relays), and the archive table when one is given,
    /// in this database's dialect.
    pub(crate) fn schema(&self, table: &str, archive: Option<&str>) -> String {
        let (mut sql, types) = match self {
            Database::Sqlite(_) => (sqlite_schema(table), ArchiveTypes::SQLITE),
            Database::Postgres(_) => (postgres_schema(table), ArchiveTypes::POSTGRES),
        };
        if let Some(archive) = archive {
            sql.push_str(&archive_schema(table, archive, &types));
        }
        sql
    }
}

/// How the relay uses TLS to PostgreSQL: libpq's `sslmode`, with libpq's
/// meanings and default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else (or when the handshake fails)
    /// without.
    #[default]
    Prefer,
    /// TLS or nothing; the server's certificate is not checked (unless
    /// `sslrootcert` is given, as libpq): safe from eavesdropping, not from
    /// impersonation.
    Require,
    /// TLS, the certificate's chain checked against `sslrootcert` (or the
    /// system's roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host of the URL.
    VerifyFull,
}

impl SslMode {
    /// The value as written in the URL (for the log).
    #[cfg_attr(not(feature = "outbox-postgres"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        let mode = match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err("sslmode=allow is not supported: write sslmode=prefer (TLS when the server offers it) \
                            or sslmode=disable"
                    .into())
            }
            _ => {
                return Err(format!(
                    "sslmode={value} is not an sslmode: write sslmode=disable, prefer (the default), require, \
                     verify-ca or verify-full"
                ))
            }
        };
        Ok(mode)
    }
}

/// A `postgres://` URL split into what the driver reads and the TLS
/// settings the relay applies itself: the driver knows `sslmode` only up to
/// `require`, and no `sslrootcert` (it refuses unknown parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostgresUrl {
    /// The URL without `sslmode` and `sslrootcert`, for the driver.
    pub(crate) driver_url: String,
    pub(crate) ssl_mode: SslMode,
    /// `sslrootcert=PATH`: the CA certificates (PEM) a server's chain must
    /// lead to; `None` (or `sslrootcert=system`): the system's roots.
    pub(crate) root_cert: Option<PathBuf>,
}

impl PostgresUrl {
    /// Parses the query's `sslmode` and `sslrootcert` (percent-decoded, as
    /// the driver decodes the rest); the last of a repeated parameter wins,
    /// as in the driver. Reads no file.
    pub(crate) fn parse(url: &str) -> Result<PostgresUrl, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut ssl_mode, mut root_cert) = (SslMode::default(), None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the value of {key} in --database is not UTF-8 once percent-decoded"))?;
            match key {
                "sslmode" => ssl_mode = SslMode::parse(&value)?,
                "sslrootcert" if value.is_empty() => {
                    return Err("sslrootcert= names no file: write sslrootcert=/etc/ssl/private-ca.pem (the \
                                CA that signed the server's certificate, PEM) or sslrootcert=system"
                        .into())
                }
                "sslrootcert" if value == "system" => root_cert = None,
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                _ => kept.push(pair),
            }
        }
        let driver_url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        Ok(PostgresUrl { driver_url, ssl_mode, root_cert })
    }
}

/// Every column of the outbox, in one order: what `--archive-table` copies.
pub(crate) const COLUMNS: &str =
    "id, order_id, items, created_at, state, claimed_by, claimed_until, attempts, confirmed_at, error";

/// Column types of the archive table, per dialect.
struct ArchiveTypes {
    id: &'static str,
    text: &'static str,
    items: &'static str,
    time: &'static str,
}

impl ArchiveTypes {
    const SQLITE: ArchiveTypes = ArchiveTypes { id: "INTEGER", text: "TEXT", items: "TEXT", time: "INTEGER" };
    const POSTGRES: ArchiveTypes = ArchiveTypes { id: "bigint", text: "text", items: "jsonb", time: "timestamptz" };
}

/// The archive: the outbox's columns (same names, order and meaning), no
/// defaults, checks or trigger; nothing reads it but the operator.
fn archive_schema(table: &str, archive: &str, types: &ArchiveTypes) -> String {
    let ArchiveTypes { id, text, items, time } = types;
    format!(
        "-- Confirmed rows of {table} older than --retention are moved here (--archive-table {archive}).\n\
         CREATE TABLE IF NOT EXISTS {archive} (\n\
         \x20   id {id} PRIMARY KEY,\n\
         \x20   order_id {text} NOT NULL,\n\
         \x20   items {items} NOT NULL,\n\
         \x20   created_at {time} NOT NULL,\n\
         \x20   state {text} NOT NULL,\n\
         \x20   claimed_by {text},\n\
         \x20   claimed_until {time},\n\
         \x20   attempts integer NOT NULL,\n\
         \x20   confirmed_at {time},\n\
         \x20   error {text}\n\
         );\n"
    )
}

/// `--table`: interpolated into SQL, so only a plain identifier is taken.
pub(crate) fn validate_table(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || name.len() > TABLE_NAME_BYTES_MAX
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "{name:?} is not a table name the relay takes: 1 to {TABLE_NAME_BYTES_MAX} of a-z, 0-9 and _, not \
             starting with a digit (e.g. orderly_outbox)"
        ));
    }
    Ok(name.to_owned())
}

/// The application writes `order_id` and `items`; every other column is
/// the relay's. Times are Unix milliseconds (SQLite has no time type),
/// computed with `julianday`: the application's SQLite may predate
/// `unixepoch('subsec')` (3.42; Debian 12 ships 3.40), where it is NULL.
fn sqlite_schema(table: &str) -> String {
    format!(
        "-- The orderly outbox (SQLite). Applications write only:\n\
         --   INSERT INTO {table} (order_id, items) VALUES ('order-1', '[{{\"sku\": \"A1\"}}]');\n\
         -- in the same transaction as their own change. The other columns belong to `orderly-producer relay`.\n\
         CREATE TABLE IF NOT EXISTS {table} (\n\
         \x20   id INTEGER PRIMARY KEY AUTOINCREMENT,\n\
         \x20   order_id TEXT NOT NULL,\n\
         \x20   items TEXT NOT NULL CHECK (json_valid(items) AND json_type(items) = 'array'),\n\
         \x20   created_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),\n\
         \x20   state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed', 'rejected')),\n\
         \x20   claimed_by TEXT,\n\
         \x20   claimed_until INTEGER,\n\
         \x20   attempts INTEGER NOT NULL DEFAULT 0,\n\
         \x20   confirmed_at INTEGER,\n\
         \x20   error TEXT\n\
         );\n\
         CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE state = 'pending';\n\
         CREATE INDEX IF NOT EXISTS {table}_confirmed ON {table} (confirmed_at) WHERE state = 'confirmed';\n"
    )
}

/// As [`sqlite_schema`], plus a statement trigger that NOTIFYs channel
/// `{table}` so relays wake on commit instead of at their next poll.
fn postgres_schema(table: &str) -> String {
    format!(
        "-- The orderly outbox (PostgreSQL). Applications write only:\n\
         --   INSERT INTO {table} (order_id, items) VALUES ('order-1', '[{{\"sku\": \"A1\"}}]');\n\
         -- in the same transaction as their own change. The other columns belong to `orderly-producer relay`.\n\
         CREATE TABLE IF NOT EXISTS {table} (\n\
         \x20   id bigserial PRIMARY KEY,\n\
         \x20   order_id text NOT NULL,\n\
         \x20   items jsonb NOT NULL CHECK (jsonb_typeof(items) = 'array'),\n\
         \x20   created_at timestamptz NOT NULL DEFAULT clock_timestamp(),\n\
         \x20   state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed', 'rejected')),\n\
         \x20   claimed_by text,\n\
         \x20   claimed_until timestamptz,\n\
         \x20   attempts integer NOT NULL DEFAULT 0,\n\
         \x20   confirmed_at timestamptz,\n\
         \x20   error text\n\
         );\n\
         CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (id) WHERE state = 'pending';\n\
         CREATE INDEX IF NOT EXISTS {table}_confirmed ON {table} (confirmed_at) WHERE state = 'confirmed';\n\
         CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         BEGIN\n\
         \x20   PERFORM pg_notify('{table}', '');\n\
         \x20   RETURN NULL;\n\
         END\n\
         $$;\n\
         CREATE OR REPLACE TRIGGER {table}_notify AFTER INSERT ON {table}\n\
         \x20   FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();\n"
    )
}

/// What the relay needs from an outbox table. Every call is one short
/// transaction: nothing is held open between calls.
pub(crate) trait Store {
    /// Claims up to `limit` pending rows, oldest first, whose claim is
    /// free or has run out, for `lease`.
    fn claim(&mut self, limit: usize, lease: Duration) -> anyhow::Result<Vec<Row>>;
    /// Writes what answers and bad rows decided.
    fn mark(&mut self, marks: &Marks) -> anyhow::Result<()>;
    /// Extends to `lease` from now the claims of these rows, where this
    /// relay still holds them (pending, claimed by it): rows waiting for a
    /// slow broker are not claimed and resent by a twin relay.
    fn renew(&mut self, ids: &[i64], lease: Duration) -> anyhow::Result<()>;
    /// Deletes up to `limit` rows confirmed more than `age` ago, oldest
    /// first, or moves them into `archive` (copy and delete in one
    /// transaction). Returns the rows removed.
    fn retire(&mut self, age: Duration, archive: Option<&str>, limit: usize) -> anyhow::Result<usize>;
    /// Age of the oldest pending row (the relay's lag); `None` when none.
    fn lag(&mut self) -> anyhow::Result<Option<Duration>>;
    /// Until the first claim on a pending row runs out (zero if one has):
    /// an idle relay looks again then, to take over a dead relay's rows.
    /// `None` when no pending row is claimed.
    fn lease_end(&mut self) -> anyhow::Result<Option<Duration>>;
    /// Waits up to `timeout` for new rows (a notification where the
    /// database has them, a plain sleep otherwise).
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_database_or_say_what_is_understood() {
        assert_eq!(Database::parse("sqlite:/tmp/a.db"), Ok(Database::Sqlite("/tmp/a.db".into())));
        assert_eq!(Database::parse("sqlite:///tmp/a.db"), Ok(Database::Sqlite("/tmp/a.db".into())));
        assert!(matches!(Database::parse("postgres://u@h/db"), Ok(Database::Postgres(_))));
        let error = Database::parse("mysql://h/db").unwrap_err();
        assert!(error.contains("sqlite:PATH") && error.contains("postgres://"), "{error}");
        assert!(Database::parse("sqlite:").unwrap_err().contains("names no file"));
    }

    #[test]
    fn postgres_urls_take_libpq_sslmodes_and_a_root_certificate() {
        let url = PostgresUrl::parse("postgres://u@h:5/db").unwrap();
        assert_eq!(
            (url.driver_url.as_str(), url.ssl_mode, url.root_cert),
            ("postgres://u@h:5/db", SslMode::Prefer, None)
        );
        let url = PostgresUrl::parse(
            "postgresql://u@h/db?application_name=a&sslmode=verify-full&sslrootcert=/etc/my%20ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(url.driver_url, "postgresql://u@h/db?application_name=a&connect_timeout=5");
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url = PostgresUrl::parse(&format!("postgres://h/db?sslmode={mode}")).unwrap();
            assert_eq!((url.ssl_mode.as_str(), url.driver_url.as_str()), (mode, "postgres://h/db"));
        }
        let url = PostgresUrl::parse("postgres://h/db?sslrootcert=system&sslmode=require&sslmode=verify-ca").unwrap();
        assert_eq!((url.ssl_mode, url.root_cert), (SslMode::VerifyCa, None));
        for (bad, says) in [
            ("postgres://h/db?sslmode=verify_full", "write sslmode=disable, prefer"),
            ("postgres://h/db?sslmode=", "write sslmode=disable, prefer"),
            ("postgres://h/db?sslmode=allow", "write sslmode=prefer"),
            ("postgres://h/db?sslrootcert=", "write sslrootcert=/"),
        ] {
            let error = PostgresUrl::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
            assert_eq!(Database::parse(bad), Err(error));
        }
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(validate_table("orderly_outbox").is_ok());
        for bad in ["", "1abc", "a-b", "a; DROP TABLE x", "Outbox", &"a".repeat(64)] {
            assert!(validate_table(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_dialect_has_the_application_columns() {
        for database in [Database::Sqlite("x".into()), Database::Postgres("postgres://x".into())] {
            let sql = database.schema("t_out", None);
            assert!(sql.contains("CREATE TABLE IF NOT EXISTS t_out") && sql.contains("order_id"), "{sql}");
        }
        assert!(Database::Postgres(String::new()).schema("t", None).contains("items jsonb"));
        assert!(Database::Postgres(String::new()).schema("t", None).contains("pg_notify('t'"));
        for database in [Database::Sqlite("x".into()), Database::Postgres("postgres://x".into())] {
            let sql = database.schema("t_out", Some("t_old"));
            assert!(
                sql.contains("CREATE TABLE IF NOT EXISTS t_old") && !database.schema("t_out", None).contains("t_old")
            );
            // Every outbox column is in the archive, so INSERT … SELECT COLUMNS fits.
            let archive = &sql[sql.find("TABLE IF NOT EXISTS t_old").unwrap()..];
            for column in COLUMNS.split(", ") {
                assert!(archive.contains(&format!("\n    {column} ")), "{column} missing from {archive}");
            }
        }
    }
}
