//! The config schema to and from its wire form.
//!
//! kas sends what `tether_agent_config::parse` produced; agentk turns it back
//! into the same types. Sections Tether does not act on (container_scanning,
//! remote_development, flux) are not sent. The round trip is lossless for
//! everything else, which the tests check on arbitrary configs.

use std::time::Duration;

use tether_agent_config as cfg;

use crate::v1;

/// A message from a peer that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{field}: invalid duration")]
    BadDuration { field: &'static str },
}

/// The configuration message for `config`, read at `commit_id` of `project_id`.
pub fn to_proto(
    config: &cfg::AgentConfig,
    commit_id: &str,
    project_id: &str,
) -> v1::AgentConfiguration {
    v1::AgentConfiguration {
        commit_id: commit_id.to_owned(),
        project_id: project_id.to_owned(),
        gitops: Some(v1::Gitops {
            manifest_projects: config
                .gitops
                .manifest_projects
                .iter()
                .map(manifest_project)
                .collect(),
        }),
        ci_access: Some(v1::CiAccess {
            projects: config.ci_access.projects.iter().map(ci_entry).collect(),
            groups: config.ci_access.groups.iter().map(ci_entry).collect(),
        }),
        user_access: config.user_access.as_ref().map(|ua| v1::UserAccess {
            access_as: match ua.access_as {
                cfg::UserAccessAs::Agent {} => v1::UserAccessAs::Agent,
                cfg::UserAccessAs::User {} => v1::UserAccessAs::User,
            } as i32,
            project_ids: ua.projects.iter().map(|t| t.id.clone()).collect(),
            group_ids: ua.groups.iter().map(|t| t.id.clone()).collect(),
        }),
        observability: Some(v1::Observability {
            log_level: log_level(config.observability.logging.level) as i32,
            grpc_log_level: log_level(config.observability.logging.grpc_level) as i32,
        }),
    }
}

/// The config carried by `message`.
pub fn from_proto(message: &v1::AgentConfiguration) -> Result<cfg::AgentConfig, ConversionError> {
    let gitops = message.gitops.clone().unwrap_or_default();
    let ci = message.ci_access.clone().unwrap_or_default();
    let observability = match &message.observability {
        Some(o) => cfg::Observability {
            logging: cfg::Logging {
                level: log_level_from(o.log_level, "observability.log_level")?,
                grpc_level: log_level_from(o.grpc_log_level, "observability.grpc_log_level")?,
            },
        },
        None => cfg::Observability::default(),
    };
    Ok(cfg::AgentConfig {
        gitops: cfg::Gitops {
            manifest_projects: gitops
                .manifest_projects
                .iter()
                .map(manifest_project_from)
                .collect::<Result<_, _>>()?,
        },
        ci_access: cfg::CiAccess {
            projects: ci.projects.iter().map(ci_entry_from).collect(),
            groups: ci.groups.iter().map(ci_entry_from).collect(),
        },
        user_access: message
            .user_access
            .as_ref()
            .map(user_access_from)
            .transpose()?,
        observability,
        container_scanning: None,
        remote_development: None,
        flux: None,
        // kas tells of the agent's events; the agent is not sent them.
        notifications: Vec::new(),
    })
}

