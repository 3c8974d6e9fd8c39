//! Flux's image policy markers, found and rewritten in YAML text: a line
//! ending in `# {"$imagepolicy": "app"}` (or `"app:tag"`, `"app:name"`,
//! `"app:digest"`, or Flux's `"namespace:app:tag"`) has its value replaced
//! and nothing else.
//!
//! The rewrite works on bytes, not on a parsed document: a parser would
//! lose comments, quoting, key order, indentation and line endings, and a
//! reviewer would see a diff of the whole file. Only the marked scalar
//! changes; a quoted value stays quoted the same way.

use std::collections::BTreeMap;
use std::ops::Range;

/// What a marker names: a policy, and which part of its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub policy: String,
    pub field: Field,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `repository:tag` (`@sha256:…` after it when the policy pins digests).
    Reference,
    /// The tag alone (with `@sha256:…` when pinned).
    Tag,
    /// The repository alone.
    Name,
    /// `sha256:…` alone.
    Digest,
}

/// The newest image of one policy, as it is to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    /// The repository as the policy writes it.
    pub repository: String,
    pub tag: String,
    /// `sha256:…` of what the tag pointed at when scanned.
    pub digest: Option<String>,
    /// Write the digest beside the tag.
    pub pin: bool,
}

/// One value changed in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// 1-based.
    pub line: usize,
    pub policy: String,
    pub field: Field,
    pub old: String,
    pub new: String,
}

/// A file after the rewrite: its text, what changed, and the markers that
/// name no policy (each a problem to report; its line is left alone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub text: String,
    pub changes: Vec<Change>,
    pub unknown: Vec<(usize, String)>,
    /// Markers found on a line whose value could not be located.
    pub unplaced: Vec<usize>,
}

/// Rewrites every marked value of `text` that `latest` (by policy name)
/// says differs.
pub fn rewrite(text: &str, latest: &BTreeMap<String, Latest>) -> Rewritten {
    let mut out = Rewritten {
        text: String::with_capacity(text.len()),
        ..Default::default()
    };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let Some((marker, comment_at)) = find(line) else {
            out.text.push_str(line);
            continue;
        };
        let Some(image) = latest.get(&marker.policy) else {
            out.unknown.push((number, marker.policy));
            out.text.push_str(line);
            continue;
        };
        let Some(span) = value_span(&line[..comment_at]) else {
            out.unplaced.push(number);
            out.text.push_str(line);
            continue;
        };
        let old = &line[span.clone()];
        let Some(new) = image.value(marker.field) else {
            out.text.push_str(line);
            continue;
        };
        if old == new {
            out.text.push_str(line);
            continue;
        }
        out.text.push_str(&line[..span.start]);
        out.text.push_str(&new);
        out.text.push_str(&line[span.end..]);
        out.changes.push(Change {
            line: number,
            policy: marker.policy,
            field: marker.field,
            old: old.to_owned(),
            new,
        });
    }
    out
}

/// Every marker of `text`: its line (1-based) and what it names.
pub fn markers(text: &str) -> Vec<(usize, Marker)> {
    values(text)
        .into_iter()
        .map(|(line, marker, _)| (line, marker))
        .collect()
}

/// Every marker of `text` with the value it marks (`None` when the value
/// cannot be placed on its line).
pub fn values(text: &str) -> Vec<(usize, Marker, Option<String>)> {
    text.split_inclusive('\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let (marker, comment_at) = find(line)?;
            let value = value_span(&line[..comment_at]).map(|span| line[span].to_owned());
            Some((i + 1, marker, value))
        })
        .collect()
}

impl Latest {
    /// What a marker of `field` should hold; `None` for a digest not known.
    pub fn value(&self, field: Field) -> Option<String> {
        let pinned = |tag: &str| match (&self.digest, self.pin) {
            (Some(digest), true) => format!("{tag}@{digest}"),
            _ => tag.to_owned(),
        };
        Some(match field {
            Field::Reference => format!("{}:{}", self.repository, pinned(&self.tag)),
            Field::Tag => pinned(&self.tag),
            Field::Name => self.repository.clone(),
            Field::Digest => self.digest.clone()?,
        })
    }
}

