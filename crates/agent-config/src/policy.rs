//! What an agent's config may name. Its config file is written by whoever
//! can push to its configuration project; without these rules, naming
//! `other-team/secrets` in `gitops.manifest_projects` would stream another
//! tenant's repository to that agent, and naming another team's
//! notification secret would post into their Slack or sign payloads with
//! their key.
//!
//! An agent may read its own configuration project, any project in the same
//! top-level group (the path before the first `/`), and any project an
//! administrator granted it (`kas project grant PROJECT --agent NAME`).
//!
//! It may use the notification secrets of the same top-level group
//! (`GROUP/NAME`). A secret without a group is kas-wide: only kas's
//! settings file, which the administrator alone writes, may name it.

use std::collections::BTreeSet;

/// Why a config may not name a project or a secret: the message says what
/// was refused, why, and the administrator's command that would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// The top-level group of a project id; a one-segment id has none.
pub fn top_level_group(project: &str) -> Option<&str> {
    project.split_once('/').map(|(group, _)| group)
}

/// Why `agent`, configured in `config_project`, may not read `project`,
/// or `Ok` if it may.
pub fn may_read(
    agent: &str,
    config_project: &str,
    project: &str,
    granted: &BTreeSet<String>,
) -> Result<(), Refused> {
    if project == config_project || granted.contains(project) {
        return Ok(());
    }
    let own = top_level_group(config_project);
    if own.is_some() && own == top_level_group(project) {
        return Ok(());
    }
    let scope = match own {
        Some(group) => format!("outside the agent's top-level group {group}"),
        None => format!("not the agent's configuration project {config_project}"),
    };
    Err(Refused(format!(
        "manifest project {project} is refused: it is {scope} and no administrator granted it \
         (kas project grant {project} --agent {agent})"
    )))
}

/// Why the config of `agent`, configured in `config_project`, may not use
/// the notification secret `secret`, or `Ok` if it may.
pub fn may_use_secret(agent: &str, config_project: &str, secret: &str) -> Result<(), Refused> {
    let own = top_level_group(config_project);
    let group = crate::notification_secret_group(secret);
    if own.is_some() && own == group {
        return Ok(());
    }
    let whose = match group {
        Some(group) => format!("it belongs to the top-level group {group}"),
        None => "it is kas-wide, for kas's settings file only".to_owned(),
    };
    let allowed = match own {
        Some(own) => format!(
            "agent {agent}'s config may name only secrets of its top-level group \
             (kas notifications secret set {own}/NAME)"
        ),
        None => format!(
            "agent {agent}'s configuration project {config_project} has no top-level group, \
             so its config may name no notification secret"
        ),
    };
    Err(Refused(format!(
        "notification secret {secret} is refused: {whose}; {allowed}; nothing is sent with it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_uses_only_its_own_groups_notification_secrets() {
        assert!(may_use_secret("prod", "team/config", "team/alerts").is_ok());
        assert!(may_use_secret("prod", "team/apps/config", "team/alerts").is_ok());
        let other = may_use_secret("prod", "team/config", "other-team/slack")
            .expect_err("another group's")
            .to_string();
        assert!(
            other.contains("other-team/slack")
                && other.contains("top-level group other-team")
                && other.contains("kas notifications secret set team/NAME"),
            "{other}"
        );
        let wide = may_use_secret("prod", "team/config", "audit")
            .expect_err("kas-wide")
            .to_string();
        assert!(wide.contains("kas-wide"), "{wide}");
        // A group name is not a prefix match.
        assert!(may_use_secret("prod", "team/config", "team-b/alerts").is_err());
        assert!(may_use_secret("prod", "team-b/config", "team/alerts").is_err());
        // A project without a group has no secrets of its own.
        let ungrouped = may_use_secret("a", "platform", "platform/alerts")
            .expect_err("no group")
            .to_string();
        assert!(ungrouped.contains("no top-level group"), "{ungrouped}");
        assert!(may_use_secret("a", "platform", "platform").is_err());
    }

    fn granted(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn own_project_and_group_are_allowed_others_need_a_grant() {
        let none = granted(&[]);
        assert!(may_read("prod", "team/config", "team/config", &none).is_ok());
        assert!(may_read("prod", "team/config", "team/apps/web", &none).is_ok());
        let refused = may_read("prod", "team/config", "other-team/secrets", &none)
            .expect_err("another group")
            .to_string();
        assert!(
            refused.contains("other-team/secrets") && refused.contains("top-level group team"),
            "{refused}"
        );
        assert!(
            refused.contains("kas project grant other-team/secrets --agent prod"),
            "{refused}"
        );
        assert!(
            may_read(
                "prod",
                "team/config",
                "other-team/secrets",
                &granted(&["other-team/secrets"])
            )
            .is_ok()
        );
        // A group name is not a prefix match.
        assert!(may_read("prod", "team/config", "team-b/x", &none).is_err());
    }

    #[test]
    fn a_project_without_a_group_reads_only_itself_and_grants() {
        let none = granted(&[]);
        assert!(may_read("a", "platform", "platform", &none).is_ok());
        assert!(may_read("a", "platform", "platform/x", &none).is_err());
        assert!(may_read("a", "platform", "other", &none).is_err());
    }
}
