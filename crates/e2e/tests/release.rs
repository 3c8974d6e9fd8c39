//! A release manifest shaped like the ones platform teams deploy
//! (cert-manager's, prometheus-operator's, ingress-nginx's): one file of
//! 50+ objects of 20 kinds, RBAC names with `:` and `_`, a CRD over 800 KB
//! (too large for client-side apply's annotation), CRDs with their custom
//! resources in the same commit, admission webhooks, a Job and a
//! LoadBalancer Service. Through kas and agentk (processes) into the real
//! cluster; then `kubectl diff --server-side` of the same files under
//! another field manager must find nothing to change, and removing the
//! files must prune every object.

use tether_e2e as support;

use std::fmt::Write as _;
use std::time::Duration;

use support::{Setup, commit, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const RELEASE: &str = "deploy/release.yaml";
/// The size the large CRD is grown to, as cert-manager's and
/// prometheus-operator's largest CRDs are.
const LARGE_CRD_BYTES: usize = 820 * 1024;

/// Every object of the release, as `(kind, namespace, name)` for kubectl.
struct Release {
    yaml: String,
    objects: Vec<(String, Option<String>, String)>,
}

fn release(ns: &str) -> Release {
    let system = format!("{ns}-system");
    let kind: String = ns.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut docs: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    let mut add = |resource: &str, namespace: Option<&str>, name: &str, doc: String| {
        objects.push((
            resource.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        ));
        docs.push(doc);
    };

    add(
        "namespace",
        None,
        &system,
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {system}\n"),
    );
    // The large CRD and a ServiceMonitor-like one, each with a custom
    // resource in the same file.
    let certificates = format!("certificates{kind}.release.tether.test");
    add("crd", None, &certificates, large_crd(&kind));
    let monitors = format!("servicemonitors{kind}.monitoring.tether.test");
    add(
        "crd",
        None,
        &monitors,
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {monitors}
spec:
  group: monitoring.tether.test
  scope: Namespaced
  names: {{plural: servicemonitors{kind}, singular: servicemonitor{kind}, kind: ServiceMonitor{kind}, listKind: ServiceMonitor{kind}List}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              selector: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
              endpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {{type: string}}
                    interval: {{type: string}}
"#
        ),
    );
    add(
        &certificates,
        Some(&system),
        "serving-cert",
        format!(
            "apiVersion: release.tether.test/v1\nkind: Certificate{kind}\nmetadata:\n  name: serving-cert\n  namespace: {system}\nspec:\n  field0: webhook.{system}.svc\n  field1: tls-secret\n"
        ),
    );
    add(
        &monitors,
        Some(&system),
        "controller",
        format!(
            "apiVersion: monitoring.tether.test/v1\nkind: ServiceMonitor{kind}\nmetadata:\n  name: controller\n  namespace: {system}\nspec:\n  selector:\n    matchLabels: {{app: controller}}\n  endpoints:\n  - port: http-metrics\n    interval: 30s\n"
        ),
    );
    for sa in [
        "controller",
        "cainjector",
        "webhook",
        "startupapicheck",
        "metrics",
    ] {
        add(
            "serviceaccount",
            Some(&system),
            sa,
            format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {system}\n  labels: {{app: {sa}}}\n"
            ),
        );
    }
    // RBAC named as cert-manager names it: `<component>:<purpose>`, plus
    // one with `_` and one with both.
    let cluster_roles = [
        format!("{ns}-controller:issuers"),
        format!("{ns}-controller:certificates"),
        format!("{ns}-cainjector"),
        format!("{ns}-webhook:subjectaccessreviews"),
        format!("{ns}-metrics_reader"),
        format!("{ns}-view_edit:aggregate"),
    ];
    for name in &cluster_roles {
        add(
            "clusterrole",
            None,
            name,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: \"{name}\"\nrules:\n- apiGroups: [\"release.tether.test\"]\n  resources: [\"certificates{kind}\"]\n  verbs: [\"get\", \"list\", \"watch\"]\n"
            ),
        );
        add(
            "clusterrolebinding",
            None,
            name,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: \"{name}\"\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: \"{name}\"\nsubjects:\n- kind: ServiceAccount\n  name: controller\n  namespace: {system}\n"
            ),
        );
    }
    for name in [
        "webhook:dynamic-serving",
        "controller:leaderelection",
        "startupapicheck:create-cert",
    ] {
        add(
            "role",
            Some(&system),
            name,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: \"{name}\"\n  namespace: {system}\nrules:\n- apiGroups: [\"\"]\n  resources: [\"secrets\"]\n  verbs: [\"get\", \"create\"]\n"
            ),
        );
        add(
            "rolebinding",
            Some(&system),
            name,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: \"{name}\"\n  namespace: {system}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: \"{name}\"\nsubjects:\n- apiGroup: \"\"\n  kind: ServiceAccount\n  name: webhook\n  namespace: {system}\n"
            ),
        );
    }
    for i in 0..8 {
        add(
            "configmap",
            Some(&system),
            &format!("settings-{i}"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-{i}\n  namespace: {system}\ndata:\n  level: \"{i}\"\n  config.yaml: |\n    apiVersion: controller.config.tether.test/v1alpha1\n    kind: ControllerConfiguration\n    logging: {{verbosity: {i}}}\n"
            ),
        );
    }
    add(
        "secret",
        Some(&system),
        "webhook-ca",
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook-ca\n  namespace: {system}\ntype: Opaque\ndata:\n  ca.crt: dGVzdA==\n"
        ),
    );
    for (name, port) in [("controller", 9402), ("webhook", 443), ("cainjector", 9402)] {
        add(
            "service",
            Some(&system),
            name,
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {system}\nspec:\n  type: ClusterIP\n  selector: {{app: {name}}}\n  ports:\n  - name: https\n    port: {port}\n    protocol: TCP\n    targetPort: {port}\n"
            ),
        );
    }
    add(
        "service",
        Some(&system),
        "ingress",
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: ingress\n  namespace: {system}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {{app: controller}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n  - {{name: https, port: 443, targetPort: 8443, protocol: TCP}}\n"
        ),
    );
    for name in ["controller", "cainjector", "webhook"] {
        add(
            "deployment",
            Some(&system),
            name,
            format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {system}
  labels: {{app: {name}, app.kubernetes.io/component: {name}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{prometheus.io/scrape: "true", prometheus.io/port: "9402"}}
    spec:
      serviceAccountName: {name}
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: {name}
        image: registry.example/release/{name}:v1.16.2
        imagePullPolicy: IfNotPresent
        args: ["--v=2", "--leader-election-namespace=kube-system"]
        ports:
        - {{containerPort: 9402, name: http-metrics, protocol: TCP}}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: ["ALL"]}}
          readOnlyRootFilesystem: true
        env:
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        resources:
          requests: {{cpu: 10m, memory: 32Mi}}
"#
            ),
        );
    }
    add(
        "job",
        Some(&system),
        "startupapicheck",
        format!(
            r#"apiVersion: batch/v1
kind: Job
metadata:
  name: startupapicheck
  namespace: {system}
spec:
  backoffLimit: 4
  template:
    metadata:
      labels: {{app: startupapicheck}}
    spec:
      restartPolicy: OnFailure
      serviceAccountName: startupapicheck
      containers:
      - name: check
        image: registry.example/release/startupapicheck:v1.16.2
        args: ["check", "api", "--wait=1m"]
"#
        ),
    );
    // Webhooks that match a group nothing here uses, and fail open: the
    // test cluster has no webhook server.
    for (resource, kind_name) in [
        (
            "validatingwebhookconfiguration",
            "ValidatingWebhookConfiguration",
        ),
        (
            "mutatingwebhookconfiguration",
            "MutatingWebhookConfiguration",
        ),
    ] {
        let name = format!("{ns}-webhook");
        add(
            resource,
            None,
            &name,
            format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: {kind_name}
metadata:
  name: {name}
  annotations: {{release.tether.test/inject-ca-from-secret: {system}/webhook-ca}}
webhooks:
- name: webhook.release.tether.test
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 5
  namespaceSelector:
    matchExpressions:
    - {{key: release.tether.test/disable-validation, operator: NotIn, values: ["true"]}}
  rules:
  - apiGroups: ["unused.release.tether.test"]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["*/*"]
  clientConfig:
    service: {{name: webhook, namespace: {system}, path: /validate}}
"#
            ),
        );
    }
    add(
        "poddisruptionbudget",
        Some(&system),
        "webhook",
        format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: webhook\n  namespace: {system}\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {{app: webhook}}\n"
        ),
    );
    add(
        "networkpolicy",
        Some(&system),
        "allow-webhook",
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-webhook\n  namespace: {system}\nspec:\n  podSelector:\n    matchLabels: {{app: webhook}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports:\n    - {{port: 10250, protocol: TCP}}\n"
        ),
    );
    add(
        "priorityclass",
        None,
        &format!("{ns}-critical"),
        format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {ns}-critical\nvalue: 1000000\nglobalDefault: false\ndescription: for the release's controllers\n"
        ),
    );
    add(
        "ingressclass",
        None,
        &format!("{ns}-nginx"),
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {ns}-nginx\nspec:\n  controller: k8s.io/{ns}-nginx\n"
        ),
    );
    add(
        "horizontalpodautoscaler",
        Some(&system),
        "webhook",
        format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: webhook\n  namespace: {system}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: webhook}}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}\n"
        ),
    );
    let mut yaml = String::from("# Release manifest (generated by the test)\n");
    for doc in docs {
        yaml.push_str("---\n");
        yaml.push_str(&doc);
    }
    Release { yaml, objects }
}

