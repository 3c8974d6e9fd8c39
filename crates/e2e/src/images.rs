//! Image automation as a team wires it, shared by its tests and bench: the
//! repository on Gitea, kas reading it and allowed to push with a Gitea
//! token, agent `prod` applying `deploy/*.yaml`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tether_testenv::git::git;
use tether_testenv::gitea::GitHost;

use crate::{Proc, Setup, commit, kubectl_get, new_repo};

const REPO: &str = "config";
const CONFIG: &str = ".gitlab/agents/prod/config.yaml";

/// A Deployment `name` running `image`, its image marked for `policy`.
pub fn deployment(name: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: {name}\n          image: \"{image}\" # {{\"$imagepolicy\": \"{policy}\"}}\n"
    )
}

/// A team's repository on Gitea, kas reading it, agent `prod` applying
/// `deploy/*.yaml`, kas allowed to push with a Gitea token.
#[derive(Debug)]
pub struct World {
    pub setup: Setup,
    pub local: PathBuf,
    _agentk: Proc,
}

impl World {
    /// `files` committed beside the agent's config; kas started with the
    /// registry hook secret in `hook_secret` and `extra` flags (scans every
    /// hour unless they say otherwise).
    pub fn start(
        host: &GitHost,
        ns: &str,
        files: &[(&str, &str)],
        hook_secret: &Path,
        extra: &[&str],
    ) -> World {
        let mut args = vec![
            "--poll-interval",
            "1h",
            "--egress-allow",
            "127.0.0.1",
            "--registry-hook-secret-file",
            hook_secret.to_str().expect("utf-8"),
        ];
        if !extra.contains(&"--image-scan-interval") {
            args.extend(["--image-scan-interval", "1h"]);
        }
        args.extend(extra);
        let mut setup = Setup::start_with(&args);
        setup.pod_namespace = ns.to_owned();
        host.create_repo(REPO).expect("repository");
        let local = setup.dir.path().join("local");
        new_repo(&local);
        let config = format!(
            "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    paths: [{{glob: 'deploy/*.yaml'}}]\n"
        );
        let mut changes: Vec<(&str, Option<&str>)> = vec![(CONFIG, Some(config.as_str()))];
        changes.extend(files.iter().map(|(path, text)| (*path, Some(*text))));
        commit(&local, &changes);
        git(&local, &["remote", "add", "origin", &host.push_url(REPO)]);
        git(&local, &["push", "-q", "-u", "origin", "main"]);
        let token = setup.register_agent_in("prod", &host.clone_url(REPO));
        let push_token = setup.dir.path().join("push-token");
        std::fs::write(
            &push_token,
            host.create_token("kas-image-updates").expect("token"),
        )
        .expect("token file");
        setup
            .cli(&[
                "project",
                "push-credentials",
                "team/config",
                "--token-file",
                push_token.to_str().expect("utf-8"),
            ])
            .expect("push credentials");
        let agentk = setup.agentk(&token);
        World {
            setup,
            local,
            _agentk: agentk,
        }
    }

    pub fn images(&self) -> Vec<Value> {
        self.setup
            .cli(&["image", "list", "-o", "json"])
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// The first project's error, `""` when none.
    pub fn error(&self) -> String {
        self.images()
            .first()
            .and_then(|p| p["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn policy(&self, name: &str) -> Value {
        self.images()
            .iter()
            .flat_map(|p| p["policies"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name)
            .unwrap_or_default()
    }

    /// Gitea's `main`, fetched into the working copy.
    pub fn pull(&self) -> String {
        git(&self.local, &["pull", "-q", "--ff-only", "origin", "main"]);
        git(&self.local, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub fn remote_head(&self) -> String {
        let out = git(&self.local, &["ls-remote", "origin", "refs/heads/main"]);
        out.split_whitespace().next().unwrap_or_default().to_owned()
    }
}

/// The image of Deployment `name` in `ns`, as the cluster holds it.
pub fn image_of(ns: &str, name: &str) -> Option<String> {
    let deployment = kubectl_get(&["deployment", name, "-n", ns])?;
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .map(str::to_owned)
}

/// A registry hook secret, in a file of `dir`.
pub fn secret_file(dir: &Path) -> (PathBuf, String) {
    let secret = "registry-hook-secret-0123456789".to_owned();
    let file = dir.join("registry-hook-secret");
    std::fs::write(&file, &secret).expect("secret file");
    (file, secret)
}
