//! Agent labels (`env=prod`, `region=eu`) and the selectors that pick
//! agents by them, such as a rollout wave's `agents:`.
//!
//! Keys, values and selectors follow Kubernetes' grammar and meaning to the
//! letter, so a selector reads and matches as it would in kubectl and a
//! cluster's labels can be copied onto its agent unchanged. The one
//! difference is how an empty selector is shown: see
//! [`LabelSelector::describe`].

use std::collections::BTreeMap;

/// An agent's labels, ordered so that they print and compare the same way
/// every time.
pub type Labels = BTreeMap<String, String>;

/// At most this many labels per agent, as a bound on what one agent's record
/// and every selector evaluation may cost.
pub const MAX_LABELS: usize = 64;

/// Longest label name (the part after the `/`) and longest value.
const MAX_NAME_LEN: usize = 63;
/// Longest key prefix: a DNS subdomain.
const MAX_PREFIX_LEN: usize = 253;

/// Which agents something applies to. Every `match_labels` pair must be
/// among the agent's labels and every expression must hold; the empty
/// selector matches every agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub match_expressions: Vec<LabelExpression>,
}

/// One set-based requirement on one label key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelExpression {
    pub key: String,
    pub operator: Operator,
    /// Non-empty for `In` and `NotIn`, empty for `Exists` and `DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Spelled as in Kubernetes (`In`, `NotIn`, `Exists`, `DoesNotExist`) so that
/// a selector copied from a manifest means the same here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Operator {
    /// The label is present and its value is one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// What `kas agent label NAME k=v k2-` asks for: labels to set and keys to
/// remove, disjoint by construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelChanges {
    pub set: Labels,
    pub remove: Vec<String>,
}

/// Why a label key, value or change is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label key is empty")]
    EmptyKey,
    #[error(
        "label key {key:?}: the prefix before '/' must be a DNS subdomain of at most 253 characters, lower-case letters, digits, '-' and '.' (e.g. example.com/tier)"
    )]
    BadPrefix { key: String },
    #[error("label key {key:?}: the name is {len} characters, more than 63")]
    NameTooLong { key: String, len: usize },
    #[error(
        "label key {key:?}: the name must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    BadName { key: String },
    #[error("label value {value:?} is {len} characters, more than 63")]
    ValueTooLong { value: String, len: usize },
    #[error(
        "label value {value:?} must be empty or letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    BadValue { value: String },
    #[error("{arg:?} is neither key=value (to set a label) nor key- (to remove one)")]
    BadChange { arg: String },
    #[error("label {key:?} is changed twice in one command")]
    ChangedTwice { key: String },
    #[error("{count} labels, more than the limit of {MAX_LABELS} per agent")]
    TooMany { count: usize },
}

