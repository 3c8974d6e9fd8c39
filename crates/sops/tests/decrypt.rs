//! Files encrypted by the real `sops` (built by `scripts/signing-tools.sh`)
//! decrypted by this crate: the format as sops writes it, not as we read its
//! documentation.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_sops::{Decrypted, Keys, SopsError, ValueProblem, decrypt, is_encrypted};

// === fixtures ===

/// The folder holding `sops` and `age-keygen` (`scripts/signing-tools.sh`).
fn tools() -> PathBuf {
    tether_testenv::signing_tools().expect("the signing tools")
}

/// A folder of its own for each test, removed when the test ends.
struct Workdir {
    dir: tempfile::TempDir,
}

/// An age key pair made by `age-keygen`.
struct AgeKey {
    /// The whole key file, comments included, as a Secret would hold it.
    file: String,
    recipient: String,
}

impl Workdir {
    fn new() -> Workdir {
        let work = Workdir {
            dir: tempfile::tempdir().expect("a temporary folder"),
        };
        std::fs::write(work.no_config(), "").expect("writes an empty sops config");
        work
    }

    /// An empty `.sops.yaml`: passed explicitly so that sops does not look
    /// for one in the folders above and pick up somebody's creation rules.
    fn no_config(&self) -> PathBuf {
        self.path("no-config.yaml")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn age_key(&self, name: &str) -> AgeKey {
        let path = self.path(name);
        let out = Command::new(tools().join("age-keygen"))
            .arg("-o")
            .arg(&path)
            .output()
            .expect("age-keygen runs");
        assert!(
            out.status.success(),
            "age-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = std::fs::read_to_string(&path).expect("age-keygen wrote its key");
        let recipient = file
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("the key file names its public key")
            .to_owned();
        AgeKey { file, recipient }
    }

    /// `sops --encrypt` of `plaintext` saved as `name`, for these age
    /// recipients, with extra flags such as `--encrypted-regex`.
    fn encrypt(
        &self,
        name: &str,
        plaintext: &str,
        recipients: &[&AgeKey],
        flags: &[&str],
    ) -> Vec<u8> {
        let path = self.path(name);
        std::fs::write(&path, plaintext).expect("writes the plaintext");
        let recipients: Vec<&str> = recipients.iter().map(|k| k.recipient.as_str()).collect();
        let out = Command::new(tools().join("sops"))
            .current_dir(self.dir.path())
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_RECIPIENTS")
            .arg("--config")
            .arg(self.no_config())
            .arg("--encrypt")
            .arg("--age")
            .arg(recipients.join(","))
            .args(flags)
            .arg(&path)
            .output()
            .expect("sops runs");
        assert!(
            out.status.success(),
            "sops --encrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn keys_of(entries: &[(&str, &str)]) -> Keys {
    Keys::from_secret_data(entries.iter().map(|(n, v)| (*n, v.as_bytes()))).expect("the keys parse")
}

fn keys_for(key: &AgeKey) -> Keys {
    keys_of(&[("identity.agekey", &key.file)])
}

/// Each document of the decrypted output as a JSON value.
fn documents(decrypted: &Decrypted) -> Vec<Value> {
    let text = std::str::from_utf8(&decrypted.bytes).expect("the output is UTF-8");
    text.split("---\n")
        .map(|doc| serde_json::from_str(doc).expect("each document is JSON"))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// The file with its first `from` replaced by `to`.
fn edited(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = text(bytes);
    assert!(text.contains(from), "the fixture has {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

/// The `ENC[...]` value on the line of `key:` (YAML).
fn encrypted_value_of(bytes: &[u8], key: &str) -> String {
    let text = text(bytes);
    let prefix = format!("{key}: ");
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(&prefix))
        .filter(|v| v.starts_with("ENC["))
        .unwrap_or_else(|| panic!("{key} has an encrypted value"))
        .to_owned()
}

const SECRET: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: prod
type: Opaque
stringData:
  username: admin
  # the production password
  password: correct-horse-battery-staple
";

const PASSWORD: &str = "correct-horse-battery-staple";

// === decryption ===

#[test]
fn a_secret_decrypts_to_its_exact_values() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    assert!(!text(&encrypted).contains(PASSWORD));

    let decrypted = decrypt("secret.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    assert_eq!(
        documents(&decrypted),
        [json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "prod"},
            "type": "Opaque",
            "stringData": {"username": "admin", "password": PASSWORD},
        })]
    );
    assert_eq!(decrypted.values, 7);
}

#[test]
fn the_output_keeps_the_key_order_of_the_file() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("order.yaml", "zeta: 1\nalpha: 2\nmid: 3\n", &[&key], &[]);

    let decrypted = decrypt("order.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    assert_eq!(
        text(&decrypted.bytes),
        "{\"zeta\":1,\"alpha\":2,\"mid\":3}\n"
    );
}

#[test]
fn an_encrypted_regex_leaves_metadata_plain_and_decrypts() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt(
        "secret.yaml",
        SECRET,
        &[&key],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    assert!(
        text(&encrypted).contains("name: db"),
        "metadata stays readable"
    );

    let decrypted = decrypt("secret.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    let doc = &documents(&decrypted)[0];
    assert_eq!(doc["stringData"]["password"], PASSWORD);
    assert_eq!(doc["metadata"]["name"], "db");
    assert_eq!(decrypted.values, 2);
}

#[test]
fn an_unencrypted_suffix_key_stays_plain() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let plaintext = "token: s3cret\nnote_unencrypted: visible\n";
    let encrypted = work.encrypt("app.yaml", plaintext, &[&key], &[]);
    assert!(text(&encrypted).contains("note_unencrypted: visible"));

    let decrypted = decrypt("app.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    assert_eq!(
        documents(&decrypted),
        [json!({"token": "s3cret", "note_unencrypted": "visible"})]
    );
    assert_eq!(decrypted.values, 1);
}

#[test]
fn a_json_file_decrypts() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let plaintext = r#"{"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "api"}, "stringData": {"token": "tok-123", "port": 8443}}"#;
    let encrypted = work.encrypt("secret.json", plaintext, &[&key], &[]);
    assert!(
        text(&encrypted).trim_start().starts_with('{'),
        "sops wrote JSON"
    );

