//! Where each value of a config file is written, so that a problem found
//! after parsing (an empty glob, an unknown field) can name its line and
//! column like a syntax error does.
//!
//! Best effort by design: it walks the first document's YAML events once and
//! records the position of every key and value under the same path syntax
//! the problems use (`gitops.manifest_projects[0].paths[1].glob`). A path it
//! cannot find falls back to its nearest recorded parent; a file that does
//! not scan yields no locations (the parser's own error already has one).

use std::collections::HashMap;

use granit_parser::{Event, Parser};

/// 1-based line and column of each path in a file.
#[derive(Debug, Default)]
pub(crate) struct Locations(HashMap<String, (usize, usize)>);

enum Frame {
    /// A mapping: the key whose value comes next, if a key was read.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

impl Locations {
    /// Records the position of every node of the first document of `text`.
    pub(crate) fn scan(text: &str) -> Self {
        let mut found = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut started = false;
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let at = (span.start.line(), span.start.col() + 1);
            match event {
                Event::DocumentStart(..) if started => break,
                Event::DocumentStart(..) => started = true,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        // A key: its place stands for the field until the
                        // value says more precisely.
                        let child = join_key(path, &value);
                        found.insert(child, at);
                        *key = Some(value.into_owned());
                        continue;
                    }
                    if let Some(path) = value_path(&mut stack) {
                        found.insert(path, at);
                    }
                }
                Event::Alias(_) => {
                    if let Some(path) = value_path(&mut stack) {
                        found.entry(path).or_insert(at);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = if stack.is_empty() {
                        String::new()
                    } else {
                        let Some(path) = value_path(&mut stack) else {
                            // A collection used as a mapping key: nothing
                            // in the schema does that; stop locating.
                            break;
                        };
                        found.entry(path.clone()).or_insert(at);
                        path
                    };
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, index: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Locations(found)
    }

    /// Line and column of `path`, or of its nearest located parent.
    /// Whether the file holds `path` itself (not only a parent of it).
    pub(crate) fn holds(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }

    /// Sets each problem's line and column from its path.
    pub(crate) fn place_problems(&self, problems: &mut [crate::error::Problem]) {
        for problem in problems {
            (problem.line, problem.column) = crate::split(self.find(&problem.path));
        }
    }

    /// Sets each warning's line and column from its path.
    pub(crate) fn place_warnings(&self, warnings: &mut [crate::error::Warning]) {
        for warning in warnings {
            (warning.line, warning.column) = crate::split(self.find(&warning.path));
        }
    }

    pub(crate) fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(at) = self.0.get(path) {
                return Some(*at);
            }
            path = parent(path)?;
        }
    }
}

/// The path of the value the innermost collection expects next, advancing
/// that collection past it. `None` when the value would be a mapping key.
fn value_path(stack: &mut [Frame]) -> Option<String> {
    match stack.last_mut()? {
        Frame::Map { path, key } => {
            let key = key.take()?;
            Some(join_key(path, &key))
        }
        Frame::Seq { path, index } => {
            let child = format!("{path}[{index}]");
            *index += 1;
            Some(child)
        }
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b[0].c` → `a.b[0]` → `a.b` → `a` → none.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// Each field serde ignored, as a warning (placed later, with the rest).
pub(crate) fn unknown_fields(unknown: Vec<String>) -> Vec<crate::error::Warning> {
    unknown
        .into_iter()
        .map(|path| crate::error::Warning {
            message: format!("unknown field {path} is ignored"),
            path,
            line: None,
            column: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_values_and_items() {
        let text = "gitops:\n  manifest_projects:\n  - id: a/b\n    paths:\n    - glob: ''\n    -   glob: x\n";
        let at = Locations::scan(text);
        assert_eq!(at.find("gitops"), Some((1, 1)));
        assert_eq!(at.find("gitops.manifest_projects[0].id"), Some((3, 9)));
        assert_eq!(
            at.find("gitops.manifest_projects[0].paths[0].glob"),
            Some((5, 13))
        );
        assert_eq!(
            at.find("gitops.manifest_projects[0].paths[1].glob"),
            Some((6, 15))
        );
        // Not written: the nearest parent that is.
        assert_eq!(
            at.find("gitops.manifest_projects[0].paths[1].glob.extra"),
            Some((6, 15))
        );
        assert_eq!(at.find("nowhere"), None);
    }

    #[test]
    fn flow_maps_and_crlf_are_located() {
        let text = "ci_access:\r\n  projects: [ { id: '' } ]\r\n";
        let at = Locations::scan(text);
        assert_eq!(at.find("ci_access.projects[0].id"), Some((2, 21)));
    }
}
