//! `.tether/image-updates.yaml`: which images of a repository kas keeps up
//! to date, by which rule, and how it writes the change back.
//!
//! The file lives in the repository it updates, so the policy is reviewed
//! and versioned with the manifests it changes. [`parse`] reads it as
//! [`crate::parse`] reads a config: every default applied, every problem
//! at once with its line and column, unknown fields named as warnings.
//!
//! The tag rules are Flux's `ImagePolicy` rules (semver ranges in
//! Masterminds' syntax, alphabetical and numerical orders, a tag filter
//! with a named group to extract), so a Flux user's policies carry over.

use std::cmp::Ordering;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ConfigError, Problem, Warning};
use crate::locate::Locations;

/// Where the file is in a project.
pub const IMAGE_UPDATES_PATH: &str = ".tether/image-updates.yaml";
/// Largest file accepted.
pub const MAX_IMAGE_UPDATES_BYTES: usize = 64 * 1024;
/// Images one file may name.
pub const MAX_IMAGES: usize = 100;
/// Longest batching window: updates wait at most this long for company.
pub const MAX_BATCH: Duration = Duration::from_secs(3600);
/// Longest commit message template.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The file, parsed and checked.
#[derive(Clone, Debug)]
pub struct ImageUpdates {
    pub images: Vec<ImagePolicy>,
    pub update: UpdateSettings,
}

/// One image kas follows: the tags of `repository` that `policy` orders,
/// after `filter`.
#[derive(Clone, Debug)]
pub struct ImagePolicy {
    /// What markers name (`# {"$imagepolicy": "app:tag"}`).
    pub name: String,
    /// The image repository as written (`registry.example.com/team/app`).
    pub repository: String,
    pub policy: TagPolicy,
    pub filter: Option<TagFilter>,
    /// Write `tag@sha256:…`: what the tag points at when kas saw it.
    pub digest: bool,
}

/// How the tags that pass the filter are ordered; the last is the latest.
#[derive(Clone, Debug)]
pub enum TagPolicy {
    Semver(SemverRange),
    Alphabetical(Order),
    Numerical(Order),
}

/// `asc` picks the greatest, `desc` the least (Flux's meaning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// `filter_tags`: only tags matching `pattern` count, each by the value
/// `extract` makes of its groups (the whole tag when not given).
#[derive(Clone, Debug)]
pub struct TagFilter {
    pub pattern: regex::Regex,
    pub extract: Option<String>,
}

/// A semver range in the syntax Flux takes (Masterminds/semver):
/// comparators separated by spaces or commas, `||` between alternatives,
/// `1.2 - 1.4` hyphen ranges, `~`, `^`, `x` wildcards.
#[derive(Clone, Debug)]
pub struct SemverRange {
    text: String,
    alternatives: Vec<semver::VersionReq>,
}

/// Why a semver range is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a semver range: {reason}")]
pub struct SemverRangeError {
    text: String,
    reason: String,
}

/// How kas writes the change back.
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    /// Folders (or files) markers are looked for in; empty: the whole tree.
    pub paths: Vec<String>,
    /// The branch commits go to; `None`: the project's ref.
    pub push_branch: Option<String>,
    /// Open (and keep updating) one pull/merge request from `push_branch`.
    pub pull_request: bool,
    /// Updates found within this window go in one commit.
    pub batch: Duration,
    pub author_name: String,
    pub author_email: String,
    /// The message template; `{{changes}}` and `{{summary}}` are filled.
    pub message: String,
}

/// The commit message when the file gives none.
pub const DEFAULT_MESSAGE: &str = "Update images: {{summary}}\n\n{{changes}}\n";

