//! `agentk generate`: the objects that install agentk in a cluster, so that
//! `agentk generate … | kubectl apply -f -` is the whole installation.
//!
//! By default the agent's ServiceAccount is bound to `cluster-admin`, as the
//! GitLab agent's install is; `--rbac namespaced --namespaces a,b` instead
//! grants full rights only inside those namespaces. The Deployment runs as
//! non-root with a read-only root filesystem and no capabilities.

use serde_json::{Value, json};

/// The observability port: `/liveness`, `/readiness` (the probes) and, later,
/// `/metrics`.
pub const OBSERVABILITY_PORT: u16 = 8080;
const TOKEN_DIR: &str = "/etc/agentk/token";
const CA_DIR: &str = "/etc/agentk/ca";

/// What `agentk generate` renders.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub name: String,
    pub namespace: String,
    pub kas_address: String,
    pub token: String,
    pub image: String,
    pub version: String,
    pub rbac: Rbac,
    /// PEM of a private CA that signed kas's certificate.
    pub ca_cert: Option<String>,
    /// Pods of the Deployment: each keeps a session and tunnels (proxy
    /// capacity); the holder of the GitOps Lease alone applies.
    pub replicas: u32,
}

/// The rights the agent gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rbac {
    ClusterAdmin,
    /// Full rights only in these namespaces.
    Namespaced(Vec<String>),
}

/// The install, as Kubernetes objects in apply order.
pub fn manifests(o: &InstallOptions) -> Vec<Value> {
    let labels = json!({
        "app.kubernetes.io/name": "agentk",
        "app.kubernetes.io/instance": o.name,
        "app.kubernetes.io/part-of": "tether",
    });
    let meta = |name: &str, namespace: Option<&str>| {
        let mut m = json!({ "name": name, "labels": labels });
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        m
    };
    let subject = json!([{ "kind": "ServiceAccount", "name": o.name, "namespace": o.namespace }]);
    let token_secret = format!("{}-token", o.name);
    let ca_secret = format!("{}-ca", o.name);

    let mut objects = vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": meta(&o.namespace, None) }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&o.name, Some(&o.namespace)) }),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(&token_secret, Some(&o.namespace)),
            "stringData": { "token": o.token },
        }),
    ];
    if let Some(ca) = &o.ca_cert {
        objects.push(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(&ca_secret, Some(&o.namespace)),
            "stringData": { "ca.crt": ca },
        }));
    }
    match &o.rbac {
        Rbac::ClusterAdmin => objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(&format!("{}-{}", o.name, o.namespace), None),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
            "subjects": subject,
        })),
        Rbac::Namespaced(namespaces) => {
            // Its own namespace too: leader election and events live there.
            let mut all: Vec<&str> = vec![o.namespace.as_str()];
            all.extend(namespaces.iter().map(String::as_str).filter(|n| *n != o.namespace));
            for ns in all {
                if ns != o.namespace {
                    objects.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None) }));
                }
                objects.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": meta(&o.name, Some(ns)),
                    "rules": [{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }],
                }));
                objects.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": meta(&o.name, Some(ns)),
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": o.name },
                    "subjects": subject,
                }));
            }
        }
    }
    objects.push(deployment(
        o,
        &labels,
        meta(&o.name, Some(&o.namespace)),
        &token_secret,
        &ca_secret,
    ));
    objects
}

fn deployment(
    o: &InstallOptions,
    labels: &Value,
    metadata: Value,
    token_secret: &str,
    ca_secret: &str,
) -> Value {
    let mut args = vec![
        format!("--kas-address={}", o.kas_address),
        format!("--token-file={TOKEN_DIR}/token"),
        format!("--observability-listen=0.0.0.0:{OBSERVABILITY_PORT}"),
    ];
    let mut mounts = vec![json!({ "name": "token", "mountPath": TOKEN_DIR, "readOnly": true })];
    let mut volumes = vec![
        json!({ "name": "token", "secret": { "secretName": token_secret, "defaultMode": 0o400 } }),
    ];
    if o.ca_cert.is_some() {
        args.push(format!("--ca-cert={CA_DIR}/ca.crt"));
        mounts.push(json!({ "name": "ca", "mountPath": CA_DIR, "readOnly": true }));
        volumes.push(
            json!({ "name": "ca", "secret": { "secretName": ca_secret, "defaultMode": 0o444 } }),
        );
    }
    let probe = |path: &str| {
        json!({
            "httpGet": { "path": path, "port": "observability" },
            "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 2,
        })
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": o.replicas,
            // Never more pods than asked during a rollout, as the GitLab agent.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 } },
            "selector": { "matchLabels": { "app.kubernetes.io/name": "agentk", "app.kubernetes.io/instance": o.name } },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": OBSERVABILITY_PORT.to_string(),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": o.name,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "agentk",
                        "image": format!("{}:{}", o.image, o.version),
                        "args": args,
                        "env": [
                            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                        ],
                        "ports": [{ "name": "observability", "containerPort": OBSERVABILITY_PORT }],
                        "livenessProbe": probe("/liveness"),
                        "readinessProbe": probe("/readiness"),
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "128Mi" },
                            "limits": { "memory": "256Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// The objects as one multi-document YAML stream.
pub fn render_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rbac: Rbac) -> InstallOptions {
        InstallOptions {
            name: "agentk".into(),
            namespace: "tether-agent".into(),
            kas_address: "grpcs://kas.example.com:8152".into(),
            token: "tthr_agent_x".into(),
            image: "tether/agentk".into(),
            version: "0.1.0".into(),
            rbac,
            ca_cert: None,
            replicas: 1,
        }
    }

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn the_default_install_binds_cluster_admin() {
        let objects = manifests(&options(Rbac::ClusterAdmin));
        assert_eq!(
            kinds(&objects),
            [
                "Namespace",
                "ServiceAccount",
                "Secret",
                "ClusterRoleBinding",
                "Deployment"
            ]
        );
        assert_eq!(objects[3]["roleRef"]["name"], "cluster-admin");
    }

    #[test]
    fn the_namespaced_install_grants_nothing_cluster_wide() {
        let objects = manifests(&options(Rbac::Namespaced(vec!["a".into(), "b".into()])));
        let k = kinds(&objects);
        assert!(!k.iter().any(|k| k.starts_with("Cluster")), "{k:?}");
        let role_namespaces: Vec<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Role")
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect();
        assert_eq!(role_namespaces, ["tether-agent", "a", "b"]);
    }

    #[test]
    fn replicas_are_the_deployments() {
        let objects = manifests(&InstallOptions {
            replicas: 3,
            ..options(Rbac::ClusterAdmin)
        });
        let deploy = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("a Deployment");
        assert_eq!(deploy["spec"]["replicas"], 3);
    }

    #[test]
    fn the_deployment_is_locked_down_and_reads_the_token_from_a_file() {
        let objects = manifests(&options(Rbac::ClusterAdmin));
        let deploy = objects.last().expect("deployment");
        let container = &deploy["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/liveness");
        let args = container["args"].to_string();
        assert!(
            args.contains("--token-file=/etc/agentk/token/token"),
            "{args}"
        );
        // The token is in the Secret only, never in the Deployment.
        assert!(!deploy.to_string().contains("tthr_agent_x"));
        assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);
    }

    #[test]
    fn renders_a_yaml_stream() {
        let yaml = render_yaml(&manifests(&options(Rbac::ClusterAdmin))).expect("renders");
        assert_eq!(yaml.matches("---\n").count(), 5);
        assert!(yaml.contains("kind: Deployment"));
    }
}
