//! Exponential growth with a cap: the one rule behind every wait that doubles (a breaker's
//! cooldown trip after trip, a deferred delivery's floor, a retry loop's backoff).

/// `first` doubled `times` times (32 at most), at most `cap` (and never past `u64::MAX`).
///
/// The 32 is part of the result: the workflow decides its waits with this, and replaying a
/// recorded delivery must give the numbers it gave then.
pub fn doubled(first: u64, times: u32, cap: u64) -> u64 {
    first.saturating_mul(1u64 << times.min(32)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::doubled;

    #[test]
    fn doubles_up_to_the_cap_without_overflowing() {
        let waits: Vec<u64> = (0..5).map(|times| doubled(100, times, 1_000)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000]);
        assert_eq!(doubled(0, 10, 5), 0);
        assert_eq!(
            doubled(1, 34, 10_000_000_000),
            1 << 32,
            "no more than 32 doublings, as recorded deliveries decided"
        );
        assert_eq!(doubled(u64::MAX / 2, 5, u64::MAX), u64::MAX);
    }
}
