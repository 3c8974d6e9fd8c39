//! Where the cluster's programs are.
//!
//! `scripts/cluster-binaries.sh` builds them from the official Go modules into
//! a cache folder keyed by version and prints that folder; it is a no-op when
//! they are already built. Setting `TETHER_KUBE_BIN` skips the script, for a
//! folder built elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Environment variable naming a folder that already holds the binaries.
pub const BIN_ENV: &str = "TETHER_KUBE_BIN";
/// Environment variable naming a folder that already holds kas's render
/// tools (`helm`, `kustomize`).
pub const RENDER_BIN_ENV: &str = "TETHER_RENDER_BIN";

const BUILD_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/cluster-binaries.sh"
);
/// Environment variable naming a folder that already holds the OCI
/// registry (`registry`) the tests push charts to.
pub const REGISTRY_BIN_ENV: &str = "TETHER_REGISTRY_BIN";
const REGISTRY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/oci-registry.sh");

/// The folder holding an OCI registry, distribution's
/// (`scripts/oci-registry.sh`, a no-op when built), found once per process.
pub fn oci_registry() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir = FOUND
        .get_or_init(|| run_script(REGISTRY_BIN_ENV, REGISTRY_SCRIPT).map_err(|e| e.to_string()));
    dir.clone().map_err(Error::Binaries)
}

/// Environment variable naming a folder that already holds Jaeger v2 and
/// promtool (`jaeger`, `promtool`).
pub const OBSERVABILITY_BIN_ENV: &str = "TETHER_OBSERVABILITY_BIN";
const OBSERVABILITY_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/observability-tools.sh"
);

/// The folder holding Jaeger v2 and promtool
/// (`scripts/observability-tools.sh`, a no-op when built), found once per
/// process.
pub fn observability_tools() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir = FOUND.get_or_init(|| {
        run_script(OBSERVABILITY_BIN_ENV, OBSERVABILITY_SCRIPT).map_err(|e| e.to_string())
    });
    dir.clone().map_err(Error::Binaries)
}

/// Environment variable naming a folder that already holds sops and age
/// (`sops`, `age`, `age-keygen`).
pub const SIGNING_BIN_ENV: &str = "TETHER_SIGNING_BIN";
const SIGNING_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/signing-tools.sh"
);

/// The folder holding sops, age and age-keygen, which encrypt the secrets
/// of the SOPS tests (`scripts/signing-tools.sh`, a no-op when built),
/// found once per process. The signed-commit tests' `ssh-keygen` and `gpg`
/// are Debian's, on the PATH.
pub fn signing_tools() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir = FOUND
        .get_or_init(|| run_script(SIGNING_BIN_ENV, SIGNING_SCRIPT).map_err(|e| e.to_string()));
    dir.clone().map_err(Error::Binaries)
}

/// Environment variable naming a folder that already holds Gitea
/// (`gitea`, with its assets in `../share/gitea`).
pub const GITEA_BIN_ENV: &str = "TETHER_GITEA_BIN";
const GITEA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/gitea.sh");

/// The folder holding Gitea (`scripts/gitea.sh`, a no-op when built),
/// found once per process.
pub fn gitea() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir =
        FOUND.get_or_init(|| run_script(GITEA_BIN_ENV, GITEA_SCRIPT).map_err(|e| e.to_string()));
    dir.clone().map_err(Error::Binaries)
}

const RENDER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/render-tools.sh");

/// The folder of the tools kas renders charts and kustomizations with
/// (`scripts/render-tools.sh`, a no-op when built), found once per process.
pub fn render_tools() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir =
        FOUND.get_or_init(|| run_script(RENDER_BIN_ENV, RENDER_SCRIPT).map_err(|e| e.to_string()));
    dir.clone().map_err(Error::Binaries)
}

/// The folder of cluster programs, plus the kwok stage configuration that the
/// build script assembles from the kwok module beside it.
#[derive(Clone, Debug)]
pub struct Binaries {
    dir: PathBuf,
}

// === impl Binaries ===

impl Binaries {
    /// Finds the binaries, building them on first use in this process.
    pub fn locate() -> Result<Self> {
        static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
        let dir = FOUND.get_or_init(|| find().map_err(|e| e.to_string()));
        match dir {
            Ok(dir) => Ok(Self { dir: dir.clone() }),
            Err(e) => Err(Error::Binaries(e.clone())),
        }
    }

    /// A folder laid out as the build script lays it out.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    pub fn kubectl(&self) -> PathBuf {
        self.path("kubectl")
    }

    pub fn helm(&self) -> PathBuf {
        self.path("helm")
    }

    /// kwok's node and pod lifecycle stages (the upstream "fast" set).
    pub fn kwok_stages(&self) -> PathBuf {
        self.dir.join("../share/kwok-stages.yaml")
    }
}

fn find() -> Result<PathBuf> {
    run_script(BIN_ENV, BUILD_SCRIPT)
}

/// The folder `script` prints last, unless `env` names one.
fn run_script(env: &str, script: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Ok(PathBuf::from(dir));
    }
    // stderr is inherited so that a person sees the (long, cold) build progress.
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(Error::io(format!("run {script}")))?;
    if !out.status.success() {
        return Err(Error::Binaries(format!(
            "{script} failed with {}",
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::Binaries(format!("{script} printed no folder")))?;
    Ok(PathBuf::from(dir))
}

/// The Kubernetes release the cluster binaries are built at, read from
/// `scripts/versions.sh`, the single place where it is pinned.
pub fn pinned_kube_version() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/versions.sh");
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("read {path}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("KUBE_VERSION="))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| Error::Binaries(format!("{path} pins no KUBE_VERSION")))
}
