//! Manifest files to Kubernetes objects, under bounds: a file over its size
//! limit is refused before it is read, and a YAML alias bomb exhausts the
//! parser's budget long before it exhausts memory.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// One manifest file as read from git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path in the repository, e.g. `manifests/app/deploy.yaml`.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Bounds on what one sync may read, as the GitLab agent sets them for a
/// manifest project.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_file_bytes: usize,
    pub max_total_bytes: usize,
    pub max_files: usize,
    /// Documents in one file.
    pub max_documents: usize,
    /// Nesting depth of one document.
    pub max_depth: usize,
    /// Alias uses in one YAML file.
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 5 << 20,
            max_total_bytes: 20 << 20,
            max_files: 1_000,
            max_documents: 10_000,
            max_depth: 64,
            max_aliases: 1_000,
        }
    }
}

/// Where an object was written: file and document index (from 0), and the
/// item index when it came from a `List`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: String,
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// What makes an object itself: group, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `""` for the core group.
    pub group: String,
    pub kind: String,
    /// `None` when the manifest gives none (cluster-scoped, or to be
    /// defaulted).
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{}{group} {ns}/{}", self.kind, self.name),
            None => write!(f, "{}{group} {}", self.kind, self.name),
        }
    }
}

/// An object from a manifest, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub key: ObjectKey,
    pub api_version: String,
    pub location: Location,
    pub body: Map<String, Value>,
}

impl Object {
    /// Sets the namespace (a namespaced object that had none).
    pub fn set_namespace(&mut self, namespace: &str) {
        self.key.namespace = Some(namespace.to_owned());
        if let Some(Value::Object(meta)) = self.body.get_mut("metadata") {
            meta.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
    }
}

/// Why a set of manifests cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {size} bytes, more than the limit of {limit} for one file")]
    FileTooLarge {
        file: String,
        size: usize,
        limit: usize,
    },
    #[error("the manifests total more than {limit} bytes")]
    TotalTooLarge { limit: usize },
    #[error("{count} files match, more than the limit of {limit}")]
    TooManyFiles { count: usize, limit: usize },
    #[error("{file}: not UTF-8 text")]
    NotText { file: String },
    #[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    #[error("{key} is defined twice: {first} and {second}")]
    Duplicate {
        key: Box<ObjectKey>,
        first: Box<Location>,
        second: Box<Location>,
    },
}

