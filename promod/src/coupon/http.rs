//! REST routes of the coupon API (API.md), served by the gateway and by the
//! coupon role's own port over any [`CouponApi`].

use super::CouponApi;
use crate::ctx::read_ctx;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Auth, EmptyBody, PageQuery, PageView, PathId, Query, Write};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use promo_domain::code::{Code, CodeBatch, CodeMode, CodeQuery, CodeStatus, NewCodes, Redeem};
use promo_domain::coupon::{
    Coupon, CouponQuery, CouponReserve, CouponStatus, CouponUse, DiscountType, NewPolicy, Policy,
    PolicyPatch,
};
use promo_domain::page::PageRequest;
use promo_domain::DomainError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

type Api = Arc<dyn CouponApi>;

/// Every coupon route. Redemption is behind the limit on failed
/// redemptions (`code_guard`), whose guard each port's router provides as a
/// request extension.
pub fn routes(api: Api) -> Router {
    let admin = || axum::middleware::from_fn(crate::http::require_admin);
    Router::new()
        .route(
            "/api/v1/coupons/redeem",
            post(redeem).route_layer(axum::middleware::from_fn(crate::code_guard::guard)),
        )
        .route(
            "/api/v1/coupon-policies/{id}/codes",
            post(generate_codes).get(list_codes).route_layer(admin()),
        )
        .route(
            "/api/v1/coupon-policies/{id}/codes/export",
            get(export_codes).route_layer(admin()),
        )
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
    /// GENERATED (default), SHARED or BATCH
    pub code_mode: Option<String>,
    /// SHARED only: the public code, 4-32 characters of A-Z, 0-9 and -.
    pub shared_code: Option<String>,
    /// Whether its coupons may share an order with other stackable ones (default false).
    pub stackable: Option<bool>,
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
    /// GENERATED, SHARED or BATCH
    pub code_mode: String,
    pub shared_code: Option<String>,
    pub stackable: bool,
    /// BATCH codes generated so far.
    pub codes_generated: i64,
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
            code_mode: p.code_mode.as_str().to_owned(),
            shared_code: p.shared_code,
            stackable: p.stackable,
            codes_generated: p.codes_generated,
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
    /// What it takes off its order while USED or RESERVED, else null.
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
    /// Only this policy's coupons.
    pub policy_id: Option<Uuid>,
    /// Admins: this user's coupons; without it, every user's. Others may
    /// name only themselves and always get their own.
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
    /// Its discount for `order_amount`, cut to what the order's other
    /// coupons left of it (possibly 0).
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
        code_mode: b
            .code_mode
            .as_deref()
            .map(CodeMode::parse)
            .transpose()?
            .unwrap_or_default(),
        shared_code: b.shared_code,
        stackable: b.stackable.unwrap_or(false),
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
    params(("id" = Uuid, Path)), responses((status = 200, body = UseView),
        (status = 400, description = "order_amount out of range, under the minimum, or not the one the order's other coupons name", body = ErrorBody),
        (status = 409, description = "ALREADY_USED; NOT_STACKABLE when the order carries another coupon and either is not stackable; on a reserved coupon CONFLICT (another order), ALREADY_RESOLVED or HOLD_EXPIRED", body = ErrorBody),
        (status = 422, body = ErrorBody)),
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
    params(("id" = Uuid, Path)), responses((status = 200, body = UseView),
        (status = 400, description = "order_amount out of range, under the minimum, or not the one the order's other coupons name", body = ErrorBody),
        (status = 409, description = "ALREADY_USED if not AVAILABLE; NOT_STACKABLE when the order carries another coupon and either is not stackable", body = ErrorBody),
        (status = 422, body = ErrorBody)),
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

/// A page of coupons, newest first: the caller's own, or for an admin any
/// user's (`user_id`) or every user's (without it), filtered by policy and status.
#[utoipa::path(get, path = "/api/v1/coupons", tag = "coupons", params(CouponListQuery),
    responses((status = 200, body = PageView<CouponView>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_coupons(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<CouponListQuery>,
) -> Result<Json<PageView<CouponView>>, ApiError> {
    let q = CouponQuery {
        user_id: q.user_id,
        policy_id: q.policy_id,
        status: q.status.as_deref().map(CouponStatus::parse).transpose()?,
        page: PageRequest::parse(q.page, q.size)?,
    };
    let res = api.list_coupons(&read_ctx(p), q).await?;
    Ok(Json(PageView::from_page(res, CouponView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateCodesBody {
    /// 1..=1000000; with the codes generated so far, at most total_quantity.
    pub count: i64,
    /// Up to 10 characters of A-Z and 0-9, put before each code.
    pub prefix: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeBatchView {
    pub policy_id: Uuid,
    pub generated: i64,
    pub total_codes: i64,
}

impl From<CodeBatch> for CodeBatchView {
    fn from(b: CodeBatch) -> Self {
        CodeBatchView {
            policy_id: b.policy_id,
            generated: b.generated,
            total_codes: b.total_codes,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeView {
    pub code: String,
    /// UNREDEEMED or REDEEMED
    pub status: String,
    pub coupon_id: Option<Uuid>,
    pub redeemed_at: Option<DateTime<Utc>>,
}

impl From<Code> for CodeView {
    fn from(c: Code) -> Self {
        CodeView {
            code: c.code,
            status: c.status.as_str().to_owned(),
            coupon_id: c.coupon_id,
            redeemed_at: c.redeemed_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CodeListQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// UNREDEEMED or REDEEMED
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RedeemBody {
    /// Case-insensitive; hyphens and spaces are ignored.
    pub code: String,
    /// Admins only: redeem for this user.
    pub user_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/coupon-policies/{id}/codes", tag = "codes", request_body = GenerateCodesBody,
    params(("id" = Uuid, Path)),
    responses((status = 201, body = CodeBatchView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "not a BATCH policy", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn generate_codes(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<GenerateCodesBody>,
) -> Result<(StatusCode, Json<CodeBatchView>), ApiError> {
    let n = NewCodes {
        policy_id: id,
        count: w.body.count,
        prefix: w.body.prefix,
    };
    let batch = api.generate_codes(&w.ctx, n).await?;
    Ok((StatusCode::CREATED, Json(batch.into())))
}

#[utoipa::path(get, path = "/api/v1/coupon-policies/{id}/codes", tag = "codes",
    params(("id" = Uuid, Path), CodeListQuery),
    responses((status = 200, body = PageView<CodeView>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_codes(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
    Query(q): Query<CodeListQuery>,
) -> Result<Json<PageView<CodeView>>, ApiError> {
    let q = CodeQuery {
        policy_id: id,
        status: q.status.as_deref().map(CodeStatus::parse).transpose()?,
        page: PageRequest::parse(q.page, q.size)?,
    };
    let res = api.list_codes(&read_ctx(p), q).await?;
    Ok(Json(PageView::from_page(res, CodeView::from)))
}

#[utoipa::path(get, path = "/api/v1/coupon-policies/{id}/codes/export", tag = "codes",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "`code,status` then one line per code, streamed", content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export_codes(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    use futures::TryStreamExt;
    let csv = api.export_codes(&read_ctx(p), id).await?;
    // An error mid-stream cuts the body short: the client sees a truncated
    // transfer, never a partial file that looks complete.
    let body = Body::from_stream(csv.map_err(|e| std::io::Error::other(e.to_string())));
    let disposition = format!("attachment; filename=\"codes-{id}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Whether a redemption's refusal is what guessing would produce.
fn is_guess(e: &DomainError) -> bool {
    match e {
        DomainError::Validation { field, .. } => field == "code",
        DomainError::NotFound(_) | DomainError::AlreadyRedeemed => true,
        _ => false,
    }
}

#[utoipa::path(post, path = "/api/v1/coupons/redeem", tag = "codes", request_body = RedeemBody,
    responses((status = 201, body = CouponView), (status = 400, description = "malformed or mistyped code", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "ALREADY_REDEEMED, SOLD_OUT, LIMIT_EXCEEDED, or CONFLICT for a GENERATED policy", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, description = "too many failed redemptions", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn redeem(State(api): State<Api>, w: Write<RedeemBody>) -> Response {
    let run = async {
        let r = Redeem {
            user_id: w.ctx.principal.acting_for(w.body.user_id)?,
            code: w.body.code.clone(),
        };
        api.redeem(&w.ctx, r).await
    };
    match run.await {
        Ok(c) => (StatusCode::CREATED, Json(CouponView::from(c))).into_response(),
        Err(e) => {
            let guess = is_guess(&e);
            let mut resp = ApiError(e).into_response();
            if guess {
                resp.extensions_mut()
                    .insert(crate::code_guard::FailedRedemption);
            }
            resp
        }
    }
}
