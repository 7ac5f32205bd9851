//! Group commit of order confirms and cancels: a checkout confirms or
//! cancels most of its holds, so these are stored many per transaction, as
//! orders are, and the hot sale row is locked once per batch, not once per
//! cancel. A batch locks its orders in id order (`FOR UPDATE`: two batches
//! never deadlock, the sweeper skips them), decides each member by the
//! rules of a single confirm or cancel (`Order::check_confirmable`,
//! `check_cancellable`, the owner) in submission order, as if one after
//! another (of two confirms of one order the first wins, the second is
//! `ALREADY_RESOLVED`), journals the cancelled units' releases, updates the
//! orders and then the counters (the group commit's lock order), records
//! the winners' keys, appends their events, commits within the deadline and
//! settles the releases.

use super::store::{untake, OrderRow, ORDER_COLUMNS};
use crate::batcher::{BatchStore, InsertOutcome};
use crate::idempotency::{claim_keys, IdemKey};
use crate::outbox::{self, Event};
use crate::reserve::Releases;
use chrono::{DateTime, Utc};
use promo_domain::audit::AuditEntry;
use promo_domain::principal::Principal;
use promo_domain::timesale::{Order, OrderStatus};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{to_json, StoreError, StoreResult};
use promo_store::stock::{Kind, StockPort};
use promo_store::topics;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Confirm,
    Cancel,
}

/// One confirm or cancel waiting for the group commit.
pub struct Resolve {
    pub order: Uuid,
    pub action: Action,
    pub principal: Principal,
    pub idem: Option<IdemKey>,
    /// An admin's confirm or cancel: its audit entry, made in the request's
    /// task, given the order as `after` if it wins.
    pub audit: Option<AuditEntry>,
    pub now: DateTime<Utc>,
    /// Where a cancelled order's units go back.
    pub stock: Arc<dyn StockPort>,
}

pub struct Resolutions;

impl BatchStore for Resolutions {
    type Item = Resolve;
    type Stored = Order;
    const NAME: &'static str = "order resolution";

    async fn insert_batch(
        pool: &PgPool,
        batch: &[Resolve],
    ) -> StoreResult<Vec<InsertOutcome<Order>>> {
        // A winner whose key another request already used is not applied:
        // the batch is decided again without it, in a new transaction (the
        // dropped one rolls back its claims). Each round skips one more
        // member, so this ends.
        let mut skipped = HashSet::new();
        loop {
            let mut tx = pool.begin().await?;
            let current = lock(&mut tx, batch).await?;
            let outcomes = decide(batch, &current, &skipped);
            let winners: Vec<(usize, &Order)> = outcomes
                .iter()
                .enumerate()
                .filter_map(|(i, o)| stored(o).map(|o| (i, o)))
                .collect();
            let (claims, _) = claim_keys(&mut tx, &winners, |(i, o)| {
                (batch[*i].principal.user_id, batch[*i].idem.as_ref(), *o)
            })
            .await?;
            let before = skipped.len();
            for ((i, _), c) in winners.iter().zip(&claims) {
                if *c == InsertOutcome::Duplicate {
                    skipped.insert(*i);
                }
            }
            if skipped.len() > before {
                continue;
            }
            // A failure here (Redis down, the deadline passed) rolls back
            // the batch and answers every member with it; releases already
            // journaled are dropped by the reconciler, their rows unchanged.
            let releases = match apply(&mut tx, batch, &winners).await {
                Ok(r) => r,
                Err(e) => return Ok(refuse_all(batch.len(), e)),
            };
            if let Some(Err(e)) = releases.as_ref().map(Releases::check_deadline) {
                return Ok(refuse_all(batch.len(), e));
            }
            tx.commit().await?;
            if let Some(r) = releases {
                r.settle().await;
            }
            return Ok(outcomes);
        }
    }

    fn refusal_of(_: &StoreError) -> Option<DomainError> {
        None
    }
}

/// The batch's orders, locked in id order.
async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Resolve],
) -> StoreResult<HashMap<Uuid, Order>> {
    let mut ids: Vec<Uuid> = batch.iter().map(|m| m.order).collect();
    ids.sort();
    ids.dedup();
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM time_sale_orders WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|r| {
            let o = Order::try_from(r).map_err(|e| StoreError::Invariant(e.to_string()))?;
            Ok((o.id, o))
        })
        .collect()
}

