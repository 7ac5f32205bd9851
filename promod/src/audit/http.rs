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
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
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

/// One admin write: who, what, when, and the thing before and after.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// Null for an operator outside the API (promoctl, the bootstrap admin).
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        AuditEntryView {
            id: e.id,
            at: e.at,
            actor_id: e.actor_id,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            request_id: e.request_id,
            before: e.before,
            after: e.after,
        }
    }
}

/// The audit log of every role, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditListQuery),
    responses((status = 200, body = PageView<AuditEntryView>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(logs): State<Logs>,
    Auth(p): Auth,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<PageView<AuditEntryView>>, ApiError> {
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
    Ok(Json(PageView::from_page(page, AuditEntryView::from)))
}