    let decrypted = decrypt("secret.json", &encrypted, &keys_for(&key)).expect("decrypts");

    let value: Value = serde_json::from_slice(&decrypted.bytes).expect("one JSON document");
    assert_eq!(
        value,
        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "api"}, "stringData": {"token": "tok-123", "port": 8443}})
    );
    assert!(
        text(&decrypted.bytes).starts_with("{\"kind\""),
        "key order kept"
    );
}

#[test]
fn a_multi_document_file_decrypts_every_document() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let plaintext = "\
apiVersion: v1
kind: Secret
metadata: {name: one}
stringData: {a: first}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two}
data: {b: second}
";
    let encrypted = work.encrypt(
        "many.yaml",
        plaintext,
        &[&key],
        &["--encrypted-regex", "^(data|stringData)$"],
    );

    let decrypted = decrypt("many.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    let docs = documents(&decrypted);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["stringData"]["a"], "first");
    assert_eq!(docs[1]["data"]["b"], "second");
    assert!(
        docs.iter().all(|d| d.get("sops").is_none()),
        "no metadata left"
    );
}

#[test]
fn ints_bools_floats_and_lists_keep_their_types() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let plaintext = "\
replicas: 3
negative: -12
enabled: true
disabled: false
ratio: 0.25
whole: 2.0
empty: \"\"
nothing: null
items: [a, 7, false]
nested: [[x, 1.5]]
created: 2024-01-02
";
    let encrypted = work.encrypt("types.yaml", plaintext, &[&key], &[]);

    let decrypted = decrypt("types.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    assert_eq!(
        documents(&decrypted),
        [json!({
            "replicas": 3, "negative": -12, "enabled": true, "disabled": false,
            "ratio": 0.25, "whole": 2.0, "empty": "", "nothing": null,
            "items": ["a", 7, false], "nested": [["x", 1.5]],
            "created": "2024-01-02T00:00:00Z",
        })]
    );
}

#[test]
fn plain_values_of_every_type_hash_like_sops() {
    // Nothing is encrypted here (no key matches the regex), so the MAC covers
    // only plain values, typed by our YAML parser as sops's was.
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let plaintext = "\
name: x
on: yes
count: 0755
hex: 0x1F
float: 1e3
neg: -0.5
inf: .inf
when: 2024-01-02T03:04:05Z
day: 2024-01-02
quoted: '42'
flag: True
block: |
  line one
  line two
merge_base: &base {a: 1}
merged:
  <<: *base
  b: 2
secret: s
";
    let encrypted = work.encrypt(
        "plain.yaml",
        plaintext,
        &[&key],
        &["--encrypted-regex", "^secret$"],
    );

    let decrypted = decrypt("plain.yaml", &encrypted, &keys_for(&key)).expect("decrypts");

    let doc = &documents(&decrypted)[0];
    assert_eq!(doc["secret"], "s");
    assert_eq!(doc["count"], 0o755);
    assert_eq!(doc["on"], "yes");
    assert_eq!(doc["day"], "2024-01-02T00:00:00Z");
    assert_eq!(
        doc["merged"],
        json!({"a": 1, "b": 2}),
        "the merge key is applied"
    );
}

