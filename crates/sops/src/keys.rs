//! Private keys from a Kubernetes Secret, named as Flux's
//! kustomize-controller names them so its users keep their Secrets: entries
//! ending in `.agekey` hold age identities, entries ending in `.asc` armored
//! OpenPGP secret keys.
//!
//! Invariant: key material never leaves this module in text form: not in
//! `Debug`, not in an error (errors name the entry and the line, not the
//! content).

use std::fmt;
use std::io::Read;

use zeroize::Zeroizing;

use crate::SopsError;
use crate::cipher::DataKey;
use crate::metadata::Metadata;

/// A data key is 32 bytes; anything longer in an age payload is not one, so
/// reading stops just past that.
const MAX_DATA_KEY_READ: u64 = 64;

/// The private keys agentk may decrypt with.
#[derive(Clone, Default)]
pub struct Keys {
    age: Vec<age::x25519::Identity>,
    pgp: Vec<crate::openpgp::SecretKey>,
}

impl Keys {
    /// From a Kubernetes Secret's data: entries named `*.agekey` hold age
    /// identities (lines `AGE-SECRET-KEY-1…`; `#` comments and blank lines are
    /// skipped; several keys are allowed, for key rotation); entries named
    /// `*.asc` hold armored OpenPGP secret keys without a passphrase. Other
    /// entries are ignored, as Flux ignores them.
    pub fn from_secret_data<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Keys, SopsError> {
        let mut keys = Keys::default();
        for (name, bytes) in entries {
            if name.ends_with(".agekey") {
                keys.age.extend(parse_age_identities(name, bytes)?);
            } else if name.ends_with(".asc") {
                keys.pgp
                    .extend(crate::openpgp::parse_secret_keys(name, bytes)?);
            }
        }
        Ok(keys)
    }

    /// Whether the Secret held no key at all: every encrypted file would fail.
    pub fn is_empty(&self) -> bool {
        self.age.is_empty() && self.pgp.is_empty()
    }

    /// Opens the file's data key with the first recipient one of these keys
    /// matches.
    pub(crate) fn data_key(&self, path: &str, metadata: &Metadata) -> Result<DataKey, SopsError> {
        if metadata.age.is_empty() && metadata.pgp.is_empty() {
            let what = if metadata.other_recipients.is_empty() {
                "files without recipients".to_owned()
            } else {
                "cloud KMS and Vault recipients (use age)".to_owned()
            };
            return Err(SopsError::Unsupported {
                path: path.to_owned(),
                what,
            });
        }
        // A recipient that matches but whose envelope is broken is reported if
        // no other recipient works; "no key" would send the user to the wrong
        // place.
        let mut broken = None;
        if !self.age.is_empty() {
            for recipient in &metadata.age {
                match self.open_age(&recipient.enc) {
                    Ok(Some(bytes)) => return to_data_key(path, &bytes),
                    Ok(None) => {}
                    Err(reason) => {
                        broken.get_or_insert(format!(
                            "the data key encrypted for {} cannot be read: {reason}",
                            recipient.recipient
                        ));
                    }
                }
            }
        }
        if !self.pgp.is_empty() {
            for recipient in &metadata.pgp {
                match crate::openpgp::open(&self.pgp, &recipient.fp, &recipient.enc) {
                    Ok(Some(bytes)) => return to_data_key(path, &bytes),
                    Ok(None) => {}
                    Err(reason) => {
                        broken.get_or_insert(format!(
                            "the data key encrypted for PGP fingerprint {} cannot be read: {reason}",
                            recipient.fp
                        ));
                    }
                }
            }
        }
        if let Some(reason) = broken {
            return Err(SopsError::Malformed {
                path: path.to_owned(),
                reason,
            });
        }
        Err(SopsError::NoKey {
            path: path.to_owned(),
            recipients: metadata.recipients(),
        })
    }

