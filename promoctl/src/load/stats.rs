//! Load statistics: outcome counts and an HDR latency histogram, the summary
//! with percentiles, and k6-like thresholds that set the exit code. Pure, so
//! it is tested without a server.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// A business refusal the scenario expects (SOLD_OUT, LIMIT_EXCEEDED,
    /// INSUFFICIENT_BALANCE, ...): the system said no, correctly.
    Refused,
    /// 503: the server shed the request (overload, a store down); it did
    /// nothing and the client may retry after `Retry-After`. Counted apart
    /// because a flash sale is judged on how fast these come back.
    Shed,
    /// Anything else: other 5xx, 429, unexpected 4xx, transport errors.
    Failed,
}

/// Business refusals: answers, not errors. Not `ALREADY_REDEEMED`: the
/// redeem scenario sends each code once, so a code found spent means the
/// run reused one or a redemption was counted twice, a failure either way.
pub const REFUSAL_CODES: &[&str] = &[
    "SOLD_OUT",
    "LIMIT_EXCEEDED",
    "ALREADY_USED",
    "ALREADY_CANCELLED",
    "INSUFFICIENT_BALANCE",
    "NOT_ACTIVE",
];

/// Classifies a response by status and error code.
pub fn classify(status: u16, error_code: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Ok,
        409 | 422 if error_code.is_some_and(|c| REFUSAL_CODES.contains(&c)) => Outcome::Refused,
        503 => Outcome::Shed,
        _ => Outcome::Failed,
    }
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Every answer's latency; `ok_us` and `shed_us` split out two kinds.
    pub latency_us: Histogram<u64>,
    pub ok_us: Histogram<u64>,
    pub shed_us: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub shed: u64,
    pub failed: u64,
    /// Open loop: arrivals that could not be sent (in-flight cap reached).
    pub missed: u64,
}

impl Default for Stats {
    fn default() -> Self {
        // 1 µs .. 100 s, 3 significant digits.
        let h = || Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds");
        Stats {
            latency_us: h(),
            ok_us: h(),
            shed_us: h(),
            ok: 0,
            refused: 0,
            shed: 0,
            failed: 0,
            missed: 0,
        }
    }
}

impl Stats {
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 100_000_000);
        let _ = self.latency_us.record(us);
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                let _ = self.ok_us.record(us);
            }
            Outcome::Refused => self.refused += 1,
            Outcome::Shed => {
                self.shed += 1;
                let _ = self.shed_us.record(us);
            }
            Outcome::Failed => self.failed += 1,
        }
    }

    pub fn completed(&self) -> u64 {
        self.ok + self.refused + self.shed + self.failed
    }

    pub fn summary(&self, elapsed: Duration) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(self.latency_us.value_at_quantile(p));
        let attempted = self.completed() + self.missed;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            attempted,
            succeeded: self.ok,
            refused: self.refused,
            shed: self.shed,
            failed: self.failed,
            missed: self.missed,
            elapsed_secs: elapsed.as_secs_f64(),
            rps: self.completed() as f64 / secs,
            error_rate: if attempted == 0 {
                0.0
            } else {
                (self.shed + self.failed + self.missed) as f64 / attempted as f64
            },
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(self.latency_us.max()),
            ok_p99_ms: ms(self.ok_us.value_at_quantile(0.99)),
            shed_p99_ms: ms(self.shed_us.value_at_quantile(0.99)),
            shed_max_ms: ms(self.shed_us.max()),
        }
    }
}

/// The end-of-run numbers, also written as the JSON report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub attempted: u64,
    pub succeeded: u64,
    pub refused: u64,
    /// 503 answers (load shed, a store down); not in `failed`.
    pub shed: u64,
    pub failed: u64,
    pub missed: u64,
    pub elapsed_secs: f64,
    pub rps: f64,
    /// (shed + failed + missed) / attempted; refusals are not errors.
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The successful answers alone, and the shed ones alone.
    pub ok_p99_ms: f64,
    pub shed_p99_ms: f64,
    pub shed_max_ms: f64,
}

/// k6-like pass/fail limits; also the `[thresholds]` table of a scenario file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default, deserialize_with = "crate::time::duration")]
    pub p95_max: Option<Duration>,
    #[serde(default, deserialize_with = "crate::time::duration")]
    pub p99_max: Option<Duration>,
    pub error_rate_max: Option<f64>,
    pub min_rps: Option<f64>,
}

