//! The delivery HTTP client: one POST per call, reported as an [`AttemptReport`].
//!
//! The response's status decides the outcome as soon as the headers arrive. The body is
//! only read, and discarded, up to [`HttpSettings::max_response_body_bytes`] within the
//! attempt's timeout, so the connection can be reused; an endpoint that streams gigabytes
//! or stalls after its headers costs at most that prefix and that time, and a 2xx is
//! delivered whatever its body does.
//!
//! A destination with TLS options (a client certificate, its own CAs) gets clients of its
//! own, made on first use and kept while its options hold ([`PerDestination`]); its
//! connections are never shared with another destination. A destination with an OAuth2
//! client gets a bearer token from the process's [`TokenCache`] (fetched through the
//! destination's route, under the same guard and within the attempt's timeout) and, on a
//! 401, one more try with a fresh token.

use std::{
    collections::BTreeMap,
    error::Error as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hookflow_core::{
    AllowList, AttemptErrorKind, AttemptReport, Destination, credentials::OAuth2Client,
    request::PreparedRequest, tls::DestinationTls,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use url::Url;

use crate::{
    egress::{EgressProxy, ProxyRefusal},
    oauth2::{
        FetchedToken, MAX_TOKEN_ANSWER_BYTES, Token, TokenCache, read_token_answer, token_request,
    },
    per_destination::PerDestination,
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

/// Makes delivery attempts. Cheap to clone: connections are pooled and shared, and so are
/// the destinations' own clients and OAuth2 tokens.
#[derive(Clone)]
pub struct DeliveryClient {
    /// The default way out (direct, or the default proxy).
    default: Route,
    /// The named proxies' ways out.
    named: Arc<BTreeMap<String, Route>>,
    /// Destinations' own ways out, for their TLS options (and the proxy they chose).
    own: Arc<PerDestination<OwnRouteKey, Route>>,
    /// Destinations' OAuth2 tokens.
    tokens: Arc<TokenCache>,
    settings: Arc<HttpSettings>,
    allowed: Arc<AllowList>,
    max_response_body_bytes: usize,
}

/// What a destination's own route is made from: its TLS options and its proxy's name.
type OwnRouteKey = ([u8; 32], Option<Box<str>>);

/// One way out: its clients, and the proxy they go through.
#[derive(Clone)]
struct Route {
    /// For requests the allow-list does not name: its resolver exempts nothing.
    guarded: reqwest::Client,
    /// For requests whose host and port the allow-list names.
    exempt: reqwest::Client,
    proxy: Option<EgressProxy>,
}

/// One request to make.
struct Outgoing<'a> {
    route: &'a Route,
    url: &'a Url,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The time left for it.
    timeout: Duration,
    /// The attempt's whole timeout, which a timeout is said to be.
    limit: Duration,
    /// Whether the destination presents a client certificate (a TLS alert about one is
    /// then the endpoint refusing it).
    presents_certificate: bool,
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
        let named = settings
            .proxies
            .iter()
            .map(|(name, proxy)| {
                let route = Route::new(settings, &allowed, Some(proxy), None)?;
                Ok((name.clone(), route))
            })
            .collect::<Result<_, ClientBuildError>>()?;
        Ok(DeliveryClient {
            default: Route::new(settings, &allowed, settings.proxy.as_ref(), None)?,
            named: Arc::new(named),
            own: Arc::default(),
            tokens: Arc::default(),
            settings: Arc::new(settings.clone()),
            allowed,
            max_response_body_bytes: settings.max_response_body_bytes,
        })
    }
}

impl Route {
    /// The clients of a way out: through `proxy` if any, with a destination's `tls`
    /// options if any.
    fn new(
        settings: &HttpSettings,
        allowed: &Arc<AllowList>,
        proxy: Option<&EgressProxy>,
        tls: Option<&DestinationTls>,
    ) -> Result<Route, ClientBuildError> {
        let build = |guard: AddressGuard| Self::build(settings, guard, proxy, tls);
        Ok(Route {
            guarded: build(AddressGuard::strict(allowed.clone()))?,
            exempt: build(AddressGuard::exempting(allowed.clone()))?,
            proxy: proxy.cloned(),
        })
    }

    /// One client of a route: through `proxy` if any, resolving through `guard`,
    /// presenting `tls`'s certificate and trusting its CAs (only them) if it sets them.
    fn build(
        settings: &HttpSettings,
        mut guard: AddressGuard,
        proxy: Option<&EgressProxy>,
        tls: Option<&DestinationTls>,
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
        let mut builder = builder;
        if let Some(identity) = tls.and_then(DestinationTls::identity_pem) {
            builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes())?);
        }
        if let Some(authorities) = tls.and_then(DestinationTls::authorities_pem) {
            // A private PKI: the public roots would let any publicly trusted certificate
            // for the host through.
            builder = builder.tls_built_in_root_certs(false);
            for authority in reqwest::Certificate::from_pem_bundle(authorities.as_bytes())? {
                builder = builder.add_root_certificate(authority);
            }
        }
        builder
            .connect_timeout(settings.connect_timeout)
            .dns_resolver(Arc::new(guard))
            .user_agent(settings.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
    }
}

