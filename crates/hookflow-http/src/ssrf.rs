//! The SSRF guard: webhook URLs are chosen by customers, so hookflow must never be turned
//! into a client of its own network. The check runs on the addresses a name resolves to, in
//! the resolver the HTTP client connects with, so a DNS answer cannot slip past it; URLs
//! whose host is an IP literal (which skip the resolver) are checked before the request.
//! IPv6 addresses that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are
//! judged by the IPv4 address they lead to.
//!
//! `http.allowed_hosts` exempts hosts, or hosts on one port ([`AllowList`]). The resolver
//! never sees the port, so the decision is made per request: a URL whose host and port are
//! allowed goes through a client whose resolver exempts allow-listed names; every other
//! URL through one whose resolver exempts nothing.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use hookflow_core::AllowList;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether hookflow must refuse to connect to `ip`: loopback, private, shared (CGNAT),
/// link-local, multicast, broadcast, documentation, benchmarking, reserved, unspecified,
/// IETF protocol assignments, unique-local and site-local IPv6, or an IPv6 address that
/// leads to a refused IPv4 one.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_forbidden_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed inside)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local NAT64 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
}

/// The IPv4 address an IPv6 address leads to, for the forms that carry one: mapped
/// (`::ffff:a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`), 6to4
/// (`2002:aabb:ccdd::/48`) and Teredo (`2001:0::/32`, whose client address is stored
/// inverted; its server address counts too, so the worse of the two decides).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(v4(s[6], s[7])); // IPv4-translated ::ffff:0:a.b.c.d
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let (server, client) = (v4(s[2], s[3]), v4(!s[6], !s[7]));
        return Some(if is_forbidden_v4(server) {
            server
        } else {
            client
        });
    }
    None
}

