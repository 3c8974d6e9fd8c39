//! kstatus's test tables (`status_compute_test.go`, `core_test.go`), one
//! case per test, with the kstatus case name in a comment; then the cases
//! where Tether differs, and the dispatch. Objects are YAML, as in kstatus.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Health, assess, health, health_at, health_of, health_of_group_kind};

/// 2024-05-01T12:00:00Z: when the tests read their objects.
fn read_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

fn object(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).expect("test object is valid YAML")
}

/// The health of a YAML object, read at [`read_at`], as [`health`] judges it.
fn judge(yaml: &str) -> (Health, String) {
    health_at(Some(&object(yaml)), read_at())
}

#[track_caller]
fn assert_current(yaml: &str) {
    assert_eq!(judge(yaml), (Health::Current, String::new()));
}

/// `yaml` is `want`, and its message says `says`.
#[track_caller]
fn assert_health(yaml: &str, want: Health, says: &str) {
    let (got, message) = judge(yaml);
    assert_eq!(got, want, "message: {message:?}");
    assert!(
        message.contains(says),
        "the message {message:?} should say {says:?}"
    );
}

// === generic ===

#[test]
fn an_absent_object_is_not_found() {
    assert_eq!(health(None), (Health::NotFound, "not found".into()));
    assert_eq!(health_of("Deployment", None).0, Health::NotFound);
}

#[test]
fn an_object_being_deleted_is_terminating() {
    assert_health(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: test, generation: 1, deletionTimestamp: "2024-05-01T11:00:00Z" }
status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 }
"#,
        Health::Terminating,
        "being deleted",
    );
}

#[test]
fn an_empty_deletion_timestamp_is_not_a_deletion() {
    assert_current("{ apiVersion: v1, kind: ConfigMap, metadata: { deletionTimestamp: '' } }");
}

// kstatus: crdMismatchStatusGeneration
#[test]
fn a_generation_not_yet_observed_is_in_progress() {
    assert_health(
        "
apiVersion: something/v1
kind: MyCR
metadata: { name: test, namespace: qual, generation: 2 }
status: { observedGeneration: 1 }
",
        Health::InProgress,
        "generation 2 not yet observed (latest observed: 1)",
    );
}

#[test]
fn an_observed_generation_ahead_of_the_object_is_in_progress_too() {
    // kstatus compares for inequality, not order.
    assert_health(
        "{ apiVersion: something/v1, kind: MyCR, metadata: { generation: 1 }, status: { observedGeneration: 2 } }",
        Health::InProgress,
        "generation 1 not yet observed",
    );
}

#[test]
fn a_reconciling_condition_is_in_progress_whatever_the_kind() {
    assert_health(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: { generation: 1 }
status:
  conditions:
  - { type: Reconciling, status: "True", reason: Updating, message: "rolling out the new version" }
"#,
        Health::InProgress,
        "reconciling: rolling out the new version",
    );
}

#[test]
fn a_stalled_condition_is_failed_before_the_kind_rule() {
    // Every replica is there, but the controller says it is stuck.
    assert_health(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: { generation: 1 }
status:
  observedGeneration: 1
  replicas: 1
  updatedReplicas: 1
  readyReplicas: 1
  availableReplicas: 1
  conditions:
  - { type: Stalled, status: "True", reason: QuotaExceeded }
"#,
        Health::Failed,
        "stalled: QuotaExceeded",
    );
}

#[test]
fn standard_conditions_that_are_false_decide_nothing() {
    assert_current(
        r#"
apiVersion: example.com/v1
kind: Widget
status:
  conditions:
  - { type: Reconciling, status: "False" }
  - { type: Stalled, status: "False" }
"#,
    );
}

// === Pod (kstatus: TestPodStatus) ===

// kstatus: podNoStatus
#[test]
fn a_pod_without_a_phase_is_in_progress() {
    assert_health(
        "{ apiVersion: v1, kind: Pod, metadata: { generation: 1, name: test } }",
        Health::InProgress,
        "phase not yet reported",
    );
}

// kstatus: podReady
#[test]
fn a_running_ready_pod_is_current() {
    assert_current(
        r#"
apiVersion: v1
kind: Pod
metadata: { generation: 1, name: test, namespace: qual }
status:
  phase: Running
  conditions: [{ type: Ready, status: "True" }]
"#,
    );
}

// kstatus: podCompletedSuccessfully
#[test]
fn a_pod_that_succeeded_is_current() {
    assert_current(
        r#"
apiVersion: v1
kind: Pod
metadata: { generation: 1, name: test, namespace: qual }
status:
  phase: Succeeded
  conditions: [{ type: Ready, status: "False", reason: PodCompleted }]
"#,
    );
}

