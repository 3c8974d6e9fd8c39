//! Which manifest projects an agent may read. An agent's config file is
//! written by whoever can push to its configuration project; without this
//! rule, naming `other-team/secrets` in `gitops.manifest_projects` would
//! stream another tenant's repository to that agent.
//!
//! An agent may read its own configuration project, any project in the same
//! top-level group (the path before the first `/`), and any project an
//! administrator granted it (`kas project grant PROJECT --agent NAME`).

use std::collections::BTreeSet;

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
) -> Result<(), String> {
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
    Err(format!(
        "manifest project {project} is refused: it is {scope} and no administrator granted it \
         (kas project grant {project} --agent {agent})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn own_project_and_group_are_allowed_others_need_a_grant() {
        let none = granted(&[]);
        assert!(may_read("prod", "team/config", "team/config", &none).is_ok());
        assert!(may_read("prod", "team/config", "team/apps/web", &none).is_ok());
        let refused = may_read("prod", "team/config", "other-team/secrets", &none)
            .expect_err("another group");
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
