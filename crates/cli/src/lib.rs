//! The `kas` CLI's client commands: the REST API's operations for a person
//! or a script (`kas project add`, `kas agent create`, `kas token create`, …).
//!
//! Where the server is and which admin token to use come from, in order:
//! flags, environment (`KAS_SERVER`, `KAS_ADMIN_TOKEN`, `KAS_ADMIN_TOKEN_FILE`),
//! the config file (`--config`, else `$XDG_CONFIG_HOME/tether/kas-cli.yaml`),
//! then the defaults of a local `kas serve`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use tether_credentials::{Token, TokenKind};

use crate::client::{ApiClient, segment};
use tether_api as api;

mod access;
pub mod check;
mod images;
pub use images::{ImageCommand, RegistryCommand};
mod rollouts;
pub use rollouts::{RolloutCommand, WaitEnded};
pub mod client;
pub mod docs;

pub use access::{KubeconfigArgs, ProjectTokenCommand, UserCommand, UserTokenCommand};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8150";
const DEFAULT_TOKEN_FILE: &str = "kas-data/admin-token";

/// How to reach kas; shared by every client command.
#[derive(Debug, Args)]
pub struct Connection {
    /// REST API address of kas.
    #[arg(long, env = "KAS_SERVER", global = true)]
    server: Option<String>,
    /// File holding the admin token (kas writes `<data-dir>/admin-token`).
    #[arg(long, env = "KAS_ADMIN_TOKEN_FILE", global = true)]
    admin_token_file: Option<PathBuf>,
    /// CA certificate (PEM) of kas's TLS certificate, for an `https://`
    /// server (kas's development CA is `<data-dir>/agent-ca.crt`).
    #[arg(long, env = "KAS_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// CLI config file (YAML: `server`, `admin_token_file`, `ca_cert`).
    #[arg(long, env = "KAS_CLI_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

impl Connection {
    /// The output format asked for with `-o`.
    pub fn output(&self) -> Output {
        self.output
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliConfig {
    server: Option<String>,
    admin_token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate agent config files locally (`-` reads standard input):
    /// prints every problem and warning with file, line and column; exits
    /// non-zero only when a file would be refused.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Register a git repository.
    Add {
        /// Path-like id, e.g. team/platform-config.
        id: String,
        /// A local path, https:// or ssh:// URL.
        #[arg(long)]
        url: String,
        /// Name of the credentials kas fetches with.
        #[arg(long)]
        credentials_ref: Option<String>,
        /// Branch, tag or commit to read (default: the default branch).
        #[arg(long = "ref")]
        git_ref: Option<String>,
    },
    /// Read the project's repository now and push what changed to its
    /// agents (what a git hook or webhook calls).
    Refresh { id: String },
    /// Every registered project.
    List,
    /// The project: URL (any password redacted), ref, credentials, consent to remote bases.
    Show { id: String },
    /// Delete a project that no agent uses.
    Delete { id: String },
    /// Change what an administrator decides for a project.
    Set {
        id: String,
        /// Let the project's kustomizations fetch remote bases (with
        /// `allow_remote_bases: true` in the config), over https:// and
        /// through kas's egress policy; `--allow-remote-bases=false` takes
        /// the consent back.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        allow_remote_bases: Option<bool>,
    },
    /// Require signed commits: agents get nothing of a commit (config,
    /// manifests, renders) whose signature does not verify against these
    /// keys, and keep the last verified commit. Run again with new files to
    /// rotate keys (no restart); `--mode off` clears the policy.
    Verify {
        id: String,
        /// `head`: the commit given to agents must verify; `strict`: so
        /// must every commit since the last verified one; `off`.
        #[arg(long, value_parser = ["head", "strict", "off"])]
        mode: String,
        /// An allowed-signers file (git's `gpg.ssh.allowedSignersFile`
        /// format: `principal [valid-after=…,valid-before=…] ssh-ed25519
        /// AAAA…`), for SSH-signed commits.
        #[arg(long, value_name = "FILE")]
        ssh_allowed_signers: Option<std::path::PathBuf>,
        /// Armored OpenPGP public keys (`gpg --armor --export`), for
        /// GPG-signed commits.
        #[arg(long, value_name = "FILE")]
        gpg_keys: Option<std::path::PathBuf>,
        /// `strict`: a full commit id whose history you trust; the first
        /// verification walks every commit from it to the head. Without
        /// it, the first head is checked alone.
        #[arg(long, value_name = "COMMIT")]
        trust_base: Option<String>,
    },
    /// Project access tokens, for the project's CI jobs.
    #[command(subcommand)]
    Token(ProjectTokenCommand),
    /// Let an agent sync manifests from this project, though it is outside
    /// the agent's top-level group.
    Grant {
        id: String,
        #[arg(long)]
        agent: String,
    },
    /// Take a grant away; the agent stops receiving the project's files.
    RevokeGrant {
        id: String,
        #[arg(long)]
        agent: String,
    },
    /// The agents granted this project.
    Grants { id: String },
    /// The project's push webhook secret, for git hosts to sign deliveries.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Where kas posts the commit statuses of the project's syncs.
    #[command(subcommand)]
    Statuses(StatusesCommand),
    /// How kas pushes image updates to the project: an HTTPS token (the
    /// password for https:// URLs) or an SSH private key; from a file.
    PushCredentials {
        id: String,
        #[arg(
            long,
            conflicts_with = "ssh_key_file",
            required_unless_present = "ssh_key_file"
        )]
        token_file: Option<std::path::PathBuf>,
        #[arg(long)]
        ssh_key_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StatusesCommand {
    /// Post a status per agent (`tether/<agent>`) on every commit synced.
    Set {
        id: String,
        /// github, gitlab, gitea or forgejo.
        #[arg(long)]
        provider: String,
        /// The host's API root, e.g. https://api.github.com,
        /// https://gitlab.example.com/api/v4, https://gitea.example.com/api/v1.
        #[arg(long)]
        api_url: String,
        /// owner/name (GitLab: the project's path or id).
        #[arg(long)]
        repository: String,
        /// File holding a token allowed to write commit statuses.
        #[arg(long)]
        token_file: std::path::PathBuf,
    },
    /// Where the project's statuses go (the token is never shown).
    Show { id: String },
    /// Stop posting statuses.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create a new secret (replacing the old one), shown this once, with
    /// the path each git host delivers to.
    Create { id: String },
    /// Remove the secret: deliveries are refused after.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent whose config file is in --project.
    Create {
        /// RFC 1123 label, at most 63 characters.
        name: String,
        /// Project holding .gitlab/agents/<name>/config.yaml.
        #[arg(long)]
        project: String,
        /// KEY=VALUE, repeatable: what rollouts select the agent by.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Set (`KEY=VALUE`) and remove (`KEY-`) labels; rollouts that start
    /// from now select by them.
    Label {
        name: String,
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Hold the agent on one commit of a manifest project (a rollback by
    /// hand); rollouts skip it, and say so.
    Pin {
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        commit: String,
    },
    /// Let the project's rollouts decide the agent's commit again.
    Unpin {
        name: String,
        #[arg(long)]
        project: String,
    },
    /// Block until the agent synced COMMIT of PROJECT with every object
    /// Current (exit 0), or it failed (2), will not get it (3: halted,
    /// rolled back, pinned), timed out (4) or was superseded (5). Takes
    /// the admin token, or a project access token of PROJECT in
    /// KAS_PROJECT_TOKEN.
    Wait {
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        commit: String,
        /// Go duration: 90s, 5m.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// Every agent, with its config project and whether it is connected.
    List,
    /// One agent: its connections, cluster and config status.
    Show { name: String },
    /// The last sync of each of the agent's manifest projects.
    Gitops { name: String },
    /// The last syncs of one manifest project, newest first.
    History {
        name: String,
        /// The manifest project (default: the agent's configuration
        /// project).
        #[arg(long)]
        project: Option<String>,
        /// How many, at most 50.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// What a commit of one manifest project would change in the agent's
    /// cluster: objects to create, update (with their fields), leave alone
    /// or prune. Nothing changes.
    Plan {
        name: String,
        /// A commit id (or a branch or tag) of the manifest project.
        #[arg(long)]
        commit: String,
        /// The manifest project (may be left out when the agent has one).
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete an agent and its tokens.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for an agent; it is printed once.
    Create {
        /// The agent's name.
        agent: String,
        #[command(flatten)]
        token: NewTokenArgs,
    },
    List {
        agent: String,
    },
    Revoke {
        agent: String,
        id: i64,
    },
}

/// What every token creation takes: agent, project and personal tokens.
#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// A name for the token, e.g. where it is installed or used.
    #[arg(long)]
    name: String,
    /// Free text shown when tokens are listed.
    #[arg(long, default_value = "")]
    description: String,
    /// RFC 3339, e.g. 2027-06-30T00:00:00Z; absent: it does not expire.
    #[arg(long)]
    expires_at: Option<String>,
}

impl NewTokenArgs {
    /// The creation request of an agent token.
    fn request(&self) -> api::CreateToken {
        api::CreateToken {
            name: self.name.clone(),
            description: self.description.clone(),
            expires_at: self.expires_at.clone(),
        }
    }
}

/// A client command, after its connection is resolved.
#[derive(Debug)]
pub enum Command {
    Project(ProjectCommand),
    Agent(AgentCommand),
    Token(TokenCommand),
    User(UserCommand),
    Kubeconfig(KubeconfigArgs),
    Notifications(NotificationsCommand),
    Admin(AdminCommand),
    Image(ImageCommand),
    Registry(RegistryCommand),
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a new admin token (shown once): the old one, and every admin
    /// web UI session, stop working on every replica within a second.
    /// The token is also written to the admin token file of the replica
    /// that answered; give it to the others' files yourself.
    RotateToken,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Notification secrets: where destinations named in configs deliver.
    #[command(subcommand)]
    Secret(NotificationSecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum NotificationSecretCommand {
    /// Set (or replace) a secret: the URL (a Slack or Teams webhook, or
    /// any URL for the generic provider) and, for the generic provider,
    /// the key its JSON is signed with. Read from files, never from flags.
    Set {
        /// GROUP/NAME: usable by the agents configured in the top-level
        /// group GROUP's projects. NAME alone: kas-wide, usable only by
        /// kas's settings file (`notifications:`), never by an agent's
        /// config.
        name: String,
        #[arg(long)]
        url_file: std::path::PathBuf,
        #[arg(long)]
        signing_key_file: Option<std::path::PathBuf>,
    },
    /// The secrets' names.
    List,
    /// Remove a notification secret.
    Delete { name: String },
}

/// Runs one client command and prints its result on stdout.
pub async fn run(connection: &Connection, command: Command) -> anyhow::Result<()> {
    let client = connect(connection)?;
    let printed = match command {
        Command::Project(c) => project(&client, c).await?,
        Command::Agent(c) => agent(&client, c).await?,
        Command::Token(c) => token(&client, c).await?,
        Command::User(c) => access::user(&client, c).await?,
        Command::Kubeconfig(args) => access::kubeconfig(&client, args).await?,
        Command::Image(c) => images::image(&client, c).await?,
        Command::Registry(c) => images::registry(&client, c).await?,
        Command::Rollout(c) => rollouts::rollout(&client, c).await?,
        Command::Notifications(NotificationsCommand::Secret(c)) => {
            notification_secret(&client, c).await?
        }
        Command::Admin(AdminCommand::RotateToken) => {
            let rotated: Rotated = client
                .post_as("/api/v1/admin/token", &serde_json::Map::new())
                .await?;
            let text = format!(
                "new admin token (shown once; the old one and every admin web UI session have ended):\n{}\n",
                rotated.token
            );
            printed(&rotated, text)?
        }
    };
    match (connection.output, printed.json) {
        (Output::Json, Some(json)) => println!("{json}"),
        (Output::Json, None) => {}
        (Output::Text, _) => print!("{}", printed.text),
    }
    Ok(())
}

fn connect(c: &Connection) -> anyhow::Result<ApiClient> {
    let config = load_config(c.config.as_deref())?;
    let server = c
        .server
        .clone()
        .or(config.server)
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    // A CI job's project access token: only the waits take it.
    let project_token = std::env::var("KAS_PROJECT_TOKEN").ok();
    let token = match std::env::var("KAS_ADMIN_TOKEN") {
        _ if project_token.is_some() && c.admin_token_file.is_none() => Token::parse_kind(
            project_token.as_deref().unwrap_or_default(),
            TokenKind::Project,
        )
        .context("KAS_PROJECT_TOKEN holds no project access token")?,
        Ok(text) if c.admin_token_file.is_none() => Token::parse_kind(&text, TokenKind::Admin)
            .context("KAS_ADMIN_TOKEN holds no admin token")?,
        _ => {
            let file = c
                .admin_token_file
                .clone()
                .or(config.admin_token_file)
                .unwrap_or_else(|| DEFAULT_TOKEN_FILE.into());
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "cannot read the admin token file {}; pass --admin-token-file or set KAS_ADMIN_TOKEN",
                    file.display()
                )
            })?;
            Token::parse_kind(&text, TokenKind::Admin)
                .with_context(|| format!("{} holds no admin token", file.display()))?
        }
    };
    let ca = match c.ca_cert.clone().or(config.ca_cert) {
        Some(path) => Some(
            std::fs::read(&path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    ApiClient::with_ca(&server, &token, ca.as_deref())
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<CliConfig> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
            match base {
                Some(b) => b.join("tether/kas-cli.yaml"),
                None => return Ok(CliConfig::default()),
            }
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_saphyr::from_str::<Option<CliConfig>>(&text)
            .map(Option::unwrap_or_default)
            .with_context(|| format!("invalid CLI config {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            Ok(CliConfig::default())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read CLI config {}", path.display())),
    }
}

/// What a command prints: its typed answer as JSON for `-o json`, text
/// for people otherwise.
#[derive(Debug)]
pub(crate) struct Printed {
    json: Option<String>,
    text: String,
}

/// The answer `value`, and `text` for people.
pub(crate) fn printed<T: serde::Serialize + ?Sized>(
    value: &T,
    text: String,
) -> anyhow::Result<Printed> {
    Ok(Printed {
        json: Some(serde_json::to_string_pretty(value)?),
        text,
    })
}

/// A command with no answer but what it says (`-o json` prints nothing).
pub(crate) fn said(text: String) -> Printed {
    Printed { json: None, text }
}

/// The answer kas gives to an admin token's rotation.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Rotated {
    token: String,
}

async fn project(client: &ApiClient, command: ProjectCommand) -> anyhow::Result<Printed> {
    match command {
        ProjectCommand::Add {
            id,
            url,
            credentials_ref,
            git_ref,
        } => {
            let body = api::CreateProject {
                id,
                url,
                credentials_ref,
                git_ref,
            };
            let p: api::ProjectView = client.post_as("/api/v1/projects", &body).await?;
            let text = format!("project {} registered ({})\n", p.id, p.url);
            printed(&p, text)
        }
        ProjectCommand::List => {
            let list: Vec<api::ProjectView> = client.get_as("/api/v1/projects").await?;
            let text = table(&list, &["id", "url", "created_at"])?;
            printed(&list, text)
        }
        ProjectCommand::Show { id } => {
            let p: api::ProjectView = client
                .get_as(&format!("/api/v1/projects/{}", segment(&id)))
                .await?;
            let text = table(
                &[&p],
                &[
                    "id",
                    "url",
                    "ref",
                    "credentials_ref",
                    "allow_remote_bases",
                    "created_at",
                ],
            )?;
            let text = text + &verify_text(&p);
            printed(&p, text)
        }
        ProjectCommand::Verify {
            id,
            mode,
            ssh_allowed_signers,
            gpg_keys,
            trust_base,
        } => {
            let read = |file: Option<std::path::PathBuf>| {
                file.map(|f| {
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))
                })
                .transpose()
            };
            let settings = api::VerifySettings {
                mode,
                ssh_allowed_signers: read(ssh_allowed_signers)?,
                gpg_keys: read(gpg_keys)?,
                trust_base,
            };
            let p: api::ProjectView = client
                .put_as(
                    &format!("/api/v1/projects/{}/verify", segment(&id)),
                    &settings,
                )
                .await?;
            let text = match &p.verify {
                None => format!("project {}: commits are not verified\n", p.id),
                Some(_) => verify_text(&p),
            };
            printed(&p, text)
        }
        ProjectCommand::Set {
            id,
            allow_remote_bases,
        } => {
            let p: api::ProjectView = client
                .patch_as(
                    &format!("/api/v1/projects/{}", segment(&id)),
                    &api::ProjectSettings { allow_remote_bases },
                )
                .await?;
            let text = format!(
                "project {}: remote bases {}\n",
                p.id,
                if p.allow_remote_bases {
                    "allowed"
                } else {
                    "refused"
                }
            );
            printed(&p, text)
        }
        ProjectCommand::Refresh { id } => {
            let r: api::Refreshed = client
                .post_as(
                    &format!("/api/v1/projects/{}/refresh", segment(&id)),
                    &serde_json::Map::new(),
                )
                .await?;
            let text = format!("project {id} is at commit {}\n", r.commit);
            printed(&r, text)
        }
        ProjectCommand::Token(c) => access::project_token(client, c).await,
        ProjectCommand::PushCredentials {
            id,
            token_file,
            ssh_key_file,
        } => images::push_credentials(client, &id, token_file, ssh_key_file).await,
        ProjectCommand::Grant { id, agent } => {
            let g: api::GrantView = client
                .post_as(
                    &format!("/api/v1/projects/{}/grants", segment(&id)),
                    &api::GrantRequest {
                        agent: agent.clone(),
                    },
                )
                .await?;
            let text = format!("agent {agent} may sync manifests from project {id}\n");
            printed(&g, text)
        }
        ProjectCommand::RevokeGrant { id, agent } => {
            client
                .delete(&format!(
                    "/api/v1/projects/{}/grants/{}",
                    segment(&id),
                    segment(&agent)
                ))
                .await?;
            Ok(said(format!(
                "agent {agent} may no longer sync manifests from project {id}\n"
            )))
        }
        ProjectCommand::Grants { id } => {
            let list: Vec<api::GrantView> = client
                .get_as(&format!("/api/v1/projects/{}/grants", segment(&id)))
                .await?;
            let text = table(&list, &["project", "agent", "created_at"])?;
            printed(&list, text)
        }
        ProjectCommand::Webhook(WebhookCommand::Create { id }) => {
            let created: api::WebhookCreated = client
                .post_as(
                    &format!("/api/v1/projects/{}/webhook", segment(&id)),
                    &serde_json::Map::new(),
                )
                .await?;
            let mut text = format!(
                "webhook secret of project {id} (shown once; a new one replaces it):\n{}\n\ndeliver to kas's API listener at:\n",
                created.secret
            );
            for (provider, path) in &created.paths {
                text.push_str(&format!("  {provider:<10} {path}\n"));
            }
            printed(&created, text)
        }
        ProjectCommand::Statuses(StatusesCommand::Set {
            id,
            provider,
            api_url,
            repository,
            token_file,
        }) => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("cannot read {}", token_file.display()))?;
            let target: api::StatusTargetView = client
                .put_as(
                    &format!("/api/v1/projects/{}/statuses", segment(&id)),
                    &api::StatusTargetRequest {
                        provider,
                        api_url,
                        repository,
                        token: token.trim().to_owned(),
                    },
                )
                .await?;
            let text = format!(
                "project {id} posts commit statuses to {} {} ({})\n",
                target.provider, target.repository, target.api_url
            );
            printed(&target, text)
        }
        ProjectCommand::Statuses(StatusesCommand::Show { id }) => {
            let target: api::StatusTargetView = client
                .get_as(&format!("/api/v1/projects/{}/statuses", segment(&id)))
                .await?;
            let text = table(
                &[&target],
                &["project", "provider", "api_url", "repository", "created_at"],
            )?;
            printed(&target, text)
        }
        ProjectCommand::Statuses(StatusesCommand::Delete { id }) => {
            client
                .delete(&format!("/api/v1/projects/{}/statuses", segment(&id)))
                .await?;
            Ok(said(format!(
                "project {id} posts no commit statuses any more\n"
            )))
        }
        ProjectCommand::Webhook(WebhookCommand::Delete { id }) => {
            client
                .delete(&format!("/api/v1/projects/{}/webhook", segment(&id)))
                .await?;
            Ok(said(format!(
                "project {id} takes no webhook deliveries any more\n"
            )))
        }
        ProjectCommand::Delete { id } => {
            client
                .delete(&format!("/api/v1/projects/{}", segment(&id)))
                .await?;
            Ok(said(format!("project {id} deleted\n")))
        }
    }
}

async fn agent(client: &ApiClient, command: AgentCommand) -> anyhow::Result<Printed> {
    match command {
        AgentCommand::Create {
            name,
            project,
            labels,
        } => {
            let labels = tether_agent_config::labels::parse_changes(&labels)?;
            anyhow::ensure!(
                labels.remove.is_empty(),
                "--label takes KEY=VALUE; KEY- removes a label with `kas agent label`"
            );
            let body = api::CreateAgent {
                name: name.clone(),
                config_project: project.clone(),
                labels: labels.set,
            };
            let a: api::AgentView = client.post_as("/api/v1/agents", &body).await?;
            let text = format!(
                "agent {name} created; its config file is {} in project {project}\n",
                a.config_path
            );
            printed(&a, text)
        }
        AgentCommand::List => {
            let list: Vec<api::AgentView> = client.get_as("/api/v1/agents").await?;
            let text = table(
                &with_connected(&list),
                &[
                    "name",
                    "config_project",
                    "connected",
                    "labels",
                    "created_at",
                ],
            )?;
            printed(&list, text)
        }
        AgentCommand::Label { name, changes } => rollouts::label(client, &name, &changes).await,
        AgentCommand::Pin {
            name,
            project,
            commit,
        } => rollouts::pin(client, &name, &project, &commit).await,
        AgentCommand::Unpin { name, project } => rollouts::unpin(client, &name, &project).await,
        AgentCommand::Wait {
            name,
            project,
            commit,
            timeout,
        } => {
            let path = format!("/api/v1/agents/{}/wait", segment(&name));
            rollouts::wait(
                client,
                &path,
                &[("project", &project), ("commit", &commit)],
                &timeout,
            )
            .await
        }
        AgentCommand::Show { name } => {
            let a: api::AgentView = client
                .get_as(&format!("/api/v1/agents/{}", segment(&name)))
                .await?;
            let mut text = table(
                &with_connected(std::slice::from_ref(&a)),
                &[
                    "name",
                    "config_project",
                    "config_path",
                    "connected",
                    "tunnels",
                    "labels",
                ],
            )?;
            text.push_str(&table(
                &a.connections,
                &[
                    "pod_namespace",
                    "pod_name",
                    "agent_version",
                    "cluster_version",
                    "config_commit",
                    "connected_at",
                    "last_seen",
                ],
            )?);
            if let Some(error) = &a.config.error {
                text.push_str(&format!(
                    "config error: {} line {}: {}\n",
                    error.file.as_deref().unwrap_or("-"),
                    error.line.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                    error.message,
                ));
            }
            printed(&a, text)
        }
        AgentCommand::Gitops { name } => {
            let syncs: Vec<api::SyncView> = client
                .get_as(&format!("/api/v1/agents/{}/gitops", segment(&name)))
                .await?;
            let mut text = table(
                &syncs,
                &[
                    "project",
                    "commit",
                    "state",
                    "phase",
                    "health",
                    "applied",
                    "pruned",
                    "duration_ms",
                    "error",
                ],
            )?;
            for sync in &syncs {
                if !sync.waiting.is_empty() {
                    text.push_str(&format!(
                        "\n{}: {} since {}, waiting for:\n",
                        sync.project,
                        sync.phase,
                        sync.phase_since.as_deref().unwrap_or("-")
                    ));
                    text.push_str(&table(
                        &sync.waiting,
                        &["kind", "namespace", "name", "health", "message"],
                    )?);
                }
                text.push_str(&format!("\n{}:\n", sync.project));
                text.push_str(&table(
                    &sync.objects,
                    &["kind", "namespace", "name", "action", "health", "message"],
                )?);
            }
            printed(&syncs, text)
        }
        AgentCommand::History {
            name,
            project,
            limit,
        } => {
            let project = match project {
                Some(p) => p,
                None => {
                    let agent: api::AgentView = client
                        .get_as(&format!("/api/v1/agents/{}", segment(&name)))
                        .await?;
                    agent.config_project
                }
            };
            let syncs: Vec<api::SyncView> = client
                .get_as(&format!(
                    "/api/v1/agents/{}/gitops/history?project={}&limit={limit}",
                    segment(&name),
                    segment(&project)
                ))
                .await?;
            let text = table(
                &syncs,
                &[
                    "commit",
                    "state",
                    "health",
                    "applied",
                    "unchanged",
                    "pruned",
                    "duration_ms",
                    "reported_at",
                    "trace_id",
                    "error",
                ],
            )?;
            printed(&syncs, text)
        }
        AgentCommand::Plan {
            name,
            commit,
            project,
        } => {
            let plan: api::PlanView = client
                .post_as(
                    &format!("/api/v1/agents/{}/plan", segment(&name)),
                    &api::PlanRequest { commit, project },
                )
                .await?;
            let text = plan_text(&plan);
            printed(&plan, text)
        }
        AgentCommand::Delete { name } => {
            client
                .delete(&format!("/api/v1/agents/{}", segment(&name)))
                .await?;
            Ok(said(format!("agent {name} deleted\n")))
        }
    }
}

async fn token(client: &ApiClient, command: TokenCommand) -> anyhow::Result<Printed> {
    match command {
        TokenCommand::Create { agent, token } => {
            let t: api::CreatedToken = client
                .post_as(
                    &format!("/api/v1/agents/{}/tokens", segment(&agent)),
                    &token.request(),
                )
                .await?;
            let text = format!(
                "token {} created for agent {agent}; it is shown once, kas keeps only its hash.\n\
                 save it to the file agent-token (readable by you only), then install the agent with:\n  {}\ntoken:\n{}\n",
                t.record.id, t.install_command, t.token
            );
            printed(&t, text)
        }
        TokenCommand::List { agent } => {
            let list: Vec<api::TokenView> = client
                .get_as(&format!("/api/v1/agents/{}/tokens", segment(&agent)))
                .await?;
            let text = table(
                &list,
                &["id", "name", "created_at", "expires_at", "revoked_at"],
            )?;
            printed(&list, text)
        }
        TokenCommand::Revoke { agent, id } => {
            let t: api::TokenView = client
                .delete_as(&format!("/api/v1/agents/{}/tokens/{id}", segment(&agent)))
                .await?;
            let text = format!(
                "token {id} of agent {agent} revoked at {}\n",
                t.revoked_at.as_deref().unwrap_or("-")
            );
            printed(&t, text)
        }
    }
}

/// An agent as a table row: with how many of its pods are connected.
#[derive(serde::Serialize)]
struct AgentRow<'a> {
    #[serde(flatten)]
    agent: &'a api::AgentView,
    connected: usize,
}

fn with_connected(agents: &[api::AgentView]) -> Vec<AgentRow<'_>> {
    agents
        .iter()
        .map(|agent| AgentRow {
            agent,
            connected: agent.connections.len(),
        })
        .collect()
}

/// One cell: text as it is, `-` for nothing, anything else as JSON.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        // Labels: `env=prod,region=eu`.
        serde_json::Value::Object(map) if map.values().all(|v| v.is_string()) => {
            match map.is_empty() {
                true => "-".into(),
                false => map
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(","),
            }
        }
        other => other.to_string(),
    }
}