// kstatus: podCompletedFailed (kstatus: Current; Tether differs)
#[test]
fn a_pod_that_failed_is_failed() {
    assert_health(
        r#"
apiVersion: v1
kind: Pod
metadata: { generation: 1, name: test, namespace: qual }
status:
  phase: Failed
  reason: Evicted
  message: "The node was low on resource: memory."
  conditions: [{ type: Ready, status: "False", reason: PodCompleted }]
"#,
        Health::Failed,
        "Pod failed: Evicted: The node was low on resource: memory.",
    );
}

const UNSCHEDULABLE: &str = r#"
apiVersion: v1
kind: Pod
metadata: { generation: 1, name: test, namespace: qual, creationTimestamp: "CREATED" }
status:
  phase: Pending
  conditions:
  - { type: PodScheduled, status: "False", reason: Unschedulable, message: "0/3 nodes are available: 3 Insufficient cpu." }
"#;

// kstatus: podBeingScheduled
#[test]
fn an_unschedulable_pod_is_in_progress_for_its_first_15_seconds() {
    assert_health(
        &UNSCHEDULABLE.replace("CREATED", "2024-05-01T11:59:46Z"),
        Health::InProgress,
        "not yet scheduled: 0/3 nodes are available",
    );
}

#[test]
fn an_unschedulable_pod_fails_once_15_seconds_have_passed() {
    assert_health(
        &UNSCHEDULABLE.replace("CREATED", "2024-05-01T11:59:45Z"),
        Health::Failed,
        "cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
    );
}

// kstatus: podUnschedulable
#[test]
fn an_unschedulable_pod_without_a_creation_time_is_failed() {
    assert_health(
        &UNSCHEDULABLE.replace(", creationTimestamp: \"CREATED\"", ""),
        Health::Failed,
        "cannot be scheduled",
    );
}

#[test]
fn an_unschedulable_pod_from_a_clock_ahead_of_ours_is_in_progress() {
    assert_eq!(
        judge(&UNSCHEDULABLE.replace("CREATED", "2024-05-01T12:05:00Z")).0,
        Health::InProgress
    );
}

// kstatus: podCrashLooping
#[test]
fn a_crash_looping_container_fails_a_running_pod() {
    assert_health(
        r#"
apiVersion: v1
kind: Pod
metadata: { generation: 1, name: test, namespace: qual }
status:
  phase: Running
  conditions: [{ type: PodScheduled, status: "False", reason: Unschedulable }]
  containerStatuses:
  - { name: nginx, state: { waiting: { reason: CrashLoopBackOff } } }
  - { name: sidecar, state: { running: {} } }
"#,
        Health::Failed,
        "containers in CrashLoopBackOff: nginx",
    );
}

#[test]
fn a_crash_looping_init_container_fails_a_pending_pod() {
    assert_health(
        r#"
apiVersion: v1
kind: Pod
metadata: { name: test }
status:
  phase: Pending
  initContainerStatuses:
  - { name: migrate, state: { waiting: { reason: CrashLoopBackOff } } }
  containerStatuses:
  - { name: app, state: { waiting: { reason: PodInitializing } } }
"#,
        Health::Failed,
        "containers in CrashLoopBackOff: migrate",
    );
}

#[test]
fn a_running_pod_that_is_not_ready_is_in_progress() {
    assert_health(
        r#"
apiVersion: v1
kind: Pod
status:
  phase: Running
  conditions: [{ type: Ready, status: "False" }]
  containerStatuses: [{ name: app, state: { running: {} } }]
"#,
        Health::InProgress,
        "running, not yet ready",
    );
}

#[test]
fn a_pending_pod_says_what_it_waits_for() {
    assert_health(
        r#"
apiVersion: v1
kind: Pod
status:
  phase: Pending
  conditions: [{ type: PodScheduled, status: "True" }]
  containerStatuses:
  - { name: app, state: { waiting: { reason: ImagePullBackOff } } }
"#,
        Health::InProgress,
        "pending: container app waiting: ImagePullBackOff",
    );
}

#[test]
fn a_pod_in_an_unknown_phase_is_in_progress() {
    assert_health(
        "{ apiVersion: v1, kind: Pod, status: { phase: Unknown } }",
        Health::InProgress,
        "phase Unknown",
    );
}

// === PersistentVolumeClaim (kstatus: TestPVCStatus) ===

// kstatus: pvcNoStatus
#[test]
fn a_claim_without_status_is_in_progress() {
    assert_health(
        "{ apiVersion: v1, kind: PersistentVolumeClaim, metadata: { generation: 1, name: test } }",
        Health::InProgress,
        "not bound (phase unknown)",
    );
}