#[test]
fn a_file_for_two_recipients_opens_with_the_second_key() {
    let work = Workdir::new();
    let first = work.age_key("first.txt");
    let second = work.age_key("second.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&first, &second], &[]);

    let decrypted = decrypt("secret.yaml", &encrypted, &keys_for(&second)).expect("decrypts");

    assert_eq!(documents(&decrypted)[0]["stringData"]["password"], PASSWORD);
}

#[test]
fn a_rotated_secret_opens_with_its_second_identity() {
    let work = Workdir::new();
    let old = work.age_key("old.txt");
    let new = work.age_key("new.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&new], &[]);

    let one_entry = keys_of(&[("keys.agekey", &format!("{}\n{}", old.file, new.file))]);
    let two_entries = keys_of(&[("old.agekey", &old.file), ("new.agekey", &new.file)]);

    for keys in [one_entry, two_entries] {
        let decrypted = decrypt("secret.yaml", &encrypted, &keys).expect("decrypts");
        assert_eq!(documents(&decrypted)[0]["stringData"]["password"], PASSWORD);
    }
}

#[test]
fn mac_only_encrypted_files_allow_plain_edits() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt(
        "secret.yaml",
        SECRET,
        &[&key],
        &["--encrypted-regex", "^stringData$", "--mac-only-encrypted"],
    );
    let relabelled = edited(&encrypted, "name: db", "name: db2");

    let decrypted = decrypt("secret.yaml", &relabelled, &keys_for(&key)).expect("decrypts");

    let doc = &documents(&decrypted)[0];
    assert_eq!(doc["metadata"]["name"], "db2");
    assert_eq!(doc["stringData"]["password"], PASSWORD);
}

// === refusals ===

/// The refusal's message, checked to carry no secret.
fn refused(result: Result<Decrypted, SopsError>, key: &AgeKey) -> SopsError {
    let err = result.expect_err("the file is refused");
    let message = err.to_string();
    let secret_line = key
        .file
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("a secret line");
    for secret in [PASSWORD, "correct-horse", "s3cret", secret_line] {
        assert!(!message.contains(secret), "{message}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
    }
    err
}

#[test]
fn a_changed_character_of_a_value_is_refused() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let value = encrypted_value_of(&encrypted, "password");
    let data_at = value.find("data:").expect("a data field") + "data:".len();
    let mut changed = value.clone().into_bytes();
    changed[data_at] = if changed[data_at] == b'A' { b'B' } else { b'A' };
    let tampered = edited(&encrypted, &value, &text(&changed));

    let err = refused(decrypt("secret.yaml", &tampered, &keys_for(&key)), &key);

    assert!(
        matches!(err, SopsError::TamperedValue { ref key, problem: ValueProblem::DoesNotDecrypt, .. } if key == "stringData.password"),
        "{err}"
    );
}

#[test]
fn swapped_values_are_refused() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let username = encrypted_value_of(&encrypted, "username");
    let password = encrypted_value_of(&encrypted, "password");
    let swapped = text(&encrypted)
        .replacen(&username, "@@USER@@", 1)
        .replacen(&password, &username, 1)
        .replacen("@@USER@@", &password, 1);

    let err = refused(
        decrypt("secret.yaml", swapped.as_bytes(), &keys_for(&key)),
        &key,
    );

    assert!(matches!(err, SopsError::TamperedValue { .. }), "{err}");
}

