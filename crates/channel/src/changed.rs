//! What changed between two syncs of a manifest project: the objects
//! (added, removed, health changed, applied again), read from the two
//! reports, and the manifests themselves as line diffs of the files the
//! agent was sent at each commit. Both are bounded: a diff of a 5,000-file
//! monorepo must not make a page of megabytes.

use std::collections::BTreeMap;

use similar::TextDiff;
use tether_api::{ObjectView, SyncView};

/// Lines of file diffs shown, in all; the rest is counted, not shown.
pub const MAX_LINES: usize = 4_000;

/// An object as the two reports name it.
pub type ObjectKey<'a> = (&'a str, &'a str, &'a str, &'a str);

fn key(o: &ObjectView) -> ObjectKey<'_> {
    (
        o.group.as_str(),
        o.kind.as_str(),
        o.namespace.as_deref().unwrap_or(""),
        o.name.as_str(),
    )
}

/// Whether the sync wanted the object in the cluster (not pruned, or left
/// behind as no longer in git).
fn desired(o: &ObjectView) -> bool {
    !matches!(o.action.as_str(), "pruned" | "kept")
}

/// How one object differs from the earlier sync to the later.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectChange<'a> {
    Added(&'a ObjectView),
    Removed(&'a ObjectView),
    /// In both; health before and the object after.
    Health {
        before: &'a str,
        after: &'a ObjectView,
    },
    /// In both, same health, and the later sync applied it (its content
    /// or the cluster's copy differed).
    Applied(&'a ObjectView),
}

/// The objects that differ between `earlier` and `later`, sorted by
/// group, kind, namespace and name.
pub fn objects<'a>(earlier: &'a SyncView, later: &'a SyncView) -> Vec<ObjectChange<'a>> {
    let before: BTreeMap<ObjectKey<'_>, &ObjectView> = earlier
        .objects
        .iter()
        .filter(|o| desired(o))
        .map(|o| (key(o), o))
        .collect();
    let after: BTreeMap<ObjectKey<'_>, &ObjectView> = later
        .objects
        .iter()
        .filter(|o| desired(o))
        .map(|o| (key(o), o))
        .collect();
    let mut changes = BTreeMap::new();
    for (k, o) in &after {
        let change = match before.get(k) {
            None => ObjectChange::Added(o),
            Some(b) if b.health != o.health => ObjectChange::Health {
                before: &b.health,
                after: o,
            },
            Some(_) if o.action == "applied" => ObjectChange::Applied(o),
            Some(_) => continue,
        };
        changes.insert(*k, change);
    }
    for (k, o) in &before {
        if !after.contains_key(k) {
            changes.insert(*k, ObjectChange::Removed(o));
        }
    }
    changes.into_values().collect()
}

/// One file's change between the two commits.
#[derive(Debug, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    pub change: FileChange,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FileChange {
    Added,
    Removed,
    Modified,
}

/// The files' line diffs, and how many lines were left out past
/// [`MAX_LINES`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub files: Vec<(FileDiff, String)>,
    pub unchanged: usize,
    pub lines_left_out: usize,
}

/// Unified diffs (3 lines of context) of the files that differ, by path.
/// A file that is not UTF-8 (a chart archive) is said to differ, not shown.
pub fn files(before: &[(String, Vec<u8>)], after: &[(String, Vec<u8>)]) -> Files {
    let old: BTreeMap<&str, &[u8]> = before
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let new: BTreeMap<&str, &[u8]> = after
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let mut paths: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut out = Files::default();
    let mut budget = MAX_LINES;
    for path in paths {
        let (a, b) = (old.get(path).copied(), new.get(path).copied());
        let change = match (a, b) {
            (Some(a), Some(b)) if a == b => {
                out.unchanged += 1;
                continue;
            }
            (Some(_), Some(_)) => FileChange::Modified,
            (None, Some(_)) => FileChange::Added,
            (Some(_), None) => FileChange::Removed,
            (None, None) => continue,
        };
        let text = match (text_of(a), text_of(b)) {
            (Some(a), Some(b)) => TextDiff::from_lines(a, b)
                .unified_diff()
                .context_radius(3)
                .header(path, path)
                .to_string(),
            _ => "(not text: the file differs)\n".to_owned(),
        };
        let lines = text.lines().count();
        let shown = if lines <= budget {
            budget -= lines;
            text
        } else {
            let kept: String = text.lines().take(budget).flat_map(|l| [l, "\n"]).collect();
            out.lines_left_out += lines - budget;
            budget = 0;
            kept
        };
        out.files.push((
            FileDiff {
                path: path.to_owned(),
                change,
            },
            shown,
        ));
    }
    out
}