// kstatus: pvcBound
#[test]
fn a_bound_claim_is_current() {
    assert_current(
        "{ apiVersion: v1, kind: PersistentVolumeClaim, metadata: { generation: 1 }, status: { phase: Bound } }",
    );
}

#[test]
fn a_pending_claim_is_in_progress() {
    assert_health(
        "{ apiVersion: v1, kind: PersistentVolumeClaim, status: { phase: Pending } }",
        Health::InProgress,
        "not bound (phase Pending)",
    );
}

// === StatefulSet (kstatus: TestStsStatus) ===

fn stateful_set(spec: &str, status: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{ generation: 1, name: test }}\nspec: {spec}\nstatus: {status}\n"
    )
}

// kstatus: stsNoStatus
#[test]
fn a_stateful_set_without_status_is_in_progress() {
    assert_health(
        "{ apiVersion: apps/v1, kind: StatefulSet, metadata: { generation: 1, name: test } }",
        Health::InProgress,
        "0 of 1 replicas created",
    );
}

// kstatus: stsBadStatus
#[test]
fn a_stateful_set_without_replica_counts_is_in_progress() {
    assert_health(
        &stateful_set("{}", "{ observedGeneration: 1, currentReplicas: 1 }"),
        Health::InProgress,
        "0 of 1 replicas created",
    );
}

// kstatus: stsOK
#[test]
fn a_stateful_set_with_every_replica_ready_and_current_is_current() {
    assert_current(&stateful_set(
        "{ replicas: 4 }",
        "{ observedGeneration: 1, currentReplicas: 4, readyReplicas: 4, replicas: 4 }",
    ));
}

// kstatus: stsLessReady
#[test]
fn a_stateful_set_with_replicas_not_ready_is_in_progress() {
    assert_health(
        &stateful_set(
            "{ replicas: 4 }",
            "{ observedGeneration: 1, currentReplicas: 4, readyReplicas: 2, replicas: 4 }",
        ),
        Health::InProgress,
        "2 of 4 replicas ready",
    );
}

// kstatus: stsLessCurrent
#[test]
fn a_stateful_set_with_replicas_not_at_the_current_revision_is_in_progress() {
    assert_health(
        &stateful_set(
            "{ replicas: 4 }",
            "{ observedGeneration: 1, currentReplicas: 2, readyReplicas: 4, replicas: 4 }",
        ),
        Health::InProgress,
        "2 of 4 replicas at the current revision",
    );
}

// kstatus: stsExtraPods
#[test]
fn a_stateful_set_with_extra_replicas_is_in_progress() {
    assert_health(
        &stateful_set(
            "{ replicas: 4 }",
            "{ observedGeneration: 1, currentReplicas: 4, readyReplicas: 4, replicas: 8 }",
        ),
        Health::InProgress,
        "4 old replicas pending termination",
    );
}

#[test]
fn a_stateful_set_updated_on_delete_is_current_whatever_its_replicas() {
    assert_current(&stateful_set(
        "{ replicas: 4, updateStrategy: { type: OnDelete } }",
        "{ observedGeneration: 1, replicas: 1 }",
    ));
}

#[test]
fn a_stateful_set_waits_only_for_the_replicas_above_its_partition() {
    let spec =
        "{ replicas: 4, updateStrategy: { type: RollingUpdate, rollingUpdate: { partition: 2 } } }";
    assert_health(
        &stateful_set(
            spec,
            "{ observedGeneration: 1, replicas: 4, readyReplicas: 4, currentReplicas: 3, updatedReplicas: 1 }",
        ),
        Health::InProgress,
        "1 of 2 replicas updated (partition 2)",
    );
    // The replicas below the partition keep the old revision: no wait for them.
    assert_current(&stateful_set(
        spec,
        "{ observedGeneration: 1, replicas: 4, readyReplicas: 4, currentReplicas: 2, updatedReplicas: 2, currentRevision: a, updateRevision: b }",
    ));
}

#[test]
fn a_stateful_set_whose_update_revision_is_not_yet_current_is_in_progress() {
    assert_health(
        &stateful_set(
            "{ replicas: 2 }",
            "{ observedGeneration: 1, replicas: 2, readyReplicas: 2, currentReplicas: 2, currentRevision: web-1, updateRevision: web-2 }",
        ),
        Health::InProgress,
        "revision web-2 not yet current (current: web-1)",
    );
}

// === DaemonSet (kstatus: TestDaemonsetStatus) ===

fn daemon_set(generation: i64, status: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{ name: test, namespace: qual, generation: {generation} }}\nstatus: {status}\n"
    )
}

