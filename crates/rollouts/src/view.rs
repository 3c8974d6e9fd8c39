//! Rollouts as the REST API, the CLI and the web UI show them, and what a
//! wait (`kas rollout wait`, `kas agent wait`) concludes from them.

use tether_api::{RolloutAgentView, RolloutFailureView, RolloutView, WaitView, WaveView};

use crate::advance::Observed;
use crate::state::*;

pub fn rollout_view(rollout: &Rollout, now: Millis) -> RolloutView {
    let (on_failure, timeout) = match &rollout.spec {
        Some(spec) => (
            match spec.on_failure {
                tether_agent_config::rollout::OnFailure::Halt => "halt",
                tether_agent_config::rollout::OnFailure::Rollback => "rollback",
            },
            spec.agent_timeout.as_secs(),
        ),
        None => ("halt", 0),
    };
    RolloutView {
        project: rollout.project.clone(),
        commit: rollout.commit.clone(),
        phase: rollout.phase.as_str().to_owned(),
        paused: rollout.paused,
        summary: crate::driver::summary(rollout),
        message: rollout.message.clone(),
        failure: rollout.failure.as_ref().map(|f| RolloutFailureView {
            wave: f.wave.clone(),
            agent: f.agent.clone(),
            object: f.object.clone(),
            message: f.message.clone(),
        }),
        on_failure: on_failure.to_owned(),
        agent_timeout_seconds: timeout,
        started_at: rfc3339(rollout.started_at),
        ended_at: rollout.ended_at.map(rfc3339),
        waves: rollout
            .waves
            .iter()
            .map(|w| WaveView {
                name: w.name.clone(),
                phase: w.phase.as_str().to_owned(),
                agents: w.agents.clone(),
                max_parallel: w.parallel,
                soak_seconds: w.soak_ms / 1000,
                started_at: w.started_at.map(rfc3339),
                soak_since: w.soak_since.map(rfc3339),
                soak_left_seconds: w.soak_since.filter(|_| w.phase == WavePhase::Soaking).map(
                    |since| {
                        let left = i64::try_from(w.soak_ms).unwrap_or(i64::MAX)
                            - now.saturating_sub(since);
                        u64::try_from(left.max(0)).unwrap_or(0).div_ceil(1000)
                    },
                ),
                ended_at: w.ended_at.map(rfc3339),
            })
            .collect(),
        agents: rollout
            .agents
            .iter()
            .map(|(name, a)| RolloutAgentView {
                name: name.clone(),
                wave: a
                    .wave
                    .and_then(|w| rollout.waves.get(w))
                    .map(|w| w.name.clone()),
                phase: a.phase.as_str().to_owned(),
                commit: a.gets.clone(),
                from: a.from.clone(),
                message: a.message.clone(),
                admitted_at: a.admitted_at.map(rfc3339),
                healthy_at: a.healthy_at.map(rfc3339),
            })
            .collect(),
    }
}

/// What a wait for `commit` of a rollout concludes now; `None`: not yet.
pub fn rollout_outcome(rollout: Option<&Rollout>, commit: &str) -> Option<WaitView> {
    let rollout = rollout?;
    if rollout.commit != commit {
        // A newer commit's rollout: this one will not finish as such.
        return None;
    }
    let failure = rollout.failure.clone();
    let (outcome, message) = match rollout.phase {
        Phase::Running => return None,
        Phase::Completed | Phase::Unneeded => ("done", crate::driver::summary(rollout)),
        Phase::Halted | Phase::RolledBack => ("halted", rollout.message.clone()),
        Phase::Invalid => ("failed", rollout.message.clone()),
        Phase::Superseded => ("superseded", rollout.message.clone()),
    };
    Some(WaitView {
        outcome: outcome.to_owned(),
        message,
        agent: failure
            .as_ref()
            .map(|f| f.agent.clone())
            .filter(|a| !a.is_empty()),
        object: failure.and_then(|f| f.object),
        rollout: None,
    })
}

/// What a wait for `agent` to have `commit` concludes from its last
/// report of the project and the project's rollout; `None`: not yet.
pub fn agent_outcome(
    agent: &str,
    commit: &str,
    observed: Option<&Observed>,
    rollout: Option<&Rollout>,
    pin: Option<&Pin>,
) -> Option<WaitView> {
    let view = |outcome: &str, message: String, object: Option<String>| WaitView {
        outcome: outcome.to_owned(),
        message,
        agent: Some(agent.to_owned()),
        object,
        rollout: None,
    };
    if let Some(seen) = observed.filter(|o| o.commit == commit) {
        if let Some((object, message)) = &seen.failed {
            return Some(view("failed", message.clone(), object.clone()));
        }
        if seen.healthy {
            return Some(view(
                "done",
                format!(
                    "{} synced with every object Current",
                    crate::advance::short(commit)
                ),
                None,
            ));
        }
    }
    if let Some(pin) = pin.filter(|p| p.commit != commit) {
        return Some(view(
            "halted",
            format!("pinned to {}", crate::advance::short(&pin.commit)),
            None,
        ));
    }
    let rollout = rollout.filter(|r| r.commit == commit)?;
    let state = rollout.agents.get(agent);
    match rollout.phase {
        Phase::Halted | Phase::RolledBack | Phase::Invalid
            if state.is_none_or(|s| s.gets.as_deref() != Some(commit)) =>
        {
            Some(view("halted", rollout.message.clone(), None))
        }
        Phase::Superseded if state.is_none_or(|s| s.gets.as_deref() != Some(commit)) => {
            Some(view("superseded", rollout.message.clone(), None))
        }
        _ => None,
    }
}

/// Which commit `agent` is on in `rollout`, and why, in a line (a plan
/// shows it).
pub fn agent_line(rollout: &Rollout, agent: &str, pin: Option<&Pin>) -> String {
    let short = crate::advance::short;
    if let Some(pin) = pin {
        return format!("pinned to {}: rollouts skip it", short(&pin.commit));
    }
    let head = format!(
        "rollout of {} ({})",
        short(&rollout.commit),
        rollout.phase.as_str()
    );
    match rollout.agents.get(agent) {
        None => match rollout.phase {
            Phase::Completed | Phase::Unneeded => format!("{head}: given it"),
            _ => format!("{head}: not among its agents yet; keeps its commit"),
        },
        Some(a) => {
            let on = a
                .gets
                .as_deref()
                .or(a.from.as_deref())
                .map_or("nothing yet".to_owned(), |c| short(c).to_owned());
            let wave = a
                .wave
                .and_then(|w| rollout.waves.get(w))
                .map_or(String::new(), |w| format!(", wave {}", w.name));
            let why = match a.message.is_empty() {
                true => String::new(),
                false => format!(" ({})", a.message),
            };
            format!("{head}: {}{wave}, on {on}{why}", a.phase.as_str())
        }
    }
}
