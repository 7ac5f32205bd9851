//! Open-loop pacing: arrivals at a constant rate, independent of how fast the
//! server answers. Latency is measured from each arrival's intended time, so a
//! slow server cannot hide its queueing (no coordinated omission).

use std::time::Duration;

/// How many arrivals are due `elapsed` after the start at `rate` per second.
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    // The epsilon keeps float rounding from delaying an arrival by one tick.
    (elapsed.as_secs_f64() * rate + 1e-6).floor() as u64
}

/// The intended send time of arrival `i`, as an offset from the start.
pub fn intended(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// The total arrivals of a run.
pub fn planned(rate: f64, duration: Duration) -> u64 {
    due(duration, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_follow_the_rate_not_the_responses() {
        assert_eq!(due(Duration::from_millis(999), 1000.0), 999);
        assert_eq!(due(Duration::from_secs(2), 2500.0), 5000);
        assert_eq!(intended(2500, 2500.0), Duration::from_secs(1));
        assert_eq!(planned(100.0, Duration::from_secs(3)), 300);
        // Arrival i is never due before its intended time.
        for i in [0u64, 1, 17, 999] {
            assert!(due(intended(i, 333.0), 333.0) >= i);
        }
    }
}