/// The marker of `line` and where its comment starts.
fn find(line: &str) -> Option<(Marker, usize)> {
    let content = line.trim_end_matches(['\n', '\r']).trim_end();
    let brace = content.rfind("{\"$imagepolicy\"")?;
    let hash = content[..brace].trim_end();
    let comment_at = hash.strip_suffix('#').map(str::len)?;
    // The comment must be a comment: a `#` after a space (or at the start).
    if comment_at > 0 && !content[..comment_at].ends_with([' ', '\t']) {
        return None;
    }
    let object: serde_json::Value = serde_json::from_str(&content[brace..]).ok()?;
    let reference = object.get("$imagepolicy")?.as_str()?;
    Some((parse_reference(reference)?, comment_at))
}

/// `app`, `app:tag`, `ns:app`, `ns:app:tag`: the policy is the last part
/// that is not a field suffix.
fn parse_reference(reference: &str) -> Option<Marker> {
    let mut parts: Vec<&str> = reference.split(':').collect();
    let field = match parts.last().copied() {
        Some("tag") if parts.len() > 1 => Field::Tag,
        Some("name") if parts.len() > 1 => Field::Name,
        Some("digest") if parts.len() > 1 => Field::Digest,
        _ => Field::Reference,
    };
    if field != Field::Reference {
        parts.pop();
    }
    let policy = parts.last()?.trim();
    (!policy.is_empty()).then(|| Marker {
        policy: policy.to_owned(),
        field,
    })
}

/// Where the scalar value of a YAML line is, before its comment: after
/// `key:` or `- `; a quoted value's span is inside its quotes.
fn value_span(before_comment: &str) -> Option<Range<usize>> {
    let end = before_comment.trim_end().len();
    let line = &before_comment[..end];
    let mut start = line.len() - line.trim_start().len();
    // Sequence items: `- value`, `- key: value`.
    while line[start..].starts_with("- ") {
        start += 2;
        start += line[start..].len() - line[start..].trim_start().len();
    }
    if let Some(colon) = key_end(&line[start..]) {
        start += colon + 1;
        start += line[start..].len() - line[start..].trim_start().len();
    }
    if start >= end {
        return None;
    }
    let value = &line[start..end];
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return Some(start + 1..end - 1);
        }
    }
    // A plain scalar; a flow collection or a block indicator is no image.
    if value.starts_with(['{', '[', '|', '>', '&', '*', '!', '"', '\'']) {
        return None;
    }
    Some(start..end)
}

