//! agentk and kas over the agent channel, as real processes: a connected
//! agent shows in the API, a revoked token drops it within 2 s and its
//! reconnects are refused with the reason, and no token reaches a log.

use tether_e2e as support;

use std::time::{Duration, Instant};

use support::{Setup, probe, wait};

#[test]
fn a_connected_agent_shows_and_a_revoked_token_drops_it_within_two_seconds() {
    let setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait(
        "the agent to show as connected",
        Duration::from_secs(60),
        || setup.connections("prod").len() == 1,
    );
    let connection = &setup.connections("prod")[0];
    assert_eq!(connection["pod_name"], "agentk-0");
    assert_eq!(connection["pod_namespace"], "tether-test");
    let pinned = tether_testenv::pinned_kube_version().expect("pinned version");
    assert_eq!(connection["cluster_version"], pinned.as_str());
    wait("agentk to be ready", Duration::from_secs(5), || {
        probe(setup.probes, "/readiness") == Some(200)
    });

    setup
        .cli(&["token", "revoke", "prod", "1"])
        .expect("revoke");
    let revoked_at = Instant::now();
    wait(
        "the revoked agent to be dropped",
        Duration::from_secs(2),
        || setup.connections("prod").is_empty(),
    );
    eprintln!("dropped {:?} after revocation", revoked_at.elapsed());
    // agentk's readiness says why it is cut off, as `kubectl describe pod`
    // would show it.
    wait(
        "agentk to report the rejection",
        Duration::from_secs(10),
        || {
            agentk.readiness().is_some_and(|(status, why)| {
                status == 503
                    && why.contains("kas rejected the agent token")
                    && why.contains("revoked")
            })
        },
    );
    // Its reconnect (after a few seconds of backoff) is refused too, and
    // kas counts the refusal.
    wait(
        "the reconnect to be refused",
        Duration::from_secs(20),
        || {
            agentk.metric("tether_agentk_sessions_ended_total{reason=\"refused\"}") >= 2.0
                && setup.metric("tether_kas_agent_auth_failures_total") >= 1.0
        },
    );
    assert!(setup.connections("prod").is_empty());
    assert_eq!(
        probe(setup.probes, "/readiness"),
        Some(503),
        "an agent cut off from kas is not ready"
    );
    assert_eq!(probe(setup.probes, "/liveness"), Some(200));

    for (name, log) in [("kas", setup.kas.log()), ("agentk", agentk.log())] {
        assert!(
            !log.contains(&token),
            "the agent token reached the {name} log"
        );
    }
}

#[test]
fn an_unknown_token_is_refused_with_a_clear_message() {
    let setup = Setup::start();
    let stranger = tether_credentials::Token::generate(tether_credentials::TokenKind::Agent);
    let agentk = setup.agentk(stranger.expose_secret());
    wait(
        "agentk to report the refusal",
        Duration::from_secs(60),
        || {
            agentk.readiness().is_some_and(|(status, why)| {
                status == 503
                    && why.contains("kas rejected the agent token")
                    && why.contains("unknown agent token")
            })
        },
    );
    assert!(!agentk.log().contains(stranger.expose_secret()));
}

#[test]
fn agents_reconnect_by_themselves_after_kas_is_killed_and_restarted() {
    let mut setup = Setup::start();
    let token = setup.register_agent("prod");
    let agentk = setup.agentk(&token);
    wait("the agent to connect", Duration::from_secs(60), || {
        setup.connections("prod").len() == 1
    });

    setup.kill_and_restart_kas();
    wait(
        "the agent to reconnect to the new kas",
        Duration::from_secs(60),
        || setup.connections("prod").len() == 1,
    );
    let agents: serde_json::Value =
        serde_json::from_str(&setup.cli(&["agent", "list", "-o", "json"]).expect("list"))
            .expect("JSON");
    assert_eq!(
        agents.as_array().map(Vec::len),
        Some(1),
        "no duplicate agent records: {agents}"
    );
    // kas registers a session before it sends Welcome; agentk counts it
    // on Welcome.
    wait(
        "agentk to count its second session",
        Duration::from_secs(10),
        || agentk.metric("tether_agentk_sessions_opened_total") == 2.0,
    );
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_are_rate_limited() {
    use tether_proto::v1::agent_channel_client::AgentChannelClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let setup = Setup::start();
    let ca = std::fs::read(setup.dir.path().join("kas/agent-ca.crt")).expect("dev CA");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let uri = setup.agent_addr.replace("grpcs://", "https://");
    let channel = Endpoint::from_shared(uri)
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS connection to kas");
    let mut client = AgentChannelClient::new(channel);

    let mut codes = Vec::new();
    for _ in 0..(tether_channel::ratelimit::MAX_FAILURES + 1) {
        let bogus = tether_credentials::Token::generate(tether_credentials::TokenKind::Agent);
        let mut request = tonic::Request::new(tokio_stream::iter(Vec::<
            tether_proto::v1::AgentMessage,
        >::new()));
        let bearer = format!("Bearer {}", bogus.expose_secret())
            .parse()
            .expect("header");
        request.metadata_mut().insert("authorization", bearer);
        let status = client
            .session(request)
            .await
            .expect_err("a bogus token is refused");
        codes.push(status.code());
    }
    let (last, earlier) = codes.split_last().expect("attempts");
    assert!(
        earlier.iter().all(|c| *c == tonic::Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(*last, tonic::Code::ResourceExhausted, "{codes:?}");
}
