//! A real Kubernetes control plane made of child processes.
//!
//! Start order: certificates, then etcd and kube-apiserver together (the API
//! server retries etcd until it answers), wait for `/readyz`, then
//! controller-manager, scheduler and the kwok node simulator, then register
//! the simulated nodes and wait until they are Ready. Every port is picked free
//! on loopback, so several clusters (a test run and `make cluster`) coexist.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};

use crate::binaries::Binaries;
use crate::error::{Error, Result};
use crate::kubeconfig;
use crate::pki::{self, ClientIdentity, ClusterPki};
use crate::supervisor::{ProcessInfo, ProcessSpec, Supervisor};
use crate::wait::wait_until;

const SERVICE_CIDR: &str = "10.96.0.0/16";
const POD_CIDR: &str = "10.244.0.0/16";

/// Annotation and label by which kwok recognises the nodes it simulates.
pub const SIMULATED_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// How to start a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Folder for data, certificates, logs and the kubeconfig. Emptied first.
    /// `None`: a fresh temporary folder, removed when the cluster is dropped.
    pub dir: Option<PathBuf>,
    /// Number of simulated nodes.
    pub nodes: usize,
    /// Deadline for each start-up phase.
    pub start_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            dir: None,
            nodes: 2,
            start_timeout: Duration::from_secs(120),
        }
    }
}

/// How long each phase of [`Cluster::start`] took, measured from its call.
#[derive(Clone, Copy, Debug)]
pub struct StartTimings {
    /// Until kube-apiserver answered `/readyz` with ok.
    pub apiserver_ready: std::time::Duration,
    /// Until every simulated node was Ready: the cluster is usable.
    pub nodes_ready: std::time::Duration,
}

/// A running cluster. Dropping it stops every process and, for a temporary
/// folder, removes the folder.
#[derive(Debug)]
pub struct Cluster {
    timings: Option<StartTimings>,
    supervisor: Supervisor,
    dir: PathBuf,
    temporary: bool,
    binaries: Binaries,
    server: String,
    kubeconfig: PathBuf,
    client_config: kube::Config,
    node_names: Vec<String>,
}

struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok_node: u16,
}

// === impl Cluster ===

