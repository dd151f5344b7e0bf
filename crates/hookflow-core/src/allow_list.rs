//! `http.allowed_hosts`: the hosts the SSRF guard lets through to private addresses and
//! that may be reached over plain http. An entry is a host (`127.0.0.1`, `hooks.internal`,
//! `[::1]`), allowing every port, or a host and port (`127.0.0.1:8080`, `[::1]:8080`),
//! allowing that port only. Hosts are compared as written in the URL, case-insensitively.

use url::Url;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// Lowercase, without IPv6 brackets.
    host: String,
    /// `None`: every port.
    port: Option<u16>,
}

/// The allow-list; in configuration, a list of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct AllowList {
    entries: Vec<AllowedHost>,
}

impl TryFrom<Vec<String>> for AllowList {
    type Error = String;

    fn try_from(entries: Vec<String>) -> Result<Self, Self::Error> {
        AllowList::new(&entries)
    }
}

impl AllowList {
    /// Parses `entries`; the error names the entry at fault.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        let entries = entries
            .iter()
            .map(|entry| parse(entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// Whether `host` (as written in a URL; brackets optional) on `port` is allowed.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = normalise(host);
        self.entries
            .iter()
            .any(|e| e.host == host && (e.port.is_none() || e.port == port))
    }

    /// Whether `url`'s host and port (the scheme's default when it names none) are allowed.
    pub fn allows_url(&self, url: &Url) -> bool {
        url.host_str()
            .is_some_and(|host| self.allows(host, url.port_or_known_default()))
    }

    /// Whether `host` is allowed on some port.
    pub fn names_host(&self, host: &str) -> bool {
        let host = normalise(host);
        self.entries.iter().any(|e| e.host == host)
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn normalise(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

fn parse(entry: &str) -> Result<AllowedHost, String> {
    let entry = entry.trim();
    let bad = |why: &str| Err(format!("`{entry}` {why}"));
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return bad("opens a bracket it does not close");
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return bad("has text after its bracketed address"),
        }
    } else if entry.matches(':').count() == 1 {
        let (host, port) = entry.split_once(':').unwrap_or((entry, ""));
        (host, Some(port))
    } else {
        // No colon, or a bare IPv6 address: a host, every port.
        (entry, None)
    };
    if host.is_empty() {
        return bad("names no host");
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return bad("has a port that is not 1 to 65535"),
        },
    };
    Ok(AllowedHost {
        host: normalise(host),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_allows_every_port_and_a_host_with_a_port_only_that_one() {
        let list = AllowList::new(&["127.0.0.1", "hooks.Internal:8443", "[::1]:9000", "fd00::5"])
            .expect("valid");
        assert!(list.allows("127.0.0.1", Some(1)));
        assert!(list.allows("127.0.0.1", Some(8080)));
        assert!(list.allows("HOOKS.internal", Some(8443)));
        assert!(!list.allows("hooks.internal", Some(22)));
        assert!(!list.allows("hooks.internal", None));
        assert!(list.allows("[::1]", Some(9000)));
        assert!(!list.allows("::1", Some(9001)));
        assert!(
            list.allows("[fd00::5]", Some(22)),
            "a bare IPv6 address is a host"
        );
        assert!(list.names_host("hooks.internal"));
        assert!(!list.names_host("other"));
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(list.allows_url(&url("https://hooks.internal:8443/x")));
        assert!(
            !list.allows_url(&url("https://hooks.internal/x")),
            "443 is not 8443"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for entry in [
            "host:0",
            "host:99999",
            "host:x",
            ":80",
            "[::1",
            "[::1]x",
            "",
        ] {
            let error = AllowList::new(&[entry]).expect_err(entry);
            assert!(error.contains(entry.trim()), "{error}");
        }
    }
}
