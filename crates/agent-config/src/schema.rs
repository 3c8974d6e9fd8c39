//! The config file's types, with the GitLab agent's defaults applied at parse
//! time so that no consumer repeats them.
//!
//! Unknown fields are not errors (they become warnings in [`crate::parse`]),
//! so a file written for a newer GitLab agent still loads.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole config file. Every section is optional; an empty file is valid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    pub gitops: Gitops,
    pub ci_access: CiAccess,
    pub user_access: Option<UserAccess>,
    pub observability: Observability,
    /// Accepted for compatibility; Tether does not act on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_scanning: Option<serde_json::Value>,
    /// Accepted for compatibility; Tether does not act on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_development: Option<serde_json::Value>,
    /// Accepted for compatibility; Tether does not act on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flux: Option<serde_json::Value>,
    /// Tether extension: where kas tells of this agent's syncs and health.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
}

// --- notifications ---

/// One destination for the agent's events. The destination's URL (and the
/// generic provider's signing key) live in kas under `url_secret`, never
/// in git.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notification {
    pub provider: NotificationProvider,
    /// The name of a notification secret kas holds
    /// (`kas notifications secret set GROUP/NAME`). An agent's config may
    /// name only secrets of its own top-level group; a name without a
    /// group is a kas-wide secret, for kas's settings file alone.
    pub url_secret: String,
    /// The events sent; empty: all of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotificationEvent>,
}

impl Default for Notification {
    fn default() -> Self {
        Notification {
            provider: NotificationProvider::Generic,
            url_secret: String::new(),
            events: Vec::new(),
        }
    }
}

impl Notification {
    /// Whether `event` goes to this destination.
    pub fn wants(&self, event: NotificationEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// Where a notification goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationProvider {
    /// JSON, signed with HMAC-SHA256 (`X-Tether-Signature: sha256=…`).
    Generic,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams workflow webhook (an Adaptive Card).
    Teams,
}

/// What a notification tells of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    SyncSucceeded,
    SyncFailed,
    HealthDegraded,
    DriftCorrected,
    AgentDisconnected,
    TokenExpiring,
    /// kas pushed an image update to the agent's configuration project.
    ImageUpdated,
    /// An image update of the agent's configuration project was not pushed.
    ImageUpdateFailed,
    /// A rollout of a manifest project the agent follows started.
    RolloutStarted,
    /// A wave of that rollout passed.
    WavePassed,
    /// That rollout halted on a failed wave (or its file is invalid).
    RolloutHalted,
    /// That rollout gave the agents it reached their previous commit back.
    RolloutRolledBack,
    /// That rollout reached every agent.
    RolloutCompleted,
    /// A commit of a project the agent follows did not verify under the
    /// project's signature policy; the agent keeps the last verified one.
    CommitUnverified,
}

impl NotificationEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::SyncSucceeded => "sync_succeeded",
            NotificationEvent::SyncFailed => "sync_failed",
            NotificationEvent::HealthDegraded => "health_degraded",
            NotificationEvent::DriftCorrected => "drift_corrected",
            NotificationEvent::AgentDisconnected => "agent_disconnected",
            NotificationEvent::TokenExpiring => "token_expiring",
            NotificationEvent::ImageUpdated => "image_updated",
            NotificationEvent::ImageUpdateFailed => "image_update_failed",
            NotificationEvent::RolloutStarted => "rollout_started",
            NotificationEvent::WavePassed => "wave_passed",
            NotificationEvent::RolloutHalted => "rollout_halted",
            NotificationEvent::RolloutRolledBack => "rollout_rolled_back",
            NotificationEvent::RolloutCompleted => "rollout_completed",
            NotificationEvent::CommitUnverified => "commit_unverified",
        }
    }
}

// --- gitops ---

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gitops {
    pub manifest_projects: Vec<ManifestProject>,
}

