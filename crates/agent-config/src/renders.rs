//! Validation of Tether's rendering extension of a manifest project
//! (`kustomizations`, `helm_charts`). These fields are not GitLab's, so the
//! rule "refuse only what GitLab refuses" does not bind them: a value that
//! could never render refuses the file, naming the field, before kas tries.

use crate::findings::Findings;
use crate::schema::{HelmChart, Kustomization, ManifestProject};

/// Kustomizations, and charts, one manifest project may list.
pub const MAX_RENDERS_PER_PROJECT: usize = 20;
/// Values files one chart may list.
pub const MAX_VALUES_FILES: usize = 20;
/// Helm's own bound on a release name.
const MAX_RELEASE_NAME: usize = 53;

pub(crate) fn check(found: &mut Findings, at: &str, project: &mut ManifestProject) {
    for (what, count) in [
        ("kustomizations", project.kustomizations.len()),
        ("helm_charts", project.helm_charts.len()),
    ] {
        if count > MAX_RENDERS_PER_PROJECT {
            found.problem(
                format!("{at}.{what}"),
                format!("{count} entries, more than the limit of {MAX_RENDERS_PER_PROJECT}"),
            );
        }
    }
    for (i, k) in project.kustomizations.iter_mut().enumerate() {
        kustomization(found, &format!("{at}.kustomizations[{i}]"), k);
    }
    let mut releases = std::collections::BTreeSet::new();
    for (i, chart) in project.helm_charts.iter_mut().enumerate() {
        let here = format!("{at}.helm_charts[{i}]");
        helm_chart(found, &here, chart);
        if !chart.release_name.is_empty() && !releases.insert(chart.release_name.clone()) {
            found.problem(
                format!("{here}.release_name"),
                format!(
                    "release {:?} is listed twice in this manifest project",
                    chart.release_name
                ),
            );
        }
    }
}

