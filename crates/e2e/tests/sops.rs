//! Secrets kept encrypted in git with SOPS, end to end: fixtures made at
//! test time with the real `age-keygen` and `sops`, real kas and agentk
//! processes, the real cluster. A manifest project with `decryption:
//! {provider: sops, secret: sops-age}` has its encrypted files applied
//! decrypted by agentk, with the age keys of the Secret `sops-age` in
//! agentk's own namespace; kas passes the ciphertext along and never holds
//! a key. The plaintext is in the cluster and nowhere else: not in kas's
//! data folder (its database included), kas's or agentk's log, the sync
//! reports, the cluster's Events, nor a plan, which shows the changed
//! Secret's values as `(encrypted)`. A file changed after it was encrypted
//! is refused naming it, with the cluster unchanged; a file encrypted for
//! a key the Secret does not hold is refused naming its recipient; the key
//! is rotated by editing the Secret, without restarting agentk; with the
//! Secret gone nothing is applied. A kustomization's `secretGenerator`
//! taking an encrypted file whole renders on kas with the ciphertext as
//! the value, and agentk decrypts that value.

use tether_e2e as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use support::{Setup, commit, kubectl_get, new_repo, wait};

const CONFIG: &str = ".gitlab/agents/prod/config.yaml";
const DB: &str = "manifests/db.yaml";
/// The Secret of that file.
const SECRET: &str = "db";
/// What sops encrypts in a manifest: a Secret's and a ConfigMap's values.
const REGEX: &str = "^(data|stringData)$";

/// A program of the pinned sops and age (`scripts/signing-tools.sh`).
fn tool(name: &str) -> PathBuf {
    tether_testenv::signing_tools()
        .expect("sops and age (scripts/signing-tools.sh)")
        .join(name)
}

/// Runs `program` in `dir`; its standard output.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(tool(program))
        .args(args)
        .current_dir(dir)
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A new age key in `dir/name`; its recipient (`age1…`).
fn age_key(dir: &Path, name: &str) -> String {
    run(dir, "age-keygen", &["-o", name]);
    let text = std::fs::read_to_string(dir.join(name)).expect("key file");
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("the key's recipient")
        .trim()
        .to_owned()
}

/// `plain` (YAML) encrypted by sops for `recipient`, only the values under
/// keys matching `regex` if given, as sops writes it. The plaintext is
/// written to `dir` only for sops to read, and removed.
fn encrypt(dir: &Path, plain: &str, recipient: &str, regex: Option<&str>) -> String {
    std::fs::write(dir.join("plain.yaml"), plain).expect("plaintext");
    let mut args = vec!["--disable-version-check", "--encrypt", "--age", recipient];
    if let Some(regex) = regex {
        args.extend(["--encrypted-regex", regex]);
    }
    args.extend([
        "--input-type",
        "yaml",
        "--output-type",
        "yaml",
        "plain.yaml",
    ]);
    let encrypted = run(dir, "sops", &args);
    std::fs::remove_file(dir.join("plain.yaml")).expect("plaintext removed");
    assert!(
        encrypted.contains("ENC[AES256_GCM,") && !encrypted.contains(plain),
        "{encrypted}"
    );
    encrypted
}

/// The Secret `db` with `password`, and a ConfigMap with a plain value, as
/// one file.
fn db_manifest(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {SECRET}}}\nstringData: {{password: {password}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: db-settings}}\ndata: {{mode: fast}}\n"
    )
}

