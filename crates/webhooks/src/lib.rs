//! Push webhooks from git hosts (and, in [`registry`], push notifications
//! from image registries): who signed the request, and what it says.
//!
//! A webhook only ever tells kas "something changed": nothing in the
//! payload is trusted beyond the pushed ref's name, which decides whether
//! to look. kas then reads git itself, so a forged or replayed delivery
//! can at most cause one more fetch (and deliveries are rate-limited per
//! project). Each host signs its own way:
//!
//! | provider | header | check |
//! |---|---|---|
//! | `github` | `X-Hub-Signature-256: sha256=<hex>` | HMAC-SHA256 of the body |
//! | `gitea`, `forgejo` | `X-Gitea-Signature` / `X-Forgejo-Signature: <hex>` | HMAC-SHA256 of the body |
//! | `bitbucket` | `X-Hub-Signature: sha256=<hex>` | HMAC-SHA256 of the body |
//! | `gitlab` | `X-Gitlab-Token: <secret>` | the secret itself, compared in constant time |
//! | `generic` | `X-Tether-Signature: sha256=<hex>` | HMAC-SHA256 of the body |

pub mod registry;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use ring::hmac;
use serde_json::Value;
use subtle::ConstantTimeEq;

/// A git host's webhook dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Bitbucket,
    Generic,
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "github" => Provider::GitHub,
            "gitlab" => Provider::GitLab,
            "gitea" | "forgejo" => Provider::Gitea,
            "bitbucket" => Provider::Bitbucket,
            "generic" => Provider::Generic,
            other => {
                return Err(format!(
                    "unknown webhook provider {other:?}: github, gitlab, gitea, forgejo, bitbucket or generic"
                ));
            }
        })
    }
}

/// Why a delivery is refused (401): said in one line, without the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request carries no {0} header")]
    Unsigned(&'static str),
    #[error("the {0} header does not match this project's webhook secret")]
    BadSignature(&'static str),
}

/// Checks that `body` was sent by someone holding `secret`.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<(), Refusal> {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok());
    let hmac_hex = |name: &'static str, value: Option<&str>, prefixed: bool| {
        let value = value.ok_or(Refusal::Unsigned(name))?;
        let hex = match prefixed {
            true => value
                .strip_prefix("sha256=")
                .ok_or(Refusal::BadSignature(name))?,
            false => value,
        };
        let tag =
            tether_credentials::hex::decode(hex.trim(), 64).ok_or(Refusal::BadSignature(name))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        hmac::verify(&key, body, &tag).map_err(|_| Refusal::BadSignature(name))
    };
    match provider {
        Provider::GitHub => hmac_hex("X-Hub-Signature-256", header("x-hub-signature-256"), true),
        Provider::Gitea => match header("x-gitea-signature") {
            Some(value) => hmac_hex("X-Gitea-Signature", Some(value), false),
            None => hmac_hex("X-Forgejo-Signature", header("x-forgejo-signature"), false),
        },
        Provider::Bitbucket => hmac_hex("X-Hub-Signature", header("x-hub-signature"), true),
        Provider::Generic => hmac_hex("X-Tether-Signature", header("x-tether-signature"), true),
        Provider::GitLab => {
            let token = header("x-gitlab-token").ok_or(Refusal::Unsigned("X-Gitlab-Token"))?;
            match bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
                true => Ok(()),
                false => Err(Refusal::BadSignature("X-Gitlab-Token")),
            }
        }
    }
}

/// What a (verified) delivery says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Refs were pushed (`refs/heads/main`, `refs/tags/v1`); empty: the
    /// sender did not say which (the generic provider).
    Push(Vec<String>),
    /// Anything else (a ping, an issue, a pull request): acknowledged and
    /// ignored; the name says which.
    Other(String),
}

