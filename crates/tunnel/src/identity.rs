//! Who a proxied request runs as.
//!
//! kas decides the identity (from the agent's `ci_access`/`user_access`) and
//! sends it on the tunnel in one header; agentk turns it into the
//! `Impersonate-*` headers the API server understands, after removing any a
//! client sent. RBAC in the cluster then applies to that identity.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// A Kubernetes user to impersonate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why an identity cannot be sent or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the impersonation header is not base64url JSON of an identity")]
    Malformed,
    #[error("an identity needs a username")]
    NoUsername,
    #[error("{what} {value:?} cannot be sent as an HTTP header value")]
    NotAHeaderValue { what: &'static str, value: String },
    #[error(
        "the identity is {size} bytes with {groups} groups, more than the {limit} bytes a tunnel carries; \
         reduce the user's memberships or use access_as: agent"
    )]
    TooLarge {
        size: usize,
        groups: usize,
        limit: usize,
    },
}

/// Largest identity header kas sends on a tunnel; agentk accepts headers
/// up to four times as large, so an identity under it always crosses.
pub const MAX_IDENTITY_BYTES: usize = 256 * 1024;

impl Identity {
    /// The header value kas sends on the tunnel.
    pub fn to_header(&self) -> HeaderValue {
        let json = serde_json::to_vec(self).unwrap_or_default();
        HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(json))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub fn from_header(value: &HeaderValue) -> Result<Self, IdentityError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(value.as_bytes())
            .map_err(|_| IdentityError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| IdentityError::Malformed)
    }

    /// Checks every part can become a header, so kas refuses an unusable
    /// identity up front rather than agentk failing later.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let size = self.to_header().len();
        if size > MAX_IDENTITY_BYTES {
            return Err(IdentityError::TooLarge {
                size,
                groups: self.groups.len(),
                limit: MAX_IDENTITY_BYTES,
            });
        }
        self.impersonation_headers().map(|_| ())
    }

    /// Sets the `Impersonate-*` headers for this identity.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), IdentityError> {
        for (name, value) in self.impersonation_headers()? {
            headers.append(name, value);
        }
        Ok(())
    }

    fn impersonation_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, IdentityError> {
        if self.username.is_empty() {
            return Err(IdentityError::NoUsername);
        }
        let value = |what: &'static str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| IdentityError::NotAHeaderValue {
                what,
                value: v.to_owned(),
            })
        };
        let mut out = vec![(
            HeaderName::from_static("impersonate-user"),
            value("username", &self.username)?,
        )];
        if let Some(uid) = &self.uid {
            out.push((
                HeaderName::from_static("impersonate-uid"),
                value("uid", uid)?,
            ));
        }
        for group in &self.groups {
            out.push((
                HeaderName::from_static("impersonate-group"),
                value("group", group)?,
            ));
        }
        for (key, values) in &self.extra {
            let name = HeaderName::from_bytes(
                format!("impersonate-extra-{}", escape_extra_key(key)).as_bytes(),
            )
            .map_err(|_| IdentityError::NotAHeaderValue {
                what: "extra key",
                value: key.clone(),
            })?;
            for v in values {
                out.push((name.clone(), value("extra value", v)?));
            }
        }
        Ok(out)
    }
}

/// Extra keys go in header names, percent-encoded where a character is not
/// a header-name token character (the API server unescapes them), and
/// lowercase, since header names are case-insensitive.
fn escape_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.to_ascii_lowercase().bytes() {
        match b {
            b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'!'
            | b'#'
            | b'$'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_header_and_becomes_impersonation() {
        let identity = Identity {
            username: "tether:ci_job:42".into(),
            uid: Some("u-1".into()),
            groups: vec!["tether:ci_job".into(), "tether:project:team/app".into()],
            extra: BTreeMap::from([("tether.dev/agent".into(), vec!["prod".into()])]),
        };
        let back = Identity::from_header(&identity.to_header()).expect("decodes");
        assert_eq!(back, identity);
        let mut headers = HeaderMap::new();
        back.apply(&mut headers).expect("applies");
        assert_eq!(headers["impersonate-user"], "tether:ci_job:42");
        assert_eq!(headers["impersonate-uid"], "u-1");
        assert_eq!(headers.get_all("impersonate-group").iter().count(), 2);
        assert_eq!(headers["impersonate-extra-tether.dev%2Fagent"], "prod");
    }

    #[test]
    fn refuses_what_cannot_be_a_header() {
        assert!(Identity::from_header(&HeaderValue::from_static("!!")).is_err());
        let bad = Identity {
            username: "line\nbreak".into(),
            ..Identity::default()
        };
        assert!(bad.validate().is_err());
        assert!(Identity::default().validate().is_err());
    }
}
