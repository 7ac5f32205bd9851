//! A role's audit log over gRPC: the server every service role's port
//! carries, and the client a gateway in another process searches it with.

use super::AuditApi;
use crate::ctx::Ctx;
use crate::proto::{self, audit as pb};
use crate::rpc::{call, serve, Remote};
use async_trait::async_trait;
use pb::audit_service_client::AuditServiceClient;
use pb::audit_service_server::{AuditService, AuditServiceServer};
use promo_domain::audit::{AuditQuery, Head};
use promo_domain::DomainResult;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub struct Server(Arc<dyn AuditApi>);

pub fn server(api: Arc<dyn AuditApi>) -> AuditServiceServer<Server> {
    AuditServiceServer::new(Server(api))
}

#[async_trait]
impl AuditService for Server {
    async fn head(&self, req: Request<pb::AuditQuery>) -> Result<Response<pb::AuditHead>, Status> {
        serve(req, |ctx, q| async move {
            self.0.head(&ctx, q.try_into()?).await
        })
        .await
    }
}

/// [`AuditApi`] over gRPC, through the role's own breaker.
pub type Client = Remote<AuditServiceClient<Channel>>;

#[async_trait]
impl AuditApi for Client {
    async fn head(&self, ctx: &Ctx, q: AuditQuery) -> DomainResult<Head> {
        let msg = pb::AuditQuery {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, head, msg)
    }
}
