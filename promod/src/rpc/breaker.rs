//! A circuit breaker per downstream service: it opens at an error rate over a
//! rolling window (with a minimum volume), fails fast with `CIRCUIT_OPEN`
//! while open, and lets one probe through after the reset timeout. Business
//! refusals are answers, not errors, and do not count.

use crate::config::BreakerConfig;
use promo_domain::{DomainError, DomainResult};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

struct Inner {
    state: State,
    opened_at: Instant,
    window_start: Instant,
    calls: u32,
    failures: u32,
    probing: bool,
}

pub struct Breaker {
    service: &'static str,
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(service: &'static str, cfg: BreakerConfig) -> Self {
        let now = Instant::now();
        let b = Breaker {
            service,
            cfg,
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: now,
                window_start: now,
                calls: 0,
                failures: 0,
                probing: false,
            }),
        };
        b.publish(State::Closed);
        b
    }

    /// Exported as 0 closed, 1 open, 2 half-open.
    fn publish(&self, s: State) {
        let v = match s {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
        };
        metrics::gauge!("promo_circuit_state", "service" => self.service).set(v);
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker").state
    }

    fn admit(&self) -> bool {
        let mut g = self.inner.lock().expect("breaker");
        match g.state {
            State::Closed => true,
            State::Open
                if g.opened_at.elapsed() >= Duration::from_secs(self.cfg.reset_timeout_secs) =>
            {
                g.state = State::HalfOpen;
                g.probing = true;
                self.publish(State::HalfOpen);
                true
            }
            State::Open => false,
            State::HalfOpen if !g.probing => {
                g.probing = true;
                true
            }
            State::HalfOpen => false,
        }
    }

    fn record(&self, failed: bool) {
        let mut g = self.inner.lock().expect("breaker");
        let now = Instant::now();
        match g.state {
            State::HalfOpen => {
                g.probing = false;
                if failed {
                    g.state = State::Open;
                    g.opened_at = now;
                    self.publish(State::Open);
                } else {
                    g.state = State::Closed;
                    g.window_start = now;
                    g.calls = 0;
                    g.failures = 0;
                    self.publish(State::Closed);
                }
            }
            State::Closed => {
                if now.duration_since(g.window_start) > Duration::from_secs(self.cfg.window_secs) {
                    g.window_start = now;
                    g.calls = 0;
                    g.failures = 0;
                }
                g.calls += 1;
                g.failures += failed as u32;
                if g.calls >= self.cfg.min_requests
                    && g.failures * 100 >= g.calls * self.cfg.error_threshold_percent
                {
                    g.state = State::Open;
                    g.opened_at = now;
                    tracing::warn!(
                        service = self.service,
                        calls = g.calls,
                        failures = g.failures,
                        "circuit opened"
                    );
                    self.publish(State::Open);
                }
            }
            State::Open => {}
        }
    }

    pub async fn call<T, F: Future<Output = DomainResult<T>>>(&self, f: F) -> DomainResult<T> {
        if !self.admit() {
            return Err(DomainError::CircuitOpen(self.service.to_owned()));
        }
        let res = f.await;
        // A shed call met a live role protecting itself: opening the circuit
        // would turn its partial service into none.
        let failed = matches!(&res, Err(e) if !e.is_business_refusal() && !e.is_shed());
        self.record(failed);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            error_threshold_percent: 50,
            window_secs: 60,
            min_requests: 4,
            reset_timeout_secs: 0,
        }
    }

    #[tokio::test]
    async fn opens_on_errors_ignores_refusals_and_recovers() {
        let b = Breaker::new("test", cfg());
        for _ in 0..10 {
            let _ = b.call(async { Err::<(), _>(DomainError::SoldOut) }).await;
        }
        assert_eq!(b.state(), State::Closed);
        for _ in 0..10 {
            let _ = b
                .call(async { Err::<(), _>(DomainError::Unavailable("x".into())) })
                .await;
        }
        assert_eq!(b.state(), State::Open);
        // reset timeout 0: the next call is the half-open probe.
        assert!(b.call(async { Ok(()) }).await.is_ok());
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test]
    async fn open_breaker_fails_fast() {
        let mut c = cfg();
        c.reset_timeout_secs = 3600;
        let b = Breaker::new("test", c);
        for _ in 0..4 {
            let _ = b
                .call(async { Err::<(), _>(DomainError::Unavailable("x".into())) })
                .await;
        }
        let r = b.call(async { Ok(()) }).await;
        assert_eq!(r, Err(DomainError::CircuitOpen("test".into())));
    }

    /// A role shedding load over gRPC is alive: its sheds, read back on the
    /// gateway's side of the call, never open the circuit.
    #[tokio::test]
    async fn sheds_of_a_busy_role_do_not_open_it() {
        let b = Breaker::new("test", cfg());
        for _ in 0..10 {
            let shed = crate::error::from_status(crate::error::to_status(DomainError::shed()));
            let _ = b.call(async { Err::<(), _>(shed) }).await;
        }
        assert_eq!(b.state(), State::Closed);
    }
}
