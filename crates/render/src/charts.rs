//! Charts from HTTP(S) chart repositories, fetched by kas rather than by
//! helm: the repository's `index.yaml` names the archive and its digest,
//! the archive is downloaded (bounded, with a deadline) and checked against
//! the digest, and helm is handed a file. So helm never reaches the
//! network, and only the repositories a config names are contacted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use ring::digest;

use crate::client::{FETCH_TIMEOUT, Https, MAX_CHART_BYTES};
use serde_json::Value;

/// An index larger than this is refused (Bitnami's, the largest public
/// one, is about 15 MiB).
const MAX_INDEX_BYTES: usize = 32 << 20;
/// Archives kept in memory, by repository, chart and version.
const MAX_KEPT: usize = 64;

/// Archives by key, with when they were fetched.
type Kept = HashMap<String, (Instant, Arc<Vec<u8>>)>;

/// Fetches and keeps chart archives.
pub struct Fetcher {
    client: Https,
    kept: Mutex<Kept>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher {
            client: crate::client::https(),
            kept: Mutex::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fetcher {
    /// The archive of `chart` at exactly `version` in `repository`: an
    /// HTTP(S) chart repository (`index.yaml`) or an OCI registry
    /// (`oci://…`), checked against its digest; kept for later renders.
    pub async fn archive(
        &self,
        repository: &str,
        chart: &str,
        version: &str,
    ) -> Result<Arc<Vec<u8>>, String> {
        let key = format!("{repository}\n{chart}\n{version}");
        if let Some((_, bytes)) = lock(&self.kept).get(&key) {
            return Ok(bytes.clone());
        }
        let archive = Arc::new(match repository.starts_with("oci://") {
            true => crate::oci::archive(&self.client, repository, chart, version).await?,
            false => self.listed_archive(repository, chart, version).await?,
        });
        self.keep(key, archive.clone());
        Ok(archive)
    }

    fn keep(&self, key: String, archive: Arc<Vec<u8>>) {
        let mut kept = lock(&self.kept);
        if kept.len() >= MAX_KEPT
            && let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(key, (Instant::now(), archive));
    }

    /// The archive of `chart` at `version` as the repository's
    /// `index.yaml` names it, checked against the digest it gives.
    async fn listed_archive(
        &self,
        repository: &str,
        chart: &str,
        version: &str,
    ) -> Result<Vec<u8>, String> {
        let base = repository.trim_end_matches('/');
        let index = self
            .get(&format!("{base}/index.yaml"), MAX_INDEX_BYTES)
            .await?;
        let index = std::str::from_utf8(&index).map_err(|_| "index.yaml is not text".to_owned())?;
        let (url, expected) = find(index, chart, version)?;
        let url = if url.contains("://") {
            url
        } else {
            format!("{base}/{}", url.trim_start_matches('/'))
        };
        let archive = self.get(&url, MAX_CHART_BYTES).await?;
        if let Some(expected) = expected {
            let actual = hex(digest::digest(&digest::SHA256, &archive).as_ref());
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(format!(
                    "{url}: digest {actual} is not the {expected} that index.yaml gives"
                ));
            }
        }
        Ok(archive)
    }

    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .map_err(|e| format!("{url}: {e} (more than {limit} bytes?)"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
    }
}

/// The URL and digest of `chart` at `version` in an index.
fn find(index: &str, chart: &str, version: &str) -> Result<(String, Option<String>), String> {
    let docs = crate::objects::parse_documents(index)?;
    let entries = docs
        .first()
        .and_then(|d| d.get("entries"))
        .and_then(|e| e.get(chart))
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the repository has no chart {chart}"))?;
    let wanted = version.trim_start_matches('v');
    let entry = entries
        .iter()
        .find(|e| {
            e.get("version")
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim_start_matches('v') == wanted)
        })
        .ok_or_else(|| {
            let mut known: Vec<&str> = entries
                .iter()
                .filter_map(|e| e.get("version").and_then(Value::as_str))
                .take(5)
                .collect();
            known.sort_unstable();
            format!(
                "chart {chart} has no version {version} (it has {})",
                known.join(", ")
            )
        })?;
    let url = entry
        .get("urls")
        .and_then(Value::as_array)
        .and_then(|u| u.first())
        .and_then(Value::as_str)
        .ok_or_else(|| format!("chart {chart} {version} has no URL in index.yaml"))?;
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
            find(index, "web", "1.2.0"),
            Ok(("web-1.2.0.tgz".to_owned(), Some("abc".to_owned())))
        );
        assert_eq!(
            find(index, "web", "v1.1.0"),
            Ok(("https://cdn.example.com/web-1.1.0.tgz".to_owned(), None))
        );
        assert!(
            find(index, "web", "9.9.9")
                .expect_err("missing")
                .contains("1.1.0, 1.2.0")
        );
        assert!(
            find(index, "db", "1.0.0")
                .expect_err("missing")
                .contains("no chart db")
        );
    }
}
