//! Push notifications from image registries: who sent them, and which
//! repositories they name.
//!
//! As with git hosts, a delivery only says "look now": kas scans the named
//! repository itself, so a forged one costs at most one scan. Each
//! registry authenticates its own way, all with the one secret the
//! administrator gives kas (`kas serve --registry-hook-secret-file`):
//!
//! | provider | how the registry is set up | check |
//! |---|---|---|
//! | `distribution` | `notifications.endpoints[].headers: {Authorization: [Bearer <secret>]}` | the header, in constant time |
//! | `harbor` | the webhook policy's "Auth Header": `Bearer <secret>` | the header, in constant time |
//! | `github` | the package webhook's secret | `X-Hub-Signature-256`, HMAC-SHA256 of the body |
//! | `dockerhub` | the webhook URL ends in `?token=<secret>` (Docker Hub signs nothing) | the query parameter, in constant time |

use http::HeaderMap;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::Refusal;

/// A registry's notification dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    Distribution,
    Harbor,
    GitHub,
    DockerHub,
}

impl std::str::FromStr for Registry {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "distribution" => Registry::Distribution,
            "harbor" => Registry::Harbor,
            "github" => Registry::GitHub,
            "dockerhub" => Registry::DockerHub,
            other => {
                return Err(format!(
                    "unknown registry provider {other:?}: distribution, harbor, github or dockerhub"
                ));
            }
        })
    }
}

/// A repository a delivery says was pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The registry host as the delivery names it, when it does.
    pub host: Option<String>,
    /// The repository's path (`team/app`).
    pub path: String,
}

/// Repositories one delivery may name at most (distribution batches
/// events).
const MAX_PUSHED: usize = 100;

/// Checks that the delivery was sent by a registry holding `secret`.
pub fn verify(
    registry: Registry,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    secret: &str,
) -> Result<(), Refusal> {
    // Digests first: comparing the texts would tell their lengths apart.
    let digest = |text: &str| ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let same = |given: &str| bool::from(digest(given).as_ref().ct_eq(digest(secret).as_ref()));
    match registry {
        Registry::Distribution | Registry::Harbor => {
            let value = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(Refusal::Unsigned("Authorization"))?;
            let given = value.strip_prefix("Bearer ").unwrap_or(value);
            match same(given) {
                true => Ok(()),
                false => Err(Refusal::BadSignature("Authorization")),
            }
        }
        Registry::GitHub => crate::verify(crate::Provider::GitHub, headers, body, secret),
        Registry::DockerHub => {
            let token = query
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .ok_or(Refusal::Unsigned("token"))?;
            match same(token) {
                true => Ok(()),
                false => Err(Refusal::BadSignature("token")),
            }
        }
    }
}

