//! CI jobs' OIDC ID tokens (GitLab CI `id_tokens`, GitHub Actions
//! `ACTIONS_ID_TOKEN_REQUEST_URL`, …): JWTs signed by the CI system, which
//! name the job's project, ref and job id. kas trusts the issuers it is
//! configured with, checks the signature against each issuer's JWKS, the
//! audience, the issuer and the validity window, and maps claims to a
//! [`CiJob`].
//!
//! Only asymmetric algorithms are accepted (RS256/384/512, ES256/384): a
//! `none` or HMAC token is refused before any key is looked at.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::principal::CiJob;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: i64 = 30;
/// How long fetched keys are trusted before they are fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// An unknown `kid` makes kas fetch the keys again (the issuer may have
/// rotated them), but not more often than this, so forged tokens cannot make
/// kas hammer the issuer.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Largest JWT or JWKS accepted.
const MAX_BYTES: usize = 64 * 1024;
/// The whole fetch of a JWKS (connect, headers, body) must finish within
/// this; the keys' lock is held meanwhile, so it bounds how long requests
/// with that issuer's tokens can wait.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, kas does not try again for this long: requests
/// get the last keys, or the remembered error, at once.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(30);
/// Keys past [`JWKS_MAX_AGE`] are still used while the issuer cannot be
/// reached, up to this age: an issuer outage must not lock every CI job
/// out, but keys are not trusted forever.
const JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// One trusted issuer, as configured in kas's settings file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` claim, exactly.
    pub issuer: String,
    /// The `aud` the tokens must be issued for.
    pub audience: String,
    /// Where the issuer's keys are: a URL (`https://…/jwks`) …
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// … or a file holding them.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Which claims hold what; defaults are GitLab CI's claim names.
    #[serde(default)]
    pub claims: ClaimNames,
    /// The kas projects this issuer speaks for: ids, or `group/*` for a
    /// group and everything under it. Required when several issuers are
    /// trusted, so that a `project` claim from one CI system can never
    /// match `ci_access` entries meant for another's jobs.
    #[serde(default)]
    pub projects: Vec<String>,
}

/// Claim names of the facts kas needs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    /// Must equal a kas project id (GitLab: `project_path`, GitHub:
    /// `repository`).
    pub project: String,
    pub job_id: String,
    pub r#ref: String,
    pub ref_protected: String,
    pub environment: String,
    pub user: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            project: "project_path".into(),
            job_id: "job_id".into(),
            r#ref: "ref".into(),
            ref_protected: "ref_protected".into(),
            environment: "environment".into(),
            user: "user_login".into(),
        }
    }
}

/// Why an ID token is refused; said to the client as a 401.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("malformed ID token: {0}")]
    Malformed(&'static str),
    #[error("ID token issuer {0:?} is not trusted by this kas")]
    UntrustedIssuer(String),
    #[error("ID token algorithm {0:?} is not accepted (RS256/384/512, ES256/384 are)")]
    Algorithm(String),
    #[error("ID token signature does not verify with any key of {0}")]
    Signature(String),
    #[error("ID token audience is {found}, kas expects {expected:?}")]
    Audience { found: String, expected: String },
    #[error("ID token expired at {0} (Unix time)")]
    Expired(i64),
    #[error("ID token not valid before {0} (Unix time)")]
    NotYetValid(i64),
    #[error("ID token lacks the {0:?} claim")]
    MissingClaim(String),
    #[error("cannot get the keys of {issuer}: {message}")]
    Keys { issuer: String, message: String },
    #[error(
        "ID token issuer {issuer} does not speak for project {project} (its projects: {allowed})"
    )]
    ProjectNotBound {
        issuer: String,
        project: String,
        allowed: String,
    },
}

/// The trusted issuers and their cached keys.
#[derive(Debug, Default)]
pub struct Oidc {
    issuers: Vec<Issuer>,
}

#[derive(Debug)]
struct Issuer {
    settings: IssuerSettings,
    keys: Mutex<KeyCache>,
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Arc<Vec<Jwk>>,
    fetched: Option<Instant>,
    /// The last failed fetch, and why.
    failed: Option<(Instant, String)>,
}

