//! OAuth2 client credentials (RFC 6749 §4.4) for destinations that ask for them: the token
//! request, reading its answer, and the process's token cache.
//!
//! The cache keeps one token per destination ([`PerDestination`]: team, id and uid, the
//! client's settings, so a new client secret never gets the old secret's token, and the
//! endpoint's origin, so a token never follows a URL to another host). Every attempt of the
//! process shares it: one fetch is out per destination however many attempts wait (each
//! within its own timeout; a failed fetch answers them all), a token is fetched again in
//! the background a little before it expires while it still serves, and an attempt whose
//! endpoint answers 401 to a token from the cache drops it (not one another attempt
//! fetched since) and tries once more with a fresh one.
//! Tokens are secrets: they are never logged, never in a report, and never recorded.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hookflow_core::{
    AttemptErrorKind, AttemptReport, Destination,
    credentials::{ClientAuth, OAuth2Client},
    sync::LockUnpoisoned,
};
use serde::Deserialize;
// Tokio's clock: the same as the system's, and one tests can pause.
use tokio::{sync::Notify, time::Instant};

use crate::per_destination::PerDestination;

/// The most of a token answer read.
pub const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// How long a token is used when its answer says nothing of its lifetime (a 401 from the
/// endpoint ends it sooner).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its expiry a token is fetched again, at most (a fifth of a short
/// lifetime).
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// A token as the token endpoint gave it. Its `Debug` hides the token.
#[derive(Clone)]
pub struct FetchedToken {
    /// The access token.
    pub value: String,
    /// How long it is valid, as the answer says.
    pub lifetime: Option<Duration>,
}

impl std::fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedToken")
            .field("value", &hookflow_core::REDACTED)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// The token request of `client`: its headers and form body.
pub fn token_request(client: &OAuth2Client) -> (Vec<(String, String)>, Vec<u8>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !client.scopes.is_empty() {
        form.append_pair("scope", &client.scopes.join(" "));
    }
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    match client.client_auth {
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: each part form-encoded, then Basic.
            let encode = |text: &str| -> String {
                url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
            };
            let pair = format!(
                "{}:{}",
                encode(&client.client_id),
                encode(client.client_secret())
            );
            headers.push((
                "authorization".to_owned(),
                format!("Basic {}", BASE64.encode(pair)),
            ));
        }
        ClientAuth::Body => {
            form.append_pair("client_id", &client.client_id);
            form.append_pair("client_secret", client.client_secret());
        }
    }
    (headers, form.finish().into_bytes())
}

/// The token in the token endpoint's answer (`status`, `body`), or why there is none. The
/// reason quotes the answer's `error` code only, never a token or its description.
pub fn read_token_answer(status: u16, body: &[u8]) -> Result<FetchedToken, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let code = answer
            .and_then(|a| a.error)
            .filter(|code| {
                code.len() <= 64
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .map(|code| format!(" ({code})"))
            .unwrap_or_default();
        return Err(format!("the token endpoint answered {status}{code}"));
    }
    let Some(answer) = answer else {
        return Err("the token endpoint's answer is not JSON".into());
    };
    let value = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("the token endpoint's answer has no access_token")?;
    if value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err("the token endpoint's access_token cannot be sent in a header".into());
    }
    if let Some(kind) = answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "the token endpoint's token_type is `{}`, not Bearer",
            kind.chars().take(32).collect::<String>()
        ));
    }
    // Some servers send the number as a string.
    let lifetime = match answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs);
    Ok(FetchedToken { value, lifetime })
}

/// The longest a token is kept, whatever its answer says (a lifetime beyond it, or one
/// that would overflow the clock, is taken as this).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a failed fetch answers the attempts that were waiting for it and those that
/// come just after, so they fail at once instead of each asking the failing token endpoint
/// in turn.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// A token kept: used until `refresh_at`, then (while a fresh one is fetched) until
/// `expires_at`.
struct Kept {
    value: String,
    refresh_at: Instant,
    expires_at: Instant,
}

