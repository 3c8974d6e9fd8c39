//! Property-based fuzzing of what agentk decodes from untrusted git
//! content: the manifest parser (arbitrary bytes, YAML-shaped documents,
//! alias bombs) and the inventory key codec (round trip in cli-utils'
//! format; arbitrary keys never panic). `TETHER_FUZZ_CASES` sets the cases.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tether_gitops::inventory::ObjRef;
use tether_gitops::manifest::{Limits, ManifestFile, parse};

fn cases() -> u32 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

const CASE_LIMIT: Duration = Duration::from_secs(5);

fn checked(files: &[ManifestFile]) {
    let started = Instant::now();
    let result = parse(files, &Limits::default());
    assert!(
        started.elapsed() < CASE_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    if let Err(problems) = result {
        assert!(!problems.is_empty(), "a refusal says why");
        for p in &problems {
            assert!(!p.to_string().is_empty());
        }
    }
}

fn file(bytes: Vec<u8>) -> ManifestFile {
    ManifestFile {
        path: "manifests/fuzz.yaml".into(),
        bytes,
    }
}

fn manifestish() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "---",
        "apiVersion: v1",
        "apiVersion: apps/v1",
        "kind: ConfigMap",
        "kind: List",
        "kind: Namespace",
        "metadata:",
        "  name: a",
        "  name: ''",
        "  namespace: b",
        "items:",
        "- kind: ConfigMap",
        "  metadata: {name: x}",
        "data: {a: b}",
        "&a [1, 2]",
        "x: *a",
        "<<: *a",
        "spec: !!str 5",
        "{",
        "]",
        "\t",
        "...",
        "%YAML 1.2",
        "null",
    ]);
    prop::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

/// Names as RBAC writes them: letters, digits, `-`, `.`, `:` and single
/// `_` (cli-utils' format cannot tell `__` in a name from an encoded `:`).
fn rbac_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9.:-]|_[a-z0-9]){0,30}".prop_filter("no colon next to an underscore", |n| {
        !n.contains(":_") && !n.contains("_:")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..8192)) {
        checked(&[file(bytes)]);
    }

    #[test]
    fn manifest_shaped_text_never_panics(text in manifestish()) {
        checked(&[file(text.into_bytes())]);
    }

    #[test]
    fn inventory_keys_round_trip(
        namespace in "([a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?)?",
        name in rbac_name(),
        group in "([a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?)?",
        kind in "[A-Z][A-Za-z0-9]{0,20}",
    ) {
        let object = ObjRef { group, kind, namespace, name };
        let key = object.encode();
        prop_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')), "{key}");
        prop_assert_eq!(ObjRef::decode(&key), Some(object));
    }

    #[test]
    fn arbitrary_inventory_keys_never_panic(key in "\\PC{0,80}") {
        if let Some(object) = ObjRef::decode(&key) {
            prop_assert!(!object.name.is_empty() && !object.kind.is_empty());
        }
    }
}

proptest! {
    // Each case replays up to the alias limit before it fails: a tenth of
    // the cases covers the shapes.
    #![proptest_config(ProptestConfig { cases: (cases() / 10).max(10), ..ProptestConfig::default() })]

    #[test]
    fn nested_aliases_fail_fast(depth in 1usize..12, width in 1usize..12) {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..depth {
            let refs = vec![format!("*a{}", i - 1); width].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        checked(&[file(text.into_bytes())]);
    }
}
