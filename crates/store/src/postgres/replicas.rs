//! What kas replicas know of each other through the database: who holds
//! which agent's tunnels, and who polls which git project.
//!
//! Liveness is one heartbeat row per replica; a tunnel row counts only while
//! its replica's heartbeat is fresh, so a replica killed with `kill -9`
//! stops attracting requests within the freshness window, and its rows are
//! swept later by whichever replica notices.

use std::time::Duration;

use async_trait::async_trait;

use super::{PgStore, db};
use crate::{ReplicaId, Replicas, Result};

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[async_trait]
impl Replicas for PgStore {
    async fn heartbeat(&self, replica: &ReplicaId) -> Result<()> {
        sqlx::query(
            "INSERT INTO kas_replicas (id, url, seen_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen_at = now()",
        )
        .bind(&replica.id)
        .bind(&replica.url)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn set_tunnels(&self, replica: &ReplicaId, agent: &str, tunnels: usize) -> Result<()> {
        if tunnels == 0 {
            sqlx::query("DELETE FROM tunnel_routes WHERE agent = $1 AND replica = $2")
                .bind(agent)
                .bind(&replica.id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
            return Ok(());
        }
        let count = i32::try_from(tunnels).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO tunnel_routes (agent, replica, tunnels) VALUES ($1, $2, $3)
             ON CONFLICT (agent, replica) DO UPDATE SET tunnels = EXCLUDED.tunnels",
        )
        .bind(agent)
        .bind(&replica.id)
        .bind(count)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn tunnel_holders(&self, agent: &str, me: &str, fresh: Duration) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT r.url FROM tunnel_routes t JOIN kas_replicas r ON r.id = t.replica
             WHERE t.agent = $1 AND t.replica <> $2
               AND r.seen_at > now() - make_interval(secs => $3)
             ORDER BY t.tunnels DESC, r.id",
        )
        .bind(agent)
        .bind(me)
        .bind(seconds(fresh))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn tunnels_elsewhere(&self, me: &str, fresh: Duration) -> Result<Vec<(String, usize)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT t.agent, SUM(t.tunnels)::BIGINT FROM tunnel_routes t
               JOIN kas_replicas r ON r.id = t.replica
             WHERE t.replica <> $1 AND r.seen_at > now() - make_interval(secs => $2)
             GROUP BY t.agent",
        )
        .bind(me)
        .bind(seconds(fresh))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(agent, n)| (agent, usize::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn peers(&self, me: &str, fresh: Duration) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT url FROM kas_replicas
             WHERE id <> $1 AND seen_at > now() - make_interval(secs => $2)
             ORDER BY id",
        )
        .bind(me)
        .bind(seconds(fresh))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn forget_replica(&self, replica: &ReplicaId, stale: Duration) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM poll_leases WHERE replica = $1")
            .bind(&replica.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "DELETE FROM kas_replicas WHERE id = $1 OR seen_at < now() - make_interval(secs => $2)",
        )
        .bind(&replica.id)
        .bind(seconds(stale))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn sweep_replicas(&self, stale: Duration) -> Result<()> {
        sqlx::query("DELETE FROM kas_replicas WHERE seen_at < now() - make_interval(secs => $1)")
            .bind(seconds(stale))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn lead_poll(&self, project: &str, replica: &ReplicaId, ttl: Duration) -> Result<bool> {
        let holder: Option<String> = sqlx::query_scalar(
            "INSERT INTO poll_leases (project, replica, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (project) DO UPDATE
                SET replica = EXCLUDED.replica, expires_at = EXCLUDED.expires_at
                WHERE poll_leases.replica = EXCLUDED.replica OR poll_leases.expires_at < now()
             RETURNING replica",
        )
        .bind(project)
        .bind(&replica.id)
        .bind(seconds(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(holder.as_deref() == Some(replica.id.as_str()))
    }
}
