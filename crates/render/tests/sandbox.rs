//! The kernel's sandbox on the real tools: helm and kustomize, given
//! input that reaches out (a kustomization naming URLs and files outside
//! its folder, a values schema whose `$ref` is a URL or a file of kas's),
//! run straight through [`sandbox::run`], past every argument check, so
//! only the kernel stands between them and a loopback server that counts
//! what reaches it. Nothing may.
//!
//! Needs the tools of scripts/render-tools.sh (or TETHER_RENDER_BIN).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tether_render::sandbox::{self, Invocation, Limits, Mode};
use tether_testenv::counting::Counter;

fn tools() -> PathBuf {
    tether_testenv::render_tools().expect("helm and kustomize (scripts/render-tools.sh)")
}

fn write(root: &Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("a folder");
        std::fs::write(file, text).expect("written");
    }
}

async fn run(
    program: PathBuf,
    args: Vec<OsString>,
    folder: &Path,
    mode: Mode,
) -> Result<String, sandbox::Failure> {
    let home = folder.join("home");
    std::fs::create_dir_all(&home).expect("a folder");
    let invocation = Invocation {
        program,
        args,
        dir: home.clone(),
        env: sandbox::base_env(&home),
        folders: vec![folder.to_owned()],
        ..Invocation::default()
    };
    let limits = Limits {
        sandbox: mode,
        ..Limits::default()
    };
    sandbox::run(&invocation, limits)
        .await
        .map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// A file of kas's that a render must not read: outside the render's
/// folder, like the secrets key in kas's data folder.
fn kas_secret() -> (tempfile::TempDir, PathBuf) {
    let data = tempfile::tempdir().expect("a folder");
    let secret = data.path().join("secrets-key");
    std::fs::write(&secret, "kas-secret-value\n").expect("written");
    (data, secret)
}

#[tokio::test]
async fn kustomize_reaches_neither_the_network_nor_files_outside_its_folder() {
    let server = Counter::start("127.0.0.1:0");
    let (_data, secret) = kas_secret();
    let url = format!(
        "{}/latest/meta-data/iam/security-credentials/role",
        server.url()
    );
    let cases = [
        format!("configMapGenerator: [{{name: x, files: [{url}]}}]"),
        format!("configMapGenerator: [{{name: x, envs: [{url}]}}]"),
        format!("resources: [{url}]"),
        format!("patches: [{{path: {url}}}]"),
        format!("openapi: {{path: {url}}}"),
        format!("crds: [{url}]"),
        format!("configurations: [{url}]"),
        format!("replacements: [{{path: {url}}}]"),
        format!(
            "configMapGenerator: [{{name: x, files: [{}]}}]",
            secret.display()
        ),
    ];
    let mut escaped = Vec::new();
    for kustomization in &cases {
        let folder = tempfile::tempdir().expect("a folder");
        write(
            folder.path(),
            &[("repo/kustomization.yaml", kustomization.clone())],
        );

        let outcome = run(
            tools().join("kustomize"),
            vec!["build".into(), folder.path().join("repo").into()],
            folder.path(),
            Mode::Kernel,
        )
        .await;

        // Every case needs what is outside: a build that succeeds read it.
        if let Ok(out) = outcome {
            escaped.push((kustomization.clone(), out));
        }
    }
    assert_eq!(escaped, Vec::new(), "what reached out in the sandbox");
    assert_eq!(server.count(), 0, "connections that reached the server");
}

#[tokio::test]
async fn a_values_schema_ref_reaches_neither_the_network_nor_kas_files() {
    let server = Counter::start("127.0.0.1:0");
    let (_data, secret) = kas_secret();
    for reference in [
        format!("{}/schema.json", server.url()),
        format!("file://{}", secret.display()),
    ] {
        let folder = tempfile::tempdir().expect("a folder");
        write(
            folder.path(),
            &[
                ("repo/chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n".into()),
                ("repo/chart/values.yaml", "a: 1\n".into()),
                (
                    "repo/chart/values.schema.json",
                    format!("{{\"$ref\": \"{reference}\"}}"),
                ),
                (
                    "repo/chart/templates/cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: \"{{ .Values.a }}\"}\n".into(),
                ),
            ],
        );

        let confined = run(
            tools().join("helm"),
            vec![
                "template".into(),
                "web".into(),
                folder.path().join("repo/chart").into(),
            ],
            folder.path(),
            Mode::Kernel,
        )
        .await;

        let error = confined
            .expect_err(&format!("the schema's $ref {reference} is not loaded"))
            .to_string();
        assert!(!error.contains("kas-secret-value"), "{error}");
    }
    assert_eq!(server.count(), 0, "connections that reached the server");
}

/// The same tools, the same folder layout, unconfined, do reach the
/// server: the sandbox, not the input, is what stops them above.
#[tokio::test]
async fn unconfined_the_same_input_reaches_the_server() {
    let server = Counter::start("127.0.0.1:0");
    let folder = tempfile::tempdir().expect("a folder");
    write(
        folder.path(),
        &[(
            "repo/kustomization.yaml",
            format!(
                "configMapGenerator: [{{name: x, files: [{}/data]}}]",
                server.url()
            ),
        )],
    );

    let outcome = run(
        tools().join("kustomize"),
        vec!["build".into(), folder.path().join("repo").into()],
        folder.path(),
        Mode::Off,
    )
    .await;

    assert!(
        server.count() > 0,
        "unconfined kustomize fetched: {outcome:?}"
    );

    let before = server.count();
    write(
        folder.path(),
        &[
            (
                "repo/chart/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 1.0.0\n".into(),
            ),
            (
                "repo/chart/values.schema.json",
                format!("{{\"$ref\": \"{}/schema.json\"}}", server.url()),
            ),
        ],
    );
    let outcome = run(
        tools().join("helm"),
        vec![
            "template".into(),
            "web".into(),
            folder.path().join("repo/chart").into(),
        ],
        folder.path(),
        Mode::Off,
    )
    .await;
    assert!(
        server.count() > before,
        "unconfined helm loaded the $ref: {outcome:?}"
    );
}

#[tokio::test]
async fn confined_tools_render_what_is_inside_their_folder() {
    let folder = tempfile::tempdir().expect("a folder");
    write(
        folder.path(),
        &[
            ("repo/chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n".into()),
            ("repo/chart/values.yaml", "a: 1\n".into()),
            (
                "repo/chart/values.schema.json",
                "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}".into(),
            ),
            (
                "repo/chart/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: \"{{ .Values.a }}\"}\n".into(),
            ),
            ("repo/app/kustomization.yaml", "resources: [cm.yaml]\nconfigMapGenerator: [{name: gen, files: [a.txt]}]\n".into()),
            ("repo/app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n".into()),
            ("repo/app/a.txt", "hello\n".into()),
        ],
    );

    let chart = run(
        tools().join("helm"),
        vec![
            "template".into(),
            "web".into(),
            folder.path().join("repo/chart").into(),
        ],
        folder.path(),
        Mode::Kernel,
    )
    .await
    .expect("helm renders in the sandbox");
    let built = run(
        tools().join("kustomize"),
        vec!["build".into(), folder.path().join("repo/app").into()],
        folder.path(),
        Mode::Kernel,
    )
    .await
    .expect("kustomize builds in the sandbox");

    assert!(chart.contains("a: \"1\""), "{chart}");
    assert!(
        built.contains("name: plain") && built.contains("hello"),
        "{built}"
    );
}
