//! Authorization: what an agent's config file allows a principal, and as
//! whom its requests run. The rules follow the GitLab agent's `ci_access`
//! and `user_access`; nothing allowed means a refusal that names what is
//! missing, so the fix is obvious from the error.
//!
//! Project ids are paths (`team/platform/app`); a group is a path prefix
//! (`team`, `team/platform`), so a group entry covers every project below it.

use std::collections::BTreeMap;

use tether_agent_config::{
    AgentConfig, AgentName, CiAccessAs, CiAccessEntry, UserAccessAs, config_path,
};
use tether_tunnel::identity::Identity;

use super::principal::{CiJob, Principal, User};

/// What a request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `None`: as the agent's own service account.
    pub identity: Option<Identity>,
    /// The namespace a kubeconfig for this grant defaults to.
    pub default_namespace: Option<String>,
}

/// The agent a request is for.
#[derive(Clone, Copy, Debug)]
pub struct AgentRef<'a> {
    pub name: &'a AgentName,
    pub config_project: &'a str,
}

/// Why an agent's config does not let a principal through. Its message is
/// the body of the 403 kubectl prints, so it names the config file or the
/// entry (`place`: `ci_access.projects[0]`) to change; `file` is
/// `<config project>:<config path>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "project {project} may not use agent {agent}: neither it nor a group of it is in ci_access of {file}"
    )]
    ProjectNotListed {
        project: String,
        agent: AgentName,
        file: String,
    },
    #[error(
        "{place} ({entry}) allows environments [{}] only; this job's environment is {}",
        .allowed.join(", "),
        .environment.as_deref().unwrap_or("(none)")
    )]
    Environment {
        place: String,
        entry: String,
        allowed: Vec<String>,
        environment: Option<String>,
    },
    #[error(
        "{place} ({entry}) of agent {agent} allows protected branches only; this job's ref {} is not protected",
        .git_ref.as_deref().unwrap_or("(unknown)")
    )]
    UnprotectedRef {
        place: String,
        entry: String,
        agent: AgentName,
        git_ref: Option<String>,
    },
    #[error(
        "{place} ({entry}) of agent {agent} runs jobs as their user (ci_user), and this job's credential names no user"
    )]
    NoCiUser {
        place: String,
        entry: String,
        agent: AgentName,
    },
    #[error("agent {agent} has no user_access in {file}: users may not use it")]
    NoUserAccess { agent: AgentName, file: String },
    #[error(
        "user {user} is a member of no project or group in user_access of {file} (member of: [{}])",
        .memberships.join(", ")
    )]
    NotAMember {
        user: String,
        file: String,
        memberships: Vec<String>,
    },
}

/// Decides what `principal` may do through `agent`, whose config is
/// `config`; `Err` is the reason, for a 403.
pub fn authorize(
    principal: &Principal,
    agent: AgentRef<'_>,
    config: &AgentConfig,
) -> Result<Grant, Denied> {
    match principal {
        Principal::CiJob(job) => authorize_job(job, agent, config),
        Principal::User(user) => authorize_user(user, agent, config),
    }
}

/// Whether `path` is `prefix` or below it.
fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn authorize_job(job: &CiJob, agent: AgentRef<'_>, config: &AgentConfig) -> Result<Grant, Denied> {
    let file = format!("{}:{}", agent.config_project, config_path(agent.name));
    // The project's own entry wins; else the most specific group.
    let (entry, place) = match config
        .ci_access
        .projects
        .iter()
        .position(|e| e.id == job.project)
    {
        Some(i) => (
            &config.ci_access.projects[i],
            format!("ci_access.projects[{i}]"),
        ),
        None => {
            let group = config
                .ci_access
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| is_under(&job.project, &g.id))
                .max_by_key(|(_, g)| g.id.len());
            match group {
                Some((i, g)) => (g, format!("ci_access.groups[{i}]")),
                None => {
                    return Err(Denied::ProjectNotListed {
                        project: job.project.clone(),
                        agent: agent.name.to_owned(),
                        file,
                    });
                }
            }
        }
    };
    check_environment(job, entry, &place)?;
    if entry.protected_branches_only && !job.ref_protected {
        return Err(Denied::UnprotectedRef {
            place,
            entry: entry.id.clone(),
            agent: agent.name.to_owned(),
            git_ref: job.git_ref.clone(),
        });
    }
    let identity = match &entry.access_as {
        CiAccessAs::Agent {} => None,
        CiAccessAs::Impersonate(i) => Some(Identity {
            username: i.username.clone(),
            uid: i.uid.clone(),
            groups: i.groups.clone(),
            extra: i
                .extra
                .iter()
                .map(|x| (x.key.clone(), x.val.clone()))
                .collect(),
        }),
        CiAccessAs::CiJob {} => Some(job_identity(
            job,
            agent,
            format!("tether:ci_job:{}", job.job_id),
        )),
        CiAccessAs::CiUser {} => match &job.user {
            Some(user) => Some(job_identity(job, agent, format!("tether:ci_user:{user}"))),
            None => {
                return Err(Denied::NoCiUser {
                    place,
                    entry: entry.id.clone(),
                    agent: agent.name.to_owned(),
                });
            }
        },
    };
    Ok(Grant {
        identity,
        default_namespace: entry.default_namespace.clone(),
    })
}

