//! Decrypting SOPS files: the real `sops --decrypt` (the peer, a process
//! per file, as a user runs it) against this crate on the same files,
//! encrypted by the real `sops` for an age key in the same run: a Secret of
//! 10 values and a ConfigMap of 1,000.
//!
//! Run: `cargo bench -p tether-sops --bench decrypt`. Prints figures;
//! asserts nothing about them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn sops(tools: &Path) -> Command {
    let mut command = Command::new(tools.join("sops"));
    command
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .arg("--config")
        .arg("/dev/null");
    command
}

fn main() {
    let tools = tether_testenv::signing_tools().expect("the signing tools");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.txt");
    let out = Command::new(tools.join("age-keygen"))
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen runs");
    assert!(out.status.success(), "age-keygen");
    let identity = std::fs::read_to_string(&key).expect("key");
    let recipient = identity
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("a recipient")
        .to_owned();
    let keys =
        tether_sops::Keys::from_secret_data([("age.agekey", identity.as_bytes())]).expect("keys");

    let secret = {
        let mut text =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n".to_owned();
        for i in 0..10 {
            text.push_str(&format!("  key{i}: value-{i}-0123456789abcdef\n"));
        }
        text
    };
    let config = {
        let mut text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n".to_owned();
        for i in 0..1000 {
            text.push_str(&format!("  key{i:04}: value-{i}-0123456789abcdef\n"));
        }
        text
    };
    println!("decrypt: age, median of each (sops: 10 runs; this crate: 50)");
    for (name, plain) in [
        ("Secret, 10 values", secret),
        ("ConfigMap, 1,000 values", config),
    ] {
        let path = dir.path().join("plain.yaml");
        std::fs::write(&path, plain).expect("plain");
        let out = sops(&tools)
            .args([
                "--encrypt",
                "--age",
                &recipient,
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
            ])
            .arg(&path)
            .output()
            .expect("sops runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let encrypted_path = dir.path().join("encrypted.yaml");
        std::fs::write(&encrypted_path, &out.stdout).expect("encrypted");
        let peer: Vec<Duration> = (0..10)
            .map(|_| {
                let t = Instant::now();
                let decrypted = sops(&tools)
                    .env("SOPS_AGE_KEY_FILE", &key)
                    .arg("--decrypt")
                    .arg(&encrypted_path)
                    .output()
                    .expect("sops runs");
                assert!(decrypted.status.success(), "sops --decrypt");
                t.elapsed()
            })
            .collect();
        let ours: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                tether_sops::decrypt("encrypted.yaml", &out.stdout, &keys).expect("decrypts");
                t.elapsed()
            })
            .collect();
        let (peer, ours) = (median(peer), median(ours));
        println!(
            "  {name} ({} bytes encrypted): sops --decrypt {peer:?} · tether-sops {ours:?} (×{:.3})",
            out.stdout.len(),
            ours.as_secs_f64() / peer.as_secs_f64()
        );
    }
}
