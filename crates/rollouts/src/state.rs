//! A rollout as the store keeps it (JSON in a fleet record): which commit
//! goes out, its waves, and for every agent of the project what it is
//! given and how it is doing. The driving replica writes it; every replica
//! reads it to decide what its sessions send, so it carries everything
//! that decision needs and nothing else has to be asked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tether_agent_config::rollout::RolloutSpec;

/// Milliseconds since the Unix epoch: a soak of a few seconds is measured
/// in them, and a wave's overhead is what the benchmark reports.
pub type Millis = i64;

/// The wave every agent matched by no wave falls into, last, so that
/// nothing silently never updates.
pub const UNMATCHED_WAVE: &str = "unmatched";

/// One project's current rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub project: String,
    /// The commit rolled out.
    pub commit: String,
    pub phase: Phase,
    /// No agent is admitted and no wave passes while paused; failures
    /// are still seen.
    #[serde(default)]
    pub paused: bool,
    /// An operator asked to end the current wave's soak now.
    #[serde(default)]
    pub promote: bool,
    /// The rollout file of `commit`; `None` when it did not parse.
    pub spec: Option<RolloutSpec>,
    pub waves: Vec<WaveState>,
    /// Every agent following the project when the rollout started, and
    /// those that came after.
    pub agents: BTreeMap<String, AgentState>,
    /// Index of the wave in progress (`waves.len()` once all passed).
    pub current: usize,
    pub started_at: Millis,
    pub updated_at: Millis,
    pub ended_at: Option<Millis>,
    /// What failed a wave.
    pub failure: Option<Failure>,
    /// Why the rollout is as it is (an invalid file, who aborted it, the
    /// commit that superseded it), for people.
    #[serde(default)]
    pub message: String,
    /// Commits whose rollouts this one superseded, newest last (a wait
    /// for one of them ends: it will not finish as such).
    #[serde(default)]
    pub supersedes: Vec<String>,
    /// What an agent with no commit of its own is given while the rollout
    /// has not reached it: the commit the last completed rollout gave.
    #[serde(default)]
    pub base: Option<String>,
    /// Written this many times: a replica keeps its own newer copy over
    /// an older one read back from the store.
    #[serde(default)]
    pub rev: u64,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// Every wave passed.
    Completed,
    /// A wave failed with `on_failure: halt`: later waves keep the old
    /// commit.
    Halted,
    /// A wave failed with `on_failure: rollback`, or an operator aborted:
    /// the agents reached get their previous commit back.
    RolledBack,
    /// A newer commit started its own rollout (or has no rollout file).
    Superseded,
    /// The commit's rollout file is invalid: no agent gets the commit.
    Invalid,
    /// The commit changes no file any agent receives: every agent gets it
    /// at once, as there is nothing to roll out.
    Unneeded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Completed => "completed",
            Phase::Halted => "halted",
            Phase::RolledBack => "rolled_back",
            Phase::Superseded => "superseded",
            Phase::Invalid => "invalid",
            Phase::Unneeded => "unneeded",
        }
    }

    /// Whether the rollout moves no more.
    pub fn ended(self) -> bool {
        self != Phase::Running
    }
}

/// One wave of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveState {
    pub name: String,
    /// Agents of this wave, by name, in the order they are admitted.
    pub agents: Vec<String>,
    /// Agents updating at once at most.
    pub parallel: usize,
    pub soak_ms: u64,
    pub phase: WavePhase,
    pub started_at: Option<Millis>,
    /// Since when every agent of the wave has been healthy.
    pub soak_since: Option<Millis>,
    pub ended_at: Option<Millis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WavePhase {
    Pending,
    Running,
    Soaking,
    Passed,
    Failed,
}

impl WavePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            WavePhase::Pending => "pending",
            WavePhase::Running => "running",
            WavePhase::Soaking => "soaking",
            WavePhase::Passed => "passed",
            WavePhase::Failed => "failed",
        }
    }
}

/// One agent in a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Its wave; `None` for a pinned agent, which rollouts skip.
    pub wave: Option<usize>,
    /// The commit it had when the rollout started (what a rollback gives
    /// back).
    pub from: Option<String>,
    /// The commit it is given now; `None`: it keeps the last one it was
    /// given.
    pub gets: Option<String>,
    pub phase: AgentPhase,
    pub admitted_at: Option<Millis>,
    pub healthy_at: Option<Millis>,
    /// Why it is where it is, for people.
    #[serde(default)]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentPhase {
    /// Not reached yet: keeps its commit.
    Waiting,
    /// Given the commit; not yet synced and healthy.
    Updating,
    /// Synced the commit with every object Current.
    Healthy,
    Failed,
    /// Held on a commit by an operator: skipped.
    Pinned,
    /// Given its previous commit back.
    RolledBack,
}

impl AgentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentPhase::Waiting => "waiting",
            AgentPhase::Updating => "updating",
            AgentPhase::Healthy => "healthy",
            AgentPhase::Failed => "failed",
            AgentPhase::Pinned => "pinned",
            AgentPhase::RolledBack => "rolled_back",
        }
    }
}

/// What failed a wave: the agent, the object when one did, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub wave: String,
    pub agent: String,
    /// `Kind namespace/name`.
    pub object: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wave {}: agent {}", self.wave, self.agent)?;
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// An operator holding one agent on one commit of a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub commit: String,
    pub at: Millis,
}

/// Fleet record keys. A project id never holds a space (its segments are
/// `[A-Za-z0-9._-]`) and agent names are DNS labels, so the space keeps
/// each prefix a prefix of one project only.
pub mod keys {
    /// `rollout <project>`: the project's current rollout.
    pub const ROLLOUT: &str = "rollout ";
    /// `given <project> <agent>`: the commit the agent was last given.
    pub const GIVEN: &str = "given ";
    /// `pin <project> <agent>`.
    pub const PIN: &str = "pin ";
    /// `request <project> <random>`: a control request for the driver.
    pub const REQUEST: &str = "request ";

    /// A request for `project`'s rollout, unique.
    pub fn request(project: &str) -> String {
        format!(
            "{REQUEST}{project} {:016x}{:08x}",
            super::now_ms(),
            rand::random::<u32>()
        )
    }

    pub fn rollout(project: &str) -> String {
        format!("{ROLLOUT}{project}")
    }

    pub fn given(project: &str, agent: &str) -> String {
        format!("{GIVEN}{project} {agent}")
    }

    pub fn given_of(project: &str) -> String {
        format!("{GIVEN}{project} ")
    }

    pub fn pin(project: &str, agent: &str) -> String {
        format!("{PIN}{project} {agent}")
    }

    /// `(project, agent)` of a `given` or `pin` key.
    pub fn split<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
        key.strip_prefix(prefix)?.split_once(' ')
    }
}

/// Now, in milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 of a time in milliseconds, for views.
pub fn rfc3339(ms: Millis) -> String {
    tether_store::time::to_rfc3339(ms / 1000)
}

/// What the store keeps of an agent following a project: the commit it
/// was last given, and the paths it receives (its globs, chart and
/// kustomization folders, values files), so the driver can tell whether a
/// commit changes anything that agent gets without reading its config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Given {
    /// Empty: it follows the project and was given nothing yet.
    pub commit: String,
    #[serde(default)]
    pub paths: Vec<String>,
}

/// An operator's request to the driving replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    /// End the current wave's soak now.
    Promote,
    /// Roll back every agent the rollout reached.
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }
}