/// A path in the repository: relative (a leading `/` is the root, as in
/// globs), without `..`. Returns it normalized, or why not.
fn repository_path(path: &str) -> Result<String, String> {
    let trimmed = path.trim().trim_start_matches('/').trim_end_matches('/');
    if trimmed.split('/').any(|s| s == "..") {
        return Err(format!(
            "{path:?} leaves the repository ('..'); only files of the manifest project are read"
        ));
    }
    if trimmed.contains('\\') || trimmed.contains('\0') {
        return Err(format!("{path:?} is not a repository path"));
    }
    Ok(if trimmed.is_empty() {
        ".".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn kustomization(found: &mut Findings, at: &str, k: &mut Kustomization) {
    if k.path.trim().is_empty() {
        found.problem(
            format!("{at}.path"),
            "a directory is required ('/' for the root)",
        );
    } else {
        match repository_path(&k.path) {
            Ok(path) => k.path = path,
            Err(e) => found.problem(format!("{at}.path"), e),
        }
    }
    for name in k.substitute.keys() {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            found.problem(
                format!("{at}.substitute.{name}"),
                format!(
                    "{name:?} is not a variable name (letters, digits and '_', not first a digit)"
                ),
            );
        }
    }
}

fn helm_chart(found: &mut Findings, at: &str, chart: &mut HelmChart) {
    match (&chart.path, &chart.repository) {
        (Some(_), Some(_)) => found.problem(
            at,
            "name the chart by path or by repository and chart, not both",
        ),
        (None, None) => found.problem(
            at,
            "name the chart: path (in this repository) or repository, chart and version",
        ),
        (Some(path), None) => match repository_path(path) {
            Ok(path) => chart.path = Some(path),
            Err(e) => found.problem(format!("{at}.path"), e),
        },
        (None, Some(repository)) => {
            let scheme = repository.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("https" | "http" | "oci")) {
                found.problem(
                    format!("{at}.repository"),
                    format!(
                        "{repository:?} is not an https://, http:// or oci:// chart repository"
                    ),
                );
            } else if scheme == Some("http") {
                found.warn(
                    format!("{at}.repository"),
                    "charts from http:// travel unencrypted; kas checks their digest against the repository's index only",
                );
            }
            match chart.chart.as_deref().filter(|c| !c.trim().is_empty()) {
                None => found.problem(
                    format!("{at}.chart"),
                    "the chart's name in the repository is required",
                ),
                // It becomes a file name on kas and a segment of a URL.
                Some(name) => {
                    if let Err(e) = crate::names::validate_chart_name(name) {
                        found.problem(format!("{at}.chart"), e.to_string());
                    }
                }
            }
            match chart.version.as_deref().map(str::trim) {
                None | Some("") => found.problem(
                    format!("{at}.version"),
                    "an exact version is required, so that a commit always renders the same",
                ),
                Some(v)
                    if v.contains(['^', '~', '*', '>', '<', '=', ' ', '|'])
                        || v.ends_with(".x") =>
                {
                    found.problem(
                        format!("{at}.version"),
                        format!("{v:?} is a range; give the exact version, so that a commit always renders the same"),
                    );
                }
                // Untrimmed, as kas fetches it: a file name and a URL segment.
                Some(_) => {
                    let version = chart.version.as_deref().unwrap_or_default();
                    if let Err(e) = crate::names::validate_chart_version(version) {
                        found.problem(format!("{at}.version"), e.to_string());
                    }
                }
            }
        }
    }
    let name = &chart.release_name;
    if name.is_empty() {
        found.problem(format!("{at}.release_name"), "a release name is required");
    } else if let Some(reason) = crate::names::dns_label_problem(name) {
        found.problem(
            format!("{at}.release_name"),
            format!("{name:?} is not a valid release name ({reason})"),
        );
    } else if name.len() > MAX_RELEASE_NAME {
        found.problem(
            format!("{at}.release_name"),
            format!("{name:?} is longer than Helm's {MAX_RELEASE_NAME} characters"),
        );
    }
    if let Some(namespace) = &chart.namespace {
        found.check_namespace(&format!("{at}.namespace"), namespace);
    }
    if chart.values_files.len() > MAX_VALUES_FILES {
        found.problem(
            format!("{at}.values_files"),
            format!(
                "{} files, more than the limit of {MAX_VALUES_FILES}",
                chart.values_files.len()
            ),
        );
    }
    if !chart.values_from.is_empty() && chart.render_on.is_kas() {
        found.problem(
            format!("{at}.values_from"),
            "values from the cluster's Secrets are read by the agent: set render_on: agent (kas never reads a cluster's Secrets)",
        );
    }
    if chart.values_from.len() > MAX_VALUES_FILES {
        found.problem(
            format!("{at}.values_from"),
            format!(
                "{} Secrets, more than the limit of {MAX_VALUES_FILES}",
                chart.values_from.len()
            ),
        );
    }
    for (i, from) in chart.values_from.iter().enumerate() {
        let here = format!("{at}.values_from[{i}]");
        if let Some(reason) = crate::names::dns_subdomain_problem(&from.secret) {
            found.problem(
                format!("{here}.secret"),
                format!("{:?} is not a Secret's name ({reason})", from.secret),
            );
        }
        let key_ok = !from.key.is_empty()
            && from.key.len() <= 253
            && from
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !key_ok {
            found.problem(
                format!("{here}.key"),
                format!(
                    "{:?} is not a Secret's key (letters, digits, '-', '_' and '.')",
                    from.key
                ),
            );
        }
    }
    for (i, file) in chart.values_files.iter_mut().enumerate() {
        let here = format!("{at}.values_files[{i}]");
        if file.trim().is_empty() {
            found.problem(here, "a file path is required");
            continue;
        }
        match repository_path(file) {
            Ok(path) => *file = path,
            Err(e) => found.problem(here, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths_stay_inside() {
        assert_eq!(repository_path("/charts/app/").as_deref(), Ok("charts/app"));
        assert_eq!(repository_path("/").as_deref(), Ok("."));
        assert!(repository_path("charts/../../etc").is_err());
        assert!(repository_path("..").is_err());
    }
}
