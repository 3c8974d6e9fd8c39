//! A real load balancer for tests: Debian's `haproxy` (installed by
//! `scripts/install-services.sh`) in TCP mode in front of kas replicas, as
//! an operator would run it: round robin, health checks every 500 ms, and
//! a connection to a dead server redispatched to another. It runs under the
//! same supervisor as the cluster, so it dies with its owner.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{remove_stale_temp_dirs, temp_dir_for_this_process};
use crate::error::{Error, Result};
use crate::supervisor::{ProcessSpec, Supervisor};

/// One TCP port of the balancer, and the servers behind it.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub backends: Vec<SocketAddr>,
}

/// A running HAProxy.
#[derive(Debug)]
pub struct LoadBalancer {
    supervisor: Supervisor,
    dir: PathBuf,
    /// The frontend address of each route, in the order given.
    pub frontends: Vec<SocketAddr>,
}

impl LoadBalancer {
    /// Starts HAProxy with one frontend on a free loopback port per route.
    pub async fn start(routes: &[Route]) -> Result<Self> {
        remove_stale_temp_dirs();
        let program = which("haproxy")?;
        let dir = temp_dir_for_this_process().with_extension(format!("haproxy{}", rand_suffix()));
        std::fs::create_dir_all(&dir).map_err(Error::io("create the HAProxy folder"))?;
        let mut frontends = Vec::new();
        // HAProxy holds two descriptors per proxied connection; 9,000
        // connections fit this machine's open-file hard limit of 20,000.
        let mut config = String::from(
            "global\n  maxconn 9000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  \
             retries 3\n  option redispatch\n",
        );
        for (i, route) in routes.iter().enumerate() {
            let front = free_port()?;
            frontends.push(front);
            let _ = write!(
                config,
                "frontend {name}\n  bind {front}\n  default_backend {name}_servers\n\
                 backend {name}_servers\n  balance roundrobin\n  default-server inter 500ms fall 2 rise 1\n",
                name = if route.name.is_empty() {
                    format!("r{i}")
                } else {
                    route.name.clone()
                },
            );
            for (j, backend) in route.backends.iter().enumerate() {
                let _ = writeln!(config, "  server s{j} {backend} check");
            }
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).map_err(Error::io("write haproxy.cfg"))?;
        let supervisor = Supervisor::start()?;
        supervisor.spawn(ProcessSpec {
            name: "haproxy".into(),
            program,
            args: vec!["-db".into(), "-f".into(), path.into_os_string()],
            log: dir.join("haproxy.log"),
            run_as: None,
        })?;
        let balancer = LoadBalancer {
            supervisor,
            dir,
            frontends,
        };
        let fronts = balancer.frontends.clone();
        crate::wait::wait_until("HAProxy to listen", Duration::from_secs(10), || {
            let fronts = fronts.clone();
            let supervisor = &balancer.supervisor;
            async move {
                supervisor.check()?;
                Ok::<_, Error>(
                    fronts
                        .iter()
                        .all(|a| std::net::TcpStream::connect(a).is_ok())
                        .then_some(()),
                )
            }
        })
        .await?;
        Ok(balancer)
    }

    /// HAProxy's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.supervisor.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn free_port() -> Result<SocketAddr> {
    crate::ports::free().map_err(Error::io("find a free port"))
}

fn which(program: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = PathBuf::from(dir).join(program);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(Error::Binaries(format!(
        "{program} is not installed: run scripts/install-services.sh"
    )))
}