/// `encrypted` with two different characters swapped inside the `data:`
/// part of the password's `ENC[...]` value: still valid base64, no longer
/// what sops wrote.
fn tamper(encrypted: &str) -> String {
    let marker = "password: ENC[AES256_GCM,data:";
    let start = encrypted.find(marker).expect("the password's value") + marker.len();
    let data = &encrypted[start..];
    let data = &data[..data.find(',').expect("the end of data:")];
    let bytes = data.as_bytes();
    let at = (0..bytes.len().saturating_sub(2))
        .find(|&i| bytes[i] != bytes[i + 1] && bytes[i] != b'=' && bytes[i + 1] != b'=')
        .expect("two different characters to swap");
    let mut swapped = bytes.to_vec();
    swapped.swap(at, at + 1);
    let swapped = String::from_utf8(swapped).expect("base64 is ASCII");
    format!(
        "{}{swapped}{}",
        &encrypted[..start],
        &encrypted[start + data.len()..]
    )
}

/// The config of agent `prod`; with a kustomization if `kustomize`.
fn config(ns: &str, kustomize: bool) -> String {
    let mut config = format!(
        "gitops:\n  manifest_projects:\n  - id: team/config\n    default_namespace: {ns}\n    decryption: {{provider: sops, secret: sops-age}}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
    );
    if kustomize {
        config.push_str("    kustomizations:\n    - path: kustom\n");
    }
    config
}

/// Waits for the sync of `commit` to fail; its error, which holds every
/// one of `needles`.
fn failed(setup: &Setup, commit: &str, needles: &[&str]) -> String {
    wait("the sync to fail", Duration::from_secs(60), || {
        setup
            .sync_of(commit)
            .is_some_and(|s| s["state"] == "failed")
    });
    let report = setup.sync_of(commit).expect("report");
    let error = report["error"].as_str().unwrap_or_default().to_owned();
    for needle in needles {
        assert!(error.contains(needle), "{needle:?} not in {report:#}");
    }
    error
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_encrypted_with_sops_are_applied_decrypted_and_never_seen_in_clear_by_kas() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-sops").await.expect("namespace");
    let ns = ns.name().to_owned();
    tokio::task::spawn_blocking(move || sops(&ns))
        .await
        .expect("test body");
}