impl Cluster {
    /// Starts a cluster and returns once its API server is ready and its
    /// simulated nodes are Ready.
    pub async fn start(options: ClusterOptions) -> Result<Self> {
        let started = std::time::Instant::now();
        let binaries = Binaries::locate()?;
        let (dir, temporary) = match &options.dir {
            Some(dir) => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .map_err(Error::io(format!("empty {}", dir.display())))?;
                }
                (dir.clone(), false)
            }
            None => {
                remove_stale_temp_dirs();
                (temp_dir_for_this_process(), true)
            }
        };
        for sub in ["logs", "etcd", "certs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(Error::io(format!("create {}", d.display())))?;
        }
        let pki = pki::generate(&dir.join("pki"))?;
        let ports = Ports::pick()?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);

        let supervisor = Supervisor::start()?;
        let admin_kubeconfig = kubeconfig::render(&server, &pki.ca_cert, &pki.admin);
        let mut cluster = Cluster {
            timings: None,
            supervisor,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            temporary,
            binaries,
            server,
            client_config: kubeconfig::client_config(&admin_kubeconfig).await?,
            node_names: (0..options.nodes)
                .map(|i| format!("kwok-node-{i}"))
                .collect(),
        };

        cluster.spawn("etcd", etcd_args(&cluster.dir, &ports))?;
        cluster.spawn("kube-apiserver", apiserver_args(&cluster.dir, &pki, &ports))?;
        cluster.wait_ready(options.start_timeout).await?;
        let apiserver_ready = started.elapsed();
        // Published only now, so that whoever waits for the file can use it.
        kubeconfig::write_atomically(&cluster.kubeconfig, &admin_kubeconfig)?;

        let component_kubeconfig = |name: &str, identity: &ClientIdentity| -> Result<PathBuf> {
            let path = cluster.dir.join(format!("{name}.kubeconfig"));
            kubeconfig::write_atomically(
                &path,
                &kubeconfig::render(&cluster.server, &pki.ca_cert, identity),
            )?;
            Ok(path)
        };
        let kcm = component_kubeconfig("controller-manager", &pki.controller_manager)?;
        let sched = component_kubeconfig("scheduler", &pki.scheduler)?;
        let kwok = component_kubeconfig("kwok", &pki.node_simulator)?;
        cluster.spawn(
            "kube-controller-manager",
            controller_manager_args(&cluster.dir, &pki, &kcm, &ports),
        )?;
        cluster.spawn(
            "kube-scheduler",
            scheduler_args(&cluster.dir, &sched, &ports),
        )?;
        let stages = cluster.binaries.kwok_stages();
        let kubelet = write_kubelet_simulation(&cluster.dir)?;
        cluster.spawn(
            "kwok",
            kwok_args(&kwok, &[&stages, &kubelet], &pki.serving, &ports),
        )?;
        cluster.register_nodes(options.start_timeout).await?;
        cluster.timings = Some(StartTimings {
            apiserver_ready,
            nodes_ready: started.elapsed(),
        });
        tracing::info!(server = %cluster.server, dir = %cluster.dir.display(), "test cluster ready");
        Ok(cluster)
    }

    /// How long the start took, phase by phase.
    pub fn start_timings(&self) -> StartTimings {
        self.timings.expect("set before start returns")
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An admin kubeconfig (`system:masters`) for kubectl, helm or agentk.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's data folder (logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A kube-rs config with admin rights.
    pub fn client_config(&self) -> kube::Config {
        self.client_config.clone()
    }

    /// A new admin client. Each test builds its own: a client's connection
    /// pool lives on the runtime that created it, and every test has its own
    /// runtime.
    pub fn client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.client_config())?)
    }

    /// `kubectl` with `--kubeconfig` set to this cluster.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.binaries.kubectl());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs kubectl with `args` and returns its stdout.
    ///
    /// # Panics
    /// If kubectl fails; the message carries its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl().args(args).output().expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get <args> -o json`: the object or list, or `None` when it
    /// does not exist.
    ///
    /// # Panics
    /// If kubectl fails for any other reason.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self
            .kubectl()
            .arg("get")
            .args(args)
            .args(["-o", "json"])
            .output()
            .expect("kubectl runs");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("NotFound"),
                "kubectl get {args:?}: {stderr}"
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
    }

    /// Names of the simulated nodes.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// The cluster's processes, in start order.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.supervisor.processes()
    }

    /// Fails if any of the cluster's processes has exited.
    pub fn check_processes(&self) -> Result<()> {
        self.supervisor.check()
    }

    fn spawn(&self, name: &str, args: Vec<OsString>) -> Result<u32> {
        self.supervisor.spawn(ProcessSpec {
            name: name.into(),
            program: self.binaries.path(name),
            args,
            log: self.dir.join("logs").join(format!("{name}.log")),
            run_as: None,
        })
    }

    /// Completes with the first failure of a cluster process. Start-up waits
    /// race against it, so that a crashed component fails the start at once
    /// with its log rather than after a time-out.
    pub async fn process_failure(&self) -> Error {
        loop {
            if let Err(e) = self.supervisor.check() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn while_running<T>(&self, wait: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            result = wait => result,
            failure = self.process_failure() => Err(failure),
        }
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client = self.client()?;
        self.while_running(wait_until("kube-apiserver /readyz", timeout, || async {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request is valid");
            let body = client.request_text(req).await?;
            Ok::<_, Error>((body.trim() == "ok").then_some(()))
        }))
        .await
    }

    async fn register_nodes(&self, timeout: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client()?);
        for name in &self.node_names {
            nodes
                .create(&PostParams::default(), &simulated_node(name))
                .await?;
        }
        let want = self.node_names.len();
        self.while_running(wait_until(
            "simulated nodes to become Ready",
            timeout,
            || async {
                let ready = nodes
                    .list(
                        &ListParams::default().labels(&format!("{SIMULATED_NODE_ANNOTATION}=fake")),
                    )
                    .await?
                    .items
                    .iter()
                    .filter(|n| node_is_ready(n))
                    .count();
                Ok::<_, Error>((ready == want).then_some(()))
            },
        ))
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.supervisor.stop();
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Node that kwok manages: the annotation selects it, the status gives the
/// scheduler capacity to place pods.
fn simulated_node(name: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { SIMULATED_NODE_ANNOTATION: "fake" },
            "labels": {
                SIMULATED_NODE_ANNOTATION: "fake",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110" },
            "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110" },
        },
    }))
    .expect("static node manifest is valid")
}

// === impl Ports ===

impl Ports {
    /// Binds every port at once before releasing any, so no two are equal.
    fn pick() -> Result<Self> {
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(Error::io("pick a free loopback port"))?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        let ports = (|| {
            Ok::<_, std::io::Error>(Ports {
                etcd_client: port(0)?,
                etcd_peer: port(1)?,
                apiserver: port(2)?,
                controller_manager: port(3)?,
                scheduler: port(4)?,
                kwok_node: port(5)?,
            })
        })()
        .map_err(Error::io("read a picked port"))?;
        Ok(ports)
    }
}

// === command lines ===

fn args<const N: usize>(items: [String; N]) -> Vec<OsString> {
    items.into_iter().map(OsString::from).collect()
}