/// Aligned columns with a header, one row per typed answer: `columns`
/// are the answer's field names.
/// A project's signature policy and what verification last found, as
/// `kas project show` and `kas project verify` print them.
fn verify_text(p: &api::ProjectView) -> String {
    let Some(v) = &p.verify else {
        return "signed commits: not required\n".to_owned();
    };
    let mut keys = Vec::new();
    if !v.ssh_signers.is_empty() {
        keys.push(format!("SSH: {}", v.ssh_signers.join(", ")));
    }
    if v.gpg_keys {
        keys.push("OpenPGP keys".to_owned());
    }
    let mut text = format!(
        "signed commits: {} ({}), set {}\n",
        v.mode,
        keys.join("; "),
        v.set_at
    );
    if let Some(base) = &v.trust_base {
        text.push_str(&format!("  trust base: {base}\n"));
    }
    match (&v.verified, &v.signer) {
        (Some(commit), Some(signer)) => {
            text.push_str(&format!("  verified: {commit} (signed: {signer})\n"));
        }
        (Some(commit), None) => text.push_str(&format!("  verified: {commit}\n")),
        _ => text.push_str("  verified: no commit yet\n"),
    }
    if let Some(r) = &v.refused {
        text.push_str(&format!(
            "  REFUSED: {} at {}: {}\n",
            r.commit, r.at, r.reason
        ));
    }
    text
}

