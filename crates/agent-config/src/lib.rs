//! The agent configuration file, `.gitlab/agents/<name>/config.yaml`, in the
//! GitLab agent's schema so that its users bring their repositories unchanged.
//!
//! [`parse`] turns the file's text into a typed [`AgentConfig`] with every
//! default applied, and returns either the config with its warnings (unknown
//! fields, sections Tether does not act on) or every problem at once, each
//! with its location. kas runs it before sending a config to an agent: a file
//! that does not parse or validate is never sent.
//!
//! Architecture invariant: this crate does no IO. It knows nothing of git,
//! Kubernetes clients or the network.

mod duration;
mod error;
mod names;
mod schema;
mod validate;

pub use duration::parse as parse_duration;
pub use error::{ConfigError, Problem, Warning};
pub use names::{AgentNameError, config_path, validate_agent_name, validate_project_id};
pub use schema::*;

/// Largest config file accepted, as in the GitLab agent.
pub const MAX_CONFIG_BYTES: usize = 128 * 1024;

/// Most `paths` entries one manifest project may list, as in the GitLab agent.
pub const MAX_PATHS_PER_PROJECT: usize = 100;

/// A config that parsed and validated, with what the user should still hear.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub config: AgentConfig,
    pub warnings: Vec<Warning>,
}

/// Parses and validates a config file. An empty file (or one holding only
/// comments) is the empty config, as is a missing one for the caller.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            size: text.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let mut unknown = Vec::new();
    let config: Option<AgentConfig> =
        serde_saphyr::with_deserializer_from_str_with_options(text, parse_options(), |de| {
            // serde_ignored marks each Option level with a `?` segment, which
            // means nothing to the person reading the warning.
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string().replace("?.", "")))
        })
        .map_err(|e| ConfigError::syntax(&e))?;
    let config = config.unwrap_or_default();

    let problems = validate::validate(&config);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let mut warnings: Vec<Warning> = unknown
        .into_iter()
        .map(|path| Warning {
            message: format!("unknown field {path} is ignored"),
            path,
        })
        .collect();
    warnings.extend(config.unsupported_sections().map(|section| Warning {
        path: section.to_owned(),
        message: format!("section {section} is accepted but Tether does not act on it"),
    }));
    Ok(Parsed { config, warnings })
}

/// Bounds far below the parser's defaults, sized for a 128 KiB file: a
/// billion-laughs document fails fast instead of expanding.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_CONFIG_BYTES);
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 32;
    budget.max_documents = 1;
    budget.max_nodes = 50_000;
    budget.max_events = 100_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}
