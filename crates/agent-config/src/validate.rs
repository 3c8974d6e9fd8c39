//! Checks the values serde cannot: every problem is collected, with its path,
//! so the user fixes the file in one go.

use crate::names::{dns_label_problem, validate_project_id};
use crate::schema::{AgentConfig, CiAccessAs, CiAccessEntry, GitRef, ManifestProject};
use crate::{MAX_PATHS_PER_PROJECT, Problem};

pub(crate) fn validate(config: &AgentConfig) -> Vec<Problem> {
    let mut problems = Problems::default();
    for (i, project) in config.gitops.manifest_projects.iter().enumerate() {
        manifest_project(
            &mut problems,
            &format!("gitops.manifest_projects[{i}]"),
            project,
        );
    }
    for (kind, entries) in [
        ("projects", &config.ci_access.projects),
        ("groups", &config.ci_access.groups),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            ci_access_entry(&mut problems, &format!("ci_access.{kind}[{i}]"), entry);
        }
    }
    if let Some(user_access) = &config.user_access {
        for (kind, targets) in [
            ("projects", &user_access.projects),
            ("groups", &user_access.groups),
        ] {
            for (i, target) in targets.iter().enumerate() {
                problems.check_id(&format!("user_access.{kind}[{i}].id"), &target.id);
            }
        }
    }
    problems.0
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check_id(&mut self, path: &str, id: &str) {
        if let Err(message) = validate_project_id(id) {
            self.push(path, message);
        }
    }

    fn check_namespace(&mut self, path: &str, namespace: &str) {
        if let Some(reason) = dns_label_problem(namespace) {
            self.push(
                path,
                format!("namespace {namespace:?} is invalid: {reason}"),
            );
        }
    }
}

fn manifest_project(problems: &mut Problems, at: &str, project: &ManifestProject) {
    if let Some(id) = &project.id {
        problems.check_id(&format!("{at}.id"), id);
    }
    if let Some(git_ref) = &project.git_ref {
        check_ref(problems, &format!("{at}.ref"), git_ref);
    }
    problems.check_namespace(
        &format!("{at}.default_namespace"),
        &project.default_namespace,
    );
    if project.paths.is_empty() {
        problems.push(format!("{at}.paths"), "at least one path glob is needed");
    }
    if project.paths.len() > MAX_PATHS_PER_PROJECT {
        problems.push(
            format!("{at}.paths"),
            format!(
                "{} globs, more than the limit of {MAX_PATHS_PER_PROJECT}",
                project.paths.len()
            ),
        );
    }
    for (i, path) in project.paths.iter().enumerate() {
        if let Err(message) = check_glob(&path.glob) {
            problems.push(format!("{at}.paths[{i}].glob"), message);
        }
    }
}

fn check_ref(problems: &mut Problems, at: &str, git_ref: &GitRef) {
    let set = [&git_ref.branch, &git_ref.tag, &git_ref.commit];
    match set.iter().filter(|v| v.is_some()).count() {
        1 => {}
        0 => problems.push(at, "name one of branch, tag or commit"),
        _ => problems.push(at, "name only one of branch, tag or commit"),
    }
    for (field, value) in [("branch", &git_ref.branch), ("tag", &git_ref.tag)] {
        if value.as_deref().is_some_and(str::is_empty) {
            problems.push(format!("{at}.{field}"), "is empty");
        }
    }
    if let Some(commit) = &git_ref.commit {
        let full = matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !full {
            problems.push(
                format!("{at}.commit"),
                format!("{commit:?} is not a full commit id (40 or 64 hex digits); abbreviations are ambiguous"),
            );
        }
    }
}

/// Globs select files inside the repository; one that could name a file
/// outside it (absolute, or with a `..` segment) is refused outright.
pub(crate) fn check_glob(glob: &str) -> Result<(), String> {
    if glob.trim().is_empty() {
        return Err("glob is empty".into());
    }
    if glob.starts_with('/') || glob.starts_with('\\') {
        return Err(format!(
            "glob {glob:?} is absolute; globs are relative to the repository root"
        ));
    }
    if glob.split(['/', '\\']).any(|segment| segment == "..") {
        return Err(format!(
            "glob {glob:?} has a '..' segment; globs must stay inside the repository"
        ));
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| format!("glob {glob:?} is invalid: {}", e.kind()))
}

fn ci_access_entry(problems: &mut Problems, at: &str, entry: &CiAccessEntry) {
    problems.check_id(&format!("{at}.id"), &entry.id);
    if let Some(namespace) = &entry.default_namespace {
        problems.check_namespace(&format!("{at}.default_namespace"), namespace);
    }
    for (i, env) in entry.environments.iter().enumerate() {
        if env.trim().is_empty() {
            problems.push(format!("{at}.environments[{i}]"), "environment is empty");
        }
    }
    if let CiAccessAs::Impersonate(imp) = &entry.access_as {
        if imp.username.trim().is_empty() {
            problems.push(
                format!("{at}.access_as.impersonate.username"),
                "a username is required",
            );
        }
        for (i, extra) in imp.extra.iter().enumerate() {
            if extra.key.trim().is_empty() {
                problems.push(
                    format!("{at}.access_as.impersonate.extra[{i}].key"),
                    "key is empty",
                );
            }
        }
    }
}
