//! The tags of an image repository and the digest a tag points at, with
//! the OCI distribution API: anonymous, with the registry's bearer-token
//! flow (anonymous or with credentials), or with basic credentials.
//!
//! A tenant names the repository, so every connection (the registry's,
//! its token realm's, a redirect's) goes through the egress policy's
//! connector, every request has a deadline, every body a bound, and a
//! listing stops at [`MAX_TAGS`] (said in [`Tags::cut`]) however many
//! pages the registry offers.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use tether_agent_config::ImageRepository;
use tether_render::egress::{Egress, error_chain};

/// Tags kept of one repository; a listing stops there.
pub const MAX_TAGS: usize = 10_000;
/// Tags asked for per page.
const PAGE: usize = 1000;

/// Pages of one listing at most (10,000 tags at 1,000 a page, and room
/// for registries that send fewer).
const MAX_PAGES: usize = 100;
/// Largest page of a tag listing (1000 tags of up to 128 bytes, quoted).
const MAX_PAGE_BYTES: usize = 256 << 10;
/// Largest token answer or manifest read.
const MAX_SMALL_BYTES: usize = 1 << 20;
/// One request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole listing's deadline.
const LISTING_TIMEOUT: Duration = Duration::from_secs(60);
/// The manifest types a tag may point at, for its digest.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A username and password (or token) for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{repository} requires credentials (kas registry login {host})")]
    Unauthorized { repository: String, host: String },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
}

/// One listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    /// The tags that are tags: the distribution spec's grammar
    /// (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`); anything else a registry
    /// sends (a newline that would become YAML, a megabyte) is dropped.
    pub tags: Vec<String>,
    /// Entries dropped for not being tags.
    pub dropped: usize,
    /// The registry had more than [`MAX_TAGS`]; the rest were not read.
    pub cut: bool,
    /// Requests made, token requests included.
    pub requests: u32,
}

/// The client, shared by every scan.
#[derive(Clone, Debug)]
pub struct Registries {
    client: tether_render::Https,
    page: usize,
}

/// One repository's requests: its credentials, and the token they earned.
struct Session<'a> {
    registries: &'a Registries,
    repository: &'a ImageRepository,
    credentials: Option<&'a Credentials>,
    token: Option<String>,
    requests: u32,
}

impl Registries {
    /// Every connection decided by `egress`.
    pub fn new(egress: Egress) -> Self {
        Registries {
            client: tether_render::https(egress),
            page: PAGE,
        }
    }

    /// Tags asked for per page (registries may send fewer).
    pub fn with_page_size(mut self, page: usize) -> Self {
        self.page = page.clamp(1, PAGE);
        self
    }

    /// Every tag of `repository` (up to [`MAX_TAGS`]), page by page.
    pub async fn tags(
        &self,
        repository: &ImageRepository,
        credentials: Option<&Credentials>,
    ) -> Result<Tags, RegistryError> {
        let base = repository.api_base();
        let first = format!("{base}/v2/{}/tags/list?n={}", repository.path, self.page);
        let mut session = Session::new(self, repository, credentials);
        let listing = async {
            let mut tags = Vec::new();
            let mut dropped = 0;
            let mut pages = 0;
            let mut next = Some(first.clone());
            let mut cut = false;
            while let Some(url) = next.take() {
                let (headers, body) = session.get(&url, MAX_PAGE_BYTES, None).await?;
                let page: TagPage =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                        url: url.clone(),
                        reason: format!("not a tag list: {e}"),
                    })?;
                for tag in page.tags.unwrap_or_default() {
                    match is_tag(&tag) {
                        true => tags.push(tag),
                        false => dropped += 1,
                    }
                }
                if tags.len() >= MAX_TAGS {
                    cut = tags.len() > MAX_TAGS || link_next(&headers).is_some();
                    tags.truncate(MAX_TAGS);
                    break;
                }
                pages += 1;
                // A registry that sends empty pages with a next link forever.
                if pages >= MAX_PAGES {
                    cut = link_next(&headers).is_some();
                    break;
                }
                next = link_next(&headers).map(|link| resolve(&base, &link));
            }
            Ok::<_, RegistryError>(Tags {
                tags,
                dropped,
                cut,
                requests: 0,
            })
        };
        let mut tags = tokio::time::timeout(LISTING_TIMEOUT, listing)
            .await
            .map_err(|_| RegistryError::TimedOut {
                url: first,
                timeout: LISTING_TIMEOUT,
            })??;
        tags.requests = session.requests;
        Ok(tags)
    }

    /// The digest `tag` of `repository` points at now (`sha256:…`).
    pub async fn digest(
        &self,
        repository: &ImageRepository,
        tag: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        if !is_tag(tag) {
            return Err(invalid(tag, "not a tag"));
        }
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            repository.api_base(),
            repository.path
        );
        let mut session = Session::new(self, repository, credentials);
        let (headers, _) = session
            .request(Method::HEAD, &url, 0, Some(MANIFEST_TYPES))
            .await?;
        if let Some(digest) = headers
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .filter(|d| is_digest(d))
        {
            return Ok(digest.to_owned());
        }
        // No digest header (some registries omit it on HEAD): the digest
        // of the manifest as served.
        let (_, body) = session
            .get(&url, MAX_SMALL_BYTES, Some(MANIFEST_TYPES))
            .await?;
        Ok(format!(
            "sha256:{}",
            hex(ring::digest::digest(&ring::digest::SHA256, &body).as_ref())
        ))
    }
}

