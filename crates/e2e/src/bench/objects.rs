//! The benchmarks' standard manifests (ConfigMaps, Secrets, Services and
//! Deployments in files of 100) and the API server's own request counts.

use std::collections::BTreeMap;

/// `objects` objects in files of 100: 40 % ConfigMaps, 20 % Secrets,
/// 20 % Services, 20 % Deployments; `revision` is in every ConfigMap, so
/// a new revision changes those. Object `i` keeps its name across sizes,
/// so a smaller set is the larger one with objects removed.
pub fn files(objects: usize, revision: usize) -> Vec<String> {
    files_of(objects, revision, true)
}

/// As [`files`], with ServiceAccounts in place of the Deployments when
/// `deployments` is false: a set whose health is known the moment it is
/// applied, so that engines are compared and not the scheduler.
pub fn files_of(objects: usize, revision: usize, deployments: bool) -> Vec<String> {
    let mut files = vec![String::new(); objects.div_ceil(100).max(1)];
    let count = files.len();
    for i in 0..objects {
        let doc = match i % 5 {
            0 | 1 => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{index: \"{i}\", revision: \"{revision}\"}}\n"
            ),
            2 => format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{i}}}\nstringData: {{token: \"value-{i}\"}}\n"
            ),
            3 => format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80}}]\n"
            ),
            _ if !deployments => {
                format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}}}\n")
            }
            _ => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec: {{containers: [{{name: app, image: nginx}}]}}\n"
            ),
        };
        let file = &mut files[i % count];
        if !file.is_empty() {
            file.push_str("---\n");
        }
        file.push_str(&doc);
    }
    files
}

/// apiserver_request_total for the resources both tools touch, summed by
/// verb. Controllers write only these resources' status (excluded), so the
/// difference between two readings is the tools' own requests.
pub async fn request_counts(client: &kube::Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let resource = label("resource");
        if ![
            "configmaps",
            "secrets",
            "services",
            "deployments",
            "serviceaccounts",
        ]
        .contains(&resource.as_str())
            || !label("subresource").is_empty()
        {
            continue;
        }
        *counts.entry(label("verb")).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(verb, n)| (verb.clone(), n - before.get(verb).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// Requests that change something, of a [`delta`].
pub fn mutating(delta: &BTreeMap<String, f64>) -> u64 {
    [
        "APPLY", "PATCH", "POST", "PUT", "DELETE", "CREATE", "UPDATE",
    ]
    .iter()
    .filter_map(|v| delta.get(*v))
    .map(|n| *n as u64)
    .sum()
}
