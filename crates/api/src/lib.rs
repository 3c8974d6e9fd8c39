//! The REST API of kas (`/api/v1`) as types: the requests its clients send
//! and the answers kas gives, shared by the server (which serializes them)
//! and the `kas` CLI (which reads them), so the two cannot drift apart.
//! `crates/kas/openapi.yaml` documents the same shapes for other clients.
//!
//! Architecture invariant: data only (serde), no behaviour, no IO.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// === Projects ===

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub credentials_ref: Option<String>,
    /// Branch, tag or commit to read; absent: the default branch.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProjectView {
    pub id: String,
    pub url: String,
    pub credentials_ref: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub created_at: String,
    /// An administrator's consent to remote bases in the project's
    /// kustomizations.
    #[serde(default)]
    pub allow_remote_bases: bool,
    /// How its commits are verified, and what verification last found;
    /// absent: not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyView>,
}

/// `PUT /api/v1/projects/{id}/verify`: the signatures a project's commits
/// must carry before agents get anything of them (`kas project verify`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// `head` (the commit given to agents), `strict` (also every commit
    /// since the last verified one) or `off`.
    pub mode: String,
    /// git's allowed-signers file, for SSH signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_allowed_signers: Option<String>,
    /// Armored OpenPGP public keys, for GPG signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_keys: Option<String>,
    /// `strict`: the full commit id whose history is trusted; the first
    /// verification walks from it. Absent: the first head is checked alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_base: Option<String>,
}

/// A project's signature policy and what verification last found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyView {
    /// `head` or `strict`.
    pub mode: String,
    /// The principals of the allowed-signers file.
    #[serde(default)]
    pub ssh_signers: Vec<String>,
    /// Whether OpenPGP keys are given.
    #[serde(default)]
    pub gpg_keys: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_base: Option<String>,
    pub set_at: String,
    /// The last commit that verified: what agents may be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Who signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The newest commit refused, and why (which key or signer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedCommit>,
}

/// A commit whose signature did not verify.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedCommit {
    pub commit: String,
    pub reason: String,
    pub at: String,
}

/// What `PATCH /api/v1/projects/{id}` changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    pub allow_remote_bases: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refreshed {
    pub project: String,
    pub commit: String,
}

/// `POST /api/v1/projects/{id}/webhook`: a new webhook secret for the
/// project (replacing any), shown this once, and where each git host
/// delivers (paths on kas's API listener).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookCreated {
    pub project: String,
    pub secret: String,
    /// By provider: `github`, `gitlab`, `gitea`, `bitbucket`, `generic`.
    pub paths: std::collections::BTreeMap<String, String>,
}

/// `PUT /api/v1/projects/{id}/statuses`: where kas posts the commit
/// statuses of the project's syncs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusTargetRequest {
    /// `github`, `gitlab`, `gitea` or `forgejo`.
    pub provider: String,
    /// The host's API root (`https://api.github.com`,
    /// `https://gitlab.example.com/api/v4`, `https://gitea.example.com/api/v1`).
    pub api_url: String,
    /// `owner/name`, or GitLab's project path or id.
    pub repository: String,
    /// A token allowed to write commit statuses; never shown again.
    pub token: String,
}

impl std::fmt::Debug for StatusTargetRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTargetRequest")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// A status target as the API shows it: everything but the token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusTargetView {
    pub project: String,
    pub provider: String,
    pub api_url: String,
    pub repository: String,
    pub created_at: String,
}

/// `PUT /api/v1/notification-secrets/{name}`: where notifications that
/// name it go. Write-only.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotificationSecretRequest {
    /// The destination: a Slack or Teams webhook URL, or any HTTPS URL for
    /// the generic provider.
    pub url: String,
    /// The key the generic provider signs its JSON with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

impl std::fmt::Debug for NotificationSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationSecretRequest")
            .finish_non_exhaustive()
    }
}

/// A notification secret as the API lists it: its name only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotificationSecretView {
    pub name: String,
    pub created_at: String,
}

/// What a webhook delivery did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// `refresh` (kas reads the repository now) or `ignored`.
    pub outcome: String,
    /// Why it was ignored, or the refs that were pushed.
    pub detail: String,
}

