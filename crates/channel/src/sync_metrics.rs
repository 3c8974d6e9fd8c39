//! What agents' sync reports say, as metrics a fleet dashboard and alerts
//! are built on: `tether_sync_info`, objects by health, the last success,
//! durations and corrections.
//!
//! Per-agent series are one per agent and project this replica holds a
//! session of: a new report replaces its agent's series (the old label set
//! is removed, not left at 0), and an agent whose last session here ends is
//! forgotten, so the replica it moved to reports it. On very large fleets
//! `--metrics-per-agent=false` drops them; the fleet-wide counts
//! (`tether_sync_agents{state}`) stay.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tether_proto::v1;

/// `tether_sync_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncInfo {
    pub agent: String,
    pub project: String,
    pub commit: String,
    /// `syncing`, `synced`, `failed`, `dry_run`, `degraded` (applied, but
    /// an object Failed its health) or `unknown`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentProject {
    pub agent: String,
    pub project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectsByHealth {
    pub agent: String,
    pub project: String,
    /// kstatus's: `Current`, `InProgress`, `Failed`, `Terminating`,
    /// `NotFound` or `Unknown`.
    pub health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `synced` or `failed`.
    pub result: &'static str,
}

/// Most drift corrections one report carries (agentk's bound).
const MAX_DRIFT_PER_REPORT: usize = 50;

/// kstatus's; `Unknown` last, where a health none of the others names counts.
const HEALTHS: [&str; 6] = [
    "Current",
    "InProgress",
    "Failed",
    "Terminating",
    "NotFound",
    "Unknown",
];

/// Cheap to clone: every handle shares the same series.
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    per_agent: Arc<std::sync::atomic::AtomicBool>,
    info: Family<SyncInfo, Gauge>,
    objects: Family<ObjectsByHealth, Gauge>,
    last_success: Family<AgentProject, Gauge<f64, AtomicU64>>,
    agents: Family<StateLabel, Gauge>,
    /// A sync's apply, as agentk measured it, by outcome.
    duration: Family<Outcome, Histogram>,
    drift: Counter,
    pruned: Counter,
    /// What each (agent, project) shows now, to replace it.
    current: Arc<Mutex<HashMap<(String, String), Shown>>>,
}

#[derive(Debug)]
struct Shown {
    info: SyncInfo,
    /// The newest drift correction counted, by its time, so that a report
    /// repeating earlier corrections does not count them again.
    drift_seen: String,
    /// The commit whose duration and prunes were counted.
    counted: Option<String>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            per_agent: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            info: Family::default(),
            objects: Family::default(),
            last_success: Family::default(),
            agents: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ])
            }),
            drift: Counter::default(),
            pruned: Counter::default(),
            current: Arc::default(),
        }
    }
}

fn state_of(report: &v1::SyncReport) -> &'static str {
    match report.state() {
        v1::SyncState::Synced
            if report.objects.iter().any(|o| {
                o.health == "Failed" && matches!(o.action.as_str(), "applied" | "unchanged")
            }) =>
        {
            "degraded"
        }
        v1::SyncState::Synced => "synced",
        v1::SyncState::Failed => "failed",
        v1::SyncState::DryRun => "dry_run",
        v1::SyncState::Syncing => "syncing",
        v1::SyncState::Unspecified => "unknown",
    }
}

