//! The config file as users write it for the GitLab agent.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tether_agent_config::*;

#[test]
fn an_empty_file_is_the_empty_config() {
    for text in ["", "\n", "# only a comment\n", "---\n"] {
        let parsed = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(parsed.config, AgentConfig::default(), "{text:?}");
        assert!(
            parsed.warnings.is_empty(),
            "{text:?}: {:?}",
            parsed.warnings
        );
    }
}

#[test]
fn parses_every_section_of_a_gitlab_agent_config() {
    let text = r#"
gitops:
  manifest_projects:
  - id: team/manifests
    ref:
      tag: v1.2.0
    default_namespace: apps
    paths:
    - glob: 'base/**/*.yaml'
    - glob: 'overlays/prod/*.{yaml,yml}'
    reconcile_timeout: 10m
    dry_run_strategy: server
    prune: false
    prune_timeout: 90s
    prune_propagation_policy: background
    inventory_policy: adopt_if_no_inventory
  - id: team/other
ci_access:
  projects:
  - id: team/app
    default_namespace: ci
    environments: ["review/*", production]
    protected_branches_only: true
    access_as:
      impersonate:
        username: ci-deployer
        groups: [deployers]
        uid: "42"
        extra:
        - key: scopes
          val: [deploy]
  groups:
  - id: team
    access_as:
      ci_job: {}
user_access:
  access_as:
    user: {}
  projects:
  - id: team/app
observability:
  logging:
    level: debug
    grpc_level: warn
"#;
    let Parsed { config, warnings } = parse(text).expect("valid config");
    assert!(warnings.is_empty(), "{warnings:?}");

    let first = &config.gitops.manifest_projects[0];
    assert_eq!(first.id.as_deref(), Some("team/manifests"));
    assert_eq!(
        first.git_ref.as_ref().and_then(|r| r.tag.as_deref()),
        Some("v1.2.0")
    );
    assert_eq!(first.default_namespace, "apps");
    assert_eq!(first.paths.len(), 2);
    assert_eq!(first.reconcile_timeout, Duration::from_secs(600));
    assert_eq!(first.dry_run_strategy, DryRunStrategy::Server);
    assert!(!first.prune);
    assert_eq!(first.prune_timeout, Duration::from_secs(90));
    assert_eq!(
        first.prune_propagation_policy,
        PrunePropagationPolicy::Background
    );
    assert_eq!(first.inventory_policy, InventoryPolicy::AdoptIfNoInventory);

    // Everything left out takes the GitLab agent's default.
    let second = &config.gitops.manifest_projects[1];
    assert_eq!(second.git_ref, None);
    assert_eq!(second.default_namespace, "default");
    assert_eq!(
        second.paths,
        vec![PathGlob {
            glob: "**/*.{yaml,yml,json}".into()
        }]
    );
    assert_eq!(second.reconcile_timeout, Duration::from_secs(3600));
    assert_eq!(second.dry_run_strategy, DryRunStrategy::None);
    assert!(second.prune);
    assert_eq!(
        second.prune_propagation_policy,
        PrunePropagationPolicy::Foreground
    );
    assert_eq!(second.inventory_policy, InventoryPolicy::MustMatch);

    let ci = &config.ci_access.projects[0];
    assert_eq!(ci.environments, vec!["review/*", "production"]);
    assert!(ci.protected_branches_only);
    match &ci.access_as {
        CiAccessAs::Impersonate(imp) => {
            assert_eq!(imp.username, "ci-deployer");
            assert_eq!(imp.groups, vec!["deployers"]);
            assert_eq!(imp.uid.as_deref(), Some("42"));
            assert_eq!(imp.extra[0].val, vec!["deploy"]);
        }
        other => panic!("expected impersonate, got {other:?}"),
    }
    assert_eq!(config.ci_access.groups[0].access_as, CiAccessAs::CiJob {});
    let user_access = config.user_access.expect("user_access present");
    assert_eq!(user_access.access_as, UserAccessAs::User {});
    assert_eq!(config.observability.logging.level, LogLevel::Debug);
    assert_eq!(config.observability.logging.grpc_level, LogLevel::Warn);
}