/// Parses every file and checks the set; returns every problem at once, so
/// a user fixes a broken commit in one go.
pub fn parse(files: &[ManifestFile], limits: &Limits) -> Result<Vec<Object>, Vec<ManifestError>> {
    let mut problems = Vec::new();
    if files.len() > limits.max_files {
        return Err(vec![ManifestError::TooManyFiles {
            count: files.len(),
            limit: limits.max_files,
        }]);
    }
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    if total > limits.max_total_bytes {
        problems.push(ManifestError::TotalTooLarge {
            limit: limits.max_total_bytes,
        });
    }
    let mut objects = Vec::new();
    for file in files {
        match documents(file, limits) {
            Ok(docs) => {
                for (index, doc) in docs.into_iter().enumerate() {
                    let location = Location {
                        file: file.path.clone(),
                        document: index,
                        item: None,
                    };
                    collect(doc, location, &mut objects, &mut problems);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    problems.extend(duplicates(&objects));
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

/// Every object defined more than once (run again after namespaces are
/// defaulted: two objects may only collide then).
pub fn duplicates(objects: &[Object]) -> Vec<ManifestError> {
    let mut seen: HashMap<&ObjectKey, &Location> = HashMap::new();
    let mut problems = Vec::new();
    for o in objects {
        if let Some(first) = seen.insert(&o.key, &o.location) {
            problems.push(ManifestError::Duplicate {
                key: Box::new(o.key.clone()),
                first: Box::new(first.clone()),
                second: Box::new(o.location.clone()),
            });
            seen.insert(&o.key, first);
        }
    }
    problems
}

fn documents(file: &ManifestFile, limits: &Limits) -> Result<Vec<Value>, ManifestError> {
    if file.bytes.len() > limits.max_file_bytes {
        return Err(ManifestError::FileTooLarge {
            file: file.path.clone(),
            size: file.bytes.len(),
            limit: limits.max_file_bytes,
        });
    }
    let text = std::str::from_utf8(&file.bytes).map_err(|_| ManifestError::NotText {
        file: file.path.clone(),
    })?;
    let docs: Vec<Value> = if file.path.ends_with(".json") {
        let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.path.clone(),
            line: Some(e.line()),
            message: e.to_string(),
        })?;
        vec![value]
    } else {
        serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options(limits)).map_err(
            |e| ManifestError::Syntax {
                file: file.path.clone(),
                line: e.location().map(|l| l.line() as usize),
                message: e.to_string().lines().next().unwrap_or_default().to_owned(),
            },
        )?
    };
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.len() > limits.max_documents {
        return Err(ManifestError::Syntax {
            file: file.path.clone(),
            line: None,
            message: format!(
                "{} documents, more than the limit of {}",
                docs.len(),
                limits.max_documents
            ),
        });
    }
    if let Some(index) = docs.iter().position(|d| depth(d) > limits.max_depth) {
        return Err(ManifestError::Invalid {
            location: Location {
                file: file.path.clone(),
                document: index,
                item: None,
            },
            message: format!("nested deeper than {} levels", limits.max_depth),
        });
    }
    Ok(docs)
}

fn yaml_options(limits: &Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(limits.max_file_bytes);
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_depth = limits.max_depth;
    budget.max_documents = limits.max_documents;
    // Enough for the largest legitimate file, far below what an alias bomb
    // would expand to.
    budget.max_nodes = 2_000_000;
    budget.max_events = 4_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // What aliases may expand to in all: generous for anchors that share an
    // env block or labels, small enough that a nested-alias file fails in
    // milliseconds instead of replaying millions of events first.
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    options
}

/// Events all aliases of one file may replay together.
const MAX_REPLAYED_EVENTS: usize = 100_000;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn collect(
    doc: Value,
    location: Location,
    objects: &mut Vec<Object>,
    problems: &mut Vec<ManifestError>,
) {
    let invalid = |message: String| ManifestError::Invalid {
        location: location.clone(),
        message,
    };
    let Value::Object(mut body) = doc else {
        problems.push(invalid(
            "a document must be a mapping (a Kubernetes object)".into(),
        ));
        return;
    };
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    let is_list = kind.ends_with("List") && location.item.is_none();
    if is_list && let Some(Value::Array(items)) = body.remove("items") {
        for (i, item) in items.into_iter().enumerate() {
            let location = Location {
                item: Some(i),
                ..location.clone()
            };
            collect(item, location, objects, problems);
        }
        return;
    }
    match identity(&body) {
        Ok((key, api_version)) => objects.push(Object {
            key,
            api_version,
            location,
            body,
        }),
        Err(unnamed) => problems.push(invalid(unnamed.to_string())),
    }
}

/// A field of an object's identity that is not a non-empty string.
#[derive(Debug, thiserror::Error)]
enum FieldError {
    #[error("{0} must be a non-empty string")]
    NotAString(&'static str),
    #[error("{0} is missing")]
    Missing(&'static str),
}

/// Why a document does not say which object it is.
#[derive(Debug, thiserror::Error)]
enum IdentityError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{kind}: metadata is missing")]
    NoMetadata { kind: String },
    #[error("{kind}: {source} (server-side apply needs a name)")]
    Name {
        kind: String,
        #[source]
        source: FieldError,
    },
    #[error("{kind} {name}: metadata.namespace must be a string")]
    Namespace { kind: String, name: String },
}

/// The non-empty string `field` holds.
fn text(value: Option<&Value>, field: &'static str) -> Result<String, FieldError> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(FieldError::NotAString(field)),
        None => Err(FieldError::Missing(field)),
    }
}

fn identity(body: &Map<String, Value>) -> Result<(ObjectKey, String), IdentityError> {
    let api_version = text(body.get("apiVersion"), "apiVersion")?;
    let kind = text(body.get("kind"), "kind")?;
    let meta = match body.get("metadata") {
        Some(Value::Object(m)) => m,
        _ => return Err(IdentityError::NoMetadata { kind }),
    };
    let name = match text(meta.get("name"), "metadata.name") {
        Ok(name) => name,
        Err(source) => return Err(IdentityError::Name { kind, source }),
    };
    let namespace = match meta.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if !ns.is_empty() => Some(ns.clone()),
        Some(_) => return Err(IdentityError::Namespace { kind, name }),
    };
    let group = match api_version.split_once('/') {
        Some((group, _)) => group.to_owned(),
        None => String::new(),
    };
    Ok((
        ObjectKey {
            group,
            kind,
            namespace,
            name,
        },
        api_version,
    ))
}
