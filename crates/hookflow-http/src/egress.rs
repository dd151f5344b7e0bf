//! Egress through a forward proxy (`http.proxy`): every delivery leaves through it, HTTP
//! CONNECT (`http://`) or SOCKS5 (`socks5://`), with credentials in the URL, so receivers
//! see requests only from the proxy's addresses. The deployment chooses the proxy; no
//! destination can name one.
//!
//! The SSRF guard keeps its meaning, checked here, before a request is handed to the
//! proxy: the destination's host is resolved and refused if any address it gives is one
//! hookflow does not connect to (unless allow-listed), and a destination that names the
//! proxy itself (its host and port, or an address of it) is refused. An `http://` proxy
//! resolves the name again when it connects, so an answer that changes in between (DNS
//! rebinding) is the proxy's to refuse: run it where it cannot reach hookflow's internal
//! network, or make it refuse private addresses. A `socks5://` proxy is handed an address
//! that hookflow resolved through the guard, which closes that gap.
//!
//! The proxy's own host is exempt from the guard (it is the operator's, usually on a private
//! address). Errors name the proxy by scheme, host and port, never its credentials.

use std::net::SocketAddr;

use url::Url;

use crate::ssrf::is_forbidden_ip;

/// The deployment's egress proxy. Its `Debug` shows no credentials.
#[derive(Clone)]
pub struct EgressProxy {
    url: Url,
    host: String,
    port: u16,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EgressProxy({})", self.shown())
    }
}

impl EgressProxy {
    /// The proxy of `text` (`http://[user:password@]host:port` or `socks5://…`); `None` when
    /// empty. The error never quotes the text (it may hold a password).
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
        if !text.contains("://") {
            return Err("is not a URL: use http://… or socks5://…".into());
        }
        if !matches!(url.scheme(), "http" | "socks5") {
            return Err(format!(
                "has scheme `{}`: use http:// (HTTP CONNECT) or socks5://",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("has no port")?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("must be scheme://[user:password@]host:port, nothing after".into());
        }
        Ok(Some(EgressProxy { url, host, port }))
    }

    /// `scheme://host:port`, for messages.
    pub fn shown(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.url.scheme(), self.port)
    }

    /// Whether it forwards requests for `url` whole (an `http://` proxy and a plain-http
    /// URL) rather than tunnelling them.
    pub fn forwards(&self, url: &Url) -> bool {
        self.url.scheme() == "http" && url.scheme() == "http"
    }

    /// Its host, which the guard exempts.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy for the HTTP client, with the credentials its URL carries (reqwest sends
    /// them as `Proxy-Authorization` to an HTTP proxy, in the handshake to a SOCKS5 one).
    pub fn for_client(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        reqwest::Proxy::all(self.url.as_str())
    }

    /// Checks `url`, which `allowed` (the allow-list names its host and port) may exempt,
    /// before the proxy is asked to reach it. See the module documentation.
    pub async fn check(&self, url: &Url, allowed: bool) -> Result<(), ProxyRefusal> {
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or_default();
        let at_proxy = || ProxyRefusal::Blocked(format!("{host}:{port} is the egress proxy"));
        if host == self.host && port == self.port {
            return Err(at_proxy());
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ProxyRefusal::Unresolved(format!("cannot resolve {host}: {e}")))?
            .collect();
        if !allowed && resolved.iter().any(|a| is_forbidden_ip(a.ip())) {
            return Err(ProxyRefusal::Blocked(format!(
                "{host} resolves to an address hookflow does not connect to (loopback, \
                 private, link-local, multicast or unspecified); allow-list the host to \
                 permit it"
            )));
        }
        // Another port is another service: the proxy's own addresses are looked up only
        // when the port is the proxy's, so most attempts make one lookup, not two.
        if port == self.port {
            let proxy_addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await
                    .map(Iterator::collect)
                    .unwrap_or_default();
            if resolved.iter().any(|a| proxy_addresses.contains(a)) {
                return Err(at_proxy());
            }
        }
        Ok(())
    }
}

/// Why a request is not handed to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// The guard refuses it (a permanent failure).
    Blocked(String),
    /// Its host does not resolve now (retried).
    Unresolved(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_http_or_socks5_with_a_host_and_port_and_never_shown_with_its_password() {
        let proxy = EgressProxy::parse("http://user:s3cr%40t@Proxy.internal:3128")
            .expect("valid")
            .expect("set");
        assert_eq!(proxy.shown(), "http://proxy.internal:3128");
        assert!(!format!("{proxy:?}").contains("s3cr"));
        assert!(EgressProxy::parse("").expect("empty").is_none());
        let default_port = EgressProxy::parse("http://p").expect("valid").expect("set");
        assert_eq!(default_port.shown(), "http://p:80");
        let v6 = EgressProxy::parse("socks5://[::1]:1080")
            .expect("valid")
            .expect("set");
        assert_eq!(v6.shown(), "socks5://[::1]:1080");
        for (text, problem) in [
            ("ftp://p:21", "scheme `ftp`"),
            ("socks5://p", "no port"),
            ("socks5://u:secretpw@p:1/#u:secretpw", "nothing after"),
            ("u:secretpw@p:1", "not a URL"),
            ("http://u:secretpw@p:1/x", "nothing after"),
            ("not a url secretpw", "not a URL"),
        ] {
            let error = EgressProxy::parse(text).expect_err(text);
            assert!(error.contains(problem), "{text}: {error}");
            assert!(!error.contains("secretpw"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_destination_at_the_proxy_or_resolving_inside_is_refused_before_the_proxy() {
        let proxy = EgressProxy::parse("socks5://127.0.0.1:1080")
            .expect("valid")
            .expect("set");
        let url = |text: &str| Url::parse(text).expect("url");
        assert!(matches!(
            proxy.check(&url("http://127.0.0.1:1080/"), true).await,
            Err(ProxyRefusal::Blocked(m)) if m.contains("egress proxy")
        ));
        // An allow-listed name that resolves to the proxy's address and port.
        assert!(matches!(
            proxy.check(&url("http://localhost:1080/"), true).await,
            Err(ProxyRefusal::Blocked(m)) if m.contains("egress proxy")
        ));
        assert!(matches!(
            proxy.check(&url("http://localhost:8080/"), false).await,
            Err(ProxyRefusal::Blocked(m)) if m.contains("localhost")
        ));
        assert_eq!(
            proxy.check(&url("http://localhost:8080/"), true).await,
            Ok(())
        );
    }
}
