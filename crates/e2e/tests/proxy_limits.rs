//! The API proxy and kas's listeners against clients that misbehave: a
//! watch that outlives its revoked token, a user in thousands of groups,
//! paths with dot segments, and connections that stall (slowloris). Real
//! kubectl, real kas and agentk, the real cluster.

use tether_e2e as support;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Setup, commit, kubectl, new_repo, wait};

/// Agent `prod` whose config admits users of group `team` (as themselves
/// when `as_user`, with one group per listed project), and agentk
/// connected with its tunnels.
fn start(projects: usize, as_user: bool) -> (Setup, support::Proc) {
    let setup = Setup::start();
    let repo = setup.dir.path().join("repo");
    new_repo(&repo);
    let mut config = String::from("user_access:\n");
    if as_user {
        config.push_str("  access_as:\n    user: {}\n");
    }
    config.push_str("  projects:\n");
    for i in 0..projects {
        config.push_str(&format!("  - id: team/project-{i}\n"));
    }
    commit(&repo, &[(".gitlab/agents/prod/config.yaml", Some(&config))]);
    let token = setup.register_agent_in("prod", repo.to_str().expect("utf-8"));
    let agentk = setup.agentk(&token);
    setup.wait_for_tunnels();
    (setup, agentk)
}

#[test]
fn a_revoked_personal_token_ends_its_open_watch() {
    let (setup, _agentk) = start(1, false);
    let (id, kubeconfig) = support::user_with_kubeconfig(&setup, "alice");
    let mut watch = kubectl(&kubeconfig)
        .args(["get", "configmaps", "-n", "kube-system", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    // The first line is the list before the watch; then the watch is open.
    let mut first = String::new();
    std::io::BufReader::new(watch.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("kubectl prints the list");
    assert!(first.starts_with("configmap/"), "{first}");
    setup
        .cli(&["user", "token", "revoke", "alice", &id])
        .expect("revoke");
    let revoked = Instant::now();
    wait("the watch to end", Duration::from_secs(2), || {
        matches!(watch.try_wait(), Ok(Some(_)))
    });
    eprintln!("watch ended {:?} after the revocation", revoked.elapsed());
}

#[test]
fn a_user_in_two_thousand_groups_gets_through() {
    let (setup, _agentk) = start(2_000, true);
    let (_, kubeconfig) = support::user_with_kubeconfig(&setup, "crowd");
    let out = kubectl(&kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whoami: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let groups = whoami["status"]["userInfo"]["groups"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    assert!(groups >= 2_000, "{groups} groups reached the API server");
}

/// A TLS client that trusts kas's development CA.
fn tls_connector(setup: &Setup) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt")).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("PEM")).expect("CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends `request` over TLS to `addr`; returns the whole answer.
fn tls_exchange(setup: &Setup, addr: SocketAddr, request: &str) -> String {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(tls_connector(setup), name).expect("TLS");
    let mut tcp = TcpStream::connect(addr).expect("connects");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(request.as_bytes()).expect("sent");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn paths_with_dot_segments_are_refused() {
    let (setup, _agentk) = start(1, false);
    for path in [
        "/k8s-proxy/../x",
        "/k8s-proxy/api/v1/namespaces/a/../../../x",
        "/k8s-proxy/api/%2e%2e/x",
        "/k8s-proxy/api/v1/./namespaces",
    ] {
        let answer = tls_exchange(
            &setup,
            setup.proxy,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: kas\r\nAuthorization: Bearer pat:prod:x\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
}

/// How long `stream` stays open while the client sends nothing more.
fn open_for(mut stream: impl Read) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn stalled_connections_are_closed_on_every_listener() {
    let setup = Setup::start();
    let api: SocketAddr = setup
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let limit = Duration::from_secs(15);
    let mut checks = Vec::new();
    // Half a request's headers, then nothing: plain HTTP (the API).
    checks.push(std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(api).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        tcp.write_all(b"GET /api/v1/agents HTTP/1.1\r\nHost: kas\r\nX-Slow: ")
            .expect("sent");
        ("api: partial headers", open_for(tcp))
    }));
    // A TCP connection that never starts its TLS handshake.
    for (name, addr) in [
        ("proxy: no TLS", setup.proxy),
        ("agent endpoint: no TLS", setup.agent_endpoint),
    ] {
        checks.push(std::thread::spawn(move || {
            let tcp = TcpStream::connect(addr).expect("connects");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            (name, open_for(tcp))
        }));
    }
    // TLS done, then half a request's headers.
    for (name, addr) in [
        ("proxy: partial headers", setup.proxy),
        ("agent endpoint: partial headers", setup.agent_endpoint),
    ] {
        let config = tls_connector(&setup);
        checks.push(std::thread::spawn(move || {
            let server = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut conn = rustls::ClientConnection::new(config, server).expect("TLS");
            let mut tcp = TcpStream::connect(addr).expect("connects");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            tls.write_all(b"GET /k8s-proxy/api HTTP/1.1\r\nHost: kas\r\nX-Slow: ")
                .expect("sent");
            (name, open_for(tls))
        }));
    }
    for check in checks {
        let (name, open) = check.join().expect("check");
        assert!(open < limit, "{name}: still open after {open:?}");
        eprintln!("{name}: closed after {open:?}");
    }
}