fn manifest_project(p: &cfg::ManifestProject) -> v1::ManifestProject {
    v1::ManifestProject {
        id: p.id.clone().unwrap_or_default(),
        r#ref: p.git_ref.as_ref().and_then(|r| {
            let one = if let Some(b) = &r.branch {
                v1::git_ref::Ref::Branch(b.clone())
            } else if let Some(t) = &r.tag {
                v1::git_ref::Ref::Tag(t.clone())
            } else {
                v1::git_ref::Ref::Commit(r.commit.clone()?)
            };
            Some(v1::GitRef { r#ref: Some(one) })
        }),
        default_namespace: p.default_namespace.clone(),
        path_globs: p.paths.iter().map(|g| g.glob.clone()).collect(),
        reconcile_timeout: Some(duration(p.reconcile_timeout)),
        hook_timeout: Some(duration(p.hook_timeout)),
        sops_secret: p
            .decryption
            .as_ref()
            .map(|d| d.secret.clone())
            .unwrap_or_default(),
        dry_run_strategy: match p.dry_run_strategy {
            cfg::DryRunStrategy::None => v1::DryRunStrategy::None,
            cfg::DryRunStrategy::Client => v1::DryRunStrategy::Client,
            cfg::DryRunStrategy::Server => v1::DryRunStrategy::Server,
        } as i32,
        prune: p.prune,
        prune_timeout: Some(duration(p.prune_timeout)),
        prune_propagation_policy: match p.prune_propagation_policy {
            cfg::PrunePropagationPolicy::Foreground => v1::PrunePropagationPolicy::Foreground,
            cfg::PrunePropagationPolicy::Background => v1::PrunePropagationPolicy::Background,
            cfg::PrunePropagationPolicy::Orphan => v1::PrunePropagationPolicy::Orphan,
        } as i32,
        inventory_policy: match p.inventory_policy {
            cfg::InventoryPolicy::MustMatch => v1::InventoryPolicy::MustMatch,
            cfg::InventoryPolicy::AdoptIfNoInventory => v1::InventoryPolicy::AdoptIfNoInventory,
            cfg::InventoryPolicy::AdoptAll => v1::InventoryPolicy::AdoptAll,
        } as i32,
    }
}

