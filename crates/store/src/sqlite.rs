//! The embedded store: one SQLite file, so a newcomer runs kas with nothing
//! else installed.
//!
//! One connection behind a mutex, each call on tokio's blocking pool: kas's
//! writes are rare (registering agents and tokens) and its hot read
//! (authenticating a connecting agent) is one indexed lookup, so a pool would
//! buy nothing but SQLite lock contention.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tether_credentials::TokenHash;

use crate::model::*;
use crate::rules::{self, Verdict};
use crate::{Result, Store, StoreError};

mod access;
mod fleet;
mod grants;
mod status;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run. Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE projects (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    credentials_ref TEXT,
    created_at      INTEGER NOT NULL
);
CREATE TABLE agents (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    config_project TEXT NOT NULL REFERENCES projects(id) ON DELETE RESTRICT,
    created_at     INTEGER NOT NULL
);
CREATE TABLE agent_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX agent_tokens_by_agent ON agent_tokens(agent_id);
"#,
    r#"
ALTER TABLE projects ADD COLUMN git_ref TEXT;
"#,
    r#"
CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    memberships TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE access_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  TEXT REFERENCES projects(id) ON DELETE CASCADE,
    user_name   TEXT REFERENCES users(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    protected   INTEGER NOT NULL DEFAULT 0,
    CHECK ((project_id IS NULL) <> (user_name IS NULL))
);
CREATE INDEX access_tokens_by_project ON access_tokens(project_id);
CREATE INDEX access_tokens_by_user ON access_tokens(user_name);
"#,
    r#"
CREATE TABLE manifest_grants (
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    agent_id    INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, agent_id)
);
CREATE INDEX manifest_grants_by_agent ON manifest_grants(agent_id);
"#,
    r#"
CREATE TABLE sync_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    project     TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    reported_at INTEGER NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX sync_history_by_project ON sync_history(agent_id, project, id);
CREATE TABLE agent_status (
    agent_id      INTEGER PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    config_status TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE agent_status ADD COLUMN config_commit TEXT;
ALTER TABLE agent_status ADD COLUMN config_source TEXT;
"#,
    r#"
CREATE TABLE webhook_secrets (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE status_targets (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    api_url     TEXT NOT NULL,
    repository  TEXT NOT NULL,
    token       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE notification_secrets (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    signing_key TEXT,
    created_at  INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE admin_token (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    hash        TEXT NOT NULL,
    rotated_at_ms  INTEGER NOT NULL
);
CREATE TABLE ui_session_revocations (
    session_id  TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
ALTER TABLE projects ADD COLUMN allow_remote_bases INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE registry_logins (
    host        TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    password    TEXT NOT NULL,
    groups      TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE TABLE push_credentials (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE image_records (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
-- Keys compare as bytes (BINARY), which fleet_records' prefix ranges rely on.
CREATE TABLE fleet_records (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
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

/// kas's records in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: crate::Sealer,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path).map_err(db)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // WAL lets readers proceed while a write commits; foreign keys are off
        // by default in SQLite and the schema relies on them.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            sealer: crate::Sealer::none(),
        })
    }

    /// Seals the secrets it stores with `sealer` (see [`crate::Sealer`]).
    pub fn sealed_with(mut self, sealer: crate::Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<usize> {
        self.call(|c| schema_version(c)).await
    }

    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves SQLite itself consistent
            // (the transaction rolls back), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(Box::new(e)))?
    }
}

fn schema_version(conn: &Connection) -> Result<usize> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    usize::try_from(v).map_err(|_| StoreError::Invalid(format!("negative schema version {v}")))
}

fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Runs the migrations up to `target` (the tests make older databases).
fn migrate_to(conn: &mut Connection, target: usize) -> Result<()> {
    let current = schema_version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "the database is at schema version {current}, newer than this kas knows ({}); upgrade kas",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// Maps a UNIQUE violation to a conflict that names the thing.
fn unique(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(what),
        _ => db(e),
    }
}

/// `NotFound` naming the project unless it exists.
fn require_project(conn: &Connection, id: &str) -> Result<()> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM projects WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )
        .map_err(db)?;
    match exists {
        true => Ok(()),
        false => Err(StoreError::NotFound(format!("project {id}"))),
    }
}

fn agent_id(conn: &Connection, name: &str) -> Result<i64> {
    query_one(conn, "SELECT id FROM agents WHERE name = ?1", [name], |r| {
        r.get(0)
    })?
    .ok_or_else(|| StoreError::NotFound(format!("agent {name}")))
}

/// Every row of `sql`, mapped by `row`.
fn query_all<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql).map_err(db)?;
    let rows = stmt.query_map(params, row).map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// The row of `sql`, if there is one, mapped by `row`.
fn query_one<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.query_row(sql, params, row).optional().map_err(db)
}

