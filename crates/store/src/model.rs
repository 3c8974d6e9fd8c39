//! The records, as the REST API and the agent server see them.

use std::collections::BTreeMap;

use tether_credentials::TokenHash;

/// Seconds since the Unix epoch, UTC.
pub type UnixTime = i64;

/// A git repository kas reads, under a path-like id (`team/platform-config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    /// A local path, `https://…` or `ssh://…`.
    pub url: String,
    /// Name of the credentials kas uses to fetch, never the credentials.
    pub credentials_ref: Option<String>,
    pub created_at: UnixTime,
    /// Branch, tag or commit kas reads; `None`: the default branch.
    pub git_ref: Option<String>,
    /// An administrator's consent to remote bases in this project's
    /// kustomizations (fetched through kas's egress policy).
    pub allow_remote_bases: bool,
    /// The signatures its commits must carry (set by an administrator,
    /// never by the repository it protects); `None`: not verified.
    pub verify: Option<VerifyPolicy>,
    /// What verification last found.
    pub verification: VerifyStatus,
}

/// How kas verifies a project's commits before agents get anything of
/// them (`kas project verify`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyPolicy {
    pub mode: VerifyMode,
    /// git's allowed-signers file (`gpg.ssh.allowedSignersFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_allowed_signers: Option<String>,
    /// Armored OpenPGP public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_keys: Option<String>,
    /// Under `strict`, the commit the first verification walks from (its
    /// history is trusted); `None`: the first head is checked alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_base: Option<String>,
    pub set_at: UnixTime,
}

/// Which commits must verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// The commit given to agents.
    Head,
    /// It and every commit since the last verified one.
    Strict,
}

impl VerifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Head => "head",
            VerifyMode::Strict => "strict",
        }
    }
}

/// What verification of a project last found: shared by every replica,
/// so that `strict` walks from the last verified commit after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyStatus {
    /// The last commit that verified (agents may be given it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Who signed it: `ssh alice@example.com SHA256:…`, `gpg Alice <…> FPR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The newest commit refused, and why; cleared by the next one that
    /// verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// A commit that did not verify.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub commit: String,
    /// Which commit, why, and which key or signer.
    pub reason: String,
    pub at: UnixTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProject {
    pub id: String,
    pub url: String,
    pub credentials_ref: Option<String>,
    pub created_at: UnixTime,
    /// Branch, tag or commit kas reads; `None`: the default branch.
    pub git_ref: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    /// The project holding `.gitlab/agents/<name>/config.yaml`.
    pub config_project: String,
    pub created_at: UnixTime,
    /// Labels an administrator gave the agent (`env=prod`, `region=eu`), by
    /// which fleet rollouts choose agents. The caller checks their syntax;
    /// the store keeps them as given.
    pub labels: BTreeMap<String, String>,
}

/// A token to record. It carries the hash only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub description: String,
    pub hash: TokenHash,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
}

/// A token as listed: never its text, never its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub agent_id: i64,
    pub name: String,
    pub description: String,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

/// What a presented token is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    Active { agent: Agent, token: TokenRecord },
    Revoked { revoked_at: UnixTime },
    Expired { expired_at: UnixTime },
    Unknown,
}

impl TokenRecord {
    /// Whether the token authenticates at `now`.
    pub fn is_active(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// A person who reaches clusters through the Kubernetes API proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// RFC 1123 label, like agent names: it becomes part of the identity
    /// agentk impersonates (`tether:user:<name>`).
    pub name: String,
    /// Projects and groups (path prefixes of project ids) the user is a
    /// member of; `user_access` in an agent's config matches against them.
    pub memberships: Vec<String>,
    pub created_at: UnixTime,
}

/// Whose an access token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOwner {
    /// A project's CI jobs (`ci:<agent>:<token>`).
    Project(String),
    /// A user (`pat:<agent>:<token>`).
    User(String),
}

/// A project or personal access token as listed: never its text or hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub id: i64,
    pub owner: TokenOwner,
    pub name: String,
    pub description: String,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    /// Project tokens only: the token is kept where only protected
    /// branches' jobs read it, so it passes `protected_branches_only`.
    pub protected: bool,
}

/// What a presented access token is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessTokenStatus {
    Active(AccessTokenRecord),
    Revoked { revoked_at: UnixTime },
    Expired { expired_at: UnixTime },
    Unknown,
}

