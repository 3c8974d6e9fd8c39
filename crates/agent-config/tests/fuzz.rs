//! Property-based fuzzing of the config parser: arbitrary bytes and
//! YAML-shaped text never panic, never hang, and every refusal names a
//! place. `TETHER_FUZZ_CASES` sets the cases per property (CI runs a short
//! smoke; RELIABILITY.md records the long runs and the coverage-guided ones
//! under `fuzz/`).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tether_agent_config::{ConfigError, parse};

fn cases() -> u32 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// Each case must finish well inside this: a parser that hangs fails.
const CASE_LIMIT: Duration = Duration::from_secs(5);

fn checked(text: &str) {
    let started = Instant::now();
    let result = parse(text);
    assert!(
        started.elapsed() < CASE_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    if let Err(ConfigError::Invalid(problems)) = result {
        assert!(problems.iter().all(|p| !p.path.is_empty()), "{problems:?}");
    }
}

/// YAML made of the schema's own keys, in random shapes.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "gitops",
        "manifest_projects",
        "id",
        "paths",
        "glob",
        "ref",
        "branch",
        "tag",
        "commit",
        "default_namespace",
        "ci_access",
        "projects",
        "groups",
        "access_as",
        "impersonate",
        "username",
        "user_access",
        "observability",
        "logging",
        "level",
        "prune",
        "<<",
        "x",
    ]);
    let scalar = prop::sample::select(vec![
        "''",
        "a/b",
        "'/**/*.yaml'",
        "true",
        "1h",
        "~",
        "[]",
        "{}",
        "&a x",
        "*a",
        "- 1",
        "\"\\u0000\"",
        "!!binary aGk=",
        "'../x'",
        "ns",
        "12345678901234567890",
    ]);
    prop::collection::vec((0usize..6, key, scalar, any::<bool>()), 0..30).prop_map(|lines| {
        let mut text = String::new();
        for (indent, key, scalar, dash) in lines {
            text.push_str(&" ".repeat(indent * 2));
            if dash {
                text.push_str("- ");
            }
            text.push_str(&format!("{key}: {scalar}\n"));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        checked(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in yamlish()) {
        checked(&text);
    }
}
