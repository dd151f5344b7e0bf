//! The delivery HTTP client: one POST per call, reported as an [`AttemptReport`].
//!
//! The response's status decides the outcome as soon as the headers arrive. The body is
//! only read, and discarded, up to [`HttpSettings::max_response_body_bytes`] within the
//! attempt's timeout, so the connection can be reused; an endpoint that streams gigabytes
//! or stalls after its headers costs at most that prefix and that time, and a 2xx is
//! delivered whatever its body does.

use std::{
    collections::BTreeMap,
    error::Error as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hookflow_core::{
    AllowList, AttemptErrorKind, AttemptReport, Destination, request::PreparedRequest,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use url::Url;

use crate::{
    egress::{EgressProxy, ProxyRefusal},
    retry_after::parse_retry_after,
    ssrf::{AddressGuard, BlockedAddress},
};

/// How the client connects.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Time allowed to establish a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Hosts (or hosts on one port) the SSRF guard lets through even when they resolve to
    /// private addresses.
    pub allowed_hosts: AllowList,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The most of a response body read (and discarded) per attempt.
    pub max_response_body_bytes: usize,
    /// The forward proxy deliveries leave through by default, if any.
    pub proxy: Option<EgressProxy>,
    /// Named proxies a destination may choose instead (`proxy = "<name>"`).
    pub proxies: BTreeMap<String, EgressProxy>,
}

/// One attempt to make. Its `Debug` names the headers, never their values.
pub struct AttemptRequest<'a> {
    /// Where to POST.
    pub url: &'a Url,
    /// Headers, including the Standard Webhooks ones and the destination's own.
    pub headers: Vec<(String, String)>,
    /// The body, sent as `application/json`.
    pub body: Vec<u8>,
    /// Total time allowed for the attempt, from connect to the last byte of the response.
    pub timeout: Duration,
    /// The named proxy to leave through (the default route when `None`).
    pub proxy: Option<&'a str>,
}

impl std::fmt::Debug for AttemptRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AttemptRequest")
            .field(
                "url",
                &hookflow_core::redaction::redact_url(self.url.as_str()),
            )
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Makes delivery attempts. Cheap to clone: connections are pooled and shared.
#[derive(Clone)]
pub struct DeliveryClient {
    /// The default way out (direct, or the default proxy).
    default: Route,
    /// The named proxies' ways out.
    named: Arc<BTreeMap<String, Route>>,
    allowed: Arc<AllowList>,
    max_response_body_bytes: usize,
}

