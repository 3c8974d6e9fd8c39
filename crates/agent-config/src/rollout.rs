//! `.tether/rollout.yaml`: how a manifest project's new commit reaches the
//! agents that follow it, in waves (a canary first, then the rest), and
//! what happens when an agent fails to become healthy.
//!
//! The file lives in the manifest project, so the rollout policy is
//! reviewed and versioned with the manifests it rolls out. [`parse`] reads
//! it as [`crate::parse`] reads a config: every default applied, every
//! problem at once with its line and column, unknown fields named as
//! warnings.
//!
//! Invariant: waves partition the agents. An agent belongs to the first
//! wave whose selector matches it, so a wave's selector means "of the
//! agents left"; the empty selector `{}` takes all of them, and a wave after
//! one is left with none (a warning says so).

use std::time::Duration;

use granit_parser::{Event, Parser};

use crate::error::{ConfigError, Warning};
use crate::findings::Findings;
use crate::labels::{self, LabelExpression, LabelSelector, Labels, Operator};
use crate::locate::Locations;

/// Where the file is in a project.
pub const ROLLOUT_PATH: &str = ".tether/rollout.yaml";
/// Largest file accepted.
pub const MAX_ROLLOUT_BYTES: usize = 64 * 1024;
/// Waves one file may have.
pub const MAX_WAVES: usize = 100;
/// How long one agent has to apply a commit and report healthy before it
/// counts as failed, when the file does not say.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Shortest `agent_timeout`: below it an ordinary apply and health check
/// would already count as failures.
pub const MIN_AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `agent_timeout`: a longer one is a rollout nobody is watching.
pub const MAX_AGENT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest soak of one wave, for the same reason.
pub const MAX_SOAK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The file, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutSpec {
    /// In order; at least one.
    pub waves: Vec<WaveSpec>,
    pub on_failure: OnFailure,
    /// Whole seconds: see [`parse`].
    #[serde(with = "seconds")]
    pub agent_timeout: Duration,
}

/// One wave: which agents, how many at once, and how long they must stay
/// healthy before the next wave starts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaveSpec {
    /// An RFC 1123 label, unique in the file: it names the wave in status
    /// and in the CLI.
    pub name: String,
    /// Of the agents no earlier wave took; empty: all of them.
    pub agents: LabelSelector,
    /// `None`: every agent of the wave at once.
    pub max_parallel: Option<Parallel>,
    /// Whole seconds; zero: the next wave starts as soon as this one is
    /// healthy.
    #[serde(with = "seconds")]
    pub soak: Duration,
}

/// How many of a wave's agents update at once: a count, or a percentage
/// of the wave so that the file need not change as agents join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Parallel {
    Count(u32),
    /// 1 to 100.
    Percent(u32),
}

/// What a failed agent does to the rollout. Either way no further agent
/// starts; `rollback` also returns the agents of the rollout that already
/// updated to the previous commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Halt,
    Rollback,
}

/// Parses and checks the file.
///
/// `soak` and `agent_timeout` take Go durations (`2m`, `1h30m`) and must be
/// whole seconds: the spec's JSON carries seconds, so that what kas stores
/// and serves is exactly what the file says.
pub fn parse(text: &str) -> Result<(RolloutSpec, Vec<Warning>), ConfigError> {
    if text.len() > MAX_ROLLOUT_BYTES {
        return Err(ConfigError::TooLarge {
            size: text.len(),
            limit: MAX_ROLLOUT_BYTES,
        });
    }
    let mut unknown = Vec::new();
    let raw: Option<raw::File> =
        serde_saphyr::with_deserializer_from_str_with_options(text, crate::parse_options(), |de| {
            serde_ignored::deserialize(de, |path| unknown.push(crate::display_path(&path)))
        })
        .map_err(|e| not_a_mapping(text).unwrap_or_else(|| ConfigError::syntax(&e)))?;
    let raw = raw.unwrap_or_default();
    let locations = Locations::scan(text);
    let mut findings = Findings::default();
    // An unknown field in a selector is not harmless: ignoring it would
    // select more agents than the author meant (`matchLabels:` would take
    // every agent into the canary wave).
    let (widening, unknown): (Vec<String>, Vec<String>) = unknown
        .into_iter()
        .partition(|path| in_selector(path, raw.waves.len()));
    for path in widening {
        let field = path
            .split_once("].agents.")
            .map_or(path.as_str(), |(_, f)| f);
        let message = format!(
            "unknown field {field}: a selector takes only match_labels and match_expressions, and ignoring {field} would select more agents than meant"
        );
        findings.problem(path, message);
    }
    let spec = check(raw, &mut findings);
    let Findings {
        mut problems,
        warnings: found,
    } = findings;
    if !problems.is_empty() {
        locations.place_problems(&mut problems);
        // Top to bottom, as the user reads the file.
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(ConfigError::Invalid(problems));
    }
    let mut warnings = crate::locate::unknown_fields(unknown);
    warnings.extend(found);
    locations.place_warnings(&mut warnings);
    Ok((spec, warnings))
}

