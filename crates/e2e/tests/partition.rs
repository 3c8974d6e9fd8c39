//! A silent network partition between agentk and kas, and its heal: kas
//! drops the ghost session within seconds of the drop (the tunnels keep
//! their 30 s + 10 s keepalive: 5 s + 5 s on tunnels broke requests in
//! flight during a loaded rolling restart of replicas), and
//! agentk is back within seconds of the heal, however long its backoff grew
//! meanwhile. Real kas and agentk processes; the partition is a relay on
//! loopback between them that goes silent.
//!
//! The figures are printed; the bounds asserted are generous (a loaded CI
//! machine), not performance claims. RELIABILITY.md records measured runs.

use tether_e2e as support;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::{Setup, probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long the network stays dead: long enough for agentk's reconnect
/// backoff to grow well past its first steps (1, 2, 4, 8 s…), as in a real
/// outage. The fault's length, not a wait for anything.
const PARTITION: Duration = Duration::from_secs(40);

/// kas must notice a silent agent within this of the drop (its keepalive
/// is 5 s plus 5 s).
const GHOST_BOUND: Duration = Duration::from_secs(15);

/// agentk must have a new session within this of the heal (about 2 s
/// expected: a probe within 1 s, a spread of up to 1 s).
const RETURN_BOUND: Duration = Duration::from_secs(5);

/// A TCP relay on loopback that can fall silent as a network behind a
/// blackhole route does: on open connections nothing more is read or
/// forwarded in either direction (no FIN, no RST), and new connections get
/// no answer to their SYN. Healed, it forwards again and accepts again.
struct Relay {
    addr: SocketAddr,
    /// The listening socket's descriptor, to resize its accept queue.
    listener_fd: i32,
    silent: watch::Sender<bool>,
    /// Whether the accept loop has stopped accepting.
    paused: watch::Receiver<bool>,
    /// The one connection that fills the accept queue while silent.
    filler: Option<TcpStream>,
}

impl Relay {
    /// Relays every connection to `127.0.0.1:<port>` on to `upstream`.
    async fn start(upstream: SocketAddr) -> Self {
        assert!(upstream.ip().is_loopback(), "the relay stays on loopback");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let listener_fd = listener.as_raw_fd();
        let (silent, silent_rx) = watch::channel(false);
        let (paused_tx, paused) = watch::channel(false);
        tokio::spawn(accept(listener, upstream, silent_rx, paused_tx));
        Relay {
            addr,
            listener_fd,
            silent,
            paused,
            filler: None,
        }
    }

    async fn go_silent(&mut self) {
        self.silent.send_replace(true);
        self.paused
            .wait_for(|paused| *paused)
            .await
            .expect("accept loop");
        // The kernel answers SYNs on a listening socket by itself, accepted
        // or not. Shrunk to nothing and filled with one connection, its
        // accept queue is full, and Linux then drops every new SYN without
        // an answer: the client sees what a blackhole route gives it.
        // SAFETY: listen(2) on a socket this relay owns, which stays open.
        assert_eq!(unsafe { libc::listen(self.listener_fd, 0) }, 0);
        // (Should a client's SYN have taken the place first, the queue is
        // full all the same.)
        self.filler = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(self.addr))
            .await
            .ok()
            .and_then(Result::ok);
    }

    async fn heal(&mut self) {
        // SAFETY: as in `go_silent`.
        assert_eq!(unsafe { libc::listen(self.listener_fd, 1024) }, 0);
        self.silent.send_replace(false);
        self.paused
            .wait_for(|paused| !*paused)
            .await
            .expect("accept loop");
        // Accepted now like any other, it is relayed and ends at once.
        drop(self.filler.take());
    }
}

/// Accepts and relays while not silent.
async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mut silent: watch::Receiver<bool>,
    paused: watch::Sender<bool>,
) {
    loop {
        paused.send_replace(true);
        if silent.wait_for(|s| !*s).await.is_err() {
            return;
        }
        paused.send_replace(false);
        let mut falls_silent = silent.clone();
        let client = tokio::select! {
            // Silence first: nothing is accepted once it has begun.
            biased;
            _ = falls_silent.wait_for(|s| *s) => continue,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let silent = silent.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, silent.clone()));
            tokio::spawn(pump(server_read, client_write, silent));
        });
    }
}

