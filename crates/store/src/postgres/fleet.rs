//! Fleet rollouts' records on PostgreSQL: opaque JSON under keys kas
//! chooses, listed and taken by key prefix as a range of the primary key
//! (a "C" collation column, see `rules::prefix_end`), so that a listing
//! reads only its own keys and no character of a prefix is a wildcard.

use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::{PgStore, all, db};
use crate::Result;
use crate::model::*;
use crate::rules;

fn fleet_row(r: &PgRow) -> sqlx::Result<FleetRecord> {
    Ok(FleetRecord {
        key: r.try_get("key")?,
        value: r.try_get("value")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The keys that start with a prefix: `$1` the prefix and, when `end` is
/// there, `$2` where they end; and the number of parameters it takes.
fn in_prefix(end: &Option<String>) -> (&'static str, usize) {
    match end {
        Some(_) => ("key >= $1 AND key < $2", 2),
        None => ("key >= $1", 1),
    }
}

impl PgStore {
    pub(super) async fn put_fleet_record_impl(&self, record: FleetRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO fleet_records (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .bind(&record.key)
        .bind(&record.value)
        .bind(record.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(super) async fn fleet_records_impl(&self, prefix: &str) -> Result<Vec<FleetRecord>> {
        let end = rules::prefix_end(prefix);
        let (condition, _) = in_prefix(&end);
        let sql = format!(
            "SELECT key, value, updated_at FROM fleet_records WHERE {condition} ORDER BY key"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(prefix);
        if let Some(end) = end {
            query = query.bind(end);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        all(rows, fleet_row)
    }

    pub(super) async fn fleet_record_impl(&self, key: &str) -> Result<Option<FleetRecord>> {
        let row = sqlx::query("SELECT key, value, updated_at FROM fleet_records WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(fleet_row).transpose().map_err(db)
    }

    pub(super) async fn delete_fleet_record_impl(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM fleet_records WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(super) async fn take_fleet_records_impl(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<FleetRecord>> {
        let end = rules::prefix_end(prefix);
        let (condition, used) = in_prefix(&end);
        // Rows another replica is taking are locked: skipped, not waited
        // for, and never returned twice. One statement, one transaction.
        let sql = format!(
            "DELETE FROM fleet_records WHERE key IN
               (SELECT key FROM fleet_records WHERE {condition}
                ORDER BY key LIMIT ${} FOR UPDATE SKIP LOCKED)
             RETURNING key, value, updated_at",
            used + 1
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(prefix);
        if let Some(end) = end {
            query = query.bind(end);
        }
        let rows = query
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut taken = all(rows, fleet_row)?;
        // RETURNING gives rows in no promised order; "C" orders as bytes do.
        taken.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(taken)
    }
}
