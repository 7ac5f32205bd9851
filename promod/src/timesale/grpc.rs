//! The timesale role's gRPC server and the client that implements
//! [`TimesaleApi`] for a gateway in another process.

use super::TimesaleApi;
use crate::ctx::Ctx;
use crate::error::to_status;
use crate::gateway::breaker::Breaker;
use crate::proto::timesale as pb;
use crate::proto::{self, opt_ts, parse_ts, ts, uuid};
use async_trait::async_trait;
use pb::time_sale_service_client::TimeSaleServiceClient;
use pb::time_sale_service_server::TimeSaleService as GrpcService;
use promo_domain::page::{Page, PageRequest};
use promo_domain::timesale::{
    NewProduct, NewSale, Order, OrderStatus, Product, Sale, SalePatch, SaleStatus,
};
use promo_domain::DomainResult;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

fn product_pb(p: Product) -> pb::Product {
    pb::Product {
        id: p.id.to_string(),
        name: p.name,
        description: p.description,
        price: p.price,
        created_at: ts(p.created_at),
        updated_at: ts(p.updated_at),
    }
}

fn product_dom(p: pb::Product) -> DomainResult<Product> {
    Ok(Product {
        id: uuid("id", &p.id)?,
        name: p.name,
        description: p.description,
        price: p.price,
        created_at: parse_ts("created_at", &p.created_at)?,
        updated_at: parse_ts("updated_at", &p.updated_at)?,
    })
}

fn sale_pb(s: Sale) -> pb::Sale {
    pb::Sale {
        id: s.id.to_string(),
        product_id: s.product_id.to_string(),
        total_quantity: s.total_quantity,
        remaining_quantity: s.remaining_quantity,
        sale_price: s.sale_price,
        per_user_limit: s.per_user_limit,
        start_at: ts(s.start_at),
        end_at: ts(s.end_at),
        status: s.status.as_str().to_owned(),
        created_at: ts(s.created_at),
        sold_quantity: s.sold_quantity,
        updated_at: ts(s.updated_at),
    }
}

fn sale_dom(s: pb::Sale) -> DomainResult<Sale> {
    Ok(Sale {
        id: uuid("id", &s.id)?,
        product_id: uuid("product_id", &s.product_id)?,
        total_quantity: s.total_quantity,
        sold_quantity: s.sold_quantity,
        remaining_quantity: s.remaining_quantity,
        sale_price: s.sale_price,
        per_user_limit: s.per_user_limit,
        start_at: parse_ts("start_at", &s.start_at)?,
        end_at: parse_ts("end_at", &s.end_at)?,
        status: SaleStatus::parse(&s.status)?,
        created_at: parse_ts("created_at", &s.created_at)?,
        updated_at: parse_ts("updated_at", &s.updated_at)?,
    })
}

fn order_pb(o: Order) -> pb::Order {
    pb::Order {
        id: o.id.to_string(),
        time_sale_id: o.time_sale_id.to_string(),
        user_id: o.user_id.to_string(),
        quantity: o.quantity,
        unit_price: o.unit_price,
        total_price: o.total_price,
        status: o.status.as_str().to_owned(),
        created_at: ts(o.created_at),
        cancelled_at: o.cancelled_at.map(ts),
    }
}

fn order_dom(o: pb::Order) -> DomainResult<Order> {
    Ok(Order {
        id: uuid("id", &o.id)?,
        time_sale_id: uuid("time_sale_id", &o.time_sale_id)?,
        user_id: uuid("user_id", &o.user_id)?,
        quantity: o.quantity,
        unit_price: o.unit_price,
        total_price: o.total_price,
        status: OrderStatus::parse(&o.status)?,
        created_at: parse_ts("created_at", &o.created_at)?,
        cancelled_at: opt_ts("cancelled_at", o.cancelled_at.as_deref())?,
    })
}

/// Serves a [`TimesaleApi`] over gRPC.
pub struct Server(pub Arc<dyn TimesaleApi>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: DomainResult<T>) -> R<T> {
    r.map(Response::new).map_err(to_status)
}