impl DeliveryClient {
    /// Sends a prepared request to `destination`, within its timeout: with its TLS options
    /// and its OAuth2 token, if it has them.
    pub async fn send_to(
        &self,
        destination: &Destination,
        request: PreparedRequest,
    ) -> AttemptReport {
        let started = Instant::now();
        let timeout = Duration::from_millis(destination.timeout_ms);
        let deadline = started + timeout;
        let route = match self.route_of(destination) {
            Ok(route) => route,
            Err(report) => return report,
        };
        let outgoing = |headers: Vec<(String, String)>, body: Vec<u8>| Outgoing {
            route: &route,
            url: &destination.url,
            headers,
            body,
            timeout: deadline.saturating_duration_since(Instant::now()),
            limit: timeout,
            presents_certificate: destination
                .tls
                .as_deref()
                .is_some_and(|tls| tls.identity_pem().is_some()),
        };
        let Some(oauth2) = destination.oauth2.as_deref() else {
            return self
                .post(outgoing(request.headers, request.body), started)
                .await;
        };
        let mut headers = request.headers;
        let mut refused = None;
        loop {
            let token = self
                .token(destination, oauth2, deadline, refused.as_deref())
                .await;
            let token = match token {
                Ok(token) => token,
                Err(mut report) => {
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    return report;
                }
            };
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
            headers.push(("authorization".into(), format!("Bearer {}", token.value)));
            let report = self
                .post(outgoing(headers.clone(), request.body.clone()), started)
                .await;
            // A 401 to a token from the cache may be one the endpoint stopped accepting
            // before its expiry (a key rotated): once, a fresh one. A 401 to a fresh token
            // is the endpoint's answer.
            if report.status != Some(401) || token.fresh || refused.is_some() {
                return report;
            }
            refused = Some(token.value);
        }
    }

    /// `destination`'s way out: its own, when it has TLS options; else its proxy's.
    fn route_of(&self, destination: &Destination) -> Result<Route, AttemptReport> {
        let Some(tls) = destination.tls.as_deref() else {
            return self.route(destination.proxy.as_deref()).cloned();
        };
        // Checked here, not only when written: a stored certificate expires.
        if let Err(error) = destination.check_certificate_current(chrono::Utc::now().timestamp()) {
            let reason = format!("{error}: give it a valid one, then redeliver");
            return Err(AttemptReport::failed(AttemptErrorKind::Invalid, reason, 0));
        }
        let proxy = match destination.proxy.as_deref() {
            None => self.settings.proxy.as_ref(),
            Some(name) => self.route(Some(name))?.proxy.as_ref(),
        };
        let key = (tls.fingerprint(), destination.proxy.clone());
        self.own
            .get_or_make(destination, key, || {
                Route::new(&self.settings, &self.allowed, proxy, Some(tls))
            })
            .map(|route| (*route).clone())
            .map_err(|error| {
                let reason = format!(
                    "the destination's TLS options cannot be used: {}",
                    root_cause(&error.0)
                );
                AttemptReport::failed(AttemptErrorKind::Invalid, reason, 0)
            })
    }

    /// The way out through the proxy named `name` (the default one when `None`).
    fn route(&self, name: Option<&str>) -> Result<&Route, AttemptReport> {
        match name {
            None => Ok(&self.default),
            Some(name) => self.named.get(name).ok_or_else(|| {
                // A proxy removed from the settings while a destination still names it:
                // retried, so its deliveries wait for the proxy to be added back.
                let reason = format!("the egress proxy `{name}` is not in http.proxies");
                AttemptReport::failed(AttemptErrorKind::Connect, reason, 0)
            }),
        }
    }

