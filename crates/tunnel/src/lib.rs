//! The reverse tunnel between kas and agentk.
//!
//! agentk dials out to kas (so the cluster API is never exposed) and, once
//! the connection is up, the roles flip: **agentk serves HTTP/2 on the
//! connection it dialed, and kas is the HTTP/2 client**. Every request kas
//! proxies for a CI job or a user becomes one HTTP/2 stream, so the proven
//! machinery of `hyper`/`h2` gives us multiplexing, per-stream flow control
//! (a watch or a 500 MB list is never buffered whole), cancellation (a
//! client that goes away resets its stream, which drops agentk's upstream
//! request) and keepalive, with no framing of our own.
//!
//! Upgraded connections (`kubectl exec`, `attach`, `port-forward`) travel as
//! HTTP/2 `CONNECT` streams: kas sends the original request's path and
//! headers on a CONNECT, agentk makes the HTTP/1.1 upgrade request to the API
//! server, and when that answers `101` both sides splice the byte streams.
//!
//! - [`server`]: kas's side: the live tunnels of each agent, and forwarding a
//!   client's request through one of them.
//! - [`agent`]: agentk's side: serving the tunnel and sending what comes
//!   through it to the cluster's API server (behind [`agent::Upstream`]).
//! - [`identity`]: who a request runs as; agentk turns it into
//!   `Impersonate-*` headers, and strips any a client sent.
//! - [`headers`]: hop-by-hop headers and the tunnel's own headers.
//! - [`stop`]: ending an exchange from outside when its credential goes.
//!
//! Architecture invariant: no authentication or authorization here. kas
//! decides who may do what before a request enters a tunnel; agentk trusts
//! the tunnel, because only kas can talk on it.

pub mod agent;
pub mod headers;
pub mod identity;
pub mod server;
pub mod stop;
pub mod websocket;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Boxed error of bodies and upstreams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body, in either direction.
pub type Body = BoxBody<Bytes, BoxError>;

/// The `Upgrade` token agentk sends to turn an HTTP/1.1 connection to kas
/// into a tunnel (the raw connection then carries HTTP/2).
pub const UPGRADE_PROTOCOL: &str = "tether-tunnel/1";

/// The WebSocket subprotocol of a tunnel dialed over `wss://` (the
/// WebSocket's messages then carry the HTTP/2 bytes).
pub const WS_SUBPROTOCOL: &str = "tether-tunnel.v1";

/// The path agentk requests when it opens a tunnel.
pub const TUNNEL_PATH: &str = "/tunnel";

/// The header on the tunnel upgrade in which agentk declares what the
/// tunnel serves (comma-separated), so that kas routes only requests for
/// those services to it.
pub const SERVES_HEADER: &str = "tether-tunnel-serves";

/// The service of a tunnel that reaches the cluster's Kubernetes API.
pub const KUBERNETES_API: &str = "kubernetes-api";

/// How long either end of the session channel between agentk and kas
/// waits without a frame from its peer before it sends an HTTP/2 PING.
/// Tunnels keep 30 s + 10 s: with these figures on tunnels, requests in
/// flight were cut during a loaded rolling restart of kas replicas.
///
/// A peer behind a silent partition (a blackhole route, a NAT that forgot
/// the flow) sends no FIN and no RST: without a PING, kas would keep its
/// session and tunnels as ghosts, and agentk would wait on a dead
/// connection. With [`KEEPALIVE_TIMEOUT`], a dead peer is noticed within
/// 10 s of its last frame on both ends. The cost is a PING and its ack per
/// connection and direction every 5 s of quiet (see BENCHMARKS.md, "Agents
/// per kas").
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a PING may go unanswered before the connection is closed as
/// dead (see [`KEEPALIVE_INTERVAL`]). A PING waits behind the data already
/// written to the connection; adaptive HTTP/2 windows, set on every one of
/// these connections, keep that to about one round trip's worth, so 5 s is
/// many round trips on any link an agent runs over.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A body with nothing in it.
pub fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streaming from a hyper connection.
pub fn incoming(body: hyper::body::Incoming) -> Body {
    use http_body_util::BodyExt;
    body.map_err(BoxError::from).boxed()
}

/// A Kubernetes `Status` response, which kubectl and client libraries show
/// as the message, not as raw text.
pub fn status_response(
    code: http::StatusCode,
    reason: &str,
    message: &str,
) -> http::Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut response = http::Response::new(full(body.to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