#[async_trait]
impl GrpcService for Server {
    async fn create_product(&self, req: Request<pb::CreateProductRequest>) -> R<pb::Product> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let p = NewProduct {
                name: r.name,
                description: r.description,
                price: r.price,
            };
            self.0.create_product(&ctx, p).await.map(product_pb)
        }
        .await)
    }

    async fn get_product(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Product> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            self.0
                .get_product(&ctx, uuid("id", &r.id)?)
                .await
                .map(product_pb)
        }
        .await)
    }

    async fn list_products(&self, req: Request<pb::ListRequest>) -> R<pb::ProductPage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let p = self
                .0
                .list_products(&ctx, proto::from_page_req(r.page)?)
                .await?;
            Ok(pb::ProductPage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(product_pb).collect(),
            })
        }
        .await)
    }

    async fn create_sale(&self, req: Request<pb::CreateSaleRequest>) -> R<pb::Sale> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let s = NewSale {
                product_id: uuid("product_id", &r.product_id)?,
                total_quantity: r.total_quantity,
                sale_price: r.sale_price,
                per_user_limit: r.per_user_limit,
                start_at: parse_ts("start_at", &r.start_at)?,
                end_at: parse_ts("end_at", &r.end_at)?,
            };
            self.0.create_sale(&ctx, s).await.map(sale_pb)
        }
        .await)
    }

    async fn get_sale(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Sale> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            self.0.get_sale(&ctx, uuid("id", &r.id)?).await.map(sale_pb)
        }
        .await)
    }

    async fn list_sales(&self, req: Request<pb::ListSalesRequest>) -> R<pb::SalePage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let status = r.status.as_deref().map(SaleStatus::parse).transpose()?;
            let p = self
                .0
                .list_sales(&ctx, status, proto::from_page_req(r.page)?)
                .await?;
            Ok(pb::SalePage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(sale_pb).collect(),
            })
        }
        .await)
    }

    async fn update_sale(&self, req: Request<pb::UpdateSaleRequest>) -> R<pb::Sale> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let patch = SalePatch {
                end_at: opt_ts("end_at", r.end_at.as_deref())?,
                status: r.status.as_deref().map(SaleStatus::parse).transpose()?,
            };
            self.0
                .update_sale(&ctx, uuid("id", &r.id)?, patch)
                .await
                .map(sale_pb)
        }
        .await)
    }

    async fn create_order(&self, req: Request<pb::CreateOrderRequest>) -> R<pb::Order> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            self.0
                .order(
                    &ctx,
                    uuid("time_sale_id", &r.time_sale_id)?,
                    uuid("user_id", &r.user_id)?,
                    r.quantity,
                )
                .await
                .map(order_pb)
        }
        .await)
    }

    async fn get_order(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Order> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            self.0
                .get_order(&ctx, uuid("id", &r.id)?)
                .await
                .map(order_pb)
        }
        .await)
    }

    async fn list_orders(&self, req: Request<pb::ListOrdersRequest>) -> R<pb::OrderPage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let p = self
                .0
                .list_orders(
                    &ctx,
                    uuid("user_id", &r.user_id)?,
                    proto::from_page_req(r.page)?,
                )
                .await?;
            Ok(pb::OrderPage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(order_pb).collect(),
            })
        }
        .await)
    }

    async fn cancel_order(&self, req: Request<pb::CancelOrderRequest>) -> R<pb::Order> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            self.0
                .cancel_order(&ctx, uuid("order_id", &r.order_id)?)
                .await
                .map(order_pb)
        }
        .await)
    }
}

pub fn server(
    api: Arc<dyn TimesaleApi>,
) -> pb::time_sale_service_server::TimeSaleServiceServer<Server> {
    pb::time_sale_service_server::TimeSaleServiceServer::new(Server(api))
}

/// [`TimesaleApi`] over gRPC.
#[derive(Clone)]
pub struct Client {
    inner: TimeSaleServiceClient<Channel>,
    remote: proto::Remote,
}