impl SyncMetrics {
    /// Whether per-agent series are kept (the default).
    pub fn set_per_agent(&self, on: bool) {
        self.per_agent
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn per_agent(&self) -> bool {
        self.per_agent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `agent` sent `report`, received at `now` (seconds since the epoch).
    pub fn observe(&self, agent: &str, report: &v1::SyncReport, now: f64) {
        let state = state_of(report);
        let key = (agent.to_owned(), report.project_id.clone());
        let info = SyncInfo {
            agent: agent.to_owned(),
            project: report.project_id.clone(),
            commit: report.commit_id.clone(),
            state,
        };
        let pair = AgentProject {
            agent: agent.to_owned(),
            project: report.project_id.clone(),
        };
        let finished = report.phase == "done"
            || matches!(
                report.state(),
                v1::SyncState::Failed | v1::SyncState::DryRun
            );
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match current.get(&key) {
            Some(shown) if shown.info == info => false,
            Some(shown) => {
                self.agents
                    .get_or_create(&StateLabel {
                        state: shown.info.state,
                    })
                    .dec();
                self.info.remove(&shown.info);
                true
            }
            None => true,
        };
        // The first report of a pair on this replica is most often the
        // agent's last report sent again on a new session: what it says was
        // counted where it was first received, so it sets the marks here
        // and counts nothing.
        let first = !current.contains_key(&key);
        let shown = current.entry(key).or_insert_with(|| Shown {
            info: info.clone(),
            drift_seen: report
                .drift
                .iter()
                .map(|d| d.at.clone())
                .max()
                .unwrap_or_default(),
            counted: finished.then(|| report.commit_id.clone()),
        });
        if changed {
            self.agents.get_or_create(&StateLabel { state }).inc();
            if self.per_agent() {
                self.info.get_or_create(&info).set(1);
            }
            shown.info = info;
        }
        if self.per_agent() {
            // One pass over the objects: a report of thousands comes every
            // second while a sync waits for health.
            let mut counts = [0usize; HEALTHS.len()];
            for o in &report.objects {
                if matches!(o.action.as_str(), "applied" | "unchanged") {
                    let at = HEALTHS
                        .iter()
                        .position(|h| *h == o.health)
                        .unwrap_or(HEALTHS.len() - 1);
                    counts[at] += 1;
                }
            }
            for (health, count) in HEALTHS.into_iter().zip(counts) {
                self.objects
                    .get_or_create(&ObjectsByHealth {
                        agent: agent.to_owned(),
                        project: report.project_id.clone(),
                        health,
                    })
                    .set(count as i64);
            }
            if matches!(state, "synced") && report.phase == "done" {
                // When the agent saw it done (a resent report keeps its
                // time), not when this replica heard of it.
                let at = tether_store::time::from_rfc3339(&report.phase_since)
                    .ok()
                    .map(|t| t as f64)
                    .filter(|t| *t <= now)
                    .unwrap_or(now);
                self.last_success.get_or_create(&pair).set(at);
            }
        }
        // At most what a report carries, and none dated in the future (an
        // agent cannot make one correction count again and again).
        let latest = tether_store::time::to_rfc3339(now as i64 + 60);
        let new = report
            .drift
            .iter()
            .take(MAX_DRIFT_PER_REPORT)
            .filter(|d| d.at.as_str() > shown.drift_seen.as_str() && d.at <= latest)
            .count();
        self.drift.inc_by(new as u64);
        if let Some(newest) = report
            .drift
            .iter()
            .map(|d| d.at.clone())
            .filter(|at| *at <= latest)
            .max()
            && newest > shown.drift_seen
        {
            shown.drift_seen = newest;
        }
        if !first && finished && shown.counted.as_deref() != Some(report.commit_id.as_str()) {
            shown.counted = Some(report.commit_id.clone());
            self.pruned.inc_by(u64::from(report.pruned));
            if let Some(d) = &report.duration {
                let seconds = d.seconds.max(0) as f64 + f64::from(d.nanos.max(0)) / 1e9;
                let result = if state == "failed" {
                    "failed"
                } else {
                    "synced"
                };
                self.duration
                    .get_or_create(&Outcome { result })
                    .observe(seconds);
            }
        }
    }

    /// The last session of `agent` on this replica ended: its series go,
    /// and the replica it reconnects to shows it.
    pub fn forget(&self, agent: &str) {
        self.forget_where(|a, _| a == agent);
    }

    /// `agent` no longer syncs the projects `followed` says no to: their
    /// series go (a failed sync of a project dropped from the config would
    /// otherwise alert until the agent disconnects).
    pub fn retain_projects(&self, agent: &str, followed: impl Fn(&str) -> bool) {
        self.forget_where(|a, project| a == agent && !followed(project));
    }

    fn forget_where(&self, gone: impl Fn(&str, &str) -> bool) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.retain(|(a, project), shown| {
            if !gone(a, project) {
                return true;
            }
            self.agents
                .get_or_create(&StateLabel {
                    state: shown.info.state,
                })
                .dec();
            self.info.remove(&shown.info);
            let pair = AgentProject {
                agent: a.clone(),
                project: project.clone(),
            };
            self.last_success.remove(&pair);
            for health in HEALTHS {
                self.objects.remove(&ObjectsByHealth {
                    agent: a.clone(),
                    project: project.clone(),
                    health,
                });
            }
            false
        });
    }

    /// Adds the metrics under `registry`'s prefix (`tether_` for kas).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sync_info",
            "1 for each agent and manifest project, labelled with the commit it last reported and that sync's state",
            self.info.clone(),
        );
        registry.register(
            "sync_objects",
            "Objects of an agent's last sync of a project, by health",
            self.objects.clone(),
        );
        registry.register(
            "sync_last_success_timestamp_seconds",
            "When an agent last reported a sync of a project done with every object Current (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "sync_agents",
            "Agent and project pairs by the state of their last sync",
            self.agents.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Time agents took to apply a set of manifests, by outcome",
            self.duration.clone(),
        );
        registry.register(
            "sync_drift_corrections",
            "Objects agents put back after someone changed or deleted them",
            self.drift.clone(),
        );
        registry.register(
            "sync_pruned_objects",
            "Objects agents deleted because they left git",
            self.pruned.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(commit: &str, state: v1::SyncState, phase: &str) -> v1::SyncReport {
        v1::SyncReport {
            project_id: "p".into(),
            commit_id: commit.into(),
            state: state as i32,
            phase: phase.into(),
            objects: vec![v1::ObjectResult {
                kind: "Deployment".into(),
                name: "web".into(),
                action: "applied".into(),
                health: "Current".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn text(m: &SyncMetrics) -> String {
        let mut registry = Registry::with_prefix("tether");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("a test value");
        text
    }

    #[test]
    fn a_new_report_replaces_the_series_and_a_gone_agent_is_forgotten() {
        let m = SyncMetrics::default();
        m.observe("a", &report("c1", v1::SyncState::Synced, "done"), 100.0);
        let t = text(&m);
        assert!(
            t.contains(r#"tether_sync_info{agent="a",project="p",commit="c1",state="synced"} 1"#),
            "{t}"
        );
        assert!(t.contains(r#"tether_sync_agents{state="synced"} 1"#), "{t}");
        assert!(
            t.contains(
                r#"tether_sync_last_success_timestamp_seconds{agent="a",project="p"} 100.0"#
            ),
            "{t}"
        );
        m.observe("a", &report("c2", v1::SyncState::Failed, ""), 101.0);
        let t = text(&m);
        assert!(!t.contains(r#"commit="c1""#), "{t}");
        assert!(
            t.contains(r#"tether_sync_info{agent="a",project="p",commit="c2",state="failed"} 1"#),
            "{t}"
        );
        assert!(t.contains(r#"tether_sync_agents{state="synced"} 0"#), "{t}");
        assert!(t.contains(r#"tether_sync_agents{state="failed"} 1"#), "{t}");
        // The same report again changes nothing.
        m.observe("a", &report("c2", v1::SyncState::Failed, ""), 102.0);
        assert!(text(&m).contains(r#"tether_sync_agents{state="failed"} 1"#));
        m.forget("a");
        let t = text(&m);
        assert!(!t.contains(r#"agent="a""#), "{t}");
        assert!(t.contains(r#"tether_sync_agents{state="failed"} 0"#), "{t}");
    }

    #[test]
    fn drift_corrections_count_once_and_failed_health_is_degraded() {
        let now =
            tether_store::time::from_rfc3339("2026-12-07T10:01:00Z").expect("a test value") as f64;
        let m = SyncMetrics::default();
        let mut r = report("c1", v1::SyncState::Synced, "done");
        // What a new session's first report says was counted elsewhere.
        r.drift.push(v1::DriftEvent {
            at: "2026-12-07T09:00:00Z".into(),
            ..Default::default()
        });
        m.observe("a", &r, now);
        r.drift.push(v1::DriftEvent {
            at: "2026-12-07T10:00:00Z".into(),
            ..Default::default()
        });
        m.observe("a", &r, now);
        m.observe("a", &r, now);
        r.drift.push(v1::DriftEvent {
            at: "2026-12-07T10:00:05Z".into(),
            ..Default::default()
        });
        // Dated in the future: not counted, now or later.
        r.drift.push(v1::DriftEvent {
            at: "2099-01-01T00:00:00Z".into(),
            ..Default::default()
        });
        r.objects[0].health = "Failed".into();
        m.observe("a", &r, now);
        m.observe("a", &r, now);
        let t = text(&m);
        assert!(t.contains("tether_sync_drift_corrections_total 2"), "{t}");
        assert!(t.contains(r#"state="degraded""#), "{t}");
    }

    #[test]
    fn a_resent_report_counts_nothing_again_and_keeps_its_time() {
        let m = SyncMetrics::default();
        let mut r = report("c1", v1::SyncState::Synced, "done");
        r.pruned = 3;
        r.phase_since = "2026-12-07T10:00:00Z".into();
        let now =
            tether_store::time::from_rfc3339("2026-12-07T11:00:00Z").expect("a test value") as f64;
        m.observe("a", &r, now);
        let t = text(&m);
        assert!(t.contains("tether_sync_pruned_objects_total 0"), "{t}");
        assert!(
            t.contains(
                r#"tether_sync_last_success_timestamp_seconds{agent="a",project="p"} 1796637600.0"#
            ),
            "{t}"
        );
        // A new commit's sync, on the same session, counts.
        let mut r2 = report("c2", v1::SyncState::Synced, "done");
        r2.pruned = 2;
        m.observe("a", &r2, now);
        assert!(text(&m).contains("tether_sync_pruned_objects_total 2"));
        // A project dropped from the agent's config loses its series.
        m.retain_projects("a", |p| p != "p");
        assert!(!text(&m).contains(r#"agent="a""#));
    }

    #[test]
    fn without_per_agent_series_only_the_fleet_counts_remain() {
        let m = SyncMetrics::default();
        m.set_per_agent(false);
        m.observe("a", &report("c1", v1::SyncState::Synced, "done"), 1.0);
        let t = text(&m);
        assert!(!t.contains(r#"agent="a""#), "{t}");
        assert!(t.contains(r#"tether_sync_agents{state="synced"} 1"#), "{t}");
    }
}