    /// `Ok(None)` when none of the identities is a recipient of `armored`,
    /// or when it cannot even be read as an age file: whose it is cannot be
    /// told then, and "no key" with the list of recipients is the better
    /// message.
    fn open_age(&self, armored: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let reader = age::armor::ArmoredReader::new(armored.as_bytes());
        let Ok(decryptor) = age::Decryptor::new(reader) else {
            return Ok(None);
        };
        let identities = self.age.iter().map(|i| i as &dyn age::Identity);
        let mut stream = match decryptor.decrypt(identities) {
            Ok(stream) => stream,
            Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut bytes = Zeroizing::new(Vec::new());
        (&mut stream)
            .take(MAX_DATA_KEY_READ)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    }
}

fn to_data_key(path: &str, bytes: &[u8]) -> Result<DataKey, SopsError> {
    DataKey::from_bytes(bytes).ok_or_else(|| SopsError::Malformed {
        path: path.to_owned(),
        reason: format!("its data key is {} bytes, not 32", bytes.len()),
    })
}

/// Reads an age identity file as `age.ParseIdentities` does.
fn parse_age_identities(name: &str, bytes: &[u8]) -> Result<Vec<age::x25519::Identity>, SopsError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SopsError::Keys {
        reason: format!("entry {name} is not UTF-8 text"),
    })?;
    let mut identities = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = line
            .parse::<age::x25519::Identity>()
            .map_err(|_| SopsError::Keys {
                reason: format!(
                    "entry {name} line {} is not an age X25519 identity (AGE-SECRET-KEY-1…)",
                    index + 1
                ),
            })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(SopsError::Keys {
            reason: format!("entry {name} holds no age identity"),
        });
    }
    Ok(identities)
}

/// Counts only: a key's public half would be harmless, but its secret half
/// must never reach a log through a `{:?}`.
impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("age_identities", &self.age.len())
            .field("pgp_keys", &self.pgp.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    // sops's age recipients are X25519; the post-quantum advice does not
    // apply to fixtures.
    #[allow(deprecated)]
    fn identity_line() -> (String, String) {
        let identity = age::x25519::Identity::generate();
        (
            identity.to_string().expose_secret().to_owned(),
            identity.to_public().to_string(),
        )
    }

    #[test]
    fn reads_several_identities_skipping_comments() {
        let (a, _) = identity_line();
        let (b, _) = identity_line();
        let text = format!("# created: today\n# public key: age1…\n{a}\n\n{b}\r\n");
        let keys = Keys::from_secret_data([("identity.agekey", text.as_bytes())]).expect("keys");
        assert_eq!(keys.age.len(), 2);
        assert!(!keys.is_empty());
    }

    #[test]
    fn other_entries_are_ignored() {
        let keys =
            Keys::from_secret_data([("sops.vault-token", b"x".as_slice()), ("README", b"y")])
                .expect("keys");
        assert!(keys.is_empty());
    }

    #[test]
    fn a_bad_line_names_the_entry_and_line_but_not_the_content() {
        let (a, _) = identity_line();
        let broken = format!("{a}\nAGE-SECRET-KEY-1NOTAKEYATALLBUTSECRETISH\n");
        let err =
            Keys::from_secret_data([("prod.agekey", broken.as_bytes())]).expect_err("bad line");
        let message = err.to_string();
        assert!(message.contains("prod.agekey line 2"), "{message}");
        assert!(!message.contains("NOTAKEY"), "{message}");
        assert!(!message.contains(&a), "{message}");
    }

    #[test]
    fn debug_shows_counts_only() {
        let (a, _) = identity_line();
        let keys = Keys::from_secret_data([("k.agekey", a.as_bytes())]).expect("keys");
        let debug = format!("{keys:?}");
        assert_eq!(debug, "Keys { age_identities: 1, pgp_keys: 0 }");
        assert!(!debug.contains("AGE-SECRET-KEY"));
    }
}