fn check(raw: raw::File, findings: &mut Findings) -> RolloutSpec {
    let count = raw.waves.len();
    if count == 0 {
        findings.problem(
            "waves",
            "give at least one wave (`agents: {}` takes every agent)",
        );
    } else if count > MAX_WAVES {
        findings.problem(
            "waves",
            format!("{count} waves, more than the limit of {MAX_WAVES}"),
        );
    }
    let last = count.min(MAX_WAVES).saturating_sub(1);
    let mut names = std::collections::HashSet::new();
    let mut waves = Vec::new();
    for (i, wave) in raw.waves.into_iter().take(MAX_WAVES).enumerate() {
        let at = |field: &str| format!("waves[{i}].{field}");
        let name = wave.name.unwrap_or_default();
        if name.is_empty() {
            findings.problem(at("name"), "every wave needs a name");
        } else if let Some(reason) = crate::names::dns_label_problem(&name) {
            findings.problem(at("name"), format!("{name:?} is not a wave name: {reason}"));
        } else if !names.insert(name.clone()) {
            findings.problem(at("name"), format!("wave {name:?} is named twice"));
        }
        let agents = match wave.agents {
            Some(selector) => check_selector(selector, &at("agents"), findings),
            None => {
                findings.problem(
                    at("agents"),
                    "every wave needs agents: a selector, or {} for every agent left",
                );
                LabelSelector::default()
            }
        };
        if agents.is_empty() && i < last {
            findings.warn(
                at("agents"),
                "this wave takes every agent left, so the waves after it get none",
            );
        }
        let max_parallel = match wave.max_parallel {
            None => None,
            Some(value) => match parallel(&value) {
                Ok(parallel) => Some(parallel),
                Err(message) => {
                    findings.problem(at("max_parallel"), message);
                    None
                }
            },
        };
        let soak = duration(
            wave.soak.as_deref(),
            Duration::ZERO,
            Duration::ZERO,
            MAX_SOAK,
        )
        .unwrap_or_else(|message| {
            findings.problem(at("soak"), message);
            Duration::ZERO
        });
        waves.push(WaveSpec {
            name,
            agents,
            max_parallel,
            soak,
        });
    }
    let on_failure = match raw.on_failure.as_deref() {
        None | Some("halt") => OnFailure::Halt,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            findings.problem(
                "on_failure",
                format!("{other:?} is neither halt nor rollback"),
            );
            OnFailure::Halt
        }
    };
    let agent_timeout = duration(
        raw.agent_timeout.as_deref(),
        DEFAULT_AGENT_TIMEOUT,
        MIN_AGENT_TIMEOUT,
        MAX_AGENT_TIMEOUT,
    )
    .unwrap_or_else(|message| {
        findings.problem("agent_timeout", message);
        DEFAULT_AGENT_TIMEOUT
    });
    RolloutSpec {
        waves,
        on_failure,
        agent_timeout,
    }
}

