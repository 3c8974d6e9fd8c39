//! Tokens that authenticate to kas.
//!
//! A [`Token`] is generated from the operating system's randomness, shown to
//! its owner once, and never stored: kas keeps only its [`TokenHash`]
//! (SHA-256) and compares hashes in constant time. Every token starts with a
//! prefix naming its kind (`tthr_agent_…`), so that secret scanners can find
//! a leaked one and a token of one kind is never accepted as another.
//!
//! A token's text can only be read through [`Token::expose_secret`]; its
//! `Debug` output is redacted, and it has no `Display`, so it cannot reach a
//! log line or an error message by accident.
//!
//! Architecture invariant: no IO beyond reading randomness; no storage.

pub mod hex;

use std::fmt;

use rand::Rng;
use subtle::ConstantTimeEq;

/// Random characters in a token: 43 from a 62-letter alphabet carry more
/// than 256 bits, as much as the SHA-256 that stores them.
pub const RANDOM_LEN: usize = 43;

/// What a token grants; its prefix says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Authenticates one agent's connections.
    Agent,
    /// Authenticates kas's administrators to the REST API.
    Admin,
    /// A project access token: CI jobs of one project, through the
    /// Kubernetes API proxy.
    Project,
    /// A personal access token of a kas user, through the Kubernetes API
    /// proxy.
    User,
}

/// A token in clear text.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    kind: TokenKind,
    text: String,
}

/// SHA-256 of a token's full text: the only form kas stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

/// Why a text is not a token, said without repeating the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "not a Tether token: it lacks a known prefix (tthr_agent_, tthr_admin_, tthr_project_, tthr_user_)"
    )]
    UnknownPrefix,
    #[error("a {0:?} token was expected, another kind was given")]
    WrongKind(TokenKind),
    #[error("malformed token: expected {RANDOM_LEN} letters and digits after the prefix")]
    Malformed,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("a token hash is 64 hex digits")]
    BadHash,
}

// === impl TokenKind ===

impl TokenKind {
    const ALL: [TokenKind; 4] = [
        TokenKind::Agent,
        TokenKind::Admin,
        TokenKind::Project,
        TokenKind::User,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Agent => "tthr_agent_",
            TokenKind::Admin => "tthr_admin_",
            TokenKind::Project => "tthr_project_",
            TokenKind::User => "tthr_user_",
        }
    }
}

// === impl Token ===

impl Token {
    /// A new random token of `kind`.
    pub fn generate(kind: TokenKind) -> Self {
        // ThreadRng is a CSPRNG seeded from, and periodically reseeded by, the
        // operating system.
        let random: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        Token {
            kind,
            text: format!("{}{random}", kind.prefix()),
        }
    }

    /// Reads a token given by a user or a client. Surrounding whitespace (a
    /// trailing newline in a token file) is ignored.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let (kind, random) = TokenKind::ALL
            .iter()
            .find_map(|k| text.strip_prefix(k.prefix()).map(|rest| (*k, rest)))
            .ok_or(TokenError::UnknownPrefix)?;
        if random.len() != RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Malformed);
        }
        Ok(Token {
            kind,
            text: text.to_owned(),
        })
    }

    /// Like [`Token::parse`], and the token must be of `kind`.
    pub fn parse_kind(text: &str, kind: TokenKind) -> Result<Self, TokenError> {
        let token = Token::parse(text)?;
        if token.kind != kind {
            return Err(TokenError::WrongKind(kind));
        }
        Ok(token)
    }

    /// Reads the token of an `Authorization: Bearer <token>` header value.
    pub fn from_bearer(header: &str) -> Result<Self, TokenError> {
        let (scheme, rest) = header.trim().split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::NotBearer);
        }
        Token::parse(rest)
    }

    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The clear text, for the one time it is shown to its owner or sent by
    /// a client. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> TokenHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.text.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        TokenHash(bytes)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}<redacted>)", self.kind.prefix())
    }
}

// === impl TokenHash ===

