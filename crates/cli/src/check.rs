//! `kas config check FILE...`: validates agent config files (and
//! `.tether/image-updates.yaml` and `.tether/rollout.yaml`, told by their
//! names) locally, with the same parsers kas runs, for a CI job or a
//! pre-commit hook. Every problem and warning is printed with its place, as
//! `file:line:column: error|warning: path: message`; the exit status is
//! non-zero only when a file would be refused.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::Serialize;
use tether_agent_config::{ConfigError, MAX_CONFIG_BYTES};

use super::Output;

/// One finding, as printed.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// `error` refuses the file; `warning` does not.
    pub severity: &'static str,
    /// Where in the config, e.g. `gitops.manifest_projects[0].paths[1].glob`.
    pub path: Option<String>,
    pub message: String,
}

/// Checks each file (`-` is standard input); returns whether all passed.
pub fn run(files: &[PathBuf], output: Output, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut findings = Vec::new();
    for file in files {
        findings.extend(check(file));
    }
    let ok = findings.iter().all(|f| f.severity != "error");
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &findings)?;
            writeln!(out)?;
        }
        Output::Text => {
            for f in &findings {
                let mut place = f.file.clone();
                if let Some(line) = f.line {
                    place.push_str(&format!(":{line}"));
                    if let Some(column) = f.column {
                        place.push_str(&format!(":{column}"));
                    }
                }
                let path = f
                    .path
                    .as_deref()
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default();
                writeln!(out, "{place}: {}: {path}{}", f.severity, f.message)?;
            }
            let errors = findings.iter().filter(|f| f.severity == "error").count();
            writeln!(
                out,
                "{} file(s) checked: {errors} error(s), {} warning(s)",
                files.len(),
                findings.len() - errors
            )?;
        }
    }
    Ok(ok)
}

/// Everything wrong with one file.
fn check(file: &PathBuf) -> Vec<Finding> {
    let name = file.display().to_string();
    let finding = |severity, path: Option<String>, line, column, message: String| Finding {
        file: name.clone(),
        line,
        column,
        severity,
        path,
        message,
    };
    let text = match read(file) {
        Ok(text) => text,
        Err(message) => return vec![finding("error", None, None, None, message)],
    };
    let parsed = match file.file_name().and_then(|n| n.to_str()) {
        Some("image-updates.yaml") => {
            tether_agent_config::image_updates::parse(&text).map(|(_, warnings)| warnings)
        }
        Some("rollout.yaml") => {
            tether_agent_config::rollout::parse(&text).map(|(_, warnings)| warnings)
        }
        _ => tether_agent_config::parse(&text).map(|parsed| parsed.warnings),
    };
    match parsed {
        Ok(warnings) => warnings
            .into_iter()
            .map(|w| finding("warning", Some(w.path), w.line, w.column, w.message))
            .collect(),
        Err(ConfigError::Invalid(problems)) => problems
            .into_iter()
            .map(|p| finding("error", Some(p.path), p.line, p.column, p.message))
            .collect(),
        Err(ConfigError::Syntax {
            line,
            column,
            message,
        }) => vec![finding("error", None, line, column, message)],
        Err(e) => vec![finding("error", None, None, None, e.to_string())],
    }
}

/// The file's text, read no further than the size limit allows.
fn read(file: &PathBuf) -> Result<String, String> {
    let mut bytes = Vec::new();
    let limit = MAX_CONFIG_BYTES as u64 + 1;
    let result = if file.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    result.map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the file is larger than the limit of {MAX_CONFIG_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_name_that_climbs_out_is_an_error_at_its_place() {
        let dir = tempfile::tempdir().expect("a folder");
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "gitops:\n  manifest_projects:\n  - id: team/app\n    helm_charts:\n    - repository: https://charts.example.com\n      chart: ../../../var/lib/kas/x\n      version: 1.0.0\n      release_name: web\n",
        )
        .expect("written");
        let mut out = Vec::new();

        let ok = run(std::slice::from_ref(&file), Output::Text, &mut out).expect("checked");

        let printed = String::from_utf8(out).expect("text");
        assert!(!ok, "refused: {printed}");
        let expected = format!(
            "{}:6:14: error: gitops.manifest_projects[0].helm_charts[0].chart: \"../../../var/lib/kas/x\" is not a chart name",
            file.display()
        );
        assert!(printed.contains(&expected), "{printed}");
    }

    /// `name` holding `text` is refused, with a problem at line 4 whose
    /// path holds `field`.
    fn refused_at_line_4(name: &str, text: &str, field: &str) {
        let dir = tempfile::tempdir().expect("a folder");
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("written");
        let mut out = Vec::new();
        let ok = run(std::slice::from_ref(&file), Output::Text, &mut out).expect("checked");
        let printed = String::from_utf8(out).expect("text");
        assert!(!ok, "refused: {printed}");
        assert!(
            printed.contains(&format!("{}:4:", file.display())) && printed.contains(field),
            "{printed}"
        );
    }

    #[test]
    fn an_image_updates_file_is_checked_as_one() {
        refused_at_line_4(
            "image-updates.yaml",
            "images:\n  - name: app\n    repository: ghcr.io/team/app\n    policy: {semver: {range: '>=1.0 <x'}}\n",
            "images[0].policy.semver.range",
        );
    }

    #[test]
    fn a_rollout_file_is_checked_as_one() {
        refused_at_line_4(
            "rollout.yaml",
            "waves:\n  - name: canary\n    agents: {match_labels: {env: canary}}\n    max_parallel: 150%\n",
            "waves[0].max_parallel",
        );
    }
}
