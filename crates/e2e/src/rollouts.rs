//! What the rollout tests share: agents each in a namespace of its own,
//! their config files, and the one ConfigMap whose version says which
//! commit an agent's cluster runs.

use std::path::Path;

/// A namespace of the shared cluster for each of `agents`, named after it.
pub async fn namespaces(prefix: &str, agents: &[(&str, &str)]) -> Vec<String> {
    let cluster = tether_testenv::shared();
    let mut namespaces = Vec::new();
    for (name, _) in agents {
        let ns = cluster
            .namespace(&format!("{prefix}-{name}"))
            .await
            .expect("namespace");
        namespaces.push(ns.name().to_owned());
    }
    namespaces
}

/// Commits to `repo` a config for each agent: manifest project
/// `team/apps`, its objects in the agent's namespace, and `extra` (more
/// YAML at the top level).
pub fn commit_configs(repo: &Path, agents: &[(&str, &str)], namespaces: &[String], extra: &str) {
    let files: Vec<(String, String)> = agents
        .iter()
        .zip(namespaces)
        .map(|((name, _), ns)| {
            (
                format!(".gitlab/agents/{name}/config.yaml"),
                format!(
                    "gitops:\n  manifest_projects:\n  - id: team/apps\n    default_namespace: {ns}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n{extra}"
                ),
            )
        })
        .collect();
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    tether_testenv::git::commit(repo, &files);
}

/// ConfigMap `web`, its data saying `version`.
pub fn config_map(version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web}}\ndata: {{version: \"{version}\"}}\n"
    )
}

/// The `version` of ConfigMap `web` in `ns`, if there is one.
pub fn version_in(ns: &str) -> Option<String> {
    let cm = crate::kubectl_get(&["configmap", "web", "-n", ns])?;
    cm["data"]["version"].as_str().map(str::to_owned)
}
