//! Calls between roles over gRPC, both ends: [`serve`] runs one server
//! method, [`Remote`] and [`call!`] make one client call through the callee's
//! circuit breaker. Role modules use this, never the gateway.

pub mod breaker;

use crate::ctx::Ctx;
use crate::error::{from_status, to_status};
use crate::proto::Caller;
use breaker::Breaker;
use promo_domain::{DomainError, DomainResult};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// One server method: takes the caller out of the request, runs `f` with it
/// and the arguments, and answers the result as a message (a domain error
/// as its status).
pub async fn serve<Q, T, P, F>(
    req: Request<Q>,
    f: impl FnOnce(Ctx, Q) -> F,
) -> Result<Response<P>, Status>
where
    Q: Caller,
    F: Future<Output = DomainResult<T>>,
    P: From<T>,
{
    let mut msg = req.into_inner();
    let res = match msg.take_ctx() {
        Ok(ctx) => f(ctx, msg).await,
        Err(e) => Err(e),
    };
    res.map(|t| Response::new(P::from(t))).map_err(to_status)
}

/// What every gRPC client of a service role shares: the call timeout and the
/// service's circuit breaker, which sees transport faults but not refusals.
#[derive(Clone)]
pub struct Remote {
    timeout: Duration,
    breaker: Arc<Breaker>,
}

impl Remote {
    pub fn new(timeout: Duration, breaker: Arc<Breaker>) -> Self {
        Remote { timeout, breaker }
    }

    /// Runs one call through the breaker and maps its status back to the
    /// domain. The answer converts after the breaker: a malformed answer is
    /// not a transport fault.
    pub async fn call<P, T>(
        &self,
        call: impl Future<Output = Result<Response<P>, Status>>,
    ) -> DomainResult<T>
    where
        T: TryFrom<P, Error = DomainError>,
    {
        let msg = self
            .breaker
            .call(async { call.await.map(Response::into_inner).map_err(from_status) })
            .await?;
        T::try_from(msg)
    }

    /// A request with the timeout and the request id.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.timeout);
        if let Some(id) = crate::request_id::current() {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(id.as_str()) {
                req.metadata_mut().insert("x-request-id", v);
            }
        }
        req
    }
}

/// `call!(self, method, msg)`: one client call of `method` with `msg` on a
/// client holding `inner` (the generated stub) and `remote`, converted to
/// the domain type the caller returns.
macro_rules! call {
    ($client:expr, $method:ident, $msg:expr) => {{
        let c = &$client;
        c.remote
            .call(c.inner.clone().$method(c.remote.req($msg)))
            .await
    }};
}
pub(crate) use call;
