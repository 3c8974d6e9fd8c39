//! CLI commands for image automation: what each policy found and did,
//! scans on demand, registry credentials, and how kas pushes to a project.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{Printed, printed, said};
use crate::client::{ApiClient, segment};
use tether_api as api;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Each policy of every project: the latest tag seen, what git holds,
    /// its state, and the project's last update.
    List,
    /// Scan now: every repository, or the one policy NAME follows.
    Scan { name: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Credentials kas scans HOST's repositories with (sealed; the
    /// password is read from a file, never from a flag).
    Login {
        /// `ghcr.io`, `registry.example.com:5000`, `docker.io`.
        host: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_file: PathBuf,
        /// Only projects of this top-level group may use it (repeat, or
        /// comma-separate). Without it every project may: give it only for
        /// a registry every team may list.
        #[arg(long = "for", value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Forget HOST's credentials: its repositories are scanned anonymously.
    Logout { host: String },
    /// Hosts with credentials (never the passwords).
    List,
}

pub(crate) async fn image(client: &ApiClient, command: ImageCommand) -> anyhow::Result<Printed> {
    match command {
        ImageCommand::List => {
            let projects: Vec<api::ImageProjectStatus> = client.get_as("/api/v1/images").await?;
            printed(&projects, list_text(&projects))
        }
        ImageCommand::Scan { name } => {
            let queued: api::ScanQueued = client
                .post_as("/api/v1/images/scan", &api::ScanImages { name })
                .await?;
            let text = match queued.repositories.is_empty() {
                true => "every repository will be scanned now\n".to_owned(),
                false => format!("{} will be scanned now\n", queued.repositories.join(", ")),
            };
            printed(&queued, text)
        }
    }
}

pub(crate) async fn registry(
    client: &ApiClient,
    command: RegistryCommand,
) -> anyhow::Result<Printed> {
    match command {
        RegistryCommand::Login {
            host,
            username,
            password_file,
            groups,
        } => {
            let password = std::fs::read_to_string(&password_file)
                .with_context(|| format!("cannot read {}", password_file.display()))?
                .trim()
                .to_owned();
            let view: api::RegistryLoginView = client
                .put_as(
                    &format!("/api/v1/registry/logins/{}", segment(&host)),
                    &api::SetRegistryLogin {
                        username,
                        password,
                        groups,
                    },
                )
                .await?;
            let text = format!("credentials for {host} set ({})\n", view.username);
            printed(&view, text)
        }
        RegistryCommand::Logout { host } => {
            client
                .delete(&format!("/api/v1/registry/logins/{}", segment(&host)))
                .await?;
            Ok(said(format!("credentials for {host} removed\n")))
        }
        RegistryCommand::List => {
            let list: Vec<api::RegistryLoginView> =
                client.get_as("/api/v1/registry/logins").await?;
            let text = super::table(&list, &["host", "username", "groups", "created_at"])?;
            printed(&list, text)
        }
    }
}

/// `kas project push-credentials ID --token-file F | --ssh-key-file F`.
pub(crate) async fn push_credentials(
    client: &ApiClient,
    id: &str,
    token_file: Option<PathBuf>,
    ssh_key_file: Option<PathBuf>,
) -> anyhow::Result<Printed> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let request = api::SetPushCredential {
        token: token_file
            .as_ref()
            .map(read)
            .transpose()?
            .map(|t| t.trim().to_owned()),
        ssh_key: ssh_key_file.as_ref().map(read).transpose()?,
    };
    client
        .put(
            &format!("/api/v1/projects/{}/push-credentials", segment(id)),
            serde_json::to_value(&request)?,
        )
        .await?;
    Ok(said(format!("push credentials of project {id} set\n")))
}

/// One block per project: its state, then a line per policy.
fn list_text(projects: &[api::ImageProjectStatus]) -> String {
    if projects.is_empty() {
        return "no project has .tether/image-updates.yaml\n".to_owned();
    }
    let mut text = String::new();
    for project in projects {
        text.push_str(&format!(
            "{} · branch {}{}\n",
            project.project,
            project.branch.as_deref().unwrap_or("-"),
            project
                .error
                .as_deref()
                .map(|e| format!(" · error: {e}"))
                .unwrap_or_default()
        ));
        for p in &project.policies {
            text.push_str(&format!(
                "  {:<16} {:<10} latest {:<20} git {:<24} {}{}\n",
                p.name,
                p.state,
                p.latest.as_deref().unwrap_or("-"),
                match p.in_git.first() {
                    Some(value) => value.as_str(),
                    None => "-",
                },
                p.policy,
                p.message
                    .as_deref()
                    .map(|m| format!(" · {m}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(update) = &project.last_update {
            text.push_str(&format!(
                "  last update {} · {} on {} · {}\n",
                update.at,
                &update.commit[..update.commit.len().min(12)],
                update.branch,
                update.changes.join(", ")
            ));
        }
    }
    text
}
