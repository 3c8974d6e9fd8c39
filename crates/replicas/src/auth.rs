//! How one replica proves to another that it forwarded a request: a MAC
//! over the request's method and path and the time, with a key derived
//! from the shared secret for this use alone. The secret itself never
//! travels, so a replica URL in the database that points elsewhere (the
//! database is shared, and may be written by more than kas) learns
//! nothing it could use later; a captured header is good for that one
//! method and path, for [`WINDOW`] either side of its time.
//!
//! The other keys derived from the same secret (UI sessions, sealing, in
//! their own modules) use other labels, so none of them can stand in for
//! another.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Method};
use ring::hmac;

use super::Secret;

/// The header that carries the proof on a forwarded request. Its
/// presence (valid) also marks the request as routed: the receiving
/// replica never routes it again.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("tether-route");

/// How far a proof's time may be from the receiver's clock, either way.
pub const WINDOW: u64 = 30;

const LABEL: &[u8] = b"tether replica requests v1";

/// The key replicas sign and check forwarded requests with.
#[derive(Clone)]
pub struct RouteKey(hmac::Key);

impl std::fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteKey(…)")
    }
}

/// Why a forwarded request's proof was refused (said in kas's log, never
/// to the caller).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no tether-route header")]
    Missing,
    #[error("a tether-route header that does not parse")]
    Malformed,
    #[error(
        "a proof {0} s from this replica's clock (more than {WINDOW} s: a replay, or clocks apart)"
    )]
    Stale(i64),
    #[error("a proof that does not match the request (another key, method or path)")]
    Mismatch,
}

impl RouteKey {
    pub fn new(secret: &Secret) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
        let derived = hmac::sign(&root, LABEL);
        RouteKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The header for `method` on `path_and_query`, at `now` (Unix seconds).
    pub fn sign(&self, method: &Method, path_and_query: &str, now: u64) -> HeaderValue {
        let nonce = tether_credentials::hex::random::<16>();
        let tag = hmac::sign(&self.0, &message(method, path_and_query, now, &nonce));
        let value = format!(
            "v1 t={now} n={nonce} m={}",
            tether_credentials::hex::encode(tag.as_ref())
        );
        HeaderValue::from_str(&value).expect("ASCII")
    }

    /// Whether `header` proves `method` on `path_and_query` at about `now`.
    pub fn verify(
        &self,
        method: &Method,
        path_and_query: &str,
        header: Option<&HeaderValue>,
        now: u64,
    ) -> Result<(), Refused> {
        let text = header
            .ok_or(Refused::Missing)?
            .to_str()
            .map_err(|_| Refused::Malformed)?;
        let mut parts = text.split(' ');
        if parts.next() != Some("v1") {
            return Err(Refused::Malformed);
        }
        let (mut time, mut nonce, mut tag) = (None, None, None);
        for part in parts {
            match part.split_once('=') {
                Some(("t", t)) => time = t.parse::<u64>().ok(),
                Some(("n", n)) if n.len() == 32 => nonce = Some(n),
                Some(("m", m)) => tag = tether_credentials::hex::decode(m, 64),
                _ => return Err(Refused::Malformed),
            }
        }
        let (Some(time), Some(nonce), Some(tag)) = (time, nonce, tag) else {
            return Err(Refused::Malformed);
        };
        let skew = time as i64 - now as i64;
        if skew.unsigned_abs() > WINDOW {
            return Err(Refused::Stale(skew));
        }
        hmac::verify(&self.0, &message(method, path_and_query, time, nonce), &tag)
            .map_err(|_| Refused::Mismatch)
    }
}

fn message(method: &Method, path_and_query: &str, time: u64, nonce: &str) -> Vec<u8> {
    format!("tether-route v1\n{method}\n{path_and_query}\n{time}\n{nonce}").into_bytes()
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> RouteKey {
        RouteKey::new(&Secret::new(text).expect("long enough"))
    }

    #[test]
    fn a_proof_holds_for_its_method_path_and_window_only() {
        let key = key(&"s".repeat(40));
        let path = "/k8s-proxy/api/v1/namespaces?limit=5";
        let header = key.sign(&Method::GET, path, 1_000_000);

        assert_eq!(
            key.verify(&Method::GET, path, Some(&header), 1_000_000),
            Ok(())
        );
        assert_eq!(
            key.verify(&Method::GET, path, Some(&header), 1_000_030),
            Ok(())
        );
        assert_eq!(
            key.verify(&Method::GET, path, Some(&header), 1_000_031),
            Err(Refused::Stale(-31))
        );
        assert_eq!(
            key.verify(&Method::DELETE, path, Some(&header), 1_000_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            key.verify(
                &Method::GET,
                "/k8s-proxy/api/v1/secrets",
                Some(&header),
                1_000_000
            ),
            Err(Refused::Mismatch)
        );
        let other = self::key(&"t".repeat(40));
        assert_eq!(
            other.verify(&Method::GET, path, Some(&header), 1_000_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            key.verify(&Method::GET, path, None, 1_000_000),
            Err(Refused::Missing)
        );
    }

    #[test]
    fn the_secret_never_travels_and_junk_is_refused() {
        let secret = "s".repeat(40);
        let header = key(&secret).sign(&Method::GET, "/", 5);
        assert!(!header.to_str().expect("ASCII").contains(&secret));
        let key = key(&secret);
        for junk in [
            secret.as_str(),
            "v1",
            "v1 t=5",
            "v2 t=5 n=00000000000000000000000000000000 m=00",
            "v1 t=x n=00000000000000000000000000000000 m=00",
            "v1 t=5 n=short m=00",
            "v1 t=5 n=00000000000000000000000000000000 m=zz",
        ] {
            let value = HeaderValue::from_str(junk).expect("a value");
            assert!(
                key.verify(&Method::GET, "/", Some(&value), 5).is_err(),
                "{junk}"
            );
        }
    }
}
