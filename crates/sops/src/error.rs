//! The one error type of the crate. Every message names the file (or the
//! Secret entry) and what to do; none carries a decrypted value, a data key or
//! a private key, so an error may be logged, put in a span or reported to kas
//! as it is.

use std::fmt;

/// Why a SOPS file could not be decrypted, or a key Secret could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SopsError {
    /// The file is not valid YAML/JSON, or its `sops` metadata or one of its
    /// `ENC[...]` values is not in the SOPS format.
    #[error("{path}: not a valid SOPS file: {reason}")]
    Malformed { path: String, reason: String },

    /// The file uses a SOPS feature this crate deliberately leaves out.
    #[error("{path}: {what} are not supported")]
    Unsupported { path: String, what: String },

    /// The file is larger than what one manifest may be.
    #[error("{path}: {size} bytes, more than the limit of {limit} for an encrypted file")]
    TooLarge {
        path: String,
        size: usize,
        limit: usize,
    },

    /// None of the keys given can open the file's data key.
    #[error(
        "none of the keys in the Secret can decrypt {path}: encrypted for {}",
        Recipients(recipients)
    )]
    NoKey {
        path: String,
        /// `age1…` recipients, `PGP fingerprint …` and the cloud KMS keys the
        /// file was encrypted for.
        recipients: Vec<String>,
    },

    /// The file's MAC does not match its content: something was added,
    /// removed, reordered or changed after sops wrote it.
    #[error("{path}: its MAC does not match: the file was changed after it was encrypted")]
    Tampered { path: String },

    /// One value fails its own integrity check, or is plain where the file's
    /// rules say it must be encrypted.
    #[error("{path}: the value at {key} {problem}: the file was changed after it was encrypted")]
    TamperedValue {
        path: String,
        /// Where the value is, e.g. `stringData.password` or `items[2].token`.
        key: String,
        problem: ValueProblem,
    },

    /// An entry of the key Secret cannot be read as a key.
    #[error("bad key in the Secret: {reason}")]
    Keys { reason: String },
}

/// What is wrong with one value of a tampered file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueProblem {
    /// A plain value where the rules demand an `ENC[...]` one: it was put
    /// there by hand, perhaps a secret that was never encrypted.
    NotEncrypted,
    /// AES-GCM refuses it: the ciphertext, its tag or its place in the file
    /// (the additional data) changed.
    DoesNotDecrypt,
}

impl fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueProblem::NotEncrypted => {
                "is not encrypted although the file's rules say it must be"
            }
            ValueProblem::DoesNotDecrypt => "does not decrypt with the file's data key",
        })
    }
}

/// The recipients of a file as one line, or a hint when the file names none.
struct Recipients<'a>(&'a [String]);

impl fmt::Display for Recipients<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no recipient this crate can use");
        }
        f.write_str(&self.0.join(", "))
    }
}
