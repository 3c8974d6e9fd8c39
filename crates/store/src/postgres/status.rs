//! Sync history and config status on PostgreSQL.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, agent_id, all, db};
use crate::Result;
use crate::model::*;

fn sync_row(r: &PgRow) -> sqlx::Result<SyncRecord> {
    Ok(SyncRecord {
        project: r.try_get("project")?,
        commit: r.try_get("commit_id")?,
        state: r.try_get("state")?,
        reported_at: r.try_get("reported_at")?,
        report: r.try_get("report")?,
    })
}

impl PgStore {
    pub(super) async fn record_sync_impl(
        &self,
        agent: &str,
        record: SyncRecord,
        keep: usize,
    ) -> Result<()> {
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let newest: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, commit_id FROM sync_history WHERE agent_id = $1 AND project = $2
             ORDER BY id DESC LIMIT 1 FOR UPDATE",
        )
        .bind(agent_id)
        .bind(&record.project)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match newest {
            Some((id, commit)) if commit == record.commit => {
                sqlx::query(
                    "UPDATE sync_history SET state = $2, reported_at = $3, report = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(&record.state)
                .bind(record.reported_at)
                .bind(&record.report)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            _ => {
                sqlx::query(
                    "INSERT INTO sync_history (agent_id, project, commit_id, state, reported_at, report)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(agent_id)
                .bind(&record.project)
                .bind(&record.commit)
                .bind(&record.state)
                .bind(record.reported_at)
                .bind(&record.report)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query(
                    "DELETE FROM sync_history WHERE agent_id = $1 AND project = $2 AND id NOT IN
                     (SELECT id FROM sync_history WHERE agent_id = $1 AND project = $2 ORDER BY id DESC LIMIT $3)",
                )
                .bind(agent_id)
                .bind(&record.project)
                .bind(keep)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)
    }

    pub(super) async fn latest_syncs_impl(&self, agent: &str) -> Result<Vec<SyncRecord>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let rows = sqlx::query(
            "SELECT DISTINCT ON (project) * FROM sync_history WHERE agent_id = $1
             ORDER BY project, id DESC",
        )
        .bind(agent_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        all(rows, sync_row)
    }

    pub(super) async fn sync_history_impl(
        &self,
        agent: &str,
        project: &str,
        limit: usize,
    ) -> Result<Vec<SyncRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let rows = sqlx::query(
            "SELECT * FROM sync_history WHERE agent_id = $1 AND project = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(agent_id)
        .bind(project)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        all(rows, sync_row)
    }

    pub(super) async fn project_syncs_impl(
        &self,
        project: &str,
    ) -> Result<Vec<(String, SyncRecord)>> {
        // The newest entry per agent comes from the (project, agent_id, id)
        // index; only those are joined to their agents.
        let rows = sqlx::query(
            "SELECT a.name AS agent, h.* FROM
               (SELECT DISTINCT ON (agent_id) * FROM sync_history WHERE project = $1
                ORDER BY agent_id, id DESC) h
             JOIN agents a ON a.id = h.agent_id
             ORDER BY a.name",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get("agent")?, sync_row(r)?)))
            .collect::<sqlx::Result<_>>()
            .map_err(db)
    }

    // Both writes below skip a row that already says the same: an agent
    // reconnecting (a replica's thousands, after it died) sends the same
    // config again, and an unchanged row costs no new row version.
    pub(super) async fn set_config_status_impl(&self, agent: &str, status: String) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        sqlx::query(
            "INSERT INTO agent_status (agent_id, config_status) VALUES ($1, $2)
             ON CONFLICT (agent_id) DO UPDATE SET config_status = EXCLUDED.config_status
             WHERE agent_status.config_status IS DISTINCT FROM EXCLUDED.config_status",
        )
        .bind(agent_id)
        .bind(status)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    pub(super) async fn config_statuses_impl(&self) -> Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT a.name, s.config_status FROM agent_status s JOIN agents a ON a.id = s.agent_id ORDER BY a.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    pub(super) async fn set_agent_config_impl(
        &self,
        agent: &str,
        config: StoredConfig,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        sqlx::query(
            "INSERT INTO agent_status (agent_id, config_status, config_commit, config_source)
             VALUES ($1, '{}', $2, $3)
             ON CONFLICT (agent_id) DO UPDATE SET config_commit = EXCLUDED.config_commit,
                 config_source = EXCLUDED.config_source
             WHERE agent_status.config_commit IS DISTINCT FROM EXCLUDED.config_commit
                OR agent_status.config_source IS DISTINCT FROM EXCLUDED.config_source",
        )
        .bind(agent_id)
        .bind(config.commit)
        .bind(config.source)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    pub(super) async fn agent_config_impl(&self, agent: &str) -> Result<Option<StoredConfig>> {
        let row: Option<(Option<String>, String)> = sqlx::query_as(
            "SELECT s.config_commit, s.config_source FROM agent_status s
             JOIN agents a ON a.id = s.agent_id
             WHERE a.name = $1 AND s.config_source IS NOT NULL",
        )
        .bind(agent)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|(commit, source)| StoredConfig {
            commit: commit.unwrap_or_default(),
            source,
        }))
    }
}