/// `POST /api/v1/projects/{id}/grants`: lets an agent read manifests from a
/// project outside its top-level group.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub agent: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantView {
    pub project: String,
    pub agent: String,
    pub created_at: String,
}

// === Agents ===

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub name: String,
    pub config_project: String,
    /// Labels rollouts select agents by (`env=prod`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentView {
    pub id: i64,
    pub name: String,
    pub config_project: String,
    /// Where the agent's config file lives in its project.
    pub config_path: String,
    pub created_at: String,
    /// Live connections to this kas: one per connected agent pod.
    pub connections: Vec<ConnectionView>,
    /// The config commit given to the agent and, if the newest one could not
    /// be used, why.
    pub config: ConfigStatus,
    /// Tunnels the agent keeps open to this kas, for the API proxy.
    pub tunnels: usize,
    /// Labels rollouts select agents by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `?project=` (required) and `limit` (default and most: 50).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub project: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

// === Agents: plans ===

/// `POST /api/v1/agents/{name}/plan`: what a commit of one of the agent's
/// manifest projects would change in its cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// A commit id (or a branch or tag) of the manifest project.
    pub commit: String,
    /// The manifest project; may be left out when the agent has only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The plan: one entry per object, sorted by group, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub agent: String,
    pub project: String,
    pub commit: String,
    /// Objects by change: create, update, unchanged, prune, keep, refused.
    pub counts: std::collections::BTreeMap<String, usize>,
    pub objects: Vec<PlannedObjectView>,
    /// Objects the agent dry-ran against its cluster: those that may
    /// change (one it last applied unchanged is not sent).
    #[serde(default)]
    pub dry_runs: usize,
    pub duration_ms: u64,
    /// With a rollout of the project: which commit the agent is on, and
    /// why (`rollout of 1a2b3c: waiting, keeps 4d5e6f`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// Under a signature policy: why agents would not be given this
    /// commit (it does not verify). Absent: it verifies, or no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedObjectView {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// create, update, unchanged, prune, keep or refused.
    pub change: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For an update: each field that changes, values as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChangeView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChangeView {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

// === Agents: connections and GitOps ===

/// A connection as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub pod_namespace: String,
    pub pod_name: String,
    pub agent_version: String,
    pub cluster_version: String,
    pub config_commit: String,
    pub connected_at: String,
    pub last_seen: String,
}

/// The last sync of one manifest project, as the agent reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    pub project: String,
    pub commit: String,
    /// syncing (applying, or waiting for hooks or dependencies), synced
    /// (applied; see `phase` for health), failed or dry_run
    pub state: String,
    /// applying, waiting_for_dependencies, waiting_for_hooks, pruning,
    /// waiting_for_health or done (empty from agents before it was told).
    #[serde(default)]
    pub phase: String,
    /// When the phase began (RFC 3339).
    #[serde(default)]
    pub phase_since: Option<String>,
    /// The applied objects' health at a glance: `150/200 Current`, with
    /// the Failed ones counted when there are any.
    #[serde(default)]
    pub health: String,
    /// What the phase waits for (at most 20), with each one's status.
    #[serde(default)]
    pub waiting: Vec<ObjectView>,
    pub error: Option<String>,
    pub applied: u32,
    pub unchanged: u32,
    pub pruned: u32,
    pub duration_ms: u64,
    pub reported_at: String,
    pub objects: Vec<ObjectView>,
    /// Corrections since the sync: who changed what, and whether it was
    /// put back.
    pub drift: Vec<DriftView>,
    /// The sync's trace (32 hex digits), when it was sampled and exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One drift correction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftView {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub who: String,
    pub what: String,
    pub error: Option<String>,
    pub at: String,
}

/// One object of a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectView {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub action: String,
    pub health: String,
    pub message: Option<String>,
}

// === Agents: configuration ===

/// What kas last made of an agent's config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// Commit of the configuration the agent is given: the last good one.
    pub commit: Option<String>,
    /// Accepted, but worth the user's attention (unknown fields).
    pub warnings: Vec<String>,
    /// Why the newest commit's file, or the repository, could not be used.
    pub error: Option<ConfigProblem>,
    /// Manifest projects the config names that this agent may not read,
    /// each with the rule and how to grant it; nothing of them is sent.
    #[serde(default)]
    pub manifest_project_errors: Vec<String>,
    /// Notification destinations the config names whose secret this agent
    /// may not use (another group's, or a kas-wide one), each with the
    /// rule; nothing is sent with them.
    #[serde(default)]
    pub notification_errors: Vec<String>,
}

