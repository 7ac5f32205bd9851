//! The point role's gRPC server and the client that implements [`PointApi`]
//! for a gateway in another process.

use super::PointApi;
use crate::ctx::Ctx;
use crate::error::to_status;
use crate::gateway::breaker::Breaker;
use crate::proto::point as pb;
use crate::proto::{self, parse_ts, ts, uuid};
use async_trait::async_trait;
use pb::point_service_client::PointServiceClient;
use pb::point_service_server::PointService as GrpcService;
use promo_domain::page::{Page, PageRequest};
use promo_domain::point::{Balance, PointChange, Transaction, TxType};
use promo_domain::DomainResult;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

fn tx_pb(t: Transaction) -> pb::Transaction {
    pb::Transaction {
        id: t.id.to_string(),
        user_id: t.user_id.to_string(),
        r#type: t.tx_type.as_str().to_owned(),
        amount: t.amount,
        delta: t.delta,
        balance_after: t.balance_after,
        reference: t.reference,
        description: t.description,
        cancelled_transaction_id: t.cancelled_transaction_id.map(|u| u.to_string()),
        created_at: ts(t.created_at),
    }
}

fn tx_dom(t: pb::Transaction) -> DomainResult<Transaction> {
    Ok(Transaction {
        id: uuid("id", &t.id)?,
        user_id: uuid("user_id", &t.user_id)?,
        tx_type: TxType::parse(&t.r#type)?,
        amount: t.amount,
        delta: t.delta,
        balance_after: t.balance_after,
        reference: t.reference,
        description: t.description,
        cancelled_transaction_id: t
            .cancelled_transaction_id
            .as_deref()
            .map(|s| uuid("cancelled_transaction_id", s))
            .transpose()?,
        created_at: parse_ts("created_at", &t.created_at)?,
    })
}

fn change_dom(
    user_id: &str,
    amount: i64,
    r: Option<String>,
    d: Option<String>,
) -> DomainResult<PointChange> {
    Ok(PointChange {
        user_id: uuid("user_id", user_id)?,
        amount,
        reference: r,
        description: d,
    })
}

/// Serves a [`PointApi`] over gRPC.
pub struct Server(pub Arc<dyn PointApi>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: DomainResult<T>) -> R<T> {
    r.map(Response::new).map_err(to_status)
}

#[async_trait]
impl GrpcService for Server {
    async fn earn(&self, req: Request<pb::EarnRequest>) -> R<pb::Transaction> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let c = change_dom(&r.user_id, r.amount, r.reference, r.description)?;
            self.0.earn(&ctx, c).await.map(tx_pb)
        }
        .await)
    }

    async fn r#use(&self, req: Request<pb::UseRequest>) -> R<pb::Transaction> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let c = change_dom(&r.user_id, r.amount, r.reference, r.description)?;
            self.0.use_points(&ctx, c).await.map(tx_pb)
        }
        .await)
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> R<pb::Transaction> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            self.0
                .cancel(&ctx, uuid("transaction_id", &r.transaction_id)?)
                .await
                .map(tx_pb)
        }
        .await)
    }

    async fn get_balance(&self, req: Request<pb::BalanceRequest>) -> R<pb::Balance> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let b = self.0.balance(&ctx, uuid("user_id", &r.user_id)?).await?;
            Ok(pb::Balance {
                user_id: b.user_id.to_string(),
                balance: b.balance,
            })
        }
        .await)
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> R<pb::TransactionPage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let kind = r.r#type.as_deref().map(TxType::parse).transpose()?;
            let p = self
                .0
                .history(
                    &ctx,
                    uuid("user_id", &r.user_id)?,
                    kind,
                    proto::from_page_req(r.page)?,
                )
                .await?;
            Ok(pb::TransactionPage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(tx_pb).collect(),
            })
        }
        .await)
    }
}

pub fn server(api: Arc<dyn PointApi>) -> pb::point_service_server::PointServiceServer<Server> {
    pb::point_service_server::PointServiceServer::new(Server(api))
}

/// [`PointApi`] over gRPC.
#[derive(Clone)]
pub struct Client {
    inner: PointServiceClient<Channel>,
    remote: proto::Remote,
}

impl Client {
    pub fn new(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Self {
        Client {
            inner: PointServiceClient::new(channel),
            remote: proto::Remote::new(timeout, breaker),
        }
    }
}

#[async_trait]
impl PointApi for Client {
    async fn earn(&self, ctx: &Ctx, c: PointChange) -> DomainResult<Transaction> {
        let msg = pb::EarnRequest {
            meta: Some(proto::meta(ctx)),
            user_id: c.user_id.to_string(),
            amount: c.amount,
            reference: c.reference,
            description: c.description,
        };
        tx_dom(
            self.remote
                .call(self.inner.clone().earn(self.remote.req(msg)))
                .await?,
        )
    }

    async fn use_points(&self, ctx: &Ctx, c: PointChange) -> DomainResult<Transaction> {
        let msg = pb::UseRequest {
            meta: Some(proto::meta(ctx)),
            user_id: c.user_id.to_string(),
            amount: c.amount,
            reference: c.reference,
            description: c.description,
        };
        tx_dom(
            self.remote
                .call(self.inner.clone().r#use(self.remote.req(msg)))
                .await?,
        )
    }

    async fn cancel(&self, ctx: &Ctx, transaction_id: Uuid) -> DomainResult<Transaction> {
        let msg = pb::CancelRequest {
            meta: Some(proto::meta(ctx)),
            transaction_id: transaction_id.to_string(),
        };
        tx_dom(
            self.remote
                .call(self.inner.clone().cancel(self.remote.req(msg)))
                .await?,
        )
    }

    async fn balance(&self, ctx: &Ctx, user_id: Uuid) -> DomainResult<Balance> {
        let msg = pb::BalanceRequest {
            actor: Some(proto::actor(&ctx.principal)),
            user_id: user_id.to_string(),
        };
        let b = self
            .remote
            .call(self.inner.clone().get_balance(self.remote.req(msg)))
            .await?;
        Ok(Balance {
            user_id: uuid("user_id", &b.user_id)?,
            balance: b.balance,
        })
    }

    async fn history(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        kind: Option<TxType>,
        page: PageRequest,
    ) -> DomainResult<Page<Transaction>> {
        let msg = pb::HistoryRequest {
            actor: Some(proto::actor(&ctx.principal)),
            user_id: user_id.to_string(),
            r#type: kind.map(|k| k.as_str().to_owned()),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().history(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(tx_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }
}
