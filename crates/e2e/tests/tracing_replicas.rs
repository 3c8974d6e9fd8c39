//! A proxied request traced across replicas: kubectl reaches replica 1,
//! which routes to replica 0 (where the agent's tunnels are), which sends it
//! through a tunnel to agentk: in Jaeger v2, one trace in which replica 1's
//! `proxy` span is the parent of replica 0's `routed` span, and that of
//! agentk's `kubernetes api` span.
//!
//! One test in this binary: it sets the OpenTelemetry variables the kas
//! replicas and agentk inherit.

use tether_e2e as support;

use std::time::Duration;

use serde_json::Value;
use support::fleet::Fleet;
use support::{http_get, traces, wait};

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_request_is_traced_across_the_replica_hop_and_the_tunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jaeger = tether_testenv::jaeger::Jaeger::start(dir.path())
        .await
        .expect("Jaeger starts");
    let endpoint = format!("http://{}", jaeger.otlp_http);
    // SAFETY: the only test of this binary, before it starts any process or
    // thread of its own that reads the environment.
    unsafe {
        std::env::set_var("OTEL_TRACES_SAMPLER", "always_on");
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
        std::env::set_var("AGENTK_OTLP_ENDPOINT", &endpoint);
    }
    tokio::task::spawn_blocking(move || run(&jaeger, &endpoint))
        .await
        .expect("test body");
}

fn run(jaeger: &tether_testenv::jaeger::Jaeger, endpoint: &str) {
    let fleet = Fleet::start(2, &["--otlp-endpoint", endpoint]);
    let (tokens, ci) = fleet.register_ci_agents(&["hop"]);
    let token_file = fleet.dir.path().join("ci.token");
    std::fs::write(&token_file, ci).expect("token file");
    let first = format!("grpcs://{}", fleet.replicas[0].agent);
    let _agentk = fleet.agentk_via(&tokens[0], "hop-0", "default", &first);
    wait(
        "the agent's tunnels on replica 0",
        Duration::from_secs(60),
        || {
            fleet
                .tunnels("hop")
                .first()
                .is_some_and(|(i, n)| *i == 0 && *n == 2)
        },
    );
    let kubeconfig = fleet.kubeconfig(1, "hop", &token_file);
    wait("kubectl through replica 1", Duration::from_secs(60), || {
        support::kubectl(&kubeconfig)
            .args(["get", "namespace", "default", "-o", "name"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let started = std::time::Instant::now();
    while routed_trace(jaeger).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no routed trace; Jaeger has services {:?} and these traces of agentk: {}",
            http_get(jaeger.query, "/api/services"),
            outline(jaeger)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A trace holding kas's `proxy` → kas's `routed` → agentk's `kubernetes
/// api`, each the parent of the next, the two kas spans from two processes
/// (`service.instance.id` tells replicas apart), if Jaeger holds one.
fn routed_trace(jaeger: &tether_testenv::jaeger::Jaeger) -> Option<Value> {
    traces::find(jaeger, "service=agentk&operation=kubernetes%20api&limit=50")
        .into_iter()
        .find(|trace| {
            let names = traces::by_name(trace);
            let (Some(proxy), Some(routed), Some(call)) = (
                names.get("proxy"),
                names.get("routed"),
                names.get("kubernetes api"),
            ) else {
                return false;
            };
            traces::parent(routed) == proxy["spanID"].as_str()
                && traces::parent(call) == routed["spanID"].as_str()
                && traces::service(trace, proxy) == Some("kas")
                && traces::service(trace, routed) == Some("kas")
                && traces::service(trace, call) == Some("agentk")
                && proxy["processID"] != routed["processID"]
        })
}

/// Each trace of agentk's in Jaeger, as its spans' names, services and
/// parents, for a failure's message.
fn outline(jaeger: &tether_testenv::jaeger::Jaeger) -> String {
    let mut text = String::new();
    for trace in traces::find(jaeger, "service=agentk&limit=20") {
        text.push_str("\n-");
        for span in trace["spans"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                " [{} {:?} {} parent {:?}]",
                span["operationName"],
                traces::service(&trace, span),
                span["spanID"],
                traces::parent(span)
            ));
        }
    }
    text
}
