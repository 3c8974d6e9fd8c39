//! What validation finds, with the checks that several sections share
//! (ids, namespaces): problems refuse the file, warnings do not.

use crate::error::{Problem, Warning};
use crate::names::{dns_label_problem, validate_project_id};

/// What validation found: problems refuse the file, warnings do not.
#[derive(Default)]
pub(crate) struct Findings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Warning>,
}

impl Findings {
    pub(crate) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        });
    }

    /// GitLab requires an id and puts no other limit on it: an id that
    /// names no project simply matches nothing. Tether's project ids are
    /// narrower (they become folder names), so an id outside them can never
    /// match; say so, and go on.
    pub(crate) fn check_id(&mut self, path: &str, id: &str) {
        if id.is_empty() {
            self.problem(path, "id is empty");
        } else if let Err(reason) = validate_project_id(id) {
            self.warn(
                path,
                format!("{reason}, so it names no project kas can register and matches nothing"),
            );
        }
    }

    pub(crate) fn check_namespace(&mut self, path: &str, namespace: &str) {
        if let Some(reason) = dns_label_problem(namespace) {
            self.warn(
                path,
                format!(
                    "namespace {namespace:?} is not a valid Kubernetes namespace ({reason}); \
                     objects placed in it will be refused by the API server"
                ),
            );
        }
    }
}
