//! How a rollout moves: started from a commit's rollout file and the
//! agents that follow the project, then advanced on each look at what the
//! agents reported. Pure (the time is passed in), so every rule is tested
//! without a cluster; the driver only feeds it and writes what it returns.

use std::collections::BTreeMap;

use tether_agent_config::labels::Labels;
use tether_agent_config::rollout::{OnFailure, RolloutSpec};

use crate::state::*;

/// An agent that follows the project, as a rollout starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub labels: Labels,
    /// The commit it was last given, if any.
    pub given: Option<String>,
    /// The commit an operator pinned it to, if any.
    pub pinned: Option<String>,
}

/// What an agent last reported of the project, as far as a rollout cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub commit: String,
    /// The sync applied the commit and every object it follows is Current.
    pub healthy: bool,
    /// The sync failed (its error), or an object is Failed or Degraded
    /// (`Kind namespace/name` and its message).
    pub failed: Option<(Option<String>, String)>,
}

impl Observed {
    /// What a sync report (kas's JSON view of it) says.
    pub fn of(view: &tether_api::SyncView) -> Self {
        let followed: Vec<&tether_api::ObjectView> = view
            .objects
            .iter()
            .filter(|o| matches!(o.action.as_str(), "applied" | "unchanged"))
            .collect();
        let bad = followed
            .iter()
            .find(|o| matches!(o.health.as_str(), "Failed" | "Degraded"));
        // The object that failed, when one did (agentk also fails the
        // sync for it), else the sync's own error.
        let failed = match (view.state.as_str(), bad) {
            (_, Some(o)) => Some((
                Some(describe(o)),
                o.message.clone().unwrap_or_else(|| o.health.clone()),
            )),
            ("failed", None) => Some((
                None,
                view.error
                    .clone()
                    .unwrap_or_else(|| "the sync failed".to_owned()),
            )),
            _ => None,
        };
        Observed {
            commit: view.commit.clone(),
            healthy: view.state == "synced"
                && matches!(view.phase.as_str(), "done" | "")
                && followed.iter().all(|o| o.health == "Current"),
            failed,
        }
    }
}

fn describe(o: &tether_api::ObjectView) -> String {
    match &o.namespace {
        Some(ns) => format!("{} {ns}/{}", o.kind, o.name),
        None => format!("{} {}", o.kind, o.name),
    }
}

/// What a step of a rollout tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started,
    WavePassed { wave: String },
    Halted { failure: Failure },
    RolledBack { why: String },
    Completed,
}

/// A rollout of `commit` by `spec` to `agents`: each agent in the first
/// wave that matches it, the others in a last wave of their own; pinned
/// agents skipped. The first wave starts at once.
pub fn start(
    project: &str,
    commit: &str,
    spec: RolloutSpec,
    agents: Vec<Candidate>,
    now: Millis,
) -> (Rollout, Vec<Event>) {
    let mut waves: Vec<WaveState> = spec
        .waves
        .iter()
        .map(|w| WaveState {
            name: w.name.clone(),
            agents: Vec::new(),
            parallel: 0,
            soak_ms: u64::try_from(w.soak.as_millis()).unwrap_or(u64::MAX),
            phase: WavePhase::Pending,
            started_at: None,
            soak_since: None,
            ended_at: None,
        })
        .collect();
    let mut unmatched = Vec::new();
    let mut states = BTreeMap::new();
    for agent in agents {
        if let Some(pinned) = agent.pinned {
            states.insert(agent.name, pinned_state(agent.given, pinned));
            continue;
        }
        let wave = spec
            .waves
            .iter()
            .position(|w| w.agents.matches(&agent.labels));
        let index = match wave {
            Some(i) => {
                waves[i].agents.push(agent.name.clone());
                i
            }
            None => {
                unmatched.push(agent.name.clone());
                spec.waves.len()
            }
        };
        states.insert(
            agent.name,
            AgentState {
                wave: Some(index),
                from: agent.given,
                gets: None,
                phase: AgentPhase::Waiting,
                admitted_at: None,
                healthy_at: None,
                message: String::new(),
            },
        );
    }
    // The last wave takes what no wave matched, so that nothing is left
    // behind; without any, it is not shown.
    if !unmatched.is_empty() {
        waves.push(WaveState {
            name: UNMATCHED_WAVE.to_owned(),
            agents: unmatched,
            parallel: 0,
            soak_ms: 0,
            phase: WavePhase::Pending,
            started_at: None,
            soak_since: None,
            ended_at: None,
        });
    }
    for (i, wave) in waves.iter_mut().enumerate() {
        wave.agents.sort();
        let total = wave.agents.len();
        wave.parallel = match spec.waves.get(i).and_then(|w| w.max_parallel) {
            Some(p) => p.of(total),
            None => total,
        }
        .max(1);
    }
    let mut rollout = Rollout {
        project: project.to_owned(),
        commit: commit.to_owned(),
        phase: Phase::Running,
        paused: false,
        promote: false,
        spec: Some(spec),
        waves,
        agents: states,
        current: 0,
        started_at: now,
        updated_at: now,
        ended_at: None,
        failure: None,
        message: String::new(),
        supersedes: Vec::new(),
        base: None,
        rev: 0,
    };
    let mut events = vec![Event::Started];
    events.extend(advance(&mut rollout, &BTreeMap::new(), now));
    (rollout, events)
}

