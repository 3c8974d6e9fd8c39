//! ARCHITECTURE.md's code map is a layer order: a crate may depend only on
//! crates listed after it. This test reads the order from the document and
//! every crate's `[dependencies]` from its Cargo.toml, so that neither the
//! code nor the document can drift from the other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The crate folders in the code map's order (`### \`crates/NAME\``).
fn layers() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("### `crates/"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// A crate's package name and the workspace crates among its
/// `[dependencies]` (not dev- or build-dependencies), by package name.
fn manifest(dir: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join("crates").join(dir).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("crates/{dir}/Cargo.toml: {e}"));
    let mut name = String::new();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if section == "[package]" && key == "name" {
            name = value.trim().trim_matches('"').to_owned();
        }
        if section == "[dependencies]" {
            let dep = key.trim_end_matches(".workspace");
            let local = value.contains("path =") || value.contains("path=");
            if local || (key.ends_with(".workspace") && dep.starts_with("tether-")) {
                deps.push(dep.to_owned());
            }
        }
    }
    (name, deps)
}

#[test]
fn every_crate_is_in_the_code_map_and_depends_only_downwards() {
    let layers = layers();
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut mapped = layers.clone();
    mapped.sort();
    assert_eq!(
        mapped, on_disk,
        "ARCHITECTURE.md's code map must list every crate once"
    );

    let manifests: Vec<(String, Vec<String>)> = layers.iter().map(|d| manifest(d)).collect();
    let position: HashMap<&str, usize> = manifests
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    let mut upward = Vec::new();
    for (i, (name, deps)) in manifests.iter().enumerate() {
        for dep in deps {
            let j = *position
                .get(dep.as_str())
                .unwrap_or_else(|| panic!("{name} depends on {dep}, which is not in the code map"));
            if j <= i {
                upward.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "dependencies that point up ARCHITECTURE.md's code map: {upward:?}"
    );
}

#[test]
fn only_the_process_level_tests_link_the_test_support_crate() {
    for dir in layers() {
        let (name, deps) = manifest(&dir);
        if name != "tether-e2e" {
            assert!(
                !deps.iter().any(|d| d == "tether-testenv"),
                "{name} has tether-testenv in [dependencies]: only dev-dependencies may"
            );
        }
    }
}

/// Every long task of kas runs on its drain (`tether_runtime::Drain`),
/// which kas waits for when it stops: in the server's crates no production
/// code detaches one with a bare `tokio::spawn`.
#[test]
fn the_servers_crates_spawn_no_task_outside_the_drain() {
    let mut detached = Vec::new();
    for dir in ["kas", "channel", "notify", "replicas"] {
        let mut stack = vec![root().join("crates").join(dir).join("src")];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).expect("source folder").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                // Unit tests come last in a file, after `#[cfg(test)]`.
                let production = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (n, line) in production.lines().enumerate() {
                    if line.contains("tokio::spawn(") && !line.trim_start().starts_with("//") {
                        detached.push(format!("{}:{}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        detached.is_empty(),
        "tasks spawned outside the drain: {detached:?}"
    );
}
