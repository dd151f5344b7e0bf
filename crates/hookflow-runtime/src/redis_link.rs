//! hookflow's one connection to Redis, shared by the circuit breakers, the limiter shares,
//! the worker registry, the disabled-destinations registry, the activity memo and the
//! replay jobs: what may be lost (the destination catalog lives in PostgreSQL).
//!
//! For isolation Redis is an optimisation: the breakers, the registry and the disabled set
//! each fall back to a per-process copy. No caller waits on a dead server: the link
//! connects lazily (hookflow starts with Redis down), bounds every command by a short
//! timeout, and after a failure answers "unavailable" at once for a back-off period
//! instead of making every attempt wait for a dead server. The
//! switch between available and unavailable is logged once and exported as a gauge.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hookflow_core::sync::LockUnpoisoned;
use hookflow_telemetry::names;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

/// `[redis]` settings. Its `Debug` hides a password in the URL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`; empty to run without Redis (per-process isolation only).
    pub url: String,
    /// Prefix of every key hookflow writes, so deployments can share a Redis.
    pub key_prefix: String,
    /// Longest one command may take before Redis counts as unavailable.
    #[serde(rename = "command_timeout_ms", with = "hookflow_core::millis")]
    pub command_timeout: Duration,
    /// How long to stay on the per-process fallback after a failure before trying Redis
    /// again.
    #[serde(rename = "retry_after_ms", with = "hookflow_core::millis")]
    pub retry_after: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &hookflow_core::redaction::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout_ms", &self.command_timeout)
            .field("retry_after_ms", &self.retry_after)
            .finish()
    }
}

/// Why a Redis command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Redis failed recently; not tried again until the back-off passes.
    #[error("redis unavailable (backing off)")]
    BackingOff,
    /// The command did not complete within the timeout.
    #[error("redis command timed out")]
    Timeout,
    /// Other workers kept changing the same key; the change was not written.
    #[error("redis key contended")]
    Contended,
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A cheap-to-clone handle on the shared connection.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    retry_after: Duration,
    state: Mutex<LinkState>,
    // Serialises (re)connecting so a burst of callers makes one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LinkState {
    connection: Option<ConnectionManager>,
    failed_at: Option<Instant>,
    unavailable: bool,
}

impl RedisLink {
    /// A link to `settings.url`; `None` when no URL is configured. Only the URL is checked
    /// here: the connection is made on first use.
    pub fn new(settings: &RedisSettings) -> Result<Option<RedisLink>, LinkError> {
        if settings.url.trim().is_empty() {
            return Ok(None);
        }
        let client = redis::Client::open(settings.url.as_str())?;
        metrics::gauge!(names::REDIS_AVAILABLE).set(1.0);
        Ok(Some(RedisLink {
            inner: Arc::new(Inner {
                client,
                prefix: settings.key_prefix.clone(),
                timeout: settings.command_timeout,
                retry_after: settings.retry_after,
                state: Mutex::default(),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }))
    }

    /// `<prefix>:<part>:<part>…`
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Runs `command` on the shared connection within the timeout, unless Redis failed
    /// within the back-off period. Records the outcome for the availability gauge.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let result = async {
            let connection = self.connection().await?;
            match tokio::time::timeout(self.inner.timeout, command(connection)).await {
                Ok(result) => result.map_err(LinkError::from),
                Err(_) => Err(LinkError::Timeout),
            }
        }
        .await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(LinkError::BackingOff) => {}
            Err(error) => self.failed(error),
        }
        result
    }

    /// Reports Redis's reachability to readiness every `interval` until `shutdown`: a
    /// deployment that configured Redis is not ready without it, although delivery goes on
    /// (on the per-process fallback) while it is away.
    pub async fn probe(
        self,
        interval: Duration,
        health: hookflow_telemetry::health::HealthHandle,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        crate::every(interval, &shutdown, || async {
            let pinged = self
                .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
                .await;
            match pinged {
                Ok(_) => health.set_ready(true, ""),
                Err(error) => health.set_ready(false, format!("redis: {error}")),
            }
            health.beat();
        })
        .await;
    }

    /// Whether the last command succeeded (or none failed yet).
    pub fn is_available(&self) -> bool {
        !self.lock().unavailable
    }

    async fn connection(&self) -> Result<ConnectionManager, LinkError> {
        if let Some(connection) = self.usable_connection()? {
            return Ok(connection);
        }
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(connection) = self.usable_connection()? {
            return Ok(connection);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.inner.timeout)
            .set_response_timeout(self.inner.timeout)
            .set_number_of_retries(1)
            .set_max_delay(self.inner.retry_after.as_millis() as u64);
        let connect = ConnectionManager::new_with_config(self.inner.client.clone(), config);
        let connection = match tokio::time::timeout(self.inner.timeout * 2, connect).await {
            Ok(connection) => connection?,
            Err(_) => return Err(LinkError::Timeout),
        };
        self.lock().connection = Some(connection.clone());
        Ok(connection)
    }

    fn usable_connection(&self) -> Result<Option<ConnectionManager>, LinkError> {
        let state = self.lock();
        if let Some(failed_at) = state.failed_at
            && failed_at.elapsed() < self.inner.retry_after
        {
            return Err(LinkError::BackingOff);
        }
        Ok(state.connection.clone())
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        state.failed_at = None;
        if state.unavailable {
            state.unavailable = false;
            metrics::gauge!(names::REDIS_AVAILABLE).set(1.0);
            tracing::info!("redis reachable again: isolation state is shared again");
        }
    }

    fn failed(&self, error: &LinkError) {
        metrics::counter!(names::REDIS_ERRORS).increment(1);
        let mut state = self.lock();
        state.failed_at = Some(Instant::now());
        // Reconnect from scratch after the back-off rather than wait on the manager's own
        // reconnection schedule.
        state.connection = None;
        if !state.unavailable {
            state.unavailable = true;
            metrics::gauge!(names::REDIS_AVAILABLE).set(0.0);
            tracing::warn!(
                %error,
                "redis unreachable: breakers, rate-limit shares and disabled destinations \
                 fall back to this process until it is back"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // A poisoned lock only means another thread panicked mid-update of plain flags.
        self.inner.state.lock_unpoisoned()
    }
}