/// A rollout that moves nothing: `phase` says why (an invalid file, or a
/// commit that changes no file any agent receives).
pub fn settled(project: &str, commit: &str, phase: Phase, message: String, now: Millis) -> Rollout {
    Rollout {
        project: project.to_owned(),
        commit: commit.to_owned(),
        phase,
        paused: false,
        promote: false,
        spec: None,
        waves: Vec::new(),
        agents: BTreeMap::new(),
        current: 0,
        started_at: now,
        updated_at: now,
        ended_at: Some(now),
        failure: None,
        message,
        supersedes: Vec::new(),
        base: None,
        rev: 0,
    }
}

/// Moves `rollout` on what its agents reported (`observed`, by agent):
/// judges the agents updating, admits the next ones, passes the wave after
/// its soak, and on a failure halts or rolls back as the file says.
pub fn advance(
    rollout: &mut Rollout,
    observed: &BTreeMap<String, Observed>,
    now: Millis,
) -> Vec<Event> {
    let mut events = Vec::new();
    if rollout.phase != Phase::Running {
        return events;
    }
    let (on_failure, timeout) = match &rollout.spec {
        Some(spec) => (
            spec.on_failure,
            i64::try_from(spec.agent_timeout.as_millis()).unwrap_or(i64::MAX),
        ),
        None => (OnFailure::Halt, i64::MAX),
    };
    while rollout.current < rollout.waves.len() {
        let current = rollout.current;
        let commit = rollout.commit.clone();
        let wave = &mut rollout.waves[current];
        if wave.phase == WavePhase::Pending {
            wave.phase = WavePhase::Running;
            wave.started_at = Some(now);
        }
        // Judge the agents given the commit.
        let mut failure = None;
        for name in &wave.agents {
            let Some(agent) = rollout.agents.get_mut(name) else {
                continue;
            };
            if !matches!(agent.phase, AgentPhase::Updating | AgentPhase::Healthy) {
                continue;
            }
            let seen = observed.get(name).filter(|o| o.commit == commit);
            if let Some((object, message)) = seen.and_then(|o| o.failed.clone()) {
                agent.phase = AgentPhase::Failed;
                agent.message = message.clone();
                failure = Some(Failure {
                    wave: wave.name.clone(),
                    agent: name.clone(),
                    object,
                    message,
                });
                break;
            }
            if seen.is_some_and(|o| o.healthy) {
                if agent.phase != AgentPhase::Healthy {
                    agent.phase = AgentPhase::Healthy;
                    agent.healthy_at = Some(now);
                    agent.message = String::new();
                }
                continue;
            }
            if agent.phase == AgentPhase::Updating
                && agent
                    .admitted_at
                    .is_some_and(|at| now.saturating_sub(at) > timeout)
            {
                let message = format!(
                    "did not report {} synced with every object Current within {}",
                    short(&commit),
                    seconds(timeout)
                );
                agent.phase = AgentPhase::Failed;
                agent.message = message.clone();
                failure = Some(Failure {
                    wave: wave.name.clone(),
                    agent: name.clone(),
                    object: None,
                    message,
                });
                break;
            }
        }
        if let Some(failure) = failure {
            wave.phase = WavePhase::Failed;
            wave.ended_at = Some(now);
            rollout.failure = Some(failure.clone());
            match on_failure {
                OnFailure::Halt => {
                    rollout.phase = Phase::Halted;
                    rollout.message = format!("halted: {failure}");
                    rollout.ended_at = Some(now);
                    events.push(Event::Halted { failure });
                }
                OnFailure::Rollback => {
                    events.push(roll_back(rollout, format!("{failure}"), now));
                }
            }
            break;
        }
        if rollout.paused {
            break;
        }
        // Admit as many as the wave allows at once.
        let updating = wave
            .agents
            .iter()
            .filter(|n| {
                rollout
                    .agents
                    .get(*n)
                    .is_some_and(|a| a.phase == AgentPhase::Updating)
            })
            .count();
        let mut free = wave.parallel.saturating_sub(updating);
        for name in &wave.agents {
            if free == 0 {
                break;
            }
            let Some(agent) = rollout.agents.get_mut(name) else {
                continue;
            };
            if agent.phase == AgentPhase::Waiting {
                agent.phase = AgentPhase::Updating;
                agent.gets = Some(commit.clone());
                agent.admitted_at = Some(now);
                agent.message = String::new();
                free -= 1;
            }
        }
        let all_healthy = wave.agents.iter().all(|n| {
            rollout
                .agents
                .get(n)
                .is_none_or(|a| a.phase == AgentPhase::Healthy)
        });
        if !all_healthy {
            break;
        }
        if wave.phase == WavePhase::Running {
            wave.phase = WavePhase::Soaking;
            wave.soak_since = Some(now);
        }
        let soaked = wave.agents.is_empty()
            || wave.soak_since.is_some_and(|s| {
                now.saturating_sub(s) >= i64::try_from(wave.soak_ms).unwrap_or(i64::MAX)
            });
        if !(soaked || rollout.promote) {
            break;
        }
        wave.phase = WavePhase::Passed;
        wave.ended_at = Some(now);
        rollout.promote = false;
        events.push(Event::WavePassed {
            wave: wave.name.clone(),
        });
        rollout.current += 1;
    }
    if rollout.phase == Phase::Running && rollout.current >= rollout.waves.len() {
        rollout.phase = Phase::Completed;
        rollout.ended_at = Some(now);
        events.push(Event::Completed);
    }
    rollout.updated_at = now;
    events
}

