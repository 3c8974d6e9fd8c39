//! Tether as an operator runs it: kas and agentk as real processes, against
//! a real cluster (`tether-testenv`), with PostgreSQL and HAProxy where a
//! test needs them. This library is the harness the process-level tests
//! (`tests/`) and benchmarks (`benches/`) share:
//!
//! - [`Setup`]: one kas (SQLite in a temp dir) with its CLI, agents
//!   registered through it, agentk processes connected to it;
//! - [`fleet`]: kas replicas on one PostgreSQL behind HAProxy;
//! - [`raw`]: a hand-written agent client, for what agentk never sends;
//! - [`receiver`]: a loopback HTTP receiver for what kas posts out
//!   (commit statuses, notifications);
//! - [`bench`]: what the benchmarks share (simulated agents, the load
//!   client, figures from `/proc`).
//!
//! The binaries are the workspace's, built first (`cargo build --workspace
//! --bins`, as `scripts/test.sh` does; `--release` for benchmarks): a test
//! finds them beside its own folder in the target directory.

pub mod bench;
pub mod browser;
pub mod fleet;
pub mod gitea;
pub mod images;
pub mod raw;
pub mod receiver;
pub mod rollouts;
pub mod traces;
pub mod ui_client;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The kas binary of this build profile.
pub fn kas_binary() -> PathBuf {
    workspace_binary("kas")
}

/// The agentk binary of this build profile.
pub fn agentk_binary() -> PathBuf {
    workspace_binary("agentk")
}

/// A binary of the workspace: it sits beside the folder of the running test
/// or bench (`target/<profile>/deps/`) in the target directory.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile.join(name);
    let release = if profile.ends_with("release") {
        " --release"
    } else {
        ""
    };
    assert!(
        path.exists(),
        "{} is missing: run cargo build --workspace --bins{release}",
        path.display()
    );
    path
}

#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    log: PathBuf,
    /// An agentk's observability listener (`/readiness`, `/metrics`).
    pub probes: Option<std::net::SocketAddr>,
}

impl Proc {
    pub fn spawn(cmd: Command, log: PathBuf) -> Self {
        Self::spawn_with_stdout(cmd, log, Stdio::null())
    }

