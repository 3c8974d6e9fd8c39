//! kas, agentk and a real git host wired as a team would wire them: the
//! repository lives on Gitea, kas reads it over HTTP and polls only once an
//! hour, and Gitea's push webhook (signed with the project's webhook
//! secret) tells kas when to read. Shared by the webhook test and bench.

use std::path::PathBuf;

use tether_testenv::git::git;
use tether_testenv::gitea::GitHost;

use crate::{Proc, Setup, commit, new_repo};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const REPO: &str = "config";

/// Agent `prod` syncing `manifests/` of Gitea repository `tether/config`.
pub struct Pipeline {
    pub setup: Setup,
    /// The working copy pushes are made from.
    pub local: PathBuf,
    /// The project's webhook secret.
    pub secret: String,
    _agentk: Proc,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The repository with a ConfigMap `pushed` (value 0) in `ns`, agent
    /// `prod` connected, and the project's webhook secret created (no hook
    /// in Gitea yet: see [`Pipeline::add_hook`]).
    pub fn start(host: &GitHost, ns: &str) -> Self {
        let mut setup = Setup::start_with(&["--poll-interval", "1h"]);
        setup.pod_namespace = ns.to_owned();
        host.create_repo(REPO).expect("repository");
        let local = setup.dir.path().join("local");
        new_repo(&local);
        let config = format!(
            "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
        );
        commit(
            &local,
            &[
                (CONFIG, Some(config.as_str())),
                ("manifests/pushed.yaml", Some(&configmap(0))),
            ],
        );
        git(&local, &["remote", "add", "origin", &host.push_url(REPO)]);
        git(&local, &["push", "-q", "-u", "origin", "main"]);
        let token = setup.register_agent_in("prod", &host.clone_url(REPO));
        let created = setup
            .cli(&["project", "webhook", "create", "team/config", "-o", "json"])
            .expect("webhook secret");
        let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
        let secret = created["secret"].as_str().expect("secret").to_owned();
        let agentk = setup.agentk(&token);
        Pipeline {
            setup,
            local,
            secret,
            _agentk: agentk,
        }
    }

    /// A Gitea push webhook to kas signed with `secret`; its id.
    pub fn add_hook(&self, host: &GitHost, secret: &str) -> u64 {
        let url = format!(
            "{}/api/v1/projects/team%2Fconfig/hooks/gitea",
            self.setup.api
        );
        let hook = host
            .api(
                "POST",
                &format!("/api/v1/repos/{}/{REPO}/hooks", tether_testenv::gitea::USER),
                Some(&serde_json::json!({
                    "type": "gitea",
                    "active": true,
                    "events": ["push"],
                    "config": { "url": url, "content_type": "json", "secret": secret },
                })),
            )
            .expect("hook");
        hook["id"].as_u64().expect("hook id")
    }

    /// Commits ConfigMap `pushed` with `value` and pushes it to Gitea.
    pub fn push_value(&self, value: u64) -> String {
        let at = commit(
            &self.local,
            &[("manifests/pushed.yaml", Some(&configmap(value)))],
        );
        git(&self.local, &["push", "-q", "origin", "main"]);
        at
    }

    /// Makes kas post commit statuses to Gitea with a token of its own.
    pub fn post_statuses(&self, host: &GitHost) {
        let token = host.create_token("kas-statuses").expect("token");
        self.setup.set_status_target(
            "gitea",
            &format!("{}/api/v1", host.url()),
            &format!("{}/{REPO}", tether_testenv::gitea::USER),
            &token,
        );
    }

    /// The commit statuses Gitea holds for `commit`: (context, state).
    pub fn statuses(&self, host: &GitHost, commit: &str) -> Vec<(String, String)> {
        let list = host
            .api(
                "GET",
                &format!(
                    "/api/v1/repos/{}/{REPO}/commits/{commit}/statuses",
                    tether_testenv::gitea::USER
                ),
                None,
            )
            .unwrap_or_default();
        list.as_array()
            .map(|statuses| {
                statuses
                    .iter()
                    .map(|s| {
                        (
                            s["context"].as_str().unwrap_or_default().to_owned(),
                            s["status"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The commit last pushed.
    pub fn head(&self) -> String {
        git(&self.local, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

fn configmap(value: u64) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pushed}}\ndata: {{value: '{value}'}}\n"
    )
}
