//! A real PostgreSQL server for tests: the programs of Debian's
//! `postgresql` package (installed by `scripts/install-services.sh`),
//! `initdb` into a folder of this test process, a free loopback port, and
//! the same supervisor as the cluster, so the server dies with its owner.
//!
//! PostgreSQL refuses to run as root; as root (CI, containers) it runs as
//! the package's `postgres` user. Each test asks for a database of its own
//! ([`Postgres::create_database`]) on the one server of its process
//! ([`shared_postgres`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cluster::{remove_stale_temp_dirs, temp_dir_for_this_process};
use crate::error::{Error, Result};
use crate::supervisor::{ProcessSpec, Supervisor};

/// Environment variable naming the folder of PostgreSQL's programs
/// (`initdb`, `postgres`, `psql`); default: the newest under
/// `/usr/lib/postgresql/*/bin`.
pub const PG_BIN_ENV: &str = "TETHER_PG_BIN";

/// The role tests connect as (a superuser, trusted on loopback).
const ROLE: &str = "tether";

/// A PostgreSQL server owned by a test process.
#[derive(Debug)]
pub struct Postgres {
    supervisor: Supervisor,
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    next_database: AtomicU32,
}

impl Postgres {
    /// Initializes a data folder and starts the server on a free port.
    pub async fn start() -> Result<Self> {
        remove_stale_temp_dirs();
        let bin = pg_bin()?;
        let dir = temp_dir_for_this_process().with_extension("pg");
        let data = dir.join("data");
        let socket = dir.join("socket");
        std::fs::create_dir_all(&socket).map_err(Error::io("create the PostgreSQL folder"))?;
        let run_as = postgres_user()?;
        if let Some((uid, gid)) = run_as {
            // The server's user must own its folders and reach them.
            for path in [&dir, &socket] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(Error::io(format!("chown {}", path.display())))?;
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            ROLE,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if let Some((uid, gid)) = run_as {
            std::os::unix::process::CommandExt::uid(&mut initdb, uid);
            std::os::unix::process::CommandExt::gid(&mut initdb, gid);
        }
        let out = initdb
            .output()
            .map_err(Error::io(format!("run {}", bin.join("initdb").display())))?;
        if !out.status.success() {
            return Err(Error::Binaries(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let supervisor = Supervisor::start()?;
        let args: Vec<OsString> = [
            "-D".into(),
            data.into_os_string(),
            "-p".into(),
            port.to_string().into(),
            "-k".into(),
            socket.into_os_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            // Test data is thrown away: durability buys nothing here.
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "synchronous_commit=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=300".into(),
        ]
        .into();
        supervisor.spawn(ProcessSpec {
            name: "postgres".into(),
            program: bin.join("postgres"),
            args,
            log: dir.join("postgres.log"),
            run_as,
        })?;
        let server = Postgres {
            supervisor,
            bin,
            dir,
            port,
            next_database: AtomicU32::new(0),
        };
        crate::wait::wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || async {
                server.supervisor.check()?;
                Ok::<_, Error>(server.psql("postgres", "SELECT 1").is_ok().then_some(()))
            },
        )
        .await?;
        Ok(server)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> Result<String> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one SQL command with `psql`; its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
            .output()
            .map_err(Error::io("run psql"))?;
        if !out.status.success() {
            return Err(Error::Binaries(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's folder (its log is `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.supervisor.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PostgreSQL server shared by every test of this process, started on
/// first use (like [`crate::shared`]).
///
/// # Panics
/// If it cannot start; the message says why (PostgreSQL not installed, …).
pub fn shared_postgres() -> &'static Postgres {
    static SHARED: OnceLock<std::result::Result<Postgres, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| crate::start_detached("PostgreSQL", Postgres::start));
    match started {
        Ok(server) => server,
        Err(e) => panic!("test PostgreSQL failed to start: {e}"),
    }
}

/// The folder of PostgreSQL's programs.
fn pg_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        Error::Binaries(format!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run scripts/install-services.sh, or set {PG_BIN_ENV}"
        ))
    })
}

/// As root: the `postgres` user's ids (the package creates it).
fn postgres_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(Error::io("read /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            Error::Binaries(
                "running as root, and there is no postgres user to run PostgreSQL as".into(),
            )
        })
}

fn free_port() -> Result<u16> {
    Ok(crate::ports::free()
        .map_err(Error::io("find a free port"))?
        .port())
}
