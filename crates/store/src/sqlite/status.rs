//! What users look at, kept durable: sync history and config status.

use rusqlite::params;

use super::{SqliteStore, agent_id, db, query_all, query_one};
use crate::Result;
use crate::model::*;

fn sync_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SyncRecord> {
    Ok(SyncRecord {
        project: r.get(0)?,
        commit: r.get(1)?,
        state: r.get(2)?,
        reported_at: r.get(3)?,
        report: r.get(4)?,
    })
}

const SYNC_COLUMNS: &str = "project, commit_id, state, reported_at, report";

impl SqliteStore {
    pub(super) async fn record_sync_impl(
        &self,
        agent: &str,
        record: SyncRecord,
        keep: usize,
    ) -> Result<()> {
        let agent = agent.to_owned();
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let agent_id = agent_id(&tx, &agent)?;
            let newest: Option<(i64, String)> = query_one(
                &tx,
                "SELECT id, commit_id FROM sync_history WHERE agent_id = ?1 AND project = ?2 ORDER BY id DESC LIMIT 1",
                params![agent_id, record.project],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match newest {
                Some((id, commit)) if commit == record.commit => {
                    tx.execute(
                        "UPDATE sync_history SET state = ?2, reported_at = ?3, report = ?4 WHERE id = ?1",
                        params![id, record.state, record.reported_at, record.report],
                    )
                    .map_err(db)?;
                }
                _ => {
                    tx.execute(
                        "INSERT INTO sync_history (agent_id, project, commit_id, state, reported_at, report)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![agent_id, record.project, record.commit, record.state, record.reported_at, record.report],
                    )
                    .map_err(db)?;
                    tx.execute(
                        "DELETE FROM sync_history WHERE agent_id = ?1 AND project = ?2 AND id NOT IN
                         (SELECT id FROM sync_history WHERE agent_id = ?1 AND project = ?2 ORDER BY id DESC LIMIT ?3)",
                        params![agent_id, record.project, keep],
                    )
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    pub(super) async fn latest_syncs_impl(&self, agent: &str) -> Result<Vec<SyncRecord>> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            let sql = format!(
                "SELECT {SYNC_COLUMNS} FROM sync_history h WHERE agent_id = ?1 AND id =
                 (SELECT MAX(id) FROM sync_history WHERE agent_id = h.agent_id AND project = h.project)
                 ORDER BY project"
            );
            query_all(c, &sql, [agent_id], sync_row)
        })
        .await
    }

    pub(super) async fn sync_history_impl(
        &self,
        agent: &str,
        project: &str,
        limit: usize,
    ) -> Result<Vec<SyncRecord>> {
        let (agent, project) = (agent.to_owned(), project.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            let sql = format!(
                "SELECT {SYNC_COLUMNS} FROM sync_history WHERE agent_id = ?1 AND project = ?2 ORDER BY id DESC LIMIT ?3"
            );
            query_all(c, &sql, params![agent_id, project, limit], sync_row)
        })
        .await
    }

    pub(super) async fn project_syncs_impl(
        &self,
        project: &str,
    ) -> Result<Vec<(String, SyncRecord)>> {
        let project = project.to_owned();
        self.call(move |c| {
            // The newest id per agent comes from the (project, agent_id, id)
            // index alone; only those rows are then read.
            query_all(
                c,
                "SELECT h.project, h.commit_id, h.state, h.reported_at, h.report, a.name
                 FROM (SELECT MAX(id) AS id FROM sync_history WHERE project = ?1 GROUP BY agent_id) newest
                 JOIN sync_history h ON h.id = newest.id
                 JOIN agents a ON a.id = h.agent_id
                 ORDER BY a.name",
                [project],
                |r| Ok((r.get(5)?, sync_row(r)?)),
            )
        })
        .await
    }

    pub(super) async fn set_config_status_impl(&self, agent: &str, status: String) -> Result<()> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            c.execute(
                "INSERT INTO agent_status (agent_id, config_status) VALUES (?1, ?2)
                 ON CONFLICT (agent_id) DO UPDATE SET config_status = excluded.config_status",
                params![agent_id, status],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn config_statuses_impl(&self) -> Result<Vec<(String, String)>> {
        self.call(|c| {
            query_all(
                c,
                "SELECT a.name, s.config_status FROM agent_status s JOIN agents a ON a.id = s.agent_id ORDER BY a.name",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    pub(super) async fn set_agent_config_impl(
        &self,
        agent: &str,
        config: StoredConfig,
    ) -> Result<()> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            c.execute(
                "INSERT INTO agent_status (agent_id, config_status, config_commit, config_source)
                 VALUES (?1, '{}', ?2, ?3)
                 ON CONFLICT (agent_id) DO UPDATE SET config_commit = excluded.config_commit,
                     config_source = excluded.config_source",
                params![agent_id, config.commit, config.source],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn agent_config_impl(&self, agent: &str) -> Result<Option<StoredConfig>> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let rows = query_all(
                c,
                "SELECT s.config_commit, s.config_source FROM agent_status s
                 JOIN agents a ON a.id = s.agent_id
                 WHERE a.name = ?1 AND s.config_source IS NOT NULL",
                params![agent],
                |r| {
                    Ok(StoredConfig {
                        commit: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                        source: r.get(1)?,
                    })
                },
            )?;
            Ok(rows.into_iter().next())
        })
        .await
    }
}
