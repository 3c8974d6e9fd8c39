//! kas's durable records — git projects, agents and their tokens, users and
//! access tokens for the Kubernetes API proxy, manifest grants — behind the
//! [`Store`] trait, so that one kas embeds SQLite ([`SqliteStore`]) while
//! many replicas share PostgreSQL ([`PgStore`]). Both implement the same
//! rules (`rules.rs`) and pass the same test suite.
//!
//! Tokens are stored as their SHA-256 only ([`tether_credentials::TokenHash`]);
//! nothing here ever sees a token's text. [`Store::authenticate`] says why a
//! token is refused (unknown, revoked, expired) so kas can tell the agent.
//!
//! Architecture invariant: no HTTP, no git, no Kubernetes. Live state
//! (connections, last config sent) belongs to kas's memory, not here.

mod error;
mod model;
mod postgres;
mod rules;
mod sealed;
mod sqlite;
pub mod time;

pub use error::{Result, StoreError};
pub use model::*;
pub use postgres::PgStore;
pub use sealed::Sealer;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use tether_credentials::TokenHash;

/// What a [`ChangeFeed`] delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// A change some kas published (this one included).
    Message(String),
    /// Changes may have been lost (the listener reconnected): re-check.
    Gap,
}

/// Changes announced to every kas that shares the store, so that a
/// revocation through one replica takes effect on all. The payload is
/// kas's; the store only carries it.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    async fn publish(&self, payload: &str) -> Result<()>;
    /// Every change published from now on, by anyone.
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>>;
}

