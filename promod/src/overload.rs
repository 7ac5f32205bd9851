//! Admission control at the edge of every REST and gRPC port: a bound on the
//! requests in flight, and a refusal at once when it is reached.
//!
//! A flash sale is overload by definition. Without a bound every request
//! waits inside promod (for a pool connection, a batch, the CPU), so latency
//! and memory grow with the queue and goodput falls. Here a request either
//! gets a permit at once or is answered 503 `UNAVAILABLE` (gRPC:
//! `Unavailable`) with `Retry-After: 1`, before its body is read and before
//! any Redis or PostgreSQL work; nothing queues.
//!
//! The bound adapts (`overload.adaptive`, on by default) by AIMD on a
//! latency target (`tower_acc::Aimd`, as TCP Reno on loss): a request
//! finished within `overload.latency_target_ms` while the port is busy
//! raises the limit by one, a slower one cuts it by a tenth, between
//! `overload.min_in_flight` and `overload.max_in_flight`. Work admitted past
//! what the host can do only waits inside promod (for the CPU, a pool
//! connection, a batch), so a fixed bound is either too high for the host
//! (at 256 on this 2-core host, admitted requests had a p99 of 248 ms at 3x
//! capacity) or too low for a bigger one. Algorithms that learn their
//! baseline from recent latency (Gradient2, Vegas) were not used: under a
//! peak that lasts, the slow latency becomes their baseline and the bound
//! drifts back up; requests here also differ tenfold in cost (a sold-out
//! refusal against a write), which a minimum-latency baseline reads as a
//! queue.
//!
//! The bound is on concurrency, not rate: a fast answer (a sold-out or
//! over-limit refusal) holds its permit only briefly, so it is not shed
//! before slow work is. The permit rides in the request into
//! [`crate::detach`]'s task, so it is held until the detached request has
//! really finished, not until its client hangs up. Health and metrics routes
//! are never shed.
//!
//! Not here: rate limits per user or IP (`gateway::rate_limit`), timeouts
//! (the server stacks in `server.rs`).

use crate::config::OverloadConfig;
use crate::error::{to_status, ApiError};
use axum::http::{HeaderValue, Request, Response};
use axum::response::IntoResponse;
use metrics::{Counter, Gauge};
use promo_domain::DomainError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_acc::{Aimd, Algorithm};

/// Routes that answer however busy the port is: an orchestrator that sees
/// `/healthz` fail under load would restart the one process that is working.
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What a shed client is told to wait before trying again, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

/// What a request slower than the latency target does to the adaptive bound
/// (each one in time below it adds one). At equilibrium about 10 / (limit +
/// 10) of the requests are over the target: one in seven at a limit of 64.
const BACKOFF: f64 = 0.9;

/// One port's bound: shared by every route and connection of that port.
#[derive(Clone)]
pub struct Gate(Arc<Bound>);

struct Bound {
    in_flight: AtomicUsize,
    /// The current limit, read without a lock on every request.
    limit: AtomicUsize,
    /// Moves `limit` from the latency of finished requests; `None` keeps it
    /// at `max_in_flight`.
    adaptive: Option<Mutex<Aimd>>,
    in_flight_gauge: Gauge,
    limit_gauge: Gauge,
    shed: Counter,
}

impl Gate {
    /// `port` is `rest` or `grpc`.
    pub fn new(role: &'static str, port: &'static str, cfg: &OverloadConfig) -> Gate {
        let labels = [("role", role), ("port", port)];
        // Adaptive or not, the bound starts open: shed only once latency says so.
        let max = cfg.max_in_flight.max(1);
        let adaptive = cfg.adaptive.then(|| {
            Mutex::new(
                Aimd::builder()
                    .min_limit(cfg.min_in_flight.clamp(1, max))
                    .max_limit(max)
                    .initial_limit(max)
                    .timeout(Duration::from_millis(cfg.latency_target_ms))
                    .backoff_ratio(BACKOFF)
                    .build(),
            )
        });
        let limit_gauge = metrics::gauge!("promo_in_flight_limit", &labels);
        limit_gauge.set(max as f64);
        Gate(Arc::new(Bound {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(max),
            adaptive,
            in_flight_gauge: metrics::gauge!("promo_in_flight", &labels),
            limit_gauge,
            shed: metrics::counter!("promo_shed_requests_total", &labels),
        }))
    }

