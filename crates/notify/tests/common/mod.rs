#![allow(dead_code)] // each test binary uses a part
//! A loopback HTTP receiver for the tests of what kas sends out (commit
//! statuses, notifications): it records every request and answers 503 to
//! the first few, then 201.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub auth: String,
    /// Every header, lower-case names.
    pub headers: Vec<(String, String)>,
    pub raw: Bytes,
    pub body: serde_json::Value,
}

/// A receiver answering 503 to the first `failures` requests, then 201.
pub async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let auth = request
                            .headers()
                            .get("authorization")
                            .or_else(|| request.headers().get("private-token"))
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let headers = request
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    v.to_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect();
                        let bytes = request.into_body().collect().await?.to_bytes();
                        let mut log = log.lock().expect("log");
                        log.push(Received {
                            path,
                            auth,
                            headers,
                            body: serde_json::from_slice(&bytes).unwrap_or_default(),
                            raw: bytes,
                        });
                        let status = if log.len() <= failures { 503 } else { 201 };
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .expect("response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), received)
}

pub async fn wait_for(received: &Arc<Mutex<Vec<Received>>>, n: usize) -> Vec<Received> {
    for _ in 0..500 {
        let got = received.lock().expect("log").clone();
        if got.len() >= n {
            // Anything more would arrive now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return received.lock().expect("log").clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{n} requests did not arrive: {:?}",
        received.lock().expect("log")
    );
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An address nothing listens on: a destination that is down.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

/// A drain that never starts: for the tests of sending, not of stopping.
pub fn never_drained() -> tether_runtime::Drain {
    let (trigger, drain) = tether_runtime::Drain::manual();
    std::mem::forget(trigger);
    drain
}