/// kas's records. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_project(&self, project: NewProject) -> Result<Project>;
    async fn list_projects(&self) -> Result<Vec<Project>>;
    async fn get_project(&self, id: &str) -> Result<Option<Project>>;
    /// Fails with [`StoreError::Conflict`] while an agent uses the project.
    async fn delete_project(&self, id: &str) -> Result<()>;

    async fn create_agent(
        &self,
        name: &str,
        config_project: &str,
        created_at: UnixTime,
    ) -> Result<Agent>;
    async fn list_agents(&self) -> Result<Vec<Agent>>;
    async fn get_agent(&self, name: &str) -> Result<Option<Agent>>;
    /// Deletes the agent and all its tokens.
    async fn delete_agent(&self, name: &str) -> Result<()>;
    /// Replaces the agent's labels with `labels` (all of them: a label left
    /// out is removed), in one transaction; the agent as it is now,
    /// `NotFound` for an unknown one. The caller checks the labels' syntax:
    /// the store keeps what it is given.
    async fn set_agent_labels(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Agent>;

    /// Records a token by its hash; the caller shows the text once.
    async fn create_token(&self, agent: &str, token: NewToken) -> Result<TokenRecord>;
    async fn list_tokens(&self, agent: &str) -> Result<Vec<TokenRecord>>;
    /// Revokes a token; revoking twice keeps the first time.
    async fn revoke_token(&self, agent: &str, token_id: i64, now: UnixTime) -> Result<TokenRecord>;

    /// The agent a token belongs to, if the token is active at `now`.
    async fn authenticate(&self, hash: &TokenHash, now: UnixTime) -> Result<TokenStatus>;

    async fn create_user(
        &self,
        name: &str,
        memberships: Vec<String>,
        created_at: UnixTime,
    ) -> Result<User>;
    async fn list_users(&self) -> Result<Vec<User>>;
    async fn get_user(&self, name: &str) -> Result<Option<User>>;
    /// Replaces the user's memberships.
    async fn set_memberships(&self, name: &str, memberships: Vec<String>) -> Result<User>;
    /// Deletes the user and all their tokens.
    async fn delete_user(&self, name: &str) -> Result<()>;

    /// Records a project or personal access token by its hash.
    async fn create_access_token(
        &self,
        owner: &TokenOwner,
        token: NewToken,
        protected: bool,
    ) -> Result<AccessTokenRecord>;
    async fn list_access_tokens(&self, owner: &TokenOwner) -> Result<Vec<AccessTokenRecord>>;
    async fn revoke_access_token(
        &self,
        owner: &TokenOwner,
        token_id: i64,
        now: UnixTime,
    ) -> Result<AccessTokenRecord>;
    /// The owner of a project or personal access token, if active at `now`.
    async fn authenticate_access(
        &self,
        hash: &TokenHash,
        now: UnixTime,
    ) -> Result<AccessTokenStatus>;

    /// Lets `agent` sync manifests from `project`, which is neither its
    /// configuration project nor in its top-level group. Granting twice
    /// keeps the first grant.
    async fn grant_manifest_project(
        &self,
        project: &str,
        agent: &str,
        now: UnixTime,
    ) -> Result<ManifestGrant>;
    /// Takes a grant away; `NotFound` when there was none.
    async fn revoke_manifest_project(&self, project: &str, agent: &str) -> Result<()>;
    /// The grants of a project (`Some`) or of an agent (`None` project).
    async fn list_manifest_grants(
        &self,
        project: Option<&str>,
        agent: Option<&str>,
    ) -> Result<Vec<ManifestGrant>>;

    /// Sets the secret that push webhooks for `project` must carry,
    /// replacing any; `NotFound` for an unknown project. Kept as given:
    /// HMAC signatures (GitHub, Gitea, Bitbucket) are checked with the
    /// secret itself, not a hash of it.
    async fn set_webhook_secret(&self, project: &str, secret: &str, now: UnixTime) -> Result<()>;
    /// The webhook secret of `project`, if one was set.
    async fn webhook_secret(&self, project: &str) -> Result<Option<String>>;

    /// Gives or takes an administrator's consent to remote bases in the
    /// project's kustomizations; the project as it is now, `NotFound` for
    /// an unknown one.
    async fn set_project_remote_bases(&self, id: &str, allow: bool) -> Result<Project>;
    /// Sets (or, `None`, clears) how the project's commits are verified,
    /// forgetting what the old policy verified; the project as it is now,
    /// `NotFound` for an unknown one.
    async fn set_project_verify(&self, id: &str, policy: Option<VerifyPolicy>) -> Result<Project>;
    /// Records what verification found; whether it differs from what was
    /// recorded (so that of several replicas only one tells of a refusal).
    async fn record_verification(&self, id: &str, status: &VerifyStatus) -> Result<bool>;

    /// The admin token every replica accepts (its hash) and when it was
    /// last rotated; `None` before the first kas recorded one.
    async fn admin_token(&self) -> Result<Option<AdminTokenRecord>>;
    /// Records the admin token: replacing the one there (a rotation), or
    /// only if there is none (`replace` false: the first start); whether
    /// it was written.
    async fn set_admin_token(&self, record: AdminTokenRecord, replace: bool) -> Result<bool>;
    /// Ends a web UI session on every replica (kept until it would have
    /// expired; expired ones are dropped as others are added).
    async fn revoke_ui_session(
        &self,
        session_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<()>;
    /// Whether a web UI session was ended.
    async fn ui_session_revoked(&self, session_id: &str) -> Result<bool>;
    /// Removes the webhook secret; `NotFound` when there was none.
    async fn delete_webhook_secret(&self, project: &str) -> Result<()>;

    /// Sets where the commit statuses of `project` go, replacing any;
    /// `NotFound` for an unknown project.
    async fn set_status_target(&self, project: &str, target: StatusTarget) -> Result<()>;
    /// Where the commit statuses of `project` go, if anywhere.
    async fn status_target(&self, project: &str) -> Result<Option<StatusTarget>>;
    /// Stops posting statuses for `project`; `NotFound` when none was set.
    async fn delete_status_target(&self, project: &str) -> Result<()>;

    /// Sets (replacing) the notification secret `secret.name`.
    async fn set_notification_secret(&self, secret: NotificationSecret) -> Result<()>;
    async fn notification_secret(&self, name: &str) -> Result<Option<NotificationSecret>>;
    /// Every notification secret's name and creation time, by name.
    async fn list_notification_secrets(&self) -> Result<Vec<(String, UnixTime)>>;
    /// `NotFound` when there is none.
    async fn delete_notification_secret(&self, name: &str) -> Result<()>;

    /// Records a sync report of `agent`. A report for the commit of the
    /// project's newest entry updates it (agentk reports a sync again once
    /// it is healthy, and on each drift correction); another commit starts
    /// a new entry. Only the newest `keep` entries per project are kept.
    async fn record_sync(&self, agent: &str, record: SyncRecord, keep: usize) -> Result<()>;
    /// The newest entry of each of `agent`'s manifest projects, by project.
    async fn latest_syncs(&self, agent: &str) -> Result<Vec<SyncRecord>>;
    /// The newest `limit` entries of one project, newest first.
    async fn sync_history(
        &self,
        agent: &str,
        project: &str,
        limit: usize,
    ) -> Result<Vec<SyncRecord>>;
    /// Where `project` stands across the fleet: for every agent that
    /// reported a sync of it, the agent's name and its newest entry, by
    /// agent name. One query, whatever the number of agents.
    async fn project_syncs(&self, project: &str) -> Result<Vec<(String, SyncRecord)>>;
    /// Replaces what kas made of `agent`'s config file (kas's JSON).
    async fn set_config_status(&self, agent: &str, status: String) -> Result<()>;
    /// Every agent's config status, by agent name.
    async fn config_statuses(&self) -> Result<Vec<(String, String)>>;
    /// Replaces the config file `agent` runs with (the last valid one), so
    /// that a kas holding the agent's tunnels but not its session can
    /// authorize proxy requests against it.
    async fn set_agent_config(&self, agent: &str, config: StoredConfig) -> Result<()>;
    /// The config file `agent` runs with, once a kas has accepted one.
    async fn agent_config(&self, agent: &str) -> Result<Option<StoredConfig>>;

    /// Sets (or replaces) the credentials for an image registry host.
    async fn set_registry_login(&self, login: RegistryLogin) -> Result<()>;
    async fn registry_login(&self, host: &str) -> Result<Option<RegistryLogin>>;
    /// Hosts with credentials: usernames, groups and when set.
    async fn list_registry_logins(&self) -> Result<Vec<RegistryLoginInfo>>;
    async fn delete_registry_login(&self, host: &str) -> Result<()>;
    /// Sets (or replaces) how kas pushes to a project; it goes with the
    /// project when the project is deleted.
    async fn set_push_credential(&self, credential: PushCredential) -> Result<()>;
    async fn push_credential(&self, project: &str) -> Result<Option<PushCredential>>;
    async fn delete_push_credential(&self, project: &str) -> Result<()>;
    /// Writes image automation's record `key`.
    async fn put_image_record(&self, record: ImageRecord) -> Result<()>;
    /// Every record whose key starts with `prefix`, by key.
    async fn image_records(&self, prefix: &str) -> Result<Vec<ImageRecord>>;
    async fn delete_image_record(&self, key: &str) -> Result<()>;

    /// Writes fleet rollouts' record `record.key`, replacing any.
    async fn put_fleet_record(&self, record: FleetRecord) -> Result<()>;
    /// Every fleet record whose key starts with `prefix` (taken literally:
    /// no character is a wildcard), by key in byte order.
    async fn fleet_records(&self, prefix: &str) -> Result<Vec<FleetRecord>>;
    async fn fleet_record(&self, key: &str) -> Result<Option<FleetRecord>>;
    /// Removes a fleet record; nothing to do (no error) when there is none,
    /// so that two replicas finishing the same work both succeed.
    async fn delete_fleet_record(&self, key: &str) -> Result<()>;
    /// Removes and returns up to `limit` fleet records whose key starts
    /// with `prefix`, the first by key, in one transaction: a request
    /// queued as a record is taken by exactly one of the replicas polling
    /// for it, however many take at once.
    async fn take_fleet_records(&self, prefix: &str, limit: usize) -> Result<Vec<FleetRecord>>;
}

/// One kas process among the replicas that share a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaId {
    /// Random per process start.
    pub id: String,
    /// Its private (kas-to-kas) URL.
    pub url: String,
}

