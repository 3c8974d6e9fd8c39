//! The administrator's token: created on first start, written to a file only
//! kas's user can read, and never logged. The REST API requires it.
//!
//! The file bootstraps it; the database holds what every replica checks
//! (its hash and when it was set), so that `kas admin rotate-token` ends
//! the old token, and every admin web UI session signed before, on every
//! replica at once ([`AdminAuth`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tether_credentials::{Token, TokenHash, TokenKind};
use tether_store::{AdminTokenRecord, Store};

/// How long a replica uses the record it read before reading it again:
/// a rotation reaches every replica within this.
const RECHECK: Duration = Duration::from_secs(1);

/// The admin token as this replica checks it.
pub struct AdminAuth {
    store: Arc<dyn Store>,
    file: PathBuf,
    read: Mutex<Option<(Instant, TokenHash, i64)>>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Records `token` (the file's) when the database has none; with one
    /// there already, that is the token, and a file that differs (rotated
    /// through another replica) is said so.
    pub async fn start(
        store: Arc<dyn Store>,
        file: &Path,
        token: &Token,
    ) -> anyhow::Result<Arc<Self>> {
        let record = AdminTokenRecord {
            hash: token.hash().to_hex(),
            rotated_at_ms: now_ms(),
        };
        store
            .set_admin_token(record, false)
            .await
            .context("cannot record the admin token")?;
        // A record this kas cannot open (sealed with another key) would
        // lock the administrator out without saying why: refuse to start.
        store.admin_token().await.context(
            "the admin token's record in the database cannot be opened: every kas on one \
             database needs the same --secrets-key-file (or, with replicas, the same \
             --private-secret-file)",
        )?;
        let auth = Arc::new(AdminAuth {
            store,
            file: file.to_owned(),
            read: Mutex::default(),
        });
        if !auth.matches(token).await {
            tracing::warn!(
                file = %file.display(),
                "the admin token file holds an old token: it was rotated (kas admin rotate-token); the database's is the one accepted"
            );
        }
        Ok(auth)
    }

    async fn current(&self) -> Option<(TokenHash, i64)> {
        if let Some((at, hash, rotated)) = *lock(&self.read)
            && at.elapsed() < RECHECK
        {
            return Some((hash, rotated));
        }
        match self.store.admin_token().await {
            Ok(Some(record)) => {
                let hash = TokenHash::from_hex(&record.hash).ok()?;
                *lock(&self.read) = Some((Instant::now(), hash, record.rotated_at_ms));
                Some((hash, record.rotated_at_ms))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the admin token's record");
                // The last one read, rather than locking the admin out.
                lock(&self.read).map(|(_, hash, rotated)| (hash, rotated))
            }
        }
    }

    /// Whether `token` is the admin token (hashes, compared in constant
    /// time).
    pub async fn matches(&self, token: &Token) -> bool {
        self.current()
            .await
            .is_some_and(|(hash, _)| hash.matches(token))
    }

    /// When the admin token was last set (Unix milliseconds): admin
    /// sessions signed before are over.
    pub async fn rotated_at_ms(&self) -> i64 {
        self.current().await.map_or(i64::MAX, |(_, at)| at)
    }

    /// A new admin token: recorded for every replica, written to this
    /// replica's file, returned to be shown once.
    pub async fn rotate(&self) -> anyhow::Result<Token> {
        let token = Token::generate(TokenKind::Admin);
        let record = AdminTokenRecord {
            hash: token.hash().to_hex(),
            rotated_at_ms: now_ms(),
        };
        self.store
            .set_admin_token(record, true)
            .await
            .context("cannot record the new admin token")?;
        *lock(&self.read) = None;
        if let Err(e) = replace_file(&self.file, &token) {
            tracing::warn!(file = %self.file.display(), error = %e, "the new admin token is recorded, but not written to this replica's file");
        }
        tracing::warn!("admin token rotated: the old one and every admin web UI session are over");
        Ok(token)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `token` over the file, through a private temporary file renamed
/// into place (never a moment with a half-written token).
fn replace_file(path: &Path, token: &Token) -> anyhow::Result<()> {
    let temporary = path.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    writeln!(file, "{}", token.expose_secret())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Reads the admin token from `path`, creating the file with a new token if
/// there is none. A file every user can read is refused: the token grants
/// everything. (Group-readable is accepted: that is how Kubernetes mounts
/// a Secret for a non-root container, through its fsGroup.)
pub fn load_or_create(path: &Path) -> anyhow::Result<Token> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o007 != 0 {
                bail!(
                    "admin token file {} is readable by other users; run chmod 600 on it",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read admin token file {}", path.display()))?;
            Token::parse_kind(&text, TokenKind::Admin).with_context(|| {
                format!("admin token file {} holds no admin token", path.display())
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = Token::generate(TokenKind::Admin);
            // create_new: never overwrite a token another kas just wrote.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create admin token file {}", path.display()))?;
            writeln!(file, "{}", token.expose_secret())
                .with_context(|| format!("cannot write admin token file {}", path.display()))?;
            tracing::warn!(file = %path.display(), "created the admin token; read it from this file");
            Ok(token)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot stat admin token file {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_file_once_and_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let first = load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(&path).expect("read back");
        assert_eq!(first, second);
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        load_or_create(&path).expect("created");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_create(&path).expect_err("too open").to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
