//! Agent names, and where an agent's config file lives.

/// Longest agent name: an RFC 1123 label.
pub const MAX_AGENT_NAME_LEN: usize = 63;

/// Why a name cannot be an agent's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent name {name:?}: {reason}")]
pub struct AgentNameError {
    pub name: String,
    pub reason: &'static str,
}

/// Agent names are RFC 1123 labels: at most 63 characters of lower-case
/// letters, digits and `-`, starting and ending with a letter or digit. The
/// name is a path segment of the config file and part of Kubernetes object
/// names, so nothing looser is safe.
pub fn validate_agent_name(name: &str) -> Result<(), AgentNameError> {
    match dns_label_problem(name) {
        None => Ok(()),
        Some(reason) => Err(AgentNameError {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// An agent's name, checked once where it enters (an API request, a
/// token's record, a session): code that holds one need not check again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentName(String);

impl AgentName {
    pub fn new(name: &str) -> Result<Self, AgentNameError> {
        validate_agent_name(name)?;
        Ok(AgentName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AgentName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AgentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<AgentName> for String {
    fn from(name: AgentName) -> String {
        name.0
    }
}

impl PartialEq<str> for AgentName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AgentName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::str::FromStr for AgentName {
    type Err = AgentNameError;
    fn from_str(name: &str) -> Result<Self, AgentNameError> {
        AgentName::new(name)
    }
}

/// Why `s` is not an RFC 1123 label (agent names, namespaces), if it is not.
pub(crate) fn dns_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > MAX_AGENT_NAME_LEN {
        return Some("it is longer than 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("only lower-case letters, digits and '-' are allowed");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("it must start and end with a letter or digit");
    }
    None
}

/// Why `s` is not an RFC 1123 subdomain (the names of most objects, Secrets
/// among them), if it is not.
pub(crate) fn dns_subdomain_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    s.split('.').find_map(|label| {
        if label.is_empty() {
            Some("it has an empty part between dots")
        } else {
            dns_label_problem(label)
        }
    })
}

/// Why a text cannot be a project id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectIdError {
    #[error("project id is empty")]
    Empty,
    #[error("project id {0:?} is longer than 255 characters")]
    TooLong(String),
    #[error("project id {0:?} has an empty, '.' or '..' segment")]
    BadSegment(String),
    #[error("project id {0:?} may hold only letters, digits, '.', '_', '-' and '/'")]
    BadCharacter(String),
}

/// Project ids are path-like (`team/platform-config`): segments of letters,
/// digits, `.`, `_` and `-`, joined by `/`. No empty, `.` or `..` segment, so
/// an id can never be read as a path that leaves its folder.
pub fn validate_project_id(id: &str) -> Result<(), ProjectIdError> {
    if id.is_empty() {
        return Err(ProjectIdError::Empty);
    }
    if id.len() > 255 {
        return Err(ProjectIdError::TooLong(id.to_owned()));
    }
    for segment in id.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(ProjectIdError::BadSegment(id.to_owned()));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ProjectIdError::BadCharacter(id.to_owned()));
        }
    }
    Ok(())
}

/// A project's id, checked once where it enters (an API request, a config
/// file): code that holds one need not check again, and can use it in a
/// path without leaving its folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn new(id: &str) -> Result<Self, ProjectIdError> {
        validate_project_id(id)?;
        Ok(ProjectId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The top-level group (the part before the first `/`), if any.
    pub fn group(&self) -> Option<&str> {
        self.0.split_once('/').map(|(group, _)| group)
    }
}

impl std::ops::Deref for ProjectId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ProjectId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl std::str::FromStr for ProjectId {
    type Err = ProjectIdError;
    fn from_str(id: &str) -> Result<Self, ProjectIdError> {
        ProjectId::new(id)
    }
}

/// Longest top-level group a notification secret is scoped to (a project
/// id's first segment).
const MAX_SECRET_GROUP_LEN: usize = 255;

/// Why `name` cannot be a notification secret's: `NAME`, a kas-wide secret
/// that only kas's settings file may name, or `GROUP/NAME`, a secret of one
/// top-level group, which agents configured in that group's projects may
/// name. `NAME` is an RFC 1123 label; `GROUP` is a project id's first
/// segment.
pub fn notification_secret_name_problem(name: &str) -> Option<String> {
    let (group, label) = match name.split_once('/') {
        Some((group, label)) => (Some(group), label),
        None => (None, name),
    };
    if let Some(group) = group {
        let shaped = !group.is_empty()
            && group.len() <= MAX_SECRET_GROUP_LEN
            && group != "."
            && group != ".."
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !shaped {
            return Some(
                "the part before '/' must be a top-level group: letters, digits, '.', '_' and '-'"
                    .into(),
            );
        }
    }
    dns_label_problem(label).map(|reason| match group {
        Some(_) => format!("the part after '/': {reason}"),
        None => reason.to_owned(),
    })
}

/// The top-level group a notification secret belongs to (`team` of
/// `team/alerts`); `None` for a kas-wide secret.
pub fn notification_secret_group(name: &str) -> Option<&str> {
    name.split_once('/').map(|(group, _)| group)
}

/// Longest chart name or version: an OCI tag's bound, far above any
/// published chart's.
pub const MAX_CHART_SEGMENT_LEN: usize = 128;

/// Why a chart's name or version from a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a chart {what} ({reason})")]
pub struct ChartSegmentError {
    /// `name` or `version`.
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// A chart's name in its repository. It becomes a file name on kas and the
/// last segment of a URL path (`/v2/<repository>/<name>/manifests/…`), so
/// it must be exactly one segment: letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, without `..`, at most 128 characters.
/// Every name Helm creates (`helm create` allows `[A-Za-z0-9._-]`) passes.
pub fn validate_chart_name(name: &str) -> Result<(), ChartSegmentError> {
    chart_segment(
        "name",
        name,
        b"._-",
        "only letters, digits, '.', '_' and '-' are allowed",
    )
}

/// A chart's exact version: SemVer as Helm writes it (`v1.2.3-rc.1+b7`),
/// held to the same single segment as a name (`+` allowed too).
pub fn validate_chart_version(version: &str) -> Result<(), ChartSegmentError> {
    chart_segment(
        "version",
        version,
        b"._-+",
        "only letters, digits, '.', '_', '-' and '+' are allowed",
    )
}

fn chart_segment(
    what: &'static str,
    value: &str,
    punctuation: &[u8],
    allowed: &'static str,
) -> Result<(), ChartSegmentError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_CHART_SEGMENT_LEN {
        Some("it is longer than 128 characters")
    } else if !value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
    {
        Some("it must start with a letter or digit")
    } else if value.contains("..") {
        Some("'..' is not allowed")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || punctuation.contains(&b))
    {
        Some(allowed)
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ChartSegmentError {
            what,
            value: value.to_owned(),
            reason,
        }),
    }
}

/// The config file of `agent` inside its configuration repository.
pub fn config_path(agent: &str) -> String {
    format!(".gitlab/agents/{agent}/config.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels_and_rejects_the_rest() {
        for ok in ["a", "prod-eu-1", "0agent", &"a".repeat(63)] {
            assert!(validate_agent_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Agent",
            "a_b",
            "a.b",
            "../x",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(validate_agent_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_ids_are_safe_paths() {
        for ok in ["platform", "team/platform-config", "a/b/c.d_e"] {
            assert_eq!(validate_project_id(ok), Ok(()), "{ok}");
            assert_eq!(ProjectId::new(ok).expect("valid").as_str(), ok.to_string());
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "..",
            "a/./b",
            "a b",
            "a\\b",
            "trailing/",
        ] {
            assert!(validate_project_id(bad).is_err(), "{bad}");
            assert!(bad.parse::<ProjectId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn notification_secrets_are_kas_wide_or_of_one_group() {
        for ok in ["audit", "team/alerts", "Team.A_b-1/ops-slack"] {
            assert_eq!(notification_secret_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "/alerts",
            "team/",
            "team/a/b",
            "../alerts",
            "./alerts",
            "team/Alerts",
            "a b/alerts",
            "https://hooks.example.com/x",
            &format!("team/{}", "a".repeat(64)),
        ] {
            assert!(notification_secret_name_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(notification_secret_group("team/alerts"), Some("team"));
        assert_eq!(notification_secret_group("audit"), None);
    }

    #[test]
    fn chart_names_and_versions_are_one_safe_segment() {
        for ok in [
            "redis",
            "kube-prometheus-stack",
            "cert_manager.crds",
            "0x",
            &"a".repeat(128),
        ] {
            assert_eq!(validate_chart_name(ok), Ok(()), "{ok}");
        }
        for ok in ["19.6.4", "v1.2.3", "1.0.0-rc.1+build.7", "2024.1"] {
            assert_eq!(validate_chart_version(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../../../var/lib/kas/x",
            "a/b",
            "/abs",
            "a\\b",
            "a..b",
            ".hidden",
            "-flag",
            "a b",
            "a\tb",
            "a\nb",
            "a\0b",
            "%2e%2e",
            "a?b",
            "a#b",
            "web+1",
            "wéb",
            &"a".repeat(129),
        ] {
            assert!(validate_chart_name(bad).is_err(), "name {bad:?}");
        }
        for bad in [
            "",
            "..",
            "1.0.0/../x",
            "1.0.0\u{7f}",
            "1 .0",
            "^1.2",
            "1.0?x",
            &"1".repeat(129),
        ] {
            assert!(validate_chart_version(bad).is_err(), "version {bad:?}");
        }
        let error = validate_chart_name("../x").expect_err("refused");
        assert_eq!(
            error.to_string(),
            "\"../x\" is not a chart name (it must start with a letter or digit)"
        );
    }

    #[test]
    fn config_lives_under_dot_gitlab() {
        assert_eq!(config_path("prod"), ".gitlab/agents/prod/config.yaml");
    }
}

#[cfg(test)]
mod agent_name_tests {
    use super::*;

    #[test]
    fn an_agent_name_is_checked_once_where_it_is_made() {
        let name = AgentName::new("prod-eu-1").expect("valid");
        assert_eq!(name, "prod-eu-1");
        assert_eq!(name.to_string(), "prod-eu-1");
        assert!(AgentName::new("Prod").is_err());
        assert!(AgentName::new("../x").is_err());
        assert!("-a".parse::<AgentName>().is_err());
    }

    #[test]
    fn an_agent_name_gives_up_its_text_unchanged() {
        let name = AgentName::new("prod-eu-1").expect("valid");
        assert_eq!(String::from(name), "prod-eu-1");
    }
}
