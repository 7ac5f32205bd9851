//! REST routes of the point API (API.md), served by the gateway and by the
//! point role's own port over any [`PointApi`].

use super::PointApi;
use crate::ctx::read_ctx;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Auth, EmptyBody, PageView, PathId, Query, Write};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use promo_domain::page::PageRequest;
use promo_domain::point::hold::{NewHold, PointHold};
use promo_domain::point::lot::{Expiring, Lot, LotQuery};
use promo_domain::point::{Balance, PointChange, Transaction, TxType};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

type Api = Arc<dyn PointApi>;

pub fn routes(api: Api) -> Router {
    let admin = axum::middleware::from_fn(crate::http::require_admin);
    Router::new()
        .route("/api/v1/points/earn", post(earn).route_layer(admin))
        .route("/api/v1/points/use", post(use_points))
        .route("/api/v1/points/transactions/{id}/cancel", post(cancel))
        .route("/api/v1/points/balance", get(balance))
        .route("/api/v1/points/history", get(history))
        .route("/api/v1/points/lots", get(lots))
        .route("/api/v1/points/holds", post(create_hold))
        .route("/api/v1/points/holds/{id}", get(get_hold))
        .route("/api/v1/points/holds/{id}/capture", post(capture_hold))
        .route("/api/v1/points/holds/{id}/void", post(void_hold))
        .with_state(api)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EarnBody {
    pub user_id: Uuid,
    pub amount: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// When the lot expires (in the future); without it, after the
    /// configured default lifetime (`point.lots.default_lifetime_days`).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UseBody {
    pub amount: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// Admins only: use this user's points.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// EARN, USE, CANCEL or EXPIRE
    #[serde(rename = "type")]
    pub tx_type: String,
    /// The magnitude, as requested.
    pub amount: i64,
    /// The signed effect on the balance.
    pub delta: i64,
    pub balance_after: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub cancelled_transaction_id: Option<Uuid>,
    /// The hold this USE captured.
    pub hold_id: Option<Uuid>,
    /// The lot this EXPIRE expired.
    pub lot_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<Transaction> for TransactionView {
    fn from(t: Transaction) -> Self {
        TransactionView {
            id: t.id,
            user_id: t.user_id,
            tx_type: t.tx_type.as_str().to_owned(),
            amount: t.amount,
            delta: t.delta,
            balance_after: t.balance_after,
            reference: t.reference,
            description: t.description,
            cancelled_transaction_id: t.cancelled_transaction_id,
            hold_id: t.hold_id,
            lot_id: t.lot_id,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    pub user_id: Uuid,
    pub balance: i64,
    /// What a use or a new hold may spend: the balance less pending holds.
    pub available: i64,
    /// The sum of pending holds.
    pub held: i64,
    /// The remainders of the next five lots to expire, soonest first.
    pub expiring: Vec<ExpiringView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExpiringView {
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
}

impl From<Balance> for BalanceView {
    fn from(b: Balance) -> Self {
        BalanceView {
            user_id: b.user_id,
            balance: b.balance,
            available: b.available(),
            held: b.held,
            expiring: b.expiring.into_iter().map(ExpiringView::from).collect(),
        }
    }
}

impl From<Expiring> for ExpiringView {
    fn from(e: Expiring) -> Self {
        ExpiringView {
            amount: e.amount,
            expires_at: e.expires_at,
        }
    }
}

/// A live lot (API.md "Point lots and expiry").
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LotView {
    pub id: Uuid,
    /// The EARN that made it; null for a lot carried over from a balance
    /// older than lots.
    pub earn_transaction_id: Option<Uuid>,
    pub amount: i64,
    /// What is left to spend (or to expire).
    pub remaining: i64,
    /// Null: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub earned_at: DateTime<Utc>,
}

impl From<Lot> for LotView {
    fn from(l: Lot) -> Self {
        LotView {
            id: l.id,
            earn_transaction_id: l.earn_transaction_id,
            amount: l.amount,
            remaining: l.remaining,
            expires_at: l.expires_at,
            earned_at: l.earned_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HoldBody {
    /// Points to reserve (> 0), at most what is available.
    pub amount: i64,
    pub reference: Option<String>,
    /// 1..=86400; the configured default (`holds.default_seconds`) without it.
    pub hold_seconds: Option<i64>,
    /// Admins only: hold this user's points.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CaptureBody {
    /// 1..=the held amount; without it, all of it.
    pub amount: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    /// PENDING, CAPTURED, VOIDED or EXPIRED
    pub status: String,
    pub reference: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was captured, voided or expired.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What a capture spent; the rest was released.
    pub captured_amount: Option<i64>,
    /// The USE transaction of a capture.
    pub transaction_id: Option<Uuid>,
}

impl From<PointHold> for HoldView {
    fn from(h: PointHold) -> Self {
        HoldView {
            id: h.id,
            user_id: h.user_id,
            amount: h.amount,
            status: h.status.as_str().to_owned(),
            reference: h.reference,
            expires_at: h.expires_at,
            created_at: h.created_at,
            resolved_at: h.resolved_at,
            captured_amount: h.captured_amount,
            transaction_id: h.transaction_id,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BalanceQuery {
    /// Admins only.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LotsQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// Admins only.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// EARN, USE or CANCEL
    #[serde(rename = "type")]
    pub tx_type: Option<String>,
    /// Admins only.
    pub user_id: Option<Uuid>,
}

type Created = Result<(StatusCode, Json<TransactionView>), ApiError>;

#[utoipa::path(post, path = "/api/v1/points/earn", tag = "points", request_body = EarnBody,
    responses((status = 201, body = TransactionView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn earn(State(api): State<Api>, w: Write<EarnBody>) -> Created {
    let b = w.body;
    let change = PointChange {
        user_id: b.user_id,
        amount: b.amount,
        reference: b.reference,
        description: b.description,
    };
    let t = api.earn(&w.ctx, change, b.expires_at).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(post, path = "/api/v1/points/use", tag = "points", request_body = UseBody,
    responses((status = 201, body = TransactionView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn use_points(State(api): State<Api>, w: Write<UseBody>) -> Created {
    let b = w.body;
    let change = PointChange {
        user_id: w.ctx.principal.acting_for(b.user_id)?,
        amount: b.amount,
        reference: b.reference,
        description: b.description,
    };
    let t = api.use_points(&w.ctx, change).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(post, path = "/api/v1/points/transactions/{id}/cancel", tag = "points",
    params(("id" = Uuid, Path)),
    responses((status = 201, body = TransactionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(State(api): State<Api>, PathId(id): PathId, w: Write<EmptyBody>) -> Created {
    let t = api.cancel(&w.ctx, id).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(get, path = "/api/v1/points/balance", tag = "points", params(BalanceQuery),
    responses((status = 200, body = BalanceView), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn balance(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<BalanceQuery>,
) -> Result<Json<BalanceView>, ApiError> {
    let user = p.acting_for(q.user_id)?;
    Ok(Json(api.balance(&read_ctx(p), user).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/points/history", tag = "points", params(HistoryQuery),
    responses((status = 200, body = PageView<TransactionView>)), security(("bearer" = [])))]
pub async fn history(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<PageView<TransactionView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let kind = q.tx_type.as_deref().map(TxType::parse).transpose()?;
    let user = p.acting_for(q.user_id)?;
    let q = promo_domain::point::HistoryQuery {
        user_id: user,
        kind,
        page,
    };
    let res = api.history(&read_ctx(p), q).await?;
    Ok(Json(PageView::from_page(res, TransactionView::from)))
}

#[utoipa::path(get, path = "/api/v1/points/lots", tag = "points", params(LotsQuery),
    responses((status = 200, body = PageView<LotView>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lots(
    State(api): State<Api>,
    Auth(p): Auth,
    Query(q): Query<LotsQuery>,
) -> Result<Json<PageView<LotView>>, ApiError> {
    let page = PageRequest::parse(q.page, q.size)?;
    let user_id = p.acting_for(q.user_id)?;
    let res = api.lots(&read_ctx(p), LotQuery { user_id, page }).await?;
    Ok(Json(PageView::from_page(res, LotView::from)))
}

#[utoipa::path(post, path = "/api/v1/points/holds", tag = "points", request_body = HoldBody,
    responses((status = 201, body = HoldView), (status = 400, body = ErrorBody),
        (status = 409, description = "INSUFFICIENT_BALANCE: more than is available", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_hold(
    State(api): State<Api>,
    w: Write<HoldBody>,
) -> Result<(StatusCode, Json<HoldView>), ApiError> {
    let b = w.body;
    let ask = NewHold {
        user_id: w.ctx.principal.acting_for(b.user_id)?,
        amount: b.amount,
        reference: b.reference,
        hold_seconds: b.hold_seconds,
    };
    let h = api.create_hold(&w.ctx, ask).await?;
    Ok((StatusCode::CREATED, Json(h.into())))
}

#[utoipa::path(post, path = "/api/v1/points/holds/{id}/capture", tag = "points",
    params(("id" = Uuid, Path)), request_body = CaptureBody,
    responses((status = 201, description = "the USE transaction, with hold_id", body = TransactionView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "HOLD_EXPIRED or ALREADY_RESOLVED", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn capture_hold(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<CaptureBody>,
) -> Created {
    let t = api.capture_hold(&w.ctx, id, w.body.amount).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(post, path = "/api/v1/points/holds/{id}/void", tag = "points",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HoldView), (status = 404, body = ErrorBody),
        (status = 409, description = "HOLD_EXPIRED or ALREADY_RESOLVED", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn void_hold(
    State(api): State<Api>,
    PathId(id): PathId,
    w: Write<EmptyBody>,
) -> Result<Json<HoldView>, ApiError> {
    Ok(Json(api.void_hold(&w.ctx, id).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/points/holds/{id}", tag = "points",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HoldView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_hold(
    State(api): State<Api>,
    Auth(p): Auth,
    PathId(id): PathId,
) -> Result<Json<HoldView>, ApiError> {
    Ok(Json(api.get_hold(&read_ctx(p), id).await?.into()))
}
