//! Where kas may connect when it fetches for a tenant (chart repositories,
//! OCI registries, their redirects and token realms): a tenant names the
//! URL, so without a policy kas is a proxy into its own network (cloud
//! metadata at 169.254.169.254, internal services, other replicas).
//!
//! Deny by default: loopback, link-local, private, CGNAT, unique-local,
//! multicast, reserved and unspecified addresses are refused, and so is
//! plain `http://`, unless the administrator allows the host or a range
//! (`kas serve --egress-allow CIDR|HOST`). The check is made in the
//! connector on the addresses it then connects to, after DNS, for every
//! connection the client opens (a redirect's, a token realm's): a name
//! that resolves to a public address for a check and to a private one
//! for the connection cannot pass, since there is one resolution.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection attempt's deadline (DNS and TCP).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the administrator allows beyond public `https://` addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    allowed: Arc<Vec<Allowed>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    Range { network: IpAddr, prefix: u8 },
    Host(String),
}

/// Why a connection was refused: the URL, the address and the rule.
#[derive(Debug, thiserror::Error)]
pub struct Refusal {
    pub url: String,
    pub host: String,
    pub address: String,
    pub rule: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused to connect to {}: ", self.url)?;
        if self.host != self.address {
            write!(f, "{} is {}, ", self.host, self.address)?;
        } else {
            write!(f, "{} is ", self.address)?;
        }
        write!(
            f,
            "{} (a tenant's fetch reaches only public https:// addresses; kas serve --egress-allow {} allows it)",
            self.rule, self.address
        )
    }
}

/// Why an `--egress-allow` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefused {
    #[error("--egress-allow {0:?}: not a CIDR range")]
    NotCidr(String),
    #[error("--egress-allow {entry:?}: the prefix must be 0 to {max}")]
    Prefix { entry: String, max: u8 },
    #[error("--egress-allow {0:?}: neither a CIDR range, an address nor a host name")]
    Neither(String),
}

impl Egress {
    /// `--egress-allow` entries: `CIDR` (`10.20.0.0/16`, `fd00::/8`), an
    /// address, or a host name matched exactly.
    pub fn parse(entries: &[String]) -> Result<Self, EntryRefused> {
        let mut allowed = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if let Some((network, prefix)) = entry.split_once('/') {
                let network: IpAddr = network
                    .parse()
                    .map_err(|_| EntryRefused::NotCidr(entry.to_owned()))?;
                let max = if network.is_ipv4() { 32 } else { 128 };
                let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                    EntryRefused::Prefix {
                        entry: entry.to_owned(),
                        max,
                    }
                })?;
                allowed.push(Allowed::Range { network, prefix });
            } else if let Ok(address) = entry.parse::<IpAddr>() {
                let prefix = if address.is_ipv4() { 32 } else { 128 };
                allowed.push(Allowed::Range {
                    network: address,
                    prefix,
                });
            } else if !entry.is_empty()
                && entry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                allowed.push(Allowed::Host(entry.to_ascii_lowercase()));
            } else {
                return Err(EntryRefused::Neither(entry.to_owned()));
            }
        }
        Ok(Egress {
            allowed: Arc::new(allowed),
        })
    }

    /// Whether a connection to `address` (resolved from `host`) may be
    /// made, for a URL that is `https://` or not.
    pub fn decide(
        &self,
        url: &str,
        host: &str,
        address: IpAddr,
        https: bool,
    ) -> Result<(), Refusal> {
        let refuse = |rule| Refusal {
            url: url.to_owned(),
            host: host.to_owned(),
            address: address.to_string(),
            rule,
        };
        if self.allows(host, address) {
            return Ok(());
        }
        if let Some(rule) = forbidden(address) {
            return Err(refuse(rule));
        }
        if !https {
            return Err(refuse("a public address, but the URL is plain http://"));
        }
        Ok(())
    }

    fn allows(&self, host: &str, address: IpAddr) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed.iter().any(|allowed| match allowed {
            Allowed::Host(name) => *name == host,
            Allowed::Range { network, prefix } => within(address, *network, *prefix),
        })
    }
}

/// The rule that refuses `address`, if one does: every range that is not
/// the public internet.
pub fn forbidden(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address inside IPv6 is judged as IPv4.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return forbidden_v4(v4).or(Some("a NAT64 address"));
            }
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a unique-local (private) address")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("a site-local (private) address")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("a multicast address")
            } else if s[0] == 0x2002 {
                Some("a 6to4 address")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("a documentation address")
            } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
                Some("an IPv4-compatible address")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("a loopback address")
    } else if a == 0 {
        Some("the unspecified network (0.0.0.0/8)")
    } else if v4.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if v4.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a CGNAT (shared) address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("an IETF protocol address (192.0.0.0/24)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else if v4.is_documentation() {
        Some("a documentation address")
    } else if v4.is_multicast() {
        Some("a multicast address")
    } else if a >= 240 {
        Some("a reserved or broadcast address")
    } else {
        None
    }
}

fn within(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| within(IpAddr::V4(a), network, prefix)),
        (IpAddr::V4(a), IpAddr::V6(_)) => within(IpAddr::V6(a.to_ipv6_mapped()), network, prefix),
    }
}

