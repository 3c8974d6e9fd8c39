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
                SyncState::Syncing => "syncing",
                SyncState::Unspecified => "unknown",
            }
            .to_owned(),
            health: health_summary(&report.objects),
            phase: tether_api::known_phase(&report.phase).to_owned(),
            phase_since: non_empty(report.phase_since.chars().take(40).collect()),
            waiting: report
                .waiting
                .into_iter()
                .take(20)
                .map(object_view)
                .collect(),
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
            // From the agent: kept only when shaped like a trace id, as it
            // goes into links.
            trace_id: Some(report.trace_id)
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|t| t.to_ascii_lowercase()),
            objects: report.objects.into_iter().map(object_view).collect(),
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

fn object_view(o: tether_proto::v1::ObjectResult) -> ObjectView {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    ObjectView {
        group: o.group,
        kind: o.kind,
        namespace: non_empty(o.namespace),
        name: o.name,
        action: o.action,
        health: o.health,
        message: non_empty(o.message),
    }
}

/// `150/200 Current` over the objects applied or left unchanged (pruned
/// and kept ones have no health to wait for), `, 2 Failed` when some are.
pub fn health_summary(objects: &[tether_proto::v1::ObjectResult]) -> String {
    let followed: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(o.action.as_str(), "applied" | "unchanged"))
        .map(|o| o.health.as_str())
        .collect();
    if followed.is_empty() {
        return String::new();
    }
    let count = |h: &str| followed.iter().filter(|&&x| x == h).count();
    let mut text = format!("{}/{} Current", count("Current"), followed.len());
    let failed = count("Failed");
    if failed > 0 {
        text.push_str(&format!(", {failed} Failed"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(action: &str, health: &str) -> tether_proto::v1::ObjectResult {
        tether_proto::v1::ObjectResult {
            kind: "Deployment".into(),
            name: "x".into(),
            action: action.into(),
            health: health.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_trace_id_shaped_like_one_is_kept() {
        let view = |id: &str| {
            sync_view(
                tether_proto::v1::SyncReport {
                    trace_id: id.into(),
                    ..Default::default()
                },
                0,
            )
            .trace_id
        };
        assert_eq!(
            view("4BF92F3577B34DA6A3CE929D0E0E4736").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(view(""), None);
        assert_eq!(view("\"><script>alert(1)</script>0000000000"), None);
        assert_eq!(view(&"a".repeat(33)), None);
    }

    #[test]
    fn the_summary_counts_what_health_is_followed_for() {
        let objects = [
            object("applied", "Current"),
            object("unchanged", "InProgress"),
            object("applied", "Failed"),
            object("pruned", "Unknown"),
        ];
        assert_eq!(health_summary(&objects), "1/3 Current, 1 Failed");
        assert_eq!(health_summary(&objects[..1]), "1/1 Current");
        assert_eq!(health_summary(&objects[3..]), "");
    }
}