impl Kept {
    fn new(token: FetchedToken, fetched: Instant) -> Kept {
        let lifetime = token.lifetime.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
        let ahead = REFRESH_AHEAD.min(lifetime / 5);
        Kept {
            value: token.value,
            refresh_at: fetched + (lifetime - ahead),
            expires_at: fetched + lifetime,
        }
    }
}

/// One destination's token and whether a fetch is out. Its lock is never held across an
/// await: a fetch runs outside it, and the attempts waiting for one wait on `fetched`.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    fetched: Notify,
}

#[derive(Default)]
struct SlotState {
    kept: Option<Kept>,
    /// How many tokens were kept so far: an attempt that waited for a fetch takes its
    /// token (while it has not expired) even when it is already due for a refresh.
    generation: u64,
    fetching: bool,
    /// The token endpoint's last failure and when it ended.
    failed: Option<(Instant, AttemptReport)>,
}

impl SlotState {
    /// Keeps `token`, fetched at `fetched_at`; its value.
    fn keep(&mut self, token: FetchedToken, fetched_at: Instant) -> String {
        let kept = Kept::new(token, fetched_at);
        let value = kept.value.clone();
        self.kept = Some(kept);
        self.generation += 1;
        self.failed = None;
        value
    }
}

/// A token given to an attempt.
pub struct Token {
    /// The token.
    pub value: String,
    /// Whether it was fetched for this attempt (a 401 then says the endpoint refuses fresh
    /// tokens: fetching another would not help).
    pub fresh: bool,
}

/// Ends a fetch whatever happens to it (the attempt doing it may be dropped at its
/// deadline, a background refresh may never run): the slot says no fetch is out, and the
/// waiting attempts look again. Made before the fetch starts, and owned by whatever runs it.
struct FetchGuard(Arc<Slot>);

impl Drop for FetchGuard {
    fn drop(&mut self) {
        self.0.state.lock_unpoisoned().fetching = false;
        self.0.fetched.notify_waiters();
    }
}

/// The process's OAuth2 tokens, one per destination (team, id and uid) and settings (the
/// client's, and the origin the token is sent to: a token never follows a URL to another
/// host).
#[derive(Default)]
pub struct TokenCache {
    slots: PerDestination<([u8; 32], Option<String>), Slot>,
}

impl TokenCache {
    /// A token for `destination`'s `client` by `deadline`:
    /// - the one kept while it is fresh;
    /// - near its expiry, still the one kept, while a fresh one is fetched in the
    ///   background (a token endpoint that is slow or down then costs no attempt);
    /// - else one this attempt fetches with `fetch`, or, when another attempt's fetch is
    ///   out, the one that fetch gets (one fetch per destination at a time).
    ///
    /// `refused` is a token the endpoint just answered 401 to: it is dropped first, unless
    /// another has replaced it already.
    pub async fn token<Fut>(
        &self,
        destination: &Destination,
        client: &OAuth2Client,
        deadline: Instant,
        refused: Option<&str>,
        fetch: impl Fn(Instant) -> Fut,
    ) -> Result<Token, AttemptReport>
    where
        Fut: Future<Output = Result<FetchedToken, AttemptReport>> + Send + 'static,
    {
        let started = Instant::now();
        let slot = self.slot(destination, client);
        let mut waited_for = None;
        // Dropped once: a token another attempt fetched meanwhile may be equal to it.
        let mut refused = refused;
        loop {
            let fetched = slot.fetched.notified();
            let fetch_here = {
                let mut state = slot.state.lock_unpoisoned();
                if let Some(refused) = refused.take()
                    && state
                        .kept
                        .as_ref()
                        .is_some_and(|kept| kept.value == refused)
                {
                    state.kept = None;
                }
                let now = Instant::now();
                let newer = waited_for.is_some_and(|seen| state.generation > seen);
                match &state.kept {
                    Some(kept) if now < kept.refresh_at || (newer && now < kept.expires_at) => {
                        return Ok(cached(kept));
                    }
                    Some(kept) if now < kept.expires_at => {
                        let token = cached(kept);
                        if !state.fetching {
                            state.fetching = true;
                            let guard = FetchGuard(slot.clone());
                            // Bounded like an attempt, as long as this one's timeout.
                            let refresh = fetch(now + deadline.saturating_duration_since(started));
                            tokio::spawn(Self::refresh(guard, refresh));
                        }
                        return Ok(token);
                    }
                    _ => {}
                }
                if let Some((ended, report)) = &state.failed
                    && now < *ended + FAILURE_HOLD
                    && !state.fetching
                {
                    return Err(report.clone());
                }
                waited_for = Some(state.generation);
                // No fetch out: this attempt fetches; else it waits for the one out.
                !std::mem::replace(&mut state.fetching, true)
            };
            if fetch_here {
                let guard = FetchGuard(slot.clone());
                return Self::fetch_now(guard, fetch(deadline), deadline, started).await;
            }
            if tokio::time::timeout_at(deadline, fetched).await.is_err() {
                return Err(AttemptReport::failed(
                    AttemptErrorKind::Token,
                    "no token in time: another attempt's fetch from the token endpoint is \
                     still out",
                    started.elapsed().as_millis() as u64,
                ));
            }
        }
    }