/// An administrator's permission for an agent to read manifests from a
/// project outside its own top-level group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestGrant {
    pub project: String,
    pub agent: String,
    pub created_at: UnixTime,
}

/// Where kas posts the commit statuses of a project's syncs: the git
/// host's API and the repository there, with a token allowed to write
/// statuses. The token is kept as given (it is sent to the host) and
/// never shown again.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// `github`, `gitlab` or `gitea` (Forgejo too).
    pub provider: String,
    /// The host's API root: `https://api.github.com`,
    /// `https://gitlab.example.com/api/v4`, `https://gitea.example.com/api/v1`.
    pub api_url: String,
    /// `owner/name` (GitHub, Gitea), or the project's path or numeric id
    /// (GitLab).
    pub repository: String,
    pub token: String,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for StatusTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTarget")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// Where notifications named `name` go: a URL (Slack's and Teams'
/// webhook URLs are themselves secrets) and, for the generic provider, the
/// key its JSON is signed with. Never shown again once set.
#[derive(Clone, PartialEq, Eq)]
pub struct NotificationSecret {
    pub name: String,
    pub url: String,
    pub signing_key: Option<String>,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for NotificationSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationSecret")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One sync of a manifest project, as kas shows it. The store indexes the
/// project, commit and time and keeps the report itself opaque (kas's JSON),
/// so that what a sync report holds can grow without a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRecord {
    pub project: String,
    pub commit: String,
    /// synced, failed, dry_run
    pub state: String,
    pub reported_at: UnixTime,
    /// The report as kas's API shows it (JSON).
    pub report: String,
}

/// The config file an agent runs with: its commit and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConfig {
    pub commit: String,
    pub source: String,
}

/// The admin token as every replica checks it: its hash (hex), never the
/// token, and when it was last set (Unix milliseconds: a session signed
/// in the same second after a rotation must stay valid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTokenRecord {
    pub hash: String,
    pub rotated_at_ms: i64,
}

/// Credentials for one image registry host: image automation scans its
/// tags with them. The password is never shown again once set.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// `ghcr.io`, `registry.example.com:5000`, `docker.io`.
    pub host: String,
    pub username: String,
    pub password: String,
    /// The top-level groups whose projects' policies may use it; empty:
    /// every project (a registry every team may list).
    pub groups: Vec<String>,
    pub created_at: UnixTime,
}

impl RegistryLogin {
    /// Whether the policies of project `project` may be scanned with it.
    pub fn serves(&self, project: &str) -> bool {
        serves(&self.groups, project)
    }
}

/// A registry login as listed: never its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryLoginInfo {
    pub host: String,
    pub username: String,
    pub groups: Vec<String>,
    pub created_at: UnixTime,
}

impl RegistryLoginInfo {
    /// As [`RegistryLogin::serves`].
    pub fn serves(&self, project: &str) -> bool {
        serves(&self.groups, project)
    }
}

fn serves(groups: &[String], project: &str) -> bool {
    let group = project.split('/').next().unwrap_or(project);
    groups.is_empty() || groups.iter().any(|g| g == group)
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// How kas pushes to a project: an HTTPS token or an SSH private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushSecretKind {
    Token,
    SshKey,
}

impl PushSecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PushSecretKind::Token => "token",
            PushSecretKind::SshKey => "ssh_key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "token" => Some(PushSecretKind::Token),
            "ssh_key" => Some(PushSecretKind::SshKey),
            _ => None,
        }
    }
}

/// The credential kas pushes image updates to a project with.
#[derive(Clone, PartialEq, Eq)]
pub struct PushCredential {
    pub project: String,
    pub kind: PushSecretKind,
    pub secret: String,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for PushCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredential")
            .field("project", &self.project)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One record of image automation (a repository's tags, a policy's
/// status), opaque JSON under a key the automation chooses, so what it
/// keeps can grow without a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub key: String,
    pub value: String,
    pub updated_at: UnixTime,
}

/// One record of fleet rollouts: a rollout's state per project, the commit
/// each agent was given, pins, control requests waiting for a replica to
/// act on them. The value is kas's JSON under a key kas chooses (the store
/// neither reads nor checks it), so what a rollout keeps can grow without a
/// migration; keys share prefixes so that one kind of record is listed, or
/// taken, at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetRecord {
    pub key: String,
    pub value: String,
    pub updated_at: UnixTime,
}