    /// A bearer token for `destination` by `deadline`, from the cache or its token
    /// endpoint; `refused` is the token its endpoint just answered 401 to.
    async fn token(
        &self,
        destination: &Destination,
        oauth2: &OAuth2Client,
        deadline: Instant,
        refused: Option<&str>,
    ) -> Result<Token, AttemptReport> {
        // A fetch may outlive this attempt (a refresh in the background): it owns what it
        // needs.
        let fetch = |deadline: tokio::time::Instant| {
            let (client, destination) = (self.clone(), destination.clone());
            let oauth2 = oauth2.clone();
            async move {
                client
                    .fetch_token(&destination, &oauth2, deadline.into_std())
                    .await
            }
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        self.tokens
            .token(destination, oauth2, deadline, refused, fetch)
            .await
    }

    /// Asks `oauth2`'s token endpoint for a token, through `destination`'s proxy and under
    /// the guard (never with the destination's TLS options: they are for its endpoint).
    async fn fetch_token(
        &self,
        destination: &Destination,
        oauth2: &OAuth2Client,
        deadline: Instant,
    ) -> Result<FetchedToken, AttemptReport> {
        let started = Instant::now();
        // Refused by the guard or not a valid request: said as it is (final). Any other
        // failure is the token endpoint's (retried).
        let failed = |kind: AttemptErrorKind, reason: String| {
            let kind = match kind {
                AttemptErrorKind::Blocked | AttemptErrorKind::Invalid => kind,
                _ => AttemptErrorKind::Token,
            };
            let reason = format!("the token endpoint: {reason}");
            AttemptReport::failed(kind, reason, started.elapsed().as_millis() as u64)
        };
        let (headers, body) = token_request(oauth2);
        let remaining = deadline.saturating_duration_since(started);
        let outgoing = Outgoing {
            route: self.route(destination.proxy.as_deref())?,
            url: &oauth2.token_url,
            headers,
            body,
            timeout: remaining,
            limit: remaining,
            presents_certificate: false,
        };
        let response = self.exchange(outgoing).await.map_err(|report| {
            let error = report.error.unwrap_or(hookflow_core::AttemptError {
                kind: AttemptErrorKind::Other,
                message: "no answer".into(),
            });
            failed(error.kind, error.message)
        })?;
        let status = response.status().as_u16();
        let answer = read_prefix(response, MAX_TOKEN_ANSWER_BYTES)
            .await
            .map_err(|()| failed(AttemptErrorKind::Token, "its answer broke off".into()))?;
        read_token_answer(status, &answer).map_err(|reason| {
            AttemptReport::failed(
                AttemptErrorKind::Token,
                reason,
                started.elapsed().as_millis() as u64,
            )
        })
    }

    /// Makes one attempt. Never retries, never follows a redirect, never panics: every
    /// failure becomes a report.
    pub async fn send(&self, request: AttemptRequest<'_>) -> AttemptReport {
        let started = Instant::now();
        let route = match self.route(request.proxy) {
            Ok(route) => route,
            Err(report) => return report,
        };
        let outgoing = Outgoing {
            route,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout: request.timeout,
            limit: request.timeout,
            presents_certificate: false,
        };
        self.post(outgoing, started).await
    }

    /// Sends `outgoing` and reports what came of it, timed from `started`.
    async fn post(&self, outgoing: Outgoing<'_>, started: Instant) -> AttemptReport {
        match self.exchange(outgoing).await {
            Ok(response) => self.respond(response, started).await,
            Err(mut report) => {
                report.duration_ms = started.elapsed().as_millis() as u64;
                report
            }
        }
    }

    /// POSTs `outgoing` up to its response's headers: the guard first, then the proxy's
    /// pre-check, then the request. What fails before a response is a report.
    async fn exchange(&self, outgoing: Outgoing<'_>) -> Result<reqwest::Response, AttemptReport> {
        let Outgoing {
            route,
            url,
            headers,
            body,
            timeout,
            limit,
            presents_certificate,
        } = outgoing;
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        if let Err(blocked) = AddressGuard::strict(self.allowed.clone()).check_literal(url) {
            return Err(AttemptReport::failed(
                AttemptErrorKind::Blocked,
                blocked.to_string(),
                0,
            ));
        }
        let allowed = self.allowed.allows_url(url);
        let mut timeout = timeout;
        if let Some(proxy) = &route.proxy {
            // Within the attempt's timeout: a resolver that stalls must not hold it longer.
            let checked = tokio::time::timeout(timeout, proxy.check(url, allowed)).await;
            let refused = |kind, reason| Err(AttemptReport::failed(kind, reason, elapsed_ms()));
            match checked {
                Ok(Ok(())) => timeout = timeout.saturating_sub(started.elapsed()),
                Ok(Err(ProxyRefusal::Blocked(reason))) => {
                    return refused(AttemptErrorKind::Blocked, reason);
                }
                Ok(Err(ProxyRefusal::Unresolved(reason))) => {
                    return refused(AttemptErrorKind::Connect, reason);
                }
                Err(_) => {
                    let reason = format!(
                        "resolving the host took longer than {} ms",
                        timeout.as_millis()
                    );
                    return refused(AttemptErrorKind::Timeout, reason);
                }
            }
        }
        let client = if allowed {
            &route.exempt
        } else {
            &route.guarded
        };
        let mut header_map = HeaderMap::new();
        header_map.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(name), Ok(value)) => {
                    header_map.insert(name, value);
                }
                // The value may be a credential: the reason names the header only.
                _ => {
                    let reason = format!("header {name} is not valid in HTTP");
                    return Err(AttemptReport::failed(AttemptErrorKind::Invalid, reason, 0));
                }
            }
        }
        let sent = client
            .post(url.clone())
            .headers(header_map)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let report = report_error(&error, limit, presents_certificate, elapsed_ms());
                return Err(match (&route.proxy, &report.error) {
                    // A connection that failed or timed out may be the proxy's as well as
                    // the endpoint's: the proxy is named, never its secrets.
                    (Some(proxy), Some(failure))
                        if !matches!(
                            failure.kind,
                            AttemptErrorKind::Blocked | AttemptErrorKind::Tls
                        ) && (failure.kind == AttemptErrorKind::Connect
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
                });
            }
        };
        // A plain-http URL is forwarded by an http:// proxy, which answers 407 itself when
        // it refuses the credentials: the proxy's failure, not the endpoint's refusal.
        // (Through a tunnel, a 407 can only be the endpoint's.)
        if let (Some(proxy), 407) = (&route.proxy, response.status().as_u16())
            && proxy.forwards(url)
        {
            let message = format!(
                "the egress proxy {} refused its credentials (407)",
                proxy.shown()
            );
            return Err(AttemptReport::failed(
                AttemptErrorKind::Connect,
                message,
                elapsed_ms(),
            ));
        }
        Ok(response)
    }

    /// The report of `response` to an attempt begun at `started`; its body is read (up
    /// to the limit) and discarded, so its connection can serve again.
    async fn respond(&self, response: reqwest::Response, started: Instant) -> AttemptReport {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map(|d| d.as_millis() as u64);
        let status = response.status().as_u16();
        let report =
            AttemptReport::response(status, retry_after, started.elapsed().as_millis() as u64);
        drain_prefix(response, self.max_response_body_bytes).await;
        report
    }
}

