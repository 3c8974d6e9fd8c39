//! Checks the values serde cannot, under one rule: refuse only what GitLab's
//! agent refuses (an empty id or glob, a ref naming none or two of branch,
//! tag and commit, an impersonation without a username, too many paths), so
//! that every config its users wrote still loads; where Tether reads a value
//! more strictly than GitLab does, warn with the path and go on.
//!
//! Normalization happens here too, once, so that no consumer repeats it: a
//! glob's leading `/` (GitLab's docs write `/**/*.yaml`) means the
//! repository root and is removed, and an empty `paths` list takes the
//! default glob as GitLab's agent does.

pub(crate) use crate::findings::Findings;

/// Most `paths` entries one manifest project may list, as in the GitLab agent.
pub const MAX_PATHS_PER_PROJECT: usize = 100;
use crate::schema::{
    AgentConfig, CiAccessAs, CiAccessEntry, DEFAULT_GLOB, DEFAULT_NAMESPACE, GitRef,
    ManifestProject, PathGlob,
};

pub(crate) fn validate(config: &mut AgentConfig) -> Findings {
    let mut found = Findings::default();
    for (i, project) in config.gitops.manifest_projects.iter_mut().enumerate() {
        manifest_project(
            &mut found,
            &format!("gitops.manifest_projects[{i}]"),
            project,
        );
    }
    one_decryption_secret_per_project(&mut found, &config.gitops.manifest_projects);
    for (kind, entries) in [
        ("projects", &config.ci_access.projects),
        ("groups", &config.ci_access.groups),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            ci_access_entry(&mut found, &format!("ci_access.{kind}[{i}]"), entry);
        }
    }
    if let Some(user_access) = &config.user_access {
        for (kind, targets) in [
            ("projects", &user_access.projects),
            ("groups", &user_access.groups),
        ] {
            for (i, target) in targets.iter().enumerate() {
                found.check_id(&format!("user_access.{kind}[{i}].id"), &target.id);
            }
        }
    }
    if config.notifications.len() > MAX_NOTIFICATIONS {
        found.problem(
            "notifications",
            format!(
                "{} destinations, more than the limit of {MAX_NOTIFICATIONS}",
                config.notifications.len()
            ),
        );
    }
    for (i, n) in config.notifications.iter().enumerate() {
        let secret = &n.url_secret;
        if secret.is_empty() {
            found.problem(
                format!("notifications[{i}].url_secret"),
                "the name of a notification secret held by kas is required (URLs never go in git)",
            );
        } else if secret.contains("://") {
            found.problem(
                format!("notifications[{i}].url_secret"),
                "this is a URL: put it in kas (`kas notifications secret set NAME`) and name it here",
            );
        } else if let Some(reason) = crate::names::notification_secret_name_problem(secret) {
            found.problem(
                format!("notifications[{i}].url_secret"),
                format!("{secret:?} is not a secret's name ({reason})"),
            );
        }
    }
    found
}

/// Notification destinations one agent may have.
const MAX_NOTIFICATIONS: usize = 10;

/// Two projects decrypted with one Secret would each have the other's
/// encrypted files decrypted: whoever can push to one copies a file of
/// the other into it (SOPS's MAC covers values, not where they sit). So
/// each project (by id: one repository is one trust domain) has its own.
fn one_decryption_secret_per_project(found: &mut Findings, projects: &[ManifestProject]) {
    let mut first: std::collections::HashMap<&str, (usize, Option<&str>)> =
        std::collections::HashMap::new();
    for (i, project) in projects.iter().enumerate() {
        let Some(decryption) = &project.decryption else {
            continue;
        };
        let id = project.id.as_deref();
        match first.get(decryption.secret.as_str()) {
            Some((j, other)) if *other != id => found.problem(
                format!("gitops.manifest_projects[{i}].decryption.secret"),
                format!(
                    "Secret {:?} already decrypts gitops.manifest_projects[{j}], another project: a file copied from one repository into the other would be decrypted; give each project its own Secret and key",
                    decryption.secret
                ),
            ),
            Some(_) => {}
            None => {
                first.insert(decryption.secret.as_str(), (i, id));
            }
        }
    }
}