/// Which hosts may resolve to forbidden addresses.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allowed: Arc<AllowList>,
    /// Whether this guard's resolver exempts allow-listed names: only for the requests
    /// whose host and port the allow-list names.
    exempting: bool,
    /// The egress proxy's host, the operator's own, which the resolver resolves for every
    /// request through it: exempt.
    proxy_host: Option<Arc<str>>,
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
    /// The guard of requests the allow-list does not name: it exempts nothing.
    pub fn strict(allowed: Arc<AllowList>) -> Self {
        AddressGuard {
            allowed,
            exempting: false,
            proxy_host: None,
        }
    }

    /// The guard of requests whose host and port the allow-list names.
    pub fn exempting(allowed: Arc<AllowList>) -> Self {
        AddressGuard {
            allowed,
            exempting: true,
            proxy_host: None,
        }
    }

    /// The same guard, exempting the egress proxy's host.
    pub fn with_proxy_host(mut self, host: &str) -> Self {
        self.proxy_host = Some(host.into());
        self
    }

    /// Checks a URL whose host is an IP literal, which the resolver never sees.
    pub fn check_literal(&self, url: &url::Url) -> Result<(), BlockedAddress> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if is_forbidden_ip(ip) && !self.allowed.allows_url(url) {
            return Err(BlockedAddress {
                host: url.host_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }

    fn exempts(&self, host: &str) -> bool {
        (self.exempting && self.allowed.names_host(host))
            || self
                .proxy_host
                .as_deref()
                .is_some_and(|proxy| proxy.eq_ignore_ascii_case(host))
    }
}

impl Resolve for AddressGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            // An IPv6 literal comes bracketed (a SOCKS5 proxy's target, resolved here).
            let host = name
                .as_str()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            // Port 0: the client replaces it with the URL's port.
            let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, 0)],
                Err(_) => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if guard.exempts(&host) {
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

    /// Every refused range, with an example address in it.
    const REFUSED: &[(&str, &str)] = &[
        ("0.0.0.0/8 this network", "0.1.2.3"),
        ("10.0.0.0/8 private", "10.1.2.3"),
        ("100.64.0.0/10 shared (CGNAT)", "100.64.0.1"),
        ("127.0.0.0/8 loopback", "127.0.0.1"),
        (
            "169.254.0.0/16 link local (cloud metadata)",
            "169.254.169.254",
        ),
        ("172.16.0.0/12 private", "172.16.0.1"),
        ("192.0.0.0/24 IETF protocol assignments", "192.0.0.8"),
        ("192.0.2.0/24 documentation", "192.0.2.1"),
        ("192.168.0.0/16 private", "192.168.1.1"),
        ("198.18.0.0/15 benchmarking", "198.18.0.1"),
        ("198.51.100.0/24 documentation", "198.51.100.1"),
        ("203.0.113.0/24 documentation", "203.0.113.1"),
        ("224.0.0.0/4 multicast", "224.0.0.1"),
        ("240.0.0.0/4 reserved", "240.0.0.1"),
        ("255.255.255.255 broadcast", "255.255.255.255"),
        ("::/128 unspecified", "::"),
        ("::1/128 loopback", "::1"),
        ("::ffff:0:0/96 IPv4-mapped, private", "::ffff:10.0.0.1"),
        ("::ffff:0:0/96 IPv4-mapped, loopback", "::ffff:127.0.0.1"),
        ("::/96 IPv4-compatible (deprecated)", "::1.1.1.1"),
        (
            "::ffff:0:0:0/96 IPv4-translated, private",
            "::ffff:0:10.0.0.1",
        ),
        ("64:ff9b::/96 NAT64, private", "64:ff9b::10.0.0.1"),
        ("64:ff9b::/96 NAT64, loopback", "64:ff9b::7f00:1"),
        ("64:ff9b:1::/48 local NAT64", "64:ff9b:1::1.1.1.1"),
        ("100::/64 discard-only", "100::1"),
        (
            "2001::/32 Teredo, private client",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        ),
        (
            "2001::/32 Teredo, private server",
            "2001:0:a00:1:8000:63bf:fefe:fefe",
        ),
        ("2001:2::/48 benchmarking", "2001:2::1"),
        ("2001:db8::/32 documentation", "2001:db8::1"),
        ("2002::/16 6to4, private", "2002:c0a8:101::1"),
        ("2002::/16 6to4, loopback", "2002:7f00:1::1"),
        ("fc00::/7 unique local", "fd00::1"),
        ("fe80::/10 link local", "fe80::1"),
        ("fec0::/10 site local", "fec0::1"),
        ("ff00::/8 multicast", "ff02::1"),
    ];

    #[test]
    fn every_refused_range_is_refused() {
        for (range, example) in REFUSED {
            assert!(
                is_forbidden_ip(example.parse().expect("ip")),
                "{example} ({range}) must be refused"
            );
        }
    }

    #[test]
    fn public_addresses_and_their_ipv6_forms_are_allowed() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "192.0.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            // Teredo with public server 65.54.227.120 and public client 1.1.1.1.
            "2001:0:4136:e378:8000:63bf:fefe:fefe",
        ] {
            assert!(
                !is_forbidden_ip(ip.parse().expect("ip")),
                "{ip} must be allowed"
            );
        }
    }

    fn allowed(entries: &[&str]) -> Arc<AllowList> {
        Arc::new(AllowList::new(entries).expect("allow-list"))
    }

    #[test]
    fn literal_hosts_are_checked_against_the_allow_list_with_its_ports() {
        let guard = AddressGuard::strict(allowed(&["127.0.0.1", "10.0.0.5:8443"]));
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(guard.check_literal(&url("http://127.0.0.1:8080/x")).is_ok());
        assert!(guard.check_literal(&url("https://10.0.0.5:8443/x")).is_ok());
        assert!(
            guard.check_literal(&url("https://10.0.0.5/x")).is_err(),
            "443 is not the allowed port"
        );
        assert!(guard.check_literal(&url("http://10.0.0.1/x")).is_err());
        assert!(guard.check_literal(&url("http://[::1]/x")).is_err());
        assert!(
            guard
                .check_literal(&url("http://[2002:7f00:1::1]/x"))
                .is_err()
        );
        assert!(
            guard.check_literal(&url("https://example.com/x")).is_ok(),
            "names go to the resolver"
        );
    }

    #[tokio::test]
    async fn only_the_exempting_resolver_lets_allow_listed_names_through() {
        let list = allowed(&["LOCALHOST:8080"]);
        let err = AddressGuard::strict(list.clone())
            .resolve("localhost".parse().expect("name"))
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .starts_with("localhost resolves only to addresses"),
            "{err}"
        );
        let addrs: Vec<SocketAddr> = AddressGuard::exempting(list)
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
