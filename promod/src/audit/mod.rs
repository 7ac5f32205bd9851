//! The audit log of admin writes. Each admin write records a [`Change`] in
//! the transaction of the change itself (`transact::Write::audit`, or the
//! point batch's own statement), so an entry exists exactly when its change
//! committed. Each role's database answers the newest matches of a search
//! ([`AuditLog`], the [`AuditApi`] in process; `grpc` the same over the
//! wire) and the gateway merges them into one page (`http`).

pub mod grpc;
pub mod http;

use crate::ctx::Ctx;
use crate::db::{page_of, Arg, Filter, Listing};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promo_domain::audit::{AuditEntry, AuditQuery, Head};
use promo_domain::page::PageRequest;
use promo_domain::DomainResult;
use promo_store::error::{to_json, StoreResult};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What an admin write changed, before it becomes an entry.
#[derive(Debug, Clone)]
pub struct Change {
    action: &'static str,
    target_type: &'static str,
    target_id: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

impl Change {
    pub fn new(action: &'static str, target_type: &'static str, target: impl ToString) -> Self {
        Change {
            action,
            target_type,
            target_id: target.to_string(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, v: &impl Serialize) -> StoreResult<Self> {
        self.before = Some(to_json("audit before", v)?);
        Ok(self)
    }

    pub fn after(mut self, v: &impl Serialize) -> StoreResult<Self> {
        self.after = Some(to_json("audit after", v)?);
        Ok(self)
    }

    /// The entry of this change, made by `actor` at `at`, under the
    /// request id of the task it is called in.
    pub fn entry(self, actor: Option<Uuid>, at: DateTime<Utc>) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            at,
            actor_id: actor,
            action: self.action.to_owned(),
            target_type: self.target_type.to_owned(),
            target_id: self.target_id,
            request_id: crate::request_id::current(),
            before: self.before,
            after: self.after,
        }
    }
}

pub use promo_store::audit::insert;

/// One role's part of an admin's audit search.
#[async_trait]
pub trait AuditApi: Send + Sync + 'static {
    /// The newest `q.depth()` entries matching `q`, and how many match.
    async fn head(&self, ctx: &Ctx, q: AuditQuery) -> DomainResult<Head>;
}

/// A role's audit log in its own database.
#[derive(Clone)]
pub struct AuditLog {
    pool: PgPool,
}

impl AuditLog {
    pub fn new(pool: PgPool) -> Self {
        AuditLog { pool }
    }
}

type Row = (
    Uuid,
    DateTime<Utc>,
    Option<Uuid>,
    String,
    String,
    String,
    Option<String>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

#[async_trait]
impl AuditApi for AuditLog {
    async fn head(&self, ctx: &Ctx, q: AuditQuery) -> DomainResult<Head> {
        ctx.principal.require_admin()?;
        q.validate()?;
        let mut f = Filter::default().id("actor_id", q.actor_id);
        for (cond, v) in [("action = $", &q.action), ("target_id = $", &q.target_id)] {
            if let Some(v) = v {
                f = f.bind(cond, Arg::Text(v.clone()));
            }
        }
        for (cond, t) in [("at >= $", q.since), ("at < $", q.until)] {
            if let Some(t) = t {
                f = f.bind(cond, Arg::Time(t));
            }
        }
        let from = f.from("audit_log");
        let listing = Listing {
            columns: "id, at, actor_id, action, target_type, target_id, request_id, before, after",
            from: &from,
            order_by: "at DESC, id DESC",
        };
        // `depth` is bounded by `MAX_DEPTH`, checked above.
        let head = PageRequest {
            page: 1,
            size: q.depth() as u32,
        };
        let page = page_of(&self.pool, listing, f.args(), head, |r: Row| {
            Ok(AuditEntry {
                id: r.0,
                at: r.1,
                actor_id: r.2,
                action: r.3,
                target_type: r.4,
                target_id: r.5,
                request_id: r.6,
                before: r.7,
                after: r.8,
            })
        })
        .await?;
        Ok(Head {
            entries: page.items,
            total: page.total,
        })
    }
}
