//! The document tree: YAML or JSON parsed into mappings that keep their keys
//! in file order, because the MAC is a hash over the leaves in that order and
//! a map that sorts (serde_json's default `Map`) would make every file with
//! unsorted keys look tampered.
//!
//! Invariant: parsing is bounded. A file over [`MAX_FILE_BYTES`] is refused
//! before it is read, YAML runs under a serde-saphyr budget that stops alias
//! bombs and deep nesting, and JSON under serde_json's recursion limit.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The largest encrypted file read, the same bound gitops puts on a manifest
/// file.
pub(crate) const MAX_FILE_BYTES: usize = 5 << 20;

/// Nesting depth of one YAML document; a Kubernetes object needs far less.
const MAX_DEPTH: usize = 64;

/// Documents in one YAML file.
const MAX_DOCUMENTS: usize = 10_000;

/// Anchors and alias uses in one YAML file.
const MAX_ALIASES: usize = 1_000;

/// Events all aliases of one file may replay together: generous for anchors
/// that share a block, small enough that a nested-alias bomb fails in
/// milliseconds.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// A value in a document. Mapping keys are strings: sops itself refuses any
/// other key when it encrypts, so a file with one was not written by sops.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// Wide enough for YAML's `u64` and `i64` alike.
    Int(i128),
    Float(f64),
    String(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Parses every YAML document of `text`; null documents are left out as sops
/// leaves them out.
pub(crate) fn parse_yaml(text: &str) -> Result<Vec<Node>, String> {
    serde_saphyr::from_multiple_with_options::<Node>(text, yaml_options())
        .map_err(|e| first_line(&e.to_string()))
}

/// Parses one JSON document with nothing but whitespace after it.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Node, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let node = Node::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(node)
}

/// Options that make serde-saphyr type plain scalars the way go-yaml v3 (the
/// parser sops uses) does, so an unencrypted value hashes into the MAC as the
/// same bytes sops hashed when it encrypted the file.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_FILE_BYTES);
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_depth = MAX_DEPTH;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = 2_000_000;
    budget.max_events = 4_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    // go-yaml v3 knows only YAML 1.2 booleans (`yes` is a string)...
    options.strict_booleans = true;
    // ...still reads `0755` as octal...
    options.legacy_octal_numbers = true;
    // ...gives `.inf` and `.nan` as floats...
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    // ...and sops walks its node tree, where `<<` is a key like any other.
    options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    // A snippet of the file could show an unencrypted value in a log.
    options.with_snippet = false;
    options
}