#[derive(Clone, Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Oidc {
    /// Checks the settings: each issuer needs exactly one key source.
    pub fn new(issuers: Vec<IssuerSettings>) -> anyhow::Result<Self> {
        for i in &issuers {
            if let Some(url) = &i.jwks_url {
                check_jwks_url(url).map_err(|e| {
                    anyhow::anyhow!("OIDC issuer {}: jwks_url {url}: {e}", i.issuer)
                })?;
            }
            if issuers.len() > 1 && i.projects.is_empty() {
                anyhow::bail!(
                    "OIDC issuer {}: with several trusted issuers each must list the projects it speaks for (projects: [group/*, …])",
                    i.issuer
                );
            }
            if i.jwks_url.is_some() == i.jwks_file.is_some() {
                anyhow::bail!(
                    "OIDC issuer {}: give exactly one of jwks_url and jwks_file",
                    i.issuer
                );
            }
            if i.audience.is_empty() {
                anyhow::bail!("OIDC issuer {}: audience is required", i.issuer);
            }
        }
        Ok(Oidc {
            issuers: issuers
                .into_iter()
                .map(|settings| Issuer {
                    settings,
                    keys: Mutex::default(),
                })
                .collect(),
        })
    }

    /// Whether any issuer is trusted.
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Verifies `token` at `now` (Unix seconds) and reads the job from it.
    pub async fn verify(&self, token: &str, now: i64) -> Result<CiJob, OidcError> {
        if token.len() > MAX_BYTES {
            return Err(OidcError::Malformed("too large"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed("a JWT has three dot-separated parts"));
        };
        let header: Header = decode_json(h)?;
        let claims: serde_json::Map<String, Value> = decode_json(p)?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| OidcError::Malformed("signature is not base64url"))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.settings.issuer == iss)
            .ok_or_else(|| OidcError::UntrustedIssuer(iss.to_owned()))?;
        let algorithm = Algorithm::parse(&header.alg)?;
        let signed = &token[..h.len() + 1 + p.len()];
        issuer
            .check_signature(
                algorithm,
                header.kid.as_deref(),
                signed.as_bytes(),
                &signature,
            )
            .await?;
        check_audience(&claims, &issuer.settings.audience)?;
        check_times(&claims, now)?;
        let job = issuer.job(&claims)?;
        issuer.check_bound(&job.project)?;
        Ok(job)
    }
}

/// Why an issuer's `jwks_url` is refused: keys must come over HTTPS, plain
/// HTTP only from this machine (loopback), where nobody can change them on
/// the way. Said at start, after the issuer and the URL.
#[derive(Debug, thiserror::Error)]
pub enum JwksUrlError {
    #[error("not a URL: {0}")]
    NotAUrl(#[source] http::uri::InvalidUri),
    #[error("keys must be fetched over https:// (plain http:// only from loopback)")]
    PlainHttp { host: String },
    /// Another scheme, or none.
    #[error("keys must be fetched over https://")]
    NotHttps { scheme: Option<String> },
}

fn check_jwks_url(url: &str) -> Result<(), JwksUrlError> {
    let uri: http::Uri = url.parse().map_err(JwksUrlError::NotAUrl)?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(JwksUrlError::PlainHttp {
                    host: host.to_owned(),
                })
            }
        }
        scheme => Err(JwksUrlError::NotHttps {
            scheme: scheme.map(str::to_owned),
        }),
    }
}

/// Whether project id `project` is one of `patterns` (ids, or `group/*`).
fn project_matches(patterns: &[String], project: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix("/*") {
        _ if p == "*" => true,
        Some(group) => project
            .strip_prefix(group)
            .is_some_and(|rest| rest.starts_with('/')),
        None => p == project,
    })
}

/// A signature algorithm kas accepts.
#[derive(Clone, Copy, Debug)]
enum Algorithm {
    Rsa(&'static signature::RsaParameters),
    Ec(&'static signature::EcdsaVerificationAlgorithm, &'static str),
}

impl Algorithm {
    fn parse(alg: &str) -> Result<Self, OidcError> {
        Ok(match alg {
            "RS256" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "ES256" => Algorithm::Ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
            "ES384" => Algorithm::Ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
            other => return Err(OidcError::Algorithm(other.to_owned())),
        })
    }

