//! `kas config check`, the real binary, on the corpus of GitLab-style
//! configs and on files with problems: what a CI job or pre-commit hook sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tether_e2e::kas_binary;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent-config/tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn check(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(kas_binary())
        .args(["config", "check"])
        .args(args)
        .args(files)
        .output()
        .expect("kas runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_accepted_corpus_file_passes_with_its_warnings_placed() {
    let files = corpus("accepted");
    let out = check(&[], &files);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    // The placeholder ids warn, at their own lines.
    assert!(
        text.contains("placeholder-ids.yaml:5:9: warning: gitops.manifest_projects[0].id:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} file(s) checked: 0 error(s)", files.len())),
        "{text}"
    );
}

#[test]
fn a_refused_file_fails_the_check_and_names_file_line_and_column() {
    let files = corpus("refused");
    for file in &files {
        let out = check(&[], std::slice::from_ref(file));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {text}", file.display());
        let first = std::fs::read_to_string(file).expect("read");
        let line = first
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# refused at line "))
            .expect("expectation");
        assert!(
            text.contains(&format!("{}:{line}:", file.display())) && text.contains(": error: "),
            "{}: {text}",
            file.display()
        );
    }
}

#[test]
fn warnings_alone_exit_zero_and_json_lists_every_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("config.yaml");
    std::fs::write(
        &good,
        "gitops:\n  manifest_projects:\n  - id: team/app\n    colour: blue\n",
    )
    .expect("write");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "gitops:\n  manifest_projects:\n  - id: ''\n").expect("write");
    let out = check(&["-o", "json"], &[good.clone(), bad.clone()]);
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert_eq!(findings[0]["severity"], "warning");
    assert_eq!(findings[0]["line"], 4);
    assert_eq!(findings[1]["severity"], "error");
    assert_eq!(findings[1]["path"], "gitops.manifest_projects[0].id");

    let out = check(&[], &[good]);
    assert!(out.status.success(), "{}", stdout(&out));
    let missing = check(&[], &[dir.path().join("missing.yaml")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stdout(&missing).contains("cannot read the file"));
}