/// A CRD of more than [`LARGE_CRD_BYTES`], large for the reason real ones
/// are: hundreds of documented properties.
fn large_crd(kind: &str) -> String {
    let mut properties = String::new();
    let mut i = 0;
    while properties.len() < LARGE_CRD_BYTES {
        let description = format!(
            "Field {i} of the certificate. It is documented at length, as the fields of release CRDs are, with defaults, constraints, and the history of the field across versions. "
        )
        .repeat(12);
        let _ = write!(
            properties,
            "              field{i}:\n                type: string\n                description: \"{description}\"\n"
        );
        i += 1;
    }
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates{kind}.release.tether.test
  labels: {{app.kubernetes.io/name: release}}
spec:
  group: release.tether.test
  scope: Namespaced
  names: {{plural: certificates{kind}, singular: certificate{kind}, kind: Certificate{kind}, listKind: Certificate{kind}List, shortNames: [cert{kind}]}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    additionalPrinterColumns:
    - {{jsonPath: .spec.field0, name: Field0, type: string}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
{properties}"#
    )
}

/// Whether the object exists; a custom resource whose CRD is gone does not.
fn exists(resource: &str, namespace: Option<&str>, name: &str) -> bool {
    let mut cmd = tether_testenv::shared().kubectl();
    cmd.args(["get", resource, name, "-o", "name"]);
    if let Some(ns) = namespace {
        cmd.args(["-n", ns]);
    }
    let out = cmd.output().expect("kubectl runs");
    if out.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NotFound") || stderr.contains("doesn't have a resource type"),
        "kubectl get {resource} {name}: {stderr}"
    );
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_manifest_deploys_exactly_and_prunes_completely() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-release").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || run(&ns))
        .await
        .expect("test body");
}

