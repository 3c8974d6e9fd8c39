//! Which leaves of a file are encrypted: sops's key rules
//! (`unencrypted_suffix`, `encrypted_suffix`, `encrypted_regex`,
//! `unencrypted_regex`), applied to every key on the way to a leaf. A leaf the
//! rules call encrypted must be an `ENC[...]` value; anything else there was
//! put in by hand.

use regex::Regex;

/// The key rule of one file. sops allows at most one per file; with none set
/// it uses the `_unencrypted` suffix.
#[derive(Debug)]
pub(crate) enum Rules {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    EncryptedRegex(Regex),
    UnencryptedRegex(Regex),
}

/// The suffix sops assumes when a file names no rule.
pub(crate) const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

impl Rules {
    /// Whether the leaf under these keys (list items add none) is encrypted.
    pub(crate) fn encrypts(&self, path: &[String]) -> bool {
        match self {
            Rules::UnencryptedSuffix(suffix) => !path.iter().any(|k| k.ends_with(suffix.as_str())),
            Rules::EncryptedSuffix(suffix) => path.iter().any(|k| k.ends_with(suffix.as_str())),
            Rules::EncryptedRegex(re) => path.iter().any(|k| re.is_match(k)),
            Rules::UnencryptedRegex(re) => !path.iter().any(|k| re.is_match(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn the_default_suffix_leaves_marked_keys_and_their_children_plain() {
        let rules = Rules::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.into());
        assert!(rules.encrypts(&path(&["data", "password"])));
        assert!(!rules.encrypts(&path(&["note_unencrypted"])));
        assert!(!rules.encrypts(&path(&["config_unencrypted", "inner"])));
    }

    #[test]
    fn an_encrypted_suffix_encrypts_only_marked_keys() {
        let rules = Rules::EncryptedSuffix("_secret".into());
        assert!(rules.encrypts(&path(&["db_secret", "password"])));
        assert!(!rules.encrypts(&path(&["metadata", "name"])));
    }

    #[test]
    fn an_encrypted_regex_is_a_search_over_each_key() {
        let rules = Rules::EncryptedRegex(Regex::new("^(data|stringData)$").expect("regex"));
        assert!(rules.encrypts(&path(&["stringData", "password"])));
        assert!(!rules.encrypts(&path(&["metadata", "name"])));
        assert!(!rules.encrypts(&path(&["metadata", "labels", "data-x"])));
    }

    #[test]
    fn an_unencrypted_regex_leaves_matching_keys_plain() {
        let rules =
            Rules::UnencryptedRegex(Regex::new("^(kind|apiVersion|metadata)$").expect("regex"));
        assert!(!rules.encrypts(&path(&["metadata", "name"])));
        assert!(rules.encrypts(&path(&["data", "token"])));
    }
}
