//! agentk and kas over the agent channel, as real processes: a connected
//! agent shows in the API, a revoked token drops it within 2 s and its
//! reconnects are refused with the reason, and no token reaches a log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KAS: &str = env!("CARGO_BIN_EXE_kas");

/// agentk is another package's binary: it sits beside this test's folder in
/// the target directory (scripts/test.sh builds every binary first).
fn agentk_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("agentk");
    assert!(
        path.exists(),
        "{} is missing: run cargo build --workspace --bins",
        path.display()
    );
    path
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("process starts");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    kas: Proc,
    api: String,
    agent_addr: String,
    /// The listen addresses kas was started with, to restart it on them.
    listen: [std::net::SocketAddr; 3],
    /// agentk's probe listener.
    probes: std::net::SocketAddr,
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}

/// The status code agentk's probe listener answers for `path`.
fn probe(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: agentk\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

fn spawn_kas(
    dir: &std::path::Path,
    [api, admin, agent]: [std::net::SocketAddr; 3],
    log: &str,
) -> Proc {
    let mut cmd = Command::new(KAS);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.join("kas"))
        .arg(format!("--api-listen={api}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--agent-listen={agent}"));
    Proc::spawn(cmd, dir.join(log))
}

impl Setup {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = [free_port(), free_port(), free_port()];
        let kas = spawn_kas(dir.path(), listen, "kas.log");
        let setup = Setup {
            api: format!("http://{}", listen[0]),
            agent_addr: format!("grpcs://{}", listen[2]),
            listen,
            probes: free_port(),
            kas,
            dir,
        };
        setup.wait_for_api();
        setup
    }

    fn wait_for_api(&self) {
        wait("kas to serve its API", Duration::from_secs(30), || {
            self.dir.path().join("kas/admin-token").exists()
                && self.cli(&["agent", "list"]).is_some()
        });
    }

    /// Kills kas outright (SIGKILL: no graceful close for the agents) and
    /// starts it again on the same data folder and addresses.
    fn kill_and_restart_kas(&mut self) {
        let _ = self.kas.child.kill();
        let _ = self.kas.child.wait();
        self.kas = spawn_kas(self.dir.path(), self.listen, "kas-restarted.log");
        self.wait_for_api();
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(KAS)
            .args(args)
            .args(["--server", &self.api, "--admin-token-file"])
            .arg(self.dir.path().join("kas/admin-token"))
            .env_remove("KAS_ADMIN_TOKEN")
            .output()
            .expect("CLI runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Registers a project, the agent `name` in it, and a token (token id 1
    /// on a fresh kas), with the CLI; returns the token.
    fn register_agent(&self, name: &str) -> String {
        self.cli(&["project", "add", "team/config", "--url", "/srv/git/config"])
            .expect("project");
        self.cli(&["agent", "create", name, "--project", "team/config"])
            .expect("agent");
        let created = self
            .cli(&["token", "create", name, "--name", "first"])
            .expect("token");
        created
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned()
    }

    fn connections(&self, agent: &str) -> Vec<serde_json::Value> {
        let text = self
            .cli(&["agent", "show", agent, "-o", "json"])
            .expect("agent shown");
        let agent: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        agent["connections"].as_array().cloned().unwrap_or_default()
    }

    fn agentk(&self, token: &str) -> Proc {
        let token_file = self.dir.path().join("agent-token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        let cluster = tether_testenv::shared();
        let mut cmd = Command::new(agentk_binary());
        cmd.arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .args(["--kas-address", &self.agent_addr, "--token-file"])
            .arg(&token_file)
            .arg("--ca-cert")
            .arg(self.dir.path().join("kas/agent-ca.crt"))
            .arg(format!("--observability-listen={}", self.probes))
            .env("POD_NAMESPACE", "tether-test")
            .env("POD_NAME", "agentk-0")
            .env_remove("AGENTK_TOKEN");
        Proc::spawn(cmd, self.dir.path().join("agentk.log"))
    }
}

fn wait(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_connected_agent_shows_and_a_revoked_token_drops_it_within_two_seconds() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait(
        "the agent to show as connected",
        Duration::from_secs(60),
        || setup.connections("prod").len() == 1,
    );
    let connection = &setup.connections("prod")[0];
    assert_eq!(connection["pod_name"], "agentk-0");
    assert_eq!(connection["pod_namespace"], "tether-test");
    let pinned = tether_testenv::pinned_kube_version().expect("pinned version");
    assert_eq!(connection["cluster_version"], pinned.as_str());
    wait("agentk to be ready", Duration::from_secs(5), || {
        probe(setup.probes, "/readiness") == Some(200)
    });

    setup
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoke");
    let revoked_at = Instant::now();
    wait(
        "the revoked agent to be dropped",
        Duration::from_secs(2),
        || setup.connections("prod").is_empty(),
    );
    eprintln!("dropped {:?} after revocation", revoked_at.elapsed());
    wait(
        "agentk to report the rejection",
        Duration::from_secs(10),
        || {
            agentk.log().contains("kas rejected the agent token")
                && agentk.log().contains("revoked")
        },
    );
    // Its reconnect (after a few seconds of backoff) is refused with the reason.
    wait(
        "the reconnect to be refused",
        Duration::from_secs(20),
        || {
            setup.kas.log().contains("agent connection refused")
                && setup.kas.log().contains("was revoked")
        },
    );
    assert!(setup.connections("prod").is_empty());
    assert_eq!(
        probe(setup.probes, "/readiness"),
        Some(503),
        "an agent cut off from kas is not ready"
    );
    assert_eq!(probe(setup.probes, "/liveness"), Some(200));

    for (name, log) in [("kas", setup.kas.log()), ("agentk", agentk.log())] {
        assert!(
            !log.contains(&token),
            "the agent token reached the {name} log"
        );
    }
}

#[test]
fn an_unknown_token_is_refused_with_a_clear_message() {
    let setup = Setup::start();
    let stranger = tether_credentials::Token::generate(tether_credentials::TokenKind::Agent);
    let agentk = setup.agentk(stranger.expose_secret());
    wait(
        "agentk to report the refusal",
        Duration::from_secs(60),
        || {
            agentk.log().contains("kas rejected the agent token")
                && agentk.log().contains("unknown agent token")
        },
    );
    assert!(!agentk.log().contains(stranger.expose_secret()));
}

#[test]
fn agents_reconnect_by_themselves_after_kas_is_killed_and_restarted() {
    let mut setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait("the agent to connect", Duration::from_secs(60), || {
        setup.connections("prod").len() == 1
    });

    setup.kill_and_restart_kas();
    wait(
        "the agent to reconnect to the new kas",
        Duration::from_secs(60),
        || setup.connections("prod").len() == 1,
    );
    let agents: serde_json::Value =
        serde_json::from_str(&setup.cli(&["agent", "list", "-o", "json"]).expect("list"))
            .expect("JSON");
    assert_eq!(
        agents.as_array().map(Vec::len),
        Some(1),
        "no duplicate agent records: {agents}"
    );
    // kas registers a session before it sends Welcome; agentk logs on Welcome.
    wait(
        "agentk to log its second session",
        Duration::from_secs(10),
        || agentk.log().matches("connected to kas").count() == 2,
    );
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_are_rate_limited() {
    use tether_proto::v1::agent_channel_client::AgentChannelClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let setup = Setup::start();
    let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt")).expect("dev CA");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let uri = setup.agent_addr.replace("grpcs://", "https://");
    let channel = Endpoint::from_shared(uri)
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS connection to kas");
    let mut client = AgentChannelClient::new(channel);

    let mut codes = Vec::new();
    for _ in 0..(kas::channel::ratelimit::MAX_FAILURES + 1) {
        let bogus = tether_credentials::Token::generate(tether_credentials::TokenKind::Agent);
        let mut request = tonic::Request::new(tokio_stream::iter(Vec::<
            tether_proto::v1::AgentMessage,
        >::new()));
        let bearer = format!("Bearer {}", bogus.expose_secret())
            .parse()
            .expect("header");
        request.metadata_mut().insert("authorization", bearer);
        let status = client
            .session(request)
            .await
            .expect_err("a bogus token is refused");
        codes.push(status.code());
    }
    let (last, earlier) = codes.split_last().expect("attempts");
    assert!(
        earlier.iter().all(|c| *c == tonic::Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(*last, tonic::Code::ResourceExhausted, "{codes:?}");
}