/// Why a config could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    /// The commit that was read, when the repository could be read at all.
    pub commit: Option<String>,
    /// The config file, when the problem is in it.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

// === Agent tokens ===

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339; absent: the token does not expire.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The answer to a creation: the only time the token's text is shown.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenView,
    pub token: String,
    /// Installs the agent with this token: `… | kubectl apply -f -`.
    pub install_command: String,
}

// === Users, access tokens, kubeconfigs ===

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub memberships: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Memberships {
    pub memberships: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserView {
    pub name: String,
    pub memberships: Vec<String>,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub protected: bool,
}

/// The answer to a creation: the only time the token's text is shown.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedAccessToken {
    #[serde(flatten)]
    pub record: AccessTokenView,
    pub token: String,
    /// How to use it: the bearer form, with `<agent>` to fill in.
    pub usage: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessToken {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339; absent: the token does not expire.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Project tokens only: kept where only protected branches' jobs read
    /// it, so it passes `protected_branches_only`.
    #[serde(default)]
    pub protected: bool,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigRequest {
    /// A project or personal access token, or a CI job's ID token.
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KubeconfigView {
    pub context: String,
    pub namespace: Option<String>,
    /// The kubeconfig file, YAML.
    pub kubeconfig: String,
}

// The token in these is a secret: never in a `{:?}`.

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CreatedAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAccessToken")
            .field("record", &self.record)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KubeconfigRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigRequest").finish_non_exhaustive()
    }
}

/// Percent-encodes one path segment of the API's URLs: a project id's `/`
/// must not split it (`/api/v1/projects/team%2Fconfig`).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The phase an agent reported, if it is one Tether knows; an agent's
/// text never reaches a page, a status or the database as it came.
pub fn known_phase(phase: &str) -> &'static str {
    const PHASES: [&str; 6] = [
        "applying",
        "waiting_for_dependencies",
        "waiting_for_hooks",
        "pruning",
        "waiting_for_health",
        "done",
    ];
    PHASES
        .into_iter()
        .find(|p| *p == phase)
        .unwrap_or(if phase.is_empty() { "" } else { "unknown" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_phases_are_kept() {
        assert_eq!(known_phase("waiting_for_hooks"), "waiting_for_hooks");
        assert_eq!(known_phase(""), "");
        assert_eq!(known_phase(&"x".repeat(10_000)), "unknown");
    }

    #[test]
    fn segments_keep_slashes_inside() {
        assert_eq!(segment("team/platform-config"), "team%2Fplatform-config");
        assert_eq!(segment("a b?#"), "a%20b%3F%23");
        assert_eq!(segment("plain-1.2_x~"), "plain-1.2_x~");
    }
}

// === Image automation ===

/// One project's image automation, as `GET /api/v1/images` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImageProjectStatus {
    pub project: String,
    /// The commit `.tether/image-updates.yaml` was read at.
    pub commit: Option<String>,
    /// Why the project's automation does nothing now (its file refused, a
    /// marker naming no policy, the last push refused); `None` when well.
    pub error: Option<String>,
    /// The branch updates go to.
    pub branch: Option<String>,
    pub policies: Vec<ImagePolicyStatus>,
    /// The last commit kas pushed, if any.
    pub last_update: Option<ImageUpdateRecord>,
}

/// One image policy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImagePolicyStatus {
    pub name: String,
    pub repository: String,
    /// The rule, as written: `semver >=1.2.0 <2.0.0`, `numerical asc`.
    pub policy: String,
    /// The latest tag the rule picks from the last scan.
    pub latest: Option<String>,
    /// What that tag pointed at when scanned (only with `digest: true` or
    /// a `:digest` marker).
    pub digest: Option<String>,
    /// The values git holds where markers name this policy.
    pub in_git: Vec<String>,
    /// `up_to_date`, `pending` (a change waits for its batch window),
    /// `no_match` (no tag satisfies the rule), `not_scanned`, `error`.
    pub state: String,
    pub message: Option<String>,
    pub scanned_at: Option<String>,
    /// Tags the repository had at the last scan (at most 10,000).
    pub tags: usize,
    /// The listing stopped at 10,000 tags.
    pub cut: bool,
}

