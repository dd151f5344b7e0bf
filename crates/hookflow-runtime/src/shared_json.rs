//! A value every worker changes, kept as JSON in one Redis hash (`v` = version, `s` =
//! state): read, changed in the process, then written by a Lua compare-and-set on the
//! version and retried on conflict, so two workers changing it at once both take effect and
//! a decision made on the value (a breaker's one probe, a streak's one disable) is made by
//! exactly one of them. Breakers and failure streaks keep their state this way.

use std::sync::LazyLock;

use redis::Script;
use serde::{Serialize, de::DeserializeOwned};

use crate::{LinkError, RedisLink};

/// Compare-and-set tries before giving up on one change ([`LinkError::Contended`]).
const MAX_CAS_TRIES: usize = 8;

/// Writes `ARGV[3]` as the state with version `ARGV[2]` if the stored version (0 when
/// absent) is still `ARGV[1]`, and keeps the key `ARGV[4]` milliseconds. Returns 1 when
/// written.
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#,
    )
});

/// Applies `change` to the value at `key` (its default when absent or unreadable) and
/// writes the result back unless unchanged, keeping the key `ttl_ms`; the value after, and
/// what `change` returned. `change` may run more than once (once per conflict), each time
/// on the value as stored then.
pub async fn change_shared_json<T, R>(
    redis: &RedisLink,
    key: &str,
    ttl_ms: u64,
    mut change: impl FnMut(&mut T) -> R,
) -> Result<(T, R), LinkError>
where
    T: Serialize + DeserializeOwned + Default + Clone + PartialEq,
{
    for _ in 0..MAX_CAS_TRIES {
        let (version, stored): (Option<u64>, Option<String>) = redis
            .run(|mut c| {
                let key = key.to_owned();
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg("v")
                        .arg("s")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let before: T = match stored.as_deref().map(serde_json::from_str) {
            Some(Ok(value)) => value,
            Some(Err(error)) => {
                tracing::warn!(%error, key, "unreadable shared state in redis; starting afresh");
                T::default()
            }
            None => T::default(),
        };
        let mut after = before.clone();
        let result = change(&mut after);
        if after == before {
            return Ok((after, result));
        }
        let version = version.unwrap_or(0);
        let json = serde_json::to_string(&after).unwrap_or_default();
        let mut invocation = CAS.key(key);
        invocation
            .arg(version)
            .arg(version + 1)
            .arg(json)
            .arg(ttl_ms);
        let written: i32 = redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if written == 1 {
            return Ok((after, result));
        }
    }
    Err(LinkError::Contended)
}
