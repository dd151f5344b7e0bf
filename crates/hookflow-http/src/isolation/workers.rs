//! The live-worker count behind the rate-limit split: every worker process keeps a
//! heartbeat in one Redis sorted set (member = a random instance id, score = when its
//! heartbeat expires, by Redis's own clock) and reads how many are live.
//!
//! Without Redis the count is 1 (each process takes the whole quota; run one worker or
//! configure Redis). While Redis is down the last count is kept.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use hookflow_telemetry::names;
use redis::Script;
use tokio_util::sync::CancellationToken;

use hookflow_runtime::RedisLink;

/// How often a worker renews its heartbeat and recounts.
pub const REGISTRY_RENEW_INTERVAL: Duration = Duration::from_secs(2);
/// A worker that has not renewed for this long no longer counts.
const HEARTBEAT_TTL_MS: u64 = 6_000;

/// Renews `ARGV[1]`'s heartbeat to expire `ARGV[2]` ms from now, drops expired ones and
/// returns how many are live.
const HEARTBEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// This worker's membership of its task queue's worker set.
pub struct WorkerRegistry {
    redis: Option<RedisLink>,
    key: String,
    instance: String,
    live: Arc<AtomicU32>,
    heartbeat: Script,
}

impl WorkerRegistry {
    /// Membership of the workers of `task_queue`; the count starts at 1.
    pub fn new(redis: Option<RedisLink>, task_queue: &str) -> Self {
        let key = redis
            .as_ref()
            .map(|r| r.key(&["workers", task_queue]))
            .unwrap_or_default();
        WorkerRegistry {
            redis,
            key,
            instance: uuid::Uuid::new_v4().to_string(),
            live: Arc::new(AtomicU32::new(1)),
            heartbeat: Script::new(HEARTBEAT_SCRIPT),
        }
    }

    /// The live-worker count, kept current by [`WorkerRegistry::run`].
    pub fn live(&self) -> Arc<AtomicU32> {
        self.live.clone()
    }

    /// Registers once now, so the first attempts already use the right share.
    pub async fn register(&self) {
        self.heartbeat().await;
    }

    /// Heartbeats until `shutdown`, then leaves the set so the others take over its share
    /// at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        hookflow_runtime::every(REGISTRY_RENEW_INTERVAL, &shutdown, || self.heartbeat()).await;
        let (key, instance) = (self.key.clone(), self.instance.clone());
        let left = redis
            .run(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(instance)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = left {
            tracing::debug!(%error, "could not leave the worker set; it expires on its own");
        }
    }

    async fn heartbeat(&self) {
        let Some(redis) = &self.redis else {
            return;
        };
        let mut invocation = self.heartbeat.key(&self.key);
        invocation.arg(&self.instance).arg(HEARTBEAT_TTL_MS);
        let counted: Result<u32, _> = redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await;
        match counted {
            Ok(live) => {
                let live = live.max(1);
                if self.live.swap(live, Ordering::Relaxed) != live {
                    tracing::info!(live, "live worker count changed; rate limits re-split");
                }
                metrics::gauge!(names::WORKERS_LIVE).set(f64::from(live));
            }
            Err(error) => {
                tracing::debug!(%error, "worker heartbeat failed; keeping the last count")
            }
        }
    }
}
