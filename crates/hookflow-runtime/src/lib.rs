//! What every hookflow process shares to run its tasks, one home for each mechanism so the
//! crates that run tasks (Kafka, HTTP isolation, Temporal, the binary) do them alike:
//!
//! - [`RedisLink`]: the one connection to Redis, which never makes a caller wait on a dead
//!   server;
//! - [`Backoff`]: the waits of a "retry while a dependency is down" loop, which stop at
//!   shutdown;
//! - [`every`]: a task run on an interval until shutdown;
//! - [`change_shared_json`]: a value every worker changes in Redis, without losing one's
//!   change;
//! - [`unix_now_ms`]: wall-clock milliseconds, for times shared between hosts.

mod backoff;
mod clock;
mod periodic;
mod redis_link;
mod shared_json;

pub use backoff::{Backoff, BackoffPolicy};
pub use clock::unix_now_ms;
pub use periodic::every;
pub use redis_link::{LinkError, RedisLink, RedisSettings};
pub use shared_json::change_shared_json;