/// One git repository (and ref, and set of paths) whose manifests the agent
/// keeps applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManifestProject {
    /// The project's id in kas; `None` means the agent's own config project.
    pub id: Option<String>,
    /// What to follow; `None` means the project's default branch.
    #[serde(rename = "ref")]
    pub git_ref: Option<GitRef>,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: String,
    pub paths: Vec<PathGlob>,
    /// How long to wait for applied objects to become healthy, for a
    /// dependency to become Current, and for the health of the whole set
    /// after the apply; past it the sync fails naming what is not Current.
    #[serde(with = "crate::duration")]
    pub reconcile_timeout: Duration,
    /// Tether extension: how long a Helm hook (a pre-install Job, say) may
    /// take to complete before the sync fails naming it; Helm's default.
    #[serde(with = "crate::duration")]
    pub hook_timeout: Duration,
    pub dry_run_strategy: DryRunStrategy,
    /// Delete objects that were applied before and are gone from git.
    pub prune: bool,
    #[serde(with = "crate::duration")]
    pub prune_timeout: Duration,
    pub prune_propagation_policy: PrunePropagationPolicy,
    pub inventory_policy: InventoryPolicy,
    /// Tether extension: directories built with kustomize, rendered on kas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kustomizations: Vec<Kustomization>,
    /// Tether extension: Helm charts rendered on kas (`helm template`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub helm_charts: Vec<HelmChart>,
    /// Tether extension: SOPS-encrypted files in this project, decrypted
    /// by the agent with a key in its own namespace (kas never holds one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
}

/// How the agent decrypts a manifest project's encrypted files, as Flux's
/// `spec.decryption`: the Secret is read from the agent's own namespace
/// only, so a config can name a Secret but never another namespace's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decryption {
    pub provider: DecryptionProvider,
    /// The Secret holding the keys (`*.agekey`: age identities, `*.asc`:
    /// OpenPGP secret keys), in the agent's namespace.
    pub secret: String,
}

/// The only decryption provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecryptionProvider {
    Sops,
}

impl ManifestProject {
    /// Whether kas renders anything for this project besides its files.
    pub fn renders(&self) -> bool {
        !self.kustomizations.is_empty() || !self.helm_charts.is_empty()
    }
}

/// `kustomize build` of a directory of the manifest project, then `${VAR}`
/// substitution as Flux's post-build does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kustomization {
    /// The directory holding `kustomization.yaml`, from the repository root.
    pub path: String,
    /// `${VAR}` (and `${VAR:=default}`) in the output become these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    /// Asks that remote bases be fetched (`https://`, through kas's egress
    /// policy); honoured only where an administrator allowed the project
    /// (`kas project set ID --allow-remote-bases`).
    pub allow_remote_bases: bool,
}

/// A Helm chart, from the manifest project or from a chart repository,
/// rendered as `helm template` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HelmChart {
    /// The chart's directory in the manifest project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A chart repository: `https://…` (with an `index.yaml`) or `oci://…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The chart's name in `repository`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// The chart's exact version in `repository` (a pin, not a range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub release_name: String,
    /// The release's namespace; the manifest project's default namespace
    /// when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Values files from the manifest project, applied in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Values given inline, applied after the files.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Renders the chart's `crds/` too (`helm template --include-crds`).
    pub include_crds: bool,
    /// Leaves out the chart's test hooks.
    pub skip_tests: bool,
    /// Where the chart is rendered: on kas (the default: agents receive
    /// plain objects, renders are shared) or on the agent, which can read
    /// values from its cluster's Secrets.
    #[serde(skip_serializing_if = "RenderOn::is_kas")]
    pub render_on: RenderOn,
    /// Values read from Secrets in the release's namespace, applied after
    /// the values files and before the inline values. Only with
    /// `render_on: agent`: kas never reads a cluster's Secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesFrom>,
}

/// Where a chart is rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderOn {
    #[default]
    Kas,
    Agent,
}

impl RenderOn {
    pub fn is_kas(&self) -> bool {
        *self == RenderOn::Kas
    }
}

/// A values file held in a Secret of the cluster (as Flux's `valuesFrom`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValuesFrom {
    /// The Secret's name, in the release's namespace.
    pub secret: String,
    /// The key holding a YAML values document.
    pub key: String,
    /// A missing Secret or key is skipped rather than failing the render.
    pub optional: bool,
}

impl Default for ValuesFrom {
    fn default() -> Self {
        ValuesFrom {
            secret: String::new(),
            key: "values.yaml".into(),
            optional: false,
        }
    }
}

