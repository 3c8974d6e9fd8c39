//! Decrypts SOPS-encrypted YAML and JSON files (the sops v3 file format), so
//! agentk can apply Secrets kept encrypted in git with an age key (or an
//! OpenPGP key) that lives in a Kubernetes Secret. kas only needs
//! [`is_encrypted`]: it never holds a key.
//!
//! The entry points: [`Keys::from_secret_data`] reads the keys,
//! [`is_encrypted`] tells an encrypted file from a plain one, [`decrypt`]
//! opens it.
//!
//! Architecture invariants:
//! - No IO and no process: the crate reimplements the format (AES-256-GCM
//!   values, SHA-512 MAC, age or OpenPGP-wrapped data key) instead of running
//!   `sops`.
//! - Nothing decrypted leaves [`decrypt`] unless the file's MAC matches; a
//!   file changed after it was encrypted is refused, not half-applied.
//! - No decrypted value and no key material appears in an error, a `Debug`
//!   or a `Display` of this crate.
//! - Parsing is bounded (file size, YAML budget, nesting), since the files
//!   come from git, that is, from whoever can push.
//!
//! Not supported, each refused by name rather than misread: dotenv, INI and
//! binary files, Shamir key groups, cloud KMS and Vault recipients,
//! comment-based key rules.

mod cipher;
mod detect;
mod error;
mod keys;
mod mac;
mod metadata;
mod openpgp;
mod rules;
mod tree;
mod walk;

use std::fmt;

pub use detect::is_encrypted;
pub use error::{SopsError, ValueProblem};
pub use keys::Keys;

use crate::cipher::{CipherError, Plain};
use crate::metadata::Metadata;
use crate::tree::{MAX_FILE_BYTES, Node};

