//! Reading traces back from the tests' Jaeger (its HTTP query API), as the
//! tracing tests and benches check them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_testenv::jaeger::Jaeger;

/// The trace `id` (`Null` until Jaeger has it).
pub fn trace(jaeger: &Jaeger, id: &str) -> Value {
    search(jaeger, &format!("/api/traces/{id}"))
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

/// The traces a search finds (`service=kas&operation=…&limit=…`; a limit
/// must stay under the 100,000 traces Jaeger keeps).
pub fn find(jaeger: &Jaeger, query: &str) -> Vec<Value> {
    search(jaeger, &format!("/api/traces?{query}"))
}

fn search(jaeger: &Jaeger, path: &str) -> Vec<Value> {
    match crate::http_get(jaeger.query, path) {
        Some((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// How many traces a search finds once the count holds for 8 s: the
/// programs' batch processors send every 5 s by default.
pub fn settled_count(jaeger: &Jaeger, query: &str) -> usize {
    let mut count = find(jaeger, query).len();
    let mut held = Instant::now();
    while held.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(500));
        let now = find(jaeger, query).len();
        if now != count {
            count = now;
            held = Instant::now();
        }
    }
    count
}

/// Each span of `trace` by its name (the first of a name).
pub fn by_name(trace: &Value) -> HashMap<String, &Value> {
    let mut names = HashMap::new();
    for span in trace["spans"].as_array().into_iter().flatten() {
        if let Some(name) = span["operationName"].as_str() {
            names.entry(name.to_owned()).or_insert(span);
        }
    }
    names
}

/// The id of `span`'s parent (its first reference).
pub fn parent(span: &Value) -> Option<&str> {
    span["references"][0]["spanID"].as_str()
}

/// The service that sent `span`.
pub fn service<'a>(trace: &'a Value, span: &Value) -> Option<&'a str> {
    trace["processes"][span["processID"].as_str()?]["serviceName"].as_str()
}

/// A string attribute of `span`.
pub fn tag(span: &Value, key: &str) -> Option<String> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str().map(str::to_owned))
}
