//! The file's MAC: SHA-512 over the plaintext bytes of its leaves in document
//! order, written as uppercase hex and stored encrypted under `sops.mac`. It
//! is what makes reordering, removing or swapping values detectable, since
//! each value on its own only proves it belongs at its path.
//!
//! The bytes of a value are those of sops's Go `ToBytes`, so a file hashes
//! here as it hashed in sops.

use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::tree::Node;

/// The running hash over a file's leaves.
pub(crate) struct Mac(Sha512);

impl Mac {
    /// With `mac_only_encrypted`, sops starts the hash with SHA-256 of
    /// `sops` (its `MACOnlyEncryptedInitialization`), so that turning the
    /// setting on or off always changes the MAC.
    pub(crate) fn new(mac_only_encrypted: bool) -> Mac {
        let mut hash = Sha512::new();
        if mac_only_encrypted {
            hash.update(Sha256::digest(b"sops"));
        }
        Mac(hash)
    }

    /// Adds one leaf; null adds nothing (sops never visits nulls) and
    /// collections are not leaves.
    pub(crate) fn add(&mut self, leaf: &Node) {
        match leaf {
            Node::Null | Node::List(_) | Node::Map(_) => {}
            Node::String(s) => self.0.update(s.as_bytes()),
            Node::Int(i) => self.0.update(i.to_string().as_bytes()),
            Node::Float(f) => self.0.update(go_format_float(*f).as_bytes()),
            Node::Bool(true) => self.0.update(b"True"),
            Node::Bool(false) => self.0.update(b"False"),
        }
    }

    /// Whether the hash equals the MAC sops stored, compared in constant time.
    pub(crate) fn matches(self, stored: &str) -> bool {
        let computed: String = self
            .0
            .finalize()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        computed.as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that
/// reads back as the same float, never in exponent form. Rust's `Display`
/// gives the same digits; only the non-finite spellings differ.
pub(crate) fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f == f64::INFINITY {
        "+Inf".to_owned()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        let cases = [
            (1.0, "1"),
            (0.1, "0.1"),
            (1234.56789, "1234.56789"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (-0.0, "-0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (f, go) in cases {
            assert_eq!(go_format_float(f), go);
        }
    }

    #[test]
    fn leaves_hash_as_sops_to_bytes() {
        let mut mac = Mac::new(false);
        for leaf in [
            Node::String("a".into()),
            Node::Int(-5),
            Node::Bool(true),
            Node::Null,
            Node::Float(2.5),
            Node::Bool(false),
        ] {
            mac.add(&leaf);
        }
        let expected: String = Sha512::digest(b"a-5True2.5False")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(mac.matches(&expected));
    }

    #[test]
    fn mac_only_encrypted_starts_from_sops_constant() {
        // The bytes of sops.go's MACOnlyEncryptedInitialization.
        let initialization = [
            0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47,
            0xbe, 0x0b, 0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81,
            0x76, 0xf2, 0x7d, 0x69,
        ];
        let mut mac = Mac::new(true);
        mac.add(&Node::String("a".into()));
        let mut expected = Sha512::new();
        expected.update(initialization);
        expected.update(b"a");
        let expected: String = expected
            .finalize()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(mac.matches(&expected));
    }

    #[test]
    fn lowercase_hex_does_not_match() {
        let mut mac = Mac::new(false);
        mac.add(&Node::String("a".into()));
        let lower: String = Sha512::digest(b"a")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!mac.matches(&lower));
    }
}