fn etcd_args(dir: &Path, p: &Ports) -> Vec<OsString> {
    let client = format!("http://127.0.0.1:{}", p.etcd_client);
    let peer = format!("http://127.0.0.1:{}", p.etcd_peer);
    args([
        "--name=tether".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=tether={peer}"),
        // Disposable data: durability buys nothing and fsync costs seconds.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ])
}

fn apiserver_args(dir: &Path, pki: &ClusterPki, p: &Ports) -> Vec<OsString> {
    args([
        format!("--etcd-servers=http://127.0.0.1:{}", p.etcd_client),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={}", p.apiserver),
        format!("--cert-dir={}", dir.join("certs").display()),
        format!("--tls-cert-file={}", pki.serving.cert.display()),
        format!("--tls-private-key-file={}", pki.serving.key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!(
            "--service-account-key-file={}",
            pki.service_account_public_key.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

/// Flags controller-manager and scheduler share: their identity, their own
/// HTTPS port on loopback (the defaults would collide between clusters), and
/// no leader election (each cluster runs one of each).
fn control_plane_component_args(dir: &Path, kubeconfig: &Path, secure_port: u16) -> Vec<OsString> {
    args([
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={secure_port}"),
        format!("--cert-dir={}", dir.join("certs").display()),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

fn controller_manager_args(
    dir: &Path,
    pki: &ClusterPki,
    kubeconfig: &Path,
    p: &Ports,
) -> Vec<OsString> {
    let mut all = control_plane_component_args(dir, kubeconfig, p.controller_manager);
    all.extend(args([
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
        format!("--cluster-signing-key-file={}", pki.ca_key.display()),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
    ]));
    all
}

fn scheduler_args(dir: &Path, kubeconfig: &Path, p: &Ports) -> Vec<OsString> {
    control_plane_component_args(dir, kubeconfig, p.scheduler)
}

/// Lines every simulated container logs (`kubectl logs`), in the CRI log
/// format the kubelet reads.
pub const SIMULATED_LOG_LINES: [&str; 2] = ["simulated log line 1", "simulated log line 2"];

/// What kwok's kubelet server answers for simulated pods: logs from a file,
/// `exec` running the command on this machine in the cluster's folder, and
/// `port-forward` to `cat` (an echo). The API server reaches it at the
/// node's address and port, as it would a kubelet. For tests only: exec
/// runs commands on the host.
fn write_kubelet_simulation(dir: &Path) -> Result<PathBuf> {
    let log = dir.join("simulated-container.log");
    let text: String = SIMULATED_LOG_LINES
        .iter()
        .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
        .collect();
    std::fs::write(&log, text).map_err(Error::io("write the simulated container log"))?;
    let config = format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {{name: tether-testenv-logs}}
spec:
  logs: [{{logsFile: {log}, follow: true}}]
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata: {{name: tether-testenv-exec}}
spec:
  execs: [{{local: {{workDir: {dir}}}}}]
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata: {{name: tether-testenv-port-forward}}
spec:
  forwards: [{{command: [cat]}}]
"#,
        log = log.display(),
        dir = dir.display()
    );
    let path = dir.join("kwok-kubelet.yaml");
    std::fs::write(&path, config).map_err(Error::io("write the kwok kubelet configuration"))?;
    Ok(path)
}

fn kwok_args(
    kubeconfig: &Path,
    configs: &[&Path],
    serving: &ClientIdentity,
    p: &Ports,
) -> Vec<OsString> {
    let mut all: Vec<OsString> = configs
        .iter()
        .map(|c| OsString::from(format!("--config={}", c.display())))
        .collect();
    all.extend(args([
        format!("--kubeconfig={}", kubeconfig.display()),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={SIMULATED_NODE_ANNOTATION}=fake"),
        format!("--cidr={POD_CIDR}"),
        "--node-ip=127.0.0.1".into(),
        format!("--node-port={}", p.kwok_node),
        // The kubelet API on the port the nodes advertise, over TLS as the
        // API server expects (it does not verify kubelet certificates
        // without --kubelet-certificate-authority).
        format!("--server-address=127.0.0.1:{}", p.kwok_node),
        format!("--tls-cert-file={}", serving.cert.display()),
        format!("--tls-private-key-file={}", serving.key.display()),
        "--node-lease-duration-seconds=40".into(),
    ]));
    all
}

// === temporary folders ===

const TEMP_PREFIX: &str = "tether-testenv-";

pub(crate) fn temp_dir_for_this_process() -> PathBuf {
    std::env::temp_dir().join(format!(
        "{TEMP_PREFIX}{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// A test process killed outright leaves its folder behind (its processes die
/// with it, see the supervisor); the next run removes folders whose process is
/// gone.
pub(crate) fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