// kstatus: dsNoStatus
#[test]
fn a_daemon_set_not_yet_observed_is_in_progress() {
    assert_health(
        "{ apiVersion: apps/v1, kind: DaemonSet, metadata: { name: test, generation: 1 } }",
        Health::InProgress,
        "not yet observed by the DaemonSet controller",
    );
}

#[test]
fn a_daemon_set_without_a_generation_is_in_progress() {
    assert_health(
        "{ apiVersion: apps/v1, kind: DaemonSet, status: { observedGeneration: 1, desiredNumberScheduled: 0 } }",
        Health::InProgress,
        "metadata.generation not set",
    );
}

// kstatus: dsBadStatus
#[test]
fn a_daemon_set_without_a_desired_number_is_in_progress() {
    assert_health(
        &daemon_set(1, "{ observedGeneration: 1, currentReplicas: 1 }"),
        Health::InProgress,
        "desired number of Pods not yet computed",
    );
}

// kstatus: dsOK
#[test]
fn a_daemon_set_with_every_pod_ready_is_current() {
    assert_current(&daemon_set(
        1,
        "{ desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberAvailable: 4, numberReady: 4, observedGeneration: 1 }",
    ));
}

// kstatus: dsDifferentGeneration
#[test]
fn a_daemon_set_with_an_unobserved_generation_is_in_progress() {
    assert_health(
        &daemon_set(
            2,
            "{ desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberAvailable: 4, numberReady: 4, observedGeneration: 1 }",
        ),
        Health::InProgress,
        "generation 2 not yet observed",
    );
}

// kstatus: dsLessReady
#[test]
fn a_daemon_set_with_pods_not_ready_is_in_progress() {
    assert_health(
        &daemon_set(
            1,
            "{ observedGeneration: 1, desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberAvailable: 4, numberReady: 2 }",
        ),
        Health::InProgress,
        "2 of 4 Pods ready",
    );
}

// kstatus: dsLessAvailable
#[test]
fn a_daemon_set_with_pods_not_available_is_in_progress() {
    assert_health(
        &daemon_set(
            1,
            "{ observedGeneration: 1, desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 4, numberAvailable: 2, numberReady: 4 }",
        ),
        Health::InProgress,
        "2 of 4 Pods available",
    );
}

#[test]
fn a_daemon_set_with_pods_not_scheduled_or_updated_is_in_progress() {
    assert_health(
        &daemon_set(
            1,
            "{ observedGeneration: 1, desiredNumberScheduled: 4, currentNumberScheduled: 3 }",
        ),
        Health::InProgress,
        "3 of 4 Pods scheduled",
    );
    assert_health(
        &daemon_set(
            1,
            "{ observedGeneration: 1, desiredNumberScheduled: 4, currentNumberScheduled: 4, updatedNumberScheduled: 1 }",
        ),
        Health::InProgress,
        "1 of 4 Pods updated",
    );
}

// === Deployment (kstatus: TestDeploymentStatus) ===

/// A Deployment of `replicas` (unset: 1), all of them updated, ready and
/// available, with `extra` status lines.
fn deployment(spec: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{ name: test, generation: 1, namespace: qual }}
spec: {spec}
status:
  observedGeneration: 1
  updatedReplicas: 1
  readyReplicas: 1
  availableReplicas: 1
  replicas: 1
{extra}"
    )
}

// kstatus: depNoStatus
#[test]
fn a_deployment_without_status_is_in_progress() {
    assert_health(
        "{ apiVersion: apps/v1, kind: Deployment, metadata: { name: test, generation: 1 } }",
        Health::InProgress,
        "0 of 1 replicas created",
    );
}

// kstatus: depOK
#[test]
fn a_deployment_whose_new_replica_set_is_available_is_current() {
    assert_current(&deployment(
        "{}",
        r#"  conditions:
  - { type: Progressing, status: "True", reason: NewReplicaSetAvailable }
  - { type: Available, status: "True" }
"#,
    ));
}

// kstatus: depNotProgressing
#[test]
fn a_deployment_with_a_deadline_and_no_new_replica_set_available_is_in_progress() {
    assert_health(
        &deployment(
            "{ progressDeadlineSeconds: 45 }",
            r#"  conditions:
  - { type: Progressing, status: "False", reason: Some reason }
  - { type: Available, status: "True" }
"#,
        ),
        Health::InProgress,
        "new ReplicaSet not yet available",
    );
}

// kstatus: depNoProgressDeadlineSeconds
#[test]
fn a_deployment_without_a_deadline_needs_no_progressing_condition() {
    assert_current(&deployment(
        "{}",
        r#"  conditions:
  - { type: Available, status: "True" }
"#,
    ));
}

