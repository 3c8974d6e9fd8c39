//! The `sops` block of a file: who the data key is encrypted for, the MAC and
//! its timestamp, and the key rule. Read as sops's `Metadata.ToInternal`
//! reads it, with the parts this crate does not implement refused by name
//! rather than ignored.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::SopsError;
use crate::rules::{DEFAULT_UNENCRYPTED_SUFFIX, Rules};
use crate::tree::Node;

/// What decryption needs from the `sops` block.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub(crate) age: Vec<AgeRecipient>,
    pub(crate) pgp: Vec<PgpRecipient>,
    /// Cloud KMS and Vault recipients, named for error messages only.
    pub(crate) other_recipients: Vec<String>,
    /// Exactly as written: it is the additional data of the MAC.
    pub(crate) last_modified: String,
    pub(crate) mac: String,
    pub(crate) rules: Rules,
    pub(crate) mac_only_encrypted: bool,
}

/// The data key encrypted for one age recipient.
#[derive(Debug, Deserialize)]
pub(crate) struct AgeRecipient {
    #[serde(default)]
    pub(crate) recipient: String,
    #[serde(default)]
    pub(crate) enc: String,
}

/// The data key encrypted for one OpenPGP key.
#[derive(Debug, Deserialize)]
pub(crate) struct PgpRecipient {
    #[serde(default)]
    pub(crate) fp: String,
    #[serde(default)]
    pub(crate) enc: String,
}

/// The block as sops writes it. Lists are `Option` because sops writes
/// `kms: null` for an empty one.
#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    age: Option<Vec<AgeRecipient>>,
    #[serde(default)]
    pgp: Option<Vec<PgpRecipient>>,
    #[serde(default)]
    kms: Option<Vec<Value>>,
    #[serde(default)]
    gcp_kms: Option<Vec<Value>>,
    #[serde(default)]
    azure_kv: Option<Vec<Value>>,
    #[serde(default)]
    hc_vault: Option<Vec<Value>>,
    #[serde(default)]
    key_groups: Option<Vec<Value>>,
    #[serde(default)]
    lastmodified: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    unencrypted_suffix: Option<String>,
    #[serde(default)]
    encrypted_suffix: Option<String>,
    #[serde(default)]
    encrypted_regex: Option<String>,
    #[serde(default)]
    unencrypted_regex: Option<String>,
    #[serde(default)]
    encrypted_comment_regex: Option<String>,
    #[serde(default)]
    unencrypted_comment_regex: Option<String>,
    /// A bool, or a string as Go's `ParseBool` reads it: sops decodes its
    /// metadata weakly typed.
    #[serde(default)]
    mac_only_encrypted: Option<Value>,
}

