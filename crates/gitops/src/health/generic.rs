//! The checks that hold for every kind (kstatus's `checkGenericProperties`
//! and `checkReadyCondition`).
//!
//! The standard conditions `Reconciling` and `Stalled` follow the
//! "abnormal-true" convention: absent means normal. An object that uses them
//! is judged by them alone, before its kind's rule, so that a controller
//! (built-in or custom) that adopts them is understood without a rule of
//! its own.

use super::object::Observed;
use super::{Health, Verdict, current, failed, in_progress};

/// A decision from what every object has, or `None` to go on to the kind's
/// rule.
pub(super) fn decided(o: &Observed<'_>) -> Option<Verdict> {
    if !o.string_or_empty("/metadata/deletionTimestamp").is_empty() {
        return Some((Health::Terminating, "being deleted".into()));
    }
    if let Some(verdict) = unobserved_generation(o) {
        return Some(verdict);
    }
    o.conditions().find_map(|c| match c.kind {
        "Reconciling" if c.is_true() => Some(in_progress(c.explain("reconciling"))),
        "Stalled" if c.is_true() => Some(failed(c.explain("stalled"))),
        _ => None,
    })
}

/// InProgress while the controller has not seen the latest spec. An object
/// without both fields cannot tell, so this says nothing about it (kinds
/// whose controller always writes them check that they are there).
fn unobserved_generation(o: &Observed<'_>) -> Option<Verdict> {
    let generation = o.int("/metadata/generation")?;
    let observed = o.int("/status/observedGeneration")?;
    (observed != generation).then(|| {
        in_progress(format!(
            "generation {generation} not yet observed (latest observed: {observed})"
        ))
    })
}

/// The last resort for a kind without its own rule: a `Ready` condition,
/// widely used though not what the Kubernetes API conventions recommend.
/// Blind spots kstatus names too: a controller that sets `Ready` only once
/// it is True, or has not written it yet, looks Current; and `Ready` False
/// cannot tell slow progress from a dead end.
pub(super) fn ready_condition(o: &Observed<'_>) -> Option<Verdict> {
    o.conditions()
        .filter(|c| c.kind == "Ready")
        .find_map(|c| match c.status {
            "True" => Some(current()),
            "False" | "Unknown" => Some(in_progress(c.explain("not ready"))),
            _ => None,
        })
}
