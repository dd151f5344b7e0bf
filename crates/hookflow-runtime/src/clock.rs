//! The wall clock in milliseconds since the Unix epoch: what breaker times and job records
//! shared between hosts are stamped with (a monotonic `Instant` means nothing on another
//! host).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
