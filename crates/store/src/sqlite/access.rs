//! Users and the access tokens of the Kubernetes API proxy: project tokens
//! for CI jobs and personal tokens for users, in one table, since they are
//! checked the same way (hash lookup, constant-time confirm, expiry,
//! revocation).

use rusqlite::{Connection, OptionalExtension, params};
use tether_credentials::TokenHash;

use super::{SqliteStore, db, query_all, query_one, unique};
use crate::model::*;
use crate::{Result, StoreError};

const USER_COLUMNS: &str = "name, memberships, created_at";
const ACCESS_COLUMNS: &str = "id, project_id, user_name, name, description, created_at, expires_at, revoked_at, protected, token_hash";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let memberships: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        memberships: memberships.lines().map(str::to_owned).collect(),
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

fn validate_memberships(memberships: &[String]) -> Result<String> {
    for m in memberships {
        tether_agent_config::validate_project_id(m)
            .map_err(|e| StoreError::Invalid(format!("membership {m:?}: {e}")))?;
    }
    Ok(memberships.join("\n"))
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
        return Err(StoreError::NotFound(match owner {
            TokenOwner::Project(p) => format!("project {p}"),
            TokenOwner::User(u) => format!("user {u}"),
        }));
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
        tether_agent_config::validate_agent_name(name)
            .map_err(|e| StoreError::Invalid(format!("user name: {e}")))?;
        let joined = validate_memberships(&memberships)?;
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
        let joined = validate_memberships(&memberships)?;
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
        if t.name.trim().is_empty() {
            return Err(StoreError::Invalid("a token needs a name".into()));
        }
        if t.expires_at.is_some_and(|e| e <= t.created_at) {
            return Err(StoreError::Invalid(
                "a token cannot expire before it is created".into(),
            ));
        }
        if protected && matches!(owner, TokenOwner::User(_)) {
            return Err(StoreError::Invalid(
                "only project tokens can be protected".into(),
            ));
        }
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
            // Matched by index; confirm in constant time.
            if !TokenHash::from_hex(&stored).is_ok_and(|s| s.ct_eq(&presented)) {
                return Ok(AccessTokenStatus::Unknown);
            }
            Ok(match (token.revoked_at, token.expires_at) {
                (Some(revoked_at), _) => AccessTokenStatus::Revoked { revoked_at },
                (None, Some(expires_at)) if now >= expires_at => AccessTokenStatus::Expired {
                    expired_at: expires_at,
                },
                _ => AccessTokenStatus::Active(token),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use tether_credentials::{Token, TokenKind};

    use super::*;
    use crate::Store;

    fn new_token(kind: TokenKind, name: &str) -> (Token, NewToken) {
        let token = Token::generate(kind);
        let new = NewToken {
            name: name.into(),
            description: String::new(),
            hash: token.hash(),
            created_at: 100,
            expires_at: Some(200),
        };
        (token, new)
    }

    #[tokio::test]
    async fn users_and_access_tokens_round_trip() {
        let store = SqliteStore::open_in_memory().expect("store");
        store
            .create_project(NewProject {
                id: "team/app".into(),
                url: "/tmp/x".into(),
                credentials_ref: None,
                created_at: 1,
                git_ref: None,
            })
            .await
            .expect("project");
        let alice = store
            .create_user("alice", vec!["team".into()], 1)
            .await
            .expect("user");
        assert_eq!(alice.memberships, vec!["team".to_owned()]);
        assert!(store.create_user("alice", vec![], 1).await.is_err());
        assert!(store.create_user("Bad_Name", vec![], 1).await.is_err());
        assert!(
            store
                .create_user("bob", vec!["../x".into()], 1)
                .await
                .is_err()
        );

        let project = TokenOwner::Project("team/app".into());
        let (ci, new) = new_token(TokenKind::Project, "ci");
        let record = store
            .create_access_token(&project, new, true)
            .await
            .expect("project token");
        assert!(record.protected);
        let (pat, new) = new_token(TokenKind::User, "laptop");
        let user = TokenOwner::User("alice".into());
        assert!(
            store
                .create_access_token(&user, new.clone(), true)
                .await
                .is_err()
        );
        store
            .create_access_token(&user, new, false)
            .await
            .expect("personal token");

        match store
            .authenticate_access(&ci.hash(), 150)
            .await
            .expect("auth")
        {
            AccessTokenStatus::Active(t) => assert_eq!(t.owner, project),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store
                .authenticate_access(&pat.hash(), 200)
                .await
                .expect("auth"),
            AccessTokenStatus::Expired { expired_at: 200 }
        );
        store
            .revoke_access_token(&project, record.id, 160)
            .await
            .expect("revoke");
        assert_eq!(
            store
                .authenticate_access(&ci.hash(), 170)
                .await
                .expect("auth"),
            AccessTokenStatus::Revoked { revoked_at: 160 }
        );
        let stranger = Token::generate(TokenKind::User);
        assert_eq!(
            store
                .authenticate_access(&stranger.hash(), 150)
                .await
                .expect("auth"),
            AccessTokenStatus::Unknown
        );
        // Deleting the user takes their tokens with them.
        store.delete_user("alice").await.expect("delete");
        assert_eq!(
            store
                .authenticate_access(&pat.hash(), 150)
                .await
                .expect("auth"),
            AccessTokenStatus::Unknown
        );
        let updated = store.set_memberships("alice", vec![]).await;
        assert!(matches!(updated, Err(StoreError::NotFound(_))));
    }
}