    fn verify(self, key: &Jwk, message: &[u8], sig: &[u8]) -> bool {
        let b64 = |v: &Option<String>| v.as_deref().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        match self {
            Algorithm::Rsa(params) => {
                let (Some(n), Some(e)) = (b64(&key.n), b64(&key.e)) else {
                    return false;
                };
                key.kty == "RSA"
                    && signature::RsaPublicKeyComponents { n: &n, e: &e }
                        .verify(params, message, sig)
                        .is_ok()
            }
            Algorithm::Ec(alg, curve) => {
                let (Some(x), Some(y)) = (b64(&key.x), b64(&key.y)) else {
                    return false;
                };
                if key.kty != "EC" || key.crv.as_deref() != Some(curve) {
                    return false;
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                signature::UnparsedPublicKey::new(alg, &point)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, OidcError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| OidcError::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed("a part is not a JSON object"))
}

fn check_audience(
    claims: &serde_json::Map<String, Value>,
    expected: &str,
) -> Result<(), OidcError> {
    let found = claims.get("aud").cloned().unwrap_or(Value::Null);
    let ok = match &found {
        Value::String(a) => a == expected,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(expected)),
        _ => false,
    };
    match ok {
        true => Ok(()),
        false => Err(OidcError::Audience {
            found: found.to_string(),
            expected: expected.to_owned(),
        }),
    }
}

fn check_times(claims: &serde_json::Map<String, Value>, now: i64) -> Result<(), OidcError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| OidcError::MissingClaim("exp".into()))?;
    if now >= exp + LEEWAY_SECONDS {
        return Err(OidcError::Expired(exp));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && now + LEEWAY_SECONDS < nbf
    {
        return Err(OidcError::NotYetValid(nbf));
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64)
        && now + LEEWAY_SECONDS < iat
    {
        return Err(OidcError::NotYetValid(iat));
    }
    Ok(())
}

/// A claim as text: strings as they are, numbers and booleans printed.
fn claim_text(claims: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Issuer {
    fn check_bound(&self, project: &str) -> Result<(), OidcError> {
        let allowed = &self.settings.projects;
        if allowed.is_empty() || project_matches(allowed, project) {
            return Ok(());
        }
        Err(OidcError::ProjectNotBound {
            issuer: self.settings.issuer.clone(),
            project: project.to_owned(),
            allowed: allowed.join(", "),
        })
    }

    fn job(&self, claims: &serde_json::Map<String, Value>) -> Result<CiJob, OidcError> {
        let names = &self.settings.claims;
        let required = |name: &str| {
            claim_text(claims, name).ok_or_else(|| OidcError::MissingClaim(name.to_owned()))
        };
        Ok(CiJob {
            project: required(&names.project)?,
            job_id: required(&names.job_id)?,
            git_ref: claim_text(claims, &names.r#ref),
            ref_protected: claim_text(claims, &names.ref_protected).as_deref() == Some("true"),
            environment: claim_text(claims, &names.environment),
            user: claim_text(claims, &names.user),
            via: format!("oidc:{}", self.settings.issuer),
            expires_at: claims.get("exp").and_then(Value::as_i64),
        })
    }

    async fn check_signature(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), OidcError> {
        let verifies = |keys: &[Jwk]| {
            keys.iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .any(|k| algorithm.verify(k, message, sig))
        };
        let (keys, fresh) = self.keys(false).await?;
        if verifies(&keys) {
            return Ok(());
        }
        // A key id kas has not seen: the issuer may have rotated its keys.
        let unknown_kid =
            kid.is_some_and(|kid| !keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        if unknown_kid && !fresh {
            let (keys, _) = self.keys(true).await?;
            if verifies(&keys) {
                return Ok(());
            }
        }
        Err(OidcError::Signature(self.settings.issuer.clone()))
    }

    /// The issuer's keys, fetched when missing, older than JWKS_MAX_AGE, or
    /// (with `refetch`) older than JWKS_MIN_REFETCH. The flag says whether
    /// they were just fetched.
    async fn keys(&self, refetch: bool) -> Result<(Arc<Vec<Jwk>>, bool), OidcError> {
        let mut cache = self.keys.lock().await;
        let age = cache.fetched.map(|t| t.elapsed());
        let stale = match age {
            None => true,
            Some(age) => age > JWKS_MAX_AGE || (refetch && age > JWKS_MIN_REFETCH),
        };
        if !stale {
            return Ok((cache.keys.clone(), false));
        }
        let error = |message: String| OidcError::Keys {
            issuer: self.settings.issuer.clone(),
            message,
        };
        // Keys that are old but not too old stand in while the issuer fails.
        let usable_stale = age.is_some_and(|a| a <= JWKS_MAX_STALE);
        if let Some((at, message)) = &cache.failed
            && at.elapsed() < FAILED_FETCH_BACKOFF
        {
            return match usable_stale {
                true => Ok((cache.keys.clone(), false)),
                false => Err(error(format!(
                    "{message} (not retried for {FAILED_FETCH_BACKOFF:?})"
                ))),
            };
        }
        let fetched = match (&self.settings.jwks_file, &self.settings.jwks_url) {
            (Some(path), _) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display())),
            (None, Some(url)) => fetch(url).await.map_err(|e| format!("{e:#}")),
            (None, None) => Err("no key source".into()),
        };
        let parsed = fetched.and_then(|bytes| {
            serde_json::from_slice::<Jwks>(&bytes).map_err(|e| format!("not a JWKS: {e}"))
        });
        match parsed {
            Ok(jwks) => {
                tracing::info!(issuer = %self.settings.issuer, keys = jwks.keys.len(), "OIDC keys loaded");
                cache.keys = Arc::new(jwks.keys);
                cache.fetched = Some(Instant::now());
                cache.failed = None;
                Ok((cache.keys.clone(), true))
            }
            Err(message) => {
                tracing::warn!(issuer = %self.settings.issuer, error = %message, keeping_old_keys = usable_stale, "cannot fetch OIDC keys");
                cache.failed = Some((Instant::now(), message.clone()));
                match usable_stale {
                    true => Ok((cache.keys.clone(), false)),
                    false => Err(error(message)),
                }
            }
        }
    }
}

/// GETs a JWKS over HTTPS (public roots), or HTTP from loopback; the
/// whole exchange, body included, within [`FETCH_TIMEOUT`].
async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use http_body_util::{BodyExt, Empty, Limited};
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(connector);
    let uri: http::Uri = url.parse().context("invalid jwks_url")?;
    let exchange = async {
        let response = client.get(uri).await.context("request failed")?;
        if !response.status().is_success() {
            anyhow::bail!("{url} answered {}", response.status());
        }
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the keys: {e}"))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    /// An ES256 key, its JWKS, and a signer of claims.
    pub(crate) struct TestIssuer {
        key: EcdsaKeyPair,
        pub jwks: String,
    }

    impl TestIssuer {
        pub fn new(kid: &str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("key");
            let point = key.public_key().as_ref();
            let jwks = serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }]})
            .to_string();
            TestIssuer { key, jwks }
        }