/// Copies one direction while not silent; while silent, reads nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if silent.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = silent.wait_for(|s| *s) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read as the silence began are held until it ends.
        if silent.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// When each condition first held, polling every 50 ms up to `deadline`
/// after `since`; `None` for one that never did.
fn first_times<const N: usize>(
    since: Instant,
    deadline: Duration,
    mut conditions: [&mut dyn FnMut() -> bool; N],
) -> [Option<Duration>; N] {
    let mut seen = [None; N];
    while since.elapsed() < deadline && seen.iter().any(Option::is_none) {
        for (condition, seen) in conditions.iter_mut().zip(seen.iter_mut()) {
            if seen.is_none() && condition() {
                *seen = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn a_silent_partition_drops_the_ghost_session_and_agentk_returns_within_seconds_of_the_heal() {
    partition_and_heal("grpcs");
}

/// The same over WebSocket: the HTTP/2 inside it pings as gRPC does.
#[test]
fn a_silent_partition_over_websocket_is_noticed_and_healed_the_same() {
    partition_and_heal("wss");
}

/// agentk dials kas with `scheme` through a relay; the relay falls silent
/// for [`PARTITION`], then heals.
fn partition_and_heal(scheme: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let mut relay = runtime.block_on(Relay::start(setup.agent_endpoint));
    let _agentk = setup.agentk_at(&token, &format!("{scheme}://{}", relay.addr));
    support::wait(
        "agentk's session and two tunnels through the relay",
        Duration::from_secs(60),
        || {
            let agent = setup.agent("prod");
            agent["connections"].as_array().map(Vec::len) == Some(1) && agent["tunnels"] == 2
        },
    );

    runtime.block_on(relay.go_silent());
    let dropped = Instant::now();
    let [session_gone, tunnels_gone, agentk_noticed] = first_times(
        dropped,
        PARTITION,
        [
            &mut || setup.connections("prod").is_empty(),
            &mut || setup.agent("prod")["tunnels"] == 0,
            &mut || probe(setup.probes, "/readiness") == Some(503),
        ],
    );
    eprintln!(
        "{scheme}: after the drop: kas dropped the session in {session_gone:?} and the tunnels \
         in {tunnels_gone:?}; agentk noticed (not ready) in {agentk_noticed:?}"
    );
    // The partition lasts its whole length whatever was seen meanwhile.
    std::thread::sleep(PARTITION.saturating_sub(dropped.elapsed()));
    assert!(
        setup.connections("prod").is_empty(),
        "a session came up across a silent network"
    );

    runtime.block_on(relay.heal());
    let healed = Instant::now();
    let [session_back, tunnels_back] = first_times(
        healed,
        Duration::from_secs(60),
        [&mut || setup.connections("prod").len() == 1, &mut || {
            setup.agent("prod")["tunnels"] == 2
        }],
    );
    eprintln!(
        "{scheme}: after the heal ({PARTITION:?} later): a new session in {session_back:?}, \
         both tunnels in {tunnels_back:?}"
    );

    // Tunnels: printed above; their keepalive is 30 s + 10 s, so within the
    // partition they may or may not be gone yet, and they are back once
    // agentk dials them again.
    let _ = tunnels_gone;
    for (what, took, bound) in [
        ("kas to drop the ghost session", session_gone, GHOST_BOUND),
        ("agentk to notice", agentk_noticed, GHOST_BOUND),
        ("agentk's new session", session_back, RETURN_BOUND),
        (
            "agentk's new tunnels",
            tunnels_back,
            Duration::from_secs(60),
        ),
    ] {
        let took = took.unwrap_or_else(|| panic!("{scheme}: never saw {what}"));
        assert!(
            took <= bound,
            "{scheme}: {what} took {took:?}, over {bound:?}"
        );
    }
}