/// Each member's outcome, in submission order, as if one after another.
fn decide(
    batch: &[Resolve],
    current: &HashMap<Uuid, Order>,
    skipped: &HashSet<usize>,
) -> Vec<InsertOutcome<Order>> {
    let mut now_state = current.clone();
    batch
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if skipped.contains(&i) {
                return InsertOutcome::Duplicate;
            }
            match resolve_one(now_state.get(&m.order), m) {
                Ok(o) => {
                    now_state.insert(o.id, o.clone());
                    InsertOutcome::Stored(o)
                }
                Err(e) => InsertOutcome::Refused(e),
            }
        })
        .collect()
}

/// A single confirm's or cancel's rules on the order as the batch sees it
/// so far.
fn resolve_one(order: Option<&Order>, m: &Resolve) -> DomainResult<Order> {
    let o = order.ok_or_else(|| DomainError::NotFound("order".into()))?;
    m.principal.require_owner(o.user_id)?;
    match m.action {
        Action::Confirm => {
            o.check_confirmable(m.now)?;
            Ok(Order {
                status: OrderStatus::Confirmed,
                resolved_at: Some(m.now),
                ..o.clone()
            })
        }
        Action::Cancel => {
            o.check_cancellable(m.now)?;
            // A hold keeps when it was resolved (by its confirm, or now).
            let resolved_at = o.expires_at.map(|_| o.resolved_at.unwrap_or(m.now));
            Ok(Order {
                status: OrderStatus::Cancelled,
                cancelled_at: Some(m.now),
                resolved_at,
                ..o.clone()
            })
        }
    }
}

fn refuse_all(n: usize, e: DomainError) -> Vec<InsertOutcome<Order>> {
    vec![InsertOutcome::Refused(e); n]
}

fn stored(o: &InsertOutcome<Order>) -> Option<&Order> {
    match o {
        InsertOutcome::Stored(o) => Some(o),
        _ => None,
    }
}

/// The winners' rows, counters and events, in the group commit's lock
/// order (orders, then users' totals, then sales), the cancelled units'
/// releases journaled before the counters are locked.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Resolve],
    winners: &[(usize, &Order)],
) -> DomainResult<Option<Releases>> {
    if winners.is_empty() {
        return Ok(None);
    }
    // Each order's state after the batch: its last winner's.
    let mut last: HashMap<Uuid, &Order> = HashMap::new();
    for (_, o) in winners {
        last.insert(o.id, o);
    }
    let finals: Vec<&Order> = last.into_values().collect();
    update(tx, &finals).await?;
    let cancelled: Vec<Order> = winners
        .iter()
        .filter(|(i, _)| batch[*i].action == Action::Cancel)
        .map(|(_, o)| (*o).clone())
        .collect();
    let releases = match cancelled.is_empty() {
        true => None,
        false => {
            let units = cancelled
                .iter()
                .map(|o| (o.time_sale_id, o.id, o.user_id, o.quantity));
            let r = Releases::journal(batch[0].stock.clone(), Kind::Sale, units).await?;
            untake(tx, &cancelled).await?;
            Some(r)
        }
    };
    let events = winners
        .iter()
        .map(|(i, o)| {
            let topic = match batch[*i].action {
                Action::Confirm => topics::ORDER_CONFIRMED,
                Action::Cancel => topics::ORDER_CANCELLED,
            };
            Event::of(topic, o.id, Some(o.user_id), batch[*i].now, *o)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    outbox::append(tx, &events).await?;
    let mut audited = Vec::new();
    for (i, o) in winners {
        if let Some(e) = &batch[*i].audit {
            let after = Some(to_json("audit after", *o)?);
            audited.push(AuditEntry { after, ..e.clone() });
        }
    }
    crate::audit::insert(tx, &audited).await?;
    Ok(releases)
}

async fn update(tx: &mut Transaction<'_, Postgres>, orders: &[&Order]) -> StoreResult<()> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let status: Vec<&str> = orders.iter().map(|o| o.status.as_str()).collect();
    let resolved: Vec<Option<DateTime<Utc>>> = orders.iter().map(|o| o.resolved_at).collect();
    let cancelled: Vec<Option<DateTime<Utc>>> = orders.iter().map(|o| o.cancelled_at).collect();
    sqlx::query(
        "UPDATE time_sale_orders o SET status = t.st, resolved_at = t.r, cancelled_at = t.c
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(id, st, r, c)
         WHERE o.id = t.id",
    )
    .bind(&ids)
    .bind(&status)
    .bind(&resolved)
    .bind(&cancelled)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