#[test]
fn a_deployment_whose_deadline_is_the_no_deadline_value_needs_no_progressing_condition() {
    assert_current(&deployment(
        "{ progressDeadlineSeconds: 2147483647 }",
        r#"  conditions:
  - { type: Available, status: "True" }
"#,
    ));
}

// kstatus: depNotAvailable
#[test]
fn a_deployment_that_is_not_available_is_in_progress() {
    assert_health(
        &deployment(
            "{}",
            r#"  conditions:
  - { type: Progressing, status: "True", reason: NewReplicaSetAvailable }
  - { type: Available, status: "False" }
"#,
        ),
        Health::InProgress,
        "Deployment not yet available",
    );
}

// kstatus: depProgressDeadlineExceeded
#[test]
fn a_deployment_past_its_progress_deadline_is_failed() {
    assert_health(
        &deployment(
            "{ progressDeadlineSeconds: 600 }",
            r#"  conditions:
  - { type: Available, status: "False" }
  - { type: Progressing, status: "False", reason: ProgressDeadlineExceeded, message: 'ReplicaSet "web-5d4f" has timed out progressing.' }
"#,
        ),
        Health::Failed,
        r#"progress deadline exceeded: ReplicaSet "web-5d4f" has timed out progressing."#,
    );
}

#[test]
fn a_deployment_with_replicas_not_yet_updated_is_in_progress() {
    assert_health(
        "
apiVersion: apps/v1
kind: Deployment
metadata: { generation: 3 }
spec: { replicas: 3 }
status: { observedGeneration: 3, replicas: 3, updatedReplicas: 1, readyReplicas: 3, availableReplicas: 3 }
",
        Health::InProgress,
        "1 of 3 replicas updated",
    );
}

#[test]
fn a_deployment_with_old_replicas_left_is_in_progress() {
    assert_health(
        "
apiVersion: apps/v1
kind: Deployment
metadata: { generation: 3 }
spec: { replicas: 3 }
status: { observedGeneration: 3, replicas: 4, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3 }
",
        Health::InProgress,
        "1 old replicas pending termination",
    );
}

#[test]
fn a_deployment_with_updated_replicas_not_available_is_in_progress() {
    assert_health(
        "
apiVersion: apps/v1
kind: Deployment
metadata: { generation: 3 }
spec: { replicas: 3 }
status: { observedGeneration: 3, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 1 }
",
        Health::InProgress,
        "1 of 3 replicas available",
    );
}

#[test]
fn a_deployment_with_replicas_not_ready_is_in_progress() {
    assert_health(
        "
apiVersion: apps/v1
kind: Deployment
metadata: { generation: 3 }
spec: { replicas: 3 }
status: { observedGeneration: 3, replicas: 3, updatedReplicas: 3, readyReplicas: 2, availableReplicas: 3 }
",
        Health::InProgress,
        "2 of 3 replicas ready",
    );
}

// === ReplicaSet (kstatus: TestReplicasetStatus) ===

fn replica_set(replicas: i64, status: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{ name: test, namespace: qual, generation: 1 }}\nspec: {{ replicas: {replicas} }}\nstatus: {status}\n"
    )
}

// kstatus: rsNoStatus
#[test]
fn a_replica_set_without_status_is_in_progress() {
    assert_health(
        "{ apiVersion: apps/v1, kind: ReplicaSet, metadata: { name: test, generation: 1 } }",
        Health::InProgress,
        "0 of 1 replicas labelled",
    );
}

// kstatus: rsOK1
#[test]
fn a_replica_set_with_a_false_replica_failure_and_every_replica_is_current() {
    assert_current(&replica_set(
        2,
        r#"
  observedGeneration: 1
  replicas: 2
  readyReplicas: 2
  availableReplicas: 2
  fullyLabeledReplicas: 2
  conditions: [{ type: ReplicaFailure, status: "False" }]"#,
    ));
}

// kstatus: rsOK2
#[test]
fn a_replica_set_with_every_replica_is_current() {
    assert_current(&replica_set(
        2,
        "{ observedGeneration: 1, fullyLabeledReplicas: 2, replicas: 2, readyReplicas: 2, availableReplicas: 2 }",
    ));
}

// kstatus: rsLessAvailable
#[test]
fn a_replica_set_with_replicas_not_available_is_in_progress() {
    assert_health(
        &replica_set(
            4,
            "{ observedGeneration: 1, replicas: 4, readyReplicas: 4, availableReplicas: 2, fullyLabeledReplicas: 4 }",
        ),
        Health::InProgress,
        "2 of 4 replicas available",
    );
}