/// Parses and checks the file; an empty file follows nothing.
pub fn parse(text: &str) -> Result<(ImageUpdates, Vec<Warning>), ConfigError> {
    if text.len() > MAX_IMAGE_UPDATES_BYTES {
        return Err(ConfigError::TooLarge {
            size: text.len(),
            limit: MAX_IMAGE_UPDATES_BYTES,
        });
    }
    let mut unknown = Vec::new();
    let raw: Option<raw::File> =
        serde_saphyr::with_deserializer_from_str_with_options(text, crate::parse_options(), |de| {
            serde_ignored::deserialize(de, |path| unknown.push(crate::display_path(&path)))
        })
        .map_err(|e| ConfigError::syntax(&e))?;
    let raw = raw.unwrap_or_default();
    let locations = Locations::scan(text);
    let mut problems = Vec::new();
    let checked = check(raw, &mut problems);
    let place = |path: String, message: String| {
        let (line, column) = crate::split(locations.find(&path));
        Problem {
            path,
            line,
            column,
            message,
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(
            problems
                .into_iter()
                .map(|(path, message)| place(path, message))
                .collect(),
        ));
    }
    let mut warnings = crate::locate::unknown_fields(unknown);
    locations.place_warnings(&mut warnings);
    Ok((checked, warnings))
}

fn check(raw: raw::File, problems: &mut Vec<(String, String)>) -> ImageUpdates {
    let mut problem = |path: String, message: String| problems.push((path, message));
    if raw.images.len() > MAX_IMAGES {
        problem(
            "images".into(),
            format!(
                "{} images, more than the limit of {MAX_IMAGES}",
                raw.images.len()
            ),
        );
    }
    let mut images: Vec<ImagePolicy> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, image) in raw.images.into_iter().take(MAX_IMAGES).enumerate() {
        let at = |field: &str| format!("images[{i}].{field}");
        if let Some(reason) = name_problem(&image.name) {
            problem(at("name"), reason);
        } else if !names.insert(image.name.clone()) {
            problem(at("name"), format!("image {:?} is named twice", image.name));
        }
        if let Err(reason) = crate::ImageRepository::parse(&image.repository) {
            problem(at("repository"), reason.to_string());
        }
        let policy = match image.policy {
            raw::Policy {
                semver: Some(semver),
                alphabetical: None,
                numerical: None,
            } => match SemverRange::parse(&semver.range) {
                Ok(range) => Some(TagPolicy::Semver(range)),
                Err(reason) => {
                    problem(at("policy.semver.range"), reason.to_string());
                    None
                }
            },
            raw::Policy {
                semver: None,
                alphabetical: Some(order),
                numerical: None,
            } => Some(TagPolicy::Alphabetical(order.order)),
            raw::Policy {
                semver: None,
                alphabetical: None,
                numerical: Some(order),
            } => Some(TagPolicy::Numerical(order.order)),
            _ => {
                problem(
                    at("policy"),
                    "give exactly one of semver, alphabetical or numerical".into(),
                );
                None
            }
        };
        let filter = match image.filter_tags {
            None => None,
            Some(filter) => match regex::RegexBuilder::new(&filter.pattern)
                .size_limit(256 << 10)
                .dfa_size_limit(256 << 10)
                .build()
            {
                Ok(pattern) => {
                    if let Some(extract) = &filter.extract
                        && let Some(group) = unknown_group(&pattern, extract)
                    {
                        problem(
                            at("filter_tags.extract"),
                            format!(
                                "{extract:?} names group {group:?}, which the pattern does not have"
                            ),
                        );
                    }
                    Some(TagFilter {
                        pattern,
                        extract: filter.extract,
                    })
                }
                Err(e) => {
                    problem(
                        at("filter_tags.pattern"),
                        format!("not a regular expression: {e}"),
                    );
                    None
                }
            },
        };
        if let Some(policy) = policy {
            images.push(ImagePolicy {
                name: image.name,
                repository: image.repository,
                policy,
                filter,
                digest: image.digest,
            });
        }
    }
    let update = raw.update;
    for (i, path) in update.paths.iter().enumerate() {
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|part| part == ".." || part == ".git")
        {
            problem(
                format!("update.paths[{i}]"),
                format!("{path:?} is not a path inside the repository"),
            );
        }
    }
    if let Some(branch) = &update.push_branch
        && let Some(reason) = branch_problem(branch)
    {
        problem("update.push_branch".into(), reason);
    }
    let batch = match update.batch.as_deref().map(crate::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(batch)) if batch <= MAX_BATCH => batch,
        Some(Ok(_)) => {
            problem("update.batch".into(), format!("at most {MAX_BATCH:?}"));
            Duration::ZERO
        }
        Some(Err(e)) => {
            problem("update.batch".into(), e.to_string());
            Duration::ZERO
        }
    };
    let commit = update.commit.unwrap_or_default();
    let author = commit.author.unwrap_or_default();
    let author_name = author.name.unwrap_or_else(|| "Tether".into());
    let author_email = author.email.unwrap_or_else(|| "tether@localhost".into());
    for (field, value) in [("name", &author_name), ("email", &author_email)] {
        if value.is_empty() || value.len() > 200 || value.contains(['<', '>', '\n', '\0']) {
            problem(
                format!("update.commit.author.{field}"),
                "must be one line of at most 200 characters, without < or >".into(),
            );
        }
    }
    let message = commit.message.unwrap_or_else(|| DEFAULT_MESSAGE.into());
    if message.trim().is_empty() || message.len() > MAX_MESSAGE_BYTES || message.contains('\0') {
        problem(
            "update.commit.message".into(),
            format!("must be non-empty and at most {MAX_MESSAGE_BYTES} bytes"),
        );
    }
    ImageUpdates {
        images,
        update: UpdateSettings {
            paths: update.paths,
            push_branch: update.push_branch,
            pull_request: update.pull_request,
            batch,
            author_name,
            author_email,
            message,
        },
    }
}

