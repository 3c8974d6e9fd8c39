//! Users and the access tokens of the Kubernetes API proxy: project tokens
//! for CI jobs and personal tokens for users, in one table, since they are
//! checked the same way (hash lookup, constant-time confirm, expiry,
//! revocation).

use rusqlite::{Connection, OptionalExtension, params};
use tether_credentials::TokenHash;

use super::{SqliteStore, db, query_all, query_one, unique};
use crate::model::*;
use crate::rules::{self, Verdict};
use crate::{Result, StoreError};

const USER_COLUMNS: &str = "name, memberships, created_at";
const ACCESS_COLUMNS: &str = "id, project_id, user_name, name, description, created_at, expires_at, revoked_at, protected, token_hash";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let memberships: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        memberships: rules::split_memberships(&memberships),
        created_at: r.get(2)?,
    })
}

/// The record and its stored hash.
fn access_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AccessTokenRecord, String)> {
    let owner = match (
        r.get::<_, Option<String>>(1)?,
        r.get::<_, Option<String>>(2)?,
    ) {
        (Some(project), _) => TokenOwner::Project(project),
        (None, Some(user)) => TokenOwner::User(user),
        (None, None) => {
            return Err(rusqlite::Error::InvalidColumnType(
                1,
                "owner".into(),
                rusqlite::types::Type::Null,
            ));
        }
    };
    Ok((
        AccessTokenRecord {
            id: r.get(0)?,
            owner,
            name: r.get(3)?,
            description: r.get(4)?,
            created_at: r.get(5)?,
            expires_at: r.get(6)?,
            revoked_at: r.get(7)?,
            protected: r.get(8)?,
        },
        r.get(9)?,
    ))
}

/// The owner's column and value, after checking the owner exists.
fn owner_column(conn: &Connection, owner: &TokenOwner) -> Result<(&'static str, String)> {
    let (column, table, key, id) = match owner {
        TokenOwner::Project(p) => ("project_id", "projects", "id", p),
        TokenOwner::User(u) => ("user_name", "users", "name", u),
    };
    let sql = format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE {key} = ?1)");
    let exists: bool = conn.query_row(&sql, [id], |r| r.get(0)).map_err(db)?;
    if !exists {
        return Err(rules::owner_not_found(owner));
    }
    Ok((column, id.clone()))
}

impl SqliteStore {
    pub(super) async fn create_user_impl(
        &self,
        name: &str,
        memberships: Vec<String>,
        created_at: UnixTime,
    ) -> Result<User> {
        rules::check_user_name(name)?;
        let joined = rules::join_memberships(&memberships)?;
        let name = name.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT INTO users (name, memberships, created_at) VALUES (?1, ?2, ?3)",
                params![name, joined, created_at],
            )
            .map_err(unique(format!("user {name} already exists")))?;
            Ok(User {
                name,
                memberships,
                created_at,
            })
        })
        .await
    }

    pub(super) async fn list_users_impl(&self) -> Result<Vec<User>> {
        self.call(|c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
            query_all(c, &sql, [], user_row)
        })
        .await
    }

    pub(super) async fn get_user_impl(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_owned();
        self.call(move |c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
            query_one(c, &sql, [name], user_row)
        })
        .await
    }

    pub(super) async fn set_memberships_impl(
        &self,
        name: &str,
        memberships: Vec<String>,
    ) -> Result<User> {
        let joined = rules::join_memberships(&memberships)?;
        let name = name.to_owned();
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET memberships = ?2 WHERE name = ?1",
                    params![name, joined],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {name}")));
            }
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
            query_one(c, &sql, [&name], user_row)?
                .ok_or_else(|| StoreError::NotFound(format!("user {name}")))
        })
        .await
    }

    pub(super) async fn delete_user_impl(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.call(move |c| {
            match c
                .execute("DELETE FROM users WHERE name = ?1", [&name])
                .map_err(db)?
            {
                0 => Err(StoreError::NotFound(format!("user {name}"))),
                _ => Ok(()),
            }
        })
        .await
    }

    pub(super) async fn create_access_token_impl(
        &self,
        owner: &TokenOwner,
        t: NewToken,
        protected: bool,
    ) -> Result<AccessTokenRecord> {
        rules::check_new_access_token(owner, &t, protected)?;
        let owner = owner.clone();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let (column, id) = owner_column(&tx, &owner)?;
            let sql = format!(
                "INSERT INTO access_tokens ({column}, name, description, token_hash, created_at, expires_at, protected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            );
            tx.execute(
                &sql,
                params![id, t.name, t.description, t.hash.to_hex(), t.created_at, t.expires_at, protected],
            )
            .map_err(unique("a token with this value already exists".into()))?;
            let record = AccessTokenRecord {
                id: tx.last_insert_rowid(),
                owner,
                name: t.name,
                description: t.description,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: None,
                protected,
            };
            tx.commit().map_err(db)?;
            Ok(record)
        })
        .await
    }

    pub(super) async fn list_access_tokens_impl(
        &self,
        owner: &TokenOwner,
    ) -> Result<Vec<AccessTokenRecord>> {
        let owner = owner.clone();
        self.call(move |c| {
            let (column, id) = owner_column(c, &owner)?;
            let sql = format!(
                "SELECT {ACCESS_COLUMNS} FROM access_tokens WHERE {column} = ?1 ORDER BY id"
            );
            Ok(query_all(c, &sql, [id], access_row)?
                .into_iter()
                .map(|(record, _)| record)
                .collect())
        })
        .await
    }

    pub(super) async fn revoke_access_token_impl(
        &self,
        owner: &TokenOwner,
        token_id: i64,
        now: UnixTime,
    ) -> Result<AccessTokenRecord> {
        let owner = owner.clone();
        self.call(move |c| {
            let tx = c.transaction().map_err(db)?;
            let (column, id) = owner_column(&tx, &owner)?;
            let update = format!(
                "UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND {column} = ?2"
            );
            tx.execute(&update, params![token_id, id, now]).map_err(db)?;
            let sql =
                format!("SELECT {ACCESS_COLUMNS} FROM access_tokens WHERE id = ?1 AND {column} = ?2");
            let (record, _) = query_one(&tx, &sql, params![token_id, id], access_row)?
                .ok_or_else(|| StoreError::NotFound(format!("token {token_id} of {id}")))?;
            tx.commit().map_err(db)?;
            Ok(record)
        })
        .await
    }

    pub(super) async fn authenticate_access_impl(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<AccessTokenStatus> {
        let presented = *hash;
        self.call(move |c| {
            let sql = format!("SELECT {ACCESS_COLUMNS} FROM access_tokens WHERE token_hash = ?1");
            let found = c
                .query_row(&sql, [presented.to_hex()], access_row)
                .optional()
                .map_err(db)?;
            let Some((token, stored)) = found else {
                return Ok(AccessTokenStatus::Unknown);
            };
            Ok(
                match rules::verdict(&stored, &presented, token.revoked_at, token.expires_at, now) {
                    Verdict::Unknown => AccessTokenStatus::Unknown,
                    Verdict::Revoked(revoked_at) => AccessTokenStatus::Revoked { revoked_at },
                    Verdict::Expired(expired_at) => AccessTokenStatus::Expired { expired_at },
                    Verdict::Active => AccessTokenStatus::Active(token),
                },
            )
        })
        .await
    }
}
