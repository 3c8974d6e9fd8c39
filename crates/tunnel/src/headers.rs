//! Headers that must not cross the tunnel as they are.

use http::header::{self, HeaderMap, HeaderName};

/// The path and query of an upgrade request, on the CONNECT that carries it.
pub const PATH: HeaderName = HeaderName::from_static("tether-path");
/// The method of an upgrade request (GET or POST), on its CONNECT.
pub const METHOD: HeaderName = HeaderName::from_static("tether-method");
/// The `Upgrade` value of an upgrade request, on its CONNECT.
pub const UPGRADE: HeaderName = HeaderName::from_static("tether-upgrade");
/// On agentk's answer to a CONNECT: the API server switched protocols.
pub const UPSTREAM_STATUS: HeaderName = HeaderName::from_static("tether-upstream-status");
/// Who the request runs as ([`crate::identity::Identity`]), set by kas.
pub const IMPERSONATE: HeaderName = HeaderName::from_static("tether-impersonate");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// Removes the tunnel's own headers, so that none a client sent is taken
/// for one kas set.
pub fn strip_tunnel_headers(headers: &mut HeaderMap) {
    for name in [PATH, METHOD, UPGRADE, UPSTREAM_STATUS, IMPERSONATE] {
        headers.remove(name);
    }
}

/// Removes every header that claims an identity: `Impersonate-*`, and the
/// `X-Remote-User`/`-Group`/`-Extra-*` headers of the API server's
/// request-header authentication (harmless to a server not set up for it,
/// but never something a client may send through kas); returns how many
/// there were.
pub fn strip_impersonation(headers: &mut HeaderMap) -> usize {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("impersonate-")
                || name == "x-remote-user"
                || name == "x-remote-group"
                || name.starts_with("x-remote-extra-")
        })
        .cloned()
        .collect();
    names
        .into_iter()
        .map(|name| match headers.entry(name) {
            header::Entry::Occupied(entry) => entry.remove_entry_mult().1.count(),
            header::Entry::Vacant(_) => 0,
        })
        .sum()
}

/// Whether an HTTP/1.1 request asks to switch protocols.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn strips_what_must_not_pass() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.append("Impersonate-User", HeaderValue::from_static("system:admin"));
        h.append(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        h.append("impersonate-group", HeaderValue::from_static("b"));
        h.append("Impersonate-Extra-Scopes", HeaderValue::from_static("x"));
        h.insert(IMPERSONATE, HeaderValue::from_static("forged"));
        h.append("X-Remote-User", HeaderValue::from_static("system:admin"));
        h.append("x-remote-group", HeaderValue::from_static("system:masters"));
        h.append("X-Remote-Extra-Scopes", HeaderValue::from_static("all"));
        strip_hop_by_hop(&mut h);
        assert_eq!(strip_impersonation(&mut h), 7);
        strip_tunnel_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn recognises_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
