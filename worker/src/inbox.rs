//! The inbox: handle an order once in effect, although the broker may
//! deliver it more than once (at-least-once: a redelivery after a worker
//! died or missed its heartbeats, a relay resending after a crash).
//!
//! The handler records the order's key — (producer, order id) — in an
//! inbox table **in the same database transaction** as its business
//! change. The insert says whether the key is new; on a duplicate the
//! handler skips the work and still acknowledges. Both commit together or
//! not at all, so "applied" and "recorded" can never disagree.
//!
//! Features (both off by default, so the worker library compiles no
//! database client without them): `inbox-postgres` (the sync `postgres`
//! crate) and `inbox-sqlite` (`rusqlite`, bundled). The schema is printable
//! without either ([`Inbox::schema`]):
//!
//! ```sql
//! -- PostgreSQL
//! CREATE TABLE IF NOT EXISTS orderly_inbox (
//!     producer text NOT NULL,
//!     order_id text NOT NULL,
//!     processed_at timestamptz NOT NULL DEFAULT now(),
//!     PRIMARY KEY (producer, order_id)
//! );
//! -- SQLite: processed_at is Unix milliseconds
//! ```
//!
//! A handler (PostgreSQL; SQLite is the same with `rusqlite` and
//! `Inbox::once_sqlite`):
//!
//! ```no_run
//! # #[cfg(feature = "inbox-postgres")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use orderly_common::protocol::Dispatch;
//! use orderly_worker::core::Failure;
//! use orderly_worker::inbox::Inbox;
//!
//! let inbox = Inbox::default(); // table orderly_inbox
//! let handle = |client: &mut postgres::Client, order: &Dispatch| -> Result<(), Failure> {
//!     let mut tx = client.transaction().map_err(|e| Failure::retry(e.to_string()))?;
//!     let applied = inbox.once_postgres(&mut tx, &order.order, |tx| {
//!         tx.execute("UPDATE stock SET qty = qty - 1 WHERE sku = 'a'", &[])?;
//!         Ok::<_, Failure>(())
//!     })?;
//!     if applied.is_none() {
//!         println!("{} seen before: skipped", order.order.id);
//!     }
//!     tx.commit().map_err(|e| Failure::retry(e.to_string()))
//! };
//! # let _ = handle;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "inbox-postgres"))]
//! # fn main() {}
//! ```
//!
//! Concurrency: the same order can run on two workers at once (the broker
//! redelivers it while the first worker is still busy, e.g. after missed
//! heartbeats). On PostgreSQL (READ COMMITTED, the default) the second
//! worker's insert **waits** on the first transaction's uncommitted key;
//! when the first commits it sees the conflict and skips, when the first
//! rolls back it inserts and does the work. Under REPEATABLE READ or
//! SERIALIZABLE the second fails with a serialization error instead
//! (SQLSTATE 40001): retry the order ([`InboxError`] converts to a
//! retryable [`Failure`]). On SQLite writers are serialised by the database
//! lock: begin the handler's transaction with
//! `TransactionBehavior::Immediate` so it takes the write lock first
//! (a deferred transaction upgrading from a read may get `SQLITE_BUSY`
//! without waiting), and set a busy timeout.
//!
//! Keys stay in the table: the broker's dedup window and redeliveries
//! have no end an inbox could rely on. Delete old rows by `processed_at`
//! only after any redelivery is impossible (e.g. well past the broker's
//! retention of the order).

#[cfg(any(feature = "inbox-postgres", feature = "inbox-sqlite"))]
use orderly_common::OrderKey;

use crate::core::Failure;

/// The inbox table's default name.
pub const TABLE_DEFAULT: &str = "orderly_inbox";
/// Longest table name accepted: PostgreSQL's identifier limit
/// (NAMEDATALEN - 1).
pub const TABLE_NAME_BYTES_MAX: usize = 63;

/// A database the inbox speaks to; the SQL differs a little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// What went wrong in the inbox.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The table name would be interpolated into SQL, so only plain
    /// lower-case identifiers are accepted.
    #[error(
        "inbox table name {0:?} is not a plain identifier: use lower-case letters, digits and _, \
         starting with a letter or _, at most {TABLE_NAME_BYTES_MAX} bytes (e.g. orderly_inbox)"
    )]
    BadTable(String),
    #[cfg(feature = "inbox-postgres")]
    #[error("inbox on PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[cfg(feature = "inbox-sqlite")]
    #[error("inbox on SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A database error is usually passing (a lost connection, a lock, a
/// serialization conflict): the order is retried, and the inbox makes the
/// retry safe.
impl From<InboxError> for Failure {
    fn from(error: InboxError) -> Failure {
        match error {
            InboxError::BadTable(_) => Failure::cannot_run(error.to_string()),
            #[allow(unreachable_patterns)]
            _ => Failure::retry(error.to_string()),
        }
    }
}

/// The inbox of one table: prepared SQL for each dialect.
#[derive(Debug, Clone)]
pub struct Inbox {
    table: String,
    claim_postgres: String,
    claim_sqlite: String,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox::new(TABLE_DEFAULT).expect("the default table name is valid")
    }
}