#[test]
fn ci_access_defaults_to_the_agents_identity() {
    let parsed = parse("ci_access:\n  projects:\n  - id: team/app\n").expect("valid");
    assert_eq!(
        parsed.config.ci_access.projects[0].access_as,
        CiAccessAs::Agent {}
    );
}

#[test]
fn unknown_fields_and_unsupported_sections_are_warnings() {
    let text = "gitops:\n  manifest_projects:\n  - id: a/b\n    colour: blue\nflux: {}\nfuture_section: 1\n";
    let parsed = parse(text).expect("still valid");
    let paths: Vec<&str> = parsed.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(paths.iter().any(|p| p.contains("colour")), "{paths:?}");
    assert!(paths.contains(&"future_section"), "{paths:?}");
    assert!(paths.contains(&"flux"), "{paths:?}");
}

#[test]
fn what_gitlab_refuses_is_reported_at_once_with_path_line_and_column() {
    let text = r#"
gitops:
  manifest_projects:
  - id: ''
    ref: { branch: main, tag: v1 }
    paths:
    - glob: ''
    - glob: 'ok/**/*.yaml'
ci_access:
  projects:
  - id: team/app
    access_as:
      impersonate: { username: "" }
"#;
    let Err(ConfigError::Invalid(problems)) = parse(text) else {
        panic!("expected validation problems");
    };
    let found: Vec<(&str, Option<usize>)> =
        problems.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert_eq!(
        found,
        [
            ("gitops.manifest_projects[0].id", Some(4)),
            ("gitops.manifest_projects[0].ref", Some(5)),
            ("gitops.manifest_projects[0].paths[0].glob", Some(7)),
            (
                "ci_access.projects[0].access_as.impersonate.username",
                Some(13)
            ),
        ]
    );
    assert!(problems.iter().all(|p| p.column.is_some()), "{problems:?}");
}

#[test]
fn what_gitlab_accepts_but_tether_reads_strictly_is_a_warning() {
    let text = r#"
gitops:
  manifest_projects:
  - id: group/app:testing
    default_namespace: Not_A_Namespace
    paths:
    - glob: '../outside/*.yaml'
    - glob: 'bad/[*.yaml'
    - glob: 'ok/**/*.yaml'
ci_access:
  groups:
  - id: <your group>
    environments: ['']
"#;
    let parsed = parse(text).expect("GitLab accepts all of it");
    let found: Vec<(&str, Option<usize>)> = parsed
        .warnings
        .iter()
        .map(|w| (w.path.as_str(), w.line))
        .collect();
    assert_eq!(
        found,
        [
            ("gitops.manifest_projects[0].id", Some(4)),
            ("gitops.manifest_projects[0].default_namespace", Some(5)),
            ("gitops.manifest_projects[0].paths[0].glob", Some(7)),
            ("gitops.manifest_projects[0].paths[1].glob", Some(8)),
            ("ci_access.groups[0].id", Some(12)),
            ("ci_access.groups[0].environments[0]", Some(13)),
        ]
    );
}

#[test]
fn a_leading_slash_reads_from_the_repository_root() {
    let text = "gitops:\n  manifest_projects:\n  - paths:\n    - glob: '/**/*.{yaml,yml,json}'\n    - glob: '/manifests/**/*.yaml'\n";
    let parsed = parse(text).expect("GitLab's documented form");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let globs: Vec<&str> = parsed.config.gitops.manifest_projects[0]
        .paths
        .iter()
        .map(|p| p.glob.as_str())
        .collect();
    assert_eq!(globs, ["**/*.{yaml,yml,json}", "manifests/**/*.yaml"]);
}