/// Checks a selector as Kubernetes validates one, at `at`.
fn check_selector(raw: raw::Selector, at: &str, findings: &mut Findings) -> LabelSelector {
    if raw.match_labels.len() > labels::MAX_LABELS {
        findings.problem(
            format!("{at}.match_labels"),
            format!(
                "{} labels, more than an agent can have ({})",
                raw.match_labels.len(),
                labels::MAX_LABELS
            ),
        );
    }
    let mut match_labels = Labels::new();
    for (key, value) in raw.match_labels {
        let path = format!("{at}.match_labels.{key}");
        if let Err(e) = labels::check_key(&key) {
            findings.problem(path.clone(), e.to_string());
        }
        match value {
            None => findings.problem(
                path,
                "a label value must be a string; write '' for the empty value",
            ),
            Some(value) => {
                if let Err(e) = labels::check_value(&value) {
                    findings.problem(path, e.to_string());
                }
                match_labels.insert(key, value);
            }
        }
    }
    let mut match_expressions = Vec::new();
    for (j, expression) in raw.match_expressions.into_iter().enumerate() {
        let here = |field: &str| format!("{at}.match_expressions[{j}].{field}");
        let key = expression.key.unwrap_or_default();
        if key.is_empty() {
            findings.problem(here("key"), "every expression needs a key");
        } else if let Err(e) = labels::check_key(&key) {
            findings.problem(here("key"), e.to_string());
        }
        let operator = match expression.operator.as_deref() {
            Some("In") => Some(Operator::In),
            Some("NotIn") => Some(Operator::NotIn),
            Some("Exists") => Some(Operator::Exists),
            Some("DoesNotExist") => Some(Operator::DoesNotExist),
            other => {
                let given = match other {
                    Some(text) => format!("{text:?} is not an operator"),
                    None => "every expression needs an operator".to_owned(),
                };
                findings.problem(
                    here("operator"),
                    format!("{given}: In, NotIn, Exists or DoesNotExist"),
                );
                None
            }
        };
        let mut values = Vec::new();
        for (k, value) in expression.values.into_iter().enumerate() {
            let path = here(&format!("values[{k}]"));
            match value {
                None => findings.problem(path, "a value must be a string"),
                Some(value) => {
                    if let Err(e) = labels::check_value(&value) {
                        findings.problem(path, e.to_string());
                    }
                    values.push(value);
                }
            }
        }
        match operator {
            Some(Operator::In | Operator::NotIn) if values.is_empty() => {
                findings.problem(here("values"), "In and NotIn need at least one value")
            }
            Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => {
                findings.problem(here("values"), "Exists and DoesNotExist take no values")
            }
            _ => {}
        }
        if let Some(operator) = operator {
            match_expressions.push(LabelExpression {
                key,
                operator,
                values,
            });
        }
    }
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

/// `max_parallel`: a positive count, or a percentage from 1% to 100%.
fn parallel(value: &raw::Scalar) -> Result<Parallel, String> {
    let refuse = |shown: String| {
        format!("{shown} is not a number of agents (1 or more) or a percentage from 1% to 100%")
    };
    let count = |n: u64| match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(Parallel::Count(n)),
        _ => Err(refuse(n.to_string())),
    };
    match value {
        raw::Scalar::Unsigned(n) => count(*n),
        raw::Scalar::Signed(n) => Err(refuse(n.to_string())),
        raw::Scalar::Float(n) => Err(refuse(n.to_string())),
        raw::Scalar::Bool(b) => Err(refuse(b.to_string())),
        raw::Scalar::Text(text) => {
            let digits = text.strip_suffix('%').unwrap_or(text);
            let number = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten();
            match (number, text.ends_with('%')) {
                (Some(p), true) if (1..=100).contains(&p) => Ok(Parallel::Percent(p as u32)),
                // A quoted count ("5") means what the unquoted one does.
                (Some(n), false) => count(n),
                _ => Err(refuse(format!("{text:?}"))),
            }
        }
    }
}

/// A Go duration in `[min, max]`, in whole seconds; `default` when absent.
fn duration(
    text: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value = crate::parse_duration(text).map_err(|e| e.to_string())?;
    if value.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds"));
    }
    if value < min || value > max {
        return Err(format!(
            "{text:?} is not between {} and {}",
            crate::duration::format(min),
            hours(max)
        ));
    }
    Ok(value)
}

/// `168h` rather than `604800s` for the long limits.
fn hours(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ => crate::duration::format(d),
    }
}

/// Whether `path` is an unknown field of wave `i`'s selector itself, such
/// as `waves[0].agents.matchLabels`, as opposed to one inside an
/// expression.
fn in_selector(path: &str, waves: usize) -> bool {
    (0..waves.min(MAX_WAVES)).any(|i| {
        path.strip_prefix(&format!("waves[{i}].agents."))
            .is_some_and(|rest| !rest.starts_with("match_expressions["))
    })
}