impl Inbox {
    /// An inbox on `table`, which must be `[a-z_][a-z0-9_]*` (at most
    /// [`TABLE_NAME_BYTES_MAX`] bytes), since it is interpolated into SQL.
    pub fn new(table: &str) -> Result<Inbox, InboxError> {
        if !valid_table(table) {
            return Err(InboxError::BadTable(table.to_owned()));
        }
        Ok(Inbox {
            table: table.to_owned(),
            claim_postgres: format!(
                "INSERT INTO {table} (producer, order_id) VALUES ($1, $2) ON CONFLICT (producer, order_id) DO NOTHING"
            ),
            claim_sqlite: format!(
                "INSERT INTO {table} (producer, order_id) VALUES (?1, ?2) ON CONFLICT (producer, order_id) DO NOTHING"
            ),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The claim statement, for a client this module has no feature for
    /// (tokio-postgres, sqlx, ...): bind the producer and the order id; one
    /// row affected means the first time, none a duplicate.
    pub fn claim_sql(&self, dialect: Dialect) -> &str {
        match dialect {
            Dialect::Postgres => &self.claim_postgres,
            Dialect::Sqlite => &self.claim_sqlite,
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for this inbox, to run once before the
    /// first order (or to put in the application's migrations).
    pub fn schema(&self, dialect: Dialect) -> String {
        let table = &self.table;
        let processed_at = match dialect {
            Dialect::Postgres => "processed_at timestamptz NOT NULL DEFAULT now()",
            // Unix ms; `julianday` because `unixepoch('subsec')` needs
            // SQLite 3.42 (as the relay's outbox schema).
            Dialect::Sqlite => {
                "processed_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"
            }
        };
        format!(
            "-- orderly inbox: one row per order handled, written in the handler's transaction.\n\
             CREATE TABLE IF NOT EXISTS {table} (\n    \
                 producer text NOT NULL,\n    \
                 order_id text NOT NULL,\n    \
                 {processed_at},\n    \
                 PRIMARY KEY (producer, order_id)\n\
             );\n"
        )
    }

    /// Records `order` in the inbox inside the caller's transaction `tx`:
    /// true the first time, false when it is already there (skip the
    /// work). Waits while another open transaction holds the same key.
    #[cfg(feature = "inbox-postgres")]
    pub fn claim_postgres(&self, tx: &mut postgres::Transaction<'_>, order: &OrderKey) -> Result<bool, InboxError> {
        let inserted = tx.execute(self.claim_postgres.as_str(), &[&order.producer, &order.id])?;
        Ok(inserted == 1)
    }

    /// Runs `work` on `tx` only if `order` is new to the inbox:
    /// `Some(result)` then, `None` for a duplicate. An error from `work`
    /// is returned as is; the caller rolls back (dropping `tx` does), so
    /// the key is not recorded either.
    #[cfg(feature = "inbox-postgres")]
    pub fn once_postgres<T, E: From<InboxError>>(
        &self,
        tx: &mut postgres::Transaction<'_>,
        order: &OrderKey,
        work: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if !self.claim_postgres(tx, order)? {
            return Ok(None);
        }
        work(tx).map(Some)
    }

    /// `Inbox::claim_postgres` for SQLite: true the first time, false
    /// for a duplicate.
    #[cfg(feature = "inbox-sqlite")]
    pub fn claim_sqlite(&self, tx: &rusqlite::Transaction<'_>, order: &OrderKey) -> Result<bool, InboxError> {
        let inserted = tx.prepare_cached(&self.claim_sqlite)?.execute((&order.producer, &order.id))?;
        Ok(inserted == 1)
    }

    /// `Inbox::once_postgres` for SQLite.
    #[cfg(feature = "inbox-sqlite")]
    pub fn once_sqlite<T, E: From<InboxError>>(
        &self,
        tx: &rusqlite::Transaction<'_>,
        order: &OrderKey,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if !self.claim_sqlite(tx, order)? {
            return Ok(None);
        }
        work(tx).map(Some)
    }
}

/// Errors of the database clients convert to a retryable [`Failure`], so
/// `?` works in a handler's closures.
#[cfg(feature = "inbox-postgres")]
impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Failure {
        Failure::retry(format!("PostgreSQL: {error}"))
    }
}

#[cfg(feature = "inbox-sqlite")]
impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Failure {
        Failure::retry(format!("SQLite: {error}"))
    }
}

/// `[a-z_][a-z0-9_]*`, at most [`TABLE_NAME_BYTES_MAX`] bytes.
fn valid_table(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= TABLE_NAME_BYTES_MAX
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(Inbox::new("orderly_inbox").is_ok());
        assert!(Inbox::new("_x9").is_ok());
        for bad in ["", "9a", "Inbox", "a-b", "a;drop table x", "a b", &"a".repeat(TABLE_NAME_BYTES_MAX + 1)] {
            let error = Inbox::new(bad).unwrap_err();
            assert!(error.to_string().contains("not a plain identifier"), "{bad:?}: {error}");
        }
        assert!(Inbox::new(&"a".repeat(TABLE_NAME_BYTES_MAX)).is_ok());
    }

    #[test]
    fn schemas_name_the_table_and_key() {
        let inbox = Inbox::new("my_inbox").unwrap();
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let schema = inbox.schema(dialect);
            assert!(schema.contains("CREATE TABLE IF NOT EXISTS my_inbox ("), "{schema}");
            assert!(schema.contains("PRIMARY KEY (producer, order_id)"), "{schema}");
        }
        assert!(inbox.schema(Dialect::Postgres).contains("timestamptz"));
        assert!(inbox.schema(Dialect::Sqlite).contains("julianday"));
        assert!(inbox
            .claim_sql(Dialect::Postgres)
            .contains("VALUES ($1, $2) ON CONFLICT (producer, order_id) DO NOTHING"));
        assert!(inbox
            .claim_sql(Dialect::Sqlite)
            .starts_with("INSERT INTO my_inbox (producer, order_id) VALUES (?1, ?2)"));
    }

    #[test]
    fn a_bad_table_cannot_run() {
        let failure: Failure = InboxError::BadTable("X".into()).into();
        assert!(failure.cannot_run);
    }
}
