//! The queue of messages towards one agent: bounded, so that a stalled
//! agent slows only its own session, never kas; and a send that gives up
//! when the agent reads nothing for a while, so it cannot pin the session
//! (or a manifest follower's files) in memory.

use std::time::Duration;

use tether_proto::v1::ServerMessage;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages queued towards one agent.
pub const OUTBOUND_QUEUE: usize = 16;
/// How long a message may wait for room in a full queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The sending end of one agent's queue.
pub type Outbound = mpsc::Sender<Result<ServerMessage, Status>>;

/// Why a message did not reach an agent's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    #[error("agent went away")]
    Gone,
    #[error("agent read nothing for {SEND_TIMEOUT:?}")]
    Stalled,
}

/// Queues `message` for the agent, or says why it could not.
pub async fn send(tx: &Outbound, message: ServerMessage) -> Result<(), NotSent> {
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(Ok(message))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(NotSent::Gone),
        Err(_) => Err(NotSent::Stalled),
    }
}