/// Gives every agent the rollout reached its commit from before, and ends
/// the rollout: a failed wave under `on_failure: rollback`, or an abort.
pub fn roll_back(rollout: &mut Rollout, why: String, now: Millis) -> Event {
    for agent in rollout.agents.values_mut() {
        if agent.phase == AgentPhase::Pinned || agent.gets.as_deref() != Some(&rollout.commit) {
            continue;
        }
        match agent.from.clone() {
            Some(from) => {
                agent.gets = Some(from.clone());
                agent.phase = AgentPhase::RolledBack;
                agent.message = format!("given {} back", short(&from));
            }
            None => {
                agent.message = "had no commit before this rollout: keeps this one".to_owned();
            }
        }
    }
    if let Some(wave) = rollout.waves.get_mut(rollout.current)
        && !matches!(wave.phase, WavePhase::Failed | WavePhase::Passed)
    {
        wave.phase = WavePhase::Failed;
        wave.ended_at = Some(now);
    }
    rollout.phase = Phase::RolledBack;
    rollout.message = format!("rolled back: {why}");
    rollout.ended_at = Some(now);
    rollout.updated_at = now;
    Event::RolledBack { why }
}

/// An agent that started following the project during the rollout joins
/// the wave that matches it, or the current one when that wave passed
/// already (or the last, unmatched wave), and waits its turn there.
pub fn join(rollout: &mut Rollout, candidate: Candidate) {
    if rollout.agents.contains_key(&candidate.name) || rollout.phase.ended() {
        return;
    }
    if let Some(pinned) = candidate.pinned {
        rollout
            .agents
            .insert(candidate.name, pinned_state(candidate.given, pinned));
        return;
    }
    let spec_waves = rollout
        .spec
        .as_ref()
        .map(|s| s.waves.clone())
        .unwrap_or_default();
    let index = match spec_waves
        .iter()
        .position(|w| w.agents.matches(&candidate.labels))
    {
        Some(i) => i,
        None if rollout.waves.len() > spec_waves.len() => spec_waves.len(),
        None => {
            rollout.waves.push(WaveState {
                name: UNMATCHED_WAVE.to_owned(),
                agents: Vec::new(),
                parallel: 1,
                soak_ms: 0,
                phase: WavePhase::Pending,
                started_at: None,
                soak_since: None,
                ended_at: None,
            });
            spec_waves.len()
        }
    }
    .max(rollout.current);
    let Some(wave) = rollout.waves.get_mut(index) else {
        return;
    };
    wave.agents.push(candidate.name.clone());
    let total = wave.agents.len();
    wave.parallel = match spec_waves.get(index).and_then(|w| w.max_parallel) {
        Some(p) => p.of(total),
        None => total,
    }
    .max(1);
    rollout.agents.insert(
        candidate.name,
        AgentState {
            wave: Some(index),
            from: candidate.given,
            gets: None,
            phase: AgentPhase::Waiting,
            admitted_at: None,
            healthy_at: None,
            message: String::new(),
        },
    );
}

