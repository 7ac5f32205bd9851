//! `GET /audit`: an admin's search of every role's audit log at once, the
//! heads of each merged into one page (`promo_domain::audit::merge`).

use super::AuditApi;
use crate::ctx::read_ctx;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Auth, PageView, Query};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use promo_domain::audit::{self, AuditEntry, AuditQuery};
use promo_domain::page::PageRequest;
use promo_domain::DomainError;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use uuid::Uuid;

/// Every audit log the gateway searches, by the role that keeps it: its
/// own and each service role's.
pub type Logs = Arc<Vec<(&'static str, Arc<dyn AuditApi>)>>;

pub fn routes(logs: Logs) -> Router {
    Router::new()
        .route(
            "/api/v1/audit",
            get(list).route_layer(axum::middleware::from_fn(crate::http::require_admin)),
        )
        .with_state(logs)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditListQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
    /// Only what this admin did.
    pub actor_id: Option<Uuid>,
    /// Only this action, e.g. `coupon_policy.updated`.
    pub action: Option<String>,
    /// Only changes of this thing (a policy, product, sale or user id).
    pub target_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// The audit log of every role, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditListQuery),
    responses((status = 200, body = PageView<AuditEntry>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(logs): State<Logs>,
    Auth(p): Auth,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<PageView<AuditEntry>>, ApiError> {
    let q = AuditQuery {
        actor_id: q.actor_id,
        action: q.action,
        target_id: q.target_id,
        since: q.since,
        until: q.until,
        page: PageRequest::parse(q.page, q.size)?,
    };
    q.validate()?;
    let ctx = read_ctx(p);
    // Every log or none: a page missing one role's entries would look
    // complete and be wrong. A role that does not answer is named.
    let (ctx, q) = (&ctx, &q);
    let heads = logs.iter().map(|(role, log)| async move {
        log.head(ctx, q.clone()).await.map_err(|e| match e {
            DomainError::Unavailable(m) => {
                DomainError::Unavailable(format!("{role} audit log: {m}"))
            }
            DomainError::CircuitOpen(m) => {
                DomainError::CircuitOpen(format!("{role} audit log: {m}"))
            }
            e => e,
        })
    });
    let heads = futures::future::try_join_all(heads).await?;
    let page = audit::merge(heads, q.page);
    Ok(Json(PageView::from_page(page, |e| e)))
}
