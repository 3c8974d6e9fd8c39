//! Loopback ports for the servers a test starts that cannot bind port 0
//! and say what they bound (kas can: it writes `listening.json`, and the
//! harness starts it on port 0): the one place tests pick them.
//!
//! A port is free when picked and not held until the server binds it, so
//! a server started on one must tell a taken address apart (kas exits with
//! status 98) and the caller picks again.

use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below the kernel's ephemeral range (32768 and up).
const STABLE_FIRST: u32 = 20_000;
const STABLE_COUNT: u32 = 12_000;

/// A port the kernel picks from its ephemeral range: for a server started
/// once.
pub fn free() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A port below the ephemeral range, for a server restarted on the same
/// address: an ephemeral port can be taken meanwhile by any outgoing
/// connection on the machine. Each is handed out once per process (tests
/// running in parallel walk one sequence, from a place of their own), so
/// two tests of one process never pick the same.
pub fn stable() -> std::io::Result<SocketAddr> {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % STABLE_COUNT));
    for _ in 0..STABLE_COUNT {
        let port = STABLE_FIRST + next.fetch_add(1, Ordering::Relaxed) % STABLE_COUNT;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr();
        }
    }
    free()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| stable().expect("a port").port()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
        assert!(free().expect("a port").port() > 0);
    }
}