/// One way out: its clients, and the proxy they go through.
#[derive(Clone)]
struct Route {
    /// For requests the allow-list does not name: its resolver exempts nothing.
    guarded: reqwest::Client,
    /// For requests whose host and port the allow-list names.
    exempt: reqwest::Client,
    proxy: Option<EgressProxy>,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(#[from] reqwest::Error);

impl DeliveryClient {
    /// Builds the client: no redirects, no retries, connect timeout, guarded DNS, and
    /// no proxy but the deployment's egress proxies (never one from the environment).
    pub fn new(settings: &HttpSettings) -> Result<Self, ClientBuildError> {
        let allowed = Arc::new(settings.allowed_hosts.clone());
        let route = |proxy: Option<&EgressProxy>| -> Result<Route, ClientBuildError> {
            let build = |guard: AddressGuard| Self::build(settings, guard, proxy);
            Ok(Route {
                guarded: build(AddressGuard::strict(allowed.clone()))?,
                exempt: build(AddressGuard::exempting(allowed.clone()))?,
                proxy: proxy.cloned(),
            })
        };
        let named = settings
            .proxies
            .iter()
            .map(|(name, proxy)| Ok((name.clone(), route(Some(proxy))?)))
            .collect::<Result<_, ClientBuildError>>()?;
        Ok(DeliveryClient {
            default: route(settings.proxy.as_ref())?,
            named: Arc::new(named),
            allowed,
            max_response_body_bytes: settings.max_response_body_bytes,
        })
    }

    /// One client of a route: through `proxy` if any, resolving through `guard`.
    fn build(
        settings: &HttpSettings,
        mut guard: AddressGuard,
        proxy: Option<&EgressProxy>,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // reqwest retries some protocol-level refusals by default; the workflow is
            // the one owner of retries, so the client makes exactly one request per
            // attempt.
            .retry(reqwest::retry::never())
            .no_proxy();
        let builder = match proxy {
            Some(proxy) => {
                guard = guard.with_proxy_host(proxy.host());
                builder.proxy(proxy.for_client()?)
            }
            None => builder,
        };
        builder
            .connect_timeout(settings.connect_timeout)
            .dns_resolver(Arc::new(guard))
            .user_agent(settings.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
    }

    /// Sends a prepared request to `destination`, within its timeout.
    pub async fn send_to(
        &self,
        destination: &Destination,
        request: PreparedRequest,
    ) -> AttemptReport {
        self.send(AttemptRequest {
            url: &destination.url,
            headers: request.headers,
            body: request.body,
            timeout: Duration::from_millis(destination.timeout_ms),
            proxy: destination.proxy.as_deref(),
        })
        .await
    }

    /// Makes one attempt. Never retries, never follows a redirect, never panics: every
    /// failure becomes a report.
    pub async fn send(&self, request: AttemptRequest<'_>) -> AttemptReport {
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        if let Err(blocked) = AddressGuard::strict(self.allowed.clone()).check_literal(request.url)
        {
            return AttemptReport::failed(AttemptErrorKind::Blocked, blocked.to_string(), 0);
        }
        let route = match request.proxy {
            None => &self.default,
            Some(name) => match self.named.get(name) {
                Some(route) => route,
                // A proxy removed from the settings while a destination still names it:
                // retried, so its deliveries wait for the proxy to be added back.
                None => {
                    let reason = format!("the egress proxy `{name}` is not in http.proxies");
                    return AttemptReport::failed(AttemptErrorKind::Connect, reason, 0);
                }
            },
        };
        let allowed = self.allowed.allows_url(request.url);
        let mut timeout = request.timeout;
        if let Some(proxy) = &route.proxy {
            // Within the attempt's timeout: a resolver that stalls must not hold it longer.
            let checked = tokio::time::timeout(timeout, proxy.check(request.url, allowed)).await;
            match checked {
                Ok(Ok(())) => timeout = timeout.saturating_sub(started.elapsed()),
                Ok(Err(ProxyRefusal::Blocked(reason))) => {
                    return AttemptReport::failed(AttemptErrorKind::Blocked, reason, elapsed_ms());
                }
                Ok(Err(ProxyRefusal::Unresolved(reason))) => {
                    return AttemptReport::failed(AttemptErrorKind::Connect, reason, elapsed_ms());
                }
                Err(_) => {
                    let reason = format!(
                        "resolving the host took longer than {} ms",
                        timeout.as_millis()
                    );
                    return AttemptReport::failed(AttemptErrorKind::Timeout, reason, elapsed_ms());
                }
            }
        }
        let client = if allowed {
            &route.exempt
        } else {
            &route.guarded
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in request.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                // The value may be a credential: the reason names the header only.
                _ => {
                    let reason = format!("header {name} is not valid in HTTP");
                    return AttemptReport::failed(AttemptErrorKind::Invalid, reason, 0);
                }
            }
        }
        let sent = client
            .post(request.url.clone())
            .headers(headers)
            .timeout(timeout)
            .body(request.body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let report = report_error(&error, request.timeout, elapsed_ms());
                return match (&route.proxy, &report.error) {
                    // A connection that failed or timed out may be the proxy's as well as
                    // the endpoint's: the proxy is named, never its secrets.
                    (Some(proxy), Some(failure))
                        if failure.kind != AttemptErrorKind::Blocked
                            && (failure.kind == AttemptErrorKind::Connect
                                || error.is_connect()) =>
                    {
                        let message = format!(
                            "through the egress proxy {}: {}",
                            proxy.shown(),
                            failure.message
                        );
                        AttemptReport::failed(failure.kind, message, report.duration_ms)
                    }
                    _ => report,
                };
            }
        };
        let status = response.status().as_u16();
        // A plain-http URL is forwarded by an http:// proxy, which answers 407 itself when
        // it refuses the credentials: the proxy's failure, not the endpoint's refusal.
        // (Through a tunnel, a 407 can only be the endpoint's.)
        if let (Some(proxy), 407) = (&route.proxy, status)
            && proxy.forwards(request.url)
        {
            let message = format!(
                "the egress proxy {} refused its credentials (407)",
                proxy.shown()
            );
            return AttemptReport::failed(AttemptErrorKind::Connect, message, elapsed_ms());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map(|d| d.as_millis() as u64);
        let report = AttemptReport::response(status, retry_after, elapsed_ms());
        drain_prefix(response, self.max_response_body_bytes).await;
        report
    }
}

/// Reads and discards at most `limit` bytes of the body, within the request's timeout
/// (reqwest applies it to the body too). A body that ends within the limit leaves the
/// connection reusable; a longer, stalled or broken one is dropped with the connection.
async fn drain_prefix(mut response: reqwest::Response, limit: usize) {
    let mut read = 0;
    while read <= limit {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

fn report_error(error: &reqwest::Error, timeout: Duration, elapsed_ms: u64) -> AttemptReport {
    if let Some(blocked) = find_source::<BlockedAddress>(error) {
        return AttemptReport::failed(AttemptErrorKind::Blocked, blocked.to_string(), elapsed_ms);
    }
    let (kind, message) = if error.is_timeout() {
        (
            AttemptErrorKind::Timeout,
            format!("no response within {} ms", timeout.as_millis()),
        )
    } else if error.is_connect() {
        (
            AttemptErrorKind::Connect,
            format!("connection failed: {}", root_cause(error)),
        )
    } else if error.is_builder() {
        (
            AttemptErrorKind::Invalid,
            format!("invalid request: {}", root_cause(error)),
        )
    } else {
        (
            AttemptErrorKind::Other,
            format!("request failed: {}", root_cause(error)),
        )
    };
    AttemptReport::failed(kind, message, elapsed_ms)
}

fn find_source<T: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&T> {
    let mut source = error.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// The innermost error's text: reqwest's own message repeats the URL, which may carry
/// credentials in its query, so only the cause is reported.
fn root_cause(error: &reqwest::Error) -> String {
    let mut current: &dyn std::error::Error = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