#[test]
fn an_empty_paths_list_takes_the_default_glob() {
    let parsed =
        parse("gitops:\n  manifest_projects:\n  - id: a/b\n    paths: []\n").expect("valid");
    assert_eq!(
        parsed.config.gitops.manifest_projects[0].paths,
        [PathGlob {
            glob: DEFAULT_GLOB.into()
        }]
    );
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
}

#[test]
fn a_map_where_a_list_belongs_is_refused_with_its_place() {
    let text = "gitops:\n  manifest_projects:\n    id: a/b\n";
    let err = parse(text).expect_err("manifest_projects is a list");
    assert_eq!(err.line(), Some(3), "{err}");
}

#[test]
fn a_wrong_type_names_its_line() {
    let text = "gitops:\n  manifest_projects:\n  - id: a/b\n    prune: maybe\n";
    let err = parse(text).expect_err("prune must be a boolean");
    assert_eq!(err.line(), Some(4), "{err}");
    let message = err.to_string();
    assert!(message.starts_with("line 4 column "), "{message}");
    assert_eq!(
        message.matches("line 4").count(),
        1,
        "location said once: {message}"
    );
}

#[test]
fn an_unknown_enum_value_is_an_error() {
    let err = parse("observability:\n  logging:\n    level: loud\n").expect_err("no such level");
    assert!(err.to_string().contains("loud"), "{err}");
}

#[test]
fn a_billion_laughs_file_fails_fast() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("gitops: { manifest_projects: *a9 }\n");
    let started = Instant::now();
    let err = parse(&text).expect_err("expansion must be refused");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("budget") || text.contains("limit exceeded"),
        "the error says a limit was hit: {err}"
    );
}

#[test]
fn a_file_over_128_kib_is_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    assert!(matches!(parse(&text), Err(ConfigError::TooLarge { .. })));
}

#[test]
fn more_than_one_document_is_an_error() {
    assert!(parse("gitops: {}\n---\ngitops: {}\n").is_err());
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_yaml_shaped_text_never_panics(
        text in "(gitops|ci_access|user_access|observability|[a-z]{1,5}):( |\n  )([a-z_]{1,8}: )?(\\{\\}|\\[\\]|[a-z0-9/.*]{0,10}|&a|\\*a)\n"
    ) {
        let _ = parse(&text);
    }
}

/// Configs in GitLab's style that nobody here tuned the parser for: every
/// file under `corpus/accepted` loads, every file under `corpus/refused`
/// is refused at the line its first comment names.
#[test]
fn the_corpus_of_gitlab_style_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("accepted")).expect("corpus") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let parsed = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for warning in &parsed.warnings {
            assert!(
                warning.line.is_some(),
                "{}: {warning:?} has no line",
                path.display()
            );
        }
        seen += 1;
    }
    for entry in std::fs::read_dir(root.join("refused")).expect("corpus") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let want: usize = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# refused at line "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: first line names the refused line", path.display()));
        let err = parse(&text).expect_err(&path.display().to_string());
        assert_eq!(err.line(), Some(want), "{}: {err}", path.display());
        seen += 1;
    }
    assert!(seen >= 15, "the corpus has {seen} files");
}

#[test]
fn corpus_configs_mean_what_they_say() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/accepted");
    let read = |name: &str| {
        parse(&std::fs::read_to_string(root.join(name)).expect("read")).expect("accepted")
    };
    let crlf = read("crlf-endings.yaml");
    assert_eq!(
        crlf.config.gitops.manifest_projects[0].paths[0].glob,
        "k8s/**/*.yml"
    );
    assert_eq!(crlf.config.observability.logging.level, LogLevel::Debug);

    let indented = read("four-space-indent.yaml");
    let project = &indented.config.gitops.manifest_projects[0];
    assert_eq!(
        project.git_ref.as_ref().and_then(|r| r.tag.as_deref()),
        Some("v2.14.0")
    );
    assert_eq!(project.paths.len(), 2);

    let anchors = read("flow-maps-and-anchors.yaml");
    let worker = &anchors.config.gitops.manifest_projects[1];
    assert_eq!(worker.default_namespace, "shared", "merged from the anchor");
    assert_eq!(worker.reconcile_timeout, Duration::from_secs(600));
    assert_eq!(
        anchors.config.gitops.manifest_projects[0].paths[0].glob,
        "web/*.yaml"
    );

    let placeholders = read("placeholder-ids.yaml");
    assert_eq!(
        placeholders.warnings.len(),
        3,
        "{:?}",
        placeholders.warnings
    );
    assert_eq!(read("comments-only.yaml").config, AgentConfig::default());
}

