//! Which API server path a proxy URI names, and whether it is a watch.

use http::StatusCode;

use crate::rejection::Rejection;

/// The path the proxy serves under: `https://kas:8154/k8s-proxy/api/v1/…`.
pub const PATH_PREFIX: &str = "/k8s-proxy";

/// Whether `target` (path and query) is a watch, which may stream for as
/// long as the client likes.
pub fn is_watch(target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    path.split('/').any(|s| s == "watch")
        || query
            .split('&')
            .any(|kv| matches!(kv, "watch=1" | "watch=true"))
}

/// The API server path and query of a proxy URI, without the prefix. A
/// path with a `.` or `..` segment (written plainly or percent-encoded) is
/// refused: the API server and anything between would read it differently
/// from the path kas authorized.
pub(crate) fn target(uri: &http::Uri) -> Result<String, Rejection> {
    let not_here = || {
        Rejection::new(
            StatusCode::NOT_FOUND,
            format!("the Kubernetes API proxy is under {PATH_PREFIX}/"),
        )
    };
    let rest = uri.path().strip_prefix(PATH_PREFIX).ok_or_else(not_here)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(not_here());
    }
    let dot_segment = rest.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    });
    if dot_segment {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "paths with '.' or '..' segments are refused",
        ));
    }
    let path = if rest.is_empty() { "/" } else { rest };
    Ok(match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_strip_the_prefix_and_keep_the_query() {
        let t = |s: &str| target(&s.parse().expect("uri")).ok();
        assert_eq!(
            t("/k8s-proxy/api/v1/pods?watch=1").as_deref(),
            Some("/api/v1/pods?watch=1")
        );
        assert_eq!(t("/k8s-proxy").as_deref(), Some("/"));
        assert_eq!(t("/k8s-proxyx/api"), None);
        assert_eq!(t("/api/v1"), None);
        assert_eq!(
            t("/k8s-proxy/api/v1/pods/a..b").as_deref(),
            Some("/api/v1/pods/a..b")
        );
    }

    #[test]
    fn watches_are_told_apart() {
        assert!(is_watch("/api/v1/pods?watch=1&resourceVersion=5"));
        assert!(is_watch("/api/v1/namespaces/a/pods?watch=true"));
        assert!(is_watch("/api/v1/watch/pods"));
        assert!(!is_watch("/api/v1/pods?watch=false"));
        assert!(!is_watch("/api/v1/namespaces/watch-me/pods"));
    }

    #[test]
    fn dot_segments_are_refused_however_they_are_written() {
        for path in [
            "/k8s-proxy/../x",
            "/k8s-proxy/api/v1/../../x",
            "/k8s-proxy/api/./v1",
            "/k8s-proxy/api/%2e%2e/x",
            "/k8s-proxy/api/%2E./x",
            "/k8s-proxy/api/.%2e",
        ] {
            let rejection = target(&path.parse().expect("uri")).expect_err(path);
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "{path}");
        }
    }
}
