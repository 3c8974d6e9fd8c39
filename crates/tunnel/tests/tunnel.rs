//! The tunnel end to end in one process: a front server (kas's role)
//! forwards through `Tunnels` over a real TCP connection to `agent::serve`
//! (agentk's role), whose upstream is a plain HTTP/1.1 server standing in
//! for the API server. What the cluster does with the requests is tested
//! against a real API server in kas's tests; this checks the tunnel itself:
//! headers, streaming, cancellation and upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tether_agent_config::AgentName;
use tether_tunnel::agent::{Upstream, UpstreamFuture};
use tether_tunnel::identity::Identity;
use tether_tunnel::server::{TunnelInfo, Tunnels};
use tether_tunnel::{Body, BoxError, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The stand-in API server: `/echo` answers with the headers it got,
/// `/stream` sends a chunk every 50 ms until the client goes (reporting on
/// `gone`), an upgrade to `echo` echoes bytes.
async fn api_server(gone: mpsc::UnboundedSender<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let gone = gone.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let gone = gone.clone();
                    async move {
                        let response: Response<Body> = match req.uri().path() {
                            "/echo" => {
                                let mut lines: Vec<String> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                                    .collect();
                                lines.sort();
                                lines.push(format!("query: {}", req.uri().query().unwrap_or("")));
                                Response::new(full(lines.join("\n")))
                            }
                            "/stream" => {
                                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
                                tokio::spawn(async move {
                                    for i in 0.. {
                                        let chunk =
                                            Frame::data(Bytes::from(format!("event {i}\n")));
                                        if tx.send(Ok(chunk)).await.is_err() {
                                            let _ = gone.send(());
                                            return;
                                        }
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                });
                                let stream = tokio_stream_from(rx);
                                Response::new(BodyExt::boxed(StreamBody::new(stream)))
                            }
                            "/upgrade" => {
                                let on = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let mut io = TokioIo::new(on.await.expect("upgraded"));
                                    let mut buf = [0u8; 1024];
                                    loop {
                                        let n = io.read(&mut buf).await.unwrap_or(0);
                                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                                let mut r = Response::new(tether_tunnel::empty());
                                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                                r.headers_mut()
                                    .insert("connection", "Upgrade".parse().expect("v"));
                                r.headers_mut()
                                    .insert("upgrade", "echo".parse().expect("v"));
                                r.headers_mut()
                                    .insert("x-stream-protocol-version", "v5".parse().expect("v"));
                                r
                            }
                            _ => {
                                let mut r = Response::new(full("no such path"));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_lite::Stream<Item = T> {
    futures_lite::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// agentk's upstream: a new HTTP/1.1 connection per request.
struct Plain(SocketAddr);

impl Plain {
    fn call(&self, request: Request<Body>) -> UpstreamFuture {
        let addr = self.0;
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(sender.send_request(request).await?)
        })
    }
}

impl Upstream for Plain {
    fn send(&self, request: Request<Body>) -> UpstreamFuture {
        self.call(request)
    }
    fn upgrade(&self, request: Request<Body>) -> UpstreamFuture {
        self.call(request)
    }
}

/// Starts the API stand-in, one tunnel to it, and a front server that
/// forwards everything as `alice`. Returns the front's address.
async fn setup() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (gone_tx, gone) = mpsc::unbounded_channel();
    let api = api_server(gone_tx).await;
    let tunnels = Arc::new(Tunnels::default());
    let kas_side = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let kas_addr = kas_side.local_addr().expect("addr");
    tokio::spawn(async move {
        let tcp = TcpStream::connect(kas_addr).await.expect("dial");
        let _ =
            tether_tunnel::agent::serve(tcp, Arc::new(Plain(api)), std::future::pending()).await;
    });
    let (tcp, _) = kas_side.accept().await.expect("accept");
    let agent = AgentName::new("a").expect("valid");
    let info = TunnelInfo {
        agent: agent.clone(),
        token_id: 1,
        serves: vec![tether_tunnel::KUBERNETES_API.into()],
        expires_in: None,
    };
    tunnels.attach(info, tcp).await.expect("handshake");
    assert_eq!(tunnels.count(&agent), 1);
    assert!(tunnels.pick(&agent, "something-else").is_none());

    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front_addr = front.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = front.accept().await.expect("accept");
            let tunnels = tunnels.clone();
            let agent = agent.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tunnels = tunnels.clone();
                    let agent = agent.clone();
                    async move {
                        let identity = Identity {
                            username: "alice".into(),
                            groups: vec!["devs".into()],
                            ..Identity::default()
                        };
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let lease = tunnels
                            .pick(&agent, tether_tunnel::KUBERNETES_API)
                            .expect("a tunnel");
                        let response = lease
                            .forward(
                                req.map(tether_tunnel::incoming),
                                &path,
                                Some(&identity),
                                tether_tunnel::stop::Stop::never(),
                            )
                            .await
                            .expect("forwarded");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (front_addr, gone)
}

async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

#[tokio::test]
async fn requests_run_as_the_identity_kas_chose_never_the_clients() {
    let (front, _) = setup().await;
    let mut c = client(front).await;
    let request = Request::get("/echo?watch=1")
        .header("host", "kas")
        .header("authorization", "Bearer secret-of-the-client")
        .header("impersonate-user", "system:admin")
        .header("impersonate-group", "system:masters")
        .header("tether-impersonate", "forged")
        .header("accept", "application/json")
        .body(tether_tunnel::empty())
        .expect("request");
    let response = c.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf8");
    assert!(text.contains("impersonate-user: alice"), "{text}");
    assert!(text.contains("impersonate-group: devs"), "{text}");
    assert!(text.contains("accept: application/json"), "{text}");
    assert!(text.contains("query: watch=1"), "{text}");
    for leaked in [
        "system:admin",
        "system:masters",
        "secret-of-the-client",
        "forged",
        "tether-",
    ] {
        assert!(
            !text.contains(leaked),
            "{leaked} crossed the tunnel:\n{text}"
        );
    }
}

#[tokio::test]
async fn bodies_stream_and_a_client_that_leaves_ends_the_upstream_request() {
    let (front, mut gone) = setup().await;
    let mut c = client(front).await;
    let response = c
        .send_request(
            Request::get("/stream")
                .body(tether_tunnel::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let mut body = response.into_body();
    // Two chunks arrive while the upstream response is still going.
    for i in 0..2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a chunk in time")
            .expect("a frame")
            .expect("data");
        assert_eq!(frame.into_data().expect("data"), format!("event {i}\n"));
    }
    assert!(gone.try_recv().is_err(), "upstream stopped too early");
    drop(body);
    drop(c);
    tokio::time::timeout(Duration::from_secs(1), gone.recv())
        .await
        .expect("the upstream request ended within 1 s of the client leaving");
}

#[tokio::test]
async fn upgraded_connections_are_spliced_through_the_tunnel() {
    let (front, _) = setup().await;
    let mut c = client(front).await;
    let request = Request::get("/upgrade")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(tether_tunnel::empty())
        .expect("request");
    let mut response = c.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "echo");
    assert_eq!(response.headers()["x-stream-protocol-version"], "v5");
    let mut io = TokioIo::new(hyper::upgrade::on(&mut response).await.expect("upgraded"));
    for message in ["hello", "through the tunnel"] {
        io.write_all(message.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(buf, message.as_bytes());
    }
    // An upgrade the API server refuses comes back as its answer.
    let mut c = client(front).await;
    let request = Request::get("/nowhere")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(tether_tunnel::empty())
        .expect("request");
    let response = c.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