fn check_environment(job: &CiJob, entry: &CiAccessEntry, place: &str) -> Result<(), Denied> {
    if entry.environments.is_empty() {
        return Ok(());
    }
    let allowed = job.environment.as_deref().is_some_and(|env| {
        entry
            .environments
            .iter()
            .any(|pattern| wildcard(pattern, env))
    });
    if allowed {
        return Ok(());
    }
    Err(Denied::Environment {
        place: place.to_owned(),
        entry: entry.id.clone(),
        allowed: entry.environments.clone(),
        environment: job.environment.clone(),
    })
}

/// `*` matches any run of characters, as in GitLab's environment scopes.
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The identity of `ci_job` and `ci_user`: the user name given, groups for
/// the job, its project and that project's groups, its ref and environment,
/// and the details as extra attributes, so RBAC can bind any of them.
fn job_identity(job: &CiJob, agent: AgentRef<'_>, username: String) -> Identity {
    let mut groups = vec!["tether:ci_job".to_owned()];
    groups.extend(ancestors(&job.project).map(|g| format!("tether:group:{g}")));
    groups.push(format!("tether:project:{}", job.project));
    if let Some(r) = &job.git_ref {
        groups.push(format!("tether:project_ref:{}:{r}", job.project));
    }
    if let Some(env) = &job.environment {
        groups.push(format!("tether:project_env:{}:{env}", job.project));
    }
    let mut extra = BTreeMap::from([
        ("tether.dev/agent".to_owned(), vec![agent.name.to_string()]),
        (
            "tether.dev/config_project".to_owned(),
            vec![agent.config_project.to_owned()],
        ),
        ("tether.dev/project".to_owned(), vec![job.project.clone()]),
        ("tether.dev/job_id".to_owned(), vec![job.job_id.clone()]),
    ]);
    if let Some(r) = &job.git_ref {
        extra.insert("tether.dev/ref".into(), vec![r.clone()]);
    }
    if let Some(env) = &job.environment {
        extra.insert("tether.dev/environment".into(), vec![env.clone()]);
    }
    Identity {
        username,
        uid: None,
        groups,
        extra,
    }
}

/// The groups above a project: `a/b/c` → `a`, `a/b`.
fn ancestors(project: &str) -> impl Iterator<Item = &str> {
    project.match_indices('/').map(move |(i, _)| &project[..i])
}

