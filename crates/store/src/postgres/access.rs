//! Users and the access tokens of the Kubernetes API proxy, on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use tether_credentials::TokenHash;

use super::{PgStore, all, db, unique};
use crate::model::*;
use crate::rules::{self, Verdict};
use crate::{Result, StoreError};

fn user_row(r: &PgRow) -> sqlx::Result<User> {
    let memberships: String = r.try_get("memberships")?;
    Ok(User {
        name: r.try_get("name")?,
        memberships: rules::split_memberships(&memberships),
        created_at: r.try_get("created_at")?,
    })
}

fn access_row(r: &PgRow) -> sqlx::Result<AccessTokenRecord> {
    let owner = match (
        r.try_get::<Option<String>, _>("project_id")?,
        r.try_get::<Option<String>, _>("user_name")?,
    ) {
        (Some(project), _) => TokenOwner::Project(project),
        (None, Some(user)) => TokenOwner::User(user),
        (None, None) => {
            return Err(sqlx::Error::ColumnNotFound(
                "an access token without an owner".into(),
            ));
        }
    };
    Ok(AccessTokenRecord {
        id: r.try_get("id")?,
        owner,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        protected: r.try_get("protected")?,
    })
}

/// The owner's project id and user name (one of them set), after checking
/// the owner exists.
async fn owner_key(
    tx: &mut Transaction<'_, Postgres>,
    owner: &TokenOwner,
) -> Result<(Option<String>, Option<String>)> {
    let (exists, key) = match owner {
        TokenOwner::Project(p) => (
            sqlx::query_scalar::<_, bool>("SELECT EXISTS(SELECT 1 FROM projects WHERE id = $1)")
                .bind(p)
                .fetch_one(&mut **tx)
                .await,
            (Some(p.clone()), None),
        ),
        TokenOwner::User(u) => (
            sqlx::query_scalar::<_, bool>("SELECT EXISTS(SELECT 1 FROM users WHERE name = $1)")
                .bind(u)
                .fetch_one(&mut **tx)
                .await,
            (None, Some(u.clone())),
        ),
    };
    match exists.map_err(db)? {
        true => Ok(key),
        false => Err(rules::owner_not_found(owner)),
    }
}

impl PgStore {
    pub(super) async fn create_user_impl(
        &self,
        name: &str,
        memberships: Vec<String>,
        created_at: UnixTime,
    ) -> Result<User> {
        rules::check_user_name(name)?;
        let joined = rules::join_memberships(&memberships)?;
        sqlx::query("INSERT INTO users (name, memberships, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(joined)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(unique(format!("user {name} already exists")))?;
        Ok(User {
            name: name.to_owned(),
            memberships,
            created_at,
        })
    }

    pub(super) async fn list_users_impl(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        all(rows, user_row)
    }

    pub(super) async fn get_user_impl(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user_row).transpose().map_err(db)
    }

    pub(super) async fn set_memberships_impl(
        &self,
        name: &str,
        memberships: Vec<String>,
    ) -> Result<User> {
        let joined = rules::join_memberships(&memberships)?;
        let row = sqlx::query("UPDATE users SET memberships = $2 WHERE name = $1 RETURNING *")
            .bind(name)
            .bind(joined)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("user {name}")))?;
        user_row(&row).map_err(db)
    }

    pub(super) async fn delete_user_impl(&self, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        match deleted.rows_affected() {
            0 => Err(StoreError::NotFound(format!("user {name}"))),
            _ => Ok(()),
        }
    }

    pub(super) async fn create_access_token_impl(
        &self,
        owner: &TokenOwner,
        t: NewToken,
        protected: bool,
    ) -> Result<AccessTokenRecord> {
        rules::check_new_access_token(owner, &t, protected)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (project, user) = owner_key(&mut tx, owner).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_tokens (project_id, user_name, name, description, token_hash, created_at, expires_at, protected)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(project)
        .bind(user)
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.hash.to_hex())
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(protected)
        .fetch_one(&mut *tx)
        .await
        .map_err(unique("a token with this value already exists".into()))?;
        tx.commit().await.map_err(db)?;
        Ok(AccessTokenRecord {
            id,
            owner: owner.clone(),
            name: t.name,
            description: t.description,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: None,
            protected,
        })
    }

    pub(super) async fn list_access_tokens_impl(
        &self,
        owner: &TokenOwner,
    ) -> Result<Vec<AccessTokenRecord>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (project, user) = owner_key(&mut tx, owner).await?;
        let rows = sqlx::query(
            "SELECT * FROM access_tokens
             WHERE project_id IS NOT DISTINCT FROM $1 AND user_name IS NOT DISTINCT FROM $2
             ORDER BY id",
        )
        .bind(project)
        .bind(user)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        all(rows, access_row)
    }

    pub(super) async fn revoke_access_token_impl(
        &self,
        owner: &TokenOwner,
        token_id: i64,
        now: UnixTime,
    ) -> Result<AccessTokenRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (project, user) = owner_key(&mut tx, owner).await?;
        let shown = project.clone().or(user.clone()).unwrap_or_default();
        let row = sqlx::query(
            "UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, $4)
             WHERE id = $1 AND project_id IS NOT DISTINCT FROM $2 AND user_name IS NOT DISTINCT FROM $3
             RETURNING *",
        )
        .bind(token_id)
        .bind(project)
        .bind(user)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("token {token_id} of {shown}")))?;
        let record = access_row(&row).map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    pub(super) async fn authenticate_access_impl(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<AccessTokenStatus> {
        let row = sqlx::query("SELECT * FROM access_tokens WHERE token_hash = $1")
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(AccessTokenStatus::Unknown);
        };
        let stored: String = row.try_get("token_hash").map_err(db)?;
        let token = access_row(&row).map_err(db)?;
        Ok(
            match rules::verdict(&stored, hash, token.revoked_at, token.expires_at, now) {
                Verdict::Unknown => AccessTokenStatus::Unknown,
                Verdict::Revoked(revoked_at) => AccessTokenStatus::Revoked { revoked_at },
                Verdict::Expired(expired_at) => AccessTokenStatus::Expired { expired_at },
                Verdict::Active => AccessTokenStatus::Active(token),
            },
        )
    }
}
