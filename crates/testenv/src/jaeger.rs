//! A real OpenTelemetry back end for tests: Jaeger v2 (built from its Go
//! module by `scripts/observability-tools.sh`) with in-memory storage,
//! receiving OTLP over gRPC and HTTP on loopback ports and answering
//! trace queries on its HTTP query API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::supervisor::{ProcessSpec, Supervisor};

/// A running Jaeger.
#[derive(Debug)]
pub struct Jaeger {
    _supervisor: Supervisor,
    /// OTLP over gRPC (`http://127.0.0.1:<port>`).
    pub otlp_grpc: SocketAddr,
    /// OTLP over HTTP (base URL `http://127.0.0.1:<port>`).
    pub otlp_http: SocketAddr,
    /// The query API (`/api/traces/{id}`, `/api/services`; a search's
    /// `limit` must stay under the 100,000 traces it keeps).
    pub query: SocketAddr,
    log: PathBuf,
}

impl Jaeger {
    /// Starts Jaeger with its config and log in `dir`; ready when the query
    /// API answers and both OTLP ports accept connections.
    pub async fn start(dir: &Path) -> Result<Self> {
        let program = crate::binaries::observability_tools()?.join("jaeger");
        std::fs::create_dir_all(dir).map_err(Error::io("create Jaeger's folder"))?;
        let port = || crate::ports::free().map_err(Error::io("find a free port"));
        let (otlp_grpc, otlp_http, query, query_grpc) = (port()?, port()?, port()?, port()?);
        // Jaeger's own telemetry is off: its default listens on fixed
        // ports, which parallel tests would fight over.
        let config = format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {query}
    grpc:
      endpoint: {query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {otlp_grpc}
      http:
        endpoint: {otlp_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        );
        let file = dir.join("jaeger.yaml");
        std::fs::write(&file, config).map_err(Error::io("write Jaeger's config"))?;
        let log = dir.join("jaeger.log");
        let supervisor = Supervisor::start()?;
        supervisor.spawn(ProcessSpec {
            name: "jaeger".into(),
            program,
            args: vec!["--config".into(), file.into_os_string()],
            log: log.clone(),
            run_as: None,
        })?;
        let jaeger = Jaeger {
            _supervisor: supervisor,
            otlp_grpc,
            otlp_http,
            query,
            log,
        };
        crate::wait::wait_until("Jaeger to answer", Duration::from_secs(60), || {
            let supervisor = &jaeger._supervisor;
            let up = [otlp_grpc, otlp_http, query]
                .iter()
                .all(|a| std::net::TcpStream::connect(a).is_ok());
            async move {
                supervisor.check()?;
                Ok::<_, Error>(up.then_some(()))
            }
        })
        .await?;
        Ok(jaeger)
    }

    /// What Jaeger logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
