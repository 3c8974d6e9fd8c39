//! `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` values: AES-256-GCM with
//! sops's 32-byte nonce, the value's place in the file as additional data (so
//! a value moved to another key no longer decrypts), and the original type
//! restored from the `type` field.
//!
//! Invariant: a plaintext leaves this module only inside a [`Plain`] value;
//! errors describe the envelope, never its content.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use crate::tree::Node;

/// AES-256-GCM with the 32-byte nonce sops uses (Go's
/// `NewGCMWithNonceSize(32)`), not the usual 12.
type SopsGcm = AesGcm<Aes256, U32>;

const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 16;

/// The data key every value of a file is encrypted with.
pub(crate) struct DataKey([u8; 32]);

/// A decrypted value with its type restored.
#[derive(Debug, PartialEq)]
pub(crate) enum Plain {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `type:comment`: sops stores YAML comments this way; they are not data.
    Comment,
}

/// Why a value did not decrypt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CipherError {
    /// Not of the `ENC[AES256_GCM,…]` shape at all.
    NotEncrypted,
    /// Of the shape, but a field is wrong (names which, never a value).
    Malformed(String),
    /// AES-GCM rejects it: changed ciphertext, tag, or additional data.
    Authentication,
}

// === impl DataKey ===

impl DataKey {
    /// A data key must be 32 bytes: AES-256.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        bytes.try_into().ok().map(DataKey)
    }

    /// Opens one `ENC[...]` value; `additional_data` is its path, e.g.
    /// `data:password:`, or `lastmodified` for the MAC.
    pub(crate) fn decrypt(&self, value: &str, additional_data: &str) -> Result<Plain, CipherError> {
        let envelope = Envelope::parse(value)?;
        let cipher = SopsGcm::new((&self.0).into());
        let mut sealed = envelope.data;
        sealed.extend_from_slice(&envelope.tag);
        let nonce = Nonce::<U32>::try_from(envelope.iv.as_slice())
            .map_err(|_| CipherError::Malformed("the iv is not 32 bytes".into()))?;
        let plaintext = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed,
                    aad: additional_data.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Authentication)?;
        envelope.kind.restore(plaintext)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

// === impl Envelope ===

struct Envelope {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Bytes,
    Time,
    Comment,
}

impl Envelope {
    fn parse(value: &str) -> Result<Envelope, CipherError> {
        let inner = value
            .strip_prefix("ENC[AES256_GCM,data:")
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or(CipherError::NotEncrypted)?;
        let (data, rest) = inner.split_once(",iv:").ok_or(CipherError::NotEncrypted)?;
        let (iv, rest) = rest.split_once(",tag:").ok_or(CipherError::NotEncrypted)?;
        let (tag, kind) = rest.split_once(",type:").ok_or(CipherError::NotEncrypted)?;
        let field = |name: &str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|_| CipherError::Malformed(format!("its {name} is not base64")))
        };
        let envelope = Envelope {
            data: field("data", data)?,
            iv: field("iv", iv)?,
            tag: field("tag", tag)?,
            kind: Kind::parse(kind)?,
        };
        if envelope.iv.len() != NONCE_BYTES {
            return Err(CipherError::Malformed(format!(
                "its iv is {} bytes, not {NONCE_BYTES}",
                envelope.iv.len()
            )));
        }
        if envelope.tag.len() != TAG_BYTES {
            return Err(CipherError::Malformed(format!(
                "its tag is {} bytes, not {TAG_BYTES}",
                envelope.tag.len()
            )));
        }
        Ok(envelope)
    }
}

impl Kind {
    fn parse(name: &str) -> Result<Kind, CipherError> {
        Ok(match name {
            "str" => Kind::Str,
            // sops writes `int`; `int64` is what its Go API can also produce.
            "int" | "int64" => Kind::Int,
            "float" => Kind::Float,
            "bool" => Kind::Bool,
            "bytes" => Kind::Bytes,
            // sops 3.10+ keeps YAML timestamps as times, written RFC 3339.
            "time" => Kind::Time,
            "comment" => Kind::Comment,
            _ => {
                return Err(CipherError::Malformed(format!(
                    "its type `{}` is unknown",
                    name.chars().take(16).collect::<String>()
                )));
            }
        })
    }