// kstatus: rsLessReady
#[test]
fn a_replica_set_with_replicas_not_ready_is_in_progress() {
    assert_health(
        &replica_set(
            4,
            "{ observedGeneration: 1, replicas: 4, readyReplicas: 2, availableReplicas: 4, fullyLabeledReplicas: 4 }",
        ),
        Health::InProgress,
        "2 of 4 replicas ready",
    );
}

// kstatus: rsReplicaFailure
#[test]
fn a_replica_set_with_a_replica_failure_is_in_progress() {
    assert_health(
        &replica_set(
            4,
            r#"
  observedGeneration: 1
  replicas: 4
  readyReplicas: 4
  fullyLabeledReplicas: 4
  availableReplicas: 4
  conditions:
  - { type: ReplicaFailure, status: "True", reason: FailedCreate, message: 'pods "web-x" is forbidden: exceeded quota' }"#,
        ),
        Health::InProgress,
        r#"replica failure: pods "web-x" is forbidden: exceeded quota"#,
    );
}

#[test]
fn a_replica_set_with_extra_replicas_is_in_progress() {
    assert_health(
        &replica_set(
            2,
            "{ observedGeneration: 1, replicas: 3, readyReplicas: 2, availableReplicas: 2, fullyLabeledReplicas: 2 }",
        ),
        Health::InProgress,
        "1 old replicas pending termination",
    );
}

// === PodDisruptionBudget (kstatus: TestPDBStatus) ===

// kstatus: pdbNotObserved
#[test]
fn a_disruption_budget_not_yet_observed_is_in_progress() {
    assert_health(
        "{ apiVersion: policy/v1, kind: PodDisruptionBudget, metadata: { generation: 2, name: test }, status: { observedGeneration: 1 } }",
        Health::InProgress,
        "generation 2 not yet observed",
    );
}

// kstatus: pdbObserved
#[test]
fn an_observed_disruption_budget_is_current() {
    assert_current(
        "{ apiVersion: policy/v1, kind: PodDisruptionBudget, metadata: { generation: 1, name: test }, status: { observedGeneration: 1 } }",
    );
}

// === custom resources (kstatus: TestCRDGenericStatus) ===

// kstatus: crdNoStatus
#[test]
fn a_custom_resource_without_status_is_current() {
    assert_current(
        "{ apiVersion: something/v1, kind: MyCR, metadata: { generation: 1, name: test } }",
    );
}

// kstatus: crdReady
#[test]
fn a_custom_resource_that_is_ready_is_current() {
    assert_current(
        r#"
apiVersion: something/v1
kind: MyCR
metadata: { name: test, namespace: qual, generation: 1 }
status:
  conditions: [{ type: Ready, status: "True", message: All looks ok, reason: AllOk }]
"#,
    );
}

// kstatus: crdNotReady
#[test]
fn a_custom_resource_that_is_not_ready_is_in_progress() {
    assert_health(
        r#"
apiVersion: something/v1
kind: MyCR
metadata: { generation: 1, name: test, namespace: qual }
status:
  observedGeneration: 1
  conditions: [{ type: Ready, status: "False", reason: NotReadyYet }]
"#,
        Health::InProgress,
        "not ready: NotReadyYet",
    );
}

#[test]
fn a_custom_resource_whose_readiness_is_unknown_is_in_progress() {
    assert_health(
        r#"
apiVersion: something/v1
kind: MyCR
status:
  conditions: [{ type: Ready, status: Unknown, message: "waiting for the database" }]
"#,
        Health::InProgress,
        "not ready: waiting for the database",
    );
}

// kstatus: crdNoCondition
#[test]
fn a_custom_resource_with_only_other_conditions_is_current() {
    assert_current(
        r#"
apiVersion: something/v1
kind: MyCR
metadata: { name: test, namespace: qual, generation: 1 }
status:
  conditions: [{ type: SomeCondition, status: "False" }]
"#,
    );
}

#[test]
fn a_built_in_kind_is_judged_by_its_own_rule_not_its_ready_condition() {
    // kstatus's `Ready` fallback is for kinds without a rule of their own.
    assert_current(
        r#"
apiVersion: v1
kind: Secret
status:
  conditions: [{ type: Ready, status: "False" }]
"#,
    );
}

// === Job (kstatus: TestJobStatus, TestSuspendedJobConditions) ===

// kstatus: jobNoStatus
#[test]
fn a_job_not_started_is_in_progress() {
    assert_health(
        "{ apiVersion: batch/v1, kind: Job, metadata: { name: test, namespace: qual, generation: 1 } }",
        Health::InProgress,
        "Job not started",
    );
}

