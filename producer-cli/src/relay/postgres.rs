//! The outbox in PostgreSQL (`postgres://…`). Claims lock their rows with
//! `FOR UPDATE SKIP LOCKED`, so relays on one table never wait on each
//! other; the schema's trigger NOTIFYs on insert, so an idle relay wakes
//! at the commit instead of at its next poll.

use std::time::Duration;

use anyhow::Context;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use super::core::{Marks, Row};
use super::store::{Store, COLUMNS};

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
        // The URL may hold a password: it is not repeated in the error.
        let mut client =
            Client::connect(url, NoTls).context("cannot connect to the PostgreSQL database of --database")?;
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
