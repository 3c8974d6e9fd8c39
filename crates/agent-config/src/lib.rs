//! The agent configuration file, `.gitlab/agents/<name>/config.yaml`, in the
//! GitLab agent's schema so that its users bring their repositories unchanged.
//!
//! [`parse`] turns the file's text into a typed [`AgentConfig`] with every
//! default applied, and returns either the config with its warnings (unknown
//! fields, sections Tether does not act on) or every problem at once, each
//! with its location. kas runs it before sending a config to an agent: a file
//! that does not parse or validate is never sent.
//!
//! [`policy`] says which projects and notification secrets a config may
//! name.
//!
//! Two files of a manifest project are read here too, with the same
//! guarantees: [`image_updates`] (`.tether/image-updates.yaml`) and
//! [`rollout`] (`.tether/rollout.yaml`, the waves a commit reaches agents
//! in, picked by [`labels`]).
//!
//! Architecture invariant: this crate does no IO. It knows nothing of git,
//! Kubernetes clients or the network.

mod duration;
mod error;
mod findings;
mod image_repository;
pub mod image_updates;
pub mod labels;
mod locate;
mod names;
pub mod policy;
mod renders;
pub mod rollout;
mod schema;
mod validate;

pub use duration::{DurationError, parse as parse_duration};
pub use error::{ConfigError, Problem, Warning};
pub use image_repository::{ImageRepository, ImageRepositoryError};
pub use names::{
    AgentName, AgentNameError, ChartSegmentError, MAX_CHART_SEGMENT_LEN, ProjectId, ProjectIdError,
    config_path, notification_secret_group, notification_secret_name_problem, validate_agent_name,
    validate_chart_name, validate_chart_version, validate_project_id,
};
pub use renders::{MAX_RENDERS_PER_PROJECT, MAX_VALUES_FILES};
pub use schema::*;
pub use validate::MAX_PATHS_PER_PROJECT;

/// Largest config file accepted, as in the GitLab agent.
pub const MAX_CONFIG_BYTES: usize = 128 * 1024;

/// A config that parsed and validated, with what the user should still hear.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub config: AgentConfig,
    pub warnings: Vec<Warning>,
}

/// Parses and validates a config file. An empty file (or one holding only
/// comments) is the empty config, as is a missing one for the caller.
///
/// Refuses only what GitLab's agent refuses; every problem and warning
/// carries the line and column of the value it concerns.
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
            serde_ignored::deserialize(de, |path| unknown.push(display_path(&path)))
        })
        .map_err(|e| ConfigError::syntax(&e))?;
    let mut config = config.unwrap_or_default();
    let locations = locate::Locations::scan(text);
    // A project that renders charts or kustomizations gets GitLab's default
    // glob only if it asks for it: that glob would also pick up the charts'
    // templates and values files as manifests.
    for (i, project) in config.gitops.manifest_projects.iter_mut().enumerate() {
        if project.renders() && !locations.holds(&format!("gitops.manifest_projects[{i}].paths")) {
            project.paths.clear();
        }
    }

    let validate::Findings {
        mut problems,
        warnings: found,
    } = validate::validate(&mut config);
    if !problems.is_empty() {
        locations.place_problems(&mut problems);
        return Err(ConfigError::Invalid(problems));
    }
    let mut warnings = locate::unknown_fields(unknown);
    warnings.extend(config.unsupported_sections().map(|section| Warning {
        path: section.to_owned(),
        line: None,
        column: None,
        message: format!("section {section} is accepted but Tether does not act on it"),
    }));
    warnings.extend(found);
    locations.place_warnings(&mut warnings);
    Ok(Parsed { config, warnings })
}

pub(crate) fn split(at: Option<(usize, usize)>) -> (Option<usize>, Option<usize>) {
    (at.map(|a| a.0), at.map(|a| a.1))
}

/// serde_ignored's path in the syntax every other message uses:
/// `gitops.manifest_projects[0].colour`.
pub(crate) fn display_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", display_path(parent)),
        Path::Map { parent, key } => {
            let parent = display_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => display_path(parent),
    }
}

/// Bounds far below the parser's defaults, sized for a 128 KiB file: a
/// billion-laughs document fails fast instead of expanding.
pub(crate) fn parse_options() -> serde_saphyr::Options {
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
    options.alias_limits.max_total_replayed_events = 20_000;
    options
}
