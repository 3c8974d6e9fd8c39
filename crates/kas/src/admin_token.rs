//! The administrator's token: created on first start, written to a file only
//! kas's user can read, and never logged. The REST API requires it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use tether_credentials::{Token, TokenKind};

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
