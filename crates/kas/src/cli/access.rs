//! CLI commands for cluster access: users and their tokens, project tokens
//! for CI, and kubeconfigs for the Kubernetes API proxy.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{NewTokenArgs, Printed, str, table};
use crate::client::{ApiClient, segment};

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
    Ok(match command {
        UserCommand::Create { name, member_of } => {
            let u = client
                .post(
                    "/api/v1/users",
                    json!({ "name": name, "memberships": member_of }),
                )
                .await?;
            let text = format!("user {name} created\n");
            (u, text)
        }
        UserCommand::List => {
            let list = client.get("/api/v1/users").await?;
            let text = table(&with_joined(&list), &["name", "memberships", "created_at"]);
            (list, text)
        }
        UserCommand::Show { name } => {
            let u = client
                .get(&format!("/api/v1/users/{}", segment(&name)))
                .await?;
            let text = table(
                &with_joined(&json!([u])),
                &["name", "memberships", "created_at"],
            );
            (u, text)
        }
        UserCommand::SetMemberships { name, member_of } => {
            let u = client
                .put(
                    &format!("/api/v1/users/{}", segment(&name)),
                    json!({ "memberships": member_of }),
                )
                .await?;
            let text = format!("user {name} is a member of [{}]\n", member_of.join(", "));
            (u, text)
        }
        UserCommand::Delete { name } => {
            client
                .delete(&format!("/api/v1/users/{}", segment(&name)))
                .await?;
            (Value::Null, format!("user {name} deleted\n"))
        }
        UserCommand::Token(UserTokenCommand::Create { user, token }) => {
            let path = format!("/api/v1/users/{}/tokens", segment(&user));
            created(
                client.post(&path, token.body()).await?,
                &format!("user {user}"),
            )
        }
        UserCommand::Token(UserTokenCommand::List { user }) => listed(
            client
                .get(&format!("/api/v1/users/{}/tokens", segment(&user)))
                .await?,
        ),
        UserCommand::Token(UserTokenCommand::Revoke { user, id }) => {
            let path = format!("/api/v1/users/{}/tokens/{id}", segment(&user));
            revoked(client.delete(&path).await?, &format!("user {user}"))
        }
    })
}

pub async fn project_token(
    client: &ApiClient,
    command: ProjectTokenCommand,
) -> anyhow::Result<Printed> {
    Ok(match command {
        ProjectTokenCommand::Create {
            project,
            token,
            protected,
        } => {
            let path = format!("/api/v1/projects/{}/tokens", segment(&project));
            let mut body = token.body();
            body["protected"] = json!(protected);
            created(
                client.post(&path, body).await?,
                &format!("project {project}"),
            )
        }
        ProjectTokenCommand::List { project } => listed(
            client
                .get(&format!("/api/v1/projects/{}/tokens", segment(&project)))
                .await?,
        ),
        ProjectTokenCommand::Revoke { project, id } => {
            let path = format!("/api/v1/projects/{}/tokens/{id}", segment(&project));
            revoked(client.delete(&path).await?, &format!("project {project}"))
        }
    })
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
    let k = client.post(&path, json!({ "token": token.trim() })).await?;
    let yaml = str(&k["kubeconfig"]);
    let text = match &args.out {
        Some(out) => {
            crate::files::write_private(out, &yaml)?;
            format!(
                "kubeconfig for agent {} written to {} (context {})\n",
                args.agent,
                out.display(),
                str(&k["context"])
            )
        }
        None => yaml,
    };
    Ok((k, text))
}

fn created(t: Value, owner: &str) -> Printed {
    let text = format!(
        "token {} created for {owner}; it is shown once, kas keeps only its hash.\nuse: {}\ntoken:\n{}\n",
        t["id"],
        str(&t["usage"]),
        str(&t["token"])
    );
    (t, text)
}

fn listed(list: Value) -> Printed {
    let text = table(
        &list,
        &[
            "id",
            "name",
            "protected",
            "created_at",
            "expires_at",
            "revoked_at",
        ],
    );
    (list, text)
}

fn revoked(t: Value, owner: &str) -> Printed {
    let text = format!(
        "token {} of {owner} revoked at {}\n",
        t["id"],
        str(&t["revoked_at"])
    );
    (t, text)
}

/// Memberships as one comma-separated column.
fn with_joined(users: &Value) -> Value {
    let mut users = users.clone();
    for user in users.as_array_mut().into_iter().flatten() {
        let joined: Vec<String> = user["memberships"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str)
            .collect();
        user["memberships"] = json!(joined.join(","));
    }
    users
}
