//! The audit log of admin writes: what an entry is, the actions it names,
//! the query an admin asks, and how the pages of several logs (one per
//! role's database) merge into the one page the contract answers.

use crate::page::{Page, PageRequest};
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The actions recorded, one per kind of admin write.
pub mod action {
    pub const POLICY_CREATED: &str = "coupon_policy.created";
    pub const POLICY_UPDATED: &str = "coupon_policy.updated";
    pub const CODES_GENERATED: &str = "coupon_policy.codes_generated";
    pub const PRODUCT_CREATED: &str = "product.created";
    pub const SALE_CREATED: &str = "time_sale.created";
    pub const SALE_UPDATED: &str = "time_sale.updated";
    pub const POINTS_EARNED: &str = "point.earned";
    pub const POINTS_CANCELLED: &str = "point.cancelled";
    /// An admin's cancel of a user's coupon (its use or its reservation).
    pub const COUPON_CANCELLED: &str = "coupon.cancelled";
    /// An admin's confirm or cancel of a user's order.
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ROLE_CHANGED: &str = "user.role_changed";
}

/// What an entry is about.
pub mod target {
    pub const POLICY: &str = "coupon_policy";
    pub const PRODUCT: &str = "product";
    pub const SALE: &str = "time_sale";
    pub const COUPON: &str = "coupon";
    pub const ORDER: &str = "order";
    /// Point earns and cancels name the user whose balance they change.
    pub const USER: &str = "user";
}

/// The deepest entry a page may reach (`page * size`): every role's log
/// answers that many entries for the merge, so the bound keeps one request's
/// work bounded. Deeper history is reached by narrowing `since`/`until`.
pub const MAX_DEPTH: u32 = 10_000;

/// One admin write, as recorded in the transaction that made it, and as
/// `GET /audit` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The admin who acted; none for an operator outside the API (promoctl,
    /// the configured bootstrap admin, a migration's backfill).
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

impl AuditEntry {
    /// Newest first; the id (a UUIDv7) breaks ties of one instant.
    fn newer_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id))
    }
}

/// The entry of a user made admin. Roles change outside the API (promoctl,
/// the configured bootstrap admin), so there is no actor and no request.
pub fn role_change(user: Uuid, before: Option<&str>, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        at,
        actor_id: None,
        action: action::ROLE_CHANGED.into(),
        target_type: target::USER.into(),
        target_id: user.to_string(),
        request_id: None,
        before: before.map(|r| serde_json::json!({ "role": r })),
        after: Some(serde_json::json!({ "role": "admin" })),
    }
}

/// An admin's search of the audit log; every filter optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub target_id: Option<String>,
    /// Entries at or after.
    pub since: Option<DateTime<Utc>>,
    /// Entries before.
    pub until: Option<DateTime<Utc>>,
    pub page: PageRequest,
}

impl AuditQuery {
    pub fn validate(&self) -> DomainResult<()> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s > u {
                return Err(DomainError::validation(
                    "until",
                    "until must not be before since",
                ));
            }
        }
        for (field, v) in [("action", &self.action), ("target_id", &self.target_id)] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 200) {
                return Err(DomainError::validation(
                    field,
                    format!("{field} must be 1 to 200 characters"),
                ));
            }
        }
        if self.depth() > MAX_DEPTH as i64 {
            return Err(DomainError::validation(
                "page",
                format!("page * size may not exceed {MAX_DEPTH}; narrow the search with since and until"),
            ));
        }
        Ok(())
    }

    /// How many of its newest matching entries each log must answer for
    /// this page to be exact after the merge.
    pub fn depth(&self) -> i64 {
        self.page.page as i64 * self.page.size as i64
    }
}

/// The newest `depth` matching entries of one log, and how many match there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    pub entries: Vec<AuditEntry>,
    pub total: i64,
}

/// The page of the union of the logs: each head holds its log's newest
/// `q.depth()` matches, so the union's first `depth` in order are among them.
pub fn merge(heads: Vec<Head>, q: PageRequest) -> Page<AuditEntry> {
    let total = heads.iter().map(|h| h.total).sum();
    let mut all: Vec<AuditEntry> = heads.into_iter().flat_map(|h| h.entries).collect();
    all.sort_by(AuditEntry::newer_first);
    let items = all
        .into_iter()
        .skip(q.offset() as usize)
        .take(q.limit() as usize)
        .collect();
    Page::new(items, q, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(secs: i64, n: u128) -> AuditEntry {
        AuditEntry {
            id: Uuid::from_u128(n),
            at: DateTime::from_timestamp(secs, 0).unwrap(),
            actor_id: None,
            action: action::POLICY_CREATED.into(),
            target_type: target::POLICY.into(),
            target_id: n.to_string(),
            request_id: None,
            before: None,
            after: None,
        }
    }

    /// What one log answers: its matches newest first, cut at `depth`.
    fn head(mut log: Vec<AuditEntry>, depth: i64) -> Head {
        log.sort_by(AuditEntry::newer_first);
        let total = log.len() as i64;
        log.truncate(depth as usize);
        Head {
            entries: log,
            total,
        }
    }

    proptest! {
        /// Merging the cut heads gives exactly the page of one sorted union.
        #[test]
        fn merged_page_is_the_page_of_the_union(
            logs in prop::collection::vec(prop::collection::vec(0i64..50, 0..40), 1..5),
            page in 1u32..6, size in 1u32..12,
        ) {
            let mut n = 0u128;
            let logs: Vec<Vec<AuditEntry>> = logs.into_iter().map(|l| {
                l.into_iter().map(|s| { n += 1; entry(s, n) }).collect()
            }).collect();
            let req = PageRequest { page, size };
            let q = AuditQuery { page: req, ..AuditQuery::default() };
            let mut union: Vec<AuditEntry> = logs.iter().flatten().cloned().collect();
            union.sort_by(AuditEntry::newer_first);
            let want: Vec<_> = union.iter().skip(req.offset() as usize).take(size as usize).cloned().collect();
            let heads = logs.into_iter().map(|l| head(l, q.depth())).collect();
            let got = merge(heads, req);
            prop_assert_eq!(got.total, union.len() as i64);
            prop_assert_eq!(got.items, want);
        }
    }

    #[test]
    fn a_page_too_deep_or_a_reversed_window_is_refused_naming_its_field() {
        let deep = AuditQuery {
            page: PageRequest {
                page: 101,
                size: 100,
            },
            ..AuditQuery::default()
        };
        assert_eq!(deep.validate().unwrap_err().field(), Some("page"));
        let edge = AuditQuery {
            page: PageRequest {
                page: 100,
                size: 100,
            },
            ..AuditQuery::default()
        };
        assert!(edge.validate().is_ok());
        let reversed = AuditQuery {
            since: DateTime::from_timestamp(10, 0),
            until: DateTime::from_timestamp(5, 0),
            ..AuditQuery::default()
        };
        assert_eq!(reversed.validate().unwrap_err().field(), Some("until"));
        let empty = AuditQuery {
            action: Some(String::new()),
            ..AuditQuery::default()
        };
        assert_eq!(empty.validate().unwrap_err().field(), Some("action"));
    }
}