/// What markers may name: letters, digits, `-`, `_`, `.`; no `:` (it
/// separates the field in a marker).
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "{name:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    None
}

/// What git's check-ref-format refuses, in short.
fn branch_problem(branch: &str) -> Option<String> {
    let bad = branch.is_empty()
        || branch == "HEAD"
        || branch.starts_with("refs/")
        || branch.len() > 200
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    bad.then(|| format!("{branch:?} is not a branch name git accepts"))
}

/// The first `$name` or `${name}` in `extract` that is not a group of
/// `pattern`.
fn unknown_group(pattern: &regex::Regex, extract: &str) -> Option<String> {
    let names: Vec<&str> = pattern.capture_names().flatten().collect();
    let groups = pattern.captures_len();
    let mut rest = extract;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once('}') {
                Some((name, after)) => (name, after),
                None => return None,
            },
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        rest = after;
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(index) => index < groups,
            Err(_) => names.contains(&name),
        };
        if !known {
            return Some(name.to_owned());
        }
    }
    None
}

// === impl SemverRange ===

impl SemverRange {
    pub fn parse(text: &str) -> Result<Self, SemverRangeError> {
        let refuse = |reason: String| SemverRangeError {
            text: text.to_owned(),
            reason,
        };
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let comparators = comparators(alternative.trim()).map_err(|e| refuse(e.to_owned()))?;
            let req = semver::VersionReq::parse(&comparators).map_err(|e| refuse(e.to_string()))?;
            alternatives.push(req);
        }
        Ok(SemverRange {
            text: text.to_owned(),
            alternatives,
        })
    }

    /// As Masterminds decides: a prerelease version matches only an
    /// alternative that names a prerelease itself, and then by order.
    pub fn matches(&self, version: &semver::Version) -> bool {
        self.alternatives.iter().any(|req| {
            if req.matches(version) {
                return true;
            }
            if version.pre.is_empty() || req.comparators.iter().all(|c| c.pre.is_empty()) {
                return false;
            }
            req.comparators.iter().all(|c| compares(c, version))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `version` against one comparator by precedence alone, prerelease or
/// not; wildcards and `~`/`^` against the version without its prerelease.
fn compares(c: &semver::Comparator, version: &semver::Version) -> bool {
    use semver::Op;
    let bound = semver::Version {
        major: c.major,
        minor: c.minor.unwrap_or(0),
        patch: c.patch.unwrap_or(0),
        pre: c.pre.clone(),
        build: semver::BuildMetadata::EMPTY,
    };
    let order = version.cmp_precedence(&bound);
    match c.op {
        Op::Exact if c.patch.is_some() => order == Ordering::Equal,
        Op::Greater => order == Ordering::Greater,
        Op::GreaterEq => order != Ordering::Less,
        Op::Less => order == Ordering::Less,
        Op::LessEq => order != Ordering::Greater,
        _ => {
            let mut release = version.clone();
            release.pre = semver::Prerelease::EMPTY;
            semver::VersionReq {
                comparators: vec![c.clone()],
            }
            .matches(&release)
        }
    }
}

/// Masterminds' comparator list as the semver crate's: `>= 1.2 <2` becomes
/// `>=1.2, <2`; `1.2 - 1.4` becomes `>=1.2, <=1.4`; empty or `*` any.
fn comparators(text: &str) -> Result<String, &'static str> {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Ok("*".into());
    }
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        if tokens.get(i + 1) == Some(&"-") {
            let upper = tokens
                .get(i + 2)
                .ok_or("a hyphen range without its upper end")?;
            out.push(format!(">={}", token.trim_start_matches(['v', 'V'])));
            out.push(format!("<={}", upper.trim_start_matches(['v', 'V'])));
            i += 3;
            continue;
        }
        let operator_only = token.chars().all(|c| "<>=!~^".contains(c));
        if operator_only {
            let version = tokens.get(i + 1).ok_or("an operator without a version")?;
            out.push(format!("{token}{}", version.trim_start_matches(['v', 'V'])));
            i += 2;
            continue;
        }
        let split = token
            .find(|c: char| !"<>=!~^".contains(c))
            .unwrap_or(token.len());
        let (operator, version) = token.split_at(split);
        let operator = if operator == "=" { "=" } else { operator };
        if operator == "!=" {
            return Err("!= is not supported");
        }
        out.push(format!(
            "{operator}{}",
            version.trim_start_matches(['v', 'V'])
        ));
        i += 1;
    }
    Ok(out.join(", "))
}