/// The body of `response`, up to `limit` bytes (the rest is dropped with the connection),
/// within the request's timeout; `Err` when it breaks off.
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ()> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(()),
        }
    }
    Ok(body)
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

fn report_error(
    error: &reqwest::Error,
    timeout: Duration,
    presents_certificate: bool,
    elapsed_ms: u64,
) -> AttemptReport {
    if let Some(blocked) = find_source::<BlockedAddress>(error) {
        return AttemptReport::failed(AttemptErrorKind::Blocked, blocked.to_string(), elapsed_ms);
    }
    if let Some(alert) = certificate_refusal(error).filter(|_| presents_certificate) {
        let message = format!(
            "the endpoint refused the TLS client certificate (alert {alert:?}): give the \
             destination a certificate it accepts, then redeliver"
        );
        return AttemptReport::failed(AttemptErrorKind::Tls, message, elapsed_ms);
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

/// The TLS alert with which the endpoint refused the client's certificate, if it did: an
/// alert about a certificate, received from the peer (not one rustls raised about the
/// server's certificate, which stays a connection failure, retried).
fn certificate_refusal(error: &reqwest::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as Alert;
    match find_source::<rustls::Error>(error)? {
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::CertificateRequired),
        ) => Some(*alert),
        _ => None,
    }
}

/// The first error of type `T` in `error`'s chain, looking inside I/O errors too (an I/O
/// error's `source` skips the error it wraps).
fn find_source<T: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&T> {
    let mut source = error.source();
    while let Some(err) = source {
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(err), wrapped].into_iter().flatten() {
            if let Some(found) = candidate.downcast_ref::<T>() {
                return Some(found);
            }
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
