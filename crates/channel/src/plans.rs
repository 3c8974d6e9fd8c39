//! Plans asked of agents: kas sends a commit's files to one of the agent's
//! sessions here, the agent dry-runs them against its cluster and answers
//! once. Pending plans are bounded, each waits with a deadline, and an
//! answer is taken only from the agent it was asked of.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_proto::v1::{self, ServerMessage, server_message};
use tokio::sync::oneshot;

use crate::outbound::{self, Outbound};

/// Plans waiting for their answer at once, service-wide.
const MAX_WAITING: usize = 64;

/// Why no plan came back.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("agent {0} has no session on this kas")]
    NotConnected(String),
    #[error("{0} plans are waiting already; try again shortly")]
    Busy(usize),
    #[error("agent {agent} did not answer within {timeout:?}")]
    Timeout { agent: String, timeout: Duration },
    #[error("the agent's session ended: {0}")]
    Gone(String),
}

struct Waiting {
    agent: String,
    answer: oneshot::Sender<v1::PlanReport>,
}

/// Sessions that can take a plan, and plans waiting for an answer.
#[derive(Default)]
pub struct Plans {
    next: AtomicU64,
    sessions: Mutex<HashMap<u64, (String, Outbound)>>,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plans").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's place among those that take plans; dropped with it.
pub struct PlanSlot {
    plans: Arc<Plans>,
    id: u64,
}

impl std::fmt::Debug for PlanSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanSlot").field("id", &self.id).finish()
    }
}

impl Drop for PlanSlot {
    fn drop(&mut self) {
        lock(&self.plans.sessions).remove(&self.id);
    }
}

impl Plans {
    /// Lets `agent`'s session (its outbound queue `tx`) take plans.
    pub fn open(self: &Arc<Self>, agent: &str, tx: Outbound) -> PlanSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, (agent.to_owned(), tx));
        PlanSlot {
            plans: self.clone(),
            id,
        }
    }

    /// An answer from `agent`'s session: taken if it answers a plan asked
    /// of that agent, dropped otherwise.
    pub fn answered(&self, agent: &str, report: v1::PlanReport) {
        let mut waiting = lock(&self.waiting);
        match waiting.get(&report.plan_id) {
            Some(w) if w.agent == agent => {
                if let Some(w) = waiting.remove(&report.plan_id) {
                    let _ = w.answer.send(report);
                }
            }
            _ => tracing::warn!(
                plan = report.plan_id,
                "a plan answer nobody asked this agent for: dropped"
            ),
        }
    }

    /// Asks `agent` what `files` (of `project` at `commit`) would change.
    pub async fn ask(
        &self,
        agent: &str,
        project: &str,
        commit: &str,
        files: Vec<v1::ManifestFile>,
        timeout: Duration,
    ) -> Result<v1::PlanReport, PlanError> {
        let tx = lock(&self.sessions)
            .values()
            .find(|(a, _)| a == agent)
            .map(|(_, tx)| tx.clone())
            .ok_or_else(|| PlanError::NotConnected(agent.to_owned()))?;
        let plan_id = self.next.fetch_add(1, Ordering::Relaxed) + (1 << 40);
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= MAX_WAITING {
                return Err(PlanError::Busy(waiting.len()));
            }
            waiting.insert(
                plan_id,
                Waiting {
                    agent: agent.to_owned(),
                    answer,
                },
            );
        }
        let outcome = async {
            for message in requests(plan_id, project, commit, files) {
                outbound::send(&tx, message)
                    .await
                    .map_err(|e| PlanError::Gone(e.to_string()))?;
            }
            answered
                .await
                .map_err(|_| PlanError::Gone("no answer".into()))
        };
        let result = tokio::time::timeout(timeout, outcome).await;
        lock(&self.waiting).remove(&plan_id);
        result.map_err(|_| PlanError::Timeout {
            agent: agent.to_owned(),
            timeout,
        })?
    }
}

/// The request in messages of about [`CHUNK_BYTES`]; the last is marked.
fn requests(
    plan_id: u64,
    project: &str,
    commit: &str,
    files: Vec<v1::ManifestFile>,
) -> Vec<ServerMessage> {
    let groups = crate::manifests::by_size(files);
    let last = groups.len() - 1;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, files)| ServerMessage {
            message: Some(server_message::Message::PlanRequest(v1::PlanRequest {
                plan_id,
                project_id: project.to_owned(),
                commit_id: commit.to_owned(),
                files,
                chunk: u32::try_from(i).unwrap_or(u32::MAX),
                last: i == last,
            })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_counts_only_from_the_agent_asked() {
        let plans = Arc::new(Plans::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let _slot = plans.open("prod", tx);
        let asking = {
            let plans = plans.clone();
            tokio::spawn(async move {
                plans
                    .ask("prod", "team/x", "abc", Vec::new(), Duration::from_secs(5))
                    .await
            })
        };
        let Some(Ok(ServerMessage {
            message: Some(server_message::Message::PlanRequest(request)),
        })) = rx.recv().await
        else {
            panic!("a plan request")
        };
        assert!(request.last && request.project_id == "team/x");
        let report = |error: &str| v1::PlanReport {
            plan_id: request.plan_id,
            error: error.into(),
            ..Default::default()
        };
        plans.answered("other", report("forged"));
        plans.answered("prod", report("real"));
        let answer = asking.await.expect("task").expect("answered");
        assert_eq!(answer.error, "real");
        assert!(matches!(
            plans
                .ask("nobody", "p", "c", Vec::new(), Duration::from_secs(1))
                .await,
            Err(PlanError::NotConnected(_))
        ));
    }
}
