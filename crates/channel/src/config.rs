//! An agent's config file, read from its project at a commit, parsed and
//! validated before anything is sent: a file that fails never reaches the
//! agent, which keeps its last good configuration, and the failure is shown
//! on the agent in the API with the file and line to fix.

use tether_agent_config::{ConfigError, MAX_CONFIG_BYTES, config_path};
pub use tether_api::{ConfigProblem, ConfigStatus};
use tether_git::{CommitId, GitError, Source};
use tether_proto::v1::AgentConfiguration;

/// A config ready to send, with its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub message: AgentConfiguration,
    /// The same config, parsed: kas authorizes proxy requests against it.
    pub config: tether_agent_config::AgentConfig,
    pub warnings: Vec<String>,
    /// The file's text, stored for the replicas that authorize proxy
    /// requests without the agent's session.
    pub source: String,
}

/// Reads, parses and validates `agent`'s config file at `commit`. A missing
/// file is the empty config, as in the GitLab agent.
pub async fn load(
    source: Source,
    commit: CommitId,
    agent: &str,
    project: &str,
) -> Result<Loaded, ConfigProblem> {
    let path = config_path(agent);
    let read = {
        let (commit, path) = (commit.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            source.read_file(&commit, &path, MAX_CONFIG_BYTES as u64)
        })
        .await
    };
    let problem = |message: String| ConfigProblem {
        commit: Some(commit.to_string()),
        file: Some(path.clone()),
        line: None,
        column: None,
        message,
    };
    let bytes = match read {
        Err(e) => return Err(problem(format!("reading the file panicked: {e}"))),
        Ok(Err(e @ GitError::TooLarge { .. })) => return Err(problem(e.to_string())),
        Ok(Err(e)) => {
            return Err(ConfigProblem {
                file: None,
                ..problem(e.to_string())
            });
        }
        Ok(Ok(None)) => Vec::new(),
        Ok(Ok(Some(file))) => file.bytes,
    };
    let text = String::from_utf8(bytes).map_err(|_| problem("the file is not UTF-8".into()))?;
    match tether_agent_config::parse(&text) {
        Ok(parsed) => Ok(Loaded {
            message: tether_proto::convert::to_proto(&parsed.config, &commit.to_string(), project),
            config: parsed.config,
            warnings: parsed.warnings.into_iter().map(|w| w.to_string()).collect(),
            source: text,
        }),
        Err(ConfigError::Syntax {
            line,
            column,
            message,
        }) => Err(ConfigProblem {
            line,
            column,
            ..problem(message)
        }),
        Err(e) => Err(ConfigProblem {
            line: e.line(),
            column: e.column(),
            ..problem(e.to_string())
        }),
    }
}
