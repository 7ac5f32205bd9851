//! The timesale role's gRPC server and the client that implements
//! [`TimesaleApi`] for a gateway in another process.

use super::TimesaleApi;
use crate::ctx::Ctx;
use crate::proto::timesale as pb;
use crate::proto::{self, uuid};
use crate::rpc::{call, serve, Remote};
use async_trait::async_trait;
use pb::time_sale_service_client::TimeSaleServiceClient;
use pb::time_sale_service_server::TimeSaleService as GrpcService;
use promo_domain::page::{Page, PageRequest};
use promo_domain::timesale::{
    NewOrder, NewProduct, NewSale, Order, OrderQuery, Product, Sale, SalePatch, SaleQuery,
};
use promo_domain::DomainResult;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Serves a [`TimesaleApi`] over gRPC.
pub struct Server(pub Arc<dyn TimesaleApi>);

type R<T> = Result<Response<T>, Status>;

#[async_trait]
impl GrpcService for Server {
    async fn create_product(&self, req: Request<pb::CreateProductRequest>) -> R<pb::Product> {
        serve(req, |ctx, r| async move {
            self.0.create_product(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn get_product(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Product> {
        serve(req, |ctx, r| async move {
            self.0.get_product(&ctx, uuid("id", &r.id)?).await
        })
        .await
    }

    async fn list_products(&self, req: Request<pb::ListRequest>) -> R<pb::ProductPage> {
        serve(req, |ctx, r| async move {
            let page = proto::from_page_req(r.page)?;
            self.0.list_products(&ctx, page).await
        })
        .await
    }

    async fn create_sale(&self, req: Request<pb::CreateSaleRequest>) -> R<pb::Sale> {
        serve(req, |ctx, r| async move {
            self.0.create_sale(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn get_sale(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Sale> {
        serve(req, |ctx, r| async move {
            self.0.get_sale(&ctx, uuid("id", &r.id)?).await
        })
        .await
    }

    async fn list_sales(&self, req: Request<pb::ListSalesRequest>) -> R<pb::SalePage> {
        serve(req, |ctx, r| async move {
            self.0.list_sales(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn update_sale(&self, req: Request<pb::UpdateSaleRequest>) -> R<pb::Sale> {
        serve(req, |ctx, r| async move {
            let patch = SalePatch::try_from(&r)?;
            self.0.update_sale(&ctx, uuid("id", &r.id)?, patch).await
        })
        .await
    }

    async fn create_order(&self, req: Request<pb::CreateOrderRequest>) -> R<pb::Order> {
        serve(req, |ctx, r| async move {
            let sale_id = uuid("time_sale_id", &r.time_sale_id)?;
            let user_id = uuid("user_id", &r.user_id)?;
            self.0.order(&ctx, sale_id, user_id, r.try_into()?).await
        })
        .await
    }

    async fn get_order(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Order> {
        serve(req, |ctx, r| async move {
            self.0.get_order(&ctx, uuid("id", &r.id)?).await
        })
        .await
    }

    async fn list_orders(&self, req: Request<pb::ListOrdersRequest>) -> R<pb::OrderPage> {
        serve(req, |ctx, r| async move {
            self.0.list_orders(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn cancel_order(&self, req: Request<pb::CancelOrderRequest>) -> R<pb::Order> {
        serve(req, |ctx, r| async move {
            self.0
                .cancel_order(&ctx, uuid("order_id", &r.order_id)?)
                .await
        })
        .await
    }

    async fn confirm_order(&self, req: Request<pb::ConfirmOrderRequest>) -> R<pb::Order> {
        serve(req, |ctx, r| async move {
            self.0
                .confirm_order(&ctx, uuid("order_id", &r.order_id)?)
                .await
        })
        .await
    }
}

pub fn server(
    api: Arc<dyn TimesaleApi>,
) -> pb::time_sale_service_server::TimeSaleServiceServer<Server> {
    pb::time_sale_service_server::TimeSaleServiceServer::new(Server(api))
}

/// [`TimesaleApi`] over gRPC.
pub type Client = Remote<TimeSaleServiceClient<Channel>>;

/// A read of one thing by id.
fn by_id(ctx: &Ctx, id: Uuid) -> pb::GetByIdRequest {
    pb::GetByIdRequest {
        actor: proto::actor(ctx),
        id: id.to_string(),
    }
}

#[async_trait]
impl TimesaleApi for Client {
    async fn create_product(&self, ctx: &Ctx, p: NewProduct) -> DomainResult<Product> {
        let msg = pb::CreateProductRequest {
            meta: proto::meta(ctx),
            ..p.into()
        };
        call!(self, create_product, msg)
    }

    async fn get_product(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Product> {
        call!(self, get_product, by_id(ctx, id))
    }

    async fn list_products(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Product>> {
        let msg = pb::ListRequest {
            actor: proto::actor(ctx),
            page: proto::page_req(page),
        };
        call!(self, list_products, msg)
    }

    async fn create_sale(&self, ctx: &Ctx, s: NewSale) -> DomainResult<Sale> {
        let msg = pb::CreateSaleRequest {
            meta: proto::meta(ctx),
            ..s.into()
        };
        call!(self, create_sale, msg)
    }

    async fn get_sale(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Sale> {
        call!(self, get_sale, by_id(ctx, id))
    }

    async fn list_sales(&self, ctx: &Ctx, q: SaleQuery) -> DomainResult<Page<Sale>> {
        let msg = pb::ListSalesRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, list_sales, msg)
    }

    async fn update_sale(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale> {
        let msg = pb::UpdateSaleRequest {
            meta: proto::meta(ctx),
            id: id.to_string(),
            ..patch.into()
        };
        call!(self, update_sale, msg)
    }

    async fn order(&self, ctx: &Ctx, sale: Uuid, user: Uuid, o: NewOrder) -> DomainResult<Order> {
        let msg = pb::CreateOrderRequest {
            meta: proto::meta(ctx),
            time_sale_id: sale.to_string(),
            user_id: user.to_string(),
            ..o.into()
        };
        call!(self, create_order, msg)
    }

    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        call!(self, get_order, by_id(ctx, id))
    }

    async fn list_orders(&self, ctx: &Ctx, q: OrderQuery) -> DomainResult<Page<Order>> {
        let msg = pb::ListOrdersRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, list_orders, msg)
    }

    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let msg = pb::CancelOrderRequest {
            meta: proto::meta(ctx),
            order_id: id.to_string(),
        };
        call!(self, cancel_order, msg)
    }

    async fn confirm_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let msg = pb::ConfirmOrderRequest {
            meta: proto::meta(ctx),
            order_id: id.to_string(),
        };
        call!(self, confirm_order, msg)
    }
}
