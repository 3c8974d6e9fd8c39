//! CLI commands for fleet rollouts: each project's rollout and its
//! control, agents' labels and pins, and the waits CI blocks on.
//!
//! `kas rollout wait` and `kas agent wait` end with an exit code a CI job
//! can branch on: 0 done, [`EXIT_FAILED`], [`EXIT_HALTED`],
//! [`EXIT_TIMED_OUT`], [`EXIT_SUPERSEDED`] (1 stays for any other error).

use std::time::Duration;

use clap::Subcommand;

use super::{Printed, printed, said, table};
use crate::client::{ApiClient, segment};
use tether_api as api;

/// A sync failed, or an object is Failed or Degraded.
pub const EXIT_FAILED: i32 = 2;
/// The rollout halted or rolled back (or the agent is pinned elsewhere):
/// the commit will not reach it.
pub const EXIT_HALTED: i32 = 3;
pub const EXIT_TIMED_OUT: i32 = 4;
/// A newer commit's rollout took over.
pub const EXIT_SUPERSEDED: i32 = 5;

/// A wait that ended otherwise than done: the program exits with `code`
/// after printing `message`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WaitEnded {
    pub code: i32,
    pub message: String,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Every project's current rollout, in a line each.
    List,
    /// One project's rollout: its waves, each agent's commit and why, and
    /// the timings.
    Show {
        project: String,
    },
    /// Admit no more agents and pass no wave until resumed (failures are
    /// still seen).
    Pause {
        project: String,
    },
    Resume {
        project: String,
    },
    /// End the current wave's soak now.
    Promote {
        project: String,
    },
    /// Stop and give every agent the rollout reached its previous commit.
    Abort {
        project: String,
    },
    /// Block until the rollout of COMMIT is done (exit 0), failed (2),
    /// halted or rolled back (3), timed out (4) or superseded (5). Takes
    /// the admin token, or a project access token of PROJECT in
    /// KAS_PROJECT_TOKEN (a CI job).
    Wait {
        project: String,
        #[arg(long)]
        commit: String,
        /// Go duration: 90s, 30m, 1h.
        #[arg(long, default_value = "30m")]
        timeout: String,
    },
}

pub(crate) async fn rollout(
    client: &ApiClient,
    command: RolloutCommand,
) -> anyhow::Result<Printed> {
    match command {
        RolloutCommand::List => {
            let list: Vec<api::RolloutView> = client.get_as("/api/v1/rollouts").await?;
            let text = table(
                &list,
                &["project", "commit", "phase", "summary", "started_at"],
            )?;
            printed(&list, text)
        }
        RolloutCommand::Show { project } => {
            let r: api::RolloutView = client
                .get_as(&format!("/api/v1/projects/{}/rollout", segment(&project)))
                .await?;
            let text = show_text(&r)?;
            printed(&r, text)
        }
        RolloutCommand::Pause { project } => control(client, &project, "pause").await,
        RolloutCommand::Resume { project } => control(client, &project, "resume").await,
        RolloutCommand::Promote { project } => control(client, &project, "promote").await,
        RolloutCommand::Abort { project } => control(client, &project, "abort").await,
        RolloutCommand::Wait {
            project,
            commit,
            timeout,
        } => {
            let path = format!("/api/v1/projects/{}/rollout/wait", segment(&project));
            wait(client, &path, &[("commit", &commit)], &timeout).await
        }
    }
}

async fn control(client: &ApiClient, project: &str, action: &str) -> anyhow::Result<Printed> {
    let r: api::RolloutView = client
        .post_as(
            &format!("/api/v1/projects/{}/rollout/{action}", segment(project)),
            &serde_json::Map::new(),
        )
        .await?;
    let text = format!("{action}: {} ({})\n", r.summary, r.commit);
    printed(&r, text)
}

