//! Calls between roles over gRPC, both ends: [`serve`] runs one server
//! method, [`Remote`] and [`call!`] make one client call through the callee's
//! circuit breaker. Role modules use this, never the gateway.

pub mod breaker;

use crate::ctx::Ctx;
use crate::error::{from_status, to_status};
use crate::proto::{self, Caller};
use breaker::Breaker;
use promo_domain::{DomainError, DomainResult};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
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

/// A generated client stub, made from a channel.
pub trait Stub: Clone {
    fn connect(channel: Channel) -> Self;
}

macro_rules! stubs {
    ($($stub:ty),* $(,)?) => {$(
        impl Stub for $stub {
            fn connect(channel: Channel) -> Self {
                <$stub>::new(channel)
            }
        }
    )*};
}

stubs! {
    proto::audit::audit_service_client::AuditServiceClient<Channel>,
    proto::coupon::coupon_service_client::CouponServiceClient<Channel>,
    proto::point::point_service_client::PointServiceClient<Channel>,
    proto::timesale::time_sale_service_client::TimeSaleServiceClient<Channel>,
}

/// A service role's API over gRPC: the generated stub, the call timeout and
/// the service's circuit breaker, which sees transport faults but not
/// refusals. Each role implements its API trait on its `Remote`.
#[derive(Clone)]
pub struct Remote<C> {
    stub: C,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

impl<C: Stub> Remote<C> {
    pub fn new(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Self {
        Remote {
            stub: C::connect(channel),
            timeout,
            breaker,
        }
    }

    /// A stub to call through (stubs are cheap clones of one channel).
    pub fn stub(&self) -> C {
        self.stub.clone()
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
        T::try_from(self.call_raw(call).await?)
    }

    /// [`Remote::call`] without the conversion: the message as it came (a
    /// server stream, say).
    pub async fn call_raw<P>(
        &self,
        call: impl Future<Output = Result<Response<P>, Status>>,
    ) -> DomainResult<P> {
        self.breaker
            .call(async { call.await.map(Response::into_inner).map_err(from_status) })
            .await
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

/// `call!(remote, method, msg)`: one call of the stub's `method` with `msg`
/// through [`Remote::call`], converted to the domain type the caller returns.
macro_rules! call {
    ($remote:expr, $method:ident, $msg:expr) => {{
        let r = &$remote;
        r.call(r.stub().$method(r.req($msg))).await
    }};
}
pub(crate) use call;
