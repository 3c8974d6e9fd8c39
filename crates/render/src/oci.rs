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
use crate::client::{FETCH_TIMEOUT, Https, MAX_CHART_BYTES};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json";
const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Where a chart is in a registry.
#[derive(Debug, PartialEq, Eq)]
struct Location {
    base: String,
    repository: String,
}

fn locate(repository: &str, chart: &str) -> Result<Location, String> {
    let rest = repository
        .strip_prefix("oci://")
        .ok_or_else(|| format!("{repository:?} is not an oci:// repository"))?
        .trim_end_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(format!("{repository:?} names no registry"));
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
) -> Result<Vec<u8>, String> {
    let at = locate(repository, chart.as_str())?;
    let work = async {
        let manifest_url = format!("{}/v2/{}/manifests/{version}", at.base, at.repository);
        let (manifest, token) = get(client, &manifest_url, None, MAX_MANIFEST_BYTES).await?;
        let manifest: Value = serde_json::from_slice(&manifest)
            .map_err(|e| format!("{manifest_url}: not a manifest: {e}"))?;
        let layer = manifest["layers"]
            .as_array()
            .and_then(|layers| layers.iter().find(|l| l["mediaType"] == CHART_LAYER))
            .ok_or_else(|| {
                format!("{repository}/{chart}:{version} is not a Helm chart (no chart layer)")
            })?;
        let digest = layer["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| {
                format!("{repository}/{chart}:{version}: the chart layer has no sha256 digest")
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
            return Err(format!(
                "{blob_url}: digest {actual} is not the manifest's {digest}"
            ));
        }
        Ok(blob)
    };
    tokio::time::timeout(FETCH_TIMEOUT * 2, work)
        .await
        .map_err(|_| format!("{repository} did not answer within {:?}", FETCH_TIMEOUT * 2))?
}

/// GETs `url` (at most `limit` bytes), taking an anonymous bearer token
/// when the registry asks for one and following one redirect; returns the
/// body and the token used.
async fn get(
    client: &Https,
    url: &str,
    token: Option<String>,
    limit: usize,
) -> Result<(Vec<u8>, Option<String>), String> {
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
            .map_err(|e| format!("{target}: {e}"))?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
            .await
            .map_err(|_| format!("{target} did not answer within {FETCH_TIMEOUT:?}"))?
            .map_err(|e| format!("{target}: {}", crate::egress::error_chain(&e)))?;
        match response.status() {
            s if s.is_success() => {
                let body = Limited::new(response.into_body(), limit)
                    .collect()
                    .await
                    .map_err(|e| format!("{target}: {e} (more than {limit} bytes?)"))?;
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
                    .ok_or_else(|| format!("{target}: a redirect without a location"))?
                    .to_owned();
            }
            s => return Err(format!("{target} answered {s}")),
        }
    }
    Err(format!("{url}: too many redirects or challenges"))
}

/// The token a registry gives anyone, from its `WWW-Authenticate: Bearer
/// realm=…,service=…,scope=…` challenge.
async fn anonymous_token(
    client: &Https,
    challenge: Option<&HeaderValue>,
    target: &str,
) -> Result<String, String> {
    let challenge = challenge
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.strip_prefix("Bearer "))
        .ok_or_else(|| format!("{target} requires credentials; kas pulls anonymously"))?;
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
    let realm = realm.ok_or_else(|| format!("{target}: a bearer challenge without a realm"))?;
    let url = if query.is_empty() {
        realm
    } else {
        format!("{realm}?{}", query.join("&"))
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {}", crate::egress::error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "{target} requires credentials; kas pulls anonymously ({url} answered {})",
            response.status()
        ));
    }
    let body = Limited::new(response.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let value: Value =
        serde_json::from_slice(&body.to_bytes()).map_err(|e| format!("{url}: {e}"))?;
    value["token"]
        .as_str()
        .or_else(|| value["access_token"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{url}: no token in the answer"))
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
        assert!(locate("https://x", "web").is_err());
        assert!(locate("oci:///charts", "web").is_err());
    }
}
