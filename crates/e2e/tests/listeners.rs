//! Every listener of a real kas caps its connections: a client that opens
//! connections and leaves them idle holds at most the cap, and kas serves
//! again as soon as they close. Shown on the admin listener, whose cap
//! (256) a test can reach.

use tether_e2e as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::Setup;

/// `GET /healthz` on a new connection; its status, or `None` when no
/// answer came within `within`.
fn healthz(admin: SocketAddr, within: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(admin).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nhost: kas\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

#[test]
fn idle_connections_hold_at_most_the_cap_and_kas_serves_again_when_they_close() {
    let setup = Setup::start();
    assert_eq!(healthz(setup.admin, Duration::from_secs(5)), Some(200));

    // The cap's worth of idle connections (each sends nothing).
    let idle: Vec<TcpStream> = (0..kas::listen::caps::ADMIN)
        .map(|_| TcpStream::connect(setup.admin).expect("connected"))
        .collect();
    // Each was accepted in turn; the next waits in the backlog, unserved.
    let refused = healthz(setup.admin, Duration::from_secs(2));
    assert_eq!(refused, None, "served past the cap");

    drop(idle);
    assert_eq!(
        healthz(setup.admin, Duration::from_secs(10)),
        Some(200),
        "served again once the idle connections closed"
    );
}
