//! `config.kubernetes.io/depends-on`, as cli-utils reads it: an object is
//! applied only after the objects it names are applied and Current.
//!
//! Each reference is `<group>/namespaces/<namespace>/<kind>/<name>` for a
//! namespaced object or `<group>/<kind>/<name>` for a cluster-scoped one
//! (the core group is empty), several separated by commas. Objects are put
//! in waves: wave 0 depends on nothing in the set, wave n on objects of
//! earlier waves. A cycle fails the whole set before anything is applied.

use std::collections::HashMap;

use serde_json::Value;

use crate::inventory::ObjRef;
use crate::manifest::Object;

pub const DEPENDS_ON_ANNOTATION: &str = "config.kubernetes.io/depends-on";

/// A reference in a depends-on annotation that names no object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: cannot read {reference:?}", DEPENDS_ON_ANNOTATION)]
pub struct UnreadableReference {
    pub reference: String,
}

/// The objects `object` depends on, or why its annotation is unreadable.
pub fn dependencies(object: &Object) -> Result<Vec<ObjRef>, UnreadableReference> {
    let Some(text) = object
        .body
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(DEPENDS_ON_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            parse(r).ok_or_else(|| UnreadableReference {
                reference: r.to_owned(),
            })
        })
        .collect()
}

fn parse(reference: &str) -> Option<ObjRef> {
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [group, "namespaces", namespace, kind, name] => Some(ObjRef {
            group: (*group).to_owned(),
            kind: (*kind).to_owned(),
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        }),
        [group, kind, name] => Some(ObjRef {
            group: (*group).to_owned(),
            kind: (*kind).to_owned(),
            namespace: String::new(),
            name: (*name).to_owned(),
        }),
        _ => None,
    }
    .filter(|r| !r.kind.is_empty() && !r.name.is_empty())
}

/// The wave of each object (by index), or the problems: unreadable
/// annotations and cycles. Dependencies outside the set are not waited for.
pub fn waves(objects: &[Object]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<ObjRef, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (ObjRef::from_key(&o.key), i))
        .collect();
    let mut problems = Vec::new();
    let deps: Vec<Vec<usize>> = objects
        .iter()
        .map(|o| match dependencies(o) {
            Ok(refs) => refs.iter().filter_map(|r| index.get(r).copied()).collect(),
            Err(e) => {
                problems.push(format!("{}: {e}", o.location));
                Vec::new()
            }
        })
        .collect();
    // Depth-first, with the path on a stack to find cycles.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done(usize),
    }
    fn visit(i: usize, deps: &[Vec<usize>], marks: &mut [Mark]) -> Result<usize, usize> {
        match marks[i] {
            Mark::Done(wave) => return Ok(wave),
            Mark::Active => return Err(i),
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        let mut wave = 0;
        for &d in &deps[i] {
            wave = wave.max(visit(d, deps, marks)? + 1);
        }
        marks[i] = Mark::Done(wave);
        Ok(wave)
    }
    let mut marks = vec![Mark::New; objects.len()];
    let mut waves = vec![0; objects.len()];
    for i in 0..objects.len() {
        match visit(i, &deps, &mut marks) {
            Ok(wave) => waves[i] = wave,
            Err(at) => {
                problems.push(format!(
                    "{}: {DEPENDS_ON_ANNOTATION} forms a cycle through {}",
                    objects[i].location, objects[at].key
                ));
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(waves)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Limits, ManifestFile, parse as parse_manifests};

    fn objects(text: &str) -> Vec<Object> {
        parse_manifests(
            &[ManifestFile {
                path: "m.yaml".into(),
                bytes: text.as_bytes().to_vec(),
            }],
            &Limits::default(),
        )
        .expect("valid")
    }

    #[test]
    fn dependents_come_in_later_waves_and_cycles_are_refused() {
        let set = objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: ns\n  annotations: {config.kubernetes.io/depends-on: '/namespaces/ns/Secret/db, apps/Deployment/unrelated'}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: ns\n  annotations: {config.kubernetes.io/depends-on: 'apiextensions.k8s.io/CustomResourceDefinition/x.test'}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.test}\n",
        );
        assert_eq!(waves(&set).expect("no cycle"), [2, 1, 0]);
        let cycle = objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: ns\n  annotations: {config.kubernetes.io/depends-on: /namespaces/ns/ConfigMap/b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: ns\n  annotations: {config.kubernetes.io/depends-on: /namespaces/ns/ConfigMap/a}\n",
        );
        let problems = waves(&cycle).expect_err("cycle");
        assert!(problems[0].contains("forms a cycle"), "{problems:?}");
        let bad = objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {config.kubernetes.io/depends-on: nonsense}\n",
        );
        assert!(waves(&bad).expect_err("unreadable")[0].contains("cannot read"));
    }
}
