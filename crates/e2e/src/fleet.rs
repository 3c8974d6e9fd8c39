//! Several kas replicas on one PostgreSQL database, behind a real HAProxy
//! (TCP mode) for the agent endpoint, as an operator runs them: one
//! certificate, one admin token file and one private secret shared by all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tether_testenv::haproxy::{LoadBalancer, Route};

use super::{Proc, free_port, kas_binary, stable_port};

/// One replica's addresses, and its process while it runs.
#[derive(Debug)]
pub struct Replica {
    pub kas: Option<Proc>,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub agent: SocketAddr,
    pub proxy: SocketAddr,
    pub private: SocketAddr,
    starts: usize,
}

#[derive(Debug)]
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub database: String,
    pub replicas: Vec<Replica>,
    pub balancer: LoadBalancer,
    /// The agent endpoint as agents reach it: HAProxy's frontend.
    pub agent_addr: String,
    /// The Kubernetes API proxy as clients reach it: HAProxy's frontend.
    pub proxy: SocketAddr,
    extra: Vec<String>,
}

impl Fleet {
    /// Starts `n` replicas and the balancer in front of their agent
    /// endpoints.
    pub fn start(n: usize, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki folder");
        // Every replica serves one certificate (kas's development
        // identity's file names, so each loads it instead of making its own).
        let shared = tether_testenv::pki::generate(&dir.path().join("ca")).expect("certificates");
        for (from, to) in [
            (&shared.ca_cert, "agent-ca.crt"),
            (&shared.serving.cert, "agent-tls.crt"),
            (&shared.serving.key, "agent-tls.key"),
        ] {
            std::fs::copy(from, pki.join(to)).expect("a shared certificate");
        }
        std::fs::write(
            dir.path().join("private-secret"),
            "0123456789abcdef".repeat(3),
        )
        .expect("secret");
        let database = tether_testenv::shared_postgres()
            .create_database()
            .expect("a fresh database");
        let replicas: Vec<Replica> = (0..n)
            .map(|_| Replica {
                kas: None,
                // Replicas restart on their addresses (the balancer knows
                // them): ports outside the ephemeral range stay free.
                api: stable_port(),
                admin: stable_port(),
                agent: stable_port(),
                proxy: stable_port(),
                private: stable_port(),
                starts: 0,
            })
            .collect();
        let routes = [
            Route {
                name: "agents".into(),
                backends: replicas.iter().map(|r| r.agent).collect(),
            },
            Route {
                name: "proxy".into(),
                backends: replicas.iter().map(|r| r.proxy).collect(),
            },
        ];
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let balancer = runtime
            .block_on(LoadBalancer::start(&routes))
            .expect("HAProxy starts");
        let agent_addr = format!("grpcs://{}", balancer.frontends[0]);
        let proxy = balancer.frontends[1];
        let mut fleet = Fleet {
            dir,
            database,
            replicas,
            balancer,
            agent_addr,
            proxy,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            fleet.start_replica(i);
        }
        fleet
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("pki/agent-ca.crt")
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.path().join("admin-token")
    }

