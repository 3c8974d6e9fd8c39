//! kas's egress proxy for one render: the only address a sandboxed render
//! that fetches remote bases may connect to (Landlock allows that one
//! port, seccomp only stream sockets, so the render has no DNS of its
//! own). git and kustomize reach it through `HTTPS_PROXY`/`HTTP_PROXY`:
//!
//! - `CONNECT host:port`, for `https://`: the policy decides every address
//!   the name resolves to ([`crate::egress`]), with `https` rules;
//! - an absolute-form request (`GET http://host/…`), for `http://`: the
//!   policy decides with plain-http rules (so only addresses an
//!   administrator allowed), the request goes to the origin as it came
//!   (origin servers accept the absolute form), and the connection stays
//!   with that origin.
//!
//! Every refusal is kept, for the render's error to name the URL and the
//! rule (git says only "CONNECT tunnel failed, response 403"). The proxy
//! lives as long as the render: dropping it stops it and every tunnel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::egress::Egress;

/// Largest request head read.
const MAX_HEAD: usize = 16 << 10;
/// Time a client has to send its request head, and an origin to accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once (a clone makes a few).
const MAX_CONNECTIONS: usize = 16;
/// Refusals kept for the message.
const MAX_REFUSALS: usize = 8;

/// A proxy on `127.0.0.1`, for one render.
pub struct Proxy {
    port: u16,
    refusals: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(policy: Egress) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let kept = refusals.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.len() >= MAX_CONNECTIONS {
                    connections.join_next().await;
                }
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(serve(client, policy.clone(), kept.clone()));
            }
        });
        Ok(Proxy {
            port,
            refusals,
            task,
        })
    }

    /// Its port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY` and `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it refused, each naming the URL and the rule.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn serve(mut client: TcpStream, policy: Egress, refusals: Arc<Mutex<Vec<String>>>) {
    let Ok(Ok(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (url, host, port, https) = if method == "CONNECT" {
        let Some((host, port)) = target.rsplit_once(':') else {
            return answer(&mut client, "400 Bad Request", "CONNECT host:port").await;
        };
        let Ok(port) = port.parse::<u16>() else {
            return answer(&mut client, "400 Bad Request", "CONNECT host:port").await;
        };
        (format!("https://{target}/"), host.to_owned(), port, true)
    } else {
        let Ok(uri) = target.parse::<http::Uri>() else {
            return answer(&mut client, "400 Bad Request", "an absolute URL").await;
        };
        if uri.scheme_str() != Some("http") {
            return answer(&mut client, "400 Bad Request", "an absolute http:// URL").await;
        }
        let Some(host) = uri.host() else {
            return answer(&mut client, "400 Bad Request", "a host").await;
        };
        (
            target.to_owned(),
            host.to_owned(),
            uri.port_u16().unwrap_or(80),
            false,
        )
    };
    let origin = tokio::time::timeout(
        HEAD_TIMEOUT,
        crate::egress::open(&policy, &url, &host, port, https),
    )
    .await;
    let mut origin = match origin {
        Ok(Ok(origin)) => origin,
        Ok(Err(e)) => {
            let why = e.to_string();
            tracing::warn!(url = %url, reason = %why, "render's fetch refused or failed");
            {
                let mut kept = refusals.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < MAX_REFUSALS && !kept.contains(&why) {
                    kept.push(why.clone());
                }
            }
            return answer(&mut client, "403 Forbidden", &why).await;
        }
        Err(_) => return answer(&mut client, "504 Gateway Timeout", "no connection in time").await,
    };
    if https {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
        return;
    }
    // Plain http: exactly this one request reaches the origin (its head,
    // marked `Connection: close`, and its body by `Content-Length`), then
    // only the answer flows back: a second request on the same connection,
    // for another host, never reaches the origin decided for the first.
    let Some((head, body_length)) = one_request(&text) else {
        return answer(
            &mut client,
            "400 Bad Request",
            "one request per connection, its body by Content-Length",
        )
        .await;
    };
    if origin.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = client.split();
    let (mut from_origin, mut to_origin) = origin.split();
    let body = async {
        let mut body = (&mut from_client).take(body_length);
        tokio::io::copy(&mut body, &mut to_origin).await
    };
    let back = tokio::io::copy(&mut from_origin, &mut to_client);
    let _ = tokio::join!(body, back);
}

/// A request head made to go alone: every `Connection` header replaced by
/// `Connection: close`; the body's length. `None` for a body whose length
/// is not given by `Content-Length` (chunked, or two lengths).
fn one_request(head: &str) -> Option<(String, u64)> {
    let mut lines = head.trim_end_matches("\r\n").split("\r\n");
    let mut out = format!("{}\r\n", lines.next()?);
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "connection" | "proxy-connection" | "keep-alive" => continue,
            "transfer-encoding" => return None,
            "content-length" => {
                if length.is_some() {
                    return None;
                }
                length = Some(value.trim().parse::<u64>().ok()?);
            }
            _ => {}
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    Some((out, length.unwrap_or(0)))
}

/// The request head: up to and with the blank line, at most [`MAX_HEAD`]
/// bytes (read byte by byte past the first chunk: nothing of a tunnel's
/// own bytes is taken).
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

async fn answer(client: &mut TcpStream, status: &str, message: &str) {
    let _ = client
        .write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
                message.len()
            )
            .as_bytes(),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(proxy: &Proxy, request: String) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connected");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// Only loopback: 127.0.0.2 is the forbidden server that counts, and
    /// 127.0.0.1 one an administrator allowed.
    #[test]
    fn a_plain_request_goes_alone() {
        let (head, length) = one_request(
            "POST http://h/x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n",
        )
        .expect("one request");
        assert_eq!(
            head,
            "POST http://h/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(length, 5);
        for refused in [
            "POST http://h/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://h/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST http://h/x HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        ] {
            assert_eq!(one_request(refused), None, "{refused}");
        }
    }

    #[tokio::test]
    async fn the_policy_decides_every_tunnel_and_request() {
        let forbidden = std::net::TcpListener::bind("127.0.0.2:0").expect("a port");
        forbidden.set_nonblocking(true).expect("non-blocking");
        let allowed = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let (forbidden_at, allowed_at) = (
            forbidden.local_addr().expect("its address"),
            allowed.local_addr().expect("its address"),
        );
        let policy = Egress::parse(&["127.0.0.1".into()]).expect("valid");
        let proxy = Proxy::start(policy).await.expect("started");

        let refused = exchange(&proxy, format!("CONNECT {forbidden_at} HTTP/1.1\r\n\r\n")).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        let refused = exchange(
            &proxy,
            format!("GET http://{forbidden_at}/x HTTP/1.1\r\nhost: x\r\n\r\n"),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(
            proxy
                .refusals()
                .iter()
                .any(|r| r.contains("127.0.0.2") && r.contains("loopback")),
            "{:?}",
            proxy.refusals()
        );

        let tunnel = exchange(&proxy, format!("CONNECT {allowed_at} HTTP/1.1\r\n\r\n")).await;
        assert!(tunnel.starts_with("HTTP/1.1 200"), "{tunnel}");
        let (mut origin, _) = allowed.accept().await.expect("the tunnel reached it");
        let plain = tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
                .await
                .expect("connected");
            stream
                .write_all(
                    format!("GET http://{allowed_at}/info/refs HTTP/1.1\r\nhost: x\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("sent");
            proxy
        });
        let (mut second, _) = allowed.accept().await.expect("the request reached it");
        let mut got = vec![0u8; 1024];
        let n = second.read(&mut got).await.expect("read");
        let got = String::from_utf8_lossy(&got[..n]).into_owned();
        assert!(
            got.starts_with("GET http://") && got.ends_with("connection: close\r\n\r\n"),
            "the request alone: {got}"
        );
        drop(origin.write_all(b"x").await);
        let _proxy = plain.await.expect("the client");
        assert!(
            forbidden.accept().is_err(),
            "nothing reached the forbidden address"
        );
    }
}