    /// Types the plaintext as sops's Go code does (`strconv.Atoi`,
    /// `ParseFloat`, `ParseBool`).
    fn restore(self, plaintext: Vec<u8>) -> Result<Plain, CipherError> {
        let text = String::from_utf8(plaintext)
            .map_err(|_| CipherError::Malformed("its plaintext is not UTF-8".into()))?;
        let wrong = |ty: &str| CipherError::Malformed(format!("its plaintext is not a valid {ty}"));
        Ok(match self {
            Kind::Str | Kind::Bytes => Plain::String(text),
            // The text is what Go's `Time.MarshalText` wrote, and what the MAC
            // hashes; Kubernetes takes times as strings anyway.
            Kind::Time => Plain::String(text),
            Kind::Int => Plain::Int(text.parse().map_err(|_| wrong("int"))?),
            Kind::Float => Plain::Float(text.parse().map_err(|_| wrong("float"))?),
            Kind::Bool => Plain::Bool(parse_go_bool(&text).ok_or_else(|| wrong("bool"))?),
            Kind::Comment => Plain::Comment,
        })
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// === impl Plain ===

impl Plain {
    /// The value as it goes into the decrypted document.
    pub(crate) fn into_node(self) -> Node {
        match self {
            Plain::String(s) => Node::String(s),
            Plain::Int(i) => Node::Int(i.into()),
            Plain::Float(f) => Node::Float(f),
            Plain::Bool(b) => Node::Bool(b),
            Plain::Comment => Node::Null,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encrypts like sops does, for tests that need values without the sops
    /// binary.
    pub(crate) fn seal(
        key: &[u8; 32],
        plaintext: &str,
        aad: &str,
        ty: &str,
        iv: [u8; 32],
    ) -> String {
        let cipher = SopsGcm::new(key.into());
        let nonce = Nonce::<U32>::from(iv);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("encrypts");
        let (data, tag) = sealed.split_at(sealed.len() - TAG_BYTES);
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{ty}]",
            STANDARD.encode(data),
            STANDARD.encode(iv),
            STANDARD.encode(tag)
        )
    }

    const KEY: [u8; 32] = [7; 32];

    fn key() -> DataKey {
        DataKey::from_bytes(&KEY).expect("32 bytes")
    }

    #[test]
    fn restores_each_type() {
        let cases = [
            ("hunter2", "str", Plain::String("hunter2".into())),
            ("42", "int", Plain::Int(42)),
            ("-3", "int64", Plain::Int(-3)),
            ("2.5", "float", Plain::Float(2.5)),
            ("True", "bool", Plain::Bool(true)),
            ("False", "bool", Plain::Bool(false)),
            ("raw", "bytes", Plain::String("raw".into())),
            (
                "2024-01-02T00:00:00Z",
                "time",
                Plain::String("2024-01-02T00:00:00Z".into()),
            ),
            (" a comment", "comment", Plain::Comment),
        ];
        for (plaintext, ty, expected) in cases {
            let value = seal(&KEY, plaintext, "a:b:", ty, [1; 32]);
            assert_eq!(key().decrypt(&value, "a:b:"), Ok(expected), "{ty}");
        }
    }

    #[test]
    fn another_place_in_the_file_does_not_decrypt() {
        let value = seal(&KEY, "hunter2", "data:password:", "str", [1; 32]);
        assert_eq!(
            key().decrypt(&value, "data:username:"),
            Err(CipherError::Authentication)
        );
    }

    #[test]
    fn another_key_does_not_decrypt() {
        let value = seal(&KEY, "hunter2", "a:", "str", [1; 32]);
        let other = DataKey::from_bytes(&[8; 32]).expect("32 bytes");
        assert_eq!(
            other.decrypt(&value, "a:"),
            Err(CipherError::Authentication)
        );
    }

    #[test]
    fn a_changed_type_does_not_change_the_plaintext_check() {
        // The type is outside the AEAD; a wrong one fails to parse instead.
        let value = seal(&KEY, "hunter2", "a:", "str", [1; 32]).replace("type:str", "type:int");
        assert!(matches!(
            key().decrypt(&value, "a:"),
            Err(CipherError::Malformed(m)) if !m.contains("hunter2")
        ));
    }

    #[test]
    fn plain_strings_are_not_encrypted_values() {
        for value in [
            "hunter2",
            "ENC[AES256_GCM,data:abc]",
            "ENC[AES256_GCM,data:,iv:,tag:,type:str",
        ] {
            assert_eq!(
                key().decrypt(value, "a:"),
                Err(CipherError::NotEncrypted),
                "{value}"
            );
        }
    }

    #[test]
    fn a_short_iv_is_malformed() {
        let value = seal(&KEY, "x", "a:", "str", [1; 32]);
        let short = value.replace(&STANDARD.encode([1u8; 32]), &STANDARD.encode([1u8; 12]));
        assert!(matches!(
            key().decrypt(&short, "a:"),
            Err(CipherError::Malformed(_))
        ));
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("t"), Some(true));
        assert_eq!(parse_go_bool("FALSE"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