    /// Starts (or restarts) replica `i` on its addresses.
    pub fn start_replica(&mut self, i: usize) {
        let pki = self.dir.path().join("pki");
        let r = &self.replicas[i];
        let mut cmd = Command::new(kas_binary());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("kas-{i}")))
            .args(["--database", &self.database])
            .arg(format!("--api-listen={}", r.api))
            .arg(format!("--admin-listen={}", r.admin))
            .arg(format!("--agent-listen={}", r.agent))
            .arg(format!("--k8s-proxy-listen={}", r.proxy))
            .arg(format!("--private-listen={}", r.private))
            .arg(format!("--private-url=https://{}", r.private))
            .arg("--private-secret-file")
            .arg(self.dir.path().join("private-secret"))
            .arg("--admin-token-file")
            .arg(self.admin_token_file())
            .arg("--tls-cert")
            .arg(pki.join("agent-tls.crt"))
            .arg("--tls-key")
            .arg(pki.join("agent-tls.key"))
            .arg("--tls-ca")
            .arg(pki.join("agent-ca.crt"))
            .args(super::render_tools())
            .args(&self.extra);
        let log = self
            .dir
            .path()
            .join(format!("kas-{i}-{}.log", self.replicas[i].starts));
        self.replicas[i].starts += 1;
        self.replicas[i].kas = Some(Proc::spawn(cmd, log));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(self.admin_token_file().exists() && self.cli(i, &["agent", "list"]).is_some()) {
            let kas = self.replicas[i].kas.as_mut().expect("started");
            if let Ok(Some(status)) = kas.child.try_wait() {
                panic!("replica {i} exited ({status}):\n{}", kas.log());
            }
            assert!(
                Instant::now() < deadline,
                "replica {i}'s API did not answer within 30 s:\n{}",
                kas.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Registers agents `names` whose config (in project `team/config`, a
    /// repository made here) lets CI jobs of project `team/admin` in, a
    /// token for each, and a project token of `team/admin`: returns the
    /// agent tokens, in order, and the CI token. The commands go to the
    /// replicas in turn, so each is written through one and read through
    /// another.
    pub fn register_ci_agents(&self, names: &[&str]) -> (Vec<String>, String) {
        let repo = self.dir.path().join("config-repo");
        tether_testenv::git::new_repo(&repo);
        let files: Vec<(String, Option<&str>)> = names
            .iter()
            .map(|a| {
                (
                    format!(".gitlab/agents/{a}/config.yaml"),
                    Some("ci_access:\n  projects: [{ id: team/admin }]\n"),
                )
            })
            .collect();
        let files: Vec<(&str, Option<&str>)> =
            files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        tether_testenv::git::commit(&repo, &files);
        let n = self.replicas.len();
        let url = repo.to_str().expect("utf-8");
        self.cli(0, &["project", "add", "team/config", "--url", url])
            .expect("project");
        self.cli(
            1 % n,
            &["project", "add", "team/admin", "--url", "/srv/git/none"],
        )
        .expect("project");
        let tokens = names
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let via = i % n;
                self.cli(via, &["agent", "create", agent, "--project", "team/config"])
                    .expect("agent");
                super::last_line(self.cli(via, &["token", "create", agent, "--name", "first"]))
            })
            .collect();
        let ci = super::last_line(self.cli(
            2 % n,
            &["project", "token", "create", "team/admin", "--name", "ci"],
        ));
        (tokens, ci)
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut kas) = self.replicas[i].kas.take() {
            let _ = kas.child.kill();
            let _ = kas.child.wait();
        }
    }

    /// SIGTERM, and the time until it exited.
    pub fn terminate(&mut self, i: usize, within: Duration) -> Duration {
        let started = Instant::now();
        let Some(mut kas) = self.replicas[i].kas.take() else {
            return Duration::ZERO;
        };
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(kas.child.id() as libc::pid_t, libc::SIGTERM) };
        while started.elapsed() < within {
            if let Ok(Some(_)) = kas.child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("replica {i} did not exit within {within:?}: {}", kas.log());
    }

    /// The sum of replica `i`'s samples of `query` on its `/metrics`
    /// (see [`crate::metric_sum`]); 0 when it shows none.
    pub fn metric(&self, i: usize, query: &str) -> f64 {
        match crate::http_get(self.replicas[i].admin, "/metrics") {
            Some((200, text)) => crate::metric_sum(&text, query),
            _ => 0.0,
        }
    }

    pub fn log(&self, i: usize) -> String {
        self.replicas[i]
            .kas
            .as_ref()
            .map(Proc::log)
            .unwrap_or_default()
    }

    /// The CLI against replica `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Option<String> {
        let out = Command::new(kas_binary())
            .args(args)
            .args(["--server", &format!("http://{}", self.replicas[i].api)])
            .arg("--admin-token-file")
            .arg(self.admin_token_file())
            .env_remove("KAS_ADMIN_TOKEN")
            .output()
            .expect("CLI runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Agent `name` as replica `i` shows it (its sessions and tunnels there).
    pub fn agent(&self, i: usize, name: &str) -> serde_json::Value {
        self.cli(i, &["agent", "show", name, "-o", "json"])
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// Running replicas.
    pub fn running(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].kas.is_some())
            .collect()
    }

    /// Tunnels of `agent` on each running replica.
    pub fn tunnels(&self, agent: &str) -> Vec<(usize, u64)> {
        self.running()
            .into_iter()
            .map(|i| (i, self.agent(i, agent)["tunnels"].as_u64().unwrap_or(0)))
            .collect()
    }

    /// agentk for the agent of `token`, dialing the balancer.
    pub fn agentk(&self, token: &str, pod: &str, namespace: &str) -> Proc {
        self.agentk_via(token, pod, namespace, &self.agent_addr)
    }

    /// agentk dialing `address` (a replica's agent endpoint, say).
    pub fn agentk_via(&self, token: &str, pod: &str, namespace: &str, address: &str) -> Proc {
        let cmd = super::agentk_command(&super::AgentkSpec {
            token,
            token_file: &self.dir.path().join(format!("agent-token-{pod}")),
            address,
            ca: &self.ca(),
            probes: free_port(),
            namespace,
            pod,
        });
        Proc::spawn(cmd, self.dir.path().join(format!("agentk-{pod}.log")))
    }

    /// Successful git polls replica `i` made so far.
    pub fn git_polls(&self, i: usize) -> u64 {
        let (_, metrics) = super::http_get(self.replicas[i].admin, "/metrics").expect("metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tether_kas_git_polls_total{result=\"ok\"} "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A kubeconfig reaching `agent` through replica `i`'s proxy.
    pub fn kubeconfig(&self, i: usize, agent: &str, token_file: &Path) -> PathBuf {
        let out = self.dir.path().join(format!("{agent}-via-{i}.kubeconfig"));
        self.cli(
            i,
            &[
                "kubeconfig",
                "--agent",
                agent,
                "--token-file",
                token_file.to_str().expect("utf-8"),
                "--out",
                out.to_str().expect("utf-8"),
            ],
        )
        .expect("kubeconfig");
        out
    }
}

/// A proxy client as a load generator uses it: a new TLS connection per
/// request (as each `kubectl get` makes), so that a replica going away is
/// met at connect time, where the balancer redispatches.
pub mod client {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    /// Where and as whom.
    #[derive(Clone, Debug)]
    pub struct Target {
        pub addr: SocketAddr,
        pub tls: Arc<rustls::ClientConfig>,
        pub token: String,
    }

    impl Target {
        /// `token` as a kubeconfig written by `kas kubeconfig` holds it.
        pub fn new(addr: SocketAddr, ca: &std::path::Path, kubeconfig: &std::path::Path) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("CA") {
                roots.add(cert.expect("cert")).expect("root");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
            let token = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("token:"))
                .expect("a token in the kubeconfig")
                .trim()
                .trim_matches('"')
                .to_owned();
            Target {
                addr,
                tls: Arc::new(tls),
                token,
            }
        }

        async fn open(&self, path: &str) -> Result<http::Response<hyper::body::Incoming>, String> {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let name = ServerName::try_from("127.0.0.1").expect("name");
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            let request = http::Request::get(format!("/k8s-proxy{path}"))
                .header("host", self.addr.to_string())
                .header("authorization", format!("Bearer {}", self.token))
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))
        }

        /// One GET: the status and body.
        pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
            let response = self.open(path).await?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }

        /// Streams a watch, each line to `line`, until the stream ends
        /// (Ok) or fails (Err).
        pub async fn watch(&self, path: &str, mut line: impl FnMut(&str)) -> Result<(), String> {
            let response = self.open(path).await?;
            if response.status() != 200 {
                return Err(format!("watch answered {}", response.status()));
            }
            let mut body = response.into_body();
            let mut buffer = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("watch stream: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    buffer.extend_from_slice(data);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let text: Vec<u8> = buffer.drain(..=end).collect();
                        line(String::from_utf8_lossy(&text).trim());
                    }
                }
            }
            Ok(())
        }
    }
}