/// A clear error for a file whose top node is not a mapping: the parser's
/// own ("expected mapping start") does not say what the file should hold.
/// `None` when the file does start with a mapping, and the parser's error
/// is about something else.
fn not_a_mapping(text: &str) -> Option<ConfigError> {
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return None;
        };
        let what = match event {
            Event::SequenceStart(..) => "a list",
            Event::Scalar(..) | Event::Alias(..) => "a single value",
            Event::MappingStart(..) | Event::StreamEnd => return None,
            _ => continue,
        };
        return Some(ConfigError::Syntax {
            line: Some(span.start.line()),
            column: Some(span.start.col() + 1),
            message: format!(
                "the file must be a mapping with waves (and optionally on_failure and agent_timeout), not {what}"
            ),
        });
    }
    None
}

// === impl Parallel ===

impl Parallel {
    /// Agents of a wave of `total` that update at once: a count as is, a
    /// percentage rounded down; at least 1 when `total > 0`, so that a
    /// small wave still moves, and at most `total`.
    pub fn of(&self, total: usize) -> usize {
        if total == 0 {
            return 0;
        }
        let n = match *self {
            Parallel::Count(n) => n as usize,
            Parallel::Percent(p) => (total as u128 * u128::from(p) / 100) as usize,
        };
        n.clamp(1, total)
    }

    /// As the file writes it: `2` or `25%`.
    pub fn describe(&self) -> String {
        match self {
            Parallel::Count(n) => n.to_string(),
            Parallel::Percent(p) => format!("{p}%"),
        }
    }
}

/// A duration as whole seconds in JSON, which is what [`parse`] lets
/// through; a fraction of a second would be dropped.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        u64::deserialize(de).map(Duration::from_secs)
    }
}