#[derive(serde::Deserialize)]
struct TagPage {
    tags: Option<Vec<String>>,
}

impl<'a> Session<'a> {
    fn new(
        registries: &'a Registries,
        repository: &'a ImageRepository,
        credentials: Option<&'a Credentials>,
    ) -> Self {
        Session {
            registries,
            repository,
            credentials,
            token: None,
            requests: 0,
        }
    }

    async fn get(
        &mut self,
        url: &str,
        limit: usize,
        accept: Option<&str>,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        self.request(Method::GET, url, limit, accept).await
    }

    /// One request, answering the registry's challenge once and following
    /// redirects (a blob store's, a mirror's) a few times.
    async fn request(
        &mut self,
        method: Method,
        url: &str,
        limit: usize,
        accept: Option<&str>,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        let mut target = url.to_owned();
        let mut challenged = false;
        let base = self.repository.api_base();
        for _ in 0..5 {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(target.as_str());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            // Credentials go to the registry itself, never to where it
            // redirects.
            if same_origin(&target, &base) {
                if let Some(token) = &self.token {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
                } else if challenged && let Some(basic) = self.basic() {
                    request = request.header(header::AUTHORIZATION, basic);
                }
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|e| invalid(&target, e))?;
            let response = self.send(request, &target).await?;
            let status = response.status();
            if status.is_success() {
                let headers = response.headers().clone();
                let body = read(response, &target, limit).await?;
                return Ok((headers, body));
            }
            if status == StatusCode::UNAUTHORIZED && !challenged && same_origin(&target, &base) {
                challenged = true;
                let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
                self.answer(challenge.as_ref()).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    repository: self.repository.full_name(),
                    host: self.repository.host.clone(),
                });
            }
            if status.is_redirection()
                && let Some(location) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                target = resolve(&base, location);
                continue;
            }
            return Err(RegistryError::Status {
                url: target,
                status,
            });
        }
        Err(invalid(url, "too many redirects or challenges"))
    }

    async fn send(
        &mut self,
        request: Request<Empty<Bytes>>,
        target: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, RegistryError> {
        self.requests += 1;
        tokio::time::timeout(REQUEST_TIMEOUT, self.registries.client.request(request))
            .await
            .map_err(|_| RegistryError::TimedOut {
                url: target.to_owned(),
                timeout: REQUEST_TIMEOUT,
            })?
            .map_err(|e| RegistryError::Unreachable {
                url: target.to_owned(),
                reason: error_chain(&e),
            })
    }

    /// `Basic` (the credentials are sent on the retry) or `Bearer` (a
    /// token from the realm, with the credentials when there are some).
    async fn answer(&mut self, challenge: Option<&HeaderValue>) -> Result<(), RegistryError> {
        let unauthorized = || RegistryError::Unauthorized {
            repository: self.repository.full_name(),
            host: self.repository.host.clone(),
        };
        let challenge = challenge
            .and_then(|c| c.to_str().ok())
            .ok_or_else(unauthorized)?;
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return match self.credentials {
                Some(_) => Ok(()),
                None => Err(unauthorized()),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized());
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                invalid(
                    &self.repository.full_name(),
                    "a bearer challenge without a realm",
                )
            })?;
        let query: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect();
        let url = match query.is_empty() {
            true => realm,
            false => format!(
                "{realm}{}{}",
                if realm.contains('?') { '&' } else { '?' },
                query.join("&")
            ),
        };
        let mut request = Request::get(url.as_str());
        if let Some(basic) = self.basic() {
            request = request.header(header::AUTHORIZATION, basic);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| invalid(&url, e))?;
        let response = self.send(request, &url).await?;
        if !response.status().is_success() {
            return Err(unauthorized());
        }
        let body = read(response, &url, MAX_SMALL_BYTES).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(&url, e))?;
        let token = answer["token"]
            .as_str()
            .or_else(|| answer["access_token"].as_str())
            .ok_or_else(|| invalid(&url, "no token in the answer"))?;
        self.token = Some(token.to_owned());
        Ok(())
    }

    fn basic(&self) -> Option<String> {
        self.credentials.map(|c| {
            let pair = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        })
    }
}