    /// Fetches a token for this attempt, keeps it, and wakes the attempts waiting for it.
    /// A failure of the token endpoint answers them too, for a moment; running out of this
    /// attempt's own time does not (they have theirs).
    async fn fetch_now(
        guard: FetchGuard,
        fetch: impl Future<Output = Result<FetchedToken, AttemptReport>>,
        deadline: Instant,
        started: Instant,
    ) -> Result<Token, AttemptReport> {
        let fetched_at = Instant::now();
        let fetched = tokio::time::timeout_at(deadline, fetch).await;
        let mut state = guard.0.state.lock_unpoisoned();
        let result = match fetched {
            Ok(Ok(token)) => Ok(Token {
                value: state.keep(token, fetched_at),
                fresh: true,
            }),
            // The fetch may have ended on its own timeout, which is this attempt's too.
            Ok(Err(report)) if Instant::now() + OWN_DEADLINE_MARGIN < deadline => {
                state.failed = Some((Instant::now(), report.clone()));
                Err(report)
            }
            Ok(Err(report)) => Err(report),
            Err(_) => Err(AttemptReport::failed(
                AttemptErrorKind::Token,
                "the token endpoint gave no token in time",
                started.elapsed().as_millis() as u64,
            )),
        };
        drop(state);
        drop(guard);
        result
    }

    /// Fetches a fresh token in the background while the kept one still serves; a failure
    /// leaves the kept one in place, and the next attempt after it tries again.
    async fn refresh(
        guard: FetchGuard,
        fetch: impl Future<Output = Result<FetchedToken, AttemptReport>>,
    ) {
        let fetched_at = Instant::now();
        if let Ok(Ok(token)) = tokio::time::timeout(MAX_REFRESH_TIME, fetch).await {
            guard.0.state.lock_unpoisoned().keep(token, fetched_at);
        }
        drop(guard);
    }

    fn slot(&self, destination: &Destination, client: &OAuth2Client) -> Arc<Slot> {
        let origin = hookflow_core::redaction::url_origin(destination.url.as_str());
        let made = self
            .slots
            .get_or_make(destination, (client.fingerprint(), origin), || {
                Ok::<_, std::convert::Infallible>(Slot::default())
            });
        match made {
            Ok(slot) => slot,
        }
    }
}

/// The longest a background refresh may take (the attempt that started it is not waiting).
const MAX_REFRESH_TIME: Duration = Duration::from_secs(60);
/// A fetch failing this close to its attempt's deadline may have failed for want of time:
/// not the token endpoint's failure to answer others with.
const OWN_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