/// Checks a key as Kubernetes does: an optional DNS-subdomain prefix and a
/// `/`, then a name of at most 63 letters, digits, `-`, `_` and `.` that
/// starts and ends with a letter or digit.
pub fn check_key(key: &str) -> Result<(), LabelError> {
    if key.is_empty() {
        return Err(LabelError::EmptyKey);
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_subdomain(prefix) {
                return Err(LabelError::BadPrefix {
                    key: key.to_owned(),
                });
            }
            name
        }
        None => key,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(LabelError::NameTooLong {
            key: key.to_owned(),
            len: name.len(),
        });
    }
    if !is_name(name) {
        return Err(LabelError::BadName {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Checks a value as Kubernetes does: empty, or a name's grammar.
pub fn check_value(value: &str) -> Result<(), LabelError> {
    if value.len() > MAX_NAME_LEN {
        return Err(LabelError::ValueTooLong {
            value: value.to_owned(),
            len: value.len(),
        });
    }
    if !value.is_empty() && !is_name(value) {
        return Err(LabelError::BadValue {
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Reads `k=v` (set) and `k-` (remove) as kubectl does, checking every
/// argument. A key named twice is refused rather than resolved by order: the
/// user meant one of the two and the command cannot know which.
pub fn parse_changes(args: &[String]) -> Result<LabelChanges, LabelError> {
    let mut changes = LabelChanges::default();
    for arg in args {
        let key = if let Some((key, value)) = arg.split_once('=') {
            check_key(key)?;
            check_value(value)?;
            key
        } else if let Some(key) = arg.strip_suffix('-') {
            // Keys end with a letter or digit, so a trailing '-' is never
            // part of one.
            check_key(key)?;
            key
        } else {
            return Err(LabelError::BadChange { arg: arg.clone() });
        };
        if changes.set.contains_key(key) || changes.remove.iter().any(|k| k == key) {
            return Err(LabelError::ChangedTwice {
                key: key.to_owned(),
            });
        }
        match arg.split_once('=') {
            Some((_, value)) => {
                changes.set.insert(key.to_owned(), value.to_owned());
            }
            None => changes.remove.push(key.to_owned()),
        }
    }
    if changes.set.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: changes.set.len(),
        });
    }
    Ok(changes)
}

/// Kubernetes' DNS-1123 subdomain, `[a-z0-9]([-a-z0-9]*[a-z0-9])?` parts
/// joined by dots, at most 253 characters. Unlike a hostname, a part may be
/// longer than 63: Kubernetes accepts such prefixes, so keys copied from a
/// cluster must pass here too.
fn is_subdomain(s: &str) -> bool {
    s.len() <= MAX_PREFIX_LEN
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            let edge =
                |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            edge(bytes.first())
                && edge(bytes.last())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

/// Kubernetes' label name grammar, `[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?`,
/// without its length limit.
fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Whether an agent with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|e| e.holds(labels))
    }

    /// The selector that selects every agent.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// `env=prod,region in (eu,us)` as kubectl prints it: every requirement
    /// ordered by key, values sorted. The empty selector is `<all>`, where
    /// kubectl prints `<none>`: here it selects every agent, and `<none>`
    /// would read as the opposite.
    pub fn describe(&self) -> String {
        let mut requirements: Vec<(&str, String)> = self
            .match_labels
            .iter()
            .map(|(key, value)| (key.as_str(), format!("{key}={value}")))
            .collect();
        for e in &self.match_expressions {
            let key = &e.key;
            let text = match e.operator {
                Operator::In => format!("{key} in ({})", set(&e.values)),
                Operator::NotIn => format!("{key} notin ({})", set(&e.values)),
                Operator::Exists => key.clone(),
                Operator::DoesNotExist => format!("!{key}"),
            };
            requirements.push((key, text));
        }
        if requirements.is_empty() {
            return "<all>".into();
        }
        // Stable: two requirements on one key keep their written order.
        requirements.sort_by(|a, b| a.0.cmp(b.0));
        let texts: Vec<String> = requirements.into_iter().map(|(_, text)| text).collect();
        texts.join(",")
    }
}

/// Values as a set prints them: sorted, each once.
fn set(values: &[String]) -> String {
    let mut values: Vec<&str> = values.iter().map(String::as_str).collect();
    values.sort_unstable();
    values.dedup();
    values.join(",")
}

// === impl LabelExpression ===

impl LabelExpression {
    fn holds(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

// === impl LabelChanges ===

impl LabelChanges {
    /// Applies the changes; removing a label the agent lacks is not an
    /// error, as in kubectl.
    pub fn apply(&self, labels: &mut Labels) {
        for key in &self.remove {
            labels.remove(key);
        }
        for (key, value) in &self.set {
            labels.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expression(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![LabelExpression {
                key: key.into(),
                operator,
                values: values.iter().map(|v| (*v).to_owned()).collect(),
            }],
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn the_empty_selector_matches_every_agent() {
        let selector = LabelSelector::default();
        assert!(selector.is_empty());
        assert!(selector.matches(&Labels::new()));
        assert!(selector.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let selector = LabelSelector {
            match_labels: labels(&[("env", "prod"), ("region", "eu")]),
            match_expressions: Vec::new(),
        };
        assert!(!selector.is_empty());
        assert!(selector.matches(&labels(&[("env", "prod"), ("region", "eu"), ("x", "y")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
        assert!(!selector.matches(&labels(&[("env", "prod"), ("region", "us")])));
    }

    #[test]
    fn in_needs_the_label_with_one_of_the_values() {
        let selector = expression("env", Operator::In, &["prod", "staging"]);
        assert!(selector.matches(&labels(&[("env", "prod")])));
        assert!(selector.matches(&labels(&[("env", "staging")])));
        assert!(!selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&Labels::new()));
    }

    #[test]
    fn not_in_takes_an_absent_label_or_another_value() {
        let selector = expression("env", Operator::NotIn, &["prod"]);
        assert!(selector.matches(&Labels::new()));
        assert!(selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn exists_and_does_not_exist_look_at_the_key_only() {
        let exists = expression("gpu", Operator::Exists, &[]);
        let absent = expression("gpu", Operator::DoesNotExist, &[]);
        let with = labels(&[("gpu", "")]);
        assert!(exists.matches(&with) && !absent.matches(&with));
        assert!(!exists.matches(&Labels::new()) && absent.matches(&Labels::new()));
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let mut selector = expression("region", Operator::In, &["eu", "us"]);
        selector.match_labels = labels(&[("env", "prod")]);
        assert!(selector.matches(&labels(&[("env", "prod"), ("region", "us")])));
        assert!(!selector.matches(&labels(&[("env", "dev"), ("region", "us")])));
        assert!(!selector.matches(&labels(&[("env", "prod"), ("region", "ap")])));
    }

    #[test]
    fn describe_prints_as_kubectl_does() {
        let mut selector = expression("region", Operator::In, &["us", "eu"]);
        selector.match_labels = labels(&[("env", "prod")]);
        assert_eq!(selector.describe(), "env=prod,region in (eu,us)");
        selector.match_expressions.extend([
            LabelExpression {
                key: "tier".into(),
                operator: Operator::NotIn,
                values: vec!["db".into()],
            },
            LabelExpression {
                key: "gpu".into(),
                operator: Operator::Exists,
                values: Vec::new(),
            },
            LabelExpression {
                key: "legacy".into(),
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            },
        ]);
        assert_eq!(
            selector.describe(),
            "env=prod,gpu,!legacy,region in (eu,us),tier notin (db)"
        );
        assert_eq!(LabelSelector::default().describe(), "<all>");
    }

    #[test]
    fn keys_follow_kubernetes() {
        for good in [
            "env",
            "app.kubernetes.io/name",
            "example.com/Tier_1",
            "a",
            "A-b.c_9",
            &"x".repeat(63),
            &format!("{}/n", "a".repeat(253)),
        ] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        assert_eq!(check_key(""), Err(LabelError::EmptyKey));
        for bad in ["-env", "env-", "env var", "é", "a/b/c", "/name", "prefix/"] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            check_key("Example.com/name"),
            Err(LabelError::BadPrefix { .. })
        ));
        assert!(matches!(
            check_key(&format!("{}/n", "a".repeat(254))),
            Err(LabelError::BadPrefix { .. })
        ));
        assert_eq!(
            check_key(&"x".repeat(64)),
            Err(LabelError::NameTooLong {
                key: "x".repeat(64),
                len: 64
            })
        );
    }

    #[test]
    fn values_may_be_empty_or_a_name() {
        for good in ["", "prod", "v1.2_3-rc", &"x".repeat(63)] {
            assert_eq!(check_value(good), Ok(()), "{good}");
        }
        for bad in ["-prod", "prod.", "a b", "a/b", "a=b", &"x".repeat(64)] {
            assert!(check_value(bad).is_err(), "{bad:?} accepted");
        }
        let message = check_value("a b").expect_err("refused").to_string();
        assert!(message.contains("\"a b\""), "{message}");
    }

    #[test]
    fn changes_set_and_remove() {
        let changes = parse_changes(&args(&["env=prod", "tier=", "old-"])).expect("valid");
        assert_eq!(changes.set, labels(&[("env", "prod"), ("tier", "")]));
        assert_eq!(changes.remove, ["old"]);
        let mut current = labels(&[("env", "dev"), ("old", "x"), ("keep", "y")]);
        changes.apply(&mut current);
        assert_eq!(
            current,
            labels(&[("env", "prod"), ("tier", ""), ("keep", "y")])
        );
    }

    #[test]
    fn bad_changes_are_refused_naming_the_argument() {
        assert_eq!(parse_changes(&args(&["=v"])), Err(LabelError::EmptyKey));
        assert_eq!(parse_changes(&args(&["-"])), Err(LabelError::EmptyKey));
        assert_eq!(
            parse_changes(&args(&["env"])),
            Err(LabelError::BadChange { arg: "env".into() })
        );
        assert!(matches!(
            parse_changes(&args(&["Bad Key=v"])),
            Err(LabelError::BadName { key }) if key == "Bad Key"
        ));
        assert!(matches!(
            parse_changes(&args(&["env=a=b"])),
            Err(LabelError::BadValue { value }) if value == "a=b"
        ));
        assert!(matches!(
            parse_changes(&args(&["-env-"])),
            Err(LabelError::BadName { .. })
        ));
        assert_eq!(
            parse_changes(&args(&["env=a", "env-"])),
            Err(LabelError::ChangedTwice { key: "env".into() })
        );
        assert_eq!(
            parse_changes(&args(&["env=a", "env=b"])),
            Err(LabelError::ChangedTwice { key: "env".into() })
        );
    }

    #[test]
    fn more_than_the_limit_of_labels_is_refused() {
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            parse_changes(&many),
            Err(LabelError::TooMany {
                count: MAX_LABELS + 1
            })
        );
        assert!(parse_changes(&many[..MAX_LABELS]).is_ok());
    }

    #[test]
    fn selectors_round_trip_through_json() {
        let mut selector = expression("region", Operator::NotIn, &["eu"]);
        selector.match_labels = labels(&[("env", "prod")]);
        let json = serde_json::to_string(&selector).expect("serialized");
        assert!(json.contains("\"NotIn\""), "{json}");
        let back: LabelSelector = serde_json::from_str(&json).expect("parsed");
        assert_eq!(back, selector);
        let empty: LabelSelector = serde_json::from_str("{}").expect("parsed");
        assert!(empty.is_empty());
    }
}
