//! Push webhooks from a real git host: Gitea (built from its Go module)
//! holds the repository; kas reads it over HTTP and never polls (its poll
//! interval is an hour); a push makes Gitea deliver a signed webhook, kas
//! reads the repository and agentk applies the change to the real cluster.
//! A hook signed with another secret changes nothing. kas posts the sync's
//! commit status (`tether/prod`) back to Gitea: success once the change is
//! applied and Current.

use tether_e2e as support;

use std::time::Duration;

use support::gitea::Pipeline;
use support::{kubectl_get, wait};

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_gitea_reaches_the_cluster_through_its_signed_webhook() {
    let cluster = tether_testenv::shared();
    let ns = cluster.namespace("e2e-webhooks").await.expect("namespace");
    let ns = ns.name().to_owned();
    let host = tether_testenv::gitea::GitHost::start()
        .await
        .expect("Gitea starts");
    tokio::task::spawn_blocking(move || through_gitea(&host, &ns))
        .await
        .expect("test body");
}

/// POSTs `count` unsigned push deliveries to `path` of kas's API (`api`:
/// `http://…`) from 127.0.0.2, one connection each; their status codes.
fn flood(api: &str, path: &str, count: usize) -> Vec<u16> {
    let address: std::net::SocketAddr = api
        .trim_start_matches("http://")
        .parse()
        .expect("the API's address");
    (0..count)
        .map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("a socket");
            let from: std::net::SocketAddr = "127.0.0.2:0".parse().expect("an address");
            socket.bind(&from.into()).expect("bound to 127.0.0.2");
            socket.connect(&address.into()).expect("connected");
            support::post_raw(
                socket.into(),
                path,
                &[
                    ("x-gitea-event", "push"),
                    ("content-type", "application/json"),
                ],
                "{\"ref\": \"refs/heads/main\"}",
            )
        })
        .collect()
}

fn through_gitea(host: &tether_testenv::gitea::GitHost, ns: &str) {
    let pipeline = Pipeline::start(host, ns);
    let value = |ns: &str| {
        kubectl_get(&["configmap", "pushed", "-n", ns]).map(|c| c["data"]["value"].clone())
    };
    wait("the first sync", Duration::from_secs(90), || {
        value(ns).is_some_and(|v| v == "0")
    });

    // A hook signed with another secret: Gitea delivers it, kas refuses
    // it, and nothing is read.
    let forged = pipeline.add_hook(host, "not-the-secret");
    let refused = "tether_kas_webhook_deliveries_total{provider=\"gitea\",result=\"unauthorized\"}";
    let refused_before = pipeline.setup.metric(refused);
    pipeline.push_value(1);
    // kas counts the delivery it refused: once it has, nothing was read.
    wait(
        "the forged delivery to be refused",
        Duration::from_secs(30),
        || pipeline.setup.metric(refused) > refused_before,
    );
    assert_eq!(
        value(ns).expect("configmap"),
        "0",
        "a forged hook reads nothing"
    );
    host.api(
        "DELETE",
        &format!("/api/v1/repos/tether/config/hooks/{forged}"),
        None,
    )
    .expect("hook removed");

    // A stranger floods the hook's path unsigned, from another address
    // (127.0.0.2): cut at that source's budget, it spends none of the
    // project's, and the host's real delivery below still passes.
    let statuses = flood(
        &pipeline.setup.api,
        "/api/v1/projects/team%2Fconfig/hooks/gitea",
        200,
    );
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let unsigned = statuses.iter().filter(|s| **s == 401).count();
    eprintln!(
        "unsigned flood: {unsigned} refused as unsigned, {limited} cut by the source's budget"
    );
    assert!(limited >= 100 && unsigned + limited == 200, "{statuses:?}");

    // The real hook: the next push arrives without any poll.
    let secret = pipeline.secret.clone();
    pipeline.add_hook(host, &secret);
    pipeline.post_statuses(host);
    let pushed = std::time::Instant::now();
    let head = pipeline.push_value(2);
    wait("the pushed change", Duration::from_secs(30), || {
        value(ns).is_some_and(|v| v == "2")
    });
    eprintln!("push to applied: {:?}", pushed.elapsed());
    let report = pipeline
        .setup
        .cli(&["agent", "gitops", "prod", "-o", "json"])
        .expect("report");
    assert!(
        report.contains(&pipeline.head()),
        "the pushed commit is reported"
    );
    wait(
        "the commit status on Gitea",
        Duration::from_secs(30),
        || {
            pipeline
                .statuses(host, &head)
                .contains(&("tether/prod".to_owned(), "success".to_owned()))
        },
    );
    eprintln!("statuses: {:?}", pipeline.statuses(host, &head));
}
