//! The outbox in PostgreSQL (`postgres://…`). Claims lock their rows with
//! `FOR UPDATE SKIP LOCKED`, so relays on one table never wait on each
//! other; the schema's trigger NOTIFYs on insert, so an idle relay wakes
//! at the commit instead of at its next poll.

use std::time::Duration;

use anyhow::Context;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use super::core::{Marks, Row};
use super::store::Store;

pub(crate) struct PostgresStore {
    client: Client,
    table: String,
    /// Written into `claimed_by`: which relay process holds a claim.
    claimer: String,
}

impl PostgresStore {
    /// Connects, checks that `table` exists (the error says how to create
    /// it) and LISTENs on its channel.
    pub(crate) fn open(url: &str, table: &str, claimer: String) -> anyhow::Result<PostgresStore> {
        // The URL may hold a password: it is not repeated in the error.
        let mut client =
            Client::connect(url, NoTls).context("cannot connect to the PostgreSQL database of --database")?;
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .context("cannot read the database's schema")?
            .get(0);
        if !exists {
            anyhow::bail!(
                "the PostgreSQL database has no table {table}: create it with `orderly-producer relay --print-schema \
                 --table {table} | psql URL`"
            );
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
             RETURNING id, order_id, items::text"
        );
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&sql, &[&self.claimer, &lease_ms, &limit])
            .with_context(|| format!("cannot claim rows of {table}"))?;
        let mut rows: Vec<Row> =
            rows.iter().map(|r| Row { id: r.get(0), order_id: r.get(1), items: r.get(2) }).collect();
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

    fn lag(&mut self) -> anyhow::Result<Option<Duration>> {
        let sql = format!(
            "SELECT EXTRACT(EPOCH FROM (clock_timestamp() - MIN(created_at)))::float8 FROM {} WHERE state = 'pending'",
            self.table
        );
        let seconds: Option<f64> = self.client.query_one(&sql, &[]).context("cannot read the lag")?.get(0);
        Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
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
