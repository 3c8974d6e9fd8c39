//! OpenPGP recipients, with rPGP (pure Rust, no gpg-agent): the data key of a
//! `pgp` entry is an armored OpenPGP message that one of the Secret's `.asc`
//! keys opens.
//!
//! Invariant: keys with a passphrase are refused when the Secret is read (as
//! Flux requires keys without one), so a failure while decrypting means the
//! message, not the key, is at fault.

use std::io::Read;

use pgp::composed::{Deserializable, Message, SignedSecretKey};
use pgp::types::{KeyDetails, Password};
use zeroize::Zeroizing;

use crate::SopsError;

/// A decrypted message larger than this is no 32-byte data key; reading stops
/// there, before a compression bomb could fill memory.
const MAX_DATA_KEY_READ: u64 = 64;

/// An armored block of one `.asc` entry is read only up to this size; a
/// secret key with its subkeys is a few kilobytes.
const MAX_KEY_BYTES: usize = 1 << 20;

/// One OpenPGP secret key with the fingerprints it answers to.
#[derive(Clone)]
pub(crate) struct SecretKey {
    key: SignedSecretKey,
    /// Upper-case hex of the primary key and every subkey: sops's `fp` names
    /// one of them.
    fingerprints: Vec<String>,
}

/// Every secret key of one `.asc` entry (an export may hold several, in one
/// armored block or in several).
pub(crate) fn parse_secret_keys(name: &str, bytes: &[u8]) -> Result<Vec<SecretKey>, SopsError> {
    let bad = |what: &str| SopsError::Keys {
        reason: format!("entry {name} {what}"),
    };
    if bytes.len() > MAX_KEY_BYTES {
        return Err(bad("is too large for an OpenPGP secret key"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("is not armored text"))?;
    const BEGIN: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";
    let mut keys = Vec::new();
    for block in text.split(BEGIN).skip(1) {
        let armored = format!("{BEGIN}{block}");
        let (parsed, _) = SignedSecretKey::from_string_many(&armored)
            .map_err(|_| bad("is not an armored OpenPGP secret key"))?;
        for key in parsed {
            let key = key.map_err(|_| bad("is not an armored OpenPGP secret key"))?;
            let locked = key.primary_key.secret_params().is_encrypted()
                || key
                    .secret_subkeys
                    .iter()
                    .any(|s| s.key.secret_params().is_encrypted());
            if locked {
                return Err(bad(
                    "holds an OpenPGP key with a passphrase; export it without one",
                ));
            }
            let fingerprints = std::iter::once(key.primary_key.fingerprint())
                .chain(key.secret_subkeys.iter().map(|s| s.key.fingerprint()))
                .map(|fp| format!("{fp:X}"))
                .collect();
            keys.push(SecretKey { key, fingerprints });
        }
    }
    if keys.is_empty() {
        return Err(bad(
            "holds no armored OpenPGP secret key (-----BEGIN PGP PRIVATE KEY BLOCK-----)",
        ));
    }
    Ok(keys)
}

/// Opens the data key encrypted for `fingerprint`; `Ok(None)` when no key
/// has that fingerprint.
pub(crate) fn open(
    keys: &[SecretKey],
    fingerprint: &str,
    armored: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let wanted = fingerprint.trim().replace(' ', "").to_ascii_uppercase();
    let matching: Vec<&SignedSecretKey> = keys
        .iter()
        .filter(|k| k.fingerprints.contains(&wanted))
        .map(|k| &k.key)
        .collect();
    if matching.is_empty() {
        return Ok(None);
    }
    let (message, _) = Message::from_string(armored).map_err(|e| e.to_string())?;
    let empty = Password::empty();
    let passwords = vec![&empty; matching.len()];
    let mut message = message
        .decrypt_with_keys(passwords, matching)
        .map_err(|e| e.to_string())?;
    if message.is_compressed() {
        message = message.decompress().map_err(|e| e.to_string())?;
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut message)
        .take(MAX_DATA_KEY_READ)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}
