//! Keeps this replica's rows in the tunnel tracker true: one row per agent
//! whose tunnels it holds, with their count, written when the count changes
//! (not per connection, not per request); a heartbeat that keeps the rows
//! counting; an announcement when an agent's first tunnel comes up (sent on
//! a channel; kas publishes it to every replica, which wakes the requests
//! waiting for it); and on a graceful stop, the rows removed at once, so
//! the others stop routing here while the agents move.

use std::collections::HashMap;
use std::sync::Arc;

use tether_agent_config::AgentName;
use tether_runtime::Shutdown;
use tether_tunnel::server::Tunnels;

use super::router::Router;
use super::{HEARTBEAT, STALE};

/// Agents whose first tunnel came up, waiting to be announced; past it the
/// announcement is dropped (the others' backstop poll finds the tunnel).
pub const ANNOUNCE_BUFFER: usize = 1024;

/// Runs until the drain signal, then removes this replica's rows. The
/// agents whose first tunnel came up here are sent on `tunnels_up`.
pub async fn run(
    router: Arc<Router>,
    tunnels: Arc<Tunnels>,
    tunnels_up: tokio::sync::mpsc::Sender<String>,
    mut stop: Shutdown,
) {
    let replicas = router.replicas().clone();
    let me = router.me().clone();
    let mut written: HashMap<AgentName, usize> = HashMap::new();
    // Counts that could not be written, retried at the next heartbeat.
    let mut pending: HashMap<AgentName, usize> = HashMap::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    loop {
        tokio::select! {
            _ = tunnels.changed() => {
                pending.extend(tunnels.take_changed());
            }
            _ = heartbeat.tick() => {
                if let Err(e) = replicas.heartbeat(&me).await {
                    tracing::warn!(error = ?e, "replica heartbeat failed");
                }
                beats += 1;
                // Now and then, sweep replicas long dead (never this one).
                if beats % 60 == 1
                    && let Err(e) = replicas.sweep_replicas(STALE).await
                {
                    tracing::debug!(error = ?e, "cannot sweep stale replicas");
                }
            }
            _ = stop.signalled() => break,
        }
        for (agent, count) in std::mem::take(&mut pending) {
            let before = written.get(&agent).copied().unwrap_or(0);
            if before == count {
                continue;
            }
            match replicas.set_tunnels(&me, &agent, count).await {
                Ok(()) => {
                    if count == 0 {
                        written.remove(&agent);
                    } else {
                        written.insert(agent.clone(), count);
                    }
                    if before == 0 && count > 0 {
                        router.tunnel_up(&agent);
                        let _ = tunnels_up.try_send(agent.into());
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, agent = %agent, "cannot record the agent's tunnels; retrying");
                    pending.insert(agent, count);
                }
            }
        }
    }
    match replicas.forget_replica(&me, STALE).await {
        Ok(()) => tracing::info!("removed this replica from the tunnel tracker"),
        Err(e) => tracing::warn!(error = ?e, "cannot remove this replica from the tunnel tracker"),
    }
}