/// The file as written, before checking. Everything the checks look at is
/// optional or loosely typed here, so that a wrong value is a problem with
/// its place among all the others rather than the one error serde stops at.
mod raw {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct File {
        pub waves: Vec<Wave>,
        pub on_failure: Option<String>,
        pub agent_timeout: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Wave {
        pub name: Option<String>,
        pub agents: Option<Selector>,
        pub max_parallel: Option<Scalar>,
        pub soak: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Selector {
        pub match_labels: BTreeMap<String, Option<String>>,
        pub match_expressions: Vec<Expression>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Expression {
        pub key: Option<String>,
        pub operator: Option<String>,
        pub values: Vec<Option<String>>,
    }

    /// Any scalar, as YAML typed it: `max_parallel` is a number or a
    /// string, and a wrong one of either is a problem, not a parse error.
    #[derive(Debug)]
    pub enum Scalar {
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
        Text(String),
    }

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Scalar;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number or a percentage")
                }
                fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar::Unsigned(v))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(match u64::try_from(v) {
                        Ok(v) => Scalar::Unsigned(v),
                        Err(_) => Scalar::Signed(v),
                    })
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar::Float(v))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar::Bool(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar::Text(v.to_owned()))
                }
            }
            de.deserialize_any(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::error::Problem;

    const EXAMPLE: &str = "\
waves:
  - name: canary
    agents: {match_labels: {env: canary}}
    soak: 2m                    # healthy this long before the next wave starts (default 0)
  - name: eu
    agents: {match_labels: {env: prod, region: eu}}
    max_parallel: 25%           # of the wave's agents at once
    soak: 5m
  - name: rest
    agents: {match_expressions: [{key: env, operator: In, values: [prod]}]}
on_failure: rollback            # or halt (the default)
agent_timeout: 10m              # default 10m
";

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// The one problem of a file, with the line it names.
    fn problem(text: &str) -> (String, Option<usize>, String) {
        let mut found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        let p = found.remove(0);
        (p.path, p.line, p.message)
    }

    fn wave(yaml: &str) -> String {
        format!("waves:\n  - name: all\n    agents: {{}}\n{yaml}")
    }

    #[test]
    fn the_example_parses_to_its_values() {
        let (spec, warnings) = parse(EXAMPLE).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        let expected = RolloutSpec {
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    agents: LabelSelector {
                        match_labels: labels(&[("env", "canary")]),
                        match_expressions: Vec::new(),
                    },
                    max_parallel: None,
                    soak: Duration::from_secs(120),
                },
                WaveSpec {
                    name: "eu".into(),
                    agents: LabelSelector {
                        match_labels: labels(&[("env", "prod"), ("region", "eu")]),
                        match_expressions: Vec::new(),
                    },
                    max_parallel: Some(Parallel::Percent(25)),
                    soak: Duration::from_secs(300),
                },
                WaveSpec {
                    name: "rest".into(),
                    agents: LabelSelector {
                        match_labels: Labels::new(),
                        match_expressions: vec![LabelExpression {
                            key: "env".into(),
                            operator: Operator::In,
                            values: vec!["prod".into()],
                        }],
                    },
                    max_parallel: None,
                    soak: Duration::ZERO,
                },
            ],
            on_failure: OnFailure::Rollback,
            agent_timeout: Duration::from_secs(600),
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn defaults_apply_when_not_written() {
        let (spec, warnings) = parse("waves:\n  - name: all\n    agents: {}\n").expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(spec.on_failure, OnFailure::Halt);
        assert_eq!(spec.agent_timeout, DEFAULT_AGENT_TIMEOUT);
        assert_eq!(spec.waves[0].soak, Duration::ZERO);
        assert_eq!(spec.waves[0].max_parallel, None);
        assert!(spec.waves[0].agents.is_empty());
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let (spec, _) = parse(EXAMPLE).expect("valid");
        let json = serde_json::to_string(&spec).expect("serialized");
        let back: RolloutSpec = serde_json::from_str(&json).expect("parsed");
        assert_eq!(back, spec);
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(value["agent_timeout"], 600);
        assert_eq!(value["on_failure"], "rollback");
        assert_eq!(value["waves"][0]["soak"], 120);
    }

    #[test]
    fn a_file_without_waves_is_refused() {
        for text in ["", "# nothing yet\n", "waves: []\n", "on_failure: halt\n"] {
            let (path, _, message) = problem(text);
            assert_eq!(path, "waves", "{text:?}");
            assert!(message.contains("at least one wave"), "{message}");
        }
        assert_eq!(problem("on_failure: halt\nwaves: []\n").1, Some(2));
    }

    #[test]
    fn more_than_the_limit_of_waves_is_refused() {
        let mut text = String::from("waves:\n");
        for i in 0..=MAX_WAVES {
            text.push_str(&format!(
                "  - {{name: w{i}, agents: {{match_labels: {{n: '{i}'}}}}}}\n"
            ));
        }
        let (path, line, message) = problem(&text);
        assert_eq!((path.as_str(), line), ("waves", Some(1)));
        assert!(message.contains("101 waves"), "{message}");
    }

    #[test]
    fn wave_names_are_required_unique_dns_labels() {
        let text = "waves:\n  - agents: {}\n  - name: Canary\n    agents: {}\n  - name: eu\n    agents: {}\n  - name: eu\n    agents: {}\n  - name: ''\n    agents: {}\n";
        let found = problems(text);
        let at: Vec<(&str, Option<usize>)> =
            found.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            at,
            [
                ("waves[0].name", Some(2)),
                ("waves[1].name", Some(3)),
                ("waves[3].name", Some(7)),
                ("waves[4].name", Some(9)),
            ]
        );
        assert!(found[2].message.contains("named twice"), "{found:?}");
        let long = format!("waves:\n  - name: {}\n    agents: {{}}\n", "a".repeat(64));
        assert_eq!(problem(&long).0, "waves[0].name");
    }

    #[test]
    fn a_wave_without_agents_is_refused() {
        let (path, line, message) = problem("waves:\n  - name: canary\n    soak: 1m\n");
        assert_eq!((path.as_str(), line), ("waves[0].agents", Some(2)));
        assert!(message.contains("{}"), "{message}");
        assert_eq!(
            problem("waves:\n  - name: canary\n    agents:\n").1,
            Some(3)
        );
    }

    #[test]
    fn an_every_agent_wave_before_the_last_is_a_warning() {
        let text = "waves:\n  - name: first\n    agents: {}\n  - name: never\n    agents: {match_labels: {env: prod}}\n";
        let (_, warnings) = parse(text).expect("valid");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "waves[0].agents");
        assert_eq!(warnings[0].line, Some(3));
        assert!(warnings[0].message.contains("get none"));
    }

    #[test]
    fn bad_label_keys_and_values_are_refused_at_their_line() {
        let text = "waves:\n  - name: a\n    agents:\n      match_labels:\n        env: prod\n        -bad: x\n        region: 'e u'\n        app.kubernetes.io/name: web\n        Bad.Prefix/x: y\n        tier: ~\n";
        let found = problems(text);
        let at: Vec<(&str, Option<usize>)> =
            found.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            at,
            [
                ("waves[0].agents.match_labels.-bad", Some(6)),
                ("waves[0].agents.match_labels.region", Some(7)),
                ("waves[0].agents.match_labels.Bad.Prefix/x", Some(9)),
                ("waves[0].agents.match_labels.tier", Some(10)),
            ]
        );
        assert!(found[0].message.contains("\"-bad\""), "{found:?}");
        assert!(found[1].message.contains("\"e u\""), "{found:?}");
    }

    #[test]
    fn expressions_are_checked_like_kubernetes_does() {
        let text = "\
waves:
  - name: a
    agents:
      match_expressions:
        - {key: env, operator: In, values: []}
        - {key: env, operator: NotIn}
        - {key: gpu, operator: Exists, values: [yes]}
        - {key: gpu, operator: DoesNotExist, values: [x]}
        - {key: env, operator: in, values: [prod]}
        - {key: env, values: [prod]}
        - {operator: Exists}
        - {key: 'no good', operator: Exists}
        - {key: env, operator: In, values: [prod, 'n o']}
";
        let found = problems(text);
        let at: Vec<(String, Option<usize>)> = found
            .iter()
            .map(|p| {
                (
                    p.path.replace("waves[0].agents.match_expressions", "e"),
                    p.line,
                )
            })
            .collect();
        let expected: Vec<(String, Option<usize>)> = [
            ("e[0].values", 5),
            ("e[1].values", 6),
            ("e[2].values", 7),
            ("e[3].values", 8),
            ("e[4].operator", 9),
            ("e[5].operator", 10),
            ("e[6].key", 11),
            ("e[7].key", 12),
            ("e[8].values[1]", 13),
        ]
        .into_iter()
        .map(|(path, line)| (path.to_owned(), Some(line)))
        .collect();
        assert_eq!(at, expected, "{found:?}");
        assert!(found[4].message.contains("\"in\""), "{found:?}");
    }

    #[test]
    fn max_parallel_is_a_positive_count_or_a_percentage() {
        let parsed = |value: &str| {
            let (spec, _) = parse(&wave(&format!("    max_parallel: {value}\n"))).expect("valid");
            spec.waves[0].max_parallel
        };
        assert_eq!(parsed("2"), Some(Parallel::Count(2)));
        assert_eq!(parsed("'3'"), Some(Parallel::Count(3)));
        assert_eq!(parsed("1%"), Some(Parallel::Percent(1)));
        assert_eq!(parsed("100%"), Some(Parallel::Percent(100)));
        assert_eq!(parsed("~"), None);
        for bad in [
            "0",
            "-1",
            "0%",
            "150%",
            "abc",
            "2.5",
            "true",
            "'%'",
            "-5%",
            "' 5%'",
            "4294967296",
        ] {
            let (path, line, message) = problem(&wave(&format!("    max_parallel: {bad}\n")));
            assert_eq!(
                (path.as_str(), line),
                ("waves[0].max_parallel", Some(4)),
                "{bad}"
            );
            assert!(message.contains("percentage"), "{message}");
        }
    }

    #[test]
    fn soak_and_agent_timeout_are_bounded_durations() {
        for bad in ["forever", "5", "-1m", "169h", "1.5s"] {
            let (path, line, _) = problem(&wave(&format!("    soak: {bad}\n")));
            assert_eq!((path.as_str(), line), ("waves[0].soak", Some(4)), "{bad}");
        }
        assert_eq!(
            parse(&wave("    soak: 1h30m\n")).expect("valid").0.waves[0].soak,
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse(&wave("    soak: 0\n")).expect("valid").0.waves[0].soak,
            Duration::ZERO
        );
        for bad in ["4s", "0", "169h", "ten minutes", "10.5s"] {
            let text = wave(&format!("agent_timeout: {bad}\n"));
            let (path, line, _) = problem(&text);
            assert_eq!((path.as_str(), line), ("agent_timeout", Some(4)), "{bad}");
        }
        let (spec, _) = parse(&wave("agent_timeout: 5s\n")).expect("valid");
        assert_eq!(spec.agent_timeout, MIN_AGENT_TIMEOUT);
        let (spec, _) = parse(&wave("agent_timeout: 168h\n")).expect("valid");
        assert_eq!(spec.agent_timeout, MAX_AGENT_TIMEOUT);
    }

    #[test]
    fn on_failure_is_halt_or_rollback() {
        let (spec, _) = parse(&wave("on_failure: halt\n")).expect("valid");
        assert_eq!(spec.on_failure, OnFailure::Halt);
        for bad in ["Rollback", "retry", "''"] {
            let (path, line, _) = problem(&wave(&format!("on_failure: {bad}\n")));
            assert_eq!((path.as_str(), line), ("on_failure", Some(4)), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "waves:\n  - name: Canary\n    agents: {match_labels: {env: 'a b'}}\n    max_parallel: 0\n    soak: soon\non_failure: explode\nagent_timeout: 1s\n";
        let lines: Vec<Option<usize>> = problems(text).iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            [Some(2), Some(3), Some(4), Some(5), Some(6), Some(7)]
        );
    }

    #[test]
    fn unknown_fields_are_warnings_except_in_a_selector() {
        let text = "waves:\n  - name: a\n    agents: {match_labels: {env: x}, match_expressions: [{key: k, operator: Exists, note: hi}]}\n    colour: blue\nschedule: nightly\n";
        let (_, warnings) = parse(text).expect("valid");
        let at: Vec<(&str, Option<usize>)> =
            warnings.iter().map(|w| (w.path.as_str(), w.line)).collect();
        assert_eq!(
            at,
            [
                ("waves[0].agents.match_expressions[0].note", Some(3)),
                ("waves[0].colour", Some(4)),
                ("schedule", Some(5)),
            ]
        );
        // `matchLabels` ignored would make the canary wave take every agent.
        let (path, line, message) =
            problem("waves:\n  - name: canary\n    agents:\n      matchLabels: {env: canary}\n");
        assert_eq!(
            (path.as_str(), line),
            ("waves[0].agents.matchLabels", Some(4))
        );
        assert!(message.contains("more agents"), "{message}");
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_refused_clearly() {
        for (text, what) in [("- name: a\n", "a list"), ("\nrollout\n", "a single value")] {
            let Err(ConfigError::Syntax { line, message, .. }) = parse(text) else {
                panic!("{text:?} refused as syntax")
            };
            assert!(
                message.contains("must be a mapping") && message.contains(what),
                "{message}"
            );
            assert_eq!(
                line,
                Some(text.lines().position(|l| !l.is_empty()).unwrap_or(0) + 1)
            );
        }
        let Err(ConfigError::Syntax { line, .. }) = parse("waves: [\n") else {
            panic!("not YAML")
        };
        assert!(line.is_some());
        // A wrong type inside the mapping keeps the parser's own error.
        let Err(ConfigError::Syntax { message, .. }) = parse("waves: 5\n") else {
            panic!("refused")
        };
        assert!(!message.contains("must be a mapping"), "{message}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_parsing() {
        let text = format!("# {}\n", "x".repeat(MAX_ROLLOUT_BYTES));
        assert!(matches!(parse(&text), Err(ConfigError::TooLarge { .. })));
    }

    #[test]
    fn a_billion_laughs_file_fails_fast() {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text.push_str("waves:\n  - name: a\n    agents: {match_expressions: [{key: k, operator: In, values: *a9}]}\n");
        let started = Instant::now();
        let err = parse(&text).expect_err("expansion must be refused");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(
            err.to_string().contains("limit"),
            "says a limit was hit: {err}"
        );
    }

    #[test]
    fn parallel_of_a_wave_is_at_least_one_and_at_most_all() {
        assert_eq!(Parallel::Count(2).of(10), 2);
        assert_eq!(Parallel::Count(20).of(10), 10);
        assert_eq!(Parallel::Percent(25).of(10), 2);
        assert_eq!(Parallel::Percent(25).of(3), 1);
        assert_eq!(Parallel::Percent(100).of(7), 7);
        assert_eq!(Parallel::Percent(50).of(usize::MAX), usize::MAX / 2);
        assert_eq!(Parallel::Count(5).of(0), 0);
        assert_eq!(Parallel::Percent(25).of(0), 0);
        assert_eq!(Parallel::Count(2).describe(), "2");
        assert_eq!(Parallel::Percent(25).describe(), "25%");
    }
}
