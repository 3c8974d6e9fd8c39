//! The protocol between agentk and kas (`proto/tether/agent/v1/agent.proto`).
//!
//! - [`v1`]: the generated messages, the `AgentChannel` client and server.
//! - [`PROTOCOL_VERSION`]: exchanged in `Hello`/`Welcome`, so that either side
//!   can refuse a peer it cannot talk to instead of misreading it.
//! - [`convert`]: the typed configuration to and from the config schema of
//!   `tether-agent-config`, without loss.
//!
//! Architecture invariant: only this crate knows the wire format; kas and
//! agentk exchange these types and convert at their edges. It holds types
//! and their conversions only, no IO: the WebSocket transport the channel
//! may ride is `tether_tunnel::websocket`.

pub mod convert;

/// Generated from `proto/tether/agent/v1/agent.proto`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("tether.agent.v1");
}

/// Version of the agent protocol this build speaks. Raise it on any change
/// that an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// The message of the UNAVAILABLE status kas ends sessions with when it
/// shuts down: the agent reconnects at once (to another replica behind the
/// load balancer, or to this one when it is back), not after a backoff.
/// For people; agentk matches [`DRAINING_DETAIL`].
pub const DRAINING: &str = "kas is shutting down: reconnect";

/// The status detail that marks kas's shutdown: what agentk matches, so
/// that rewording the message changes nothing.
pub const DRAINING_DETAIL: &[u8] = b"tether.v1.Draining";

/// The status kas ends a session with when it shuts down.
pub fn draining() -> tonic::Status {
    tonic::Status::with_details(
        tonic::Code::Unavailable,
        DRAINING,
        bytes::Bytes::from_static(DRAINING_DETAIL),
    )
}

/// Whether `status` is kas's shutdown ([`draining`]), by its detail.
pub fn is_draining(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.details() == DRAINING_DETAIL
}

#[cfg(test)]
mod draining_tests {
    #[test]
    fn draining_is_told_by_its_detail_not_its_words() {
        assert!(super::is_draining(&super::draining()));
        assert!(!super::is_draining(&tonic::Status::unavailable(
            super::DRAINING
        )));
        let detail_only = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "reworded",
            bytes::Bytes::from_static(super::DRAINING_DETAIL),
        );
        assert!(super::is_draining(&detail_only));
    }
}
