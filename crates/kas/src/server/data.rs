//! What kas keeps on disk and in its database: the data folder, the store
//! (SQLite, or PostgreSQL shared by replicas), and the keys it seals
//! secrets and signs UI sessions with.

use std::sync::Arc;

use anyhow::Context;
use tether_store::{ChangeFeed, PgStore, Replicas, Sealer, SqliteStore, Store};

use crate::settings::{Database, Settings};

/// kas's records, and with PostgreSQL, what the replicas share through it.
pub struct Stores {
    pub store: Arc<dyn Store>,
    pub feed: Option<Arc<dyn ChangeFeed>>,
    pub replicas: Option<Arc<dyn Replicas>>,
    /// The PostgreSQL store, for its pool's metrics.
    pub pg: Option<Arc<PgStore>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("shared", &self.feed.is_some())
            .finish_non_exhaustive()
    }
}

pub async fn open(database: &Database, sealer: Sealer) -> anyhow::Result<Stores> {
    Ok(match database {
        Database::Sqlite(path) => Stores {
            store: Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("cannot open database {}", path.display()))?
                    .sealed_with(sealer),
            ),
            feed: None,
            replicas: None,
            pg: None,
        },
        Database::Postgres(url) => {
            let pg = Arc::new(
                PgStore::connect(url)
                    .await
                    .with_context(|| format!("cannot open database {}", database.describe()))?
                    .sealed_with(sealer),
            );
            Stores {
                store: pg.clone(),
                feed: Some(pg.clone()),
                replicas: Some(pg.clone()),
                pg: Some(pg),
            }
        }
    })
}

/// The data folder: the SQLite database, the admin token, git mirrors and
/// the development certificate. kas's user only.
#[derive(Clone, Debug)]
pub struct DataDir(std::path::PathBuf);

impl DataDir {
    pub fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create data folder {}", path.display()))?;
        // It holds token hashes and the admin token.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("cannot restrict data folder {}", path.display()))?;
        Ok(DataDir(path.to_owned()))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn git_mirrors(&self) -> std::path::PathBuf {
        self.0.join("git-mirrors")
    }

    pub fn development_ca(&self) -> std::path::PathBuf {
        self.0.join("agent-ca.crt")
    }
}

/// The web UI's session signer: with replicas, keyed by their shared
/// secret (a session opened on one replica is read on every one); alone,
/// by a random key kept in the data folder (sessions survive a restart).
/// What stored secrets are sealed with: `--secrets-key-file`; else, with
/// replicas, their shared secret (every replica opens what another
/// sealed); else a key in the data folder, made on first start.
pub fn secrets_sealer(settings: &Settings, data: &std::path::Path) -> anyhow::Result<Sealer> {
    let key = match (&settings.secrets_key_file, &settings.replication) {
        (Some(path), _) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secrets key {}", path.display()))?;
            anyhow::ensure!(
                key.trim().len() >= 32,
                "the secrets key {} is shorter than 32 characters",
                path.display()
            );
            key.trim().to_owned()
        }
        (None, Some(replication)) => replication.secret.expose().to_owned(),
        (None, None) => {
            let path = data.join("secrets-key");
            match std::fs::read_to_string(&path) {
                Ok(key) if key.trim().len() >= 32 => key.trim().to_owned(),
                _ => {
                    let key = tether_credentials::hex::random::<32>();
                    tether_runtime::files::write_private(&path, &key)?;
                    key
                }
            }
        }
    };
    Ok(Sealer::new(key.as_bytes()))
}

pub fn ui_sessions(
    settings: &Settings,
    data: &std::path::Path,
) -> anyhow::Result<crate::ui::session::Sessions> {
    if let Some(replication) = &settings.replication {
        return Ok(crate::ui::session::Sessions::new(
            replication.secret.expose().as_bytes(),
        ));
    }
    let path = data.join("ui-session-key");
    let key = match std::fs::read_to_string(&path) {
        Ok(key) if key.trim().len() >= 32 => key.trim().to_owned(),
        _ => {
            let key = tether_credentials::hex::random::<32>();
            tether_runtime::files::write_private(&path, &key)?;
            key
        }
    };
    Ok(crate::ui::session::Sessions::new(key.as_bytes()))
}