fn manifest_project(found: &mut Findings, at: &str, project: &mut ManifestProject) {
    if let Some(id) = &project.id {
        found.check_id(&format!("{at}.id"), id);
    }
    if let Some(git_ref) = &project.git_ref {
        check_ref(found, &format!("{at}.ref"), git_ref);
    }
    if project.default_namespace.is_empty() {
        project.default_namespace = DEFAULT_NAMESPACE.into();
    }
    found.check_namespace(
        &format!("{at}.default_namespace"),
        &project.default_namespace,
    );
    crate::renders::check(found, at, project);
    if let Some(decryption) = &project.decryption
        && let Some(reason) = crate::names::dns_subdomain_problem(&decryption.secret)
    {
        // A name only: the Secret is read from the agent's own namespace,
        // so `other-namespace/key` is refused rather than read.
        found.problem(
            format!("{at}.decryption.secret"),
            format!(
                "{:?} is not a Secret's name ({reason}); the Secret is read from the agent's own namespace",
                decryption.secret
            ),
        );
    }
    // A project that renders charts or kustomizations and names no paths
    // applies only what it renders (`parse` empties the default it got).
    if project.paths.is_empty() && !project.renders() {
        found.warn(
            format!("{at}.paths"),
            format!("no path globs: the default {DEFAULT_GLOB:?} (every manifest file) is used"),
        );
        project.paths.push(PathGlob {
            glob: DEFAULT_GLOB.into(),
        });
    }
    if project.paths.len() > MAX_PATHS_PER_PROJECT {
        found.problem(
            format!("{at}.paths"),
            format!(
                "{} globs, more than the limit of {MAX_PATHS_PER_PROJECT}",
                project.paths.len()
            ),
        );
    }
    for (i, path) in project.paths.iter_mut().enumerate() {
        let here = format!("{at}.paths[{i}].glob");
        if path.glob.trim().is_empty() {
            found.problem(here, "glob is empty");
            continue;
        }
        path.glob = root_relative(&path.glob).to_owned();
        if let Err(message) = check_glob(&path.glob) {
            found.warn(here, message);
        }
    }
}

/// GitLab reads a glob with a leading `/` from the repository root.
fn root_relative(glob: &str) -> &str {
    glob.trim_start_matches('/')
}

fn check_ref(found: &mut Findings, at: &str, git_ref: &GitRef) {
    let set = [&git_ref.branch, &git_ref.tag, &git_ref.commit];
    match set.iter().filter(|v| v.is_some()).count() {
        1 => {}
        0 => found.problem(at, "name one of branch, tag or commit"),
        _ => found.problem(at, "name only one of branch, tag or commit"),
    }
    for (field, value) in [
        ("branch", &git_ref.branch),
        ("tag", &git_ref.tag),
        ("commit", &git_ref.commit),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            found.problem(format!("{at}.{field}"), "is empty");
        }
    }
    if let Some(commit) = git_ref.commit.as_deref().filter(|c| !c.is_empty()) {
        let full = matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !full {
            found.warn(
                format!("{at}.commit"),
                format!(
                    "{commit:?} is not a full commit id (40 or 64 hex digits); an abbreviation \
                     can become ambiguous as the repository grows"
                ),
            );
        }
    }
}

/// Why a (root-relative) glob will select nothing, or cannot be compiled.
/// Neither refuses the config (GitLab's agent accepts both); the sync of that
/// manifest project fails with the same message until the glob is fixed, and
/// nothing is applied or pruned meanwhile.
pub(crate) fn check_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() {
        return Err("glob names only the repository root, so it matches no file".into());
    }
    if glob.split(['/', '\\']).any(|segment| segment == "..") {
        return Err(format!(
            "glob {glob:?} has a '..' segment; files outside the repository are never read, so it matches nothing there"
        ));
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| {
            format!(
                "glob {glob:?} is invalid: {}; this manifest project fails to sync until it is fixed",
                e.kind()
            )
        })
}

fn ci_access_entry(found: &mut Findings, at: &str, entry: &CiAccessEntry) {
    found.check_id(&format!("{at}.id"), &entry.id);
    if let Some(namespace) = &entry.default_namespace
        && !namespace.is_empty()
    {
        found.check_namespace(&format!("{at}.default_namespace"), namespace);
    }
    for (i, env) in entry.environments.iter().enumerate() {
        if env.trim().is_empty() {
            found.warn(
                format!("{at}.environments[{i}]"),
                "environment is empty and matches no job",
            );
        }
    }
    if let CiAccessAs::Impersonate(imp) = &entry.access_as {
        if imp.username.trim().is_empty() {
            found.problem(
                format!("{at}.access_as.impersonate.username"),
                "a username is required",
            );
        }
        for (i, extra) in imp.extra.iter().enumerate() {
            if extra.key.trim().is_empty() {
                found.problem(
                    format!("{at}.access_as.impersonate.extra[{i}].key"),
                    "key is empty",
                );
            }
        }
    }
}
