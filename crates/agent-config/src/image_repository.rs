//! An image repository as users write it (`nginx`,
//! `ghcr.io/team/app`, `127.0.0.1:5000/app`), and where its registry's API
//! is.

/// A repository of an OCI registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRepository {
    /// The registry host as written, with its port (`docker.io` when none
    /// is written, as Docker and Flux read it).
    pub host: String,
    /// The repository's path in the registry (`library/nginx`).
    pub path: String,
}

/// Why a repository is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an image repository: {reason}")]
pub struct ImageRepositoryError {
    text: String,
    reason: &'static str,
}

/// Longest repository name the distribution spec allows, with its host.
const MAX_LEN: usize = 255;

impl ImageRepository {
    pub fn parse(text: &str) -> Result<Self, ImageRepositoryError> {
        let refuse = |reason| ImageRepositoryError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(refuse("it must be 1 to 255 characters"));
        }
        if text.contains(['@', ' '])
            || text
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
        {
            return Err(refuse("give the repository without a tag or digest"));
        }
        let (host, path) = match text.split_once('/') {
            // The first part is a host when it looks like one, as Docker
            // decides: a dot, a port, or localhost.
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), text.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{text}")),
        };
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(refuse(
                "its registry host has characters a host cannot have",
            ));
        }
        if path.is_empty() || !path.split('/').all(component_ok) {
            return Err(refuse(
                "each path component must be lowercase letters and digits, \
                 separated by '.', '_', '__' or '-'",
            ));
        }
        Ok(ImageRepository { host, path })
    }

    /// The base URL of the registry's API: plain HTTP on loopback (a
    /// registry for tests and development), HTTPS anywhere else; Docker
    /// Hub's API host for `docker.io`.
    pub fn api_base(&self) -> String {
        let name = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, _)| h);
        let host = match self.host.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        match name {
            "localhost" | "127.0.0.1" | "[::1]" => format!("http://{host}"),
            _ => format!("https://{host}"),
        }
    }

    /// As users write it, `host/path`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

impl std::fmt::Display for ImageRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full_name())
    }
}

/// The distribution spec's path component:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_from_paths_as_docker_does() {
        let r = ImageRepository::parse("nginx").expect("valid");
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("docker.io", "library/nginx")
        );
        assert_eq!(r.api_base(), "https://registry-1.docker.io");
        let r = ImageRepository::parse("bitnami/redis").expect("valid");
        assert_eq!(r.full_name(), "docker.io/bitnami/redis");
        let r = ImageRepository::parse("127.0.0.1:5000/team/app").expect("valid");
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        assert_eq!(r.path, "team/app");
        let r = ImageRepository::parse("ghcr.io/fluxcd/source-controller").expect("valid");
        assert_eq!(r.api_base(), "https://ghcr.io");
        for bad in [
            "",
            "App",
            "ghcr.io/team/app:1.0",
            "ghcr.io/x@sha256:ab",
            "ghcr.io/a//b",
            "ghcr.io/-a",
            "a b",
        ] {
            assert!(ImageRepository::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