/// Reads the event kind from the headers and the pushed refs from the
/// body; a body that does not parse is an `Other`.
pub fn event(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Event {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let top_ref = |json: &Value| -> Vec<String> {
        json.get("ref")
            .and_then(Value::as_str)
            .map(|r| vec![r.to_owned()])
            .unwrap_or_default()
    };
    match provider {
        Provider::GitHub => match header("x-github-event").as_str() {
            "push" => Event::Push(top_ref(&json())),
            other => Event::Other(other.to_owned()),
        },
        Provider::Gitea => {
            let kind = match header("x-gitea-event") {
                kind if kind.is_empty() => header("x-forgejo-event"),
                kind => kind,
            };
            match kind.as_str() {
                "push" => Event::Push(top_ref(&json())),
                other => Event::Other(other.to_owned()),
            }
        }
        Provider::GitLab => match header("x-gitlab-event").as_str() {
            "Push Hook" | "Tag Push Hook" => Event::Push(top_ref(&json())),
            other => Event::Other(other.to_owned()),
        },
        Provider::Bitbucket => match header("x-event-key").as_str() {
            "repo:push" => {
                let json = json();
                let refs = json
                    .pointer("/push/changes")
                    .and_then(Value::as_array)
                    .map(|changes| {
                        changes
                            .iter()
                            .filter_map(|c| {
                                let new = c.get("new")?;
                                let name = new.get("name")?.as_str()?;
                                match new.get("type")?.as_str()? {
                                    "branch" => Some(format!("refs/heads/{name}")),
                                    "tag" => Some(format!("refs/tags/{name}")),
                                    _ => None,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Event::Push(refs)
            }
            other => Event::Other(other.to_owned()),
        },
        Provider::Generic => Event::Push(top_ref(&json())),
    }
}

/// Whether a push of `refs` concerns a project that reads `project_ref`
/// (`None`: its default branch, and the agents may follow any branch or
/// tag of it): branch and tag pushes do; pull-request refs, notes and the
/// like do not.
pub fn concerns(refs: &[String], project_ref: Option<&str>) -> bool {
    if refs.is_empty() {
        return true;
    }
    refs.iter().any(|r| match project_ref {
        Some(wanted) => {
            r == wanted
                || r.strip_prefix("refs/heads/") == Some(wanted)
                || r.strip_prefix("refs/tags/") == Some(wanted)
        }
        None => r.starts_with("refs/heads/") || r.starts_with("refs/tags/"),
    })
}

/// Verified deliveries accepted per project: a burst, then one per
/// interval.
const BURST: u32 = 20;
const REFILL: Duration = Duration::from_millis(500);
/// Refused deliveries (unknown project, bad signature) a source address
/// may make: a stranger's flood is cut at it, while a git host whose
/// deliveries verify spends nothing of it, even behind a balancer that
/// shows every delivery from one address.
const SOURCE_BURST: u32 = 60;
const SOURCE_REFILL: Duration = Duration::from_millis(50);
/// Keys tracked at most (the map is cleared past it).
const MAX_TRACKED: usize = 10_000;

/// A token bucket per key: a project's verified deliveries (so that its
/// own pushes cost a bounded number of fetches), or a source address's
/// deliveries before verification (so that nobody can spend another's
/// budget: an unsigned delivery never counts against a project).
#[derive(Debug)]
pub struct Limiter {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Default for Limiter {
    /// Per project, for verified deliveries.
    fn default() -> Self {
        Limiter::new(BURST, REFILL)
    }
}

impl Limiter {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Limiter {
            burst,
            refill,
            buckets: Mutex::default(),
        }
    }

    /// Per source address, for deliveries not yet verified.
    pub fn per_source() -> Self {
        Limiter::new(SOURCE_BURST, SOURCE_REFILL)
    }

    /// Whether `key` has no budget left now (nothing is taken).
    pub fn exhausted(&self, key: &str) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(key) {
            None => false,
            Some((tokens, since)) => {
                let refilled = (since.elapsed().as_millis() / self.refill.as_millis()) as u32;
                tokens.saturating_add(refilled) == 0
            }
        }
    }

    /// Takes one delivery of `key`; false when over the limit.
    pub fn admit(&self, key: &str) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            buckets.clear();
        }
        let now = Instant::now();
        let (tokens, since) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refilled = (now.duration_since(*since).as_millis() / self.refill.as_millis()) as u32;
        if refilled > 0 {
            *tokens = (*tokens + refilled).min(self.burst);
            *since = now;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

/// A source address as the per-source limit counts it: IPv4 whole, IPv6
/// by its /64 (one host holds a whole /64).
pub fn source_key(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hook-secret-0123456789";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    fn sign(body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        hmac::sign(&key, body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn each_provider_verifies_its_own_signature() {
        let sig = sign(BODY);
        let cases = [
            (
                Provider::GitHub,
                headers(&[("x-hub-signature-256", format!("sha256={sig}"))]),
            ),
            (
                Provider::Gitea,
                headers(&[("x-gitea-signature", sig.clone())]),
            ),
            (
                Provider::Gitea,
                headers(&[("x-forgejo-signature", sig.clone())]),
            ),
            (
                Provider::Bitbucket,
                headers(&[("x-hub-signature", format!("sha256={sig}"))]),
            ),
            (
                Provider::Generic,
                headers(&[("x-tether-signature", format!("sha256={sig}"))]),
            ),
            (
                Provider::GitLab,
                headers(&[("x-gitlab-token", SECRET.to_owned())]),
            ),
        ];
        for (provider, signed) in cases {
            assert_eq!(
                verify(provider, &signed, BODY, SECRET),
                Ok(()),
                "{provider:?}"
            );
            assert!(
                verify(provider, &signed, BODY, "another-secret").is_err(),
                "{provider:?}: another secret"
            );
            if provider != Provider::GitLab {
                assert!(
                    verify(provider, &signed, b"{\"ref\":\"refs/heads/evil\"}", SECRET).is_err(),
                    "{provider:?}: a changed body"
                );
            }
            assert!(
                matches!(
                    verify(provider, &HeaderMap::new(), BODY, SECRET),
                    Err(Refusal::Unsigned(_))
                ),
                "{provider:?}: unsigned"
            );
        }
    }

    #[test]
    fn malformed_signatures_are_refused_not_panicked_on() {
        for bad in [
            "sha256=",
            "sha256=zz",
            "sha256=abc",
            "sha1=00",
            "",
            "sha256=ðð",
        ] {
            let signed = headers(&[("x-hub-signature-256", bad.to_owned())]);
            assert!(
                verify(Provider::GitHub, &signed, BODY, SECRET).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn events_name_the_pushed_refs() {
        let github = headers(&[("x-github-event", "push".to_owned())]);
        assert_eq!(
            event(Provider::GitHub, &github, BODY),
            Event::Push(vec!["refs/heads/main".into()])
        );
        let ping = headers(&[("x-github-event", "ping".to_owned())]);
        assert_eq!(
            event(Provider::GitHub, &ping, b"{}"),
            Event::Other("ping".into())
        );
        let tag = headers(&[("x-gitlab-event", "Tag Push Hook".to_owned())]);
        assert_eq!(
            event(Provider::GitLab, &tag, br#"{"ref":"refs/tags/v1.2.0"}"#),
            Event::Push(vec!["refs/tags/v1.2.0".into()])
        );
        let mr = headers(&[("x-gitlab-event", "Merge Request Hook".to_owned())]);
        assert!(matches!(
            event(Provider::GitLab, &mr, BODY),
            Event::Other(_)
        ));
        let bitbucket = headers(&[("x-event-key", "repo:push".to_owned())]);
        let body = br#"{"push":{"changes":[{"new":{"type":"branch","name":"main"}},{"new":{"type":"tag","name":"v2"}},{"new":null}]}}"#;
        assert_eq!(
            event(Provider::Bitbucket, &bitbucket, body),
            Event::Push(vec!["refs/heads/main".into(), "refs/tags/v2".into()])
        );
        let gitea = headers(&[("x-gitea-event", "push".to_owned())]);
        assert_eq!(
            event(Provider::Gitea, &gitea, b"not json"),
            Event::Push(Vec::new())
        );
    }

    #[test]
    fn only_branch_and_tag_pushes_of_the_projects_ref_concern_it() {
        let refs = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(concerns(&refs(&["refs/heads/main"]), None));
        assert!(concerns(&refs(&["refs/tags/v1"]), None));
        assert!(!concerns(&refs(&["refs/pull/4/head"]), None));
        assert!(concerns(&refs(&["refs/heads/main"]), Some("main")));
        assert!(!concerns(&refs(&["refs/heads/feature"]), Some("main")));
        assert!(concerns(&refs(&["refs/tags/v1"]), Some("v1")));
        assert!(concerns(&[], Some("main")), "the sender did not say");
    }

    #[test]
    fn sources_are_counted_by_address_and_v6_by_its_64() {
        let key = |a: &str| source_key(a.parse().expect("an address"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn a_flood_is_cut_to_a_burst_per_project() {
        let limiter = Limiter::default();
        let admitted = (0..100).filter(|_| limiter.admit("team/app")).count();
        assert_eq!(admitted, BURST as usize);
        assert!(
            limiter.admit("team/other"),
            "other projects are not held up"
        );
    }
}
