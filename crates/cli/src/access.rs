//! CLI commands for cluster access: users and their tokens, project tokens
//! for CI, and kubeconfigs for the Kubernetes API proxy.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{NewTokenArgs, Printed, printed, said, table};
use crate::client::{ApiClient, segment};
use tether_api as api;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, a member of the given projects and groups.
    Create {
        /// RFC 1123 label; the user is impersonated as tether:user:<name>.
        name: String,
        /// Project ids or groups (path prefixes), comma-separated.
        #[arg(long, value_delimiter = ',')]
        member_of: Vec<String>,
    },
    List,
    Show {
        name: String,
    },
    /// Replace the user's memberships.
    SetMemberships {
        name: String,
        #[arg(long, value_delimiter = ',')]
        member_of: Vec<String>,
    },
    Delete {
        name: String,
    },
    /// The user's personal access tokens.
    #[command(subcommand)]
    Token(UserTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserTokenCommand {
    /// Create a personal access token; it is printed once.
    Create {
        user: String,
        #[command(flatten)]
        token: NewTokenArgs,
    },
    List {
        user: String,
    },
    Revoke {
        user: String,
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectTokenCommand {
    /// Create a project access token for the project's CI jobs; printed once.
    Create {
        project: String,
        #[command(flatten)]
        token: NewTokenArgs,
        /// The token is kept where only protected branches' jobs can read
        /// it, so it passes `protected_branches_only`.
        #[arg(long)]
        protected: bool,
    },
    List {
        project: String,
    },
    Revoke {
        project: String,
        id: i64,
    },
}

/// `kas kubeconfig`: a kubeconfig for the proxy.
#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The agent whose cluster to reach.
    #[arg(long)]
    agent: String,
    /// File holding a personal or project access token, or a CI job's ID
    /// token; without it the token is read from KAS_PROXY_TOKEN.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where to write the kubeconfig (mode 0600); default: standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn user(client: &ApiClient, command: UserCommand) -> anyhow::Result<Printed> {
    match command {
        UserCommand::Create { name, member_of } => {
            let body = api::CreateUser {
                name: name.clone(),
                memberships: member_of,
            };
            let u: api::UserView = client.post_as("/api/v1/users", &body).await?;
            printed(&u, format!("user {name} created\n"))
        }
        UserCommand::List => {
            let list: Vec<api::UserView> = client.get_as("/api/v1/users").await?;
            let text = table(&with_joined(&list), &["name", "memberships", "created_at"])?;
            printed(&list, text)
        }
        UserCommand::Show { name } => {
            let u: api::UserView = client
                .get_as(&format!("/api/v1/users/{}", segment(&name)))
                .await?;
            let text = table(
                &with_joined(std::slice::from_ref(&u)),
                &["name", "memberships", "created_at"],
            )?;
            printed(&u, text)
        }
        UserCommand::SetMemberships { name, member_of } => {
            let text = format!("user {name} is a member of [{}]\n", member_of.join(", "));
            let u: api::UserView = client
                .put_as(
                    &format!("/api/v1/users/{}", segment(&name)),
                    &api::Memberships {
                        memberships: member_of,
                    },
                )
                .await?;
            printed(&u, text)
        }
        UserCommand::Delete { name } => {
            client
                .delete(&format!("/api/v1/users/{}", segment(&name)))
                .await?;
            Ok(said(format!("user {name} deleted\n")))
        }
        UserCommand::Token(UserTokenCommand::Create { user, token }) => {
            let path = format!("/api/v1/users/{}/tokens", segment(&user));
            let t = client
                .post_as(&path, &access_request(&token, false))
                .await?;
            created(&t, &format!("user {user}"))
        }
        UserCommand::Token(UserTokenCommand::List { user }) => {
            let list: Vec<api::AccessTokenView> = client
                .get_as(&format!("/api/v1/users/{}/tokens", segment(&user)))
                .await?;
            listed(&list)
        }
        UserCommand::Token(UserTokenCommand::Revoke { user, id }) => {
            let path = format!("/api/v1/users/{}/tokens/{id}", segment(&user));
            revoked(&client.delete_as(&path).await?, &format!("user {user}"))
        }
    }
}

pub async fn project_token(
    client: &ApiClient,
    command: ProjectTokenCommand,
) -> anyhow::Result<Printed> {
    match command {
        ProjectTokenCommand::Create {
            project,
            token,
            protected,
        } => {
            let path = format!("/api/v1/projects/{}/tokens", segment(&project));
            let t = client
                .post_as(&path, &access_request(&token, protected))
                .await?;
            created(&t, &format!("project {project}"))
        }
        ProjectTokenCommand::List { project } => {
            let list: Vec<api::AccessTokenView> = client
                .get_as(&format!("/api/v1/projects/{}/tokens", segment(&project)))
                .await?;
            listed(&list)
        }
        ProjectTokenCommand::Revoke { project, id } => {
            let path = format!("/api/v1/projects/{}/tokens/{id}", segment(&project));
            revoked(
                &client.delete_as(&path).await?,
                &format!("project {project}"),
            )
        }
    }
}

pub async fn kubeconfig(client: &ApiClient, args: KubeconfigArgs) -> anyhow::Result<Printed> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?,
        None => {
            std::env::var("KAS_PROXY_TOKEN").context("pass --token-file or set KAS_PROXY_TOKEN")?
        }
    };
    let path = format!("/api/v1/agents/{}/kubeconfig", segment(&args.agent));
    let request = api::KubeconfigRequest {
        token: token.trim().to_owned(),
    };
    let k: api::KubeconfigView = client.post_as(&path, &request).await?;
    let text = match &args.out {
        Some(out) => {
            tether_runtime::files::write_private(out, &k.kubeconfig)?;
            format!(
                "kubeconfig for agent {} written to {} (context {})\n",
                args.agent,
                out.display(),
                k.context
            )
        }
        None => k.kubeconfig.clone(),
    };
    printed(&k, text)
}

/// The creation request of a personal or project access token.
fn access_request(token: &NewTokenArgs, protected: bool) -> api::CreateAccessToken {
    let agent_token = token.request();
    api::CreateAccessToken {
        name: agent_token.name,
        description: agent_token.description,
        expires_at: agent_token.expires_at,
        protected,
    }
}

fn created(t: &api::CreatedAccessToken, owner: &str) -> anyhow::Result<Printed> {
    let text = format!(
        "token {} created for {owner}; it is shown once, kas keeps only its hash.\nuse: {}\ntoken:\n{}\n",
        t.record.id, t.usage, t.token
    );
    printed(t, text)
}

fn listed(list: &[api::AccessTokenView]) -> anyhow::Result<Printed> {
    let text = table(
        list,
        &[
            "id",
            "name",
            "protected",
            "created_at",
            "expires_at",
            "revoked_at",
        ],
    )?;
    printed(&list, text)
}

fn revoked(t: &api::AccessTokenView, owner: &str) -> anyhow::Result<Printed> {
    let text = format!(
        "token {} of {owner} revoked at {}\n",
        t.id,
        t.revoked_at.as_deref().unwrap_or("-")
    );
    printed(t, text)
}

/// A user as a table row: memberships as one comma-separated column.
#[derive(serde::Serialize)]
struct UserRow<'a> {
    name: &'a str,
    memberships: String,
    created_at: &'a str,
}

fn with_joined(users: &[api::UserView]) -> Vec<UserRow<'_>> {
    users
        .iter()
        .map(|user| UserRow {
            name: &user.name,
            memberships: user.memberships.join(","),
            created_at: &user.created_at,
        })
        .collect()
}
