//! Sync reports as kas records and shows them.

use tether_api::{DriftView, ObjectView, SyncView};

/// The view of a report an agent sent, received at `reported_at`.
pub fn sync_view(report: tether_proto::v1::SyncReport, reported_at: i64) -> SyncView {
    {
        use tether_proto::v1::SyncState;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        SyncView {
            state: match report.state() {
                SyncState::Synced => "synced",
                SyncState::Failed => "failed",
                SyncState::DryRun => "dry_run",
                SyncState::Unspecified => "unknown",
            }
            .to_owned(),
            project: report.project_id,
            commit: report.commit_id,
            error: non_empty(report.error),
            applied: report.applied,
            unchanged: report.unchanged,
            pruned: report.pruned,
            duration_ms: report
                .duration
                .map(|d| d.seconds.max(0) as u64 * 1000 + d.nanos.max(0) as u64 / 1_000_000)
                .unwrap_or_default(),
            reported_at: tether_store::time::to_rfc3339(reported_at),
            objects: report
                .objects
                .into_iter()
                .map(|o| ObjectView {
                    group: o.group,
                    kind: o.kind,
                    namespace: non_empty(o.namespace),
                    name: o.name,
                    action: o.action,
                    health: o.health,
                    message: non_empty(o.message),
                })
                .collect(),
            drift: report
                .drift
                .into_iter()
                .map(|d| DriftView {
                    group: d.group,
                    kind: d.kind,
                    namespace: non_empty(d.namespace),
                    name: d.name,
                    who: d.who,
                    what: d.what,
                    error: non_empty(d.error),
                    at: d.at,
                })
                .collect(),
        }
    }
}