/// The `:` that ends a mapping key at the start of `text` (followed by a
/// space or the end), outside quotes.
fn key_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') if i == 0 => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b':') if bytes.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t') => {
                return Some(i);
            }
            (None, b' ' | b'\t') if i > 0 && bytes[i - 1] == b':' => return Some(i - 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(pin: bool) -> BTreeMap<String, Latest> {
        BTreeMap::from([(
            "app".to_owned(),
            Latest {
                repository: "registry.example.com/team/app".into(),
                tag: "1.3.0".into(),
                digest: Some("sha256:abcd".into()),
                pin,
            },
        )])
    }

    #[test]
    fn only_the_marked_values_change_and_every_other_byte_stays() {
        let text = "apiVersion: apps/v1\r\nkind: Deployment\r\nspec:\r\n  template:\r\n    spec:\r\n      containers:\r\n        - name: app\r\n          image: \"registry.example.com/team/app:1.2.0\" # {\"$imagepolicy\": \"app\"}\r\n          # a comment stays\r\n          args: ['--tag', 'x'] # not a marker\r\n";
        let out = rewrite(text, &latest(false));
        assert_eq!(out.text, text.replace("app:1.2.0\"", "app:1.3.0\""));
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].line, 8);
        assert_eq!(out.changes[0].old, "registry.example.com/team/app:1.2.0");
    }

    #[test]
    fn helm_values_and_kustomization_images_take_tag_and_name_markers() {
        let values = "image:\n  repository: old/app # {\"$imagepolicy\": \"app:name\"}\n  tag: 1.2.0   # {\"$imagepolicy\": \"app:tag\"}\n";
        let out = rewrite(values, &latest(false));
        assert_eq!(
            out.text,
            "image:\n  repository: registry.example.com/team/app # {\"$imagepolicy\": \"app:name\"}\n  tag: 1.3.0   # {\"$imagepolicy\": \"app:tag\"}\n"
        );
        let kustomization = "images:\n- name: app\n  newName: registry.example.com/team/app # {\"$imagepolicy\": \"flux-system:app:name\"}\n  newTag: '1.2.0' # {\"$imagepolicy\": \"flux-system:app:tag\"}\n";
        let out = rewrite(kustomization, &latest(true));
        assert_eq!(out.changes.len(), 1);
        assert!(
            out.text.contains("newTag: '1.3.0@sha256:abcd' #"),
            "{}",
            out.text
        );
    }

    #[test]
    fn digests_pin_and_markers_naming_no_policy_are_reported() {
        let text = "- image: x:1 # {\"$imagepolicy\": \"app\"}\n- digest: none # {\"$imagepolicy\": \"app:digest\"}\n- image: y:1 # {\"$imagepolicy\": \"ns:other\"}\n";
        let out = rewrite(text, &latest(true));
        assert!(
            out.text
                .starts_with("- image: registry.example.com/team/app:1.3.0@sha256:abcd #")
        );
        assert!(out.text.contains("- digest: sha256:abcd #"));
        assert_eq!(out.unknown, vec![(3, "other".to_owned())]);
    }

    /// Shapes found in public Flux repositories: a kustomize Component with
    /// tag and digest markers, a HelmRelease's values with name, tag and
    /// digest, two spaces before the comment, a quoted timestamp tag.
    #[test]
    fn markers_as_flux_repositories_write_them() {
        let latest = BTreeMap::from([(
            "web".to_owned(),
            Latest {
                repository: "registry.example.com/team/web".into(),
                tag: "1800000000-0a1b2c3".into(),
                digest: Some(format!("sha256:{}", "b".repeat(64))),
                pin: false,
            },
        )]);
        let component = format!(
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nimages:\n  - name: registry.example.com/team/web\n    newTag: 1700000000-9f8e7d6 # {{\"$imagepolicy\": \"flux-system:web:tag\"}}\n    digest: sha256:{} # {{\"$imagepolicy\": \"flux-system:web:digest\"}}\n",
            "a".repeat(64)
        );
        let out = rewrite(&component, &latest);
        assert_eq!(out.changes.len(), 2, "{out:?}");
        assert!(out.text.contains("newTag: 1800000000-0a1b2c3 #"));
        assert!(
            out.text
                .contains(&format!("digest: sha256:{} #", "b".repeat(64)))
        );
        let release = "spec:\n  values:\n    image:\n      repository: docker.io/team/web # {\"$imagepolicy\": \"flux-system:web:name\"}\n      tag: \"1700000000-9f8e7d6\"  # {\"$imagepolicy\": \"flux-system:web:tag\"}\n";
        let out = rewrite(release, &latest);
        assert_eq!(
            out.text,
            "spec:\n  values:\n    image:\n      repository: registry.example.com/team/web # {\"$imagepolicy\": \"flux-system:web:name\"}\n      tag: \"1800000000-0a1b2c3\"  # {\"$imagepolicy\": \"flux-system:web:tag\"}\n"
        );
        // Text after the marker: not a marker (Flux does not read it either).
        let annotated = "image: web:0 # {\"$imagepolicy\": \"flux-system:web\"} <=== add this\n";
        assert_eq!(rewrite(annotated, &latest).text, annotated);
    }

    #[test]
    fn what_is_not_a_marker_is_left_alone() {
        let text = "a: b#{\"$imagepolicy\": \"app\"}\nc: d # {\"$imagepolicy\": 3}\ne: f # {\"$imagepolicy\": \"app\"\ng: |  # {\"$imagepolicy\": \"app\"}\n";
        let out = rewrite(text, &latest(false));
        assert_eq!(out.text, text);
        assert_eq!(out.unplaced, vec![4]);
        assert_eq!(markers(text).len(), 1);
    }
}