fn table<T: serde::Serialize>(rows: &[T], columns: &[&str]) -> anyhow::Result<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let fields = serde_json::to_value(row)?;
            Ok(columns.iter().map(|c| cell(&fields[*c])).collect())
        })
        .collect::<anyhow::Result<_>>()?;
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    Ok(out)
}

async fn notification_secret(
    client: &ApiClient,
    command: NotificationSecretCommand,
) -> anyhow::Result<Printed> {
    match command {
        NotificationSecretCommand::Set {
            name,
            url_file,
            signing_key_file,
        } => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let request = api::NotificationSecretRequest {
                url: read(&url_file)?,
                signing_key: signing_key_file.as_deref().map(read).transpose()?,
            };
            let view: api::NotificationSecretView = client
                .put_as(
                    &format!("/api/v1/notification-secrets/{}", segment(&name)),
                    &request,
                )
                .await?;
            let text = format!("notification secret {name} set\n");
            printed(&view, text)
        }
        NotificationSecretCommand::List => {
            let list: Vec<api::NotificationSecretView> =
                client.get_as("/api/v1/notification-secrets").await?;
            let text = table(&list, &["name", "created_at"])?;
            printed(&list, text)
        }
        NotificationSecretCommand::Delete { name } => {
            client
                .delete(&format!("/api/v1/notification-secrets/{}", segment(&name)))
                .await?;
            Ok(said(format!("notification secret {name} deleted\n")))
        }
    }
}

