//! One pull (merge) request per project, from the branch image updates go
//! to (`update.push_branch`) into the project's branch, opened once and
//! kept: kas replaces the branch on each update, so the open request shows
//! the newest change without being opened again.
//!
//! Each host's API as it documents it, with the project's commit-status
//! settings (provider, API URL, repository, token; `kas project statuses
//! set`): GitHub, Gitea and Forgejo, GitLab, Bitbucket Cloud.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tether_store::StatusTarget;

/// One request's deadline.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (a page of open requests).
const MAX_ANSWER: usize = 4 << 20;

/// Why the request could not be opened or found.
#[derive(Debug, thiserror::Error)]
pub enum PullRequestError {
    #[error(
        "pull requests on {0:?} are not supported: github, gitea, forgejo, gitlab or bitbucket"
    )]
    Provider(String),
    #[error("{url} did not answer within {TIMEOUT:?}")]
    TimedOut { url: String },
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("{url} answered {status}: {said}")]
    Answered {
        url: String,
        status: StatusCode,
        said: String,
    },
}

/// The open request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Its web page.
    pub url: String,
    /// Opened now (not found open already).
    pub created: bool,
}

type Https = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The hosts' APIs, with one client.
#[derive(Clone, Debug)]
pub struct PullRequests {
    client: Https,
}

impl Default for PullRequests {
    fn default() -> Self {
        let connector = tether_runtime::https::connector(None).expect("the web roots");
        PullRequests {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl PullRequests {
    /// The open request from `head` into `base`, opened when there is none.
    pub async fn ensure(
        &self,
        target: &StatusTarget,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Opened, PullRequestError> {
        let api = target.api_url.trim_end_matches('/');
        let repo = &target.repository;
        let provider = target.provider.as_str();
        let (list, create, payload) = match provider {
            "github" | "gitea" | "forgejo" => (
                format!("{api}/repos/{repo}/pulls?state=open&limit=50&per_page=50"),
                format!("{api}/repos/{repo}/pulls"),
                json!({ "head": head, "base": base, "title": title, "body": body }),
            ),
            "gitlab" => {
                let id = tether_api::segment(repo);
                (
                    format!(
                        "{api}/projects/{id}/merge_requests?state=opened&source_branch={}",
                        tether_api::segment(head)
                    ),
                    format!("{api}/projects/{id}/merge_requests"),
                    json!({ "source_branch": head, "target_branch": base, "title": title, "description": body }),
                )
            }
            "bitbucket" => (
                format!("{api}/repositories/{repo}/pullrequests?state=OPEN"),
                format!("{api}/repositories/{repo}/pullrequests"),
                json!({
                    "title": title,
                    "description": body,
                    "source": {"branch": {"name": head}},
                    "destination": {"branch": {"name": base}},
                }),
            ),
            other => return Err(PullRequestError::Provider(other.to_owned())),
        };
        let open = self.call(target, Method::GET, &list, None).await?;
        let found = open
            .as_array()
            .or_else(|| open["values"].as_array())
            .into_iter()
            .flatten()
            .find(|pr| head_of(provider, pr) == Some(head));
        if let Some(pr) = found {
            return Ok(Opened {
                url: web_url(provider, pr),
                created: false,
            });
        }
        let created = self
            .call(target, Method::POST, &create, Some(payload))
            .await?;
        Ok(Opened {
            url: web_url(provider, &created),
            created: true,
        })
    }

    async fn call(
        &self,
        target: &StatusTarget,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, PullRequestError> {
        let failed = |reason: String| PullRequestError::Failed {
            url: url.to_owned(),
            reason,
        };
        let (name, value) = match target.provider.as_str() {
            "github" | "bitbucket" => (header::AUTHORIZATION, format!("Bearer {}", target.token)),
            "gitlab" => (
                header::HeaderName::from_static("private-token"),
                target.token.clone(),
            ),
            _ => (header::AUTHORIZATION, format!("token {}", target.token)),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tether-kas/", env!("CARGO_PKG_VERSION")),
            )
            .header(name, value);
        if target.provider == "github" {
            request = request.header("x-github-api-version", "2022-11-28");
        }
        let request = request
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| failed(e.to_string()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| PullRequestError::TimedOut {
                url: url.to_owned(),
            })?
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let bytes = tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| PullRequestError::TimedOut {
            url: url.to_owned(),
        })?
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
        if !status.is_success() {
            return Err(PullRequestError::Answered {
                url: url.to_owned(),
                status,
                said: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("not JSON: {e}")))
    }
}

/// The source branch of a listed request.
fn head_of<'a>(provider: &str, pr: &'a Value) -> Option<&'a str> {
    match provider {
        "gitlab" => pr["source_branch"].as_str(),
        "bitbucket" => pr["source"]["branch"]["name"].as_str(),
        _ => pr["head"]["ref"].as_str(),
    }
}

fn web_url(provider: &str, pr: &Value) -> String {
    let url = match provider {
        "gitlab" => pr["web_url"].as_str(),
        "bitbucket" => pr["links"]["html"]["href"].as_str(),
        _ => pr["html_url"].as_str(),
    };
    url.unwrap_or_default().to_owned()
}