/// The syntax of a SOPS file, which sops itself picks by file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` is JSON, anything else YAML, as gitops reads manifests.
    pub fn from_path(path: &str) -> Format {
        if path.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// A decrypted file, ready for the manifest parser.
#[derive(Clone, PartialEq)]
pub struct Decrypted {
    /// The plaintext without its `sops` metadata: each document as one line
    /// of JSON, documents separated by `---\n` for YAML input (JSON is YAML,
    /// so the manifest parser reads it under the original file name); one
    /// JSON document for JSON input. Mapping keys stay in file order.
    pub bytes: Vec<u8>,
    /// How many values were decrypted.
    pub values: usize,
}

/// Decrypts the SOPS file `bytes` read from `path` (the name picks the
/// [`Format`] and appears in every error) with the first of `keys` that is
/// one of its recipients, and checks its MAC.
pub fn decrypt(path: &str, bytes: &[u8], keys: &Keys) -> Result<Decrypted, SopsError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SopsError::TooLarge {
            path: path.to_owned(),
            size: bytes.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let malformed = |reason: String| SopsError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let unsupported = |what: &str| SopsError::Unsupported {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    if path.ends_with(".env") || detect::is_dotenv(bytes) {
        return Err(unsupported("sops dotenv files"));
    }
    if path.ends_with(".ini") || detect::is_ini(bytes) {
        return Err(unsupported("sops INI files"));
    }
    let format = Format::from_path(path);
    let mut documents = match format {
        Format::Json => vec![tree::parse_json(bytes).map_err(malformed)?],
        Format::Yaml => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8 text".into()))?;
            tree::parse_yaml(text).map_err(malformed)?
        }
    };
    if let Some(index) = documents.iter().position(|d| !matches!(d, Node::Map(_))) {
        return Err(malformed(format!("document {index} is not a mapping")));
    }
    // sops reads its metadata from the first document only.
    let Some(block) = documents.first().and_then(|d| d.get("sops")) else {
        return Err(malformed(
            "it has no `sops` metadata: it is not encrypted with sops".into(),
        ));
    };
    if detect::is_binary(path, &documents) {
        return Err(unsupported("sops binary files"));
    }
    let metadata = Metadata::parse(path, block)?;
    for document in &mut documents {
        if let Node::Map(entries) = document {
            entries.retain(|(k, _)| k != "sops");
        }
    }

    let data_key = keys.data_key(path, &metadata)?;
    let walked = walk::decrypt_documents(path, &mut documents, &data_key, &metadata)?;
    let stored_mac = match data_key.decrypt(&metadata.mac, &metadata.last_modified) {
        Ok(Plain::String(mac)) => mac,
        Ok(_) => return Err(malformed("its `mac` is not a string".into())),
        Err(CipherError::Authentication) => {
            return Err(SopsError::Tampered {
                path: path.to_owned(),
            });
        }
        Err(CipherError::NotEncrypted) => {
            return Err(malformed("its `mac` is not an ENC[] value".into()));
        }
        Err(CipherError::Malformed(reason)) => {
            return Err(malformed(format!("its `mac`: {reason}")));
        }
    };
    if !walked.mac.matches(&stored_mac) {
        return Err(SopsError::Tampered {
            path: path.to_owned(),
        });
    }

    let mut out = Vec::with_capacity(bytes.len());
    for (index, document) in documents.iter_mut().enumerate() {
        document.expand_merge_keys();
        if index > 0 {
            out.extend_from_slice(b"---\n");
        }
        serde_json::to_writer(&mut out, &*document).map_err(|e| malformed(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(Decrypted {
        bytes: out,
        values: walked.values,
    })
}

/// The size only: the bytes are secrets.
impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decrypted")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("values", &self.values)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! Files assembled here field by field, so the format is pinned down even
    //! where no `sops` binary is at hand; `tests/decrypt.rs` checks the same
    //! against files the real sops wrote.

    use age::secrecy::ExposeSecret;
    use sha2::{Digest, Sha512};

    use super::*;
    use crate::cipher::tests::seal;

    const DATA_KEY: [u8; 32] = [42; 32];
    const LAST_MODIFIED: &str = "2024-05-06T07:08:09Z";

    struct Fixture {
        keys: Keys,
        recipient: String,
    }

    // X25519 is what sops uses; the post-quantum advice does not apply here.
    #[allow(deprecated)]
    fn fixture() -> Fixture {
        let identity = age::x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().to_owned();
        Fixture {
            keys: Keys::from_secret_data([("k.agekey", secret.as_bytes())]).expect("keys"),
            recipient: identity.to_public().to_string(),
        }
    }

    fn iv(n: u8) -> [u8; 32] {
        [n; 32]
    }

    /// A sops YAML file of `body` (already encrypted where it should be),
    /// whose MAC covers `leaves` and whose data key is `data_key`.
    #[allow(deprecated)]
    fn sops_file(
        fixture: &Fixture,
        body: &str,
        leaves: &[&str],
        data_key: &[u8],
        extra: &str,
    ) -> String {
        let recipient: age::x25519::Recipient = fixture.recipient.parse().expect("recipient");
        let enc = age::encrypt_and_armor(&recipient, data_key).expect("wraps the data key");
        let mut mac = Sha512::new();
        if extra.contains("mac_only_encrypted: true") {
            mac.update(sha2::Sha256::digest(b"sops"));
        }
        for leaf in leaves {
            mac.update(leaf.as_bytes());
        }
        let mac: String = mac.finalize().iter().map(|b| format!("{b:02X}")).collect();
        let key: [u8; 32] = data_key.try_into().unwrap_or(DATA_KEY);
        let enc = enc
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>();
        format!(
            "{body}sops:\n  age:\n    - recipient: {}\n      enc: |\n{enc}  lastmodified: \"{LAST_MODIFIED}\"\n  mac: {}\n  version: 3.9.0\n{extra}",
            fixture.recipient,
            seal(&key, &mac, LAST_MODIFIED, "str", iv(9)),
        )
    }

    fn body() -> String {
        format!(
            "password: {}\nnote_unencrypted: hello\ncount: {}\nempty: \"\"\n#ENC[AES256_GCM,data:x,iv:y,tag:z,type:comment]\nlist:\n  - {}\n",
            seal(&DATA_KEY, "hunter2", "password:", "str", iv(1)),
            seal(&DATA_KEY, "3", "count:", "int", iv(2)),
            seal(&DATA_KEY, "True", "list:", "bool", iv(3)),
        )
    }

    const LEAVES: [&str; 5] = ["hunter2", "hello", "3", "", "True"];

    #[test]
    fn a_hand_built_file_decrypts() {
        let fixture = fixture();
        let file = sops_file(&fixture, &body(), &LEAVES, &DATA_KEY, "");

        let decrypted = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect("decrypts");

        assert_eq!(
            String::from_utf8(decrypted.bytes).expect("UTF-8"),
            "{\"password\":\"hunter2\",\"note_unencrypted\":\"hello\",\"count\":3,\"empty\":\"\",\"list\":[true]}\n"
        );
        assert_eq!(decrypted.values, 3);
    }

    #[test]
    fn the_mac_is_bound_to_lastmodified() {
        let fixture = fixture();
        let file = sops_file(&fixture, &body(), &LEAVES, &DATA_KEY, "")
            .replace(LAST_MODIFIED, "2030-01-01T00:00:00Z");

        let err = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect_err("refused");

        assert!(matches!(err, SopsError::Tampered { .. }), "{err}");
    }

    #[test]
    fn a_mac_over_other_leaves_is_refused() {
        let fixture = fixture();
        let file = sops_file(
            &fixture,
            &body(),
            &["hunter2", "hello", "3", "True"],
            &DATA_KEY,
            "",
        )
        .replace("note_unencrypted: hello", "note_unencrypted: hellO");

        let err = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect_err("refused");

        assert!(matches!(err, SopsError::Tampered { .. }), "{err}");
    }

    #[test]
    fn mac_only_encrypted_leaves_plain_values_out() {
        let fixture = fixture();
        let file = sops_file(
            &fixture,
            &body(),
            &["hunter2", "3", "", "True"],
            &DATA_KEY,
            "  mac_only_encrypted: true\n",
        )
        .replace("note_unencrypted: hello", "note_unencrypted: changed");

        let decrypted = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect("decrypts");

        assert!(String::from_utf8_lossy(&decrypted.bytes).contains("changed"));
    }

    #[test]
    fn a_short_data_key_is_malformed() {
        let fixture = fixture();
        let file = sops_file(&fixture, &body(), &LEAVES, &[1; 16], "");

        let err = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect_err("refused");

        assert_eq!(
            err.to_string(),
            "f.yaml: not a valid SOPS file: its data key is 16 bytes, not 32"
        );
    }

    #[test]
    fn a_value_encrypted_for_another_path_is_refused_with_its_place() {
        let fixture = fixture();
        let moved = body().replace("password:", "passwd:");
        let file = sops_file(&fixture, &moved, &LEAVES, &DATA_KEY, "");

        let err = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect_err("refused");

        assert_eq!(
            err.to_string(),
            "f.yaml: the value at passwd does not decrypt with the file's data key: the file was changed after it was encrypted"
        );
    }

    #[test]
    fn only_cloud_recipients_are_unsupported() {
        let file = "a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops:\n  kms:\n    - arn: arn:aws:kms:eu-west-1:1:key/k\n      enc: x\n  lastmodified: \"2024-01-01T00:00:00Z\"\n  mac: ENC[x]\n  version: 3.9.0\n";

        let err = decrypt("f.yaml", file.as_bytes(), &fixture().keys).expect_err("refused");

        assert_eq!(
            err.to_string(),
            "f.yaml: cloud KMS and Vault recipients (use age) are not supported"
        );
    }

    #[test]
    fn a_list_item_in_place_of_its_sibling_keeps_its_additional_data() {
        // List items add nothing to the additional data: `list:` for both.
        let fixture = fixture();
        let body = format!(
            "list:\n  - {}\n  - {}\n",
            seal(&DATA_KEY, "a", "list:", "str", iv(4)),
            seal(&DATA_KEY, "b", "list:", "str", iv(5)),
        );
        let file = sops_file(&fixture, &body, &["a", "b"], &DATA_KEY, "");

        let decrypted = decrypt("f.yaml", file.as_bytes(), &fixture.keys).expect("decrypts");

        assert_eq!(decrypted.bytes, b"{\"list\":[\"a\",\"b\"]}\n");
    }
}
