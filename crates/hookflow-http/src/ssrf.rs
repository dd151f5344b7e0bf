//! The SSRF guard: webhook URLs are chosen by customers, so hookflow must never be turned
//! into a client of its own network. The check runs on the addresses a name resolves to, in
//! the resolver the HTTP client connects with, so a DNS answer cannot slip past it; URLs
//! whose host is an IP literal (which skip the resolver) are checked before the request.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether hookflow must refuse to connect to `ip`: loopback, private, shared (CGNAT),
/// link-local, multicast, broadcast, documentation, unspecified, unique-local, or an IPv4
/// address smuggled inside IPv6.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 64:ff9b::/96
        }
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Which hosts may resolve to forbidden addresses. Hosts are compared as written in the
/// destination URL (`127.0.0.1`, `localhost`, `hooks.internal`), case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allowed_hosts: Arc<HashSet<String>>,
}

/// The error the guard's resolver fails with; the client finds it in the error chain to
/// report a permanent `blocked` failure rather than a retryable connection error.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to addresses hookflow does not connect to (loopback, private, link-local, multicast or unspecified); allow-list the host to permit it"
)]
pub struct BlockedAddress {
    /// The refused host.
    pub host: String,
}

impl AddressGuard {
    /// A guard that lets `allowed_hosts` through.
    pub fn new(allowed_hosts: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let allowed = allowed_hosts
            .into_iter()
            .map(|h| normalise(h.as_ref()))
            .collect();
        AddressGuard {
            allowed_hosts: Arc::new(allowed),
        }
    }

    /// Whether `host` is allow-listed.
    pub fn allows_host(&self, host: &str) -> bool {
        self.allowed_hosts.contains(&normalise(host))
    }

    /// Checks a URL whose host is an IP literal, which the resolver never sees.
    pub fn check_literal(&self, url: &url::Url) -> Result<(), BlockedAddress> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        let host = url.host_str().unwrap_or_default();
        if is_forbidden_ip(ip) && !self.allows_host(host) {
            return Err(BlockedAddress {
                host: host.to_owned(),
            });
        }
        Ok(())
    }
}

fn normalise(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl Resolve for AddressGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // Port 0: the client replaces it with the URL's port.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if guard.allows_host(&host) {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| !is_forbidden_ip(a.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(
                    Box::new(BlockedAddress { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_and_public_addresses() {
        let forbidden = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ];
        for ip in forbidden {
            assert!(
                is_forbidden_ip(ip.parse().expect("ip")),
                "{ip} must be forbidden"
            );
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(
                !is_forbidden_ip(ip.parse().expect("ip")),
                "{ip} must be allowed"
            );
        }
    }

    #[test]
    fn literal_hosts_are_checked_against_the_allow_list() {
        let guard = AddressGuard::new(["127.0.0.1"]);
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(guard.check_literal(&url("http://127.0.0.1:8080/x")).is_ok());
        assert!(guard.check_literal(&url("http://10.0.0.1/x")).is_err());
        assert!(guard.check_literal(&url("http://[::1]/x")).is_err());
        assert!(
            guard.check_literal(&url("https://example.com/x")).is_ok(),
            "names go to the resolver"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_to_loopback() {
        let guard = AddressGuard::new(Vec::<String>::new());
        let name: Name = "localhost".parse().expect("name");
        let err = guard.resolve(name).await.err().expect("refused");
        assert!(
            err.to_string()
                .starts_with("localhost resolves only to addresses"),
            "{err}"
        );

        let allowing = AddressGuard::new(["LOCALHOST"]);
        let addrs: Vec<SocketAddr> = allowing
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