impl TokenHash {
    /// Whether `token` hashes to this, in time independent of where the
    /// hashes differ.
    pub fn matches(&self, token: &Token) -> bool {
        self.ct_eq(&token.hash())
    }

    /// Compares two hashes in constant time.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Result<Self, TokenError> {
        if hex.len() != 64 {
            return Err(TokenError::BadHash);
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or(TokenError::BadHash)?, 16)
                .map_err(|_| TokenError::BadHash)?;
        }
        Ok(TokenHash(bytes))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn generated_tokens_are_unique_prefixed_and_parse_back() {
        let mut seen = HashSet::new();
        for kind in TokenKind::ALL {
            for _ in 0..1000 {
                let token = Token::generate(kind);
                let text = token.expose_secret();
                assert!(text.starts_with(kind.prefix()));
                assert_eq!(text.len(), kind.prefix().len() + RANDOM_LEN);
                assert_eq!(Token::parse(text).as_ref(), Ok(&token));
                assert!(seen.insert(text.to_owned()), "duplicate token");
            }
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_full_text() {
        let token = Token::parse(&format!("tthr_agent_{}", "a".repeat(RANDOM_LEN))).expect("valid");
        // printf 'tthr_agent_aaa…a' | sha256sum, computed outside this code.
        assert_eq!(
            token.hash().to_hex(),
            "439e77a33a35639b1f27194c80e16526d3095400e6ba869ffaf1acb6819e15e4"
        );
    }

    #[test]
    fn hashes_match_only_their_token() {
        let a = Token::generate(TokenKind::Agent);
        let b = Token::generate(TokenKind::Agent);
        assert!(a.hash().matches(&a));
        assert!(!a.hash().matches(&b));
        let stored = TokenHash::from_hex(&a.hash().to_hex()).expect("round trip");
        assert!(stored.matches(&a));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let token = Token::generate(TokenKind::Admin);
        let random = &token.expose_secret()[TokenKind::Admin.prefix().len()..];
        let shown = format!("{token:?} {:?}", Some(&token));
        assert!(!shown.contains(random), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn rejects_what_is_not_a_token_of_the_wanted_kind() {
        let agent = Token::generate(TokenKind::Agent);
        assert_eq!(
            Token::parse_kind(agent.expose_secret(), TokenKind::Admin),
            Err(TokenError::WrongKind(TokenKind::Admin))
        );
        for bad in [
            "",
            "glagent-abc",
            "tthr_agent_short",
            &format!("tthr_agent_{}!", "a".repeat(42)),
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
        // Errors never echo what was given.
        let secretish = format!("tthr_agent_{}", "s".repeat(50));
        let err = Token::parse(&secretish).expect_err("too long").to_string();
        assert!(!err.contains("ssss"), "{err}");
    }

    #[test]
    fn reads_bearer_headers_and_token_files() {
        let token = Token::generate(TokenKind::Agent);
        let header = format!("Bearer {}", token.expose_secret());
        assert_eq!(Token::from_bearer(&header).as_ref(), Ok(&token));
        assert_eq!(
            Token::from_bearer(&format!("bearer {}", token.expose_secret())).as_ref(),
            Ok(&token)
        );
        assert_eq!(
            Token::from_bearer(token.expose_secret()),
            Err(TokenError::NotBearer)
        );
        assert_eq!(
            Token::from_bearer(&format!("Basic {}", token.expose_secret())),
            Err(TokenError::NotBearer)
        );
        assert_eq!(
            Token::parse(&format!("{}\n", token.expose_secret())).as_ref(),
            Ok(&token)
        );
    }

    #[test]
    fn bad_hashes_are_refused() {
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"0".repeat(63),
            "é".repeat(32).as_str(),
        ] {
            assert_eq!(
                TokenHash::from_hex(bad),
                Err(TokenError::BadHash),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = Token::parse(&text);
            let _ = Token::from_bearer(&text);
            let _ = TokenHash::from_hex(&text);
        }
    }
}