/// What replicas sharing a database know of each other: which replica holds
/// which agent's tunnels, and which one polls each git project. Only
/// [`PgStore`] implements it: one kas on SQLite has no peers.
///
/// Tunnels are tracked as one row per (agent, replica) with a count, and
/// liveness as one heartbeat per replica: at steady state the database sees
/// a write per replica per heartbeat, whatever the number of agents.
#[async_trait]
pub trait Replicas: Send + Sync + 'static {
    /// Records `replica` as alive now (and adds it on first call).
    async fn heartbeat(&self, replica: &ReplicaId) -> Result<()>;
    /// Sets how many tunnels of `agent` `replica` holds (0 removes the row).
    async fn set_tunnels(&self, replica: &ReplicaId, agent: &str, tunnels: usize) -> Result<()>;
    /// Private URLs of the replicas other than `me` that hold tunnels of
    /// `agent` and were alive within `fresh`, most tunnels first.
    async fn tunnel_holders(
        &self,
        agent: &str,
        me: &str,
        fresh: std::time::Duration,
    ) -> Result<Vec<String>>;
    /// For every agent with tunnels on replicas other than `me` alive
    /// within `fresh`: how many tunnels they hold in all. One query for a
    /// whole page of agents, for the web UI to say "connected elsewhere".
    async fn tunnels_elsewhere(
        &self,
        me: &str,
        fresh: std::time::Duration,
    ) -> Result<Vec<(String, usize)>>;
    /// Private URLs of the replicas other than `me` alive within `fresh`:
    /// where to ask for an agent whose session is not here (a session and
    /// the tunnels of one agent pod may land on different replicas).
    async fn peers(&self, me: &str, fresh: std::time::Duration) -> Result<Vec<String>>;
    /// Removes `replica` and its tunnel rows and poll leases (a graceful
    /// stop), and replicas silent for longer than `stale`.
    async fn forget_replica(&self, replica: &ReplicaId, stale: std::time::Duration) -> Result<()>;
    /// Removes the replicas (and their rows) silent for longer than `stale`:
    /// those killed without a graceful stop.
    async fn sweep_replicas(&self, stale: std::time::Duration) -> Result<()>;
    /// Takes or renews the lease to poll `project` for `ttl`; true when
    /// `replica` holds it.
    async fn lead_poll(
        &self,
        project: &str,
        replica: &ReplicaId,
        ttl: std::time::Duration,
    ) -> Result<bool>;
}
