//! Manifests to objects: every problem found at once with its place, bombs
//! and oversized files refused before they cost memory.

use std::time::{Duration, Instant};

use tether_gitops::manifest::{Limits, ManifestError, ManifestFile, parse};

fn file(path: &str, text: &str) -> ManifestFile {
    ManifestFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

#[test]
fn multi_document_yaml_json_and_lists_become_objects() {
    let objects = parse(
        &[
            file(
                "app/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\n# empty\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\n",
            ),
            file(
                "app/b.json",
                r#"{"apiVersion":"v1","kind":"List","items":[
                    {"apiVersion":"v1","kind":"Service","metadata":{"name":"web"}},
                    {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}"#,
            ),
        ],
        &Limits::default(),
    )
    .expect("valid");
    let keys: Vec<String> = objects.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "ConfigMap one",
            "Deployment.apps prod/web",
            "Service web",
            "Secret s"
        ]
    );
    assert_eq!(
        objects[1].location.document, 1,
        "empty documents are not counted"
    );
    assert_eq!(objects[3].location.item, Some(1));
    assert_eq!(
        objects[3].location.to_string(),
        "app/b.json document 0 item 1"
    );
}

#[test]
fn every_problem_is_reported_with_its_file_and_document() {
    let errors = parse(
        &[
            file("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nkind: Secret\nmetadata: {name: y}\n"),
            file("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\n- just\n- a list\n"),
            file("c.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n"),
        ],
        &Limits::default(),
    )
    .expect_err("invalid");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with("a.yaml document 1: apiVersion is missing")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.starts_with("b.yaml document 1: a document must be a mapping")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.starts_with("c.yaml line")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e == "ConfigMap x is defined twice: a.yaml document 0 and b.yaml document 0"),
        "{text:?}"
    );
}

#[test]
fn a_billion_laughs_fails_fast_with_a_clear_error() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let started = Instant::now();
    let errors = parse(&[file("bomb.yaml", &bomb)], &Limits::default()).expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(&errors[0], ManifestError::Syntax { file, .. } if file == "bomb.yaml"),
        "{errors:?}"
    );
}

#[test]
fn an_oversized_file_is_refused_before_it_is_parsed() {
    let big = ManifestFile {
        path: "big.yaml".into(),
        bytes: vec![b'#'; 100 << 20],
    };
    let errors = parse(&[big], &Limits::default()).expect_err("refused");
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, ManifestError::FileTooLarge { size, .. } if *size == 100 << 20)),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().starts_with("big.yaml: 104857600 bytes")),
        "{errors:?}"
    );
}

#[test]
fn setting_a_namespace_updates_key_and_body() {
    let mut objects = parse(
        &[file(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )],
        &Limits::default(),
    )
    .expect("valid");
    objects[0].set_namespace("team");
    assert_eq!(objects[0].key.namespace.as_deref(), Some("team"));
    assert_eq!(objects[0].body["metadata"]["namespace"], "team");
}