fn cached(kept: &Kept) -> Token {
    Token {
        value: kept.value.clone(),
        fresh: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use hookflow_core::{DestinationSpec, ValidationRules};

    use super::*;

    fn destination(team_id: i64, secret: &str, auth: &str) -> Destination {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": team_id, "url": "https://hooks.example.com/x",
            "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "hook flow",
                       "client_secret": secret, "scopes": ["a.write", "b"],
                       "client_auth": auth},
        }))
        .expect("spec");
        spec.validate_one(&ValidationRules::default())
            .expect("valid")
    }

    fn client(d: &Destination) -> &OAuth2Client {
        d.oauth2.as_deref().expect("oauth2")
    }

    #[test]
    fn the_request_carries_the_grant_scopes_and_client_credentials() {
        let basic = destination(1, "s3cr:et", "basic");
        let (headers, body) = token_request(client(&basic));
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            "grant_type=client_credentials&scope=a.write+b"
        );
        let authorization = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.clone());
        // base64("hook+flow:s3cr%3Aet")
        assert_eq!(
            authorization.as_deref(),
            Some("Basic aG9vaytmbG93OnMzY3IlM0FldA==")
        );
        let in_body = destination(1, "s3cr:et", "body");
        let (headers, body) = token_request(client(&in_body));
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            "grant_type=client_credentials&scope=a.write+b&client_id=hook+flow&client_secret=s3cr%3Aet"
        );
        assert!(headers.iter().all(|(n, _)| n != "authorization"));
        assert!(!format!("{:?}", client(&basic)).contains("s3cr"));
    }

    #[test]
    fn answers_are_read_and_refusals_name_the_error_code_only() {
        let token = read_token_answer(
            200,
            br#"{"access_token":"tok1","token_type":"bearer","expires_in":"120"}"#,
        )
        .expect("token");
        assert_eq!(
            (token.value.as_str(), token.lifetime),
            ("tok1", Some(Duration::from_secs(120)))
        );
        let cases: [(u16, &[u8], &str); 6] = [
            (
                401,
                br#"{"error":"invalid_client","error_description":"secret s3cr"}"#,
                "the token endpoint answered 401 (invalid_client)",
            ),
            (503, b"<html>", "the token endpoint answered 503"),
            (200, b"<html>", "the token endpoint's answer is not JSON"),
            (200, br#"{"token_type":"bearer"}"#, "has no access_token"),
            (
                200,
                br#"{"access_token":"a b"}"#,
                "cannot be sent in a header",
            ),
            (
                200,
                br#"{"access_token":"t","token_type":"mac"}"#,
                "token_type is `mac`, not Bearer",
            ),
        ];
        for (status, body, says) in cases {
            let error = read_token_answer(status, body).expect_err("refused");
            assert!(error.contains(says), "{error}");
            assert!(!error.contains("s3cr"), "{error}");
        }
    }

    /// A fetch that counts its calls and answers `token` (or fails, for `None`) after
    /// `delay`.
    fn fetcher(
        calls: &Arc<AtomicUsize>,
        token: Option<&'static str>,
        lifetime: u64,
        delay: Duration,
    ) -> impl Fn(Instant) -> futures::future::BoxFuture<'static, Result<FetchedToken, AttemptReport>>
    {
        let calls = calls.clone();
        move |_| {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                match token {
                    Some(token) => Ok(FetchedToken {
                        value: token.to_owned(),
                        lifetime: Some(Duration::from_secs(lifetime)),
                    }),
                    None => Err(AttemptReport::failed(AttemptErrorKind::Token, "down", 0)),
                }
            })
        }
    }

    async fn get(
        cache: &TokenCache,
        d: &Destination,
        refused: Option<&str>,
        fetch: impl Fn(
            Instant,
        )
            -> futures::future::BoxFuture<'static, Result<FetchedToken, AttemptReport>>,
    ) -> Result<(String, bool), AttemptReport> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let token = cache.token(d, client(d), deadline, refused, fetch).await?;
        Ok((token.value, token.fresh))
    }

    fn value(got: Result<(String, bool), AttemptReport>) -> String {
        got.map(|(value, _)| value).unwrap_or_else(|r| r.describe())
    }

    #[tokio::test(start_paused = true)]
    async fn one_fetch_serves_every_waiting_attempt_and_a_refused_token_is_fetched_again() {
        let cache = Arc::new(TokenCache::default());
        let d = Arc::new(destination(1, "s", "basic"));
        let calls = Arc::new(AtomicUsize::new(0));
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let (cache, d, calls) = (cache.clone(), d.clone(), calls.clone());
                tokio::spawn(async move {
                    let fetch = fetcher(&calls, Some("t1"), 3600, Duration::from_millis(100));
                    get(&cache, &d, None, fetch).await
                })
            })
            .collect();
        let mut fresh = 0;
        for attempt in waiting {
            let (token, was_fresh) = attempt.await.expect("joined").expect("a token");
            assert_eq!(token, "t1");
            fresh += usize::from(was_fresh);
        }
        assert_eq!(
            (calls.load(Ordering::SeqCst), fresh),
            (1, 1),
            "one fetch in flight"
        );

        // Another team's destination of the same id, a changed secret, and a URL moved to
        // another host each fetch their own.
        let other_team = destination(2, "s", "basic");
        let fetch = fetcher(&calls, Some("t2"), 3600, Duration::ZERO);
        assert_eq!(value(get(&cache, &other_team, None, fetch).await), "t2");
        let rotated = destination(1, "s2", "basic");
        let fetch = fetcher(&calls, Some("t3"), 3600, Duration::ZERO);
        assert_eq!(value(get(&cache, &rotated, None, fetch).await), "t3");
        let mut moved = destination(1, "s2", "basic");
        moved.url = url::Url::parse("https://elsewhere.example.com/x").expect("url");
        let fetch = fetcher(&calls, Some("t4"), 3600, Duration::ZERO);
        assert_eq!(value(get(&cache, &moved, None, fetch).await), "t4");
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // An endpoint's 401 to the kept token drops it; a late 401 to a token already
        // replaced drops nothing.
        let fetch = fetcher(&calls, Some("t5"), 3600, Duration::ZERO);
        let got = get(&cache, &rotated, Some("t3"), fetch).await;
        assert_eq!(got.ok(), Some(("t5".to_owned(), true)));
        let fetch = fetcher(&calls, Some("never"), 3600, Duration::ZERO);
        let got = get(&cache, &rotated, Some("t3"), fetch).await;
        assert_eq!(got.ok(), Some(("t5".to_owned(), false)));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_refreshed_in_the_background_before_it_expires() {
        let cache = TokenCache::default();
        let d = destination(1, "s", "basic");
        let calls = Arc::new(AtomicUsize::new(0));
        // A 100 s token is refreshed from 80 s on (a fifth ahead), while it still serves.
        let fetch = fetcher(&calls, Some("first"), 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, fetch).await), "first");
        tokio::time::advance(Duration::from_secs(79)).await;
        let fetch = fetcher(&calls, Some("never"), 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, fetch).await), "first");
        tokio::time::advance(Duration::from_secs(2)).await;
        // The endpoint is slow: the kept token serves at once, the refresh runs aside.
        let fetch = fetcher(&calls, Some("second"), 100, Duration::from_secs(5));
        assert_eq!(value(get(&cache, &d, None, fetch).await), "first");
        let fetch = fetcher(&calls, Some("never"), 100, Duration::ZERO);
        assert_eq!(
            value(get(&cache, &d, None, fetch).await),
            "first",
            "one refresh"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        let fetch = fetcher(&calls, Some("never"), 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, fetch).await), "second");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A refresh that fails leaves the kept token serving until it expires.
        tokio::time::advance(Duration::from_secs(81)).await;
        let failing = fetcher(&calls, None, 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, failing).await), "second");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let fetch = fetcher(&calls, Some("third"), 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, fetch).await), "second");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let fetch = fetcher(&calls, Some("never"), 100, Duration::ZERO);
        assert_eq!(value(get(&cache, &d, None, fetch).await), "third");

        // A lifetime past the clock's range is capped, not a panic.
        let huge = |_| -> futures::future::BoxFuture<'static, _> {
            Box::pin(async {
                Ok(FetchedToken {
                    value: "huge".into(),
                    lifetime: Some(Duration::from_secs(u64::MAX)),
                })
            })
        };
        let other = destination(3, "s", "basic");
        assert_eq!(value(get(&cache, &other, None, huge).await), "huge");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_give_up_at_their_deadline_and_a_failed_fetch_answers_them_all() {
        let cache = Arc::new(TokenCache::default());
        let d = Arc::new(destination(1, "s", "basic"));
        let calls = Arc::new(AtomicUsize::new(0));
        let spawn_attempt = |token: Option<&'static str>, timeout_ms: u64, delay: Duration| {
            let (cache, d, calls) = (cache.clone(), d.clone(), calls.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                let fetch = fetcher(&calls, token, 3600, delay);
                cache
                    .token(&d, client(&d), deadline, None, fetch)
                    .await
                    .map(|t| t.value)
            })
        };
        // The first attempt's fetch hangs past a second attempt's deadline.
        let hanging = spawn_attempt(Some("late"), 30_000, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiter = spawn_attempt(Some("never"), 200, Duration::ZERO);
        let report = waiter.await.expect("joined").expect_err("no token in time");
        let error = report.error.expect("an error");
        assert_eq!(error.kind, AttemptErrorKind::Token);
        assert!(error.message.contains("still out"), "{}", error.message);
        assert_eq!(hanging.await.expect("joined").ok().as_deref(), Some("late"));

        // A fetch that fails answers the attempts that waited for it: no herd.
        let other = Arc::new(destination(2, "s", "basic"));
        let (cache2, calls2) = (cache.clone(), calls.clone());
        let attempt = |token: Option<&'static str>| {
            let (cache, d, calls) = (cache2.clone(), other.clone(), calls2.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                let fetch = fetcher(&calls, token, 3600, Duration::from_secs(1));
                cache
                    .token(&d, client(&d), deadline, None, fetch)
                    .await
                    .map(|t| t.value)
            })
        };
        let before = calls.load(Ordering::SeqCst);
        let failing = attempt(None);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiters: Vec<_> = (0..5).map(|_| attempt(Some("never"))).collect();
        assert!(failing.await.expect("joined").is_err());
        for waiter in waiters {
            let report = waiter.await.expect("joined").expect_err("the failure");
            assert_eq!(report.error.map(|e| e.message).as_deref(), Some("down"));
        }
        assert_eq!(calls.load(Ordering::SeqCst) - before, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_running_out_of_time_leaves_the_fetch_to_those_waiting() {
        let cache = Arc::new(TokenCache::default());
        let d = Arc::new(destination(1, "s", "basic"));
        let calls = Arc::new(AtomicUsize::new(0));
        let attempt = |timeout: Duration| {
            let (cache, d, calls) = (cache.clone(), d.clone(), calls.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                let fetch = fetcher(&calls, Some("slow"), 3600, Duration::from_secs(1));
                cache
                    .token(&d, client(&d), deadline, None, fetch)
                    .await
                    .map(|t| t.value)
            })
        };
        let short = attempt(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let patient = attempt(Duration::from_secs(10));
        let report = short.await.expect("joined").expect_err("out of time");
        assert_eq!(report.error.map(|e| e.kind), Some(AttemptErrorKind::Token));
        assert_eq!(patient.await.expect("joined").ok().as_deref(), Some("slow"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the patient one fetched itself"
        );
    }
}
