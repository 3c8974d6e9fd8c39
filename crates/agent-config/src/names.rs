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

/// Project ids are path-like (`team/platform-config`): segments of letters,
/// digits, `.`, `_` and `-`, joined by `/`. No empty, `.` or `..` segment, so
/// an id can never be read as a path that leaves its folder.
pub fn validate_project_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("project id is empty".into());
    }
    if id.len() > 255 {
        return Err(format!("project id {id:?} is longer than 255 characters"));
    }
    for segment in id.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "project id {id:?} has an empty, '.' or '..' segment"
            ));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "project id {id:?} may hold only letters, digits, '.', '_', '-' and '/'"
            ));
        }
    }
    Ok(())
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
        }
    }

    #[test]
    fn config_lives_under_dot_gitlab() {
        assert_eq!(config_path("prod"), ".gitlab/agents/prod/config.yaml");
    }
}