fn sops(ns: &str) {
    let mut setup = Setup::start_with(&["--poll-interval", "1h"]);
    setup.pod_namespace = ns.to_owned();
    let kubectl = |args: &[&str]| tether_testenv::shared().kubectl_ok(args);
    let refresh = || {
        setup
            .cli(&["project", "refresh", "team/config"])
            .expect("refresh");
    };
    // Keys and plaintext live in a folder of their own, apart from kas's.
    let work = tempfile::tempdir().expect("work dir");
    let work = work.path();
    let key1 = work.join("key1.txt");
    let key2 = work.join("key2.txt");
    let recipient1 = age_key(work, "key1.txt");
    let recipient2 = age_key(work, "key2.txt");
    let from_file =
        |entry: &str, key: &Path| format!("--from-file={entry}={}", key.to_str().expect("utf-8"));
    kubectl(&[
        "create",
        "secret",
        "generic",
        "sops-age",
        &from_file("identity.agekey", &key1),
        "-n",
        ns,
    ]);

    // Unique plaintexts, to look for wherever they must not be.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let pw1 = format!("pw1-{ns}-{salt:x}");
    let pw2 = format!("pw2-{ns}-{salt:x}");
    let pw3 = format!("pw3-{ns}-{salt:x}");
    let token = format!("tk-{ns}-{salt:x}");
    let secrets = [&pw1, &pw2, &pw3, &token];

    // The first commit: the Secret and the ConfigMap, encrypted for key 1.
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let first = commit(
        &repo,
        &[
            (CONFIG, Some(&config(ns, false))),
            (
                DB,
                Some(&encrypt(work, &db_manifest(&pw1), &recipient1, Some(REGEX))),
            ),
        ],
    );
    let agent_token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let mut agentk = setup.agentk(&agent_token);
    wait("the first sync", Duration::from_secs(90), || {
        setup
            .sync_of(&first)
            .is_some_and(|s| s["state"] == "synced")
    });
    let password = || -> Option<String> {
        let secret = kubectl_get(&["secret", SECRET, "-n", ns])?;
        secret["data"]["password"].as_str().map(str::to_owned)
    };
    assert_eq!(password(), Some(b64(&pw1)));
    let settings = kubectl_get(&["configmap", "db-settings", "-n", ns]).expect("the ConfigMap");
    assert_eq!(settings["data"]["mode"], "fast", "{settings}");
    let report = setup.sync_of(&first).expect("report");
    assert_eq!(report["applied"], 2, "{report}");

    // The next commit changes the password; its plan shows the Secret as
    // an update whose values are hidden. Not refreshed yet.
    let second_file = encrypt(work, &db_manifest(&pw2), &recipient1, Some(REGEX));
    let second = commit(&repo, &[(DB, Some(&second_file))]);
    let human = setup
        .cli(&["agent", "plan", "prod", "--commit", &second])
        .expect("plan");
    let json = setup
        .cli(&["agent", "plan", "prod", "--commit", &second, "-o", "json"])
        .expect("plan");
    let plan: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let db = plan["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == "Secret" && o["name"] == SECRET)
        .cloned()
        .unwrap_or_else(|| panic!("the Secret is not in the plan: {plan:#}"));
    assert_eq!(db["change"], "update", "{db:#}");
    let fields = db["fields"].as_array().expect("fields");
    assert!(!fields.is_empty(), "{db:#}");
    for field in fields {
        for side in ["before", "after"] {
            assert!(
                field[side].is_null() || field[side] == "\"(encrypted)\"",
                "{side} of {field} in {db:#}"
            );
        }
    }
    assert!(
        human.contains("~ Secret") && human.contains("(encrypted)"),
        "{human}"
    );
    for text in [&human, &json] {
        for secret in [&pw1, &pw2] {
            assert!(
                !text.contains(secret.as_str()) && !text.contains(&b64(secret)),
                "a plan shows a decrypted value: {text}"
            );
        }
    }
    assert_eq!(password(), Some(b64(&pw1)), "a plan changes nothing");
    refresh();
    wait("the new password", Duration::from_secs(60), || {
        setup
            .sync_of(&second)
            .is_some_and(|s| s["state"] == "synced")
            && password() == Some(b64(&pw2))
    });

    // A file changed after sops wrote it: refused naming it, the cluster
    // keeps the password it had.
    let tampered = commit(&repo, &[(DB, Some(&tamper(&second_file)))]);
    refresh();
    let error = failed(
        &setup,
        &tampered,
        &[DB, "stringData.password", "changed after it was encrypted"],
    );
    eprintln!("tampered: {error}");
    assert_eq!(password(), Some(b64(&pw2)));

    // Encrypted for key 2, which the Secret does not hold yet: refused,
    // naming the recipient.
    let for_key2 = commit(
        &repo,
        &[(
            DB,
            Some(&encrypt(work, &db_manifest(&pw3), &recipient2, Some(REGEX))),
        )],
    );
    refresh();
    let error = failed(&setup, &for_key2, &[DB, "none of the keys", &recipient2]);
    eprintln!("no key: {error}");
    assert_eq!(password(), Some(b64(&pw2)));

    // Key rotation: the Secret holds both keys, agentk is not restarted,
    // and the next commit (the file encrypted for key 2 again) applies.
    let rotated = work.join("rotated.yaml");
    let manifest = kubectl(&[
        "create",
        "secret",
        "generic",
        "sops-age",
        &from_file("old.agekey", &key1),
        &from_file("new.agekey", &key2),
        "-n",
        ns,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    std::fs::write(&rotated, manifest).expect("the rotated Secret");
    kubectl(&["replace", "-f", rotated.to_str().expect("utf-8")]);
    std::fs::remove_file(&rotated).expect("removed");
    let rotation = commit(
        &repo,
        &[(
            DB,
            Some(&encrypt(work, &db_manifest(&pw3), &recipient2, Some(REGEX))),
        )],
    );
    refresh();
    wait(
        "the password encrypted for key 2",
        Duration::from_secs(60),
        || {
            setup
                .sync_of(&rotation)
                .is_some_and(|s| s["state"] == "synced")
                && password() == Some(b64(&pw3))
        },
    );
    assert!(
        matches!(agentk.child.try_wait(), Ok(None)),
        "the same agentk, never restarted"
    );

    // The Secret gone: nothing is applied, not even a plain ConfigMap.
    kubectl(&["delete", "secret", "sops-age", "-n", ns]);
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after-key-loss}\ndata: {a: b}\n";
    let keyless = commit(&repo, &[("manifests/extra.yaml", Some(plain))]);
    refresh();
    let error = failed(&setup, &keyless, &["sops-age", "does not exist"]);
    eprintln!("no Secret: {error}");
    assert!(kubectl_get(&["configmap", "after-key-loss", "-n", ns]).is_none());
    assert_eq!(password(), Some(b64(&pw3)));

    // A kustomization's secretGenerator takes an encrypted file whole: kas
    // renders it with the ciphertext as the value, agentk decrypts it.
    kubectl(&[
        "create",
        "secret",
        "generic",
        "sops-age",
        &from_file("new.agekey", &key2),
        "-n",
        ns,
    ]);
    let app_config = format!("token: {token}\nurl: https://db.example\n");
    let generated = commit(
        &repo,
        &[
            (CONFIG, Some(&config(ns, true))),
            (
                "kustom/kustomization.yaml",
                Some(
                    "secretGenerator:\n- name: app-config\n  files: [config.enc.yaml]\ngeneratorOptions: {disableNameSuffixHash: true}\n",
                ),
            ),
            (
                "kustom/config.enc.yaml",
                Some(&encrypt(work, &app_config, &recipient2, None)),
            ),
        ],
    );
    refresh();
    // The commit may first sync under the config before it (configs and
    // manifests travel apart), without the kustomization: wait for the
    // Secret itself.
    wait("the generated Secret", Duration::from_secs(90), || {
        setup
            .sync_of(&generated)
            .is_some_and(|s| s["state"] == "synced")
            && kubectl_get(&["secret", "app-config", "-n", ns]).is_some()
    });
    let secret = kubectl_get(&["secret", "app-config", "-n", ns]).expect("the generated Secret");
    let value = secret["data"]["config.enc.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{secret}"));
    let value = base64::engine::general_purpose::STANDARD
        .decode(value)
        .expect("base64");
    let text = String::from_utf8(value).expect("UTF-8");
    let decrypted: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        decrypted,
        serde_json::json!({"token": token, "url": "https://db.example"}),
        "{text}"
    );
    assert!(kubectl_get(&["configmap", "after-key-loss", "-n", ns]).is_some());
    assert_eq!(password(), Some(b64(&pw3)));

    // Nowhere in clear but in the cluster: kas's data folder (the database
    // and all), kas's log, agentk's log, every sync report, the Events.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let mut folders = vec![setup.dir.path().join("kas")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("kas's folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                places.push((path.display().to_string(), bytes));
            }
        }
    }
    assert!(!places.is_empty(), "kas's files read");
    places.push(("kas's log".into(), setup.kas.log().into_bytes()));
    places.push(("agentk's log".into(), agentk.log().into_bytes()));
    let reports = setup
        .cli(&["agent", "gitops", "prod", "-o", "json"])
        .expect("reports");
    places.push(("the sync reports".into(), reports.into_bytes()));
    let events = kubectl(&["get", "events", "-n", ns, "-o", "json"]);
    places.push(("the Events".into(), events.into_bytes()));
    for (place, bytes) in &places {
        for secret in secrets {
            for needle in [secret.clone(), b64(secret)] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{place} holds the plaintext {needle:?}"
                );
            }
        }
    }
    drop(agentk);
}