        pub fn sign(&self, kid: &str, claims: Value) -> String {
            let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self
                .key
                .sign(&SystemRandom::new(), signed.as_bytes())
                .expect("signs");
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    fn oidc(dir: &tempfile::TempDir, jwks: &str) -> Oidc {
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks).expect("write");
        Oidc::new(vec![IssuerSettings {
            issuer: "https://ci.example.com".into(),
            audience: "https://kas.example.com".into(),
            jwks_url: None,
            jwks_file: Some(path),
            claims: ClaimNames::default(),
            projects: Vec::new(),
        }])
        .expect("settings")
    }

    fn claims(now: i64) -> Value {
        serde_json::json!({
            "iss": "https://ci.example.com",
            "aud": "https://kas.example.com",
            "iat": now, "nbf": now, "exp": now + 300,
            "project_path": "team/app", "job_id": 77, "ref": "main",
            "ref_protected": "true", "environment": "production", "user_login": "bob",
        })
    }

    #[tokio::test]
    async fn a_good_token_names_the_job_and_a_bad_one_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::new("k1");
        let oidc = oidc(&dir, &issuer.jwks);
        let now = 1_800_000_000;
        let job = oidc
            .verify(&issuer.sign("k1", claims(now)), now)
            .await
            .expect("valid");
        assert_eq!(
            (
                job.project.as_str(),
                job.job_id.as_str(),
                job.git_ref.as_deref(),
                job.ref_protected
            ),
            ("team/app", "77", Some("main"), true)
        );
        assert_eq!(job.environment.as_deref(), Some("production"));
        assert_eq!(job.user.as_deref(), Some("bob"));