    /// The limit now (it moves when the gate is adaptive).
    pub fn limit(&self) -> usize {
        self.0.limit.load(Ordering::Relaxed)
    }

    fn try_enter(&self) -> Option<Permit> {
        let b = &self.0;
        let taken = b
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < b.limit.load(Ordering::Relaxed)).then_some(n + 1)
            });
        if taken.is_err() {
            b.shed.increment(1);
            return None;
        }
        b.in_flight_gauge.increment(1.0);
        Some(Permit {
            gate: self.0.clone(),
            since: Instant::now(),
        })
    }
}

/// Held while a request is worked on; its drop feeds the request's latency
/// to the limit.
struct Permit {
    gate: Arc<Bound>,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let b = &self.gate;
        let in_flight = b.in_flight.fetch_sub(1, Ordering::AcqRel);
        b.in_flight_gauge.decrement(1.0);
        let Some(adaptive) = &b.adaptive else { return };
        // A poisoned lock only means another drop panicked mid-update; the
        // algorithm's state is plain numbers, still usable.
        let mut algorithm = adaptive.lock().unwrap_or_else(|p| p.into_inner());
        // What is still in flight without this one.
        algorithm.update(self.since.elapsed(), in_flight - 1, false, false);
        let limit = algorithm.max_concurrency();
        // Stored under the lock, so limits land in the order they were decided.
        if b.limit.swap(limit, Ordering::Relaxed) != limit {
            b.limit_gauge.set(limit as f64);
        }
    }
}

/// An admitted request's permit, in its extensions until
/// [`crate::detach::Detach`] moves it into the request's task; dropped with
/// the request if an answer comes before (a 413 on its Content-Length).
#[derive(Clone)]
pub struct Held {
    _permit: Arc<Permit>,
}

/// The REST refusal: the API's error JSON, as every other 503.
fn rest_refusal() -> axum::response::Response {
    let mut resp = ApiError(DomainError::shed()).into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
    resp
}

/// The gRPC refusal: `Unavailable`, through the one status mapping, so the
/// gateway on the other side reads it back as `UNAVAILABLE`.
fn grpc_refusal() -> Response<tonic::body::Body> {
    let mut status = to_status(DomainError::shed());
    status
        .metadata_mut()
        .insert("retry-after", RETRY_AFTER_SECS.into());
    status.into_http()
}

/// Outside the layers a refused request need not pay for (timeouts, body
/// limits, metrics, the detached task); the permit travels in the request.
pub struct AdmissionLayer<B> {
    gate: Gate,
    refuse: fn() -> Response<B>,
}

impl<B> Clone for AdmissionLayer<B> {
    fn clone(&self) -> Self {
        AdmissionLayer {
            gate: self.gate.clone(),
            refuse: self.refuse,
        }
    }
}

impl AdmissionLayer<axum::body::Body> {
    pub fn rest(gate: Gate) -> Self {
        AdmissionLayer {
            gate,
            refuse: rest_refusal,
        }
    }
}

impl AdmissionLayer<tonic::body::Body> {
    pub fn grpc(gate: Gate) -> Self {
        AdmissionLayer {
            gate,
            refuse: grpc_refusal,
        }
    }
}

impl<S, B> tower::Layer<S> for AdmissionLayer<B> {
    type Service = Admission<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            gate: self.gate.clone(),
            refuse: self.refuse,
        }
    }
}

pub struct Admission<S, B> {
    inner: S,
    gate: Gate,
    refuse: fn() -> Response<B>,
}

impl<S: Clone, B> Clone for Admission<S, B> {
    fn clone(&self) -> Self {
        Admission {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
            refuse: self.refuse,
        }
    }
}

