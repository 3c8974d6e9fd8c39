//! A client of kas's REST API, for the `kas` CLI and for tests.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tether_credentials::Token;

pub use tether_api::segment;

/// Talks to one kas with the admin token.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    authorization: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The authorization header holds the admin token: never print it.
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .with_context(|| format!("kas answered {method} {path} with an unexpected shape"))
}

impl ApiClient {
    /// `server` is the API's base URL: `http://127.0.0.1:8150` on loopback,
    /// `https://kas.example.com:8150` beyond it. `ca_pem` is the CA that
    /// signed kas's certificate (kas's `agent-ca.crt` for a development
    /// certificate); without it the public web roots are trusted.
    pub fn new(server: &str, admin_token: &Token) -> anyhow::Result<Self> {
        Self::with_ca(server, admin_token, None)
    }

    pub fn with_ca(
        server: &str,
        admin_token: &Token,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("kas server address {server:?} must start with http:// or https://");
        }
        Ok(ApiClient {
            base,
            authorization: format!("Bearer {}", admin_token.expose_secret()),
            http: Client::builder(TokioExecutor::new())
                .build(tether_runtime::https::connector(ca_pem)?),
        })
    }

    /// GET `path`, read as `T`: an answer of another shape is an error
    /// that says so, not a blank field later.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let value = self.get(path).await?;
        typed(value, "GET", path)
    }

    /// POST `body` to `path`, the answer read as `T`.
    pub async fn post_as<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let value = self.post(path, serde_json::to_value(body)?).await?;
        typed(value, "POST", path)
    }

    /// PUT `body` to `path`, the answer read as `T`.
    pub async fn put_as<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let value = self.put(path, serde_json::to_value(body)?).await?;
        typed(value, "PUT", path)
    }

    /// PATCH `path` with `body`, the answer read as `T`.
    pub async fn patch_as<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let value = self
            .request(Method::PATCH, path, Some(serde_json::to_value(body)?))
            .await?;
        typed(value, "PATCH", path)
    }

    /// DELETE `path`, the answer read as `T`.
    pub async fn delete_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let value = self.delete(path).await?;
        typed(value, "DELETE", path)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::DELETE, path, None).await
    }

    /// Sends one request; an answer outside 2xx becomes an error carrying the
    /// server's own message.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("authorization", &self.authorization);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .with_context(|| format!("invalid request {method} {uri}"))?;
        let res = self
            .http
            .request(req)
            .await
            .with_context(|| format!("cannot reach kas at {}", self.base))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .with_context(|| format!("kas closed the connection during {method} {path}"))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("kas answered {status} with a body that is not JSON"))?
        };
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no message");
            if status == StatusCode::UNAUTHORIZED {
                bail!("kas refused the admin token ({status}): {message}");
            }
            bail!("kas answered {status}: {message}");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_admin_token() {
        let token = Token::generate(tether_credentials::TokenKind::Admin);
        let client = ApiClient::new("http://127.0.0.1:1", &token).expect("valid");
        assert!(!format!("{client:?}").contains(token.expose_secret()));
    }

    #[test]
    fn refuses_an_address_it_cannot_speak_to() {
        let token = Token::generate(tether_credentials::TokenKind::Admin);
        assert!(ApiClient::new("kas.example:8150", &token).is_err());
    }
}