// kstatus: jobComplete
#[test]
fn a_complete_job_is_current() {
    assert_current(
        r#"
apiVersion: batch/v1
kind: Job
metadata: { name: test, namespace: qual, generation: 1 }
status:
  succeeded: 1
  active: 0
  conditions: [{ type: Complete, status: "True" }]
"#,
    );
}

// kstatus: jobFailed
#[test]
fn a_failed_job_is_failed() {
    assert_health(
        r#"
apiVersion: batch/v1
kind: Job
metadata: { name: test, namespace: qual, generation: 1 }
spec: { completions: 4 }
status:
  succeeded: 3
  failed: 1
  conditions:
  - { type: Failed, status: "True", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit }
"#,
        Health::Failed,
        "Job failed (1 failed, 3 of 4 succeeded): Job has reached the specified backoff limit",
    );
}

// kstatus: jobInProgress (kstatus: Current; Tether differs)
#[test]
fn a_running_job_is_in_progress_until_it_completes() {
    assert_health(
        r#"
apiVersion: batch/v1
kind: Job
metadata: { name: test, namespace: qual, generation: 1 }
spec: { completions: 10, parallelism: 2 }
status:
  startTime: "2019-06-04T01:17:13Z"
  succeeded: 3
  failed: 1
  active: 2
  conditions:
  - { type: Failed, status: "False" }
  - { type: Complete, status: "False" }
"#,
        Health::InProgress,
        "Job running: 3 of 10 succeeded, 2 active, 1 failed",
    );
}

const SUSPENDABLE_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: { name: test, generation: 1, namespace: qual }
status:
  conditions: [{ type: Suspended, status: "SUSPENDED", reason: JobSuspended }]
"#;

// kstatus: TestSuspendedJobConditions
#[test]
fn a_suspended_job_is_current() {
    assert_current(&SUSPENDABLE_JOB.replace("SUSPENDED", "True"));
}

// kstatus: TestSuspendedJobConditions
#[test]
fn a_resumed_job_not_yet_started_is_in_progress() {
    assert_health(
        &SUSPENDABLE_JOB.replace("SUSPENDED", "False"),
        Health::InProgress,
        "Job not started",
    );
}

// === CronJob (kstatus: TestCronJobStatus) ===

// kstatus: cronjobNoStatus
#[test]
fn a_cron_job_without_status_is_current() {
    assert_current(
        "{ apiVersion: batch/v1, kind: CronJob, metadata: { name: test, generation: 1 } }",
    );
}

// kstatus: cronjobWithStatus
#[test]
fn a_cron_job_with_an_empty_status_is_current() {
    assert_current(
        "{ apiVersion: batch/v1, kind: CronJob, metadata: { name: test, generation: 1 }, status: null }",
    );
}

// === Service (kstatus: TestServiceStatus) ===

// kstatus: serviceDefault
#[test]
fn a_cluster_ip_service_is_current() {
    assert_current("{ apiVersion: v1, kind: Service, metadata: { name: test, generation: 1 } }");
}

// kstatus: serviceNodePort
#[test]
fn a_node_port_service_is_current() {
    assert_current("{ apiVersion: v1, kind: Service, spec: { type: NodePort } }");
}

// kstatus: serviceLBnok
#[test]
fn a_load_balancer_without_a_cluster_ip_is_in_progress() {
    assert_health(
        "{ apiVersion: v1, kind: Service, spec: { type: LoadBalancer } }",
        Health::InProgress,
        "LoadBalancer has no cluster IP yet",
    );
}

// kstatus: serviceLBok (kstatus: Current; Tether differs)
#[test]
fn a_load_balancer_with_a_cluster_ip_but_no_address_is_in_progress() {
    assert_health(
        r#"{ apiVersion: v1, kind: Service, spec: { type: LoadBalancer, clusterIP: "1.2.3.4" } }"#,
        Health::InProgress,
        "LoadBalancer has no address yet",
    );
    assert_health(
        r#"{ apiVersion: v1, kind: Service, spec: { type: LoadBalancer, clusterIP: "1.2.3.4" }, status: { loadBalancer: { ingress: [{}] } } }"#,
        Health::InProgress,
        "LoadBalancer has no address yet",
    );
}

#[test]
fn a_load_balancer_with_an_address_is_current() {
    assert_current(
        r#"{ apiVersion: v1, kind: Service, spec: { type: LoadBalancer, clusterIP: "10.0.0.7" }, status: { loadBalancer: { ingress: [{ ip: "203.0.113.9" }] } } }"#,
    );
    assert_current(
        r#"{ apiVersion: v1, kind: Service, spec: { type: LoadBalancer, clusterIP: "10.0.0.7" }, status: { loadBalancer: { ingress: [{ hostname: lb.example.com }] } } }"#,
    );
}