        let expired = oidc
            .verify(&issuer.sign("k1", claims(now - 1000)), now)
            .await;
        assert!(matches!(expired, Err(OidcError::Expired(_))), "{expired:?}");
        let mut c = claims(now);
        c["aud"] = "someone-else".into();
        let wrong_aud = oidc.verify(&issuer.sign("k1", c), now).await;
        assert!(
            matches!(wrong_aud, Err(OidcError::Audience { .. })),
            "{wrong_aud:?}"
        );
        let mut c = claims(now);
        c["iss"] = "https://evil.example.com".into();
        let wrong_iss = oidc.verify(&issuer.sign("k1", c), now).await;
        assert!(
            matches!(wrong_iss, Err(OidcError::UntrustedIssuer(_))),
            "{wrong_iss:?}"
        );
        let forger = TestIssuer::new("k1");
        let forged = oidc.verify(&forger.sign("k1", claims(now)), now).await;
        assert!(matches!(forged, Err(OidcError::Signature(_))), "{forged:?}");
        // A tampered payload with the original signature.
        let good = issuer.sign("k1", claims(now));
        let mut c = claims(now);
        c["project_path"] = "team/other".into();
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        );
        assert!(matches!(
            oidc.verify(&tampered, now).await,
            Err(OidcError::Signature(_))
        ));
        // `none` and HMAC are refused outright.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(now).to_string())
        );
        assert!(matches!(
            oidc.verify(&none, now).await,
            Err(OidcError::Algorithm(_))
        ));
        let mut c = claims(now);
        c.as_object_mut().expect("object").remove("job_id");
        let missing = oidc.verify(&issuer.sign("k1", c), now).await;
        assert!(
            matches!(missing, Err(OidcError::MissingClaim(_))),
            "{missing:?}"
        );
        assert!(oidc.verify("not a jwt", now).await.is_err());
    }

    #[tokio::test]
    async fn rotated_keys_are_fetched_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = TestIssuer::new("old");
        let oidc = oidc(&dir, &old.jwks);
        let now = 1_800_000_000;
        oidc.verify(&old.sign("old", claims(now)), now)
            .await
            .expect("valid");
        let new = TestIssuer::new("new");
        std::fs::write(dir.path().join("jwks.json"), &new.jwks).expect("rotate");
        // Keys were fetched moments ago: the refetch waits JWKS_MIN_REFETCH.
        assert!(
            oidc.verify(&new.sign("new", claims(now)), now)
                .await
                .is_err()
        );
        oidc.issuers[0].keys.lock().await.fetched = Some(Instant::now() - JWKS_MIN_REFETCH * 2);
        oidc.verify(&new.sign("new", claims(now)), now)
            .await
            .expect("new key fetched");
    }

    #[test]
    fn settings_need_one_key_source() {
        let s = IssuerSettings {
            issuer: "i".into(),
            audience: "a".into(),
            jwks_url: None,
            jwks_file: None,
            claims: ClaimNames::default(),
            projects: Vec::new(),
        };
        assert!(Oidc::new(vec![s]).is_err());
    }

    fn settings(issuer: &str, jwks_url: &str, projects: &[&str]) -> IssuerSettings {
        IssuerSettings {
            issuer: issuer.into(),
            audience: "a".into(),
            jwks_url: Some(jwks_url.into()),
            jwks_file: None,
            claims: ClaimNames::default(),
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn keys_come_over_https_or_from_loopback_only() {
        for ok in [
            "https://ci.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:8080/jwks",
            "http://localhost/jwks",
        ] {
            assert!(Oidc::new(vec![settings("i", ok, &[])]).is_ok(), "{ok}");
        }
        for bad in [
            "http://ci.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://x/jwks",
        ] {
            let err = Oidc::new(vec![settings("i", bad, &[])]).expect_err(bad);
            assert!(err.to_string().contains("https://"), "{err}");
        }
    }

    /// Said at start in kas's error; pinned byte for byte.
    #[test]
    fn refused_jwks_urls_keep_their_exact_wording() {
        let refusal = |url: &str| check_jwks_url(url).expect_err(url).to_string();
        assert_eq!(
            refusal("http://ci.example.com/jwks"),
            "keys must be fetched over https:// (plain http:// only from loopback)"
        );
        assert_eq!(
            refusal("ftp://x/jwks"),
            "keys must be fetched over https://"
        );
        assert_eq!(refusal("/jwks"), "keys must be fetched over https://");
        assert_eq!(refusal("a b"), "not a URL: invalid uri character");
    }

    #[test]
    fn several_issuers_each_name_their_projects() {
        let a = settings("a", "https://a/jwks", &[]);
        let b = settings("b", "https://b/jwks", &["github/*"]);
        assert!(Oidc::new(vec![a.clone(), b.clone()]).is_err());
        let a = settings("a", "https://a/jwks", &["team/*", "platform"]);
        assert!(Oidc::new(vec![a, b]).is_ok());
        let patterns = ["team/*".to_owned(), "platform".to_owned()];
        assert!(project_matches(&patterns, "team/app"));
        assert!(project_matches(&patterns, "team/sub/app"));
        assert!(project_matches(&patterns, "platform"));
        assert!(!project_matches(&patterns, "team-b/app"));
        assert!(!project_matches(&patterns, "platform/x"));
        assert!(!project_matches(&patterns, "team"));
    }

    #[tokio::test]
    async fn a_token_for_a_project_its_issuer_does_not_speak_for_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::new("k");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, &issuer.jwks).expect("write");
        let oidc = Oidc::new(vec![IssuerSettings {
            issuer: "https://ci.example.com".into(),
            audience: "https://kas.example.com".into(),
            jwks_url: None,
            jwks_file: Some(path),
            claims: ClaimNames::default(),
            projects: vec!["other/*".into()],
        }])
        .expect("settings");
        let now = 1_800_000_000;
        let err = oidc
            .verify(&issuer.sign("k", claims(now)), now)
            .await
            .expect_err("team/app is not this issuer's");
        assert!(matches!(err, OidcError::ProjectNotBound { .. }), "{err}");
    }

    #[tokio::test]
    async fn old_keys_stand_in_while_the_issuer_is_down_and_failures_are_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::new("k");
        let oidc = oidc(&dir, &issuer.jwks);
        let now = 1_800_000_000;
        let token = issuer.sign("k", claims(now));
        oidc.verify(&token, now).await.expect("valid");
        // The keys are past their age and the issuer is gone.
        std::fs::remove_file(dir.path().join("jwks.json")).expect("issuer down");
        oidc.issuers[0].keys.lock().await.fetched = Some(Instant::now() - JWKS_MAX_AGE * 2);
        oidc.verify(&token, now)
            .await
            .expect("old keys still verify");
        let failed = oidc.issuers[0].keys.lock().await.failed.clone();
        assert!(failed.is_some(), "the failure is remembered");
        // Too old to trust any more: refused, with the remembered reason,
        // and without trying the issuer again within the backoff.
        oidc.issuers[0].keys.lock().await.fetched = Some(Instant::now() - JWKS_MAX_STALE * 2);
        std::fs::write(dir.path().join("jwks.json"), &issuer.jwks).expect("back up");
        let err = oidc.verify(&token, now).await.expect_err("backing off");
        assert!(err.to_string().contains("not retried"), "{err}");
        oidc.issuers[0].keys.lock().await.failed = None;
        oidc.verify(&token, now)
            .await
            .expect("fetched again once the backoff passes");
    }
}
