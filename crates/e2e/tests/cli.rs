//! The `kas` CLI against a real `kas serve`: the operations a person runs,
//! and no token in the server's log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tether_e2e::kas_binary;

/// A `kas serve` on free loopback ports, stopped (SIGKILL) on drop.
struct Server {
    child: Child,
    api: String,
    data: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    fn start() -> Self {
        Self::start_api_on("127.0.0.1")
    }

    /// kas with its REST API on `ip` (beyond loopback it serves TLS); the
    /// CLI reaches it on 127.0.0.1 either way.
    fn start_api_on(ip: &str) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let log = data.path().join("kas.log");
        let mut child = Command::new(kas_binary())
            .args(["serve", "--data-dir"])
            .arg(data.path().join("kas"))
            .arg(format!("--api-listen={ip}:0"))
            .args(["--admin-listen=127.0.0.1:0", "--agent-listen=127.0.0.1:0"])
            .arg("--k8s-proxy-listen=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("kas starts");
        let api = tether_e2e::Bound::wait(&data.path().join("kas"), &mut child, || {
            std::fs::read_to_string(&log).unwrap_or_default()
        })
        .api;
        let scheme = if ip.starts_with("127.") {
            "http"
        } else {
            "https"
        };
        let server = Server {
            child,
            api: format!("{scheme}://127.0.0.1:{}", api.port()),
            data,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.token_file().exists() || !server.kas(&["agent", "list"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "kas did not start: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn token_file(&self) -> PathBuf {
        self.data.path().join("kas/admin-token")
    }

    fn kas(&self, args: &[&str]) -> Output {
        Command::new(kas_binary())
            .args(args)
            .arg(format!("--server={}", self.api))
            .arg("--admin-token-file")
            .arg(self.token_file())
            .arg("--ca-cert")
            .arg(self.data.path().join("kas/agent-ca.crt"))
            .env_remove("KAS_ADMIN_TOKEN")
            .env("XDG_CONFIG_HOME", self.data.path())
            .output()
            .expect("kas CLI runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kas(args);
        assert!(
            out.status.success(),
            "kas {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("tthr_agent_"))
        .expect("the token is printed")
        .to_owned()
}

#[test]
fn registers_a_project_agent_and_token_and_revokes_it() {
    let server = Server::start();
    assert!(
        server
            .ok(&[
                "project",
                "add",
                "team/config",
                "--url",
                "/srv/git/config.git"
            ])
            .contains("registered")
    );
    let listed = server.ok(&["project", "list"]);
    assert!(
        listed.starts_with("ID") && listed.contains("team/config"),
        "{listed}"
    );
    assert!(
        server
            .ok(&["project", "show", "team/config"])
            .contains("/srv/git/config.git")
    );

    let created = server.ok(&["agent", "create", "prod", "--project", "team/config"]);
    assert!(
        created.contains(".gitlab/agents/prod/config.yaml"),
        "{created}"
    );
    assert!(server.ok(&["agent", "list"]).contains("prod"));

    let out = server.ok(&[
        "token",
        "create",
        "prod",
        "--name",
        "first",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);
    let token = token_in(&out);
    let listed = server.ok(&["token", "list", "prod"]);
    assert!(
        listed.contains("first") && !listed.contains(&token),
        "{listed}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["token", "list", "prod", "-o", "json"]))
            .expect("JSON output");
    let id = json[0]["id"].as_i64().expect("token id");
    assert!(
        server
            .ok(&["token", "revoke", "prod", &id.to_string()])
            .contains("revoked")
    );
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["token", "list", "prod", "-o", "json"]))
            .expect("JSON output");
    assert!(json[0]["revoked_at"].is_string(), "{json}");

    // Secrets never reach the server's log.
    let admin = std::fs::read_to_string(server.token_file()).expect("admin token");
    let log = server.log_text();
    assert!(log.contains("agent token created"), "{log}");
    assert!(
        !log.contains(&token) && !log.contains(admin.trim()),
        "a token reached the log:\n{log}"
    );
}

#[test]
fn errors_carry_the_servers_reason_and_a_wrong_token_is_refused() {
    let server = Server::start();
    let out = server.kas(&["agent", "create", "prod", "--project", "no/such"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("no/such"), "{err}");

    let other = server.data.path().join("other-token");
    std::fs::write(&other, format!("tthr_admin_{}\n", "x".repeat(43))).expect("write");
    let out = Command::new(kas_binary())
        .args([
            "agent",
            "list",
            "--server",
            &server.api,
            "--admin-token-file",
        ])
        .arg(&other)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the admin token"));
}

#[test]
fn reads_server_and_token_from_the_config_file() {
    let server = Server::start();
    let config = server.data.path().join("tether/kas-cli.yaml");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &config,
        format!(
            "server: {}\nadmin_token_file: {}\n",
            server.api,
            server.token_file().display()
        ),
    )
    .expect("write config");
    let out = Command::new(kas_binary())
        .args(["project", "list"])
        .env("XDG_CONFIG_HOME", server.data.path())
        .env_remove("KAS_SERVER")
        .env_remove("KAS_ADMIN_TOKEN")
        .env_remove("KAS_ADMIN_TOKEN_FILE")
        .current_dir(Path::new("/"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID"));
}

#[test]
fn beyond_loopback_the_api_speaks_tls_only() {
    let server = Server::start_api_on("0.0.0.0");
    assert!(server.api.starts_with("https://"));
    // The CLI, with kas's CA, works over HTTPS.
    let listed = server.ok(&["agent", "list"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    // Plain HTTP to the same port gets no API.
    let plain = server.api.replace("https://", "http://");
    let out = Command::new(kas_binary())
        .args(["agent", "list", "--server", &plain, "--admin-token-file"])
        .arg(server.token_file())
        .env_remove("KAS_ADMIN_TOKEN")
        .output()
        .expect("kas CLI runs");
    assert!(!out.status.success(), "plain HTTP was answered");
    // Without the CA, the certificate is not trusted.
    let out = Command::new(kas_binary())
        .args([
            "agent",
            "list",
            "--server",
            &server.api,
            "--admin-token-file",
        ])
        .arg(server.token_file())
        .env_remove("KAS_ADMIN_TOKEN")
        .env_remove("KAS_CA_CERT")
        .output()
        .expect("kas CLI runs");
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
}

/// The help says what each command does, and `kas serve --help` lists
/// only what serve takes (the client commands' `--server`, `--ca-cert`
/// and `--output` are theirs alone).
#[test]
fn help_describes_every_command_and_serve_lists_only_its_own_options() {
    let help = |args: &[&str]| {
        let out = Command::new(kas_binary())
            .args(args)
            .arg("--help")
            .output()
            .expect("kas runs");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve"]);
    for client_only in ["--server", "--ca-cert", "--output"] {
        assert!(!serve.contains(client_only), "serve lists {client_only}");
    }
    assert!(serve.contains("--egress-allow") && serve.contains("--render-sandbox"));
    for group in ["agent", "project"] {
        let text = help(&[group]);
        for line in text.lines().filter(|l| {
            let word = l.split_whitespace().next().unwrap_or_default();
            l.starts_with("  ")
                && !l.trim_start().starts_with('-')
                && ["list", "show", "delete"].contains(&word)
        }) {
            assert!(
                line.split_whitespace().count() > 1,
                "{group}: {line:?} has no help text"
            );
        }
        assert!(text.contains("  list "), "{group}: {text}");
    }
}