/// A commit kas pushed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageUpdateRecord {
    pub at: String,
    pub commit: String,
    pub branch: String,
    /// `policy: old -> new`, one per value changed.
    pub changes: Vec<String>,
    /// The pull (merge) request it is shown in, with `pull_request: true`.
    #[serde(default)]
    pub pull_request: Option<String>,
}

/// `POST /api/v1/images/scan`: scan now (every repository, or the one of
/// policy `name`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ScanImages {
    #[serde(default)]
    pub name: Option<String>,
}

/// What a scan request or a registry delivery started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ScanQueued {
    /// The image repositories to be scanned.
    pub repositories: Vec<String>,
}

/// `PUT /api/v1/registry/logins/{host}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetRegistryLogin {
    pub username: String,
    pub password: String,
    /// Top-level groups whose projects may use it; empty: every project.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A registry host kas has credentials for (never the password).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryLoginView {
    pub host: String,
    pub username: String,
    /// Top-level groups whose projects may use it; empty: every project.
    #[serde(default)]
    pub groups: Vec<String>,
    pub created_at: String,
}

/// `PUT /api/v1/projects/{id}/push-credentials`: exactly one of them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SetPushCredential {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub ssh_key: Option<String>,
}

/// `PATCH /api/v1/agents/{name}/labels`: labels set and removed at once.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LabelChanges {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A project's rollout of one commit to the agents that follow it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RolloutView {
    pub project: String,
    pub commit: String,
    /// running, completed, halted, rolled_back, superseded, invalid or
    /// unneeded (the commit changes no file an agent receives).
    pub phase: String,
    pub paused: bool,
    /// The rollout in a line.
    pub summary: String,
    /// Why it is as it is (who aborted it, what superseded it).
    pub message: String,
    pub failure: Option<RolloutFailureView>,
    /// halt or rollback.
    pub on_failure: String,
    pub agent_timeout_seconds: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub waves: Vec<WaveView>,
    pub agents: Vec<RolloutAgentView>,
}

/// What failed a wave.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RolloutFailureView {
    pub wave: String,
    pub agent: String,
    /// `Kind namespace/name`, when an object failed.
    pub object: Option<String>,
    pub message: String,
}

/// One wave of a rollout.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaveView {
    pub name: String,
    /// pending, running, soaking, passed or failed.
    pub phase: String,
    pub agents: Vec<String>,
    pub max_parallel: usize,
    pub soak_seconds: u64,
    pub started_at: Option<String>,
    pub soak_since: Option<String>,
    /// Seconds of soak left, while soaking.
    pub soak_left_seconds: Option<u64>,
    pub ended_at: Option<String>,
}

/// One agent in a rollout: which commit it is on, and why.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RolloutAgentView {
    pub name: String,
    /// Its wave; none when pinned.
    pub wave: Option<String>,
    /// waiting, updating, healthy, failed, pinned or rolled_back.
    pub phase: String,
    /// The commit it is given now (none: it keeps its previous one).
    pub commit: Option<String>,
    /// The commit it had when the rollout started.
    pub from: Option<String>,
    pub message: String,
    pub admitted_at: Option<String>,
    pub healthy_at: Option<String>,
}

/// `PUT /api/v1/agents/{name}/pins/{project}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    pub commit: String,
}

/// An agent held on a commit of a project.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinView {
    pub agent: String,
    pub project: String,
    pub commit: String,
    pub pinned_at: String,
}

/// `?commit=` and `timeout` (seconds, at most 60) of a wait.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    pub commit: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// What a wait found when it answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaitView {
    /// done, pending (the long poll's time ran out), failed (a sync
    /// failed or an object is Failed), halted (the rollout halted or
    /// rolled back, or the agent is pinned elsewhere) or superseded.
    pub outcome: String,
    pub message: String,
    pub agent: Option<String>,
    pub object: Option<String>,
    pub rollout: Option<RolloutView>,
}