fn authorize_user(user: &User, agent: AgentRef<'_>, config: &AgentConfig) -> Result<Grant, Denied> {
    let file = format!("{}:{}", agent.config_project, config_path(agent.name));
    let Some(access) = &config.user_access else {
        return Err(Denied::NoUserAccess {
            agent: agent.name.to_owned(),
            file,
        });
    };
    let member_of = |target: &str| user.memberships.iter().any(|m| is_under(target, m));
    let mut groups = vec!["tether:user".to_owned()];
    for p in access.projects.iter().filter(|p| member_of(&p.id)) {
        groups.push(format!("tether:project:{}", p.id));
    }
    for g in access.groups.iter().filter(|g| member_of(&g.id)) {
        groups.push(format!("tether:group:{}", g.id));
    }
    if groups.len() == 1 {
        return Err(Denied::NotAMember {
            user: user.name.clone(),
            file,
            memberships: user.memberships.clone(),
        });
    }
    let identity = match access.access_as {
        UserAccessAs::Agent {} => None,
        UserAccessAs::User {} => Some(Identity {
            username: format!("tether:user:{}", user.name),
            uid: None,
            groups,
            extra: BTreeMap::from([
                ("tether.dev/agent".to_owned(), vec![agent.name.to_string()]),
                ("tether.dev/username".to_owned(), vec![user.name.clone()]),
            ]),
        }),
    };
    Ok(Grant {
        identity,
        default_namespace: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static PROD: std::sync::LazyLock<AgentName> =
        std::sync::LazyLock::new(|| AgentName::new("prod").expect("valid"));

    fn agent() -> AgentRef<'static> {
        AgentRef {
            name: &PROD,
            config_project: "platform/config",
        }
    }

    fn config(yaml: &str) -> AgentConfig {
        tether_agent_config::parse(yaml)
            .expect("valid config")
            .config
    }

    fn job(project: &str) -> CiJob {
        CiJob {
            project: project.into(),
            git_ref: Some("main".into()),
            ref_protected: false,
            job_id: "42".into(),
            environment: None,
            user: None,
            via: "test".into(),
            expires_at: None,
        }
    }

    fn user(memberships: &[&str]) -> Principal {
        Principal::User(User {
            name: "alice".into(),
            memberships: memberships.iter().map(|m| m.to_string()).collect(),
            expires_at: None,
        })
    }

    #[test]
    fn ci_access_matches_projects_then_the_most_specific_group() {
        let c = config(
            r#"
ci_access:
  projects:
    - id: team/app
      default_namespace: app
      access_as: { ci_job: {} }
  groups:
    - id: team
    - id: team/platform
      access_as: { impersonate: { username: deployer, groups: [deployers] } }
"#,
        );
        let grant = authorize(&Principal::CiJob(job("team/app")), agent(), &c).expect("allowed");
        let identity = grant.identity.expect("ci_job identity");
        assert_eq!(identity.username, "tether:ci_job:42");
        assert!(
            identity
                .groups
                .contains(&"tether:project:team/app".to_owned())
        );
        assert!(identity.groups.contains(&"tether:group:team".to_owned()));
        assert!(
            identity
                .groups
                .contains(&"tether:project_ref:team/app:main".to_owned())
        );
        assert_eq!(grant.default_namespace.as_deref(), Some("app"));

        let grant =
            authorize(&Principal::CiJob(job("team/platform/db")), agent(), &c).expect("allowed");
        assert_eq!(grant.identity.expect("impersonation").username, "deployer");
        let grant = authorize(&Principal::CiJob(job("team/other")), agent(), &c).expect("allowed");
        assert_eq!(grant.identity, None, "group `team` runs as the agent");

        let err =
            authorize(&Principal::CiJob(job("teamster/app")), agent(), &c).expect_err("denied");
        assert_eq!(
            err,
            Denied::ProjectNotListed {
                project: "teamster/app".into(),
                agent: PROD.clone(),
                file: "platform/config:.gitlab/agents/prod/config.yaml".into(),
            }
        );
    }

    #[test]
    fn environments_and_protected_branches_restrict_an_entry() {
        let c = config(
            r#"
ci_access:
  projects:
    - id: team/app
      environments: ["production", "review/*"]
      protected_branches_only: true
"#,
        );
        let mut j = job("team/app");
        j.ref_protected = true;
        let err = authorize(&Principal::CiJob(j.clone()), agent(), &c).expect_err("no environment");
        assert!(
            matches!(&err, Denied::Environment { allowed, .. } if allowed == &["production", "review/*"]),
            "{err}"
        );
        j.environment = Some("review/feature-1".into());
        authorize(&Principal::CiJob(j.clone()), agent(), &c).expect("review/* matches");
        j.environment = Some("staging".into());
        assert!(authorize(&Principal::CiJob(j.clone()), agent(), &c).is_err());
        j.environment = Some("production".into());
        j.ref_protected = false;
        let err = authorize(&Principal::CiJob(j), agent(), &c).expect_err("unprotected");
        assert!(matches!(err, Denied::UnprotectedRef { .. }), "{err}");
    }

    #[test]
    fn ci_user_needs_a_user() {
        let c = config(
            "ci_access:\n  projects:\n    - id: team/app\n      access_as: { ci_user: {} }\n",
        );
        let mut j = job("team/app");
        assert!(authorize(&Principal::CiJob(j.clone()), agent(), &c).is_err());
        j.user = Some("bob".into());
        let grant = authorize(&Principal::CiJob(j), agent(), &c).expect("allowed");
        assert_eq!(
            grant.identity.expect("identity").username,
            "tether:ci_user:bob"
        );
    }

    #[test]
    fn user_access_needs_a_membership() {
        let c = config(
            "user_access:\n  access_as: { user: {} }\n  projects: [{ id: team/app }]\n  groups: [{ id: ops }]\n",
        );
        let grant =
            authorize(&user(&["team"]), agent(), &c).expect("member of team/app through team");
        let identity = grant.identity.expect("user identity");
        assert_eq!(identity.username, "tether:user:alice");
        assert!(
            identity
                .groups
                .contains(&"tether:project:team/app".to_owned())
        );
        authorize(&user(&["ops"]), agent(), &c).expect("member of the group");
        let err = authorize(&user(&["team/other", "ops-team"]), agent(), &c).expect_err("denied");
        assert!(matches!(err, Denied::NotAMember { .. }), "{err}");
        let err = authorize(&user(&["team"]), agent(), &config("")).expect_err("no user_access");
        assert!(matches!(err, Denied::NoUserAccess { .. }), "{err}");
    }

    /// The refusal is the body of the 403 kubectl prints: its wording is
    /// part of the interface, pinned here byte for byte.
    #[test]
    fn refusals_keep_their_exact_wording() {
        let refusal = |principal: Principal, yaml: &str| {
            authorize(&principal, agent(), &config(yaml))
                .expect_err("refused")
                .to_string()
        };
        let file = "platform/config:.gitlab/agents/prod/config.yaml";
        assert_eq!(
            refusal(
                Principal::CiJob(job("other/app")),
                "ci_access:\n  groups: [{ id: team }]\n"
            ),
            format!(
                "project other/app may not use agent prod: neither it nor a group of it is in ci_access of {file}"
            )
        );
        let envs =
            "ci_access:\n  groups:\n    - id: team\n      environments: [production, review/*]\n";
        assert_eq!(
            refusal(Principal::CiJob(job("team/app")), envs),
            "ci_access.groups[0] (team) allows environments [production, review/*] only; this job's environment is (none)"
        );
        let mut staging = job("team/app");
        staging.environment = Some("staging".into());
        assert_eq!(
            refusal(Principal::CiJob(staging), envs),
            "ci_access.groups[0] (team) allows environments [production, review/*] only; this job's environment is staging"
        );
        let protected =
            "ci_access:\n  projects:\n    - id: team/app\n      protected_branches_only: true\n";
        assert_eq!(
            refusal(Principal::CiJob(job("team/app")), protected),
            "ci_access.projects[0] (team/app) of agent prod allows protected branches only; this job's ref main is not protected"
        );
        let mut no_ref = job("team/app");
        no_ref.git_ref = None;
        assert_eq!(
            refusal(Principal::CiJob(no_ref), protected),
            "ci_access.projects[0] (team/app) of agent prod allows protected branches only; this job's ref (unknown) is not protected"
        );
        assert_eq!(
            refusal(
                Principal::CiJob(job("team/app")),
                "ci_access:\n  projects:\n    - id: team/app\n      access_as: { ci_user: {} }\n"
            ),
            "ci_access.projects[0] (team/app) of agent prod runs jobs as their user (ci_user), and this job's credential names no user"
        );
        assert_eq!(
            refusal(user(&["team"]), ""),
            format!("agent prod has no user_access in {file}: users may not use it")
        );
        assert_eq!(
            refusal(
                user(&["ops-team", "team/other"]),
                "user_access:\n  projects: [{ id: team/app }]\n"
            ),
            format!(
                "user alice is a member of no project or group in user_access of {file} (member of: [ops-team, team/other])"
            )
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("review/*", "review/a"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard("a*b*c", "a-x-c"));
        assert!(!wildcard("production", "production-2"));
        assert!(wildcard("production", "production"));
    }
}
