//! How long to wait before trying again: the window doubles per failed attempt up to a cap,
//! and the delay is drawn from its upper half, so that agents (or namespaces) that failed
//! together do not retry together.

use std::time::Duration;

/// `rand(0.5..=1) * min(cap, initial * 2^attempt)`.
pub fn delay(attempt: u32, initial: Duration, cap: Duration) -> Duration {
    let window = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap);
    window.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let (initial, cap) = (Duration::from_millis(200), Duration::from_secs(30));
        for attempt in 0..40 {
            let window = initial
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                .min(cap);
            let delay = delay(attempt, initial, cap);
            assert!(
                delay <= window && delay >= window / 2,
                "attempt {attempt}: {delay:?} vs {window:?}"
            );
        }
        assert!(delay(100, initial, cap) <= cap);
    }
}