fn run(ns: &str) {
    let release = release(ns);
    assert!(release.objects.len() >= 50, "{}", release.objects.len());
    let kinds: std::collections::BTreeSet<&str> =
        release.objects.iter().map(|(k, _, _)| k.as_str()).collect();
    assert!(kinds.len() >= 15, "{kinds:?}");
    assert!(
        release.yaml.len() > LARGE_CRD_BYTES,
        "{}",
        release.yaml.len()
    );
    eprintln!(
        "release: {} objects of {} kinds, {} bytes",
        release.objects.len(),
        kinds.len(),
        release.yaml.len()
    );

    let mut setup = Setup::start_with(&["--poll-interval", "2s"]);
    setup.pod_namespace = ns.to_owned();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let config = format!(
        "gitops:\n  manifest_projects:\n  - default_namespace: {ns}\n    paths:\n    - glob: '/deploy/**/*.yaml'\n"
    );
    let first = commit(
        &repo,
        &[(CONFIG, Some(&config)), (RELEASE, Some(&release.yaml))],
    );
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let _agentk = setup.agentk(&token);

    wait("the release to sync", Duration::from_secs(120), || {
        setup
            .sync_of(&first)
            .is_some_and(|s| !matches!(s["state"].as_str(), None | Some("" | "syncing")))
    });
    let report = setup.sync_of(&first).expect("report");
    assert_eq!(report["state"], "synced", "{report}");
    assert_eq!(
        report["applied"].as_u64(),
        Some(release.objects.len() as u64),
        "{}",
        report["error"]
    );
    for (resource, namespace, name) in &release.objects {
        assert!(
            exists(resource, namespace.as_deref(), name),
            "{resource} {namespace:?} {name} was not applied"
        );
    }

    // Another client applying the same files server-side, under another
    // field manager, would change nothing. `--force-conflicts` because a
    // RoleBinding subject written `apiGroup: ""` (as cert-manager writes it)
    // conflicts between any two managers even when nothing differs: the
    // server stores the subject without the empty field, and `subjects` is
    // atomic. kubectl against kubectl does the same.
    let file = repo.join(RELEASE);
    let diff = tether_testenv::shared()
        .kubectl()
        .args([
            "diff",
            "--server-side",
            "--force-conflicts",
            "--field-manager=release-check",
            "-f",
        ])
        .arg(&file)
        .output()
        .expect("kubectl diff runs");
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff found changes:\n{}\n{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // The release leaves git: every object goes, RBAC ones included.
    let removed = commit(&repo, &[(RELEASE, None)]);
    setup
        .cli(&["project", "refresh", "team/config"])
        .expect("refresh");
    wait("the release to be pruned", Duration::from_secs(120), || {
        setup
            .sync_of(&removed)
            .is_some_and(|s| !matches!(s["state"].as_str(), None | Some("" | "syncing")))
    });
    let report = setup.sync_of(&removed).expect("report");
    assert_eq!(report["state"], "synced", "{report}");
    assert_eq!(
        report["pruned"].as_u64(),
        Some(release.objects.len() as u64),
        "{}",
        report["error"]
    );
    wait(
        "every pruned object to be gone",
        Duration::from_secs(120),
        || {
            release
                .objects
                .iter()
                .all(|(resource, namespace, name)| !exists(resource, namespace.as_deref(), name))
        },
    );
}