const PROJECT_COLUMNS: &str = "id, url, credentials_ref, created_at, git_ref, allow_remote_bases, verify_policy, verify_status";
const AGENT_COLUMNS: &str = "id, name, config_project, created_at, labels";
const TOKEN_COLUMNS: &str = "id, agent_id, name, description, created_at, expires_at, revoked_at";

fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        url: r.get(1)?,
        credentials_ref: r.get(2)?,
        created_at: r.get(3)?,
        git_ref: r.get(4)?,
        allow_remote_bases: r.get(5)?,
        verify: crate::rules::verify_policy(r.get::<_, Option<String>>(6)?.as_deref()),
        verification: crate::rules::verify_status(r.get::<_, Option<String>>(7)?.as_deref()),
    })
}

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Agent> {
    agent_at(r, 0)
}

/// The agent whose [`AGENT_COLUMNS`] start at column `first`.
fn agent_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Agent> {
    let name: String = r.get(first + 1)?;
    let labels: String = r.get(first + 4)?;
    let labels = rules::labels_from_json(&name, &labels).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            first + 4,
            rusqlite::types::Type::Text,
            Box::new(e),
        )
    })?;
    Ok(Agent {
        id: r.get(first)?,
        name,
        config_project: r.get(first + 2)?,
        created_at: r.get(first + 3)?,
        labels,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

impl SqliteStore {
    /// Runs `sql` (a DELETE of one row by `key`); `NotFound` naming `what`
    /// when there was none.
    async fn delete_one(&self, sql: &'static str, key: &str, what: String) -> Result<()> {
        let key = key.to_owned();
        self.call(move |c| match c.execute(sql, [&key]).map_err(db)? {
            0 => Err(StoreError::NotFound(what)),
            _ => Ok(()),
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_project(&self, p: NewProject) -> Result<Project> {
        rules::check_new_project(&p)?;
        self.call(move |c| {
            c.execute(
                "INSERT INTO projects (id, url, credentials_ref, created_at, git_ref) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.id, p.url, p.credentials_ref, p.created_at, p.git_ref],
            )
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
        })
        .await
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        self.call(|c| {
            let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id");
            query_all(c, &sql, [], project_row)
        })
        .await
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        let id = id.to_owned();
        self.call(move |c| {
            let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1");
            query_one(c, &sql, [id], project_row)
        })
        .await
    }

    async fn delete_project(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.call(move |c| {
            let users: Vec<String> = query_all(
                c,
                "SELECT name FROM agents WHERE config_project = ?1 ORDER BY name",
                [&id],
                |r| r.get(0),
            )?;
            if !users.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "project {id} is the configuration project of agent(s) {}; delete them first",
                    users.join(", ")
                )));
            }
            match c
                .execute("DELETE FROM projects WHERE id = ?1", [&id])
                .map_err(db)?
            {
                0 => Err(StoreError::NotFound(format!("project {id}"))),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn create_agent(
        &self,
        name: &str,
        config_project: &str,
        created_at: UnixTime,
    ) -> Result<Agent> {
        rules::check_agent_name(name)?;
        let (name, project) = (name.to_owned(), config_project.to_owned());
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            require_project(&tx, &project)?;
            tx.execute(
                "INSERT INTO agents (name, config_project, created_at) VALUES (?1, ?2, ?3)",
                params![name, project, created_at],
            )
            .map_err(unique(format!("agent {name} already exists")))?;
            let agent = Agent {
                id: tx.last_insert_rowid(),
                name,
                config_project: project,
                created_at,
                labels: Default::default(),
            };
            tx.commit().map_err(db)?;
            Ok(agent)
        })
        .await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.call(|c| {
            let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name");
            query_all(c, &sql, [], agent_row)
        })
        .await
    }

    async fn get_agent(&self, name: &str) -> Result<Option<Agent>> {
        let name = name.to_owned();
        self.call(move |c| {
            let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1");
            query_one(c, &sql, [name], agent_row)
        })
        .await
    }

    async fn delete_agent(&self, name: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM agents WHERE name = ?1",
            name,
            format!("agent {name}"),
        )
        .await
    }

    async fn set_agent_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Agent> {
        let json = rules::labels_to_json(&labels)?;
        let name = name.to_owned();
        self.call(move |c| {
            // One statement: the write and the agent it returns are one
            // transaction.
            let sql =
                format!("UPDATE agents SET labels = ?2 WHERE name = ?1 RETURNING {AGENT_COLUMNS}");
            query_one(c, &sql, params![name, json], agent_row)?
                .ok_or_else(|| StoreError::NotFound(format!("agent {name}")))
        })
        .await
    }

    async fn create_token(&self, agent: &str, t: NewToken) -> Result<TokenRecord> {
        rules::check_new_token(&t)?;
        let agent = agent.to_owned();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let agent_id = agent_id(&tx, &agent)?;
            tx.execute(
                "INSERT INTO agent_tokens (agent_id, name, description, token_hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![agent_id, t.name, t.description, t.hash.to_hex(), t.created_at, t.expires_at],
            )
            // Two equal hashes mean the same token text: refuse, never say whose.
            .map_err(unique("a token with this value already exists".into()))?;
            let record = TokenRecord {
                id: tx.last_insert_rowid(),
                agent_id,
                name: t.name,
                description: t.description,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: None,
            };
            tx.commit().map_err(db)?;
            Ok(record)
        })
        .await
    }

    async fn list_tokens(&self, agent: &str) -> Result<Vec<TokenRecord>> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let agent_id = agent_id(c, &agent)?;
            let sql =
                format!("SELECT {TOKEN_COLUMNS} FROM agent_tokens WHERE agent_id = ?1 ORDER BY id");
            query_all(c, &sql, [agent_id], token_row)
        })
        .await
    }

    async fn revoke_token(&self, agent: &str, token_id: i64, now: UnixTime) -> Result<TokenRecord> {
        let agent = agent.to_owned();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let agent_id = agent_id(&tx, &agent)?;
            tx.execute(
                "UPDATE agent_tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND agent_id = ?2",
                params![token_id, agent_id, now],
            )
            .map_err(db)?;
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM agent_tokens WHERE id = ?1 AND agent_id = ?2");
            let record = query_one(&tx, &sql, params![token_id, agent_id], token_row)?
                .ok_or_else(|| StoreError::NotFound(format!("token {token_id} of agent {agent}")))?;
            tx.commit().map_err(db)?;
            Ok(record)
        })
        .await
    }

    async fn authenticate(&self, hash: &TokenHash, now: UnixTime) -> Result<TokenStatus> {
        let presented = *hash;
        self.call(move |c| {
            let found = c
                .query_row(
                    "SELECT t.token_hash, t.id, t.agent_id, t.name, t.description, t.created_at,
                            t.expires_at, t.revoked_at,
                            a.id, a.name, a.config_project, a.created_at, a.labels
                     FROM agent_tokens t JOIN agents a ON a.id = t.agent_id
                     WHERE t.token_hash = ?1",
                    [presented.to_hex()],
                    |r| {
                        let token = TokenRecord {
                            id: r.get(1)?,
                            agent_id: r.get(2)?,
                            name: r.get(3)?,
                            description: r.get(4)?,
                            created_at: r.get(5)?,
                            expires_at: r.get(6)?,
                            revoked_at: r.get(7)?,
                        };
                        let agent = agent_at(r, 8)?;
                        Ok((r.get::<_, String>(0)?, token, agent))
                    },
                )
                .optional()
                .map_err(db)?;
            let Some((stored, token, agent)) = found else {
                return Ok(TokenStatus::Unknown);
            };
            Ok(
                match rules::verdict(&stored, &presented, token.revoked_at, token.expires_at, now) {
                    Verdict::Unknown => TokenStatus::Unknown,
                    Verdict::Revoked(revoked_at) => TokenStatus::Revoked { revoked_at },
                    Verdict::Expired(expired_at) => TokenStatus::Expired { expired_at },
                    Verdict::Active => TokenStatus::Active { agent, token },
                },
            )
        })
        .await
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
        let project = project.to_owned();
        self.call(move |c| {
            require_project(c, &project)?;
            c.execute(
                "INSERT INTO webhook_secrets (project_id, secret, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (project_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at",
                params![project, secret, now],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn set_project_verify(&self, id: &str, policy: Option<VerifyPolicy>) -> Result<Project> {
        let id = id.to_owned();
        let text = policy
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("cannot store the policy: {e}")))?;
        self.call(move |c| {
            // What the old keys verified binds no new policy: a commit
            // signed by a key just removed must verify again.
            let sql = "UPDATE projects SET verify_policy = ?2, verify_status = NULL WHERE id = ?1";
            let changed = c.execute(sql, params![id, text]).map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("project {id}")));
            }
            let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1");
            query_one(c, &sql, [&id], project_row)?
                .ok_or_else(|| StoreError::NotFound(format!("project {id}")))
        })
        .await
    }

    async fn record_verification(&self, id: &str, status: &VerifyStatus) -> Result<bool> {
        let id = id.to_owned();
        let text = serde_json::to_string(status)
            .map_err(|e| StoreError::Invalid(format!("cannot store the status: {e}")))?;
        self.call(move |c| {
            let changed = c
                .execute(
                    "UPDATE projects SET verify_status = ?2 WHERE id = ?1 AND verify_status IS NOT ?2",
                    params![id, text],
                )
                .map_err(db)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn set_project_remote_bases(&self, id: &str, allow: bool) -> Result<Project> {
        let id = id.to_owned();
        self.call(move |c| {
            let changed = c
                .execute(
                    "UPDATE projects SET allow_remote_bases = ?2 WHERE id = ?1",
                    params![id, allow],
                )
                .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("project {id}")));
            }
            let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1");
            query_one(c, &sql, [&id], project_row)?
                .ok_or_else(|| StoreError::NotFound(format!("project {id}")))
        })
        .await
    }

    async fn admin_token(&self) -> Result<Option<AdminTokenRecord>> {
        let stored = self
            .call(|c| {
                query_one(
                    c,
                    "SELECT hash, rotated_at_ms FROM admin_token WHERE id = 1",
                    [],
                    |r| {
                        Ok(AdminTokenRecord {
                            hash: r.get(0)?,
                            rotated_at_ms: r.get(1)?,
                        })
                    },
                )
            })
            .await?;
        self.sealer.open_admin_token(stored)
    }

    async fn set_admin_token(&self, record: AdminTokenRecord, replace: bool) -> Result<bool> {
        let record = self.sealer.seal_admin_token(record);
        self.call(move |c| {
            let sql = if replace {
                "INSERT INTO admin_token (id, hash, rotated_at_ms) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, rotated_at_ms = excluded.rotated_at_ms"
            } else {
                "INSERT INTO admin_token (id, hash, rotated_at_ms) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO NOTHING"
            };
            let written = c
                .execute(sql, params![record.hash, record.rotated_at_ms])
                .map_err(db)?;
            Ok(written > 0)
        })
        .await
    }

    async fn revoke_ui_session(
        &self,
        session_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<()> {
        let id = session_id.to_owned();
        self.call(move |c| {
            c.execute(
                "DELETE FROM ui_session_revocations WHERE expires_at < ?1",
                [now],
            )
            .map_err(db)?;
            c.execute(
                "INSERT INTO ui_session_revocations (session_id, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (session_id) DO NOTHING",
                params![id, expires_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn ui_session_revoked(&self, session_id: &str) -> Result<bool> {
        let id = session_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM ui_session_revocations WHERE session_id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn webhook_secret(&self, project: &str) -> Result<Option<String>> {
        let id = project.to_owned();
        let stored = self
            .call(move |c| {
                query_one(
                    c,
                    "SELECT secret FROM webhook_secrets WHERE project_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
            })
            .await?;
        self.sealer.open_webhook(project, stored)
    }

    async fn delete_webhook_secret(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM webhook_secrets WHERE project_id = ?1",
            project,
            format!("webhook secret of project {project}"),
        )
        .await
    }

    async fn set_status_target(&self, project: &str, t: StatusTarget) -> Result<()> {
        let t = self.sealer.seal_target(project, t);
        let project = project.to_owned();
        self.call(move |c| {
            require_project(c, &project)?;
            c.execute(
                "INSERT INTO status_targets (project_id, provider, api_url, repository, token, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (project_id) DO UPDATE SET provider = excluded.provider,
                   api_url = excluded.api_url, repository = excluded.repository,
                   token = excluded.token, created_at = excluded.created_at",
                params![project, t.provider, t.api_url, t.repository, t.token, t.created_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn status_target(&self, project: &str) -> Result<Option<StatusTarget>> {
        let id = project.to_owned();
        let stored = self.call(move |c| {
            query_one(
                c,
                "SELECT provider, api_url, repository, token, created_at FROM status_targets WHERE project_id = ?1",
                [&id],
                |r| {
                    Ok(StatusTarget {
                        provider: r.get(0)?,
                        api_url: r.get(1)?,
                        repository: r.get(2)?,
                        token: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
        })
        .await?;
        self.sealer.open_target(project, stored)
    }

    async fn delete_status_target(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM status_targets WHERE project_id = ?1",
            project,
            format!("commit status target of project {project}"),
        )
        .await
    }

    async fn set_notification_secret(&self, n: NotificationSecret) -> Result<()> {
        let n = self.sealer.seal_notification(n);
        self.call(move |c| {
            c.execute(
                "INSERT INTO notification_secrets (name, url, signing_key, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url,
                   signing_key = excluded.signing_key, created_at = excluded.created_at",
                params![n.name, n.url, n.signing_key, n.created_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn notification_secret(&self, name: &str) -> Result<Option<NotificationSecret>> {
        let name = name.to_owned();
        let stored = self.call(move |c| {
            query_one(
                c,
                "SELECT name, url, signing_key, created_at FROM notification_secrets WHERE name = ?1",
                [&name],
                |r| {
                    Ok(NotificationSecret {
                        name: r.get(0)?,
                        url: r.get(1)?,
                        signing_key: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
        })
        .await?;
        self.sealer.open_notification(stored)
    }

    async fn list_notification_secrets(&self) -> Result<Vec<(String, UnixTime)>> {
        self.call(move |c| {
            query_all(
                c,
                "SELECT name, created_at FROM notification_secrets ORDER BY name",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn delete_notification_secret(&self, name: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM notification_secrets WHERE name = ?1",
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
        self.grant_impl(project, agent, now).await
    }

    async fn revoke_manifest_project(&self, project: &str, agent: &str) -> Result<()> {
        self.revoke_grant_impl(project, agent).await
    }

    async fn list_manifest_grants(
        &self,
        project: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<ManifestGrant>> {
        self.list_grants_impl(project, agent).await
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
        self.call(move |c| {
            c.execute(
                "INSERT INTO registry_logins (host, username, password, groups, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host) DO UPDATE SET username = excluded.username,
                   password = excluded.password, groups = excluded.groups, created_at = excluded.created_at",
                params![l.host, l.username, l.password, l.groups.join(","), l.created_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn registry_login(&self, host: &str) -> Result<Option<RegistryLogin>> {
        let host = host.to_owned();
        let stored = self
            .call(move |c| {
                query_one(
                    c,
                    "SELECT host, username, password, created_at, groups FROM registry_logins WHERE host = ?1",
                    [&host],
                    |r| {
                        Ok(RegistryLogin {
                            host: r.get(0)?,
                            username: r.get(1)?,
                            password: r.get(2)?,
                            created_at: r.get(3)?,
                            groups: split_groups(&r.get::<_, String>(4)?),
                        })
                    },
                )
            })
            .await?;
        self.sealer.open_registry(stored)
    }

    async fn list_registry_logins(&self) -> Result<Vec<RegistryLoginInfo>> {
        self.call(move |c| {
            query_all(
                c,
                "SELECT host, username, created_at, groups FROM registry_logins ORDER BY host",
                [],
                |r| {
                    Ok(RegistryLoginInfo {
                        host: r.get(0)?,
                        username: r.get(1)?,
                        created_at: r.get(2)?,
                        groups: split_groups(&r.get::<_, String>(3)?),
                    })
                },
            )
        })
        .await
    }

    async fn delete_registry_login(&self, host: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM registry_logins WHERE host = ?1",
            host,
            format!("registry login for {host}"),
        )
        .await
    }

    async fn set_push_credential(&self, credential: PushCredential) -> Result<()> {
        let p = self.sealer.seal_push(credential);
        self.call(move |c| {
            c.execute(
                "INSERT INTO push_credentials (project_id, kind, secret, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (project_id) DO UPDATE SET kind = excluded.kind,
                   secret = excluded.secret, created_at = excluded.created_at",
                params![p.project, p.kind.as_str(), p.secret, p.created_at],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NotFound(format!("project {}", p.project))
                }
                e => db(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn push_credential(&self, project: &str) -> Result<Option<PushCredential>> {
        let project = project.to_owned();
        let stored = self
            .call(move |c| {
                query_one(
                    c,
                    "SELECT project_id, kind, secret, created_at FROM push_credentials WHERE project_id = ?1",
                    [&project],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, UnixTime>(3)?)),
                )
            })
            .await?;
        let stored = stored
            .map(|(project, kind, secret, created_at)| {
                let kind = PushSecretKind::parse(&kind).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "push credential of {project}: unknown kind {kind:?}"
                    ))
                })?;
                Ok::<_, StoreError>(PushCredential {
                    project,
                    kind,
                    secret,
                    created_at,
                })
            })
            .transpose()?;
        self.sealer.open_push(stored)
    }

    async fn delete_push_credential(&self, project: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM push_credentials WHERE project_id = ?1",
            project,
            format!("push credential of {project}"),
        )
        .await
    }

    async fn put_image_record(&self, record: ImageRecord) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO image_records (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![record.key, record.value, record.updated_at],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn image_records(&self, prefix: &str) -> Result<Vec<ImageRecord>> {
        let prefix = prefix.to_owned();
        self.call(move |c| {
            query_all(
                c,
                "SELECT key, value, updated_at FROM image_records WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
                [&prefix],
                |r| {
                    Ok(ImageRecord {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        updated_at: r.get(2)?,
                    })
                },
            )
        })
        .await
    }

    async fn delete_image_record(&self, key: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM image_records WHERE key = ?1",
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

/// Groups as stored: comma-separated, empty for none.
fn split_groups(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema version before agents had labels.
    const BEFORE_LABELS: usize = 9;

    #[tokio::test]
    async fn agents_of_a_database_from_before_labels_have_none() {
        let mut conn = Connection::open_in_memory().expect("opens");
        migrate_to(&mut conn, BEFORE_LABELS).expect("old schema");
        conn.execute_batch(
            "INSERT INTO projects (id, url, created_at) VALUES ('team/config', '/git/config', 1);
             INSERT INTO agents (name, config_project, created_at) VALUES ('prod', 'team/config', 2);",
        )
        .expect("an old agent");
        let store = SqliteStore::init(conn).expect("migrates");
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
