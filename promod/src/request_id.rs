//! The request id: taken from `x-request-id` or made up at the edge, kept in a
//! task-local for the request's lifetime, sent along in gRPC metadata and
//! recorded in the request's log span.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// `f` with this request's id and log span, for work moved to a task of its
/// own (`tokio::spawn` carries neither).
pub fn carry<F: std::future::Future>(f: F) -> impl std::future::Future<Output = F::Output> {
    let (id, span) = (current(), tracing::Span::current());
    let work = tracing::Instrument::instrument(f, span);
    async move {
        match id {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}

fn accept(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// HTTP middleware: one id per request, echoed in the response.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| accept(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span),
        )
        .await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Tower layer for the gRPC server: scopes each call with its request id.
#[derive(Clone, Copy, Default)]
pub struct GrpcLayer;

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService(inner)
    }
}

#[derive(Clone)]
pub struct GrpcService<S>(S);

impl<S, B> tower::Service<http::Request<B>> for GrpcService<S>
where
    S: tower::Service<http::Request<B>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let id = id
            .filter(|v| accept(v))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let span = tracing::info_span!("grpc", request_id = %id);
        // The inner `call` runs in the scope too, not only its future: the
        // detach layer below spawns the handler there, carrying what it
        // finds in scope (an id and span set only around the future would
        // be gone from the handler, its logs and its audit entries).
        let fut = REQUEST_ID.sync_scope(id.clone(), || span.in_scope(|| self.0.call(req)));
        Box::pin(REQUEST_ID.scope(id, tracing::Instrument::instrument(fut, span)))
    }
}