fn manifest_project_from(p: &v1::ManifestProject) -> Result<cfg::ManifestProject, ConversionError> {
    let git_ref = p
        .r#ref
        .as_ref()
        .and_then(|r| r.r#ref.as_ref())
        .map(|r| match r {
            v1::git_ref::Ref::Branch(b) => cfg::GitRef {
                branch: Some(b.clone()),
                ..Default::default()
            },
            v1::git_ref::Ref::Tag(t) => cfg::GitRef {
                tag: Some(t.clone()),
                ..Default::default()
            },
            v1::git_ref::Ref::Commit(c) => cfg::GitRef {
                commit: Some(c.clone()),
                ..Default::default()
            },
        });
    let unknown = |field, value| ConversionError::UnknownEnum { field, value };
    Ok(cfg::ManifestProject {
        id: (!p.id.is_empty()).then(|| p.id.clone()),
        git_ref,
        default_namespace: p.default_namespace.clone(),
        paths: p
            .path_globs
            .iter()
            .map(|g| cfg::PathGlob { glob: g.clone() })
            .collect(),
        reconcile_timeout: duration_from(
            p.reconcile_timeout,
            "reconcile_timeout",
            cfg::DEFAULT_RECONCILE_TIMEOUT,
        )?,
        hook_timeout: duration_from(p.hook_timeout, "hook_timeout", cfg::DEFAULT_HOOK_TIMEOUT)?,
        dry_run_strategy: match v1::DryRunStrategy::try_from(p.dry_run_strategy) {
            Ok(v1::DryRunStrategy::None) => cfg::DryRunStrategy::None,
            Ok(v1::DryRunStrategy::Client) => cfg::DryRunStrategy::Client,
            Ok(v1::DryRunStrategy::Server) => cfg::DryRunStrategy::Server,
            Err(_) => return Err(unknown("dry_run_strategy", p.dry_run_strategy)),
        },
        prune: p.prune,
        prune_timeout: duration_from(p.prune_timeout, "prune_timeout", cfg::DEFAULT_PRUNE_TIMEOUT)?,
        prune_propagation_policy: match v1::PrunePropagationPolicy::try_from(
            p.prune_propagation_policy,
        ) {
            Ok(v1::PrunePropagationPolicy::Foreground) => cfg::PrunePropagationPolicy::Foreground,
            Ok(v1::PrunePropagationPolicy::Background) => cfg::PrunePropagationPolicy::Background,
            Ok(v1::PrunePropagationPolicy::Orphan) => cfg::PrunePropagationPolicy::Orphan,
            Err(_) => {
                return Err(unknown(
                    "prune_propagation_policy",
                    p.prune_propagation_policy,
                ));
            }
        },
        inventory_policy: match v1::InventoryPolicy::try_from(p.inventory_policy) {
            Ok(v1::InventoryPolicy::MustMatch) => cfg::InventoryPolicy::MustMatch,
            Ok(v1::InventoryPolicy::AdoptIfNoInventory) => cfg::InventoryPolicy::AdoptIfNoInventory,
            Ok(v1::InventoryPolicy::AdoptAll) => cfg::InventoryPolicy::AdoptAll,
            Err(_) => return Err(unknown("inventory_policy", p.inventory_policy)),
        },
        // Rendered on kas: the agent receives the objects, not the charts.
        kustomizations: Vec::new(),
        helm_charts: Vec::new(),
        decryption: (!p.sops_secret.is_empty()).then(|| cfg::Decryption {
            provider: cfg::DecryptionProvider::Sops,
            secret: p.sops_secret.clone(),
        }),
    })
}

fn ci_entry(e: &cfg::CiAccessEntry) -> v1::CiAccessEntry {
    use v1::ci_access_as::As;
    v1::CiAccessEntry {
        id: e.id.clone(),
        default_namespace: e.default_namespace.clone().unwrap_or_default(),
        environments: e.environments.clone(),
        protected_branches_only: e.protected_branches_only,
        access_as: Some(v1::CiAccessAs {
            r#as: Some(match &e.access_as {
                cfg::CiAccessAs::Agent {} => As::Agent(v1::Empty {}),
                cfg::CiAccessAs::CiJob {} => As::CiJob(v1::Empty {}),
                cfg::CiAccessAs::CiUser {} => As::CiUser(v1::Empty {}),
                cfg::CiAccessAs::Impersonate(i) => As::Impersonate(v1::Impersonation {
                    username: i.username.clone(),
                    groups: i.groups.clone(),
                    uid: i.uid.clone().unwrap_or_default(),
                    extra: i
                        .extra
                        .iter()
                        .map(|x| v1::ExtraValue {
                            key: x.key.clone(),
                            val: x.val.clone(),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn ci_entry_from(e: &v1::CiAccessEntry) -> cfg::CiAccessEntry {
    use v1::ci_access_as::As;
    let access_as = match e.access_as.as_ref().and_then(|a| a.r#as.as_ref()) {
        None | Some(As::Agent(_)) => cfg::CiAccessAs::Agent {},
        Some(As::CiJob(_)) => cfg::CiAccessAs::CiJob {},
        Some(As::CiUser(_)) => cfg::CiAccessAs::CiUser {},
        Some(As::Impersonate(i)) => cfg::CiAccessAs::Impersonate(cfg::Impersonation {
            username: i.username.clone(),
            groups: i.groups.clone(),
            uid: (!i.uid.is_empty()).then(|| i.uid.clone()),
            extra: i
                .extra
                .iter()
                .map(|x| cfg::ExtraValue {
                    key: x.key.clone(),
                    val: x.val.clone(),
                })
                .collect(),
        }),
    };
    cfg::CiAccessEntry {
        id: e.id.clone(),
        default_namespace: (!e.default_namespace.is_empty()).then(|| e.default_namespace.clone()),
        environments: e.environments.clone(),
        protected_branches_only: e.protected_branches_only,
        access_as,
    }
}

fn user_access_from(ua: &v1::UserAccess) -> Result<cfg::UserAccess, ConversionError> {
    let targets = |ids: &[String]| {
        ids.iter()
            .map(|id| cfg::AccessTarget { id: id.clone() })
            .collect()
    };
    Ok(cfg::UserAccess {
        access_as: match v1::UserAccessAs::try_from(ua.access_as) {
            Ok(v1::UserAccessAs::Agent) => cfg::UserAccessAs::Agent {},
            Ok(v1::UserAccessAs::User) => cfg::UserAccessAs::User {},
            Err(_) => {
                return Err(ConversionError::UnknownEnum {
                    field: "user_access.access_as",
                    value: ua.access_as,
                });
            }
        },
        projects: targets(&ua.project_ids),
        groups: targets(&ua.group_ids),
    })
}

fn log_level(level: cfg::LogLevel) -> v1::LogLevel {
    match level {
        cfg::LogLevel::Debug => v1::LogLevel::Debug,
        cfg::LogLevel::Info => v1::LogLevel::Info,
        cfg::LogLevel::Warn => v1::LogLevel::Warn,
        cfg::LogLevel::Error => v1::LogLevel::Error,
    }
}

fn log_level_from(value: i32, field: &'static str) -> Result<cfg::LogLevel, ConversionError> {
    Ok(match v1::LogLevel::try_from(value) {
        Ok(v1::LogLevel::Debug) => cfg::LogLevel::Debug,
        Ok(v1::LogLevel::Info) => cfg::LogLevel::Info,
        Ok(v1::LogLevel::Warn) => cfg::LogLevel::Warn,
        Ok(v1::LogLevel::Error) => cfg::LogLevel::Error,
        Err(_) => return Err(ConversionError::UnknownEnum { field, value }),
    })
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn duration_from(
    d: Option<prost_types::Duration>,
    field: &'static str,
    default: Duration,
) -> Result<Duration, ConversionError> {
    match d {
        None => Ok(default),
        Some(d) => {
            let seconds =
                u64::try_from(d.seconds).map_err(|_| ConversionError::BadDuration { field })?;
            let nanos =
                u32::try_from(d.nanos).map_err(|_| ConversionError::BadDuration { field })?;
            if nanos >= 1_000_000_000 {
                return Err(ConversionError::BadDuration { field });
            }
            Ok(Duration::new(seconds, nanos))
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    const FULL: &str = r#"
gitops:
  manifest_projects:
  - id: team/manifests
    ref: { commit: 0123456789abcdef0123456789abcdef01234567 }
    default_namespace: apps
    paths: [{ glob: 'base/**/*.yaml' }, { glob: '*.json' }]
    reconcile_timeout: 90s
    dry_run_strategy: client
    prune: false
    prune_timeout: 1.5s
    prune_propagation_policy: orphan
    inventory_policy: adopt_all
  - {}
ci_access:
  projects:
  - id: team/app
    default_namespace: ci
    environments: [production]
    protected_branches_only: true
    access_as: { impersonate: { username: u, groups: [g], uid: "1", extra: [{ key: k, val: [v] }] } }
  groups:
  - id: team
    access_as: { ci_job: {} }
user_access:
  access_as: { user: {} }
  projects: [{ id: team/app }]
  groups: [{ id: team }]
observability:
  logging: { level: warn, grpc_level: debug }
"#;

    #[test]
    fn a_full_config_survives_the_wire() {
        let config = tether_agent_config::parse(FULL).expect("valid").config;
        let message = to_proto(&config, "abc", "team/config");
        let bytes = message.encode_to_vec();
        let decoded = v1::AgentConfiguration::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.commit_id, "abc");
        assert_eq!(decoded.project_id, "team/config");
        assert_eq!(from_proto(&decoded), Ok(config));
    }

    #[test]
    fn the_empty_config_survives_the_wire() {
        let config = tether_agent_config::AgentConfig::default();
        assert_eq!(from_proto(&to_proto(&config, "c", "p")), Ok(config));
    }

    #[test]
    fn unacted_sections_are_not_sent() {
        let config = tether_agent_config::parse("flux: { x: 1 }\n")
            .expect("valid")
            .config;
        let back = from_proto(&to_proto(&config, "c", "p")).expect("converts");
        assert_eq!(back.flux, None);
    }

    #[test]
    fn unknown_enum_values_from_a_newer_peer_are_errors() {
        let mut message = to_proto(
            &tether_agent_config::parse(FULL).expect("valid").config,
            "c",
            "p",
        );
        message.observability.as_mut().expect("set").log_level = 99;
        assert_eq!(
            from_proto(&message),
            Err(ConversionError::UnknownEnum {
                field: "observability.log_level",
                value: 99
            })
        );
    }
}