impl Default for HelmChart {
    fn default() -> Self {
        HelmChart {
            path: None,
            repository: None,
            chart: None,
            version: None,
            release_name: String::new(),
            namespace: None,
            values_files: Vec::new(),
            values: serde_json::Map::new(),
            include_crds: true,
            skip_tests: true,
            render_on: RenderOn::Kas,
            values_from: Vec::new(),
        }
    }
}

/// A branch, a tag or a commit: exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GitRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A doublestar glob, relative to the repository root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathGlob {
    pub glob: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DryRunStrategy {
    #[default]
    None,
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrunePropagationPolicy {
    Orphan,
    Background,
    #[default]
    Foreground,
}

/// What the agent may do with objects another inventory (or none) owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryPolicy {
    /// Only objects this inventory owns.
    #[default]
    MustMatch,
    /// Also objects that no inventory owns.
    AdoptIfNoInventory,
    /// Any object, taking it from another inventory.
    AdoptAll,
}

/// The GitLab agent's default glob: every manifest file in the repository.
pub const DEFAULT_GLOB: &str = "**/*.{yaml,yml,json}";
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_PRUNE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Helm's `--timeout` default, which bounds its hooks.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for ManifestProject {
    fn default() -> Self {
        Self {
            id: None,
            git_ref: None,
            default_namespace: DEFAULT_NAMESPACE.into(),
            paths: vec![PathGlob {
                glob: DEFAULT_GLOB.into(),
            }],
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            dry_run_strategy: DryRunStrategy::default(),
            prune: true,
            prune_timeout: DEFAULT_PRUNE_TIMEOUT,
            prune_propagation_policy: PrunePropagationPolicy::default(),
            inventory_policy: InventoryPolicy::default(),
            kustomizations: Vec::new(),
            helm_charts: Vec::new(),
            decryption: None,
        }
    }
}

// --- ci_access ---

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CiAccess {
    pub projects: Vec<CiAccessEntry>,
    pub groups: Vec<CiAccessEntry>,
}

/// A project or group whose CI jobs may use the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CiAccessEntry {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    /// Environment names or wildcards (`review/*`); empty means all.
    pub environments: Vec<String>,
    pub protected_branches_only: bool,
    pub access_as: CiAccessAs,
}

/// The identity CI jobs' requests run as. Written as a one-key map, as in
/// the GitLab agent: `agent: {}`, `impersonate: {username: …}`, `ci_job: {}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiAccessAs {
    /// The agent's own service account.
    Agent {},
    /// A fixed identity.
    Impersonate(Impersonation),
    /// An identity derived from the job.
    CiJob {},
    /// The user who started the job, as the CI system's ID token names them
    /// (Tether's addition; GitLab's agent has no such mode).
    CiUser {},
}

impl Default for CiAccessAs {
    fn default() -> Self {
        CiAccessAs::Agent {}
    }
}

/// `Impersonate-*` headers the agent sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Impersonation {
    pub username: String,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub extra: Vec<ExtraValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtraValue {
    pub key: String,
    pub val: Vec<String>,
}

// --- user_access ---

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserAccess {
    pub access_as: UserAccessAs,
    pub projects: Vec<AccessTarget>,
    pub groups: Vec<AccessTarget>,
}

/// The identity users' requests run as: `agent: {}` or `user: {}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAccessAs {
    Agent {},
    User {},
}

impl Default for UserAccessAs {
    fn default() -> Self {
        UserAccessAs::Agent {}
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessTarget {
    pub id: String,
}

// --- observability ---

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observability {
    pub logging: Logging,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Logging {
    pub level: LogLevel,
    /// Level of the agent's transport (gRPC) logs, which are noisy below error.
    pub grpc_level: LogLevel,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            grpc_level: LogLevel::Error,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

// === impl AgentConfig ===

impl AgentConfig {
    /// Sections present in the file that Tether accepts but ignores.
    pub fn unsupported_sections(&self) -> impl Iterator<Item = &'static str> {
        [
            ("container_scanning", self.container_scanning.is_some()),
            ("remote_development", self.remote_development.is_some()),
            ("flux", self.flux.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
    }
}
