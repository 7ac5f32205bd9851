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
//! The bound is on concurrency, not rate: a fast answer (a sold-out or
//! over-limit refusal) holds its permit only briefly, so it is not shed
//! before slow work is. The layer sits inside [`crate::detach`]'s, so a
//! permit is held until the detached request has really finished, not until
//! its client hangs up. Health and metrics routes are never shed.
//!
//! Not here: rate limits per user or IP (`gateway::rate_limit`), timeouts
//! (the server stacks in `server.rs`).

use crate::error::{to_status, ApiError};
use axum::http::{HeaderValue, Request, Response};
use axum::response::IntoResponse;
use metrics::{Counter, Gauge};
use promo_domain::DomainError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Routes that answer however busy the port is: an orchestrator that sees
/// `/healthz` fail under load would restart the one process that is working.
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What a shed client is told to wait before trying again, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

/// One port's bound: shared by every route and connection of that port.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    in_flight: Gauge,
    shed: Counter,
}

impl Gate {
    /// `port` is `rest` or `grpc`.
    pub fn new(role: &'static str, port: &'static str, max_in_flight: usize) -> Gate {
        let labels = [("role", role), ("port", port)];
        metrics::gauge!("promo_in_flight_limit", &labels).set(max_in_flight as f64);
        Gate {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            in_flight: metrics::gauge!("promo_in_flight", &labels),
            shed: metrics::counter!("promo_shed_requests_total", &labels),
        }
    }

    fn try_enter(&self) -> Option<Permit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.in_flight.increment(1.0);
                Some(Permit {
                    _permit: permit,
                    in_flight: self.in_flight.clone(),
                })
            }
            Err(_) => {
                self.shed.increment(1);
                None
            }
        }
    }
}

struct Permit {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
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

/// Innermost but for [`crate::detach::DetachLayer`], which must stay above it.
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
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if NEVER_SHED.contains(&req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let Some(permit) = self.gate.try_enter() else {
            let refusal = (self.refuse)();
            return Box::pin(std::future::ready(Ok(refusal)));
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            drop(permit);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn a_full_gate_refuses_at_once_and_frees_with_the_work() {
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = Gate::new("test", "rest", 1);
        let wait = release.clone();
        // `/slow` answers when released, anything else at once.
        let svc =
            AdmissionLayer::rest(gate.clone()).layer(tower::service_fn(move |req: Request<()>| {
                let wait = wait.clone();
                async move {
                    if req.uri().path() == "/slow" {
                        wait.notified().await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
                }
            }));
        let first = tokio::spawn(svc.clone().oneshot(get("/slow")));
        while gate.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let quick = |path: &'static str| {
            tokio::time::timeout(Duration::from_millis(500), svc.clone().oneshot(get(path)))
        };
        let shed = quick("/api/v1/x").await.expect("refused at once").unwrap();
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["retry-after"], "1");
        let health = quick("/healthz").await.expect("not queued").unwrap();
        assert_eq!(health.status(), 200, "health checks pass a full gate");
        release.notify_one();
        first.await.unwrap().unwrap();
        let again = quick("/api/v1/x").await.expect("not queued").unwrap();
        assert_eq!(again.status(), 200, "the permit came back with the work");
    }
}