/// The file as text; a missing file is empty.
fn text_of(content: Option<&[u8]>) -> Option<&str> {
    match content {
        None => Some(""),
        Some(bytes) => std::str::from_utf8(bytes).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str, action: &str, health: &str) -> ObjectView {
        ObjectView {
            group: String::new(),
            kind: kind.into(),
            namespace: Some("web".into()),
            name: name.into(),
            action: action.into(),
            health: health.into(),
            message: None,
        }
    }

    fn sync(objects: Vec<ObjectView>) -> SyncView {
        SyncView {
            phase: String::new(),
            phase_since: None,
            health: String::new(),
            waiting: Vec::new(),
            project: "p".into(),
            commit: "c".into(),
            state: "synced".into(),
            error: None,
            applied: 0,
            unchanged: 0,
            pruned: 0,
            duration_ms: 0,
            reported_at: String::new(),
            objects,
            drift: Vec::new(),
            trace_id: None,
        }
    }

    #[test]
    fn objects_added_removed_and_changed_are_told_apart() {
        let earlier = sync(vec![
            object("ConfigMap", "kept-same", "applied", "Current"),
            object("ConfigMap", "goes", "unchanged", "Current"),
            object("Deployment", "web", "unchanged", "Current"),
            object("Service", "edited", "unchanged", "Current"),
            object("ConfigMap", "was-pruned", "pruned", "NotFound"),
        ]);
        let later = sync(vec![
            object("ConfigMap", "kept-same", "unchanged", "Current"),
            object("ConfigMap", "goes", "pruned", "NotFound"),
            object("Deployment", "web", "applied", "InProgress"),
            object("Service", "edited", "applied", "Current"),
            object("ConfigMap", "was-pruned", "applied", "Current"),
        ]);
        let changes = objects(&earlier, &later);
        let named: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| match c {
                ObjectChange::Added(o) => ("added", o.name.as_str()),
                ObjectChange::Removed(o) => ("removed", o.name.as_str()),
                ObjectChange::Health { after, .. } => ("health", after.name.as_str()),
                ObjectChange::Applied(o) => ("applied", o.name.as_str()),
            })
            .collect();
        assert_eq!(
            named,
            [
                ("removed", "goes"),
                ("added", "was-pruned"),
                ("health", "web"),
                ("applied", "edited"),
            ]
        );
    }

    #[test]
    fn file_diffs_are_unified_and_bounded() {
        let before = vec![
            (
                "a.yaml".to_owned(),
                b"kind: ConfigMap\ndata:\n  x: '1'\n".to_vec(),
            ),
            ("same.yaml".to_owned(), b"kind: Secret\n".to_vec()),
            ("gone.yaml".to_owned(), b"kind: Service\n".to_vec()),
            ("chart.tgz".to_owned(), vec![0x1f, 0x8b, 0xff]),
        ];
        let after = vec![
            (
                "a.yaml".to_owned(),
                b"kind: ConfigMap\ndata:\n  x: '2'\n".to_vec(),
            ),
            ("same.yaml".to_owned(), b"kind: Secret\n".to_vec()),
            ("new.yaml".to_owned(), b"kind: Job\n".to_vec()),
            ("chart.tgz".to_owned(), vec![0x1f, 0x8b, 0xfe]),
        ];
        let diff = files(&before, &after);
        assert_eq!(diff.unchanged, 1);
        let changes: Vec<(&str, &FileChange)> = diff
            .files
            .iter()
            .map(|(f, _)| (f.path.as_str(), &f.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("a.yaml", &FileChange::Modified),
                ("chart.tgz", &FileChange::Modified),
                ("gone.yaml", &FileChange::Removed),
                ("new.yaml", &FileChange::Added),
            ]
        );
        let a = &diff.files[0].1;
        assert!(a.contains("-  x: '1'\n+  x: '2'\n"), "{a}");
        assert!(diff.files[1].1.contains("not text"));

        let big: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let diff = files(&[], &[("big.yaml".to_owned(), big)]);
        assert_eq!(diff.files[0].1.lines().count(), MAX_LINES);
        assert!(diff.lines_left_out > 6_000, "{}", diff.lines_left_out);
    }
}
