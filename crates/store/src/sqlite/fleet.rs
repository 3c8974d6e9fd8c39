//! Fleet rollouts' records on SQLite: opaque JSON under keys kas chooses,
//! listed and taken by key prefix as a range of the primary key (see
//! `rules::prefix_end`), so that a listing reads only its own keys and no
//! character of a prefix is a wildcard.

use rusqlite::params;
use rusqlite::types::Value;

use super::{SqliteStore, db, query_all, query_one};
use crate::Result;
use crate::model::*;
use crate::rules;

const FLEET_COLUMNS: &str = "key, value, updated_at";

fn fleet_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FleetRecord> {
    Ok(FleetRecord {
        key: r.get(0)?,
        value: r.get(1)?,
        updated_at: r.get(2)?,
    })
}

/// The condition on `key` that holds for the keys starting with `prefix`,
/// and its parameters (anonymous `?`, in order).
fn in_prefix(prefix: &str) -> (&'static str, Vec<Value>) {
    let start = Value::Text(prefix.to_owned());
    match rules::prefix_end(prefix) {
        Some(end) => ("key >= ? AND key < ?", vec![start, Value::Text(end)]),
        None => ("key >= ?", vec![start]),
    }
}

impl SqliteStore {
    pub(super) async fn put_fleet_record_impl(&self, record: FleetRecord) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO fleet_records (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![record.key, record.value, record.updated_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn fleet_records_impl(&self, prefix: &str) -> Result<Vec<FleetRecord>> {
        let (condition, params) = in_prefix(prefix);
        self.call(move |c| {
            let sql =
                format!("SELECT {FLEET_COLUMNS} FROM fleet_records WHERE {condition} ORDER BY key");
            query_all(c, &sql, rusqlite::params_from_iter(params), fleet_row)
        })
        .await
    }

    pub(super) async fn fleet_record_impl(&self, key: &str) -> Result<Option<FleetRecord>> {
        let key = key.to_owned();
        self.call(move |c| {
            let sql = format!("SELECT {FLEET_COLUMNS} FROM fleet_records WHERE key = ?1");
            query_one(c, &sql, [key], fleet_row)
        })
        .await
    }

    pub(super) async fn delete_fleet_record_impl(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM fleet_records WHERE key = ?1", [key])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn take_fleet_records_impl(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<FleetRecord>> {
        let (condition, mut params) = in_prefix(prefix);
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.call(move |c| {
            // One statement, so one transaction: what it returns is what it
            // deleted, whoever else uses the file.
            let sql = format!(
                "DELETE FROM fleet_records WHERE key IN
                 (SELECT key FROM fleet_records WHERE {condition} ORDER BY key LIMIT ?)
                 RETURNING {FLEET_COLUMNS}"
            );
            let mut taken = query_all(c, &sql, rusqlite::params_from_iter(params), fleet_row)?;
            // RETURNING gives rows in no promised order.
            taken.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(taken)
        })
        .await
    }
}