#[test]
fn charts_and_kustomizations_parse_and_take_no_default_glob() {
    let text = r#"
gitops:
  manifest_projects:
  - id: team/platform
    default_namespace: apps
    kustomizations:
    - path: /overlays/prod/
      substitute: { CLUSTER: eu-1, REPLICAS: "3" }
    helm_charts:
    - path: charts/web
      release_name: web
      values_files: [charts/web/values-prod.yaml]
      values: { replicaCount: 2, image: { tag: "1.4.2" } }
    - repository: https://charts.example.com/stable
      chart: redis
      version: 19.6.4
      release_name: cache
      namespace: data
      include_crds: false
  - id: team/both
    paths:
    - glob: 'raw/*.yaml'
    helm_charts:
    - repository: oci://registry.example.com/charts
      chart: podinfo
      version: 6.7.1
      release_name: podinfo
    - path: charts/db
      release_name: db
      render_on: agent
      values_from:
      - secret: db-values
      - { secret: db-values, key: prod.yaml, optional: true }
"#;
    let parsed = parse(text).expect("valid");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let first = &parsed.config.gitops.manifest_projects[0];
    assert!(first.paths.is_empty(), "no default glob: {:?}", first.paths);
    assert_eq!(first.kustomizations[0].path, "overlays/prod");
    assert_eq!(first.kustomizations[0].substitute["REPLICAS"], "3");
    assert!(!first.kustomizations[0].allow_remote_bases);
    let web = &first.helm_charts[0];
    assert_eq!(web.path.as_deref(), Some("charts/web"));
    assert!(web.include_crds && web.skip_tests, "defaults");
    assert_eq!(web.values["image"]["tag"], "1.4.2");
    let cache = &first.helm_charts[1];
    assert_eq!(cache.version.as_deref(), Some("19.6.4"));
    assert!(!cache.include_crds);
    assert!(
        web.render_on.is_kas() && web.values_from.is_empty(),
        "defaults"
    );
    let both = &parsed.config.gitops.manifest_projects[1];
    assert_eq!(both.paths[0].glob, "raw/*.yaml");
    let on_agent = &both.helm_charts[1];
    assert_eq!(on_agent.render_on, RenderOn::Agent);
    assert_eq!(on_agent.values_from[0].secret, "db-values");
    assert_eq!(
        on_agent.values_from[0].key, "values.yaml",
        "the default key"
    );
    assert_eq!(on_agent.values_from[1].key, "prod.yaml");
    assert!(on_agent.values_from[1].optional);
    assert_eq!(both.helm_charts[0].chart.as_deref(), Some("podinfo"));
}