/// The text of an error and all its causes: the HTTP client's own says
/// only "client error (Connect)", and the refusal is a cause.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A connector for hyper's client that resolves, decides with the policy
/// on every address, and connects only to addresses it allowed.
#[derive(Clone, Debug)]
pub struct Connector {
    policy: Egress,
}

impl Connector {
    pub fn new(policy: Egress) -> Self {
        Connector { policy }
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .allowed
            .iter()
            .map(|a| match a {
                Allowed::Range { network, prefix } => format!("{network}/{prefix}"),
                Allowed::Host(host) => host.clone(),
            })
            .collect();
        match entries.is_empty() {
            true => f.write_str("public https:// only"),
            false => write!(f, "public https:// and {}", entries.join(", ")),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let connect = connect(&policy, &uri);
            tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{uri}: no connection within {CONNECT_TIMEOUT:?}"),
                    )
                })?
        })
    }
}

async fn connect(policy: &Egress, uri: &Uri) -> io::Result<TokioIo<TcpStream>> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(invalid(
                "only https:// (and allowed http://) URLs are fetched",
            ));
        }
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = open(policy, &uri.to_string(), host, port, https).await?;
    Ok(TokioIo::new(stream))
}

/// A TCP connection to `host:port` for `url`, made only to addresses the
/// policy allows: every address the name resolves to is decided before
/// any is tried, so a name with one private address among public ones is
/// refused whole. The refusal is a `PermissionDenied` error carrying the
/// [`Refusal`].
pub(crate) async fn open(
    policy: &Egress,
    url: &str,
    host: &str,
    port: u16,
    https: bool,
) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
    };
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{url}: the name resolves to no address"),
        ));
    }
    for address in &addresses {
        policy
            .decide(url, host, address.ip(), https)
            .map_err(|refusal| io::Error::new(io::ErrorKind::PermissionDenied, refusal))?;
    }
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{url}: no address to connect to"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(policy: &Egress, address: &str, https: bool) -> Result<(), Refusal> {
        let address: IpAddr = address.parse().expect("an address");
        policy.decide(
            "https://charts.example/index.yaml",
            "charts.example",
            address,
            https,
        )
    }

    /// Decided without connecting: no test sends traffic to any of these.
    #[test]
    fn every_range_that_is_not_the_internet_is_refused() {
        let policy = Egress::default();
        let refused = [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.0.170", "IETF"),
        ];
        for (address, rule) in refused {
            let refusal = decide(&policy, address, true).expect_err(address);
            assert!(refusal.rule.contains(rule), "{address}: {}", refusal.rule);
            let text = refusal.to_string();
            assert!(
                text.contains("https://charts.example/index.yaml")
                    && text.contains(address.trim_start_matches("::ffff:")),
                "{text}"
            );
        }
        for public in [
            "93.184.216.34",
            "2606:4700::6810:84e5",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(decide(&policy, public, true).is_ok(), "{public}");
            let plain = decide(&policy, public, false).expect_err("plain http");
            assert!(plain.rule.contains("http://"), "{}", plain.rule);
        }
    }

    #[test]
    fn an_administrator_allows_ranges_and_hosts() {
        let policy = Egress::parse(&[
            "127.0.0.1".into(),
            "10.20.0.0/16".into(),
            "fd00:1::/32".into(),
            "Charts.Internal".into(),
        ])
        .expect("valid entries");
        assert!(
            decide(&policy, "127.0.0.1", false).is_ok(),
            "allowed, http too"
        );
        assert!(
            decide(&policy, "127.0.0.2", true).is_err(),
            "only the one address"
        );
        assert!(decide(&policy, "10.20.3.4", true).is_ok());
        assert!(decide(&policy, "10.21.0.1", true).is_err());
        assert!(decide(&policy, "::ffff:10.20.3.4", true).is_ok(), "mapped");
        assert!(decide(&policy, "fd00:1:2::3", true).is_ok());
        let host = policy.decide(
            "http://charts.internal/x",
            "charts.internal.",
            "10.9.9.9".parse().expect("an address"),
            false,
        );
        assert!(host.is_ok(), "the host allowed, by name");
        for bad in ["10.0.0.0/33", "not a host!", "::1/129", ""] {
            assert!(Egress::parse(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_connector_refuses_before_connecting_and_names_the_url() {
        // A listener that counts: a refused connection never reaches it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("its address").port();
        let mut connector = Connector::new(Egress::default());
        for url in [
            format!("https://127.0.0.1:{port}/index.yaml"),
            format!("https://[::ffff:127.0.0.1]:{port}/index.yaml"),
            format!("http://localhost:{port}/index.yaml"),
        ] {
            let uri: Uri = url.parse().expect("a URI");
            let error = tower_service::Service::call(&mut connector, uri)
                .await
                .expect_err("refused");
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
            assert!(error.to_string().contains("loopback"), "{error}");
        }
        assert!(listener.accept().is_err(), "nothing connected");
        let mut allowed = Connector::new(Egress::parse(&["127.0.0.1".into()]).expect("valid"));
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().expect("a URI");
        tower_service::Service::call(&mut allowed, uri)
            .await
            .expect("allowed by the administrator");
    }
}