impl Client {
    pub fn new(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Self {
        Client {
            inner: TimeSaleServiceClient::new(channel),
            remote: proto::Remote::new(timeout, breaker),
        }
    }

    fn by_id(ctx: &Ctx, id: Uuid) -> pb::GetByIdRequest {
        pb::GetByIdRequest {
            actor: Some(proto::actor(&ctx.principal)),
            id: id.to_string(),
        }
    }
}

#[async_trait]
impl TimesaleApi for Client {
    async fn create_product(&self, ctx: &Ctx, p: NewProduct) -> DomainResult<Product> {
        let msg = pb::CreateProductRequest {
            meta: Some(proto::meta(ctx)),
            name: p.name,
            description: p.description,
            price: p.price,
        };
        let r = self
            .remote
            .call(self.inner.clone().create_product(self.remote.req(msg)))
            .await?;
        product_dom(r)
    }

    async fn get_product(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Product> {
        let msg = Self::by_id(ctx, id);
        let r = self
            .remote
            .call(self.inner.clone().get_product(self.remote.req(msg)))
            .await?;
        product_dom(r)
    }

    async fn list_products(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Product>> {
        let msg = pb::ListRequest {
            actor: Some(proto::actor(&ctx.principal)),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().list_products(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(product_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }

    async fn create_sale(&self, ctx: &Ctx, s: NewSale) -> DomainResult<Sale> {
        let msg = pb::CreateSaleRequest {
            meta: Some(proto::meta(ctx)),
            product_id: s.product_id.to_string(),
            total_quantity: s.total_quantity,
            sale_price: s.sale_price,
            per_user_limit: s.per_user_limit,
            start_at: ts(s.start_at),
            end_at: ts(s.end_at),
        };
        let r = self
            .remote
            .call(self.inner.clone().create_sale(self.remote.req(msg)))
            .await?;
        sale_dom(r)
    }

    async fn get_sale(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Sale> {
        let msg = Self::by_id(ctx, id);
        let r = self
            .remote
            .call(self.inner.clone().get_sale(self.remote.req(msg)))
            .await?;
        sale_dom(r)
    }

    async fn list_sales(
        &self,
        ctx: &Ctx,
        status: Option<SaleStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Sale>> {
        let msg = pb::ListSalesRequest {
            actor: Some(proto::actor(&ctx.principal)),
            status: status.map(|s| s.as_str().to_owned()),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().list_sales(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(sale_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }

    async fn update_sale(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale> {
        let msg = pb::UpdateSaleRequest {
            meta: Some(proto::meta(ctx)),
            id: id.to_string(),
            end_at: patch.end_at.map(ts),
            status: patch.status.map(|s| s.as_str().to_owned()),
        };
        let r = self
            .remote
            .call(self.inner.clone().update_sale(self.remote.req(msg)))
            .await?;
        sale_dom(r)
    }

    async fn order(
        &self,
        ctx: &Ctx,
        sale_id: Uuid,
        user_id: Uuid,
        quantity: i64,
    ) -> DomainResult<Order> {
        let msg = pb::CreateOrderRequest {
            meta: Some(proto::meta(ctx)),
            time_sale_id: sale_id.to_string(),
            user_id: user_id.to_string(),
            quantity,
        };
        let r = self
            .remote
            .call(self.inner.clone().create_order(self.remote.req(msg)))
            .await?;
        order_dom(r)
    }

    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let msg = Self::by_id(ctx, id);
        let r = self
            .remote
            .call(self.inner.clone().get_order(self.remote.req(msg)))
            .await?;
        order_dom(r)
    }

    async fn list_orders(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        page: PageRequest,
    ) -> DomainResult<Page<Order>> {
        let msg = pb::ListOrdersRequest {
            actor: Some(proto::actor(&ctx.principal)),
            user_id: user_id.to_string(),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().list_orders(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(order_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }

    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let msg = pb::CancelOrderRequest {
            meta: Some(proto::meta(ctx)),
            order_id: id.to_string(),
        };
        let r = self
            .remote
            .call(self.inner.clone().cancel_order(self.remote.req(msg)))
            .await?;
        order_dom(r)
    }
}