impl<S, ReqB, B> tower::Service<Request<ReqB>> for Admission<S, B>
where
    S: tower::Service<Request<ReqB>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future =
        futures::future::Either<std::future::Ready<Result<Response<B>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        use futures::future::Either;
        if !NEVER_SHED.contains(&req.uri().path()) {
            let Some(permit) = self.gate.try_enter() else {
                return Either::Left(std::future::ready(Ok((self.refuse)())));
            };
            req.extensions_mut().insert(Held {
                _permit: Arc::new(permit),
            });
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};

    /// A floor of 1, so that the bound could fall if it adapted.
    fn fixed(max_in_flight: usize) -> OverloadConfig {
        OverloadConfig {
            max_in_flight,
            adaptive: false,
            min_in_flight: 1,
            ..OverloadConfig::default()
        }
    }

    fn adaptive(min: usize, max: usize) -> Gate {
        let cfg = OverloadConfig {
            max_in_flight: max,
            min_in_flight: min,
            adaptive: true,
            latency_target_ms: 50,
        };
        Gate::new("test", "rest", &cfg)
    }

    /// Takes every permit the gate gives now.
    fn fill(gate: &Gate) -> Vec<Permit> {
        std::iter::from_fn(|| gate.try_enter()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_work_lowers_the_adaptive_bound_and_fast_work_raises_it_again() {
        let gate = adaptive(2, 8);
        assert_eq!(fill(&gate).len(), 8, "it starts open");
        let slow = fill(&gate);
        assert_eq!(slow.len(), 8);
        tokio::time::advance(Duration::from_millis(80)).await;
        drop(slow);
        let lowered = gate.limit();
        assert!(lowered < 8, "eight requests over the target: {lowered}");
        assert_eq!(
            fill(&gate).len(),
            lowered,
            "the lowered bound is what admits"
        );
        for _ in 0..10 {
            drop(fill(&gate));
        }
        assert_eq!(gate.limit(), 8, "fast work brings it back to the max");
    }

    #[tokio::test(start_paused = true)]
    async fn the_adaptive_bound_never_falls_below_its_floor() {
        let gate = adaptive(3, 8);
        for _ in 0..50 {
            let slow = fill(&gate);
            tokio::time::advance(Duration::from_secs(1)).await;
            drop(slow);
        }
        assert_eq!(gate.limit(), 3);
        assert_eq!(fill(&gate).len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_bound_does_not_move() {
        let gate = Gate::new("test", "rest", &fixed(4));
        let slow = fill(&gate);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(slow);
        assert_eq!(gate.limit(), 4);
    }

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn a_full_gate_refuses_at_once_and_frees_with_the_work() {
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = Gate::new("test", "rest", &fixed(1));
        let wait = release.clone();
        // `/slow` answers when released, anything else at once.
        // As in the servers: admission, then the detached task.
        let work = tower::service_fn(move |req: Request<()>| {
            let wait = wait.clone();
            async move {
                if req.uri().path() == "/slow" {
                    wait.notified().await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
            }
        });
        let svc = AdmissionLayer::rest(gate.clone()).layer(crate::detach::DetachLayer.layer(work));
        let quick = |path: &'static str| {
            tokio::time::timeout(Duration::from_millis(500), svc.clone().oneshot(get(path)))
        };
        // Its caller gives up; the detached work holds the permit on.
        assert!(quick("/slow").await.is_err(), "the slow one waits");
        let shed = quick("/api/v1/x").await.expect("refused at once").unwrap();
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["retry-after"], "1");
        let health = quick("/healthz").await.expect("not queued").unwrap();
        assert_eq!(health.status(), 200, "health checks pass a full gate");
        release.notify_one();
        while gate.0.in_flight.load(Ordering::Acquire) > 0 {
            tokio::task::yield_now().await;
        }
        let again = quick("/api/v1/x").await.expect("not queued").unwrap();
        assert_eq!(again.status(), 200, "the permit came back with the work");
    }
}