#[test]
fn a_chart_or_kustomization_that_cannot_render_is_refused_by_field() {
    let refused = |yaml: &str| -> Vec<String> {
        let text = format!("gitops:\n  manifest_projects:\n  - id: a/b\n{yaml}");
        match parse(&text) {
            Ok(p) => panic!("accepted: {yaml}\n{:?}", p.config),
            Err(ConfigError::Invalid(problems)) => problems
                .into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    };
    let cases = [
        (
            "    kustomizations: [{ path: ../other }]\n",
            "kustomizations[0].path",
            "leaves the repository",
        ),
        (
            "    kustomizations: [{ path: '' }]\n",
            "kustomizations[0].path",
            "required",
        ),
        (
            "    kustomizations: [{ path: k, substitute: { 1X: a } }]\n",
            "substitute.1X",
            "not a variable name",
        ),
        (
            "    helm_charts: [{ release_name: a }]\n",
            "helm_charts[0]",
            "name the chart",
        ),
        (
            "    helm_charts: [{ path: c, repository: 'https://x', release_name: a }]\n",
            "helm_charts[0]",
            "not both",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: c, release_name: a }]\n",
            "helm_charts[0].version",
            "exact version",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: c, version: ^1.2.0, release_name: a }]\n",
            "helm_charts[0].version",
            "is a range",
        ),
        (
            "    helm_charts: [{ repository: 'ftp://x', chart: c, version: 1.0.0, release_name: a }]\n",
            "helm_charts[0].repository",
            "not an https://",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: '../x', version: 1.0.0, release_name: a }]\n",
            "helm_charts[0].chart",
            "not a chart name",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: 'a/b', version: 1.0.0, release_name: a }]\n",
            "helm_charts[0].chart",
            "not a chart name",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: \"a\\tb\", version: 1.0.0, release_name: a }]\n",
            "helm_charts[0].chart",
            "not a chart name",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: c, version: '1.0.0/../x', release_name: a }]\n",
            "helm_charts[0].version",
            "not a chart version",
        ),
        (
            "    helm_charts: [{ repository: 'https://x', chart: c, version: '..', release_name: a }]\n",
            "helm_charts[0].version",
            "not a chart version",
        ),
        (
            "    helm_charts: [{ path: c }]\n",
            "helm_charts[0].release_name",
            "required",
        ),
        (
            "    helm_charts: [{ path: c, release_name: Web_App }]\n",
            "helm_charts[0].release_name",
            "not a valid release name",
        ),
        (
            "    helm_charts: [{ path: c, release_name: a }, { path: d, release_name: a }]\n",
            "helm_charts[1].release_name",
            "twice",
        ),
        (
            "    helm_charts: [{ path: c, release_name: a, values_files: [../../secrets.yaml] }]\n",
            "values_files[0]",
            "leaves the repository",
        ),
        (
            "    helm_charts: [{ path: c, release_name: a, values_from: [{ secret: web-values }] }]\n",
            "helm_charts[0].values_from",
            "set render_on: agent",
        ),
        (
            "    helm_charts: [{ path: c, release_name: a, render_on: agent, values_from: [{ secret: Web_Values }] }]\n",
            "values_from[0].secret",
            "not a Secret's name",
        ),
        (
            "    helm_charts: [{ path: c, release_name: a, render_on: agent, values_from: [{ secret: s, key: 'a/b' }] }]\n",
            "values_from[0].key",
            "not a Secret's key",
        ),
    ];
    for (yaml, path, message) in cases {
        let problems = refused(yaml);
        assert!(
            problems
                .iter()
                .any(|p| p.contains(path) && p.contains(message)),
            "{yaml}: expected {path}: …{message}…, got {problems:?}"
        );
    }
}

#[test]
fn a_chart_name_or_version_that_is_not_one_path_segment_is_refused_with_its_place() {
    let text = r#"
gitops:
  manifest_projects:
  - id: a/b
    helm_charts:
    - repository: https://charts.example.com
      chart: ../../../var/lib/kas/x
      version: 1.0.0
      release_name: one
    - repository: oci://registry.example.com/charts
      chart: web
      version: 1.0.0/../../other
      release_name: two
      render_on: agent
"#;
    let Err(ConfigError::Invalid(problems)) = parse(text) else {
        panic!("expected both to be refused");
    };
    let found: Vec<(&str, Option<usize>, Option<usize>)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.line, p.column))
        .collect();
    assert_eq!(
        found,
        [
            (
                "gitops.manifest_projects[0].helm_charts[0].chart",
                Some(7),
                Some(14)
            ),
            (
                "gitops.manifest_projects[0].helm_charts[1].version",
                Some(12),
                Some(16)
            ),
        ]
    );
    assert!(problems[0].message.contains("chart name"), "{problems:?}");
    assert!(
        problems[1].message.contains("chart version"),
        "{problems:?}"
    );
}