/// A mapping, or a list of mappings: what a merge key may point to.
fn is_merge_source(node: &Node) -> bool {
    match node {
        Node::Map(_) => true,
        Node::List(items) => items.iter().all(|i| matches!(i, Node::Map(_))),
        _ => false,
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_owned()
}

// === impl Node ===

impl Node {
    /// The entry under `key` of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Applies YAML merge keys (`<<: *anchor`) for the JSON output. sops keeps
    /// `<<` as a key like any other (and the MAC covers it that way), writing
    /// it back as `!!merge <<` so that the next YAML reader merges; JSON has no
    /// such tag, so the merge happens here, with YAML's rule that the
    /// mapping's own keys win and earlier sources win over later ones.
    pub(crate) fn expand_merge_keys(&mut self) {
        match self {
            Node::List(items) => items.iter_mut().for_each(Node::expand_merge_keys),
            Node::Map(entries) => {
                entries.iter_mut().for_each(|(_, v)| v.expand_merge_keys());
                let Some(at) = entries
                    .iter()
                    .position(|(k, v)| k == "<<" && is_merge_source(v))
                else {
                    return;
                };
                let sources = match entries.remove(at).1 {
                    Node::Map(source) => vec![source],
                    Node::List(items) => items
                        .into_iter()
                        .filter_map(|item| match item {
                            Node::Map(source) => Some(source),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let mut merged: Vec<(String, Node)> = Vec::new();
                for (key, value) in sources.into_iter().flatten() {
                    let taken = entries.iter().chain(&merged).any(|(k, _)| *k == key);
                    if !taken {
                        merged.push((key, value));
                    }
                }
                entries.splice(at..at, merged);
            }
            _ => {}
        }
    }

    /// A plain JSON value, for reading the `sops` metadata with serde (its
    /// key order does not matter).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or(Value::Null),
            Node::Float(f) => Value::from(*f),
            Node::String(s) => Value::String(s.clone()),
            Node::List(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        String::from_utf8(v.to_vec())
            .map(Node::String)
            .map_err(|_| E::custom("a binary value is not UTF-8 text"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            // Two entries with one key would hash into the MAC twice but reach
            // the cluster once; which one depends on the reader. Refuse.
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key; only strings are accepted.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key (sops refuses other keys)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(Key(v))
    }
}

/// Writes the tree as JSON with every mapping in file order.
impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    serializer.serialize_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    serializer.serialize_u64(v)
                } else {
                    serializer.serialize_i128(*i)
                }
            }
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::String(s) => serializer.serialize_str(s),
            Node::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Node {
        let mut docs = parse_yaml(text).expect("test YAML parses");
        assert_eq!(docs.len(), 1, "one document");
        docs.remove(0)
    }

    fn keys(node: &Node) -> Vec<&str> {
        match node {
            Node::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn yaml_mappings_keep_file_order() {
        let node = yaml("zeta: 1\nalpha: 2\nmid: {b: 1, a: 2}\n");
        assert_eq!(keys(&node), ["zeta", "alpha", "mid"]);
        assert_eq!(keys(node.get("mid").expect("mid")), ["b", "a"]);
    }

    #[test]
    fn json_objects_keep_file_order() {
        let node = parse_json(br#"{"zeta": 1, "alpha": {"y": true, "x": null}}"#).expect("json");
        assert_eq!(keys(&node), ["zeta", "alpha"]);
        assert_eq!(keys(node.get("alpha").expect("alpha")), ["y", "x"]);
    }

    #[test]
    fn plain_scalars_are_typed_like_go_yaml_v3() {
        let node = yaml(
            "s: yes\nb: True\ni: 42\nneg: -7\noct: 0755\nhex: 0x1f\nf: 1.5\ninf: .inf\nn: ~\nq: '42'\nts: 2024-01-02T03:04:05Z\n",
        );
        assert_eq!(node.get("s"), Some(&Node::String("yes".into())));
        assert_eq!(node.get("b"), Some(&Node::Bool(true)));
        assert_eq!(node.get("i"), Some(&Node::Int(42)));
        assert_eq!(node.get("neg"), Some(&Node::Int(-7)));
        assert_eq!(node.get("oct"), Some(&Node::Int(0o755)));
        assert_eq!(node.get("hex"), Some(&Node::Int(31)));
        assert_eq!(node.get("f"), Some(&Node::Float(1.5)));
        assert_eq!(node.get("inf"), Some(&Node::Float(f64::INFINITY)));
        assert_eq!(node.get("n"), Some(&Node::Null));
        assert_eq!(node.get("q"), Some(&Node::String("42".into())));
        assert_eq!(
            node.get("ts"),
            Some(&Node::String("2024-01-02T03:04:05Z".into()))
        );
    }

    #[test]
    fn merge_keys_stay_literal_keys_as_in_sops() {
        let node = yaml("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n");
        let derived = node.get("derived").expect("derived");
        assert_eq!(keys(derived), ["<<", "y"]);
    }

    #[test]
    fn merge_keys_expand_for_the_output_with_own_keys_winning() {
        let mut node = yaml(
            "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nm:\n  first: 0\n  <<: [*a, *b]\n  x: 9\nn: {<<: not-a-map}\n",
        );
        node.expand_merge_keys();
        let json = serde_json::to_string(node.get("m").expect("m")).expect("serializes");
        assert_eq!(json, r#"{"first":0,"y":1,"z":2,"x":9}"#);
        assert_eq!(keys(node.get("n").expect("n")), ["<<"]);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(parse_json(br#"{"a": 1, "a": 2}"#).is_err());
        assert!(parse_yaml("a: 1\na: 2\n").is_err());
    }

    #[test]
    fn non_string_keys_are_refused() {
        let err = parse_yaml("1: one\n").expect_err("an integer key");
        assert!(err.contains("string key"), "{err}");
    }

    #[test]
    fn null_documents_are_skipped() {
        let docs = parse_yaml("---\na: 1\n---\n---\nb: 2\n").expect("yaml");
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn serializes_json_in_file_order() {
        let node = yaml("z: 1\na: [x, 2.5, true, null]\n");
        let json = serde_json::to_string(&node).expect("serializes");
        assert_eq!(json, r#"{"z":1,"a":["x",2.5,true,null]}"#);
    }

    #[test]
    fn a_billion_laughs_fails_fast() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            let refs = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
            prev = name;
        }
        let started = std::time::Instant::now();
        let err = parse_yaml(&text).expect_err("the bomb is refused");
        assert!(err.contains("alias replay limit"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_yaml(&text).is_err());
        assert!(parse_json(text.as_bytes()).is_err());
    }
}
