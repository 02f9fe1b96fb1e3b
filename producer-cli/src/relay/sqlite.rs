//! The outbox in SQLite (`sqlite:PATH`), for single-host applications.
//! SQLite has one writer at a time, so a claim is one `UPDATE … RETURNING`
//! and needs no row locks; several relays on one file take turns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::core::{Marks, Row};
use super::store::{Store, COLUMNS};

/// How long a statement waits for the application's write transaction to
/// end before failing (SQLITE_BUSY).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SqliteStore {
    connection: Connection,
    table: String,
    /// Written into `claimed_by`: which relay process holds a claim.
    claimer: String,
}

impl SqliteStore {
    /// Opens an existing database holding `table` (and `archive`, when
    /// given); the error says how to create a missing one.
    pub(crate) fn open(path: &str, table: &str, archive: Option<&str>, claimer: String) -> anyhow::Result<SqliteStore> {
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .with_context(|| format!("cannot open the SQLite database {path}"))?;
        connection.busy_timeout(BUSY_TIMEOUT).context("cannot set the SQLite busy timeout")?;
        for name in std::iter::once(table).chain(archive) {
            let exists: bool = connection
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                    [name],
                    |r| r.get(0),
                )
                .with_context(|| format!("cannot read the schema of {path}"))?;
            if !exists {
                let archive_flag = archive.map(|a| format!(" --archive-table {a}")).unwrap_or_default();
                anyhow::bail!(
                    "the SQLite database {path} has no table {name}: create it with `orderly-producer relay \
                     --print-schema --database sqlite:{path} --table {table}{archive_flag} | sqlite3 {path}`"
                );
            }
        }
        Ok(SqliteStore { connection, table: table.to_owned(), claimer })
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn claim(&mut self, limit: usize, lease: Duration) -> anyhow::Result<Vec<Row>> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let table = &self.table;
        let sql = format!(
            "UPDATE {table} SET claimed_by = ?1, claimed_until = ?2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM {table} WHERE state = 'pending' \
             AND (claimed_until IS NULL OR claimed_until < ?3) ORDER BY id LIMIT ?4) \
             RETURNING id, order_id, items, attempts"
        );
        let mut statement = self.connection.prepare_cached(&sql).context("cannot prepare the claim")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = statement
            .query_map(params![self.claimer, until, now, limit], |r| {
                Ok(Row { id: r.get(0)?, order_id: r.get(1)?, items: r.get(2)?, attempts: r.get(3)? })
            })
            .and_then(|rows| rows.collect::<Result<Vec<Row>, _>>())
            .with_context(|| format!("cannot claim rows of {table}"))?;
        // RETURNING comes in no promised order; oldest first is.
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    fn mark(&mut self, marks: &Marks) -> anyhow::Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let table = &self.table;
        let now = now_ms();
        let transaction = self.connection.transaction().context("cannot begin the marking transaction")?;
        {
            let mut confirm = transaction.prepare_cached(&format!(
                "UPDATE {table} SET state = 'confirmed', confirmed_at = ?2, claimed_until = NULL WHERE id = ?1"
            ))?;
            for id in &marks.confirmed {
                confirm.execute(params![id, now])?;
            }
            let mut reject = transaction.prepare_cached(&format!(
                "UPDATE {table} SET state = 'rejected', error = ?2, claimed_until = NULL WHERE id = ?1"
            ))?;
            for (id, reason) in &marks.rejected {
                reject.execute(params![id, reason])?;
            }
            let mut release = transaction
                .prepare_cached(&format!("UPDATE {table} SET claimed_by = NULL, claimed_until = NULL WHERE id = ?1"))?;
            for id in &marks.released {
                release.execute(params![id])?;
            }
        }
        transaction.commit().with_context(|| format!("cannot mark rows of {table}"))
    }

    fn renew(&mut self, ids: &[i64], lease: Duration) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let table = &self.table;
        let transaction = self.connection.transaction().context("cannot begin the renewal transaction")?;
        {
            let mut renew = transaction.prepare_cached(&format!(
                "UPDATE {table} SET claimed_until = ?2 WHERE id = ?1 AND state = 'pending' AND claimed_by = ?3"
            ))?;
            for id in ids {
                renew.execute(params![id, until, self.claimer])?;
            }
        }
        transaction.commit().with_context(|| format!("cannot renew claims on rows of {table}"))
    }

    fn retire(&mut self, age: Duration, archive: Option<&str>, limit: usize) -> anyhow::Result<usize> {
        let table = &self.table;
        let before = now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let chosen = format!(
            "SELECT id FROM {table} WHERE state = 'confirmed' AND confirmed_at <= ?1 ORDER BY confirmed_at LIMIT ?2"
        );
        // IMMEDIATE: the write lock from the start, so the copy and the
        // delete choose the same rows.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("cannot begin the retention transaction")?;
        if let Some(archive) = archive {
            transaction
                .execute(
                    &format!("INSERT INTO {archive} ({COLUMNS}) SELECT {COLUMNS} FROM {table} WHERE id IN ({chosen})"),
                    params![before, limit],
                )
                .with_context(|| format!("cannot copy confirmed rows of {table} into {archive}"))?;
        }
        let removed = transaction
            .execute(&format!("DELETE FROM {table} WHERE id IN ({chosen})"), params![before, limit])
            .with_context(|| format!("cannot delete confirmed rows of {table}"))?;
        transaction.commit().with_context(|| format!("cannot commit the retention of {table}"))?;
        Ok(removed)
    }

    fn lag(&mut self) -> anyhow::Result<Option<Duration>> {
        // The lowest pending id is the oldest pending row (ids grow with
        // inserts), found through the pending index without a scan.
        let sql = format!("SELECT created_at FROM {} WHERE state = 'pending' ORDER BY id LIMIT 1", self.table);
        let oldest: Option<i64> =
            self.connection.query_row(&sql, [], |r| r.get(0)).optional().context("cannot read the lag")?;
        Ok(oldest.map(|created| Duration::from_millis(u64::try_from(now_ms() - created).unwrap_or(0))))
    }

    fn lease_end(&mut self) -> anyhow::Result<Option<Duration>> {
        let sql = format!("SELECT MIN(claimed_until) FROM {} WHERE state = 'pending'", self.table);
        let until: Option<i64> =
            self.connection.query_row(&sql, [], |r| r.get(0)).context("cannot read the claims' leases")?;
        Ok(until.map(|until| Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0))))
    }

    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        // SQLite cannot tell another process's commit: poll.
        std::thread::sleep(timeout);
        Ok(())
    }
}