#[test]
fn chart_names_and_versions_as_repositories_publish_them_are_accepted() {
    for (chart, version) in [
        ("redis", "19.6.4"),
        ("kube-prometheus-stack", "v65.1.0"),
        ("cert_manager.crds", "1.0.0-rc.1+build.7"),
    ] {
        let text = format!(
            "gitops:\n  manifest_projects:\n  - id: a/b\n    helm_charts:\n    - {{ repository: 'https://x', chart: '{chart}', version: '{version}', release_name: a }}\n"
        );
        parse(&text).unwrap_or_else(|e| panic!("{chart} {version}: {e}"));
    }
}

#[test]
fn notifications_name_a_secret_and_pick_events() {
    let text = "notifications:\n- provider: slack\n  url_secret: ops-slack\n  events: [sync_failed, health_degraded]\n- provider: generic\n  url_secret: audit\n";
    let parsed = parse(text).expect("valid");
    let n = &parsed.config.notifications;
    assert_eq!(n[0].provider, NotificationProvider::Slack);
    assert!(n[0].wants(NotificationEvent::SyncFailed));
    assert!(!n[0].wants(NotificationEvent::SyncSucceeded));
    assert!(
        n[1].wants(NotificationEvent::TokenExpiring),
        "no events: all"
    );
    for (yaml, message) in [
        ("notifications: [{provider: slack}]\n", "is required"),
        (
            "notifications: [{provider: slack, url_secret: 'https://hooks.slack.com/services/T/B/X'}]\n",
            "this is a URL",
        ),
    ] {
        match parse(yaml) {
            Err(ConfigError::Invalid(problems)) => assert!(
                problems.iter().any(|p| p.message.contains(message)),
                "{yaml}: {problems:?}"
            ),
            other => panic!("{yaml}: {other:?}"),
        }
    }
    assert!(parse("notifications: [{provider: pager, url_secret: a}]\n").is_err());
}

/// `decryption` (a Tether extension, as Flux's `spec.decryption`) names a
/// Secret of the agent's own namespace; another namespace cannot be named,
/// and an unknown provider or field fails rather than being ignored.
#[test]
fn sops_decryption_names_a_secret_of_the_agents_own_namespace_only() {
    let text = r#"
gitops:
  manifest_projects:
  - id: team/secrets
    decryption:
      provider: sops
      secret: sops-age
    paths:
    - glob: '**/*.yaml'
"#;
    let parsed = parse(text).expect("valid");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let project = &parsed.config.gitops.manifest_projects[0];
    assert_eq!(
        project.decryption,
        Some(Decryption {
            provider: DecryptionProvider::Sops,
            secret: "sops-age".into()
        })
    );
    let Err(ConfigError::Invalid(problems)) = parse(&text.replace("sops-age", "kube-system/keys"))
    else {
        panic!("another namespace's Secret is refused");
    };
    assert_eq!(
        problems[0].path,
        "gitops.manifest_projects[0].decryption.secret"
    );
    assert!(
        problems[0].message.contains("agent's own namespace"),
        "{}",
        problems[0].message
    );
    parse(&text.replace("provider: sops", "provider: vault")).expect_err("sops only");
    // Another project may not share the Secret; the same project (other
    // paths of one repository) may.
    let shared =
        format!("{text}  - id: team/other\n    decryption: {{provider: sops, secret: sops-age}}\n");
    let Err(ConfigError::Invalid(problems)) = parse(&shared) else {
        panic!("a Secret shared by two projects is refused");
    };
    assert_eq!(
        problems[0].path,
        "gitops.manifest_projects[1].decryption.secret"
    );
    let same = shared.replace("team/other", "team/secrets");
    parse(&same).expect("one project, two entries, one Secret");
    parse(&text.replace(
        "secret: sops-age",
        "secret: sops-age\n      namespace: other",
    ))
    .expect_err("no namespace field");
}