async fn read(
    response: http::Response<hyper::body::Incoming>,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let body = tokio::time::timeout(
        REQUEST_TIMEOUT,
        Limited::new(response.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| RegistryError::TimedOut {
        url: url.to_owned(),
        timeout: REQUEST_TIMEOUT,
    })?
    .map_err(|e| invalid(url, format!("{e} (more than {limit} bytes?)")))?;
    Ok(body.to_bytes().to_vec())
}

fn invalid(url: &str, reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::Invalid {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// `realm="…",service="…",scope="a,b"`: commas inside quotes belong to
/// the value.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, remaining)) => (value, remaining),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.push((key, value.to_owned()));
        rest = remaining.trim_start_matches([',', ' ']);
    }
    out
}

fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `next` link of a tag page (`Link: </v2/…?last=x&n=1000>; rel="next"`).
fn link_next(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::LINK).iter().find_map(|value| {
        let value = value.to_str().ok()?;
        value.split(',').find_map(|part| {
            let (target, params) = part.split_once(';')?;
            params.contains("rel=\"next\"").then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
    })
}

/// A link or redirect made absolute against the registry's base.
fn resolve(base: &str, link: &str) -> String {
    match link.starts_with('/') {
        true => format!("{base}{link}"),
        false => link.to_owned(),
    }
}

/// A tag as the distribution spec writes it.
pub fn is_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `url` is on the registry `base` (scheme, host and port): only
/// there do credentials and tokens go, never to a redirect elsewhere or a
/// host that merely starts with the same text.
fn same_origin(url: &str, base: &str) -> bool {
    let (Ok(url), Ok(base)) = (url.parse::<http::Uri>(), base.parse::<http::Uri>()) else {
        return false;
    };
    url.scheme() == base.scheme() && url.authority() == base.authority()
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links_are_read_as_registries_write_them() {
        let params = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            params[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(
            params[2],
            ("scope".into(), "repository:library/nginx:pull,push".into())
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            HeaderValue::from_static("</v2/team/app/tags/list?last=b&n=1000>; rel=\"next\""),
        );
        assert_eq!(
            link_next(&headers).map(|l| resolve("http://127.0.0.1:5000", &l)),
            Some("http://127.0.0.1:5000/v2/team/app/tags/list?last=b&n=1000".into())
        );
        assert_eq!(percent("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
        assert!(is_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_digest("sha256:zz"));
        assert!(is_tag("1.3.0") && is_tag("main-abc_1") && is_tag(&"a".repeat(128)));
        for bad in ["", "-x", ".x", "a b", "a\nb: c", "x:y", &"a".repeat(129)] {
            assert!(!is_tag(bad), "{bad:?}");
        }
        assert!(same_origin("https://ghcr.io/v2/x", "https://ghcr.io"));
        assert!(!same_origin(
            "https://ghcr.io.evil.net/v2/x",
            "https://ghcr.io"
        ));
        assert!(!same_origin("http://ghcr.io/v2/x", "https://ghcr.io"));
    }
}