/// A plan as a person reads it: one line per object that changes, its
/// fields below, and the counts.
fn plan_text(plan: &api::PlanView) -> String {
    let mut text = format!(
        "agent {} · {} at {}\n",
        plan.agent, plan.project, plan.commit
    );
    if let Some(rollout) = &plan.rollout {
        text.push_str(&format!("{rollout}\n"));
    }
    if let Some(why) = &plan.unverified {
        text.push_str(&format!(
            "UNVERIFIED: agents will not be given this commit: {why}\n"
        ));
    }
    for o in plan.objects.iter().filter(|o| o.change != "unchanged") {
        let sign = match o.change.as_str() {
            "create" => "+",
            "update" => "~",
            "prune" => "-",
            _ => "!",
        };
        let at = if o.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", o.namespace)
        };
        let group = if o.group.is_empty() {
            String::new()
        } else {
            format!(".{}", o.group)
        };
        text.push_str(&format!(
            "{sign} {}{group} {at}{} ({})",
            o.kind, o.name, o.change
        ));
        if !o.message.is_empty() {
            text.push_str(&format!(": {}", o.message));
        }
        text.push('\n');
        for f in &o.fields {
            text.push_str(&format!(
                "    {}: {} → {}\n",
                f.path,
                f.before.as_deref().unwrap_or("(none)"),
                f.after.as_deref().unwrap_or("(none)")
            ));
        }
    }
    let counts: Vec<String> = plan
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    text.push_str(&format!(
        "{} ({} dry runs, {} ms)\n",
        counts.join(", "),
        plan.dry_runs,
        plan.duration_ms
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        #[derive(serde::Serialize)]
        struct Row {
            id: &'static str,
            url: Option<&'static str>,
        }
        let list = [
            Row {
                id: "a/b",
                url: Some("/x"),
            },
            Row {
                id: "long/project-id",
                url: None,
            },
        ];
        assert_eq!(
            table(&list, &["id", "url"]).expect("a table"),
            "ID               URL\na/b              /x\nlong/project-id  -\n"
        );
    }
}