/// A tag read as a version the way Flux reads it: an optional `v`, and
/// `1` or `1.2` standing for `1.0.0` and `1.2.0`.
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    if let Ok(version) = semver::Version::parse(text) {
        return Some(version);
    }
    let end = text.find(['-', '+']).unwrap_or(text.len());
    let (core, rest) = text.split_at(end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = match parts.len() {
        1 => format!("{core}.0.0{rest}"),
        _ => format!("{core}.0{rest}"),
    };
    semver::Version::parse(&padded).ok()
}

// === impl TagFilter ===

impl TagFilter {
    /// The value `tag` is ordered by, when it passes.
    pub fn apply(&self, tag: &str) -> Option<String> {
        let captures = self.pattern.captures(tag)?;
        match &self.extract {
            None => Some(tag.to_owned()),
            Some(extract) => {
                let mut out = String::new();
                captures.expand(extract, &mut out);
                Some(out)
            }
        }
    }
}

// === impl ImagePolicy ===

impl ImagePolicy {
    /// The latest of `tags` under this policy: the tag and the value it
    /// was ordered by; `None` when no tag qualifies.
    pub fn latest<'t>(&self, tags: impl IntoIterator<Item = &'t str>) -> Option<&'t str> {
        let candidates = tags.into_iter().filter_map(|tag| {
            let key = match &self.filter {
                Some(filter) => filter.apply(tag)?,
                None => tag.to_owned(),
            };
            Some((tag, key))
        });
        match &self.policy {
            TagPolicy::Semver(range) => candidates
                .filter_map(|(tag, key)| {
                    let version = tag_version(&key)?;
                    range.matches(&version).then_some((tag, version))
                })
                // Equal versions (`1.2.0` and `v1.2.0`): the greater tag text,
                // so the choice does not depend on the registry's order.
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))
                .map(|(tag, _)| tag),
            TagPolicy::Alphabetical(order) => {
                pick(candidates, *order, |a: &String, b: &String| a.cmp(b))
            }
            TagPolicy::Numerical(order) => pick(
                candidates.filter_map(|(tag, key)| Some((tag, key.parse::<f64>().ok()?))),
                *order,
                |a: &f64, b: &f64| a.total_cmp(b),
            ),
        }
    }
}

