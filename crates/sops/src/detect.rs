//! Telling a SOPS file from an ordinary one without a key, cheaply: kas runs
//! this over every file of a manifest project, most of them large and not
//! encrypted, so a byte search rules out almost all before anything is
//! parsed.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::Format;
use crate::tree::{MAX_FILE_BYTES, Node, yaml_options};

/// Whether `bytes` (read from `path`) is a SOPS-encrypted file of any format:
/// YAML or JSON whose top-level `sops` mapping holds `mac` or `version`, a
/// dotenv file with a `sops_version=` or `sops_mac=` line, an INI file with a
/// `[sops]` section holding `mac` or `version`, or a binary file (sops stores
/// those as JSON). Never fails: what cannot be read is not a SOPS file.
pub fn is_encrypted(path: &str, bytes: &[u8]) -> bool {
    if !contains(bytes, b"sops") {
        return false;
    }
    if is_dotenv(bytes) || is_ini(bytes) {
        return true;
    }
    if !could_have_top_level_sops(bytes) {
        return false;
    }
    if bytes.len() > MAX_FILE_BYTES {
        // Too large to parse here; decrypt refuses it anyway, and calling it
        // encrypted keeps a half-understood secret from being applied as is.
        return contains(bytes, b"ENC[AES256_GCM,");
    }
    match Format::from_path(path) {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            de.deserialize_any(Looking::Document).unwrap_or(false)
        }
        Format::Yaml => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return false;
            };
            serde_saphyr::from_multiple_with_options::<Probe>(text, yaml_options())
                .map(|docs| docs.iter().any(|d| d.0))
                .unwrap_or(false)
        }
    }
}

/// A dotenv file written by sops: its metadata are `sops_*=` lines.
pub(crate) fn is_dotenv(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .any(|line| line.starts_with(b"sops_version=") || line.starts_with(b"sops_mac="))
}

/// An INI file written by sops: its metadata are a `[sops]` section.
pub(crate) fn is_ini(bytes: &[u8]) -> bool {
    let mut in_sops_section = false;
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.starts_with(b"[") {
            in_sops_section = line == b"[sops]";
        } else if in_sops_section && (line.starts_with(b"mac") || line.starts_with(b"version")) {
            return true;
        }
    }
    false
}

/// A binary file as sops stores it: `{"data": "ENC[...]", "sops": …}` under a
/// name that is neither YAML nor JSON (sops picks the store by extension).
pub(crate) fn is_binary(path: &str, documents: &[Node]) -> bool {
    let yaml_or_json = [".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e));
    if yaml_or_json {
        return false;
    }
    match documents {
        [Node::Map(entries)] => {
            entries.len() == 2
                && entries
                    .iter()
                    .any(|(k, v)| k == "data" && matches!(v, Node::String(_)))
                && entries.iter().any(|(k, _)| k == "sops")
        }
        _ => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// sops writes its block as `sops:` at the start of a line (YAML) or as a
/// `"sops"` key (JSON); a manifest that only mentions sops in a value
/// (`provider: sops`) is ruled out without parsing.
fn could_have_top_level_sops(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .any(|line| line.starts_with(b"sops"))
        || contains(bytes, b"\"sops\"")
        || contains(bytes, b"'sops'")
}

/// One document: `true` when it is a mapping with a SOPS `sops` entry.
struct Probe(bool);

impl<'de> de::Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Looking::Document).map(Probe)
    }
}

/// What is looked for at one level of a document; everything else visited is
/// skipped and answers `false`.
#[derive(Clone, Copy)]
enum Looking {
    /// A top-level mapping with a `sops` key whose value is…
    Document,
    /// …a mapping with a `mac` or `version` key.
    SopsBlock,
    /// A mapping key that is one of these strings.
    Key(&'static [&'static str]),
}

impl<'de> de::DeserializeSeed<'de> for Looking {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Looking {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let (keys, inner): (&'static [&'static str], Option<Looking>) = match self {
            Looking::Document => (&["sops"], Some(Looking::SopsBlock)),
            Looking::SopsBlock => (&["mac", "version"], None),
            Looking::Key(_) => (&[], None),
        };
        let mut found = false;
        while let Some(matched) = map.next_key_seed(Looking::Key(keys))? {
            match inner.filter(|_| matched) {
                Some(inner) => found |= map.next_value_seed(inner)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    found |= matched && matches!(self, Looking::SopsBlock);
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(matches!(self, Looking::Key(names) if names.contains(&v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}
