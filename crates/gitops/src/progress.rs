//! What a sync in progress tells its caller: the phase it is in and the
//! objects it waits for, so that a sync is never silent while it waits on
//! a hook, a dependency or the health of what it applied.

use crate::sync::ObjectOutcome;

/// Where a sync is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Applying,
    /// A `config.kubernetes.io/depends-on` wave waits for what it needs.
    WaitingForDependencies,
    /// A Helm hook (a pre-install Job, say) must complete first.
    WaitingForHooks,
    Pruning,
    /// Applied; the objects are not all Current yet.
    WaitingForHealth,
    /// Every object is Current, or the sync failed and says why.
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Applying => "applying",
            Phase::WaitingForDependencies => "waiting_for_dependencies",
            Phase::WaitingForHooks => "waiting_for_hooks",
            Phase::Pruning => "pruning",
            Phase::WaitingForHealth => "waiting_for_health",
            Phase::Done => "done",
        }
    }
}

/// A sync's state at a change of phase or of health.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub phase: Phase,
    /// What was applied so far.
    pub objects: &'a [ObjectOutcome],
    /// Indices into `objects` of what the phase waits for.
    pub waiting: &'a [usize],
}

/// Told of every [`Progress`]; called on the sync's task, so it must be
/// quick (agentk queues a report).
pub type Observer<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

/// An observer that ignores everything.
pub fn ignore(_: Progress<'_>) {}
