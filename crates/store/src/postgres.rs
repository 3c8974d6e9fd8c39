//! The shared store: PostgreSQL, so that several kas replicas see one set of
//! records. Same trait, same rules (`rules.rs`) and the same test suite as
//! the embedded SQLite store.
//!
//! Migrations run at open under a transaction-scoped advisory lock, so
//! replicas starting together migrate once; they are append-only, like
//! SQLite's. Queries are plain SQL with bound parameters, checked by the
//! store test suite against a real server (no compile-time database).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tether_credentials::TokenHash;

use crate::model::*;
use crate::rules::{self, Verdict};
use crate::{Result, Store, StoreError};

mod access;
mod feed;
mod fleet;
mod replicas;
mod status;

/// Schema migrations, applied in order; `tether_schema.version` records how
/// many have run. Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE projects (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    credentials_ref TEXT,
    created_at      BIGINT NOT NULL,
    git_ref         TEXT
);
CREATE TABLE agents (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    config_project TEXT NOT NULL REFERENCES projects(id) ON DELETE RESTRICT,
    created_at     BIGINT NOT NULL
);
CREATE TABLE agent_tokens (
    id          BIGSERIAL PRIMARY KEY,
    agent_id    BIGINT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX agent_tokens_by_agent ON agent_tokens(agent_id);
CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    memberships TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE access_tokens (
    id          BIGSERIAL PRIMARY KEY,
    project_id  TEXT REFERENCES projects(id) ON DELETE CASCADE,
    user_name   TEXT REFERENCES users(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    protected   BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK ((project_id IS NULL) <> (user_name IS NULL))
);
CREATE INDEX access_tokens_by_project ON access_tokens(project_id);
CREATE INDEX access_tokens_by_user ON access_tokens(user_name);
CREATE TABLE manifest_grants (
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    agent_id    BIGINT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, agent_id)
);
CREATE INDEX manifest_grants_by_agent ON manifest_grants(agent_id);
"#,
    r#"
CREATE TABLE sync_history (
    id          BIGSERIAL PRIMARY KEY,
    agent_id    BIGINT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    project     TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    reported_at BIGINT NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX sync_history_by_project ON sync_history(agent_id, project, id);
CREATE TABLE agent_status (
    agent_id      BIGINT PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    config_status TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE agent_status ADD COLUMN config_commit TEXT;
ALTER TABLE agent_status ADD COLUMN config_source TEXT;
CREATE TABLE kas_replicas (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE tunnel_routes (
    agent      TEXT NOT NULL,
    replica    TEXT NOT NULL REFERENCES kas_replicas(id) ON DELETE CASCADE,
    tunnels    INTEGER NOT NULL,
    PRIMARY KEY (agent, replica)
);
CREATE INDEX tunnel_routes_by_replica ON tunnel_routes(replica);
CREATE TABLE poll_leases (
    project    TEXT PRIMARY KEY,
    replica    TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"#,
    r#"
CREATE TABLE webhook_secrets (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE status_targets (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    api_url     TEXT NOT NULL,
    repository  TEXT NOT NULL,
    token       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE notification_secrets (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    signing_key TEXT,
    created_at  BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE admin_token (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    hash        TEXT NOT NULL,
    rotated_at_ms  BIGINT NOT NULL
);
CREATE TABLE ui_session_revocations (
    session_id  TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
ALTER TABLE projects ADD COLUMN allow_remote_bases BOOLEAN NOT NULL DEFAULT false;
"#,
    r#"
CREATE TABLE registry_logins (
    host        TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    password    TEXT NOT NULL,
    groups      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE TABLE push_credentials (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE image_records (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
-- "C": keys compare as bytes whatever the database's locale, as on SQLite,
-- which fleet_records' prefix ranges and their order rely on.
CREATE TABLE fleet_records (
    key         TEXT COLLATE "C" PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- project_syncs: one project's newest entry per agent, without reading
-- every agent's history.
CREATE INDEX sync_history_by_project_agent ON sync_history(project, agent_id, id);
"#,
    r#"
ALTER TABLE projects ADD COLUMN verify_policy TEXT;
ALTER TABLE projects ADD COLUMN verify_status TEXT;
"#,
];

/// The advisory lock replicas take while migrating (an arbitrary constant:
/// "tether" in ASCII).
const MIGRATION_LOCK: i64 = 0x7465_7468_6572;

/// Connections one kas keeps to PostgreSQL at most.
const MAX_CONNECTIONS: u32 = 16;

/// kas's records in a PostgreSQL database shared by its replicas.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    sealer: crate::Sealer,
}

// === impl PgStore ===

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and
    /// migrates the database.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(db)?;
        let store = PgStore {
            pool,
            sealer: crate::Sealer::none(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Connections open (in use or idle), idle, and the most the pool
    /// opens, for kas's metrics.
    pub fn pool_use(&self) -> (u32, u32, u32) {
        (
            self.pool.size(),
            u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            MAX_CONNECTIONS,
        )
    }

    /// Seals the secrets it stores with `sealer` (see [`crate::Sealer`]).
    pub fn sealed_with(mut self, sealer: crate::Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<usize> {
        let version: i32 = sqlx::query_scalar("SELECT version FROM tether_schema")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(usize::try_from(version).unwrap_or(0))
    }

    async fn migrate(&self) -> Result<()> {
        self.migrate_to(MIGRATIONS.len()).await
    }

    /// Runs the migrations up to `target` (the tests make older databases).
    async fn migrate_to(&self, target: usize) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS tether_schema (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let current: Option<i32> = sqlx::query_scalar("SELECT version FROM tether_schema")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let current = match current {
            Some(v) => usize::try_from(v).unwrap_or(0),
            None => {
                sqlx::query("INSERT INTO tether_schema (version) VALUES (0)")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                0
            }
        };
        if current > MIGRATIONS.len() {
            return Err(StoreError::Invalid(format!(
                "database schema version {current} is newer than this kas knows ({}); upgrade kas",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("UPDATE tether_schema SET version = $1")
                .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// Maps a unique violation to a conflict that names the thing.
pub(crate) fn unique(what: String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match e.as_database_error().and_then(|d| d.code()) {
        Some(code) if code == "23505" => StoreError::Conflict(what),
        _ => db(e),
    }
}

pub(crate) async fn agent_id(tx: &mut Transaction<'_, Postgres>, name: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT id FROM agents WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("agent {name}")))
}

async fn require_project(tx: &mut Transaction<'_, Postgres>, id: &str) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM projects WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    match exists {
        true => Ok(()),
        false => Err(StoreError::NotFound(format!("project {id}"))),
    }
}

fn project_row(r: &PgRow) -> sqlx::Result<Project> {
    Ok(Project {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        credentials_ref: r.try_get("credentials_ref")?,
        created_at: r.try_get("created_at")?,
        git_ref: r.try_get("git_ref")?,
        allow_remote_bases: r.try_get("allow_remote_bases")?,
        verify: crate::rules::verify_policy(
            r.try_get::<Option<String>, _>("verify_policy")?.as_deref(),
        ),
        verification: crate::rules::verify_status(
            r.try_get::<Option<String>, _>("verify_status")?.as_deref(),
        ),
    })
}

fn agent_row(r: &PgRow) -> sqlx::Result<Agent> {
    let name: String = r.try_get("name")?;
    Ok(Agent {
        id: r.try_get("id")?,
        config_project: r.try_get("config_project")?,
        created_at: r.try_get("created_at")?,
        labels: agent_labels(r, &name)?,
        name,
    })
}

/// The labels of agent `name` from the row's `labels` column.
fn agent_labels(r: &PgRow, name: &str) -> sqlx::Result<std::collections::BTreeMap<String, String>> {
    let json: String = r.try_get("labels")?;
    rules::labels_from_json(name, &json).map_err(|e| sqlx::Error::ColumnDecode {
        index: "labels".into(),
        source: Box::new(e),
    })
}

fn token_row(r: &PgRow) -> sqlx::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.try_get("id")?,
        agent_id: r.try_get("agent_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn grant_row(r: &PgRow) -> sqlx::Result<ManifestGrant> {
    Ok(ManifestGrant {
        project: r.try_get("project_id")?,
        agent: r.try_get("agent")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Maps every row with `row`.
fn all<T>(rows: Vec<PgRow>, row: fn(&PgRow) -> sqlx::Result<T>) -> Result<Vec<T>> {
    rows.iter().map(|r| row(r).map_err(db)).collect()
}

const GRANT_SELECT: &str = "SELECT g.project_id, a.name AS agent, g.created_at FROM manifest_grants g JOIN agents a ON a.id = g.agent_id";

impl PgStore {
    /// Runs `sql` (a DELETE of one row by `key`); `NotFound` naming `what`
    /// when there was none.
    async fn delete_one(&self, sql: &'static str, key: &str, what: String) -> Result<()> {
        let deleted = sqlx::query(sql)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        match deleted.rows_affected() {
            0 => Err(StoreError::NotFound(what)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_project(&self, p: NewProject) -> Result<Project> {
        rules::check_new_project(&p)?;
        sqlx::query(
            "INSERT INTO projects (id, url, credentials_ref, created_at, git_ref) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.id)
        .bind(&p.url)
        .bind(&p.credentials_ref)
        .bind(p.created_at)
        .bind(&p.git_ref)
        .execute(&self.pool)
        .await
        .map_err(unique(format!("project {} already exists", p.id)))?;
        Ok(Project {
            id: p.id,
            url: p.url,
            credentials_ref: p.credentials_ref,
            created_at: p.created_at,
            git_ref: p.git_ref,
            allow_remote_bases: false,
            verify: None,
            verification: VerifyStatus::default(),
        })
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        all(rows, project_row)
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(project_row).transpose().map_err(db)
    }

    async fn delete_project(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let users: Vec<String> =
            sqlx::query_scalar("SELECT name FROM agents WHERE config_project = $1 ORDER BY name")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "project {id} is the configuration project of agent(s) {}; delete them first",
                users.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("project {id}")));
        }
        tx.commit().await.map_err(db)
    }

    async fn create_agent(
        &self,
        name: &str,
        config_project: &str,
        created_at: UnixTime,
    ) -> Result<Agent> {
        rules::check_agent_name(name)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        require_project(&mut tx, config_project).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO agents (name, config_project, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name)
        .bind(config_project)
        .bind(created_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique(format!("agent {name} already exists")))?;
        tx.commit().await.map_err(db)?;
        Ok(Agent {
            id,
            name: name.to_owned(),
            config_project: config_project.to_owned(),
            created_at,
            labels: Default::default(),
        })
    }

    async fn list_agents(&self) -> Result<Vec<Agent>> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        all(rows, agent_row)
    }

    async fn get_agent(&self, name: &str) -> Result<Option<Agent>> {
        let row = sqlx::query("SELECT * FROM agents WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(agent_row).transpose().map_err(db)
    }

    async fn delete_agent(&self, name: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM agents WHERE name = $1",
            name,
            format!("agent {name}"),
        )
        .await
    }

    async fn set_agent_labels(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Agent> {
        let json = rules::labels_to_json(&labels)?;
        // One statement: the write and the agent it returns are one
        // transaction.
        let row = sqlx::query("UPDATE agents SET labels = $2 WHERE name = $1 RETURNING *")
            .bind(name)
            .bind(json)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("agent {name}")))?;
        agent_row(&row).map_err(db)
    }

    async fn create_token(&self, agent: &str, t: NewToken) -> Result<TokenRecord> {
        rules::check_new_token(&t)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO agent_tokens (agent_id, name, description, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(agent_id)
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.hash.to_hex())
        .bind(t.created_at)
        .bind(t.expires_at)
        .fetch_one(&mut *tx)
        .await
        // Two equal hashes mean the same token text: refuse, never say whose.
        .map_err(unique("a token with this value already exists".into()))?;
        tx.commit().await.map_err(db)?;
        Ok(TokenRecord {
            id,
            agent_id,
            name: t.name,
            description: t.description,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: None,
        })
    }

    async fn list_tokens(&self, agent: &str) -> Result<Vec<TokenRecord>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let rows = sqlx::query("SELECT * FROM agent_tokens WHERE agent_id = $1 ORDER BY id")
            .bind(agent_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        all(rows, token_row)
    }

    async fn revoke_token(&self, agent: &str, token_id: i64, now: UnixTime) -> Result<TokenRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let row = sqlx::query(
            "UPDATE agent_tokens SET revoked_at = COALESCE(revoked_at, $3)
             WHERE id = $1 AND agent_id = $2 RETURNING *",
        )
        .bind(token_id)
        .bind(agent_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("token {token_id} of agent {agent}")))?;
        let record = token_row(&row).map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn authenticate(&self, hash: &TokenHash, now: UnixTime) -> Result<TokenStatus> {
        let row = sqlx::query(
            "SELECT t.token_hash, t.id, t.agent_id, t.name, t.description, t.created_at,
                    t.expires_at, t.revoked_at, a.name AS agent_name, a.config_project,
                    a.created_at AS agent_created_at, a.labels
             FROM agent_tokens t JOIN agents a ON a.id = t.agent_id
             WHERE t.token_hash = $1",
        )
        .bind(hash.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(TokenStatus::Unknown);
        };
        let stored: String = row.try_get("token_hash").map_err(db)?;
        let token = token_row(&row).map_err(db)?;
        let name: String = row.try_get("agent_name").map_err(db)?;
        let agent = Agent {
            id: token.agent_id,
            config_project: row.try_get("config_project").map_err(db)?,
            created_at: row.try_get("agent_created_at").map_err(db)?,
            labels: agent_labels(&row, &name).map_err(db)?,
            name,
        };
        Ok(
            match rules::verdict(&stored, hash, token.revoked_at, token.expires_at, now) {
                Verdict::Unknown => TokenStatus::Unknown,
                Verdict::Revoked(revoked_at) => TokenStatus::Revoked { revoked_at },
                Verdict::Expired(expired_at) => TokenStatus::Expired { expired_at },
                Verdict::Active => TokenStatus::Active { agent, token },
            },
        )
    }

    async fn create_user(
        &self,
        name: &str,
        memberships: Vec<String>,
        created_at: UnixTime,
    ) -> Result<User> {
        self.create_user_impl(name, memberships, created_at).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.list_users_impl().await
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        self.get_user_impl(name).await
    }

    async fn set_memberships(&self, name: &str, memberships: Vec<String>) -> Result<User> {
        self.set_memberships_impl(name, memberships).await
    }

    async fn delete_user(&self, name: &str) -> Result<()> {
        self.delete_user_impl(name).await
    }

    async fn create_access_token(
        &self,
        owner: &TokenOwner,
        token: NewToken,
        protected: bool,
    ) -> Result<AccessTokenRecord> {
        self.create_access_token_impl(owner, token, protected).await
    }

    async fn list_access_tokens(&self, owner: &TokenOwner) -> Result<Vec<AccessTokenRecord>> {
        self.list_access_tokens_impl(owner).await
    }

    async fn revoke_access_token(
        &self,
        owner: &TokenOwner,
        token_id: i64,
        now: UnixTime,
    ) -> Result<AccessTokenRecord> {
        self.revoke_access_token_impl(owner, token_id, now).await
    }

    async fn authenticate_access(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<AccessTokenStatus> {
        self.authenticate_access_impl(hash, now).await
    }

    async fn set_webhook_secret(&self, project: &str, secret: &str, now: UnixTime) -> Result<()> {
        let secret = self.sealer.seal_webhook(project, secret);
        let mut tx = self.pool.begin().await.map_err(db)?;
        require_project(&mut tx, project).await?;
        sqlx::query(
            "INSERT INTO webhook_secrets (project_id, secret, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (project_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = EXCLUDED.created_at",
        )
        .bind(project)
        .bind(&secret)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn set_project_verify(&self, id: &str, policy: Option<VerifyPolicy>) -> Result<Project> {
        let text = policy
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("cannot store the policy: {e}")))?;
        // What the old keys verified binds no new policy: a commit signed
        // by a key just removed must verify again.
        let sql = "UPDATE projects SET verify_policy = $2, verify_status = NULL WHERE id = $1 RETURNING *";
        let row = sqlx::query(sql)
            .bind(id)
            .bind(text)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))?;
        project_row(&row).map_err(db)
    }

    async fn record_verification(&self, id: &str, status: &VerifyStatus) -> Result<bool> {
        let text = serde_json::to_string(status)
            .map_err(|e| StoreError::Invalid(format!("cannot store the status: {e}")))?;
        let done = sqlx::query(
            "UPDATE projects SET verify_status = $2 WHERE id = $1 AND verify_status IS DISTINCT FROM $2",
        )
        .bind(id)
        .bind(text)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_project_remote_bases(&self, id: &str, allow: bool) -> Result<Project> {
        let row =
            sqlx::query("UPDATE projects SET allow_remote_bases = $2 WHERE id = $1 RETURNING *")
                .bind(id)
                .bind(allow)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .ok_or_else(|| StoreError::NotFound(format!("project {id}")))?;
        project_row(&row).map_err(db)
    }

    async fn admin_token(&self) -> Result<Option<AdminTokenRecord>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT hash, rotated_at_ms FROM admin_token WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        self.sealer
            .open_admin_token(row.map(|(hash, rotated_at_ms)| AdminTokenRecord {
                hash,
                rotated_at_ms,
            }))
    }

    async fn set_admin_token(&self, record: AdminTokenRecord, replace: bool) -> Result<bool> {
        let record = self.sealer.seal_admin_token(record);
        let sql = if replace {
            "INSERT INTO admin_token (id, hash, rotated_at_ms) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, rotated_at_ms = EXCLUDED.rotated_at_ms"
        } else {
            "INSERT INTO admin_token (id, hash, rotated_at_ms) VALUES (1, $1, $2)
             ON CONFLICT (id) DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(&record.hash)
            .bind(record.rotated_at_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_ui_session(
        &self,
        session_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<()> {
        sqlx::query("DELETE FROM ui_session_revocations WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO ui_session_revocations (session_id, expires_at) VALUES ($1, $2)
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(session_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn ui_session_revoked(&self, session_id: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM ui_session_revocations WHERE session_id = $1)",
        )
        .bind(session_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn webhook_secret(&self, project: &str) -> Result<Option<String>> {
        let stored = sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE project_id = $1")
            .bind(project)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        self.sealer.open_webhook(project, stored)
    }

    async fn delete_webhook_secret(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM webhook_secrets WHERE project_id = $1",
            project,
            format!("webhook secret of project {project}"),
        )
        .await
    }

    async fn set_status_target(&self, project: &str, t: StatusTarget) -> Result<()> {
        let t = self.sealer.seal_target(project, t);
        let mut tx = self.pool.begin().await.map_err(db)?;
        require_project(&mut tx, project).await?;
        sqlx::query(
            "INSERT INTO status_targets (project_id, provider, api_url, repository, token, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (project_id) DO UPDATE SET provider = EXCLUDED.provider,
               api_url = EXCLUDED.api_url, repository = EXCLUDED.repository,
               token = EXCLUDED.token, created_at = EXCLUDED.created_at",
        )
        .bind(project)
        .bind(&t.provider)
        .bind(&t.api_url)
        .bind(&t.repository)
        .bind(&t.token)
        .bind(t.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn status_target(&self, project: &str) -> Result<Option<StatusTarget>> {
        let row = sqlx::query(
            "SELECT provider, api_url, repository, token, created_at FROM status_targets WHERE project_id = $1",
        )
        .bind(project)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let stored = row
            .map(|r| {
                Ok(StatusTarget {
                    provider: r.try_get(0).map_err(db)?,
                    api_url: r.try_get(1).map_err(db)?,
                    repository: r.try_get(2).map_err(db)?,
                    token: r.try_get(3).map_err(db)?,
                    created_at: r.try_get(4).map_err(db)?,
                })
            })
            .transpose()?;
        self.sealer.open_target(project, stored)
    }

    async fn delete_status_target(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM status_targets WHERE project_id = $1",
            project,
            format!("commit status target of project {project}"),
        )
        .await
    }

    async fn set_notification_secret(&self, n: NotificationSecret) -> Result<()> {
        let n = self.sealer.seal_notification(n);
        sqlx::query(
            "INSERT INTO notification_secrets (name, url, signing_key, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url,
               signing_key = EXCLUDED.signing_key, created_at = EXCLUDED.created_at",
        )
        .bind(&n.name)
        .bind(&n.url)
        .bind(&n.signing_key)
        .bind(n.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn notification_secret(&self, name: &str) -> Result<Option<NotificationSecret>> {
        let row = sqlx::query(
            "SELECT name, url, signing_key, created_at FROM notification_secrets WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let stored = row
            .map(|r| {
                Ok(NotificationSecret {
                    name: r.try_get(0).map_err(db)?,
                    url: r.try_get(1).map_err(db)?,
                    signing_key: r.try_get(2).map_err(db)?,
                    created_at: r.try_get(3).map_err(db)?,
                })
            })
            .transpose()?;
        self.sealer.open_notification(stored)
    }

    async fn list_notification_secrets(&self) -> Result<Vec<(String, UnixTime)>> {
        let rows = sqlx::query("SELECT name, created_at FROM notification_secrets ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }

    async fn delete_notification_secret(&self, name: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM notification_secrets WHERE name = $1",
            name,
            format!("notification secret {name}"),
        )
        .await
    }

    async fn grant_manifest_project(
        &self,
        project: &str,
        agent: &str,
        now: UnixTime,
    ) -> Result<ManifestGrant> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        require_project(&mut tx, project).await?;
        sqlx::query(
            "INSERT INTO manifest_grants (project_id, agent_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(project)
        .bind(agent_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let created_at: i64 = sqlx::query_scalar(
            "SELECT created_at FROM manifest_grants WHERE project_id = $1 AND agent_id = $2",
        )
        .bind(project)
        .bind(agent_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(ManifestGrant {
            project: project.to_owned(),
            agent: agent.to_owned(),
            created_at,
        })
    }

    async fn revoke_manifest_project(&self, project: &str, agent: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let agent_id = agent_id(&mut tx, agent).await?;
        let deleted =
            sqlx::query("DELETE FROM manifest_grants WHERE project_id = $1 AND agent_id = $2")
                .bind(project)
                .bind(agent_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "grant of project {project} to agent {agent}"
            )));
        }
        tx.commit().await.map_err(db)
    }

    async fn list_manifest_grants(
        &self,
        project: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<ManifestGrant>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{GRANT_SELECT} WHERE ($1::TEXT IS NULL OR g.project_id = $1) AND ($2::TEXT IS NULL OR a.name = $2)
             ORDER BY g.project_id, a.name"
        )))
        .bind(project)
        .bind(agent)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, grant_row)
    }

    async fn record_sync(&self, agent: &str, record: SyncRecord, keep: usize) -> Result<()> {
        self.record_sync_impl(agent, record, keep).await
    }

    async fn latest_syncs(&self, agent: &str) -> Result<Vec<SyncRecord>> {
        self.latest_syncs_impl(agent).await
    }

    async fn sync_history(
        &self,
        agent: &str,
        project: &str,
        limit: usize,
    ) -> Result<Vec<SyncRecord>> {
        self.sync_history_impl(agent, project, limit).await
    }

    async fn project_syncs(&self, project: &str) -> Result<Vec<(String, SyncRecord)>> {
        self.project_syncs_impl(project).await
    }

    async fn set_config_status(&self, agent: &str, status: String) -> Result<()> {
        self.set_config_status_impl(agent, status).await
    }

    async fn config_statuses(&self) -> Result<Vec<(String, String)>> {
        self.config_statuses_impl().await
    }

    async fn set_agent_config(&self, agent: &str, config: StoredConfig) -> Result<()> {
        self.set_agent_config_impl(agent, config).await
    }

    async fn agent_config(&self, agent: &str) -> Result<Option<StoredConfig>> {
        self.agent_config_impl(agent).await
    }
    async fn set_registry_login(&self, login: RegistryLogin) -> Result<()> {
        let l = self.sealer.seal_registry(login);
        sqlx::query(
            "INSERT INTO registry_logins (host, username, password, groups, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host) DO UPDATE SET username = EXCLUDED.username,
               password = EXCLUDED.password, groups = EXCLUDED.groups, created_at = EXCLUDED.created_at",
        )
        .bind(&l.host)
        .bind(&l.username)
        .bind(&l.password)
        .bind(l.groups.join(","))
        .bind(l.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn registry_login(&self, host: &str) -> Result<Option<RegistryLogin>> {
        let row = sqlx::query(
            "SELECT host, username, password, created_at, groups FROM registry_logins WHERE host = $1",
        )
        .bind(host)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let stored = row
            .map(|r| {
                let groups: String = r.try_get(4).map_err(db)?;
                Ok(RegistryLogin {
                    host: r.try_get(0).map_err(db)?,
                    username: r.try_get(1).map_err(db)?,
                    password: r.try_get(2).map_err(db)?,
                    created_at: r.try_get(3).map_err(db)?,
                    groups: groups
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .transpose()?;
        self.sealer.open_registry(stored)
    }

    async fn list_registry_logins(&self) -> Result<Vec<RegistryLoginInfo>> {
        let rows = sqlx::query(
            "SELECT host, username, created_at, groups FROM registry_logins ORDER BY host",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let groups: String = r.try_get(3).map_err(db)?;
                Ok(RegistryLoginInfo {
                    host: r.try_get(0).map_err(db)?,
                    username: r.try_get(1).map_err(db)?,
                    created_at: r.try_get(2).map_err(db)?,
                    groups: groups
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .collect()
    }

    async fn delete_registry_login(&self, host: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM registry_logins WHERE host = $1",
            host,
            format!("registry login for {host}"),
        )
        .await
    }

    async fn set_push_credential(&self, credential: PushCredential) -> Result<()> {
        let p = self.sealer.seal_push(credential);
        sqlx::query(
            "INSERT INTO push_credentials (project_id, kind, secret, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id) DO UPDATE SET kind = EXCLUDED.kind,
               secret = EXCLUDED.secret, created_at = EXCLUDED.created_at",
        )
        .bind(&p.project)
        .bind(p.kind.as_str())
        .bind(&p.secret)
        .bind(p.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::NotFound(format!("project {}", p.project))
            }
            _ => db(e),
        })?;
        Ok(())
    }

    async fn push_credential(&self, project: &str) -> Result<Option<PushCredential>> {
        let row = sqlx::query(
            "SELECT project_id, kind, secret, created_at FROM push_credentials WHERE project_id = $1",
        )
        .bind(project)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let stored = row
            .map(|r| {
                let kind: String = r.try_get(1).map_err(db)?;
                Ok(PushCredential {
                    project: r.try_get(0).map_err(db)?,
                    kind: PushSecretKind::parse(&kind).ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "push credential of {project}: unknown kind {kind:?}"
                        ))
                    })?,
                    secret: r.try_get(2).map_err(db)?,
                    created_at: r.try_get(3).map_err(db)?,
                })
            })
            .transpose()?;
        self.sealer.open_push(stored)
    }

    async fn delete_push_credential(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM push_credentials WHERE project_id = $1",
            project,
            format!("push credential of {project}"),
        )
        .await
    }

    async fn put_image_record(&self, record: ImageRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO image_records (key, value, updated_at) VALUES ($1, $2, $3)
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

    async fn image_records(&self, prefix: &str) -> Result<Vec<ImageRecord>> {
        let rows = sqlx::query(
            "SELECT key, value, updated_at FROM image_records WHERE left(key, length($1)) = $1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(ImageRecord {
                    key: r.try_get(0).map_err(db)?,
                    value: r.try_get(1).map_err(db)?,
                    updated_at: r.try_get(2).map_err(db)?,
                })
            })
            .collect()
    }

    async fn delete_image_record(&self, key: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM image_records WHERE key = $1",
            key,
            format!("image record {key}"),
        )
        .await
    }

    async fn put_fleet_record(&self, record: FleetRecord) -> Result<()> {
        self.put_fleet_record_impl(record).await
    }

    async fn fleet_records(&self, prefix: &str) -> Result<Vec<FleetRecord>> {
        self.fleet_records_impl(prefix).await
    }

    async fn fleet_record(&self, key: &str) -> Result<Option<FleetRecord>> {
        self.fleet_record_impl(key).await
    }

    async fn delete_fleet_record(&self, key: &str) -> Result<()> {
        self.delete_fleet_record_impl(key).await
    }

    async fn take_fleet_records(&self, prefix: &str, limit: usize) -> Result<Vec<FleetRecord>> {
        self.take_fleet_records_impl(prefix, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema version before agents had labels.
    const BEFORE_LABELS: usize = 6;

    #[tokio::test]
    async fn agents_of_a_database_from_before_labels_have_none() {
        let url = tether_testenv::shared_postgres()
            .create_database()
            .expect("a fresh database");
        let old = PgStore {
            pool: PgPool::connect(&url).await.expect("connects"),
            sealer: crate::Sealer::none(),
        };
        old.migrate_to(BEFORE_LABELS).await.expect("old schema");
        sqlx::raw_sql(
            "INSERT INTO projects (id, url, created_at) VALUES ('team/config', '/git/config', 1);
             INSERT INTO agents (name, config_project, created_at) VALUES ('prod', 'team/config', 2);",
        )
        .execute(&old.pool)
        .await
        .expect("an old agent");
        old.pool.close().await;

        let store = PgStore::connect(&url).await.expect("migrates");
        assert_eq!(
            store.schema_version().await.expect("version"),
            MIGRATIONS.len()
        );
        let agent = store.get_agent("prod").await.expect("read").expect("kept");
        assert_eq!(
            (agent.config_project.as_str(), agent.created_at),
            ("team/config", 2)
        );
        assert!(agent.labels.is_empty());
        assert_eq!(store.list_agents().await.expect("list"), [agent]);
    }
}
