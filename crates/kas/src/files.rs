//! Files that hold secrets: written readable by their owner only.

use std::path::Path;

use anyhow::Context;

/// Writes `contents` to `path` with mode 0600 (a private key, a kubeconfig
/// holding a credential), replacing what was there.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
