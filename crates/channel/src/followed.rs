//! kas's projects as image automation and the rollout driver see them: listed from the store,
//! their heads read from the pollers (each project followed from its first
//! look on, so its poller runs while the automation needs it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tether_git::{CommitId, Source};
use tether_store::Store;
use tokio::sync::watch;

use crate::repos::{Head, Repos};

/// [`tether_images::service::Projects`] over the store and the pollers.
pub struct Followed {
    store: Arc<dyn Store>,
    repos: Arc<Repos>,
    /// One receiver per project keeps its poller running.
    heads: Mutex<HashMap<String, watch::Receiver<Head>>>,
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed").finish_non_exhaustive()
    }
}

impl Followed {
    pub fn new(store: Arc<dyn Store>, repos: Arc<Repos>) -> Self {
        Followed {
            store,
            repos,
            heads: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl tether_images::service::Projects for Followed {
    async fn list(&self) -> Result<Vec<tether_store::Project>, tether_store::StoreError> {
        let projects = self.store.list_projects().await?;
        // A deleted project's poller is let go.
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.retain(|id, _| projects.iter().any(|p| &p.id == id));
        Ok(projects)
    }

    async fn head(&self, project: &str) -> Option<(CommitId, Source)> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = heads
            .entry(project.to_owned())
            .or_insert_with(|| self.repos.subscribe(project));
        let head = receiver.borrow();
        Some((head.commit.clone()?, head.source.clone()?))
    }

    async fn refresh(&self, project: &str) {
        if let Err(e) = self.repos.refresh(project).await {
            tracing::warn!(project, error = %e, "cannot poll the project after an image update");
        }
    }
}

#[async_trait]
impl tether_rollouts::driver::Heads for Followed {
    async fn projects(&self) -> Result<Vec<tether_store::Project>, tether_store::StoreError> {
        tether_images::service::Projects::list(self).await
    }

    async fn head(&self, project: &str) -> Option<(CommitId, Source)> {
        tether_images::service::Projects::head(self, project).await
    }
}
