use std::time::Duration;

/// Full-jitter exponential backoff: a uniformly random wait in
/// `[0, min(max, base * 2^retry)]`.
///
/// tower's `ExponentialBackoff` adds jitter on top of the exponential base,
/// so every client still waits at least the base and retries arrive in waves;
/// full jitter spreads them over the whole interval, which is what breaks up
/// a synchronized retry wave against a provider that just shed load.
pub(crate) fn full_jitter(base: Duration, max: Duration, retry: u32) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos = crate::rng::up_to(ceiling.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_under_the_exponential_ceiling_and_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for retry in 0..12 {
            let ceiling = (base * 2u32.pow(retry.min(10))).min(max);
            for _ in 0..200 {
                assert!(full_jitter(base, max, retry) <= ceiling);
            }
        }
    }

    #[test]
    fn spreads_over_the_interval() {
        let base = Duration::from_millis(100);
        let samples: Vec<_> = (0..500).map(|_| full_jitter(base, base * 10, 0)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(30)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(70)));
    }
}
