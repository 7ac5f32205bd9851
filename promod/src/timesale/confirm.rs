//! Group commit of hold confirmations: a checkout confirms most of its holds,
//! so confirms are stored many per transaction, as orders are. A batch locks
//! its orders in id order (`FOR UPDATE`: a cancel of one of them waits, two
//! batches never deadlock, the sweeper skips them), decides each member by
//! the same rules as a single confirm (`Order::check_confirmable`, the
//! owner), in submission order, so that of two confirms of one order in a
//! batch the first wins and the second is `ALREADY_RESOLVED`, then updates
//! the winners, records their keys and appends their events.

use super::store::{OrderRow, ORDER_COLUMNS};
use crate::batcher::{BatchStore, InsertOutcome};
use crate::idempotency::{claim_keys, IdemKey};
use crate::outbox::{self, Event};
use chrono::{DateTime, Utc};
use promo_domain::principal::Principal;
use promo_domain::timesale::{Order, OrderStatus};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{StoreError, StoreResult};
use promo_store::topics;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One confirm waiting for the group commit.
pub struct Confirm {
    pub order: Uuid,
    pub principal: Principal,
    pub idem: Option<IdemKey>,
    pub now: DateTime<Utc>,
}

pub struct Confirms;

impl BatchStore for Confirms {
    type Item = Confirm;
    type Stored = Order;
    const NAME: &'static str = "order confirm";

    async fn insert_batch(
        pool: &PgPool,
        batch: &[Confirm],
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
            let confirmed: Vec<&Order> = winners.iter().map(|(_, o)| *o).collect();
            apply(&mut tx, &confirmed).await?;
            tx.commit().await?;
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
    batch: &[Confirm],
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
    batch: &[Confirm],
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
            match confirm_one(now_state.get(&m.order), m) {
                Ok(o) => {
                    now_state.insert(o.id, o.clone());
                    InsertOutcome::Stored(o)
                }
                Err(e) => InsertOutcome::Refused(e),
            }
        })
        .collect()
}

/// A single confirm's rules on the order as the batch sees it so far.
fn confirm_one(order: Option<&Order>, m: &Confirm) -> DomainResult<Order> {
    let o = order.ok_or_else(|| DomainError::NotFound("order".into()))?;
    m.principal.require_owner(o.user_id)?;
    o.check_confirmable(m.now)?;
    Ok(Order {
        status: OrderStatus::Confirmed,
        resolved_at: Some(m.now),
        ..o.clone()
    })
}

fn stored(o: &InsertOutcome<Order>) -> Option<&Order> {
    match o {
        InsertOutcome::Stored(o) => Some(o),
        _ => None,
    }
}

/// The winners' rows and events.
async fn apply(tx: &mut Transaction<'_, Postgres>, orders: &[&Order]) -> StoreResult<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let at: Vec<Option<DateTime<Utc>>> = orders.iter().map(|o| o.resolved_at).collect();
    sqlx::query(
        "UPDATE time_sale_orders o SET status = 'CONFIRMED', resolved_at = t.at
         FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, at)
         WHERE o.id = t.id AND o.status = 'PENDING'",
    )
    .bind(&ids)
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    let events = orders
        .iter()
        .map(|o| {
            Event::of(
                topics::ORDER_CONFIRMED,
                o.id,
                Some(o.user_id),
                o.resolved_at.unwrap_or_default(),
                *o,
            )
        })
        .collect::<StoreResult<Vec<_>>>()?;
    outbox::append(tx, &events).await
}
