//! REST routes of the time-sale API (API.md), served by the gateway and by the
//! timesale role's own port over any [`TimesaleApi`].

use super::TimesaleApi;
use crate::ctx::read_ctx;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Auth, EmptyBody, PageQuery, PageView, PathId, Query, Write};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use promo_domain::page::PageRequest;
use promo_domain::timesale::{
    parse_status_filter, NewOrder, NewProduct, NewSale, Order, OrderQuery, OrderStatus, Product,
    Sale, SalePatch, SaleQuery, SaleStatus,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

type Api = Arc<dyn TimesaleApi>;

pub fn routes(api: Api) -> Router {
    let admin = || axum::middleware::from_fn(crate::http::require_admin);
    Router::new()
        .route(
            "/api/v1/products",
            post(create_product).route_layer(admin()).get(list_products),
        )
        .route("/api/v1/products/{id}", get(get_product))
        .route(
            "/api/v1/time-sales",
            post(create_sale).route_layer(admin()).get(list_sales),
        )
        .route(
            "/api/v1/time-sales/{id}",
            patch(update_sale).route_layer(admin()).get(get_sale),
        )
        .route("/api/v1/time-sales/{id}/orders", post(create_order))
        .route("/api/v1/orders", get(list_orders))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/cancel", post(cancel_order))
        .route("/api/v1/orders/{id}/confirm", post(confirm_order))
        .with_state(api)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProductBody {
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        ProductView {
            id: p.id,
            name: p.name,
            description: p.description,
            price: p.price,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSaleBody {
    pub product_id: Uuid,
    pub total_quantity: i64,
    pub sale_price: i64,
    pub per_user_limit: Option<i64>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateSaleBody {
    pub end_at: Option<DateTime<Utc>>,
    /// Only CANCELLED.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SaleView {
    pub id: Uuid,
    pub product_id: Uuid,
    pub total_quantity: i64,
    /// The live stock (Redis); total minus sold when Redis cannot answer.
    pub remaining_quantity: i64,
    pub sold_quantity: i64,
    pub sale_price: i64,
    pub per_user_limit: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// SCHEDULED, ACTIVE, ENDED or CANCELLED
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Sale> for SaleView {
    fn from(s: Sale) -> Self {
        SaleView {
            id: s.id,
            product_id: s.product_id,
            total_quantity: s.total_quantity,
            remaining_quantity: s.remaining_quantity,
            sold_quantity: s.sold_quantity,
            sale_price: s.sale_price,
            per_user_limit: s.per_user_limit,
            start_at: s.start_at,
            end_at: s.end_at,
            status: s.status.as_str().to_owned(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SaleListQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// SCHEDULED, ACTIVE, ENDED or CANCELLED
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OrderBody {
    pub quantity: i64,
    /// Admins only: order for this user.
    pub user_id: Option<Uuid>,
    /// A checkout hold: the order is PENDING until confirmed, cancelled or
    /// expired, and its units are taken now.
    #[serde(default)]
    pub hold: bool,
    /// The hold's lifetime, 1..=86400 (default from configuration).
    pub hold_seconds: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub time_sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i64,
    pub unit_price: i64,
    pub total_price: i64,
    /// PENDING (a hold), CONFIRMED, CANCELLED or EXPIRED
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When a hold expires; null for an order confirmed at once.
    pub expires_at: Option<DateTime<Utc>>,
    /// When a hold was confirmed, cancelled or expired.
    pub resolved_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        OrderView {
            id: o.id,
            time_sale_id: o.time_sale_id,
            user_id: o.user_id,
            quantity: o.quantity,
            unit_price: o.unit_price,
            total_price: o.total_price,
            status: o.status.as_str().to_owned(),
            created_at: o.created_at,
            expires_at: o.expires_at,
            resolved_at: o.resolved_at,
            cancelled_at: o.cancelled_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrderListQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// PENDING, CONFIRMED, CANCELLED or EXPIRED
    pub status: Option<String>,
    /// Only this sale's orders.
    pub time_sale_id: Option<Uuid>,
    /// Admins: this user's orders; without it, every user's. Others may
    /// name only themselves and always get their own.
    pub user_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/products", tag = "time sales", request_body = CreateProductBody,
    responses((status = 201, body = ProductView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_product(
    State(api): State<Api>,
    w: Write<CreateProductBody>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let b = w.body;
    let p = NewProduct {
        name: b.name,
        description: b.description,
        price: b.price,
    };
    let product = api.create_product(&w.ctx, p).await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

#[utoipa::path(get, path = "/api/v1/products", tag = "time sales", params(PageQuery),
    responses((status = 200, body = PageView<ProductView>)), security(("bearer" = [])))]
pub async fn list_products(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<PageView<ProductView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let res = api.list_products(&read_ctx(p), page).await?;
    Ok(Json(PageView::from_page(res, ProductView::from)))
}

#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "time sales",
    params(("id" = Uuid, Path)), responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_product(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<ProductView>, ApiError> {
    Ok(Json(api.get_product(&read_ctx(p), id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/time-sales", tag = "time sales", request_body = CreateSaleBody,
    responses((status = 201, body = SaleView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_sale(
    State(api): State<Api>,
    w: Write<CreateSaleBody>,
) -> Result<(StatusCode, Json<SaleView>), ApiError> {
    let b = w.body;
    let s = NewSale {
        product_id: b.product_id,
        total_quantity: b.total_quantity,
        sale_price: b.sale_price,
        per_user_limit: b.per_user_limit.unwrap_or(1),
        start_at: b.start_at,
        end_at: b.end_at,
    };
    let sale = api.create_sale(&w.ctx, s).await?;
    Ok((StatusCode::CREATED, Json(sale.into())))
}

#[utoipa::path(get, path = "/api/v1/time-sales", tag = "time sales", params(SaleListQuery),
    responses((status = 200, body = PageView<SaleView>), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sales(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<SaleListQuery>,
) -> Result<Json<PageView<SaleView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let status = parse_status_filter(q.status.as_deref())?;
    let res = api
        .list_sales(&read_ctx(p), SaleQuery { status, page })
        .await?;
    Ok(Json(PageView::from_page(res, SaleView::from)))
}

#[utoipa::path(get, path = "/api/v1/time-sales/{id}", tag = "time sales",
    params(("id" = Uuid, Path)), responses((status = 200, body = SaleView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_sale(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<SaleView>, ApiError> {
    Ok(Json(api.get_sale(&read_ctx(p), id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/time-sales/{id}", tag = "time sales", request_body = UpdateSaleBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = SaleView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_sale(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<UpdateSaleBody>,
) -> Result<Json<SaleView>, ApiError> {
    let b = w.body;
    let patch = SalePatch {
        end_at: b.end_at,
        status: b.status.as_deref().map(SaleStatus::parse).transpose()?,
    };
    Ok(Json(api.update_sale(&w.ctx, id, patch).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/time-sales/{id}/orders", tag = "time sales", request_body = OrderBody,
    params(("id" = Uuid, Path)),
    responses((status = 201, body = OrderView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_order(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<OrderBody>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let user = w.ctx.principal.acting_for(w.body.user_id)?;
    let b = &w.body;
    let new = NewOrder {
        quantity: b.quantity,
        hold: b.hold,
        hold_seconds: b.hold_seconds,
    };
    let o = api.order(&w.ctx, id, user, new).await?;
    Ok((StatusCode::CREATED, Json(o.into())))
}

/// A page of orders, newest first: the caller's own, or for an admin any
/// user's (`user_id`) or every user's (without it), filtered by sale and status.
#[utoipa::path(get, path = "/api/v1/orders", tag = "time sales", params(OrderListQuery),
    responses((status = 200, body = PageView<OrderView>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_orders(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<OrderListQuery>,
) -> Result<Json<PageView<OrderView>>, ApiError> {
    let q = OrderQuery {
        user_id: q.user_id,
        time_sale_id: q.time_sale_id,
        status: q.status.as_deref().map(OrderStatus::parse).transpose()?,
        page: PageRequest::parse(q.page, q.size)?,
    };
    let res = api.list_orders(&read_ctx(p), q).await?;
    Ok(Json(PageView::from_page(res, OrderView::from)))
}

#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "time sales",
    params(("id" = Uuid, Path)), responses((status = 200, body = OrderView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_order(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(api.get_order(&read_ctx(p), id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "time sales",
    params(("id" = Uuid, Path)), responses((status = 200, body = OrderView), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel_order(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<EmptyBody>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(api.cancel_order(&w.ctx, id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/orders/{id}/confirm", tag = "time sales",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "HOLD_EXPIRED or ALREADY_RESOLVED", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn confirm_order(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<EmptyBody>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(api.confirm_order(&w.ctx, id).await?.into()))
}
