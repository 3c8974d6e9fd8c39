//! Administrators' grants that let an agent read manifests from a project
//! outside its own top-level group.

use rusqlite::params;

use super::{SqliteStore, agent_id, db, query_all, query_one, require_project};
use crate::model::*;
use crate::{Result, StoreError};

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestGrant> {
    Ok(ManifestGrant {
        project: r.get(0)?,
        agent: r.get(1)?,
        created_at: r.get(2)?,
    })
}

const GRANT_SELECT: &str = "SELECT g.project_id, a.name, g.created_at FROM manifest_grants g JOIN agents a ON a.id = g.agent_id";

impl SqliteStore {
    pub(super) async fn grant_impl(
        &self,
        project: &str,
        agent: &str,
        now: UnixTime,
    ) -> Result<ManifestGrant> {
        let (project, agent) = (project.to_owned(), agent.to_owned());
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let agent_id = agent_id(&tx, &agent)?;
            require_project(&tx, &project)?;
            tx.execute(
                "INSERT OR IGNORE INTO manifest_grants (project_id, agent_id, created_at) VALUES (?1, ?2, ?3)",
                params![project, agent_id, now],
            )
            .map_err(db)?;
            let sql = format!("{GRANT_SELECT} WHERE g.project_id = ?1 AND g.agent_id = ?2");
            let grant = query_one(&tx, &sql, params![project, agent_id], grant_row)?
                .ok_or_else(|| StoreError::NotFound(format!("grant of {project} to {agent}")))?;
            tx.commit().map_err(db)?;
            Ok(grant)
        })
        .await
    }

    pub(super) async fn revoke_grant_impl(&self, project: &str, agent: &str) -> Result<()> {
        let (project, agent) = (project.to_owned(), agent.to_owned());
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            match c
                .execute(
                    "DELETE FROM manifest_grants WHERE project_id = ?1 AND agent_id = ?2",
                    params![project, agent_id],
                )
                .map_err(db)?
            {
                0 => Err(StoreError::NotFound(format!(
                    "grant of project {project} to agent {agent}"
                ))),
                _ => Ok(()),
            }
        })
        .await
    }

    pub(super) async fn list_grants_impl(
        &self,
        project: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<ManifestGrant>> {
        let (project, agent) = (project.map(str::to_owned), agent.map(str::to_owned));
        self.call(move |c| {
            let sql = format!(
                "{GRANT_SELECT} WHERE (?1 IS NULL OR g.project_id = ?1) AND (?2 IS NULL OR a.name = ?2) ORDER BY g.project_id, a.name"
            );
            query_all(c, &sql, params![project, agent], grant_row)
        })
        .await
    }
}
