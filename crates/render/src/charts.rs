//! Charts from HTTP(S) chart repositories, fetched by kas rather than by
//! helm: the repository's `index.yaml` names the archive and its digest,
//! the archive is downloaded (bounded, with a deadline) and checked against
//! the digest, and helm is handed a file. So helm never reaches the
//! network, and only the repositories a config names are contacted.
//!
//! A chart's name and version reach a file name and URLs only as
//! [`ChartName`] and [`ChartVersion`], each one checked path segment. An
//! archive for an agent (`render_on: agent`) needs the index's digest and
//! must be the chart ([`crate::chart_archive`]); what was kept for kas
//! without either is fetched or checked again before an agent gets it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use ring::digest;
use tether_agent_config::{ChartSegmentError, validate_chart_name, validate_chart_version};

use crate::chart_archive::{self, ArchiveError};
use crate::client::{FETCH_TIMEOUT, Https, MAX_CHART_BYTES};
use crate::objects::NotYaml;
use serde_json::Value;

pub use crate::client::GetError;
pub use crate::oci::{LocateError, PullError};

/// An index larger than this is refused (Bitnami's, the largest public
/// one, is about 15 MiB).
const MAX_INDEX_BYTES: usize = 32 << 20;
/// Archives kept in memory, by repository, chart and version.
const MAX_KEPT: usize = 64;

/// A chart's name from a config, checked to be one path segment
/// ([`validate_chart_name`]): the only form in which a name reaches a file
/// name or a URL, whatever validated the config before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartName(String);

/// A chart's exact version from a config, checked like a name
/// ([`validate_chart_version`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartVersion(String);

/// Whether a fetch needs the index to give the archive's digest: a chart
/// rendered on kas is checked against it when given (helm reads it in the
/// sandbox); one sent to an agent is sent only when it was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    IfGiven,
    Required,
}

/// One archive kept, and what it was checked for.
#[derive(Clone)]
struct Kept {
    at: Instant,
    archive: Arc<Vec<u8>>,
    /// Against a digest the index or the registry gave.
    digest_checked: bool,
    /// By [`chart_archive::check`], for agents.
    is_chart: bool,
}

