//! What a project holds at a commit: its `.tether/image-updates.yaml`, the
//! values its markers mark, and the branch kas may push to.

use std::collections::{BTreeMap, BTreeSet};

use tether_agent_config::image_updates::{self, IMAGE_UPDATES_PATH, ImageUpdates};
use tether_git::{CommitId, SelectLimits, Source};

use crate::markers::{self, Field};
use crate::write;

/// What a project holds at a commit.
pub(super) struct ProjectRead {
    pub commit: String,
    pub file: Option<Result<ImageUpdates, String>>,
    pub in_git: BTreeMap<String, Vec<(Field, String)>>,
    pub marker_problem: Option<String>,
    pub branch: Option<String>,
}

/// Reads the file, then the markers under its paths (blocking).
pub(super) fn read_project(
    source: &Source,
    commit: &CommitId,
    git_ref: Option<&str>,
) -> ProjectRead {
    let mut read = ProjectRead {
        commit: commit.to_string(),
        file: None,
        in_git: BTreeMap::new(),
        marker_problem: None,
        branch: match git_ref {
            Some(reference)
                if !looks_like_commit(reference) && !reference.starts_with("refs/tags/") =>
            {
                Some(reference.trim_start_matches("refs/heads/").to_owned())
            }
            Some(_) => None,
            None => source.default_branch(),
        },
    };
    let text = match source.read_file(
        commit,
        IMAGE_UPDATES_PATH,
        image_updates::MAX_IMAGE_UPDATES_BYTES as u64,
    ) {
        Ok(Some(file)) => String::from_utf8_lossy(&file.bytes).into_owned(),
        Ok(None) => return read,
        Err(e) => {
            read.file = Some(Err(format!("{IMAGE_UPDATES_PATH}: {e}")));
            return read;
        }
    };
    let file = match image_updates::parse(&text) {
        Ok((file, _warnings)) => file,
        Err(e) => {
            read.file = Some(Err(format!("{IMAGE_UPDATES_PATH}: {e}")));
            return read;
        }
    };
    let globs: Vec<String> = match file.update.paths.is_empty() {
        true => vec!["**/*.yaml".into(), "**/*.yml".into()],
        false => file
            .update
            .paths
            .iter()
            .flat_map(|p| {
                let p = p.trim_end_matches('/');
                [
                    p.to_owned(),
                    format!("{p}/**/*.yaml"),
                    format!("{p}/**/*.yml"),
                ]
            })
            .collect(),
    };
    let limits = SelectLimits {
        max_file_bytes: write::MAX_FILE_BYTES,
        max_total_bytes: 64 << 20,
        max_files: write::MAX_FILES,
    };
    let names: BTreeSet<&str> = file.images.iter().map(|i| i.name.as_str()).collect();
    match source.select_files(commit, &globs, &limits) {
        Ok(files) => {
            for matched in files {
                if !(matched.path.ends_with(".yaml") || matched.path.ends_with(".yml")) {
                    continue;
                }
                let text = String::from_utf8_lossy(&matched.bytes);
                if !text.contains("$imagepolicy") {
                    continue;
                }
                for (line, marker, value) in markers::values(&text) {
                    if !names.contains(marker.policy.as_str()) {
                        read.marker_problem.get_or_insert_with(|| {
                            format!(
                                "{}:{line}: the marker names policy {:?}, which {IMAGE_UPDATES_PATH} does not have",
                                matched.path, marker.policy
                            )
                        });
                        continue;
                    }
                    let Some(value) = value else {
                        read.marker_problem.get_or_insert_with(|| {
                            format!(
                                "{}:{line}: the marker's value cannot be found on its line",
                                matched.path
                            )
                        });
                        continue;
                    };
                    read.in_git
                        .entry(marker.policy)
                        .or_default()
                        .push((marker.field, value));
                }
            }
        }
        Err(e) => {
            read.marker_problem = Some(format!("cannot read the files the markers are in: {e}"))
        }
    }
    read.file = Some(Ok(file));
    read
}

fn looks_like_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}