impl Thresholds {
    /// The thresholds the summary breaks, as readable lines; empty = pass.
    pub fn violations(&self, s: &Summary) -> Vec<String> {
        let mut v = Vec::new();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if let Some(max) = self.p95_max {
            if s.p95_ms > ms(max) {
                v.push(format!("p95 {:.1} ms > {:.1} ms", s.p95_ms, ms(max)));
            }
        }
        if let Some(max) = self.p99_max {
            if s.p99_ms > ms(max) {
                v.push(format!("p99 {:.1} ms > {:.1} ms", s.p99_ms, ms(max)));
            }
        }
        if let Some(max) = self.error_rate_max {
            if s.error_rate > max {
                v.push(format!("error rate {:.4} > {max}", s.error_rate));
            }
        }
        if let Some(min) = self.min_rps {
            if s.rps < min {
                v.push(format!("{:.0} req/s < {min}", s.rps));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_separates_refusals_from_failures() {
        assert_eq!(classify(201, None), Outcome::Ok);
        assert_eq!(classify(409, Some("SOLD_OUT")), Outcome::Refused);
        assert_eq!(classify(422, Some("NOT_ACTIVE")), Outcome::Refused);
        assert_eq!(classify(409, Some("IDEMPOTENCY_MISMATCH")), Outcome::Failed);
        assert_eq!(classify(409, Some("ALREADY_REDEEMED")), Outcome::Failed);
        assert_eq!(classify(429, Some("RATE_LIMITED")), Outcome::Failed);
        assert_eq!(classify(503, Some("UNAVAILABLE")), Outcome::Shed);
        assert_eq!(classify(500, Some("INTERNAL")), Outcome::Failed);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut s = Stats::default();
        for ms in 1..=1000u64 {
            s.record(Outcome::Ok, Duration::from_millis(ms));
        }
        let sum = s.summary(Duration::from_secs(2));
        assert_eq!(sum.succeeded, 1000);
        assert!((sum.rps - 500.0).abs() < 1e-6);
        assert!((sum.p50_ms - 500.0).abs() <= 1.0, "{}", sum.p50_ms);
        assert!((sum.p99_ms - 990.0).abs() <= 1.0, "{}", sum.p99_ms);
        assert!((sum.max_ms - 1000.0).abs() <= 1.0, "{}", sum.max_ms);
    }

    #[test]
    fn thresholds_fail_only_when_broken() {
        let mut s = Stats::default();
        for _ in 0..98 {
            s.record(Outcome::Ok, Duration::from_millis(10));
        }
        s.record(Outcome::Refused, Duration::from_millis(10));
        s.record(Outcome::Failed, Duration::from_millis(300));
        s.missed = 0;
        let sum = s.summary(Duration::from_secs(1));
        assert!((sum.error_rate - 0.01).abs() < 1e-9);
        let pass = Thresholds {
            p95_max: Some(Duration::from_millis(200)),
            error_rate_max: Some(0.01),
            min_rps: Some(100.0),
            ..Default::default()
        };
        assert!(pass.violations(&sum).is_empty());
        let fail = Thresholds {
            p99_max: Some(Duration::from_millis(5)),
            error_rate_max: Some(0.005),
            min_rps: Some(101.0),
            ..Default::default()
        };
        assert_eq!(
            fail.violations(&sum).len(),
            3,
            "{:?}",
            fail.violations(&sum)
        );
    }

    #[test]
    fn missed_arrivals_count_as_errors() {
        let mut s = Stats::default();
        s.record(Outcome::Ok, Duration::from_millis(1));
        s.missed = 1;
        assert!((s.summary(Duration::from_secs(1)).error_rate - 0.5).abs() < 1e-9);
    }

    /// A fast 503 must not hide slow successes, nor the reverse.
    #[test]
    fn successes_and_sheds_have_percentiles_of_their_own() {
        let mut s = Stats::default();
        for _ in 0..900 {
            s.record(Outcome::Shed, Duration::from_millis(2));
        }
        for _ in 0..100 {
            s.record(Outcome::Ok, Duration::from_millis(80));
        }
        let sum = s.summary(Duration::from_secs(1));
        assert_eq!((sum.succeeded, sum.shed, sum.failed), (100, 900, 0));
        assert!((sum.ok_p99_ms - 80.0).abs() <= 0.1, "{}", sum.ok_p99_ms);
        assert!((sum.shed_p99_ms - 2.0).abs() <= 0.01, "{}", sum.shed_p99_ms);
        assert!((sum.error_rate - 0.9).abs() < 1e-9, "sheds are errors");
    }
}
