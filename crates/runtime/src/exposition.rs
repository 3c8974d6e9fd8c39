//! `/metrics` in the format the scraper asks for.
//!
//! `prometheus-client` writes OpenMetrics, which Prometheus asks for first
//! (its `Accept` header names it). Other readers (promtool, curl, older
//! agents) get the Prometheus text format (0.0.4): the same samples, with
//! each counter's HELP and TYPE under its sample name (`…_total`) and no
//! `# UNIT` or `# EOF` line, as that format wants.

/// OpenMetrics' content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type and body to answer a scrape whose `Accept` header is
/// `accept`, from the OpenMetrics text `openmetrics`.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, prometheus_text(&openmetrics))
    }
}

/// OpenMetrics text as the Prometheus text format.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, which says whether the
    // samples carry `_total`: held until then.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                push_help(&mut out, name, text);
            }
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" | "stateset" | "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = help.take() {
                push_help(&mut out, &name, text);
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            if let Some((name, text)) = help.take() {
                push_help(&mut out, name, text);
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn push_help(out: &mut String, name: &str, text: &str) {
    out.push_str(&format!("# HELP {name} {text}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_sample_name_and_openmetrics_lines_go() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{code=\"200\"} 3\n# HELP x_bytes Memory.\n# TYPE x_bytes gauge\n# UNIT x_bytes bytes\nx_bytes 7\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{code=\"200\"} 3\n# HELP x_bytes Memory.\n# TYPE x_bytes gauge\nx_bytes 7\n"
        );
    }

    #[test]
    fn prometheus_asks_for_openmetrics_and_gets_it() {
        let (kind, body) = negotiate(
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            "x 1\n# EOF\n".into(),
        );
        assert_eq!((kind, body.as_str()), (OPENMETRICS, "x 1\n# EOF\n"));
        assert_eq!(negotiate(None, "x 1\n# EOF\n".into()).0, PROMETHEUS_TEXT);
    }
}