impl Metadata {
    /// Reads the `sops` block of the first document of `path`.
    pub(crate) fn parse(path: &str, block: &Node) -> Result<Metadata, SopsError> {
        let malformed = |reason: String| SopsError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let unsupported = |what: &str| SopsError::Unsupported {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        if !matches!(block, Node::Map(_)) {
            return Err(malformed("its `sops` entry is not a mapping".into()));
        }
        let raw: Raw = serde_json::from_value(block.to_json())
            .map_err(|e| malformed(format!("its `sops` metadata: {e}")))?;

        if raw.key_groups.as_ref().is_some_and(|g| !g.is_empty()) {
            // Several key groups split the data key with Shamir's scheme.
            return Err(unsupported("Shamir key groups (`key_groups`)"));
        }
        let set = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        if set(&raw.encrypted_comment_regex).is_some()
            || set(&raw.unencrypted_comment_regex).is_some()
        {
            return Err(unsupported(
                "comment-based key rules (`encrypted_comment_regex`, `unencrypted_comment_regex`)",
            ));
        }
        let regex = |name: &str, pattern: String| {
            Regex::new(&pattern)
                .map_err(|_| malformed(format!("its `{name}` is not a valid regular expression")))
        };
        let mut rules = Vec::new();
        if let Some(s) = set(&raw.unencrypted_suffix) {
            rules.push(Rules::UnencryptedSuffix(s));
        }
        if let Some(s) = set(&raw.encrypted_suffix) {
            rules.push(Rules::EncryptedSuffix(s));
        }
        if let Some(p) = set(&raw.encrypted_regex) {
            rules.push(Rules::EncryptedRegex(regex("encrypted_regex", p)?));
        }
        if let Some(p) = set(&raw.unencrypted_regex) {
            rules.push(Rules::UnencryptedRegex(regex("unencrypted_regex", p)?));
        }
        if rules.len() > 1 {
            return Err(malformed(
                "it sets more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex".into(),
            ));
        }
        let rules = rules
            .pop()
            .unwrap_or_else(|| Rules::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_owned()));

        let last_modified = raw
            .lastmodified
            .ok_or_else(|| malformed("its `sops` metadata has no `lastmodified`".into()))?;
        let mac = raw
            .mac
            .filter(|m| !m.is_empty())
            .ok_or_else(|| malformed("its `sops` metadata has no `mac`".into()))?;

        let mut other_recipients = Vec::new();
        for (kind, entries, fields) in [
            ("AWS KMS", &raw.kms, &["arn"][..]),
            ("GCP KMS", &raw.gcp_kms, &["resource_id"][..]),
            ("Azure Key Vault", &raw.azure_kv, &["vault_url", "name"][..]),
            (
                "HashiCorp Vault",
                &raw.hc_vault,
                &["vault_address", "engine_path", "key_name"][..],
            ),
        ] {
            for entry in entries.iter().flatten() {
                let name: Vec<&str> = fields
                    .iter()
                    .filter_map(|f| entry.get(*f).and_then(Value::as_str))
                    .collect();
                other_recipients.push(format!("{kind} {}", name.join("/")));
            }
        }
        let mac_only_encrypted = match raw.mac_only_encrypted {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) if s.is_empty() => false,
            Some(Value::String(s)) => crate::cipher::parse_go_bool(&s)
                .ok_or_else(|| malformed("its `mac_only_encrypted` is not a boolean".into()))?,
            Some(_) => {
                return Err(malformed(
                    "its `mac_only_encrypted` is not a boolean".into(),
                ));
            }
        };
        Ok(Metadata {
            age: raw.age.unwrap_or_default(),
            pgp: raw.pgp.unwrap_or_default(),
            other_recipients,
            last_modified,
            mac,
            rules,
            mac_only_encrypted,
        })
    }

    /// Every recipient, as an error message names them.
    pub(crate) fn recipients(&self) -> Vec<String> {
        let age = self.age.iter().map(|a| a.recipient.clone());
        let pgp = self.pgp.iter().map(|p| format!("PGP fingerprint {}", p.fp));
        age.chain(pgp)
            .chain(self.other_recipients.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::parse_yaml;

    fn parse(yaml: &str) -> Result<Metadata, SopsError> {
        let docs = parse_yaml(yaml).expect("test YAML parses");
        Metadata::parse("f.yaml", &docs[0])
    }

    const BASE: &str = "lastmodified: \"2024-01-01T00:00:00Z\"\nmac: ENC[x]\nversion: 3.9.0\n";

    #[test]
    fn no_rule_means_the_unencrypted_suffix() {
        let m = parse(BASE).expect("parses");
        assert!(matches!(m.rules, Rules::UnencryptedSuffix(ref s) if s == "_unencrypted"));
        assert!(!m.mac_only_encrypted);
    }

    #[test]
    fn two_rules_are_malformed() {
        let err = parse(&format!(
            "{BASE}encrypted_regex: ^data$\nencrypted_suffix: _x\n"
        ))
        .expect_err("two rules");
        assert!(matches!(err, SopsError::Malformed { .. }), "{err}");
    }

    #[test]
    fn null_recipient_lists_are_empty() {
        let m = parse(&format!(
            "{BASE}kms: null\npgp: null\nage:\n  - recipient: age1abc\n    enc: x\n"
        ))
        .expect("parses");
        assert_eq!(m.recipients(), ["age1abc"]);
    }

    #[test]
    fn cloud_recipients_are_named() {
        let m = parse(&format!(
            "{BASE}kms:\n  - arn: arn:aws:kms:eu:1:key/k\n    enc: x\n"
        ))
        .expect("parses");
        assert_eq!(m.recipients(), ["AWS KMS arn:aws:kms:eu:1:key/k"]);
    }

    #[test]
    fn key_groups_are_unsupported() {
        let err =
            parse(&format!("{BASE}key_groups:\n  - age: []\n  - age: []\n")).expect_err("groups");
        assert!(matches!(err, SopsError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn mac_only_encrypted_may_be_a_string() {
        assert!(
            parse(&format!("{BASE}mac_only_encrypted: \"true\"\n"))
                .expect("parses")
                .mac_only_encrypted
        );
        assert!(
            !parse(&format!("{BASE}mac_only_encrypted: \"false\"\n"))
                .expect("parses")
                .mac_only_encrypted
        );
        assert!(
            parse(&format!("{BASE}mac_only_encrypted: true\n"))
                .expect("parses")
                .mac_only_encrypted
        );
    }

    #[test]
    fn a_missing_mac_is_malformed() {
        let err = parse("lastmodified: \"2024-01-01T00:00:00Z\"\n").expect_err("no mac");
        assert!(err.to_string().contains("no `mac`"), "{err}");
    }
}
