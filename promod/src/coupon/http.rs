//! REST routes of the coupon API (API.md), served by the gateway and by the
//! coupon role's own port over any [`CouponApi`].

use super::CouponApi;
use crate::ctx::read_ctx;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Auth, EmptyBody, PageQuery, PageView, PathId, Query, Write};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use promo_domain::coupon::{
    Coupon, CouponQuery, CouponReserve, CouponStatus, CouponUse, DiscountType, NewPolicy, Policy,
    PolicyPatch,
};
use promo_domain::page::PageRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

type Api = Arc<dyn CouponApi>;

pub fn routes(api: Api) -> Router {
    let admin = || axum::middleware::from_fn(crate::http::require_admin);
    Router::new()
        .route(
            "/api/v1/coupon-policies",
            post(create_policy).route_layer(admin()).get(list_policies),
        )
        .route(
            "/api/v1/coupon-policies/{id}",
            patch(update_policy).route_layer(admin()).get(get_policy),
        )
        .route("/api/v1/coupons/issue", post(issue))
        .route("/api/v1/coupons", get(list_coupons))
        .route("/api/v1/coupons/{id}", get(get_coupon))
        .route("/api/v1/coupons/{id}/use", post(use_coupon))
        .route("/api/v1/coupons/{id}/reserve", post(reserve))
        .route("/api/v1/coupons/{id}/cancel", post(cancel_use))
        .with_state(api)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePolicyBody {
    pub name: String,
    pub description: Option<String>,
    /// FIXED or PERCENTAGE
    pub discount_type: String,
    pub discount_value: i64,
    pub min_order_amount: Option<i64>,
    pub max_discount_amount: Option<i64>,
    pub total_quantity: i64,
    pub per_user_limit: Option<i64>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdatePolicyBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub total_quantity: Option<i64>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub discount_type: String,
    pub discount_value: i64,
    pub min_order_amount: i64,
    pub max_discount_amount: Option<i64>,
    pub total_quantity: i64,
    pub issued_quantity: i64,
    pub remaining_quantity: i64,
    pub per_user_limit: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Policy> for PolicyView {
    fn from(p: Policy) -> Self {
        PolicyView {
            remaining_quantity: p.remaining_quantity(),
            id: p.id,
            name: p.name,
            description: p.description,
            discount_type: p.discount_type.as_str().to_owned(),
            discount_value: p.discount_value,
            min_order_amount: p.min_order_amount,
            max_discount_amount: p.max_discount_amount,
            total_quantity: p.total_quantity,
            issued_quantity: p.issued_quantity,
            per_user_limit: p.per_user_limit,
            valid_from: p.valid_from,
            valid_until: p.valid_until,
            active: p.active,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CouponView {
    pub id: Uuid,
    pub code: String,
    pub policy_id: Uuid,
    pub user_id: Uuid,
    /// AVAILABLE, USED, EXPIRED or RESERVED
    pub status: String,
    pub order_id: Option<String>,
    pub discount_amount: Option<i64>,
    pub used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// The order holding it while RESERVED, else null.
    pub reserved_order_id: Option<String>,
    /// When the hold lapses while RESERVED, else null.
    pub reserved_until: Option<DateTime<Utc>>,
}

impl From<Coupon> for CouponView {
    fn from(c: Coupon) -> Self {
        CouponView {
            id: c.id,
            code: c.code,
            policy_id: c.policy_id,
            user_id: c.user_id,
            status: c.status.as_str().to_owned(),
            order_id: c.order_id,
            discount_amount: c.discount_amount,
            used_at: c.used_at,
            expires_at: c.expires_at,
            issued_at: c.issued_at,
            reserved_order_id: c.reserved_order_id,
            // An expired hold's lapsed deadline is kept for the rules only.
            reserved_until: c
                .reserved_until
                .filter(|_| c.status == CouponStatus::Reserved),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CouponListQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// AVAILABLE, USED, EXPIRED or RESERVED
    pub status: Option<String>,
    /// Admins only.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IssueBody {
    pub policy_id: Uuid,
    /// Admins only: issue for this user.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UseBody {
    pub order_id: String,
    pub order_amount: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReserveBody {
    pub order_id: String,
    pub order_amount: i64,
    /// 1..=86400; the configured default (`holds.default_seconds`) when absent.
    pub hold_seconds: Option<i64>,
}

/// A used or reserved coupon and its discount for the order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UseView {
    pub coupon: CouponView,
    pub discount_amount: i64,
}

#[utoipa::path(post, path = "/api/v1/coupon-policies", tag = "coupons", request_body = CreatePolicyBody,
    responses((status = 201, body = PolicyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_policy(
    State(api): State<Api>,
    w: Write<CreatePolicyBody>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    let b = w.body;
    let p = NewPolicy {
        name: b.name,
        description: b.description,
        discount_type: DiscountType::parse(&b.discount_type)?,
        discount_value: b.discount_value,
        min_order_amount: b.min_order_amount.unwrap_or(0),
        max_discount_amount: b.max_discount_amount,
        total_quantity: b.total_quantity,
        per_user_limit: b.per_user_limit.unwrap_or(1),
        valid_from: b.valid_from,
        valid_until: b.valid_until,
    };
    let policy = api.create_policy(&w.ctx, p).await?;
    Ok((StatusCode::CREATED, Json(policy.into())))
}

#[utoipa::path(get, path = "/api/v1/coupon-policies", tag = "coupons", params(PageQuery),
    responses((status = 200, body = PageView<PolicyView>)), security(("bearer" = [])))]
pub async fn list_policies(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<PageView<PolicyView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let res = api.list_policies(&read_ctx(p), page).await?;
    Ok(Json(PageView::from_page(res, PolicyView::from)))
}

#[utoipa::path(get, path = "/api/v1/coupon-policies/{id}", tag = "coupons",
    params(("id" = Uuid, Path)), responses((status = 200, body = PolicyView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(api.get_policy(&read_ctx(p), id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/coupon-policies/{id}", tag = "coupons", request_body = UpdatePolicyBody,
    params(("id" = Uuid, Path)), responses((status = 200, body = PolicyView), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_policy(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<UpdatePolicyBody>,
) -> Result<Json<PolicyView>, ApiError> {
    let b = w.body;
    let patch = PolicyPatch {
        name: b.name,
        description: b.description,
        total_quantity: b.total_quantity,
        valid_until: b.valid_until,
        active: b.active,
    };
    Ok(Json(api.update_policy(&w.ctx, id, patch).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/coupons/issue", tag = "coupons", request_body = IssueBody,
    responses((status = 201, body = CouponView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn issue(
    State(api): State<Api>,
    w: Write<IssueBody>,
) -> Result<(StatusCode, Json<CouponView>), ApiError> {
    let user = w.ctx.principal.acting_for(w.body.user_id)?;
    let c = api.issue(&w.ctx, w.body.policy_id, user).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

#[utoipa::path(post, path = "/api/v1/coupons/{id}/use", tag = "coupons", request_body = UseBody,
    params(("id" = Uuid, Path)), responses((status = 200, body = UseView), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn use_coupon(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<UseBody>,
) -> Result<Json<UseView>, ApiError> {
    let u = CouponUse {
        id,
        order_id: w.body.order_id,
        order_amount: w.body.order_amount,
    };
    let (c, d) = api.use_coupon(&w.ctx, u).await?;
    Ok(Json(UseView {
        coupon: c.into(),
        discount_amount: d,
    }))
}

#[utoipa::path(post, path = "/api/v1/coupons/{id}/reserve", tag = "coupons", request_body = ReserveBody,
    params(("id" = Uuid, Path)), responses((status = 200, body = UseView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reserve(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<ReserveBody>,
) -> Result<Json<UseView>, ApiError> {
    let r = CouponReserve {
        id,
        order_id: w.body.order_id,
        order_amount: w.body.order_amount,
        hold_seconds: w.body.hold_seconds,
    };
    let (c, d) = api.reserve(&w.ctx, r).await?;
    Ok(Json(UseView {
        coupon: c.into(),
        discount_amount: d,
    }))
}

#[utoipa::path(post, path = "/api/v1/coupons/{id}/cancel", tag = "coupons",
    params(("id" = Uuid, Path)), responses((status = 200, body = CouponView), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel_use(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<EmptyBody>,
) -> Result<Json<CouponView>, ApiError> {
    Ok(Json(api.cancel_use(&w.ctx, id).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/coupons/{id}", tag = "coupons",
    params(("id" = Uuid, Path)), responses((status = 200, body = CouponView), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_coupon(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<CouponView>, ApiError> {
    Ok(Json(api.get_coupon(&read_ctx(p), id).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/coupons", tag = "coupons", params(CouponListQuery),
    responses((status = 200, body = PageView<CouponView>)), security(("bearer" = [])))]
pub async fn list_coupons(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<CouponListQuery>,
) -> Result<Json<PageView<CouponView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let status = q.status.as_deref().map(CouponStatus::parse).transpose()?;
    let user = p.acting_for(q.user_id)?;
    let q = CouponQuery {
        user_id: user,
        status,
        page,
    };
    let res = api.list_coupons(&read_ctx(p), q).await?;
    Ok(Json(PageView::from_page(res, CouponView::from)))
}
