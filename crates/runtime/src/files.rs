//! Files that hold secrets: written readable by their owner only.

use std::io;
use std::path::Path;

/// Writes `contents` to `path` with mode 0600 (a private key, a kubeconfig
/// holding a credential), replacing what was there. The error says which
/// step failed and on which path.
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let context = |step: &str| {
        let path = path.display().to_string();
        let step = step.to_owned();
        move |e: io::Error| io::Error::new(e.kind(), format!("cannot {step} {path}: {e}"))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(context("create"))?;
    // `mode` applies only to a file it creates: a file that was there keeps
    // its mode unless it is set again, before anything secret is written.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(context("make private"))?;
    file.write_all(contents.as_bytes())
        .map_err(context("write"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_existing_readable_file_becomes_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "secret").expect("written");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "secret");
    }

    #[test]
    fn the_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing/kubeconfig");
        let error = write_private(&path, "secret").expect_err("no folder");
        assert!(error.to_string().contains("missing/kubeconfig"), "{error}");
    }
}
