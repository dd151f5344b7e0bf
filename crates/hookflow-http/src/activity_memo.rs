//! What a local activity did, kept so that running it again does not do it twice.
//!
//! A local activity runs inside its workflow task, and only the task's completion records
//! it. When the completion is refused (a signal or cancel request arrived during the task,
//! and the task also completed the workflow: `UnhandledCommand`) or never arrives (the
//! worker died after the activity ran), the next workflow task runs the activity again: the
//! same HTTP request would be sent twice, and the same outcome counted twice. So each local
//! activity with an effect records its result under the one key that names it, its workflow
//! run and activity id (`<run id>:<activity id>`, the same on every execution of the task:
//! the id is the activity's sequence number in the run), and an execution that finds a
//! result returns it instead of acting again.
//!
//! Results live in Redis (`<prefix>:activity:<run id>:<activity id>`, one hour, past any
//! retry of a workflow task) so the retry finds them on whichever worker it runs, and in
//! this process while Redis cannot be reached. Losing them costs the at-least-once the
//! deliveries had without them (a request sent again with the same `webhook-id`), never a
//! delivery.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::sync::LockUnpoisoned;

use hookflow_runtime::RedisLink;

/// How long a result is kept: far past the retry of a failed workflow task (at once) or
/// of one whose worker died (the workflow task timeout, 10 s).
const KEEP: Duration = Duration::from_secs(3_600);
/// Results kept in this process at most (while Redis is away): a few minutes of attempts.
const MAX_LOCAL: usize = 50_000;

/// The recorded results of local activities. See the module documentation.
pub struct ActivityMemo {
    redis: Option<RedisLink>,
    local: Mutex<LocalResults>,
}

#[derive(Default)]
struct LocalResults {
    by_key: HashMap<String, String>,
    /// Keys in the order they were recorded, with the time, to drop the oldest.
    order: VecDeque<(Instant, String)>,
}

impl ActivityMemo {
    /// Results shared through `redis` when given (else kept in this process only).
    pub fn new(redis: Option<RedisLink>) -> Self {
        ActivityMemo {
            redis,
            local: Mutex::default(),
        }
    }

    /// The key of local activity `activity_id` of workflow run `run_id`.
    pub fn key(run_id: &str, activity_id: &str) -> String {
        format!("{run_id}:{activity_id}")
    }

    /// The result recorded under `key`, if an earlier execution recorded one.
    pub async fn recalled(&self, key: &str) -> Option<String> {
        if let Some(found) = self.local.lock_unpoisoned().by_key.get(key) {
            return Some(found.clone());
        }
        let redis = self.redis.as_ref()?;
        let redis_key = redis.key(&["activity", key]);
        let found = redis
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(redis_key)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match found {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, "activity memo: not read; the activity runs");
                None
            }
        }
    }

    /// Records `result` under `key`: in Redis when it can be reached, else in this process.
    pub async fn record(&self, key: &str, result: String) {
        if let Some(redis) = &self.redis {
            let (redis_key, value) = (redis.key(&["activity", key]), result.clone());
            let written = redis
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(redis_key)
                        .arg(value)
                        .arg("PX")
                        .arg(KEEP.as_millis() as u64)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            match written {
                Ok(()) => return,
                Err(error) => tracing::debug!(%error, "activity memo: kept in this process"),
            }
        }
        self.local.lock_unpoisoned().insert(key.to_owned(), result);
    }
}

impl LocalResults {
    fn insert(&mut self, key: String, result: String) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= KEEP || self.by_key.len() >= MAX_LOCAL)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
        if self.by_key.insert(key.clone(), result).is_none() {
            self.order.push_back((Instant::now(), key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_is_recalled_under_its_key_only() {
        let memo = ActivityMemo::new(None);
        let key = ActivityMemo::key("run-1", "1");
        assert_eq!(memo.recalled(&key).await, None);
        memo.record(&key, "sent".into()).await;
        assert_eq!(memo.recalled(&key).await.as_deref(), Some("sent"));
        assert_eq!(memo.recalled(&ActivityMemo::key("run-1", "2")).await, None);
        assert_eq!(memo.recalled(&ActivityMemo::key("run-2", "1")).await, None);
    }

    #[test]
    fn the_local_copy_drops_the_oldest_past_its_size() {
        let mut local = LocalResults::default();
        for n in 0..MAX_LOCAL + 10 {
            local.insert(n.to_string(), String::new());
        }
        assert_eq!(local.by_key.len(), MAX_LOCAL);
        assert!(!local.by_key.contains_key("0"));
        assert!(local.by_key.contains_key(&(MAX_LOCAL + 9).to_string()));
    }
}