fn pick<'t, K>(
    candidates: impl Iterator<Item = (&'t str, K)>,
    order: Order,
    cmp: impl Fn(&K, &K) -> Ordering,
) -> Option<&'t str> {
    let by = |a: &(&'t str, K), b: &(&'t str, K)| cmp(&a.1, &b.1).then_with(|| a.0.cmp(b.0));
    match order {
        Order::Asc => candidates.max_by(by),
        Order::Desc => candidates.min_by(by),
    }
    .map(|(tag, _)| tag)
}

/// The file as written, before checking.
mod raw {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct File {
        pub images: Vec<Image>,
        pub update: Update,
    }

    #[derive(Debug, Deserialize)]
    pub struct Image {
        pub name: String,
        pub repository: String,
        pub policy: Policy,
        #[serde(default)]
        pub filter_tags: Option<Filter>,
        #[serde(default)]
        pub digest: bool,
    }

    #[derive(Debug, Deserialize)]
    pub struct Policy {
        #[serde(default)]
        pub semver: Option<Semver>,
        #[serde(default)]
        pub alphabetical: Option<Ordered>,
        #[serde(default)]
        pub numerical: Option<Ordered>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Semver {
        pub range: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Ordered {
        pub order: super::Order,
    }

    #[derive(Debug, Deserialize)]
    pub struct Filter {
        pub pattern: String,
        #[serde(default)]
        pub extract: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Update {
        pub paths: Vec<String>,
        pub push_branch: Option<String>,
        pub pull_request: bool,
        pub batch: Option<String>,
        pub commit: Option<Commit>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Commit {
        pub author: Option<Author>,
        pub message: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct Author {
        pub name: Option<String>,
        pub email: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> ImagePolicy {
        let text = format!("images:\n  - name: app\n    repository: ghcr.io/team/app\n{yaml}");
        let (file, warnings) = parse(&text).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        file.images.into_iter().next().expect("one image")
    }

    #[test]
    fn a_full_file_parses_with_its_defaults() {
        let text = r#"
images:
  - name: app
    repository: registry.example.com/team/app
    policy:
      semver: {range: ">=1.2.0 <2.0.0"}
    digest: true
  - name: nightly
    repository: registry.example.com/team/nightly
    policy: {numerical: {order: asc}}
    filter_tags: {pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts'}
update:
  paths: [deploy/]
  push_branch: image-updates
  pull_request: true
  batch: 30s
  commit: {author: {name: Bot, email: bot@example.com}}
"#;
        let (file, warnings) = parse(text).expect("valid");
        assert!(warnings.is_empty());
        assert_eq!(file.images.len(), 2);
        assert!(file.images[0].digest);
        assert_eq!(file.update.batch, Duration::from_secs(30));
        assert_eq!(file.update.push_branch.as_deref(), Some("image-updates"));
        assert_eq!(file.update.author_name, "Bot");
        assert_eq!(file.update.message, DEFAULT_MESSAGE);
        let (empty, _) = parse("# nothing yet\n").expect("valid");
        assert!(empty.images.is_empty());
        assert_eq!(empty.update.batch, Duration::ZERO);
    }

    #[test]
    fn every_problem_is_named_with_its_line_and_column() {
        let text = "images:\n  - name: app\n    repository: Not/Valid\n    policy: {semver: {range: \">=x.y\"}}\n  - name: app\n    repository: ghcr.io/a\n    policy: {}\n    filter_tags: {pattern: '(', extract: '$ts'}\nupdate:\n  paths: [../etc]\n  batch: forever\n  colour: blue\n";
        let Err(ConfigError::Invalid(problems)) = parse(text) else {
            panic!("refused")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "images[0].repository",
                "images[0].policy.semver.range",
                "images[1].name",
                "images[1].policy",
                "images[1].filter_tags.pattern",
                "update.paths[0]",
                "update.batch",
            ]
        );
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(17)));
        assert_eq!(problems[5].line, Some(10));
        let syntax = parse("images: [\n").expect_err("not YAML");
        assert!(syntax.line().is_some(), "{syntax}");
        let unknown = parse("update:\n  colour: blue\n").expect("valid").1;
        assert_eq!(unknown[0].path, "update.colour");
        assert_eq!(unknown[0].line, Some(2));
    }

    #[test]
    fn an_extract_naming_no_group_is_refused() {
        let text = "images:\n  - name: a\n    repository: ghcr.io/a\n    policy: {numerical: {}}\n    filter_tags: {pattern: '^(?P<ts>[0-9]+)$', extract: '$time'}\n";
        let Err(ConfigError::Invalid(problems)) = parse(text) else {
            panic!("refused")
        };
        assert!(problems[0].message.contains("\"time\""), "{problems:?}");
    }

    #[test]
    fn semver_takes_the_greatest_match_and_ignores_prereleases_and_non_versions() {
        let p = policy("    policy: {semver: {range: \">=1.2.0 <2.0.0\"}}\n");
        let tags = [
            "1.1.9",
            "1.2.0",
            "v1.3.0",
            "1.4.0-rc.1",
            "2.0.0",
            "latest",
            "main-abc",
            "1.3",
        ];
        assert_eq!(p.latest(tags), Some("v1.3.0"));
        assert_eq!(p.latest(["2.0.0", "latest"]), None);
        let p = policy("    policy: {semver: {range: \">=1.0.0-0\"}}\n");
        assert_eq!(p.latest(["1.0.0", "1.1.0-rc.1"]), Some("1.1.0-rc.1"));
        let p = policy("    policy: {semver: {range: \"~1.2 || ^3.0\"}}\n");
        assert_eq!(p.latest(["1.2.9", "1.3.0", "2.5.0"]), Some("1.2.9"));
        assert_eq!(p.latest(["1.2.9", "3.4.1"]), Some("3.4.1"));
        let p = policy("    policy: {semver: {range: \"1.2 - 1.4\"}}\n");
        // A partial upper end covers its whole minor version, as in npm.
        assert_eq!(p.latest(["1.4.0", "1.4.1", "1.5.0"]), Some("1.4.1"));
        let p = policy("    policy: {semver: {range: \">= 1.0, < 1.5\"}}\n");
        assert_eq!(p.latest(["1.4.7", "1.5.0"]), Some("1.4.7"));
    }

    #[test]
    fn a_filter_with_extract_orders_timestamped_tags() {
        let p = policy(
            "    policy: {numerical: {order: asc}}\n    filter_tags: {pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts'}\n",
        );
        let tags = [
            "main-abc123-1700000009",
            "main-def456-1700000100",
            "dev-0a-1800000000",
            "main-zz-1",
        ];
        assert_eq!(p.latest(tags), Some("main-def456-1700000100"));
        let p = policy(
            "    policy: {alphabetical: {order: desc}}\n    filter_tags: {pattern: '^rc-'}\n",
        );
        assert_eq!(p.latest(["rc-b", "rc-a", "x"]), Some("rc-a"));
        let p = policy("    policy: {alphabetical: {}}\n");
        assert_eq!(
            p.latest(["2024-01-02", "2024-10-01", "2024-09-30"]),
            Some("2024-10-01")
        );
    }
}