/// The repositories a (verified) delivery names as pushed to; a delivery
/// that is not about a push names none.
pub fn pushed(registry: Registry, body: &[u8]) -> Vec<Pushed> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match registry {
        Registry::Distribution => {
            for event in value["events"].as_array().into_iter().flatten() {
                if event["action"] != "push" {
                    continue;
                }
                if let Some(path) = event["target"]["repository"].as_str() {
                    out.push(Pushed {
                        host: event["request"]["host"].as_str().map(str::to_owned),
                        path: path.to_owned(),
                    });
                }
            }
        }
        Registry::Harbor => {
            if value["type"] == "PUSH_ARTIFACT"
                && let Some(path) = value["event_data"]["repository"]["repo_full_name"].as_str()
            {
                let host = value["event_data"]["resources"][0]["resource_url"]
                    .as_str()
                    .and_then(|url| url.split_once('/'))
                    .map(|(host, _)| host.to_owned());
                out.push(Pushed {
                    host,
                    path: path.to_owned(),
                });
            }
        }
        Registry::GitHub => {
            let package = &value["package"];
            if matches!(value["action"].as_str(), Some("published" | "updated"))
                && let Some(url) = package["package_version"]["package_url"].as_str()
            {
                // `ghcr.io/team/app:1.3.0`
                let reference =
                    url.rsplit_once(':').map_or(
                        url,
                        |(name, tag)| {
                            if tag.contains('/') { url } else { name }
                        },
                    );
                if let Some((host, path)) = reference.split_once('/') {
                    out.push(Pushed {
                        host: Some(host.to_owned()),
                        path: path.to_owned(),
                    });
                }
            }
        }
        Registry::DockerHub => {
            if let Some(path) = value["repository"]["repo_name"].as_str() {
                let path = match path.contains('/') {
                    true => path.to_owned(),
                    false => format!("library/{path}"),
                };
                out.push(Pushed {
                    host: Some("docker.io".into()),
                    path,
                });
            }
        }
    }
    out.truncate(MAX_PUSHED);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().expect("a header value"));
        }
        map
    }

    #[test]
    fn each_registry_is_checked_its_own_way() {
        let secret = "hook-secret";
        let bearer = headers(&[("authorization", "Bearer hook-secret")]);
        assert_eq!(
            verify(Registry::Distribution, &bearer, None, b"{}", secret),
            Ok(())
        );
        assert_eq!(
            verify(
                Registry::Harbor,
                &headers(&[("authorization", "hook-secret")]),
                None,
                b"{}",
                secret
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                Registry::Distribution,
                &HeaderMap::new(),
                None,
                b"{}",
                secret
            ),
            Err(Refusal::Unsigned("Authorization"))
        );
        assert_eq!(
            verify(
                Registry::Distribution,
                &headers(&[("authorization", "Bearer nope")]),
                None,
                b"{}",
                secret
            ),
            Err(Refusal::BadSignature("Authorization"))
        );
        assert_eq!(
            verify(
                Registry::DockerHub,
                &HeaderMap::new(),
                Some("a=1&token=hook-secret"),
                b"{}",
                secret
            ),
            Ok(())
        );
        assert!(
            verify(
                Registry::DockerHub,
                &HeaderMap::new(),
                Some("token=x"),
                b"{}",
                secret
            )
            .is_err()
        );
        assert!(verify(Registry::DockerHub, &HeaderMap::new(), None, b"{}", secret).is_err());
        let body = br#"{"action":"published"}"#;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag: String = ring::hmac::sign(&key, body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let signed = headers(&[("x-hub-signature-256", &format!("sha256={tag}"))]);
        assert_eq!(
            verify(Registry::GitHub, &signed, None, body, secret),
            Ok(())
        );
        assert!(verify(Registry::GitHub, &signed, None, b"{}", secret).is_err());
    }

    #[test]
    fn deliveries_name_the_repositories_pushed_to() {
        let distribution = br#"{"events":[{"action":"pull","target":{"repository":"team/old"}},{"action":"push","target":{"repository":"team/app","tag":"1.3.0"},"request":{"host":"127.0.0.1:5000"}}]}"#;
        assert_eq!(
            pushed(Registry::Distribution, distribution),
            [Pushed {
                host: Some("127.0.0.1:5000".into()),
                path: "team/app".into()
            }]
        );
        let harbor = br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"tag":"1.3.0","resource_url":"harbor.example.com/library/app:1.3.0"}],"repository":{"repo_full_name":"library/app"}}}"#;
        assert_eq!(
            pushed(Registry::Harbor, harbor)[0].host.as_deref(),
            Some("harbor.example.com")
        );
        let github = br#"{"action":"published","package":{"package_version":{"package_url":"ghcr.io/team/app:1.3.0"}}}"#;
        assert_eq!(
            pushed(Registry::GitHub, github),
            [Pushed {
                host: Some("ghcr.io".into()),
                path: "team/app".into()
            }]
        );
        let hub = br#"{"push_data":{"tag":"latest"},"repository":{"repo_name":"nginx"}}"#;
        assert_eq!(pushed(Registry::DockerHub, hub)[0].path, "library/nginx");
        assert!(pushed(Registry::Distribution, b"not json").is_empty());
    }
}
