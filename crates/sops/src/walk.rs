//! The walk over a file's leaves, in document order, that decrypts each leaf
//! the key rules call encrypted and feeds every leaf (or only those, with
//! `mac_only_encrypted`) into the MAC, as sops's `Tree.Decrypt` does.
//!
//! Invariant: the decrypted tree is handed back only together with the MAC it
//! produced; the caller compares that MAC before anything leaves the crate.

use crate::SopsError;
use crate::cipher::{CipherError, DataKey};
use crate::error::ValueProblem;
use crate::mac::Mac;
use crate::metadata::Metadata;
use crate::tree::Node;

/// What the walk over all documents produced.
pub(crate) struct Walked {
    pub(crate) mac: Mac,
    /// Values actually decrypted (empty strings, which sops leaves as they
    /// are, are not counted).
    pub(crate) values: usize,
}

/// Decrypts every document in place. The documents are mappings without
/// their `sops` entry.
pub(crate) fn decrypt_documents(
    file: &str,
    documents: &mut [Node],
    key: &DataKey,
    metadata: &Metadata,
) -> Result<Walked, SopsError> {
    let mut walk = Walk {
        file,
        key,
        metadata,
        mac: Mac::new(metadata.mac_only_encrypted),
        values: 0,
        keys: Vec::new(),
        shown: Vec::new(),
    };
    for document in documents {
        walk.value(document)?;
    }
    Ok(Walked {
        mac: walk.mac,
        values: walk.values,
    })
}

struct Walk<'a> {
    file: &'a str,
    key: &'a DataKey,
    metadata: &'a Metadata,
    mac: Mac,
    values: usize,
    /// The mapping keys down to the current node: the rules' input and the
    /// additional data of its value.
    keys: Vec<String>,
    /// The same path with list indices, for error messages.
    shown: Vec<String>,
}

impl Walk<'_> {
    fn value(&mut self, node: &mut Node) -> Result<(), SopsError> {
        match node {
            Node::Map(entries) => {
                for (key, value) in entries {
                    self.keys.push(key.clone());
                    self.shown.push(format!(".{key}"));
                    let walked = self.value(value);
                    self.keys.pop();
                    self.shown.pop();
                    walked?;
                }
                Ok(())
            }
            Node::List(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.shown.push(format!("[{index}]"));
                    let walked = self.value(item);
                    self.shown.pop();
                    walked?;
                }
                Ok(())
            }
            // sops never visits a null: it is neither decrypted nor hashed.
            Node::Null => Ok(()),
            leaf => self.leaf(leaf),
        }
    }

    fn leaf(&mut self, node: &mut Node) -> Result<(), SopsError> {
        let encrypted = self.metadata.rules.encrypts(&self.keys);
        if encrypted {
            let Node::String(text) = node else {
                return Err(self.tampered(ValueProblem::NotEncrypted));
            };
            // sops writes an empty string as it is, without an envelope.
            if !text.is_empty() {
                let additional_data = format!("{}:", self.keys.join(":"));
                match self.key.decrypt(text, &additional_data) {
                    Ok(plain) => *node = plain.into_node(),
                    Err(CipherError::NotEncrypted) => {
                        return Err(self.tampered(ValueProblem::NotEncrypted));
                    }
                    Err(CipherError::Authentication) => {
                        return Err(self.tampered(ValueProblem::DoesNotDecrypt));
                    }
                    Err(CipherError::Malformed(reason)) => {
                        return Err(SopsError::Malformed {
                            path: self.file.to_owned(),
                            reason: format!("the value at {}: {reason}", self.shown()),
                        });
                    }
                }
                self.values += 1;
            }
        }
        if encrypted || !self.metadata.mac_only_encrypted {
            self.mac.add(node);
        }
        Ok(())
    }

    fn tampered(&self, problem: ValueProblem) -> SopsError {
        SopsError::TamperedValue {
            path: self.file.to_owned(),
            key: self.shown(),
            problem,
        }
    }

    fn shown(&self) -> String {
        let joined = self.shown.concat();
        joined.strip_prefix('.').unwrap_or(&joined).to_owned()
    }
}
