//! Charts from OCI registries (`oci://registry/path`), fetched by kas with
//! the distribution API rather than by helm: the manifest of the exact
//! version names the chart layer and its digest, the layer is downloaded
//! (bounded, with a deadline) and checked against it. Anonymous pulls,
//! including a registry's anonymous bearer token (as ghcr.io and Docker
//! Hub require); one redirect for the blob (registries send blobs from a
//! CDN). A registry on loopback is spoken to over plain HTTP, any other
//! over HTTPS.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use ring::digest;
use serde_json::Value;

use crate::charts::{ChartName, ChartVersion};
use crate::client::{FETCH_TIMEOUT, GetError, Https, MAX_CHART_BYTES};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json";
const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Where a chart is in a registry.
#[derive(Debug, PartialEq, Eq)]
struct Location {
    base: String,
    repository: String,
}

/// Why a repository is not one of a registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("{0:?} is not an oci:// repository")]
    NotOci(String),
    #[error("{0:?} names no registry")]
    NoRegistry(String),
}

/// Why a chart was not pulled from a registry. Each names the chart or
/// the URL.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Locate(#[from] LocateError),
    #[error(transparent)]
    Get(#[from] GetError),
    #[error("{url}: not a manifest: {source}")]
    NotAManifest {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{repository}/{chart}:{version} is not a Helm chart (no chart layer)")]
    NoChartLayer {
        repository: String,
        chart: ChartName,
        version: ChartVersion,
    },
    #[error("{repository}/{chart}:{version}: the chart layer has no sha256 digest")]
    NoLayerDigest {
        repository: String,
        chart: ChartName,
        version: ChartVersion,
    },
    #[error("{url}: digest {actual} is not the manifest's {expected}")]
    DigestMismatch {
        url: String,
        actual: String,
        expected: String,
    },
    /// The whole pull (manifest and blob) took too long.
    #[error("{repository} did not answer within {after:?}")]
    Timeout {
        repository: String,
        after: std::time::Duration,
    },
    #[error("{url}: a redirect without a location")]
    NoLocation { url: String },
    #[error("{url}: too many redirects or challenges")]
    TooManyHops { url: String },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Why a registry gave no anonymous token; `url` is what asked for one,
/// `realm` where the token was asked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No bearer challenge: the registry wants credentials kas does not
    /// have.
    #[error("{url} requires credentials; kas pulls anonymously")]
    NeedsCredentials { url: String },
    #[error("{url}: a bearer challenge without a realm")]
    NoRealm { url: String },
    #[error(transparent)]
    Get(#[from] GetError),
    #[error("{url} requires credentials; kas pulls anonymously ({realm} answered {status})")]
    Refused {
        url: String,
        realm: String,
        status: StatusCode,
    },
    #[error("{realm}: {source}")]
    Body {
        realm: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{realm}: {source}")]
    NotJson {
        realm: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{realm}: no token in the answer")]
    NoToken { realm: String },
}

fn locate(repository: &str, chart: &str) -> Result<Location, LocateError> {
    let rest = repository
        .strip_prefix("oci://")
        .ok_or_else(|| LocateError::NotOci(repository.to_owned()))?
        .trim_end_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(LocateError::NoRegistry(repository.to_owned()));
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let loopback = matches!(name, "localhost" | "127.0.0.1" | "[::1]");
    let scheme = if loopback { "http" } else { "https" };
    let repository = if path.is_empty() {
        chart.to_owned()
    } else {
        format!("{path}/{chart}")
    };
    Ok(Location {
        base: format!("{scheme}://{host}"),
        repository,
    })
}

/// The chart archive of `chart` at `version` in the registry `repository`:
/// both one checked segment each, so neither can reach another repository
/// of the registry or another part of its API.
pub async fn archive(
    client: &Https,
    repository: &str,
    chart: &ChartName,
    version: &ChartVersion,
) -> Result<Vec<u8>, PullError> {
    let at = locate(repository, chart.as_str())?;
    let work = async {
        let manifest_url = format!("{}/v2/{}/manifests/{version}", at.base, at.repository);
        let (manifest, token) = get(client, &manifest_url, None, MAX_MANIFEST_BYTES).await?;
        let manifest: Value = match serde_json::from_slice(&manifest) {
            Ok(manifest) => manifest,
            Err(source) => {
                return Err(PullError::NotAManifest {
                    url: manifest_url,
                    source,
                });
            }
        };
        let layer = manifest["layers"]
            .as_array()
            .and_then(|layers| layers.iter().find(|l| l["mediaType"] == CHART_LAYER))
            .ok_or_else(|| PullError::NoChartLayer {
                repository: repository.to_owned(),
                chart: chart.clone(),
                version: version.clone(),
            })?;
        let digest = layer["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| PullError::NoLayerDigest {
                repository: repository.to_owned(),
                chart: chart.clone(),
                version: version.clone(),
            })?
            .to_owned();
        let blob_url = format!("{}/v2/{}/blobs/sha256:{digest}", at.base, at.repository);
        let (blob, _) = get(client, &blob_url, token, MAX_CHART_BYTES).await?;
        let actual: String = digest::digest(&digest::SHA256, &blob)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != digest {
            return Err(PullError::DigestMismatch {
                url: blob_url,
                actual,
                expected: digest,
            });
        }
        Ok(blob)
    };
    tokio::time::timeout(FETCH_TIMEOUT * 2, work)
        .await
        .map_err(|_| PullError::Timeout {
            repository: repository.to_owned(),
            after: FETCH_TIMEOUT * 2,
        })?
}

/// GETs `url` (at most `limit` bytes), taking an anonymous bearer token
/// when the registry asks for one and following one redirect; returns the
/// body and the token used.
async fn get(
    client: &Https,
    url: &str,
    token: Option<String>,
    limit: usize,
) -> Result<(Vec<u8>, Option<String>), PullError> {
    let mut token = token;
    let mut target = url.to_owned();
    for _ in 0..3 {
        let mut request = Request::get(target.as_str()).header(header::ACCEPT, MANIFEST_TYPES);
        if let Some(token) = &token
            && target.starts_with(url.split("/v2/").next().unwrap_or(url))
        {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|source| GetError::Request {
                url: target.clone(),
                source,
            })?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
            .await
            .map_err(|_| GetError::Timeout {
                url: target.clone(),
                after: FETCH_TIMEOUT,
            })?
            .map_err(|source| GetError::Connect {
                url: target.clone(),
                source,
            })?;
        match response.status() {
            s if s.is_success() => {
                let body = Limited::new(response.into_body(), limit)
                    .collect()
                    .await
                    .map_err(|source| GetError::Body {
                        url: target.clone(),
                        limit,
                        source,
                    })?;
                return Ok((body.to_bytes().to_vec(), token));
            }
            StatusCode::UNAUTHORIZED if token.is_none() => {
                let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
                token = Some(anonymous_token(client, challenge.as_ref(), &target).await?);
            }
            s if s.is_redirection() => {
                target = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| PullError::NoLocation {
                        url: target.clone(),
                    })?
                    .to_owned();
            }
            status => {
                return Err(GetError::Status {
                    url: target,
                    status,
                }
                .into());
            }
        }
    }
    Err(PullError::TooManyHops {
        url: url.to_owned(),
    })
}

/// The token a registry gives anyone, from its `WWW-Authenticate: Bearer
/// realm=…,service=…,scope=…` challenge.
async fn anonymous_token(
    client: &Https,
    challenge: Option<&HeaderValue>,
    target: &str,
) -> Result<String, TokenError> {
    let challenge = challenge
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.strip_prefix("Bearer "))
        .ok_or_else(|| TokenError::NeedsCredentials {
            url: target.to_owned(),
        })?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in challenge.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        let value = value.trim_matches('"');
        match key {
            "realm" => realm = Some(value.to_owned()),
            "service" | "scope" => query.push(format!(
                "{key}={}",
                value.replace(':', "%3A").replace('/', "%2F")
            )),
            _ => {}
        }
    }
    let realm = realm.ok_or_else(|| TokenError::NoRealm {
        url: target.to_owned(),
    })?;
    let url = if query.is_empty() {
        realm
    } else {
        format!("{realm}?{}", query.join("&"))
    };
    let uri: http::Uri = url.parse().map_err(|source| GetError::Uri {
        url: url.clone(),
        source,
    })?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| GetError::Timeout {
            url: url.clone(),
            after: FETCH_TIMEOUT,
        })?
        .map_err(|source| GetError::Connect {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(TokenError::Refused {
            url: target.to_owned(),
            realm: url,
            status: response.status(),
        });
    }
    let body = match Limited::new(response.into_body(), 64 << 10).collect().await {
        Ok(body) => body,
        Err(source) => return Err(TokenError::Body { realm: url, source }),
    };
    let value: Value = match serde_json::from_slice(&body.to_bytes()) {
        Ok(value) => value,
        Err(source) => return Err(TokenError::NotJson { realm: url, source }),
    };
    value["token"]
        .as_str()
        .or_else(|| value["access_token"].as_str())
        .map(str::to_owned)
        .ok_or(TokenError::NoToken { realm: url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_repositories_are_told_apart() {
        assert_eq!(
            locate("oci://ghcr.io/stefanprodan/charts", "podinfo"),
            Ok(Location {
                base: "https://ghcr.io".into(),
                repository: "stefanprodan/charts/podinfo".into()
            })
        );
        assert_eq!(
            locate("oci://127.0.0.1:5000/", "web").map(|l| l.base),
            Ok("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            locate("https://x", "web"),
            Err(LocateError::NotOci("https://x".into()))
        );
        assert_eq!(
            locate("oci:///charts", "web"),
            Err(LocateError::NoRegistry("oci:///charts".into()))
        );
    }
}
