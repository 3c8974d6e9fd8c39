//! Who is signed in to the web UI: a session cookie kas signs, so that any
//! replica reads it without shared state. The cookie holds who (the admin,
//! or a user and the id of the personal access token they signed in with),
//! when it expires, and the session's CSRF token; it is HttpOnly, Secure,
//! SameSite=Strict and scoped to `/ui`. A user's session ends when the user
//! is deleted or the token is revoked or expires: both are checked on every
//! request.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "tether_session";
/// How long a session lasts.
pub const LIFETIME_SECS: i64 = 8 * 3600;

/// Who a session is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Who {
    Admin,
    User { name: String, token_id: i64 },
}

/// The header a plan forwarded to another replica carries the admin's
/// session in (the cookie's value), for that replica to authorize it.
pub const FORWARDED_HEADER: &str = "tether-ui-session";

/// A verified session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Names it for sign-out on every replica (a cookie without one, from
    /// before, is not accepted).
    #[serde(default)]
    pub id: String,
    /// Unix milliseconds: an admin session signed before the admin token
    /// was last set is over.
    #[serde(default)]
    pub issued_at_ms: i64,
    pub who: Who,
    /// Unix seconds.
    pub expires_at: i64,
    /// Every form of this session carries it.
    pub csrf: String,
}

impl Session {
    pub fn new(who: Who) -> Self {
        Session {
            id: tether_credentials::hex::random::<16>(),
            issued_at_ms: crate::admin_token::now_ms(),
            who,
            expires_at: now() + LIFETIME_SECS,
            csrf: tether_credentials::hex::random::<16>(),
        }
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// Signs and reads session cookies.
#[derive(Clone)]
pub struct Sessions {
    key: hmac::Key,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(…)")
    }
}

impl Sessions {
    /// Sessions signed with a key derived from `secret`: kas's session
    /// key file, or the replicas' shared secret so that every replica
    /// reads every session.
    pub fn new(secret: &[u8]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let key = hmac::sign(&derive, b"tether web UI sessions v1");
        Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
        }
    }

    /// The cookie's value for `session`.
    pub fn seal(&self, session: &Session) -> String {
        let payload =
            tether_credentials::hex::encode(&serde_json::to_vec(session).unwrap_or_default());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!(
            "{payload}.{}",
            tether_credentials::hex::encode(tag.as_ref())
        )
    }

    /// The session in a cookie's value, if kas signed it and it has not
    /// expired.
    pub fn open(&self, value: &str) -> Option<Session> {
        let (payload, tag) = value.split_once('.')?;
        hmac::verify(
            &self.key,
            payload.as_bytes(),
            &tether_credentials::hex::decode(tag, 64)?,
        )
        .ok()?;
        let session: Session =
            serde_json::from_slice(&tether_credentials::hex::decode(payload, 4096)?).ok()?;
        (session.expires_at > now()).then_some(session)
    }

    /// The `Set-Cookie` value that starts `session`.
    pub fn set_cookie(&self, session: &Session) -> String {
        format!(
            "{COOKIE}={}; Path=/ui; Max-Age={LIFETIME_SECS}; HttpOnly; Secure; SameSite=Strict",
            self.seal(session)
        )
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn clear_cookie() -> String {
        format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
    }
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_as_signed_and_unexpired() {
        let sessions = Sessions::new(b"one key");
        let session = Session::new(Who::User {
            name: "ann".into(),
            token_id: 7,
        });
        let sealed = sessions.seal(&session);
        assert_eq!(sessions.open(&sealed), Some(session.clone()));
        assert_eq!(Sessions::new(b"another key").open(&sealed), None);
        // A payload changed to say admin keeps the old signature: refused.
        let (_, tag) = sealed.split_once('.').expect("sealed");
        let forged = Session {
            who: Who::Admin,
            ..session.clone()
        };
        let payload = tether_credentials::hex::encode(&serde_json::to_vec(&forged).expect("json"));
        assert_eq!(sessions.open(&format!("{payload}.{tag}")), None);
        let expired = Session {
            expires_at: now() - 1,
            ..session
        };
        assert_eq!(sessions.open(&sessions.seal(&expired)), None);
        for junk in ["", ".", "zz.zz", "abc", "00.00"] {
            assert_eq!(sessions.open(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_httponly_secure_strict_and_scoped() {
        let cookie = Sessions::new(b"k").set_cookie(&Session::new(Who::Admin));
        for flag in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/ui",
            "Max-Age=",
        ] {
            assert!(cookie.contains(flag), "{flag}: {cookie}");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            format!("other=1; {COOKIE}=abc.def")
                .parse()
                .expect("header"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc.def"));
    }
}
