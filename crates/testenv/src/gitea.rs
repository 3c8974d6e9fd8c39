//! A real git host for tests: Gitea (built from its Go module by
//! `scripts/gitea.sh`) on a free loopback port, with an admin user, SQLite
//! in a temp folder, webhooks allowed to loopback. Repositories are made
//! and pushed to over HTTP; its API (repositories, webhooks, commit
//! statuses) is reached with [`GitHost::api`]. It runs under the same
//! supervisor as the cluster, so it dies with its owner.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{remove_stale_temp_dirs, temp_dir_for_this_process};
use crate::error::{Error, Result};
use crate::supervisor::{ProcessSpec, Supervisor};

/// The admin user every test host has.
pub const USER: &str = "tether";
pub const PASSWORD: &str = "tether-test-password-1";

/// A running Gitea.
#[derive(Debug)]
pub struct GitHost {
    supervisor: Supervisor,
    dir: PathBuf,
    addr: SocketAddr,
}

impl GitHost {
    /// Starts Gitea and creates the admin user; ready when its API answers.
    pub async fn start() -> Result<Self> {
        remove_stale_temp_dirs();
        let bin = crate::binaries::gitea()?;
        let program = bin.join("gitea");
        let assets = bin.join("../share/gitea");
        let dir = temp_dir_for_this_process().with_extension(format!("gitea{}", suffix()));
        std::fs::create_dir_all(&dir).map_err(Error::io("create the Gitea folder"))?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(Error::io("find a free port"))?;
        let secret: String = (0..32)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        let config = format!(
            "RUN_MODE = prod\nI_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\nWORK_PATH = {work}\n\
             [server]\nHTTP_ADDR = 127.0.0.1\nHTTP_PORT = {port}\nROOT_URL = http://{addr}/\n\
             STATIC_ROOT_PATH = {assets}\nDISABLE_SSH = true\nOFFLINE_MODE = true\n\
             [database]\nDB_TYPE = sqlite3\nPATH = {work}/gitea.db\n\
             [security]\nINSTALL_LOCK = true\nSECRET_KEY = {secret}\n\
             [webhook]\nALLOWED_HOST_LIST = loopback\nDELIVER_TIMEOUT = 5\n\
             [repository]\nDEFAULT_BRANCH = main\n\
             [log]\nLEVEL = Warn\n",
            work = dir.display(),
            port = addr.port(),
            assets = assets.display(),
        );
        let ini = dir.join("app.ini");
        std::fs::write(&ini, config).map_err(Error::io("write app.ini"))?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new(&program)
                .arg("--config")
                .arg(&ini)
                .args(args)
                .env("GITEA_WORK_DIR", &dir)
                .output()
                .map_err(Error::io("run gitea"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(Error::Binaries(format!(
                    "gitea {args:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))),
            }
        };
        run(&["migrate"])?;
        run(&[
            "admin",
            "user",
            "create",
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--email",
            "tether@example.com",
            "--admin",
            "--must-change-password=false",
        ])?;
        let supervisor = Supervisor::start()?;
        supervisor.spawn(ProcessSpec {
            name: "gitea".into(),
            program,
            args: vec!["--config".into(), ini.into_os_string(), "web".into()],
            log: dir.join("gitea.log"),
            run_as: None,
        })?;
        let host = GitHost {
            supervisor,
            dir,
            addr,
        };
        crate::wait::wait_until("Gitea to answer", Duration::from_secs(60), || {
            let supervisor = &host.supervisor;
            let ready = host.api("GET", "/api/v1/version", None).is_ok();
            async move {
                supervisor.check()?;
                Ok::<_, Error>(ready.then_some(()))
            }
        })
        .await?;
        Ok(host)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The clone URL of `repo` of the admin user, with its credentials.
    pub fn push_url(&self, repo: &str) -> String {
        format!("http://{USER}:{PASSWORD}@{}/{USER}/{repo}.git", self.addr)
    }

    /// The anonymous clone URL of a public `repo` of the admin user.
    pub fn clone_url(&self, repo: &str) -> String {
        format!("{}/{USER}/{repo}.git", self.url())
    }

    /// Calls Gitea's API as the admin user: the answer's JSON (`Null` for
    /// an empty body), or an error naming the status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) = http(self.addr, method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(Error::Binaries(format!(
                "Gitea {method} {path}: {status} {text}"
            )));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::Binaries(format!("Gitea {method} {path}: {e}: {text}")))
    }

    /// Creates a public repository of the admin user, empty.
    pub fn create_repo(&self, name: &str) -> Result<Value> {
        self.api(
            "POST",
            "/api/v1/user/repos",
            Some(&serde_json::json!({ "name": name, "private": false, "default_branch": "main" })),
        )
    }

    /// An access token of the admin user that may write repositories
    /// (commit statuses among them).
    pub fn create_token(&self, name: &str) -> Result<String> {
        let created = self.api(
            "POST",
            &format!("/api/v1/users/{USER}/tokens"),
            Some(&serde_json::json!({ "name": name, "scopes": ["write:repository"] })),
        )?;
        created["sha1"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Binaries(format!("Gitea made no token: {created}")))
    }

    /// Gitea's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gitea.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for GitHost {
    fn drop(&mut self) {
        self.supervisor.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.0 request with basic auth (HTTP/1.0: the answer comes
/// whole, without chunking, and the connection closes after it).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
    let io = |what: &'static str| Error::io(what);
    let mut stream = std::net::TcpStream::connect(addr).map_err(io("connect to Gitea"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("set a timeout"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = base64(format!("{USER}:{PASSWORD}").as_bytes());
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io("write to Gitea"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(io("read from Gitea"))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Binaries(format!("Gitea answered {answer:?}")))?;
    let text = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, text))
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(super::base64(b"tether:pw"), "dGV0aGVyOnB3");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"a"), "YQ==");
    }
}
