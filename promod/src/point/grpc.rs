//! The point role's gRPC server and the client that implements [`PointApi`]
//! for a gateway in another process.

use super::PointApi;
use crate::ctx::Ctx;
use crate::proto::point as pb;
use crate::proto::{self, opt_ts, ts, uuid};
use crate::rpc::{call, serve, Remote};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pb::point_service_client::PointServiceClient;
use pb::point_service_server::PointService as GrpcService;
use promo_domain::page::Page;
use promo_domain::point::hold::{NewHold, PointHold};
use promo_domain::point::lot::{Lot, LotQuery};
use promo_domain::point::{Balance, HistoryQuery, PointChange, Transaction};
use promo_domain::DomainResult;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Serves a [`PointApi`] over gRPC.
pub struct Server(pub Arc<dyn PointApi>);

type R<T> = Result<Response<T>, Status>;

#[async_trait]
impl GrpcService for Server {
    async fn earn(&self, req: Request<pb::EarnRequest>) -> R<pb::Transaction> {
        serve(req, |ctx, r| async move {
            let expires_at = opt_ts("expires_at", r.expires_at.as_deref())?;
            self.0.earn(&ctx, r.try_into()?, expires_at).await
        })
        .await
    }

    async fn r#use(&self, req: Request<pb::UseRequest>) -> R<pb::Transaction> {
        serve(req, |ctx, r| async move {
            self.0.use_points(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> R<pb::Transaction> {
        serve(req, |ctx, r| async move {
            let id = uuid("transaction_id", &r.transaction_id)?;
            self.0.cancel(&ctx, id).await
        })
        .await
    }

    async fn get_balance(&self, req: Request<pb::BalanceRequest>) -> R<pb::Balance> {
        serve(req, |ctx, r| async move {
            self.0.balance(&ctx, uuid("user_id", &r.user_id)?).await
        })
        .await
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> R<pb::TransactionPage> {
        serve(req, |ctx, r| async move {
            self.0.history(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn create_hold(&self, req: Request<pb::CreateHoldRequest>) -> R<pb::Hold> {
        serve(req, |ctx, r| async move {
            self.0.create_hold(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn capture_hold(&self, req: Request<pb::CaptureHoldRequest>) -> R<pb::Transaction> {
        serve(req, |ctx, r| async move {
            let id = uuid("hold_id", &r.hold_id)?;
            self.0.capture_hold(&ctx, id, r.amount).await
        })
        .await
    }

    async fn void_hold(&self, req: Request<pb::VoidHoldRequest>) -> R<pb::Hold> {
        serve(req, |ctx, r| async move {
            self.0.void_hold(&ctx, uuid("hold_id", &r.hold_id)?).await
        })
        .await
    }

    async fn get_hold(&self, req: Request<pb::GetHoldRequest>) -> R<pb::Hold> {
        serve(req, |ctx, r| async move {
            self.0.get_hold(&ctx, uuid("hold_id", &r.hold_id)?).await
        })
        .await
    }

    async fn lots(&self, req: Request<pb::LotsRequest>) -> R<pb::LotPage> {
        serve(req, |ctx, r| async move {
            self.0.lots(&ctx, r.try_into()?).await
        })
        .await
    }
}

pub fn server(api: Arc<dyn PointApi>) -> pb::point_service_server::PointServiceServer<Server> {
    pb::point_service_server::PointServiceServer::new(Server(api))
}

/// [`PointApi`] over gRPC.
pub type Client = Remote<PointServiceClient<Channel>>;

#[async_trait]
impl PointApi for Client {
    async fn earn(
        &self,
        ctx: &Ctx,
        c: PointChange,
        expires_at: Option<DateTime<Utc>>,
    ) -> DomainResult<Transaction> {
        let msg = pb::EarnRequest {
            meta: proto::meta(ctx),
            expires_at: expires_at.map(ts),
            ..c.into()
        };
        call!(self, earn, msg)
    }

    async fn use_points(&self, ctx: &Ctx, c: PointChange) -> DomainResult<Transaction> {
        let msg = pb::UseRequest {
            meta: proto::meta(ctx),
            ..c.into()
        };
        call!(self, r#use, msg)
    }

    async fn cancel(&self, ctx: &Ctx, transaction_id: Uuid) -> DomainResult<Transaction> {
        let msg = pb::CancelRequest {
            meta: proto::meta(ctx),
            transaction_id: transaction_id.to_string(),
        };
        call!(self, cancel, msg)
    }

    async fn balance(&self, ctx: &Ctx, user_id: Uuid) -> DomainResult<Balance> {
        let msg = pb::BalanceRequest {
            actor: proto::actor(ctx),
            user_id: user_id.to_string(),
        };
        call!(self, get_balance, msg)
    }

    async fn history(&self, ctx: &Ctx, q: HistoryQuery) -> DomainResult<Page<Transaction>> {
        let msg = pb::HistoryRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, history, msg)
    }

    async fn create_hold(&self, ctx: &Ctx, h: NewHold) -> DomainResult<PointHold> {
        let msg = pb::CreateHoldRequest {
            meta: proto::meta(ctx),
            ..h.into()
        };
        call!(self, create_hold, msg)
    }

    async fn capture_hold(
        &self,
        ctx: &Ctx,
        id: Uuid,
        amount: Option<i64>,
    ) -> DomainResult<Transaction> {
        let msg = pb::CaptureHoldRequest {
            meta: proto::meta(ctx),
            hold_id: id.to_string(),
            amount,
        };
        call!(self, capture_hold, msg)
    }

    async fn void_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        let msg = pb::VoidHoldRequest {
            meta: proto::meta(ctx),
            hold_id: id.to_string(),
        };
        call!(self, void_hold, msg)
    }

    async fn get_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        let msg = pb::GetHoldRequest {
            actor: proto::actor(ctx),
            hold_id: id.to_string(),
        };
        call!(self, get_hold, msg)
    }

    async fn lots(&self, ctx: &Ctx, q: LotQuery) -> DomainResult<Page<Lot>> {
        let msg = pb::LotsRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, lots, msg)
    }
}
