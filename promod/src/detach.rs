//! Runs each request in a task of its own, so that nothing above it can
//! cancel a write half-way.
//!
//! hyper drops a request's future when its client goes away, and so does a
//! timeout layer or a gRPC caller's deadline. A write that has taken a Redis
//! slot and is waiting for its batch would then never reach the step that
//! gives the slot back, and the sale would under-sell until a rebuild (seen
//! under `scripts/chaos.sh redis`). In its own task the write runs to its end;
//! the caller just stops waiting for the answer, and a retry with the same
//! idempotency key gets it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Innermost in a stack, below any timeout. The admission permit
/// (`crate::overload::Held`, in the request's extensions) moves into the
/// task, so that a port's bound counts detached work until it really ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetachLayer;

impl<S> tower::Layer<S> for DetachLayer {
    type Service = Detach<S>;

    fn layer(&self, inner: S) -> Detach<S> {
        Detach(inner)
    }
}

#[derive(Debug, Clone)]
pub struct Detach<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Detach<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let held = req.extensions_mut().remove::<crate::overload::Held>();
        let work = self.0.call(req);
        let task = tokio::spawn(crate::request_id::carry(async move {
            let answer = work.await;
            drop(held);
            answer
        }));
        Box::pin(async move {
            match task.await {
                Ok(answer) => answer,
                // The handler panicked: fail this request as it would have
                // failed without the task.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only a runtime shutting down cancels the task.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tower::{Layer, Service, ServiceExt};

    /// Stacked as the gRPC server stacks them: the request id layer outside,
    /// the detached handler inside still sees the caller's id.
    #[tokio::test]
    async fn the_work_keeps_the_request_id() {
        let handler = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(crate::request_id::current())
        });
        let svc = crate::request_id::GrpcLayer.layer(DetachLayer.layer(handler));
        let req = http::Request::builder()
            .header("x-request-id", "req-1")
            .body(())
            .unwrap();
        let seen = svc.oneshot(req).await.unwrap();
        assert_eq!(seen.as_deref(), Some("req-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_caller_does_not_cancel_the_work() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let mut svc = DetachLayer.layer(tower::service_fn(move |_: http::Request<()>| {
            let flag = flag.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                flag.store(true, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(())
            }
        }));
        let call = svc.ready().await.unwrap().call(http::Request::new(()));
        // The caller gives up after 1 s, as a timeout layer would.
        assert!(tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(done.load(Ordering::SeqCst), "the work was cancelled");
    }
}