/// Fetches and keeps chart archives.
pub struct Fetcher {
    client: Https,
    kept: Mutex<HashMap<String, Kept>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher whose every connection `egress` decides.
    pub fn new(egress: crate::egress::Egress) -> Self {
        Fetcher {
            client: crate::client::https(egress),
            kept: Mutex::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(repository: &str, chart: &ChartName, version: &ChartVersion) -> String {
    format!("{repository}\n{chart}\n{version}")
}

// === impl ChartName ===

impl ChartName {
    pub fn parse(name: &str) -> Result<Self, ChartSegmentError> {
        validate_chart_name(name).map(|()| ChartName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ChartVersion ===

impl ChartVersion {
    pub fn parse(version: &str) -> Result<Self, ChartSegmentError> {
        validate_chart_version(version).map(|()| ChartVersion(version.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChartVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file a fetched archive is written to: `<name>-<version>.tgz`, one
/// segment, since both parts are.
pub fn archive_file_name(chart: &ChartName, version: &ChartVersion) -> String {
    format!("{chart}-{version}.tgz")
}

/// Why a chart's archive was not fetched, or not for an agent.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Get(#[from] GetError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("index.yaml is not text")]
    IndexNotText,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(
        "chart {chart} {version} has no digest in {index}: a chart an agent renders (render_on: agent) is sent only once kas has checked its digest"
    )]
    NoDigest {
        chart: ChartName,
        version: ChartVersion,
        /// The index's URL.
        index: String,
    },
    #[error("{url}: digest {actual} is not the {expected} that index.yaml gives")]
    DigestMismatch {
        url: String,
        actual: String,
        expected: String,
    },
    #[error("checking the archive was interrupted")]
    CheckInterrupted(#[source] tokio::task::JoinError),
    #[error("the archive of chart {chart} {version} is not sent to the agent: {source}")]
    NotTheChart {
        chart: ChartName,
        version: ChartVersion,
        #[source]
        source: ArchiveError,
    },
}

/// Why a repository's index does not lead to the chart.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    NotYaml(#[from] NotYaml),
    #[error("the repository has no chart {chart}")]
    NoChart { chart: String },
    /// `known`: a few of the versions the index has, sorted.
    #[error("chart {chart} has no version {version} (it has {})", known.join(", "))]
    NoVersion {
        chart: String,
        version: String,
        known: Vec<String>,
    },
    #[error("chart {chart} {version} has no URL in index.yaml")]
    NoUrl { chart: String, version: String },
}

// === impl Fetcher ===

impl Fetcher {
    /// The archive of `chart` at exactly `version` in `repository`: an
    /// HTTP(S) chart repository (`index.yaml`) or an OCI registry
    /// (`oci://…`), checked against its digest when the index gives one;
    /// kept for later renders. For helm on kas.
    pub async fn archive(
        &self,
        repository: &str,
        chart: &ChartName,
        version: &ChartVersion,
    ) -> Result<Arc<Vec<u8>>, FetchError> {
        let kept = self
            .fetch(repository, chart, version, Digest::IfGiven)
            .await?;
        Ok(kept.archive)
    }

    /// The archive of `chart` at `version` for an agent that renders it
    /// (`render_on: agent`): only one whose digest was checked (an index
    /// without one is refused before the archive is downloaded) and that
    /// is the chart ([`chart_archive::check`]).
    pub async fn archive_for_agent(
        &self,
        repository: &str,
        chart: &ChartName,
        version: &ChartVersion,
    ) -> Result<Arc<Vec<u8>>, FetchError> {
        let kept = self
            .fetch(repository, chart, version, Digest::Required)
            .await?;
        if !kept.is_chart {
            let (archive, name) = (kept.archive.clone(), chart.clone());
            tokio::task::spawn_blocking(move || {
                chart_archive::check(&archive, &name, chart_archive::Bounds::default())
            })
            .await
            .map_err(FetchError::CheckInterrupted)?
            .map_err(|source| FetchError::NotTheChart {
                chart: chart.clone(),
                version: version.clone(),
                source,
            })?;
            // Only the very bytes checked: the entry may have been evicted
            // and fetched again meanwhile.
            if let Some(entry) = lock(&self.kept).get_mut(&key(repository, chart, version))
                && Arc::ptr_eq(&entry.archive, &kept.archive)
            {
                entry.is_chart = true;
            }
        }
        Ok(kept.archive)
    }

    /// The archive an agent may be sent as it is kept, if it is: no fetch
    /// and no check needed.
    pub fn kept_for_agent(
        &self,
        repository: &str,
        chart: &ChartName,
        version: &ChartVersion,
    ) -> Option<Arc<Vec<u8>>> {
        lock(&self.kept)
            .get(&key(repository, chart, version))
            .filter(|k| k.digest_checked && k.is_chart)
            .map(|k| k.archive.clone())
    }

    async fn fetch(
        &self,
        repository: &str,
        chart: &ChartName,
        version: &ChartVersion,
        needs: Digest,
    ) -> Result<Kept, FetchError> {
        let key = key(repository, chart, version);
        if let Some(kept) = lock(&self.kept).get(&key)
            && (kept.digest_checked || needs == Digest::IfGiven)
        {
            return Ok(kept.clone());
        }
        let (archive, digest_checked) = match repository.starts_with("oci://") {
            true => (
                crate::oci::archive(&self.client, repository, chart, version).await?,
                true,
            ),
            false => {
                self.listed_archive(repository, chart, version, needs)
                    .await?
            }
        };
        let kept = Kept {
            at: Instant::now(),
            archive: Arc::new(archive),
            digest_checked,
            is_chart: false,
        };
        self.keep(key, kept.clone());
        Ok(kept)
    }

    fn keep(&self, key: String, archive: Kept) {
        let mut kept = lock(&self.kept);
        if kept.len() >= MAX_KEPT
            && let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, k)| k.at)
                .map(|(k, _)| k.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(key, archive);
    }

    /// The archive of `chart` at `version` as the repository's
    /// `index.yaml` names it, checked against the digest it gives; and
    /// whether it gave one.
    async fn listed_archive(
        &self,
        repository: &str,
        chart: &ChartName,
        version: &ChartVersion,
        needs: Digest,
    ) -> Result<(Vec<u8>, bool), FetchError> {
        let base = repository.trim_end_matches('/');
        let index_url = format!("{base}/index.yaml");
        let index = self.get(&index_url, MAX_INDEX_BYTES).await?;
        let index = std::str::from_utf8(&index).map_err(|_| FetchError::IndexNotText)?;
        let (url, expected) = find(index, chart.as_str(), version.as_str())?;
        if expected.is_none() && needs == Digest::Required {
            return Err(FetchError::NoDigest {
                chart: chart.clone(),
                version: version.clone(),
                index: index_url,
            });
        }
        let url = if url.contains("://") {
            url
        } else {
            format!("{base}/{}", url.trim_start_matches('/'))
        };
        let archive = self.get(&url, MAX_CHART_BYTES).await?;
        if let Some(expected) = &expected {
            let actual = hex(digest::digest(&digest::SHA256, &archive).as_ref());
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(FetchError::DigestMismatch {
                    url,
                    actual,
                    expected: expected.clone(),
                });
            }
        }
        Ok((archive, expected.is_some()))
    }

    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, GetError> {
        let uri: http::Uri = url.parse().map_err(|source| GetError::Uri {
            url: url.to_owned(),
            source,
        })?;
        let exchange = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|source| GetError::Connect {
                    url: url.to_owned(),
                    source,
                })?;
            if !response.status().is_success() {
                return Err(GetError::Status {
                    url: url.to_owned(),
                    status: response.status(),
                });
            }
            Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .map_err(|source| GetError::Body {
                    url: url.to_owned(),
                    limit,
                    source,
                })
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| GetError::Timeout {
                url: url.to_owned(),
                after: FETCH_TIMEOUT,
            })?
    }
}

/// The URL and digest of `chart` at `version` in an index.
fn find(index: &str, chart: &str, version: &str) -> Result<(String, Option<String>), IndexError> {
    let docs = crate::objects::parse_documents(index)?;
    let entries = docs
        .first()
        .and_then(|d| d.get("entries"))
        .and_then(|e| e.get(chart))
        .and_then(Value::as_array)
        .ok_or_else(|| IndexError::NoChart {
            chart: chart.to_owned(),
        })?;
    let wanted = version.trim_start_matches('v');
    let entry = entries
        .iter()
        .find(|e| {
            e.get("version")
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim_start_matches('v') == wanted)
        })
        .ok_or_else(|| {
            let mut known: Vec<String> = entries
                .iter()
                .filter_map(|e| e.get("version").and_then(Value::as_str))
                .take(5)
                .map(str::to_owned)
                .collect();
            known.sort_unstable();
            IndexError::NoVersion {
                chart: chart.to_owned(),
                version: version.to_owned(),
                known,
            }
        })?;
    let url = entry
        .get("urls")
        .and_then(Value::as_array)
        .and_then(|u| u.first())
        .and_then(Value::as_str)
        .ok_or_else(|| IndexError::NoUrl {
            chart: chart.to_owned(),
            version: version.to_owned(),
        })?;
    let digest = entry
        .get("digest")
        .and_then(Value::as_str)
        .map(|d| d.trim_start_matches("sha256:").to_owned());
    Ok((url.to_owned(), digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_the_archive_and_its_digest() {
        let index = "apiVersion: v1\nentries:\n  web:\n  - version: 1.2.0\n    urls: [web-1.2.0.tgz]\n    digest: abc\n  - version: 1.1.0\n    urls: ['https://cdn.example.com/web-1.1.0.tgz']\n";
        assert_eq!(
            find(index, "web", "1.2.0").expect("listed"),
            ("web-1.2.0.tgz".to_owned(), Some("abc".to_owned()))
        );
        assert_eq!(
            find(index, "web", "v1.1.0").expect("listed"),
            ("https://cdn.example.com/web-1.1.0.tgz".to_owned(), None)
        );
        assert_eq!(
            find(index, "web", "9.9.9")
                .expect_err("missing")
                .to_string(),
            "chart web has no version 9.9.9 (it has 1.1.0, 1.2.0)"
        );
        assert!(matches!(
            find(index, "db", "1.0.0"),
            Err(IndexError::NoChart { chart }) if chart == "db"
        ));
    }
}
