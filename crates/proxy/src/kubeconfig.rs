//! The kubeconfig that points kubectl at the proxy for one agent: the
//! proxy's URL and CA, the credential in the GitLab agent's form, and a
//! context named `<config project>:<agent>`.

use serde_json::json;
use tether_agent_config::AgentName;

/// What a kubeconfig holds.
#[derive(Debug)]
pub struct KubeconfigSpec<'a> {
    pub server: &'a str,
    pub ca_pem: Option<&'a str>,
    pub agent: &'a AgentName,
    pub config_project: &'a str,
    /// `ci:<agent>:<token>` or `pat:<agent>:<token>`.
    pub bearer: &'a str,
    pub namespace: Option<&'a str>,
}

/// The kubeconfig, as YAML.
pub fn render(spec: &KubeconfigSpec<'_>) -> String {
    use base64::Engine as _;
    let name = format!("{}:{}", spec.config_project, spec.agent);
    let mut cluster = json!({ "server": spec.server });
    if let Some(ca) = spec.ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let mut context = json!({ "cluster": name, "user": name });
    if let Some(ns) = spec.namespace {
        context["namespace"] = ns.into();
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": cluster }],
        "users": [{ "name": name, "user": { "token": spec.bearer } }],
        "contexts": [{ "name": name, "context": context }],
        "current-context": name,
    });
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_context_after_project_and_agent() {
        let yaml = render(&KubeconfigSpec {
            server: "https://kas:8154/k8s-proxy",
            ca_pem: Some("PEM"),
            agent: &AgentName::new("prod").expect("valid"),
            config_project: "team/config",
            bearer: "pat:prod:tthr_user_x",
            namespace: Some("apps"),
        });
        let value: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
        assert_eq!(value["current-context"], "team/config:prod");
        assert_eq!(value["users"][0]["user"]["token"], "pat:prod:tthr_user_x");
        assert_eq!(value["contexts"][0]["context"]["namespace"], "apps");
        assert_eq!(
            value["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
    }
}
