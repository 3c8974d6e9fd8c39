//! What can be wrong with a config file. Every problem names where it is, so
//! that the agent's page in the API can point the user at the line to fix.

use std::fmt;

/// Why a config file was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("config file is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },

    /// The YAML does not parse, or does not fit the schema's types.
    #[error("{}{message}", location(*line, *column))]
    Syntax {
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// The file parsed, but some values are not acceptable.
    #[error("{}", problems(.0))]
    Invalid(Vec<Problem>),
}

/// One value GitLab's agent would refuse too: the whole file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `gitops.manifest_projects[0].paths[1].glob`.
    pub path: String,
    /// 1-based line and column of the value, or of its nearest written parent.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

/// Something accepted but worth the user's attention: an unknown field, a
/// section Tether does not act on, or a value Tether reads differently from
/// what the user may expect (a project id that can match nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

// === impl ConfigError ===

impl ConfigError {
    pub(crate) fn syntax(e: &serde_saphyr::Error) -> Self {
        let location = e.location();
        let (line, column) = match location {
            Some(l) => (Some(l.line() as usize), Some(l.column() as usize)),
            None => (None, None),
        };
        // The parser's text repeats the location and appends a source
        // snippet; keep only the message itself, our Display adds the place.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let mut message = first.strip_prefix("error: ").unwrap_or(first);
        if let (Some(l), Some(c)) = (line, column) {
            message = message
                .strip_prefix(&format!("line {l} column {c}: "))
                .unwrap_or(message);
        }
        ConfigError::Syntax {
            line,
            column,
            message: message.to_owned(),
        }
    }

    /// The first line the error points at, if it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } => *line,
            ConfigError::Invalid(problems) => problems.iter().find_map(|p| p.line),
            ConfigError::TooLarge { .. } => None,
        }
    }

    /// The first column the error points at, if it has one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { column, .. } => *column,
            ConfigError::Invalid(problems) => problems.iter().find(|p| p.line.is_some())?.column,
            ConfigError::TooLarge { .. } => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = location(self.line, self.column);
        write!(f, "{at}{}: {}", self.path, self.message)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = location(self.line, self.column);
        write!(f, "{at}{}: {}", self.path, self.message)
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l} column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

fn problems(list: &[Problem]) -> String {
    let items: Vec<String> = list.iter().map(Problem::to_string).collect();
    format!("{} invalid value(s): {}", list.len(), items.join("; "))
}