// === CustomResourceDefinition (kstatus: TestCRDStatus) ===

fn crd(conditions: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{ generation: 1 }}\nstatus:\n  conditions:\n{conditions}"
    )
}

// kstatus: crdNoConditions
#[test]
fn a_definition_without_conditions_is_in_progress() {
    assert_health(
        "{ apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: { generation: 1 } }",
        Health::InProgress,
        "installing",
    );
}

// kstatus: crdInstalling
#[test]
fn a_definition_still_installing_is_in_progress() {
    assert_health(
        &crd(
            r#"  - { type: NamesAccepted, status: "True", reason: NoConflicts }
  - { type: Established, status: "False", reason: Installing }
"#,
        ),
        Health::InProgress,
        "installing",
    );
}

// kstatus: crdNamesNotAccepted
#[test]
fn a_definition_whose_names_are_not_accepted_is_failed() {
    assert_health(
        &crd(
            r#"  - { type: NamesAccepted, status: "False", reason: SomeReason }
"#,
        ),
        Health::Failed,
        "names not accepted: SomeReason",
    );
}

// kstatus: crdEstablished
#[test]
fn an_established_definition_is_current() {
    assert_current(&crd(
        r#"  - { type: NamesAccepted, status: "True", reason: NoConflicts }
  - { type: Established, status: "True", reason: InitialNamesAccepted }
"#,
    ));
}

#[test]
fn a_definition_not_established_for_another_reason_is_failed() {
    assert_health(
        &crd(
            r#"  - { type: Established, status: "False", reason: NotAccepted, message: "not all names are accepted" }
"#,
        ),
        Health::Failed,
        "not established: not all names are accepted",
    );
}

// === dispatch ===

const KNATIVE_SERVICE: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata: { name: hello, generation: 1 }
status:
  observedGeneration: 1
  conditions: [{ type: Ready, status: "False", reason: RevisionMissing }]
"#;

#[test]
fn a_custom_kind_named_like_a_built_in_one_is_judged_by_its_group() {
    let knative = object(KNATIVE_SERVICE);
    for (health, message) in [
        health(Some(&knative)),
        health_of_group_kind("serving.knative.dev", "Service", Some(&knative)),
    ] {
        assert_eq!(health, Health::InProgress);
        assert_eq!(message, "not ready: RevisionMissing");
    }
}

#[test]
fn a_list_item_is_judged_by_the_kind_it_was_listed_as() {
    // List items carry neither `kind` nor `apiVersion`.
    let item = object(
        "{ metadata: { generation: 1 }, spec: { replicas: 3 }, status: { observedGeneration: 1, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 1 } }",
    );
    assert_eq!(
        health_of("Deployment", Some(&item)),
        (Health::InProgress, "1 of 3 replicas available".into())
    );
    assert_eq!(
        health_of_group_kind("apps", "Deployment", Some(&item)),
        health_of("Deployment", Some(&item))
    );
    // Without the kind it would have been an unknown kind, and Current.
    assert_eq!(health(Some(&item)).0, Health::Current);
}

#[test]
fn workloads_of_the_extensions_group_follow_the_apps_rules() {
    assert_health(
        "{ apiVersion: extensions/v1beta1, kind: Deployment, metadata: { generation: 1 }, status: { observedGeneration: 1 } }",
        Health::InProgress,
        "0 of 1 replicas created",
    );
}

#[test]
fn an_object_without_a_kind_is_judged_by_its_conditions() {
    assert_eq!(
        assess(None, "", Some(&object(KNATIVE_SERVICE)), read_at()).0,
        Health::InProgress
    );
    assert_eq!(
        assess(
            None,
            "",
            Some(&object("{ metadata: { name: x } }")),
            read_at()
        ),
        (Health::Current, String::new())
    );
}

#[test]
fn wrongly_typed_fields_read_as_absent() {
    // kstatus: an error (Unknown); Tether keeps an answer.
    assert_health(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: { generation: "1" }
spec: { replicas: "3" }
status: { replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1, conditions: "none" }
"#,
        Health::InProgress,
        "Deployment not yet available",
    );
}

#[test]
fn health_displays_as_kstatus_names_it() {
    let names: Vec<String> = [
        Health::Current,
        Health::InProgress,
        Health::Failed,
        Health::Terminating,
        Health::NotFound,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        names,
        ["Current", "InProgress", "Failed", "Terminating", "NotFound"]
    );
}
