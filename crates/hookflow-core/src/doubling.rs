//! Exponential growth with a cap: the one rule behind every wait that doubles (a breaker's
//! cooldown trip after trip, a deferred delivery's floor, a retry loop's backoff).

/// `first` doubled `times` times, at most `cap` (and never past `u64::MAX`).
pub fn doubled(first: u64, times: u32, cap: u64) -> u64 {
    first.saturating_mul(1u64 << times.min(63)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::doubled;

    #[test]
    fn doubles_up_to_the_cap_without_overflowing() {
        let waits: Vec<u64> = (0..5).map(|times| doubled(100, times, 1_000)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000]);
        assert_eq!(doubled(3, 200, u64::MAX), u64::MAX);
        assert_eq!(doubled(0, 10, 5), 0);
    }
}
