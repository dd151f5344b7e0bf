//! OAuth2 client credentials (RFC 6749 §4.4) for destinations that ask for them: the token
//! request, reading its answer, and the process's token cache.
//!
//! The cache keeps one token per destination ([`PerDestination`]: team, id and uid, and the
//! client's settings, so a new client secret never gets the old secret's token). Every
//! attempt of the process shares it: one fetch is in flight per destination however many
//! attempts wait (they wait on the slot's lock, within their own timeout), a token is
//! fetched again a little before it expires, and an attempt whose endpoint answers 401
//! drops the token it sent (not one another attempt fetched since) and fetches once more.
//! Tokens are secrets: they are never logged, never in a report, and never recorded.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hookflow_core::{
    AttemptErrorKind, AttemptReport, Destination,
    credentials::{ClientAuth, OAuth2Client},
};
use serde::Deserialize;

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

/// A token kept: used until `refresh_at`, and, should fetching again fail, until
/// `expires_at`.
struct Kept {
    value: String,
    refresh_at: Instant,
    expires_at: Instant,
}

impl Kept {
    fn new(token: FetchedToken, fetched: Instant) -> Kept {
        let lifetime = token.lifetime.unwrap_or(DEFAULT_LIFETIME);
        let ahead = REFRESH_AHEAD.min(lifetime / 5);
        Kept {
            value: token.value,
            refresh_at: fetched + lifetime - ahead,
            expires_at: fetched + lifetime,
        }
    }
}

/// One destination's token; its lock is held while the token is fetched.
#[derive(Default)]
struct Slot(tokio::sync::Mutex<Option<Kept>>);

/// The process's OAuth2 tokens.
#[derive(Default)]
pub struct TokenCache {
    slots: PerDestination<[u8; 32], Slot>,
}

impl TokenCache {
    /// A token for `destination`'s `client`: the one kept while it is fresh, else one
    /// `fetch` gets (one fetch per destination at a time; the others wait for it), all by
    /// `deadline`. A token kept that has not yet expired serves when fetching a fresh one
    /// fails.
    pub async fn token<Fut>(
        &self,
        destination: &Destination,
        client: &OAuth2Client,
        deadline: Instant,
        fetch: impl FnOnce(Instant) -> Fut,
    ) -> Result<String, AttemptReport>
    where
        Fut: Future<Output = Result<FetchedToken, AttemptReport>>,
    {
        let started = Instant::now();
        let slot = self.slot(destination, client);
        let waited = tokio::time::timeout_at(deadline.into(), slot.0.lock()).await;
        let Ok(mut kept) = waited else {
            return Err(AttemptReport::failed(
                AttemptErrorKind::Token,
                "no token in time: another attempt's fetch from the token endpoint is still \
                 out",
                started.elapsed().as_millis() as u64,
            ));
        };
        if let Some(token) = kept.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let fetched_at = Instant::now();
        let fetched = match tokio::time::timeout_at(deadline.into(), fetch(deadline)).await {
            Ok(fetched) => fetched,
            Err(_) => Err(AttemptReport::failed(
                AttemptErrorKind::Token,
                "the token endpoint gave no token in time",
                started.elapsed().as_millis() as u64,
            )),
        };
        match fetched {
            Ok(token) => {
                let token = Kept::new(token, fetched_at);
                let value = token.value.clone();
                *kept = Some(token);
                Ok(value)
            }
            Err(report) => match kept.as_ref() {
                Some(token) if Instant::now() < token.expires_at => Ok(token.value.clone()),
                _ => Err(report),
            },
        }
    }

    /// Forgets `used`, a token `destination`'s endpoint refused, unless another has
    /// replaced it already.
    pub async fn refused(&self, destination: &Destination, client: &OAuth2Client, used: &str) {
        let slot = self.slot(destination, client);
        let mut kept = slot.0.lock().await;
        if kept.as_ref().is_some_and(|token| token.value == used) {
            *kept = None;
        }
    }

