//! The configuration kas sends: the agent keeps the last one it applied
//! (across reconnects, so kas need not send it again) and applies the parts
//! it acts on.

use std::sync::{Arc, Mutex};

use tether_agent_config::{AgentConfig, ManifestProject};
use tether_proto::convert;
use tether_proto::v1::AgentConfiguration;
use tether_runtime::logging::LogLevel;

/// The applied configuration, shared by the connection and the components
/// that act on it.
#[derive(Clone, Debug)]
pub struct ConfigState {
    inner: Arc<Mutex<Option<Applied>>>,
    log_level: LogLevel,
}

#[derive(Clone, Debug)]
struct Applied {
    commit: String,
    /// The configuration project: manifest projects without an id are it.
    project: String,
    config: AgentConfig,
}

impl ConfigState {
    pub fn new(log_level: LogLevel) -> Self {
        ConfigState {
            inner: Arc::default(),
            log_level,
        }
    }

    /// Commit of the applied configuration; empty before the first.
    pub fn commit(&self) -> String {
        self.lock()
            .as_ref()
            .map(|a| a.commit.clone())
            .unwrap_or_default()
    }

    /// Applies `message`: the log levels change at once. An unusable
    /// message changes nothing.
    pub fn apply(&self, message: &AgentConfiguration) -> Result<(), convert::ConversionError> {
        let config = convert::from_proto(message)?;
        let logging = &config.observability.logging;
        // The transport's crates log at the gRPC level, everything else at
        // the agent's level.
        let grpc = logging.grpc_level.as_directive();
        let directive = format!(
            "{},h2={grpc},tonic={grpc},tower={grpc},hyper={grpc},hyper_util={grpc}",
            logging.level.as_directive()
        );
        match self.log_level.set(&directive) {
            // Seen only when the new level shows debug lines.
            Ok(()) => tracing::debug!(filter = %directive, "log filter set from the configuration"),
            Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
        }
        tracing::info!(
            commit = %message.commit_id,
            project = %message.project_id,
            log_level = logging.level.as_directive(),
            "applied configuration"
        );
        *self.lock() = Some(Applied {
            commit: message.commit_id.clone(),
            project: message.project_id.clone(),
            config,
        });
        Ok(())
    }

    /// The manifest project `project` of the applied configuration.
    pub fn manifest_project(&self, project: &str) -> Option<ManifestProject> {
        let applied = self.lock();
        let applied = applied.as_ref()?;
        applied
            .config
            .gitops
            .manifest_projects
            .iter()
            .find(|p| p.id.as_deref().unwrap_or(&applied.project) == project)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Applied>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