    /// Like [`Proc::spawn`], with the child's standard output as given
    /// (`Stdio::piped()` to read it from `child.stdout`).
    pub fn spawn_with_stdout(mut cmd: Command, log: PathBuf, stdout: Stdio) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        // A test or bench killed outright must not leave kas or agentk
        // running: the kernel kills the child when its parent dies.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .expect("process starts");
        Proc {
            child,
            log,
            probes: None,
        }
    }

    /// The sum of the samples of agentk's metric `name` (0 when it shows
    /// none, or this is not an agentk).
    pub fn metric(&self, name: &str) -> f64 {
        match self.probes.and_then(|addr| http_get(addr, "/metrics")) {
            Some((200, text)) => metric_sum(&text, name),
            _ => 0.0,
        }
    }

    /// What agentk's `/readiness` answers: status and why.
    pub fn readiness(&self) -> Option<(u16, String)> {
        self.probes.and_then(|addr| http_get(addr, "/readiness"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub kas: Proc,
    pub api: String,
    /// The agent endpoint, host and port (`127.0.0.1:8152`).
    pub agent_endpoint: std::net::SocketAddr,
    pub agent_addr: String,
    /// The listen addresses kas was started with, to restart it on them.
    listen: [std::net::SocketAddr; 4],
    /// kas's Kubernetes API proxy (`https://…/k8s-proxy`).
    pub proxy: std::net::SocketAddr,
    /// kas's admin listener (`/healthz`, `/metrics`).
    pub admin: std::net::SocketAddr,
    /// Extra `kas serve` flags.
    serve_args: Vec<String>,
    /// How kas is told where helm and kustomize are.
    tools: ToolsGiven,
    /// agentk's probe listener.
    pub probes: std::net::SocketAddr,
    /// The namespace agentk says it runs in (where inventories go).
    pub pod_namespace: String,
}

/// A loopback port for a server started once (`tether_testenv::ports`).
pub fn free_port() -> std::net::SocketAddr {
    tether_testenv::ports::free().expect("a free port")
}

/// A loopback port for a server restarted on the same address
/// (`tether_testenv::ports::stable`).
pub fn stable_port() -> std::net::SocketAddr {
    tether_testenv::ports::stable().expect("a free port")
}

/// The addresses a kas bound, as it names them in `listening.json` in its
/// data folder.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub api: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub agent: std::net::SocketAddr,
    pub proxy: std::net::SocketAddr,
}

impl Bound {
    /// What kas with data folder `data` bound, once it has said so.
    pub fn read(data: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(data.join("listening.json")).ok()?;
        let bound: serde_json::Value = serde_json::from_str(&text).expect("listening.json");
        let addr = |name: &str| {
            bound[name]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("listening.json names no {name} address: {text}"))
        };
        Some(Bound {
            api: addr("api"),
            admin: addr("admin"),
            agent: addr("agent"),
            proxy: addr("k8s-proxy"),
        })
    }

    /// Waits until kas `child` with data folder `data` names what it
    /// bound; panics with `log()` if it exits first.
    pub fn wait(data: &Path, child: &mut std::process::Child, log: impl Fn() -> String) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(bound) = Self::read(data) {
                return bound;
            }
            if let Ok(Some(exited)) = child.try_wait() {
                panic!("kas exited at start ({exited}): {}", log());
            }
            assert!(
                Instant::now() < deadline,
                "kas named no bound addresses within 30s: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The status code agentk's probe listener answers for `path`.
pub fn probe(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// One HTTP/1.1 POST of `body` with `headers` on `stream` (its
/// `Connection: close`): the status code, 0 when none came.
pub fn post_raw(
    mut stream: std::net::TcpStream,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    use std::io::{Read, Write};
    let mut request = format!("POST {path} HTTP/1.1\r\nhost: kas\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).expect("sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A plain HTTP/1.0 GET: status and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// How a test's kas is told where helm and kustomize are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolsGiven {
    /// `--helm` and `--kustomize` naming the pinned tools.
    #[default]
    AsFlags,
    /// No flags: the pinned tools' folder first on kas's `PATH`, before
    /// the test's own, as on a host where an operator installed them.
    OnPath,
}

fn spawn_kas(
    dir: &std::path::Path,
    [api, admin, agent, proxy]: [std::net::SocketAddr; 4],
    extra: &[String],
    tools: ToolsGiven,
    log: &str,
) -> Proc {
    let mut cmd = Command::new(kas_binary());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.join("kas"))
        .arg(format!("--api-listen={api}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--agent-listen={agent}"))
        .arg(format!("--k8s-proxy-listen={proxy}"));
    match tools {
        ToolsGiven::AsFlags => {
            cmd.args(render_tools());
        }
        ToolsGiven::OnPath => {
            let bin = tether_testenv::render_tools().expect("render tools");
            let system = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            let dirs = std::iter::once(bin).chain(std::env::split_paths(&system));
            cmd.env("PATH", std::env::join_paths(dirs).expect("a PATH"))
                .env_remove("KAS_HELM")
                .env_remove("KAS_KUSTOMIZE");
        }
    }
    cmd.args(extra);
    Proc::spawn(cmd, dir.join(log))
}

/// `--helm` and `--kustomize` for kas: the pinned tools
/// (`scripts/render-tools.sh`).
pub fn render_tools() -> [String; 2] {
    let bin = tether_testenv::render_tools().expect("render tools");
    [
        format!("--helm={}", bin.join("helm").display()),
        format!("--kustomize={}", bin.join("kustomize").display()),
    ]
}

impl Setup {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts kas with extra `kas serve` flags, on ports the kernel picks
    /// as kas binds them (kas names them in `listening.json`).
    pub fn start_with(serve_args: &[&str]) -> Self {
        Self::start_with_tools(serve_args, ToolsGiven::AsFlags)
    }

    /// As [`Self::start_with`], with the render tools given as `tools`
    /// says.
    pub fn start_with_tools(serve_args: &[&str], tools: ToolsGiven) -> Self {
        Self::start_inner(serve_args, tools, None)
    }

    /// Another kas on the database `first` uses (`serve_args` name it),
    /// with `first`'s admin token and secrets key, as kas processes on one
    /// database share them (the database holds the admin token's record,
    /// sealed with that key).
    pub fn start_beside(first: &Setup, serve_args: &[&str]) -> Self {
        Self::start_inner(
            serve_args,
            ToolsGiven::AsFlags,
            Some(&first.dir.path().join("kas")),
        )
    }

    fn start_inner(serve_args: &[&str], tools: ToolsGiven, beside: Option<&Path>) -> Self {
        let serve_args: Vec<String> = serve_args.iter().map(|s| s.to_string()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(first) = beside {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(dir.path().join("kas")).expect("kas's folder");
            for file in ["admin-token", "secrets-key"] {
                let copy = dir.path().join("kas").join(file);
                std::fs::copy(first.join(file), &copy).expect("copied from the first kas");
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
                    .expect("private");
            }
        }
        // Port 0 everywhere: the kernel picks each port as kas binds it,
        // and kas says which in its data folder. No window between picking
        // a port and binding it.
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let mut kas = spawn_kas(dir.path(), [any; 4], &serve_args, tools, "kas.log");
        let Bound {
            api,
            admin,
            agent,
            proxy,
        } = {
            let log = kas.log.clone();
            Bound::wait(&dir.path().join("kas"), &mut kas.child, move || {
                std::fs::read_to_string(&log).unwrap_or_default()
            })
        };
        let listen = [api, admin, agent, proxy];
        let setup = Setup {
            api: format!("http://{}", listen[0]),
            agent_endpoint: listen[2],
            admin: listen[1],
            agent_addr: format!("grpcs://{}", listen[2]),
            proxy: listen[3],
            listen,
            serve_args,
            tools,
            probes: free_port(),
            pod_namespace: "tether-test".into(),
            kas,
            dir,
        };
        setup.wait_for_api();
        setup
    }

    /// Starts kas again on the same data folder and addresses, its log
    /// `log`. While kas was down, a short-lived outgoing connection may
    /// hold one of its ports as its own source port (the kernel hands
    /// them out from the same range): kas then exits with 98 and is
    /// started again once that connection is gone.
    fn start_again(&mut self, log: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.kas = spawn_kas(
                self.dir.path(),
                self.listen,
                &self.serve_args,
                self.tools,
                log,
            );
            let Some(exited) = self.wait_for_api_or_exit() else {
                return;
            };
            assert!(
                exited.code() == Some(98) && Instant::now() < deadline,
                "kas exited at start ({exited}): {}",
                self.kas.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits for the API; how kas exited if it did first.
    fn wait_for_api_or_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.dir.path().join("kas/admin-token").exists()
                && self.cli(&["agent", "list"]).is_some()
            {
                return None;
            }
            if let Ok(Some(exited)) = self.kas.child.try_wait() {
                return Some(exited);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 30s waiting for kas to serve its API: {}",
                self.kas.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_api(&self) {
        wait("kas to serve its API", Duration::from_secs(30), || {
            self.dir.path().join("kas/admin-token").exists()
                && self.cli(&["agent", "list"]).is_some()
        });
    }

    /// Kills kas outright (SIGKILL: no graceful close for the agents) and
    /// starts it again on the same data folder and addresses.
    pub fn kill_and_restart_kas(&mut self) {
        let _ = self.kas.child.kill();
        let _ = self.kas.child.wait();
        self.start_again("kas-restarted.log");
    }

    /// Stops kas as an orchestrator does (SIGTERM) and waits for it to
    /// exit; how long it took.
    pub fn terminate_kas(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.kas.child.id() as libc::pid_t, libc::SIGTERM) };
        while started.elapsed() < within {
            if let Ok(Some(_)) = self.kas.child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "kas did not exit within {within:?} of SIGTERM: {}",
            self.kas.log()
        );
    }

    /// Starts kas again on the same data folder and addresses.
    pub fn restart_kas(&mut self) {
        self.start_again("kas-restarted.log");
    }

    /// The sum of every sample of the metric `name` (with any labels) on
    /// kas's `/metrics`; 0 when kas does not show it.
    pub fn metric(&self, name: &str) -> f64 {
        let Some((200, text)) = http_get(self.admin, "/metrics") else {
            return 0.0;
        };
        metric_sum(&text, name)
    }

    /// `kas project statuses set team/config`: the project's commit
    /// statuses go to `api_url` as `provider`'s API for `repository`, with
    /// `token`.
    pub fn set_status_target(&self, provider: &str, api_url: &str, repository: &str, token: &str) {
        let file = self.dir.path().join(format!("status-token-{provider}"));
        std::fs::write(&file, token).expect("token file");
        self.cli(&[
            "project",
            "statuses",
            "set",
            "team/config",
            "--provider",
            provider,
            "--api-url",
            api_url,
            "--repository",
            repository,
            "--token-file",
            file.to_str().expect("utf-8"),
        ])
        .expect("status target");
    }

    /// `kas notifications secret set NAME`: a destination's URL, and the key
    /// its payloads are signed with if any.
    pub fn set_notification_secret(&self, name: &str, url: &str, signing_key: Option<&str>) {
        let file_of = |what: &str, text: &str| {
            let file = self
                .dir
                .path()
                .join(format!("{}-{what}", name.replace('/', "-")));
            std::fs::write(&file, text).expect("secret file");
            file.to_str().expect("utf-8").to_owned()
        };
        let url_file = file_of("url", url);
        let mut args = vec![
            "notifications".to_owned(),
            "secret".into(),
            "set".into(),
            name.into(),
            "--url-file".into(),
            url_file,
        ];
        if let Some(key) = signing_key {
            args.extend(["--signing-key-file".into(), file_of("key", key)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args).expect("notification secret");
    }

    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = self.cli_output(args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last sync of `commit` that agent `prod` reported, as
    /// `kas agent gitops prod -o json` shows it.
    pub fn sync_of(&self, commit: &str) -> Option<serde_json::Value> {
        self.sync_of_agent("prod", commit)
    }

    /// Waits (up to a minute) until agent `prod`'s sync of `commit` has
    /// failed with an error holding every one of `needles`; the error.
    pub fn wait_sync_failed(&self, commit: &str, needles: &[&str]) -> String {
        wait(
            &format!("{needles:?} to be reported"),
            Duration::from_secs(60),
            || {
                self.sync_of(commit).is_some_and(|s| {
                    let error = s["error"].as_str().unwrap_or_default();
                    s["state"] == "failed" && needles.iter().all(|n| error.contains(n))
                })
            },
        );
        self.sync_of(commit)
            .and_then(|s| s["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The last sync of `agent` at `commit`, as `kas agent gitops` shows it.
    pub fn sync_of_agent(&self, agent: &str, commit: &str) -> Option<serde_json::Value> {
        let text = self.cli(&["agent", "gitops", agent, "-o", "json"])?;
        let syncs: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        syncs
            .as_array()?
            .iter()
            .find(|s| s["commit"] == commit)
            .cloned()
    }

    /// The CLI's whole outcome, failures included.
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(kas_binary())
            .args(args)
            .args(["--server", &self.api, "--admin-token-file"])
            .arg(self.dir.path().join("kas/admin-token"))
            .env_remove("KAS_ADMIN_TOKEN")
            .output()
            .expect("CLI runs")
    }

    /// Registers a project, the agent `name` in it, and a token (token id 1
    /// on a fresh kas), with the CLI; returns the token.
    pub fn register_agent(&self, name: &str) -> String {
        self.register_agent_in(name, "/srv/git/config")
    }

    /// As [`Self::register_agent`], with the project at `url`.
    pub fn register_agent_in(&self, name: &str, url: &str) -> String {
        self.cli(&["project", "add", "team/config", "--url", url])
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

    /// Agent `prod`, whose config (in a new repository) lets CI jobs of
    /// project `team/admin` use it as the agent itself; returns the agent
    /// token and a project access token of `team/admin`.
    pub fn register_admin_access(&self) -> (String, String) {
        let repo = self.dir.path().join("repo");
        new_repo(&repo);
        commit(
            &repo,
            &[(
                ".gitlab/agents/prod/config.yaml",
                Some("ci_access:\n  projects: [{ id: team/admin }]\n"),
            )],
        );
        let agent_token = self.register_agent_in("prod", repo.to_str().expect("utf-8"));
        self.cli(&["project", "add", "team/admin", "--url", "/srv/git/none"])
            .expect("project");
        let created = self
            .cli(&["project", "token", "create", "team/admin", "--name", "ci"])
            .expect("project token");
        let token = created
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned();
        (agent_token, token)
    }

    /// The kubeconfig `kas kubeconfig --agent prod` writes for `token`
    /// (saved as `<name>.token` beside it, `<name>.kubeconfig`).
    pub fn kubeconfig_for(&self, token: &str, name: &str) -> PathBuf {
        let token_file = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&token_file, token).expect("token file");
        let kubeconfig = self.dir.path().join(format!("{name}.kubeconfig"));
        let written = self.cli(&[
            "kubeconfig",
            "--agent",
            "prod",
            "--token-file",
            token_file.to_str().expect("utf-8"),
            "--out",
            kubeconfig.to_str().expect("utf-8"),
        ]);
        assert!(written.is_some(), "kas kubeconfig refused the {name} token");
        kubeconfig
    }

    /// Waits until agent `prod` has its two tunnels to kas and kas has read
    /// its config, so the proxy can serve it.
    pub fn wait_for_tunnels(&self) {
        wait(
            "two tunnels and the agent's config",
            Duration::from_secs(60),
            || {
                let agent = self.agent("prod");
                agent["tunnels"] == 2 && !agent["config"]["commit"].is_null()
            },
        );
    }

    pub fn agent(&self, agent: &str) -> serde_json::Value {
        let text = self
            .cli(&["agent", "show", agent, "-o", "json"])
            .expect("agent shown");
        serde_json::from_str(&text).expect("JSON")
    }

    pub fn connections(&self, agent: &str) -> Vec<serde_json::Value> {
        self.agent(agent)["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn agentk(&self, token: &str) -> Proc {
        self.agentk_at(token, &self.agent_addr)
    }

    /// Another agentk replica of the same agent: its own pod name, probe
    /// port and log.
    pub fn agentk_replica(&self, token: &str, pod: &str) -> Proc {
        let token_file = self.dir.path().join(format!("agent-token-{pod}"));
        let probes = free_port();
        let cmd = agentk_command(&AgentkSpec {
            token,
            token_file: &token_file,
            address: &self.agent_addr,
            ca: &self.dir.path().join("kas/agent-ca.crt"),
            probes,
            namespace: &self.pod_namespace,
            pod,
        });
        let mut agentk = Proc::spawn(cmd, self.dir.path().join(format!("agentk-{pod}.log")));
        agentk.probes = Some(probes);
        agentk
    }

    /// agentk dialing `address` (`grpcs://…` or `wss://…`).
    pub fn agentk_at(&self, token: &str, address: &str) -> Proc {
        let cmd = agentk_command(&AgentkSpec {
            token,
            token_file: &self.dir.path().join("agent-token"),
            address,
            ca: &self.dir.path().join("kas/agent-ca.crt"),
            probes: self.probes,
            namespace: &self.pod_namespace,
            pod: "agentk-0",
        });
        let mut agentk = Proc::spawn(cmd, self.dir.path().join("agentk.log"));
        agentk.probes = Some(self.probes);
        agentk
    }
}

/// One agentk process against the shared test cluster.
#[derive(Debug)]
pub struct AgentkSpec<'a> {
    pub token: &'a str,
    /// Where the token is written for it.
    pub token_file: &'a std::path::Path,
    pub address: &'a str,
    pub ca: &'a std::path::Path,
    pub probes: std::net::SocketAddr,
    pub namespace: &'a str,
    pub pod: &'a str,
}

/// The agentk command for `spec` (its token written to its file).
pub fn agentk_command(spec: &AgentkSpec<'_>) -> Command {
    std::fs::write(spec.token_file, format!("{}\n", spec.token)).expect("token file");
    let cluster = tether_testenv::shared();
    let mut cmd = Command::new(agentk_binary());
    cmd.arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["--kas-address", spec.address, "--token-file"])
        .arg(spec.token_file)
        .arg("--ca-cert")
        .arg(spec.ca)
        .arg(format!("--observability-listen={}", spec.probes))
        .env("POD_NAMESPACE", spec.namespace)
        .env("POD_NAME", spec.pod)
        .env_remove("AGENTK_TOKEN");
    // For charts rendered on the agent, when the tools are built.
    if let Ok(bin) = tether_testenv::render_tools() {
        cmd.env("AGENTK_HELM", bin.join("helm"));
    }
    cmd
}

/// A user in group `team` with a personal access token: its id and a
/// kubeconfig `kas kubeconfig` wrote for it.
pub fn user_with_kubeconfig(setup: &Setup, name: &str) -> (String, PathBuf) {
    setup
        .cli(&["user", "create", name, "--member-of", "team"])
        .expect("user");
    let created = setup
        .cli(&["user", "token", "create", name, "--name", "laptop"])
        .expect("token");
    let id = created
        .split_whitespace()
        .nth(1)
        .expect("token <id>")
        .to_owned();
    (id, setup.kubeconfig_for(&last_line(Some(created)), name))
}

/// The last line of a command's output, trimmed: where the CLI prints a
/// token it creates.
pub fn last_line(text: Option<String>) -> String {
    text.expect("command succeeds")
        .lines()
        .last()
        .expect("a line")
        .trim()
        .to_owned()
}

/// An object of the test cluster as JSON (`kubectl get … -o json`), if it
/// exists.
pub fn kubectl_get(args: &[&str]) -> Option<serde_json::Value> {
    tether_testenv::shared().get_json(args)
}

/// kubectl with a kubeconfig of its own.
pub fn kubectl(kubeconfig: &std::path::Path) -> Command {
    let mut cmd = Command::new(tether_testenv::shared().binaries().kubectl());
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd
}

pub fn wait(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    let deadline = started + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if std::env::var_os("TETHER_TRACE_WAITS").is_some() {
        eprintln!("waited {:?} for {what}", started.elapsed());
    }
}

#[allow(unused_imports)] // each test file uses its own subset
pub use tether_testenv::git::{commit, new_repo};

/// The sum of the samples of `query` in a Prometheus text exposition:
/// a metric name, optionally with labels every counted sample must carry
/// (`tether_kas_proxy_requests_total{route="forwarded"}`).
pub fn metric_sum(text: &str, query: &str) -> f64 {
    let (name, wanted): (&str, Vec<&str>) = match query.split_once('{') {
        Some((name, labels)) => (
            name,
            labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        None => (query, Vec::new()),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let carried = wanted.iter().all(|w| labels.split(',').any(|l| l == *w));
            carried.then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# TYPE x counter\nx_total{route=\"local\",code=\"200\"} 2\nx_total{route=\"forwarded\",code=\"200\"} 3\nx_total_other 7\ny 1\n";
        assert_eq!(super::metric_sum(text, "x_total"), 5.0);
        assert_eq!(super::metric_sum(text, "x_total{route=\"forwarded\"}"), 3.0);
        assert_eq!(super::metric_sum(text, "y"), 1.0);
        assert_eq!(super::metric_sum(text, "z"), 0.0);
    }
}