/// An agent an operator holds on `pinned`: in no wave, given its pin.
fn pinned_state(given: Option<String>, pinned: String) -> AgentState {
    AgentState {
        wave: None,
        from: given,
        message: format!("pinned to {}: skipped", short(&pinned)),
        gets: Some(pinned),
        phase: AgentPhase::Pinned,
        admitted_at: None,
        healthy_at: None,
    }
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn seconds(ms: i64) -> String {
    format!("{}s", ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tether_agent_config::rollout::{Parallel, WaveSpec};

    fn selector(env: &str) -> tether_agent_config::labels::LabelSelector {
        tether_agent_config::labels::LabelSelector {
            match_labels: [("env".to_owned(), env.to_owned())].into(),
            match_expressions: Vec::new(),
        }
    }

    fn spec(on_failure: OnFailure) -> RolloutSpec {
        RolloutSpec {
            waves: vec![
                WaveSpec {
                    name: "canary".into(),
                    agents: selector("canary"),
                    max_parallel: None,
                    soak: Duration::from_secs(60),
                },
                WaveSpec {
                    name: "prod".into(),
                    agents: selector("prod"),
                    max_parallel: Some(Parallel::Count(2)),
                    soak: Duration::ZERO,
                },
            ],
            on_failure,
            agent_timeout: Duration::from_secs(600),
        }
    }

    fn agent(name: &str, env: &str) -> Candidate {
        Candidate {
            name: name.into(),
            labels: [("env".to_owned(), env.to_owned())].into(),
            given: Some("old".into()),
            pinned: None,
        }
    }

    fn fleet() -> Vec<Candidate> {
        vec![
            agent("c1", "canary"),
            agent("p1", "prod"),
            agent("p2", "prod"),
            agent("p3", "prod"),
            agent("p4", "prod"),
            agent("dev", "dev"),
        ]
    }

    fn healthy(commit: &str) -> Observed {
        Observed {
            commit: commit.into(),
            healthy: true,
            failed: None,
        }
    }

    fn given(r: &Rollout) -> Vec<(&str, Option<&str>)> {
        r.agents
            .iter()
            .map(|(n, a)| (n.as_str(), a.gets.as_deref()))
            .collect()
    }

    #[test]
    fn a_good_commit_goes_wave_by_wave_after_each_soak_and_at_most_max_parallel_at_once() {
        let (mut r, events) = start("p", "new", spec(OnFailure::Halt), fleet(), 0);
        assert_eq!(events, [Event::Started]);
        assert_eq!(
            r.waves.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
            ["canary", "prod", UNMATCHED_WAVE],
            "the agent no wave matches goes last"
        );
        assert_eq!(r.agents["c1"].gets.as_deref(), Some("new"));
        assert!(
            r.agents
                .iter()
                .filter(|(n, _)| *n != "c1")
                .all(|(_, a)| a.gets.is_none())
        );

        let mut seen = BTreeMap::new();
        seen.insert("c1".to_owned(), healthy("new"));
        assert!(advance(&mut r, &seen, 1_000).is_empty());
        assert_eq!(r.waves[0].phase, WavePhase::Soaking);
        assert!(advance(&mut r, &seen, 60_999).is_empty(), "soaking");
        assert_eq!(
            advance(&mut r, &seen, 61_000),
            [Event::WavePassed {
                wave: "canary".into()
            }]
        );
        let updating: Vec<_> = r
            .agents
            .iter()
            .filter(|(_, a)| a.phase == AgentPhase::Updating)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(updating, ["p1", "p2"], "two at once");
        seen.insert("p1".into(), healthy("new"));
        advance(&mut r, &seen, 62_000);
        assert_eq!(r.agents["p3"].gets.as_deref(), Some("new"), "a slot freed");
        assert!(r.agents["p4"].gets.is_none());
        for p in ["p2", "p3", "p4", "dev"] {
            seen.insert(p.into(), healthy("new"));
        }
        advance(&mut r, &seen, 63_000);
        advance(&mut r, &seen, 64_000);
        assert_eq!(
            r.waves[2].phase,
            WavePhase::Running,
            "the unmatched agent goes last"
        );
        let events = advance(&mut r, &seen, 65_000);
        assert_eq!(r.phase, Phase::Completed, "{events:?}");
        assert!(events.contains(&Event::Completed));
        assert!(r.agents.values().all(|a| a.gets.as_deref() == Some("new")));
    }

    #[test]
    fn a_failed_sync_halts_with_later_waves_on_the_old_commit() {
        let (mut r, _) = start("p", "new", spec(OnFailure::Halt), fleet(), 0);
        let mut seen = BTreeMap::new();
        seen.insert(
            "c1".to_owned(),
            Observed {
                commit: "new".into(),
                healthy: false,
                failed: Some((None, "apply failed: admission webhook denied".into())),
            },
        );
        let events = advance(&mut r, &seen, 1_000);
        assert_eq!(r.phase, Phase::Halted);
        assert!(matches!(&events[..], [Event::Halted { failure }] if failure.agent == "c1"));
        assert_eq!(
            r.agents["c1"].gets.as_deref(),
            Some("new"),
            "halt keeps what is there"
        );
        assert!(
            r.agents
                .iter()
                .filter(|(n, _)| *n != "c1")
                .all(|(_, a)| a.gets.is_none())
        );
        assert!(
            advance(&mut r, &seen, 99_000).is_empty(),
            "an ended rollout moves no more"
        );
    }

    #[test]
    fn a_degraded_object_rolls_back_every_agent_reached() {
        let (mut r, _) = start("p", "new", spec(OnFailure::Rollback), fleet(), 0);
        let mut seen = BTreeMap::new();
        seen.insert("c1".to_owned(), healthy("new"));
        advance(&mut r, &seen, 1_000);
        advance(&mut r, &seen, 62_000);
        seen.insert(
            "p2".into(),
            Observed {
                commit: "new".into(),
                healthy: false,
                failed: Some((
                    Some("Deployment web/api".into()),
                    "ProgressDeadlineExceeded".into(),
                )),
            },
        );
        let events = advance(&mut r, &seen, 63_000);
        assert!(
            matches!(&events[..], [Event::RolledBack { why }] if why.contains("Deployment web/api"))
        );
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(
            given(&r),
            [
                ("c1", Some("old")),
                ("dev", None),
                ("p1", Some("old")),
                ("p2", Some("old")),
                ("p3", None),
                ("p4", None)
            ]
        );
    }

    #[test]
    fn an_agent_silent_past_its_timeout_fails_the_wave() {
        let (mut r, _) = start("p", "new", spec(OnFailure::Halt), fleet(), 0);
        let mut seen = BTreeMap::new();
        seen.insert(
            "c1".to_owned(),
            Observed {
                commit: "old".into(),
                healthy: true,
                failed: None,
            },
        );
        assert!(advance(&mut r, &seen, 600_000).is_empty(), "not yet past");
        let events = advance(&mut r, &seen, 600_001);
        assert!(
            matches!(&events[..], [Event::Halted { failure }] if failure.message.contains("within 600s"))
        );
    }

    #[test]
    fn pause_holds_admissions_promote_ends_the_soak_and_pins_are_skipped() {
        let mut agents = fleet();
        agents[1].pinned = Some("pinned".into());
        let (mut r, _) = start("p", "new", spec(OnFailure::Halt), agents, 0);
        assert_eq!(r.agents["p1"].phase, AgentPhase::Pinned);
        assert_eq!(r.agents["p1"].gets.as_deref(), Some("pinned"));
        let mut seen = BTreeMap::new();
        seen.insert("c1".to_owned(), healthy("new"));
        advance(&mut r, &seen, 1_000);
        r.paused = true;
        r.promote = true;
        assert!(
            advance(&mut r, &seen, 2_000).is_empty(),
            "paused: nothing passes"
        );
        r.paused = false;
        assert_eq!(
            advance(&mut r, &seen, 3_000),
            [Event::WavePassed {
                wave: "canary".into()
            }]
        );
        assert!(!r.promote, "a promotion ends one soak");
        assert_eq!(
            r.waves[1].agents,
            ["p2", "p3", "p4"],
            "the pinned agent is in no wave"
        );
    }

    #[test]
    fn reports_read_from_views() {
        let view = |state: &str, health: &str| tether_api::SyncView {
            state: state.into(),
            commit: "c".into(),
            objects: vec![tether_api::ObjectView {
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: Some("web".into()),
                name: "api".into(),
                action: "applied".into(),
                health: health.into(),
                message: Some("3/3 ready".into()),
            }],
            ..Default::default()
        };
        assert!(Observed::of(&view("synced", "Current")).healthy);
        assert!(!Observed::of(&view("synced", "InProgress")).healthy);
        assert_eq!(
            Observed::of(&view("synced", "Failed")).failed,
            Some((Some("Deployment web/api".into()), "3/3 ready".into()))
        );
        assert!(Observed::of(&view("failed", "Current")).failed.is_some());
    }
}