    fn slot(&self, destination: &Destination, client: &OAuth2Client) -> std::sync::Arc<Slot> {
        let made = self
            .slots
            .get_or_make(destination, client.fingerprint(), || {
                Ok::<_, std::convert::Infallible>(Slot::default())
            });
        match made {
            Ok(slot) => slot,
        }
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

    /// A fetch that counts its calls and answers `token` after `delay`.
    fn fetcher(
        calls: &Arc<AtomicUsize>,
        token: &'static str,
        lifetime: u64,
        delay: Duration,
    ) -> impl FnOnce(
        Instant,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<FetchedToken, AttemptReport>> + Send>,
    > {
        let calls = calls.clone();
        move |_| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(FetchedToken {
                    value: token.to_owned(),
                    lifetime: Some(Duration::from_secs(lifetime)),
                })
            })
        }
    }

    #[tokio::test]
    async fn one_fetch_serves_every_waiting_attempt_and_a_refused_token_is_fetched_again() {
        let cache = Arc::new(TokenCache::default());
        let d = Arc::new(destination(1, "s", "basic"));
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let (cache, d, calls) = (cache.clone(), d.clone(), calls.clone());
                tokio::spawn(async move {
                    let fetch = fetcher(&calls, "t1", 3600, Duration::from_millis(100));
                    cache.token(&d, client(&d), deadline, fetch).await
                })
            })
            .collect();
        for attempt in waiting {
            assert_eq!(attempt.await.expect("joined").ok().as_deref(), Some("t1"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch in flight");

        // Another team's destination of the same id, and a changed secret, fetch their own.
        let other_team = destination(2, "s", "basic");
        let fetch = fetcher(&calls, "t2", 3600, Duration::ZERO);
        let token = cache.token(&other_team, client(&other_team), deadline, fetch);
        assert_eq!(token.await.ok().as_deref(), Some("t2"));
        let rotated = destination(1, "s2", "basic");
        let fetch = fetcher(&calls, "t3", 3600, Duration::ZERO);
        let token = cache.token(&rotated, client(&rotated), deadline, fetch);
        assert_eq!(token.await.ok().as_deref(), Some("t3"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A refusal of a token already replaced forgets nothing; of the kept one, it does.
        cache.refused(&rotated, client(&rotated), "t1").await;
        let fetch = fetcher(&calls, "never", 3600, Duration::ZERO);
        let token = cache.token(&rotated, client(&rotated), deadline, fetch);
        assert_eq!(token.await.ok().as_deref(), Some("t3"));
        cache.refused(&rotated, client(&rotated), "t3").await;
        let fetch = fetcher(&calls, "t4", 3600, Duration::ZERO);
        let token = cache.token(&rotated, client(&rotated), deadline, fetch);
        assert_eq!(token.await.ok().as_deref(), Some("t4"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_token_is_fetched_again_before_it_expires_and_serves_while_the_server_fails() {
        let cache = TokenCache::default();
        let d = destination(1, "s", "basic");
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        // A 5 s token is fetched again after 4 s (a fifth ahead).
        let fetch = fetcher(&calls, "short", 5, Duration::ZERO);
        assert_eq!(
            cache
                .token(&d, client(&d), deadline, fetch)
                .await
                .ok()
                .as_deref(),
            Some("short")
        );
        let fetch = fetcher(&calls, "never", 5, Duration::ZERO);
        assert_eq!(
            cache
                .token(&d, client(&d), deadline, fetch)
                .await
                .ok()
                .as_deref(),
            Some("short")
        );
        tokio::time::sleep(Duration::from_millis(4100)).await;
        let failing = |_| async { Err(AttemptReport::failed(AttemptErrorKind::Token, "down", 0)) };
        assert_eq!(
            cache
                .token(&d, client(&d), deadline, failing)
                .await
                .ok()
                .as_deref(),
            Some("short"),
            "not yet expired: still used"
        );
        let fetch = fetcher(&calls, "fresh", 5, Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            cache
                .token(&d, client(&d), deadline, fetch)
                .await
                .ok()
                .as_deref(),
            Some("fresh")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline_while_another_fetch_hangs() {
        let cache = Arc::new(TokenCache::default());
        let d = Arc::new(destination(1, "s", "basic"));
        let calls = Arc::new(AtomicUsize::new(0));
        let hanging = {
            let (cache, d, calls) = (cache.clone(), d.clone(), calls.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let fetch = fetcher(&calls, "late", 3600, Duration::from_secs(30));
                cache.token(&d, client(&d), deadline, fetch).await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let deadline = Instant::now() + Duration::from_millis(200);
        let fetch = fetcher(&calls, "never", 3600, Duration::ZERO);
        let report = cache
            .token(&d, client(&d), deadline, fetch)
            .await
            .expect_err("no token in time");
        let error = report.error.expect("an error");
        assert_eq!(error.kind, AttemptErrorKind::Token);
        assert!(error.message.contains("still out"), "{}", error.message);
        hanging.abort();
    }
}