#[test]
fn reordered_list_items_are_refused_by_the_mac() {
    // List items share their additional data, so each still decrypts; only
    // the MAC sees the new order.
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("list.yaml", "hosts:\n  - alpha\n  - beta\n", &[&key], &[]);
    let original = text(&encrypted);
    let mut lines: Vec<&str> = original.lines().collect();
    let items: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- ENC["))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(items.len(), 2);
    lines.swap(items[0], items[1]);
    let swapped = format!("{}\n", lines.join("\n"));

    let err = refused(
        decrypt("list.yaml", swapped.as_bytes(), &keys_for(&key)),
        &key,
    );

    assert!(matches!(err, SopsError::Tampered { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "list.yaml: its MAC does not match: the file was changed after it was encrypted"
    );
}

#[test]
fn a_plain_string_in_place_of_an_encrypted_value_is_refused() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let password = encrypted_value_of(&encrypted, "password");
    let tampered = edited(&encrypted, &password, "s3cret");

    let err = refused(decrypt("secret.yaml", &tampered, &keys_for(&key)), &key);

    assert!(
        matches!(
            err,
            SopsError::TamperedValue {
                problem: ValueProblem::NotEncrypted,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_changed_plain_value_under_an_encrypted_regex_is_refused() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt(
        "secret.yaml",
        SECRET,
        &[&key],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    let tampered = edited(&encrypted, "namespace: prod", "namespace: kube-system");

    let err = refused(decrypt("secret.yaml", &tampered, &keys_for(&key)), &key);

    assert!(matches!(err, SopsError::Tampered { .. }), "{err}");
}

#[test]
fn an_added_plain_value_under_an_encrypted_regex_is_refused() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt(
        "secret.yaml",
        SECRET,
        &[&key],
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    let tampered = edited(&encrypted, "type: Opaque", "type: Opaque\nimmutable: false");

    let err = refused(decrypt("secret.yaml", &tampered, &keys_for(&key)), &key);

    assert!(matches!(err, SopsError::Tampered { .. }), "{err}");
}

#[test]
fn a_file_for_another_key_names_its_recipient() {
    let work = Workdir::new();
    let owner = work.age_key("owner.txt");
    let stranger = work.age_key("stranger.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&owner], &[]);

    let err = refused(
        decrypt("secret.yaml", &encrypted, &keys_for(&stranger)),
        &stranger,
    );

    match &err {
        SopsError::NoKey { path, recipients } => {
            assert_eq!(path, "secret.yaml");
            assert_eq!(recipients, std::slice::from_ref(&owner.recipient));
        }
        other => panic!("expected NoKey, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "none of the keys in the Secret can decrypt secret.yaml: encrypted for {}",
            owner.recipient
        )
    );
}

#[test]
fn an_empty_secret_cannot_decrypt() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let empty = Keys::from_secret_data([]).expect("no keys is fine");
    assert!(empty.is_empty());

    let err = refused(decrypt("secret.yaml", &encrypted, &empty), &key);

    assert!(matches!(err, SopsError::NoKey { .. }), "{err}");
}

#[test]
fn dotenv_files_are_unsupported() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("app.env", "TOKEN=s3cret\nMODE=prod\n", &[&key], &[]);
    assert!(is_encrypted("app.env", &encrypted));

    let err = refused(decrypt("app.env", &encrypted, &keys_for(&key)), &key);

    assert!(matches!(err, SopsError::Unsupported { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "app.env: sops dotenv files are not supported"
    );
}

#[test]
fn ini_files_are_unsupported() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("app.ini", "[db]\npassword = s3cret\n", &[&key], &[]);
    assert!(is_encrypted("app.ini", &encrypted));

    let err = refused(decrypt("app.ini", &encrypted, &keys_for(&key)), &key);

    assert_eq!(err.to_string(), "app.ini: sops INI files are not supported");
}

#[test]
fn binary_files_are_unsupported() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt(
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\ns3cret\n",
        &[&key],
        &["--input-type", "binary"],
    );
    assert!(is_encrypted("tls.key", &encrypted));

    let err = refused(decrypt("tls.key", &encrypted, &keys_for(&key)), &key);

    assert!(matches!(err, SopsError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("binary"), "{err}");
}

#[test]
fn a_plain_manifest_is_not_a_sops_file() {
    let err = decrypt(
        "cm.yaml",
        b"apiVersion: v1\nkind: ConfigMap\n",
        &Keys::default(),
    )
    .expect_err("refused");
    assert!(matches!(err, SopsError::Malformed { .. }), "{err}");
}

#[test]
fn a_yaml_bomb_fails_fast() {
    let mut bomb = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    bomb.push_str("sops: {mac: x, version: 3.9.0}\n");
    let started = Instant::now();

    let err = decrypt("bomb.yaml", bomb.as_bytes(), &Keys::default()).expect_err("refused");

    assert!(matches!(err, SopsError::Malformed { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(!is_encrypted("bomb.yaml", bomb.as_bytes()));
}

#[test]
fn a_huge_file_is_refused_before_it_is_parsed() {
    let huge = vec![b' '; 6 << 20];
    let err = decrypt("huge.yaml", &huge, &Keys::default()).expect_err("refused");
    assert!(matches!(err, SopsError::TooLarge { .. }), "{err}");
}

// === OpenPGP ===

/// A GnuPG home of its own, with the gpg-agent gpg starts stopped on drop.
struct Gpg {
    home: PathBuf,
}

/// An OpenPGP key made by gpg, exported as a Secret's `.asc` entry holds it.
struct PgpKey {
    fingerprint: String,
    armored_secret: String,
}

impl Gpg {
    fn new(work: &Workdir) -> Gpg {
        let home = work.path("gnupg");
        std::fs::create_dir(&home).expect("creates GNUPGHOME");
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("GNUPGHOME is private");
        Gpg { home }
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args(["--batch", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("gpg runs (Debian's, installed by scripts/install-services.sh)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A key of `algorithm` (`future-default` is Curve25519, or `rsa3072`)
    /// that can encrypt.
    fn key(&self, name: &str, algorithm: &str, passphrase: &str) -> PgpKey {
        let user = format!("{name} <{name}@tether.test>");
        self.gpg(&[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            &user,
            algorithm,
            "default",
            "never",
        ]);
        let listing = text(&self.gpg(&["--with-colons", "--list-secret-keys", &user]));
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.trim_matches(':').rsplit(':').next())
            .expect("gpg lists the fingerprint")
            .to_owned();
        if algorithm.starts_with("rsa") {
            // An RSA primary key only signs; encryption needs a subkey.
            self.gpg(&[
                "--passphrase",
                passphrase,
                "--quick-add-key",
                &fingerprint,
                algorithm,
                "encr",
                "never",
            ]);
        }
        let armored_secret = text(&self.gpg(&[
            "--passphrase",
            passphrase,
            "--armor",
            "--export-secret-keys",
            &fingerprint,
        ]));
        PgpKey {
            fingerprint,
            armored_secret,
        }
    }

    /// `sops --encrypt --pgp` (sops asks this gpg for the public keys).
    fn encrypt(
        &self,
        work: &Workdir,
        name: &str,
        plaintext: &str,
        pgp: &[&PgpKey],
        age: &[&AgeKey],
    ) -> Vec<u8> {
        let path = work.path(name);
        std::fs::write(&path, plaintext).expect("writes the plaintext");
        let fingerprints: Vec<&str> = pgp.iter().map(|k| k.fingerprint.as_str()).collect();
        let mut command = Command::new(tools().join("sops"));
        command
            .current_dir(work.dir.path())
            .env("GNUPGHOME", &self.home)
            .arg("--config")
            .arg(work.no_config())
            .arg("--encrypt")
            .arg("--pgp")
            .arg(fingerprints.join(","));
        if !age.is_empty() {
            let recipients: Vec<&str> = age.iter().map(|k| k.recipient.as_str()).collect();
            command.arg("--age").arg(recipients.join(","));
        }
        let out = command.arg(&path).output().expect("sops runs");
        assert!(
            out.status.success(),
            "sops --encrypt --pgp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn pgp_keys(key: &PgpKey) -> Keys {
    keys_of(&[("sops.asc", &key.armored_secret)])
}

#[test]
fn a_curve25519_pgp_key_decrypts() {
    let work = Workdir::new();
    let gpg = Gpg::new(&work);
    let key = gpg.key("ops", "future-default", "");
    let encrypted = gpg.encrypt(&work, "secret.yaml", SECRET, &[&key], &[]);

    let decrypted = decrypt("secret.yaml", &encrypted, &pgp_keys(&key)).expect("decrypts");

    assert_eq!(documents(&decrypted)[0]["stringData"]["password"], PASSWORD);
}

#[test]
fn an_rsa_pgp_key_decrypts() {
    let work = Workdir::new();
    let gpg = Gpg::new(&work);
    let key = gpg.key("ops", "rsa3072", "");
    let encrypted = gpg.encrypt(&work, "secret.yaml", SECRET, &[&key], &[]);

    let decrypted = decrypt("secret.yaml", &encrypted, &pgp_keys(&key)).expect("decrypts");

    assert_eq!(documents(&decrypted)[0]["stringData"]["password"], PASSWORD);
}

#[test]
fn a_file_for_age_and_pgp_opens_with_the_pgp_key_alone() {
    let work = Workdir::new();
    let gpg = Gpg::new(&work);
    let pgp = gpg.key("ops", "future-default", "");
    let age = work.age_key("key.txt");
    let encrypted = gpg.encrypt(&work, "secret.yaml", SECRET, &[&pgp], &[&age]);

    let decrypted = decrypt("secret.yaml", &encrypted, &pgp_keys(&pgp)).expect("decrypts");

    assert_eq!(documents(&decrypted)[0]["stringData"]["password"], PASSWORD);
}

#[test]
fn a_pgp_file_for_another_key_names_its_fingerprint() {
    let work = Workdir::new();
    let gpg = Gpg::new(&work);
    let owner = gpg.key("owner", "future-default", "");
    let stranger = gpg.key("stranger", "future-default", "");
    let encrypted = gpg.encrypt(&work, "secret.yaml", SECRET, &[&owner], &[]);

    let err = decrypt("secret.yaml", &encrypted, &pgp_keys(&stranger)).expect_err("refused");

    assert!(matches!(err, SopsError::NoKey { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("PGP fingerprint {}", owner.fingerprint)),
        "{err}"
    );
    assert!(!err.to_string().contains(PASSWORD));
}

#[test]
fn a_pgp_key_with_a_passphrase_is_refused_by_name() {
    let work = Workdir::new();
    let gpg = Gpg::new(&work);
    let key = gpg.key("locked", "future-default", "a passphrase");

    let err = Keys::from_secret_data([("locked.asc", key.armored_secret.as_bytes())])
        .expect_err("refused");

    assert!(matches!(err, SopsError::Keys { .. }), "{err}");
    assert!(err.to_string().contains("locked.asc"), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
}

// === what never shows ===

#[test]
fn debug_output_never_shows_keys_or_values() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let encrypted = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let keys = keys_for(&key);
    let decrypted = decrypt("secret.yaml", &encrypted, &keys).expect("decrypts");

    let keys_debug = format!("{keys:?}");
    let decrypted_debug = format!("{decrypted:?}");

    assert_eq!(keys_debug, "Keys { age_identities: 1, pgp_keys: 0 }");
    assert!(!decrypted_debug.contains(PASSWORD), "{decrypted_debug}");
    assert!(
        decrypted_debug.starts_with("Decrypted { bytes: <"),
        "{decrypted_debug}"
    );
}

// === detection ===

#[test]
fn sops_files_of_every_format_are_detected() {
    let work = Workdir::new();
    let key = work.age_key("key.txt");
    let yaml = work.encrypt("secret.yaml", SECRET, &[&key], &[]);
    let json = work.encrypt("secret.json", r#"{"a": "b"}"#, &[&key], &[]);
    let many = work.encrypt("many.yaml", "a: 1\n---\nb: 2\n", &[&key], &[]);

    assert!(is_encrypted("secret.yaml", &yaml));
    assert!(is_encrypted("secret.json", &json));
    assert!(is_encrypted("many.yaml", &many));
    // The name does not matter: JSON is YAML.
    assert!(is_encrypted("secret.yml", &json));
}

#[test]
fn ordinary_manifests_are_not_sops_files() {
    let flux = "\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps}
spec:
  decryption:
    provider: sops
    secretRef: {name: sops-age}
";
    let sops_as_data = "apiVersion: v1\nkind: ConfigMap\ndata:\n  sops: {mac: x}\n";
    let unencrypted_sops_key = "sops: just a string\n";
    let json = r#"{"kind": "ConfigMap", "data": {"tool": "sops"}}"#;
    let big: String = (0..20_000)
        .map(|i| format!("- name: item-{i}\n  value: {i}\n"))
        .collect();

    for (path, bytes) in [
        ("flux.yaml", flux.as_bytes()),
        ("cm.yaml", sops_as_data.as_bytes()),
        ("odd.yaml", unencrypted_sops_key.as_bytes()),
        ("cm.json", json.as_bytes()),
        ("big.yaml", big.as_bytes()),
        ("broken.yaml", b"sops: [unclosed\n".as_slice()),
        ("binary.bin", &[0xff, 0xfe, b's', b'o', b'p', b's', 0]),
    ] {
        assert!(!is_encrypted(path, bytes), "{path}");
    }
}

#[test]
fn detection_of_a_large_plain_manifest_is_fast() {
    let big: String = (0..50_000)
        .map(|i| format!("- name: item-{i}\n  value: sops-{i}\n"))
        .collect();
    let started = Instant::now();
    assert!(!is_encrypted("big.yaml", big.as_bytes()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}