fn show_text(r: &api::RolloutView) -> anyhow::Result<String> {
    let mut text = format!(
        "rollout of {} @ {}: {}{}\n{}\n",
        r.project,
        r.commit,
        r.phase,
        if r.paused { " (paused)" } else { "" },
        r.summary
    );
    if let Some(f) = &r.failure {
        text.push_str(&format!(
            "failed: wave {}, agent {}{}: {}\n",
            f.wave,
            f.agent,
            f.object
                .as_ref()
                .map(|o| format!(", {o}"))
                .unwrap_or_default(),
            f.message
        ));
    }
    if !r.message.is_empty() && r.failure.is_none() {
        text.push_str(&format!("{}\n", r.message));
    }
    text.push_str(&format!(
        "on_failure: {}, agent_timeout: {}s, started {}{}\n\n",
        r.on_failure,
        r.agent_timeout_seconds,
        r.started_at,
        r.ended_at
            .as_ref()
            .map(|e| format!(", ended {e}"))
            .unwrap_or_default()
    ));
    #[derive(serde::Serialize)]
    struct Wave<'a> {
        name: &'a str,
        phase: &'a str,
        agents: usize,
        max_parallel: usize,
        soak: String,
        started_at: &'a Option<String>,
        ended_at: &'a Option<String>,
    }
    let waves: Vec<Wave> = r
        .waves
        .iter()
        .map(|w| Wave {
            name: &w.name,
            phase: &w.phase,
            agents: w.agents.len(),
            max_parallel: w.max_parallel,
            soak: match w.soak_left_seconds {
                Some(left) => format!("{}s ({left}s left)", w.soak_seconds),
                None => format!("{}s", w.soak_seconds),
            },
            started_at: &w.started_at,
            ended_at: &w.ended_at,
        })
        .collect();
    text.push_str(&table(
        &waves,
        &[
            "name",
            "phase",
            "agents",
            "max_parallel",
            "soak",
            "started_at",
            "ended_at",
        ],
    )?);
    text.push('\n');
    #[derive(serde::Serialize)]
    struct Agent<'a> {
        agent: &'a str,
        wave: &'a str,
        phase: &'a str,
        commit: String,
        why: &'a str,
    }
    let agents: Vec<Agent> = r
        .agents
        .iter()
        .map(|a| Agent {
            agent: &a.name,
            wave: a.wave.as_deref().unwrap_or("-"),
            phase: &a.phase,
            commit: a
                .commit
                .as_deref()
                .or(a.from.as_deref())
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_else(|| "-".to_owned()),
            why: &a.message,
        })
        .collect();
    text.push_str(&table(
        &agents,
        &["agent", "wave", "phase", "commit", "why"],
    )?);
    Ok(text)
}

/// Long-polls `path` until the outcome is known or `timeout` is over; a
/// kas that cannot be reached (a replica restarting) is asked again.
pub(crate) async fn wait(
    client: &ApiClient,
    path: &str,
    params: &[(&str, &str)],
    timeout: &str,
) -> anyhow::Result<Printed> {
    let timeout = tether_agent_config::parse_duration(timeout)
        .map_err(|e| anyhow::anyhow!("--timeout {timeout}: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let query: String = params
        .iter()
        .map(|(k, v)| format!("{k}={}", segment(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let said = last
                .map(|w: api::WaitView| w.message)
                .unwrap_or_else(|| "no answer".to_owned());
            return Err(WaitEnded {
                code: EXIT_TIMED_OUT,
                message: format!("timed out after {}s: {said}", timeout.as_secs()),
            }
            .into());
        }
        let seconds = left.as_secs().clamp(1, 60);
        let answer: anyhow::Result<api::WaitView> = client
            .get_as(&format!("{path}?{query}&timeout={seconds}"))
            .await;
        let view = match answer {
            Ok(view) => view,
            Err(e) if e.to_string().contains("cannot reach kas") => {
                eprintln!("{e:#}; asking again");
                tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = describe(&view);
        let code = match view.outcome.as_str() {
            "done" => return printed(&view, format!("{line}\n")),
            "pending" => {
                last = Some(view);
                continue;
            }
            "failed" => EXIT_FAILED,
            "halted" => EXIT_HALTED,
            "superseded" => EXIT_SUPERSEDED,
            other => anyhow::bail!("kas answered the wait with {other:?}"),
        };
        return Err(WaitEnded {
            code,
            message: line,
        }
        .into());
    }
}

fn describe(view: &api::WaitView) -> String {
    let mut line = view.outcome.clone();
    if let Some(agent) = &view.agent {
        line.push_str(&format!(": agent {agent}"));
    }
    if let Some(object) = &view.object {
        line.push_str(&format!(": {object}"));
    }
    if !view.message.is_empty() {
        line.push_str(&format!(": {}", view.message));
    }
    line
}

pub(crate) async fn label(
    client: &ApiClient,
    name: &str,
    changes: &[String],
) -> anyhow::Result<Printed> {
    let parsed = tether_agent_config::labels::parse_changes(changes)?;
    let body = api::LabelChanges {
        set: parsed.set,
        remove: parsed.remove,
    };
    let a: api::AgentView = client
        .patch_as(&format!("/api/v1/agents/{}/labels", segment(name)), &body)
        .await?;
    let text = format!("agent {name} labels: {}\n", labels_text(&a.labels));
    printed(&a, text)
}

pub(crate) fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    match labels.is_empty() {
        true => "-".to_owned(),
        false => labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

pub(crate) async fn pin(
    client: &ApiClient,
    name: &str,
    project: &str,
    commit: &str,
) -> anyhow::Result<Printed> {
    let pin: api::PinView = client
        .put_as(
            &format!("/api/v1/agents/{}/pins/{}", segment(name), segment(project)),
            &api::PinRequest {
                commit: commit.to_owned(),
            },
        )
        .await?;
    let text = format!(
        "agent {name} is held on {} of {project}; rollouts skip it until `kas agent unpin`\n",
        pin.commit
    );
    printed(&pin, text)
}

pub(crate) async fn unpin(
    client: &ApiClient,
    name: &str,
    project: &str,
) -> anyhow::Result<Printed> {
    client
        .delete(&format!(
            "/api/v1/agents/{}/pins/{}",
            segment(name),
            segment(project)
        ))
        .await?;
    Ok(said(format!(
        "agent {name} follows {project} again (its rollout decides its commit)\n"
    )))
}
