//! Rebuilding the Redis counters of a coupon policy or a time sale from
//! PostgreSQL, the source of truth. One function per kind, called by promod
//! (at start-up, and when a request finds no counter) and by
//! `promoctl inventory seed`, so both install exactly the same counters.

use crate::admission::AdmissionPort;
use crate::counters::CounterSeed;
use crate::error::StoreResult;
use crate::inventory::InventoryPort;
use promo_domain::{DomainError, DomainResult};
use sqlx::PgPool;
use uuid::Uuid;

/// A policy's counters as PostgreSQL, the source of truth, holds them:
/// remaining = total - issued, and each holder's count. `None` when there is no such policy.
pub async fn coupon_seed(pool: &PgPool, policy: Uuid) -> StoreResult<Option<CounterSeed>> {
    let Some((remaining,)): Option<(i64,)> = sqlx::query_as(
        "SELECT total_quantity - issued_quantity FROM coupon_policies WHERE id = $1",
    )
    .bind(policy)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let users: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM coupons WHERE policy_id = $1 GROUP BY user_id",
    )
    .bind(policy)
    .fetch_all(pool)
    .await?;
    Ok(Some(CounterSeed { remaining, users }))
}

pub async fn policy_ids(pool: &PgPool) -> StoreResult<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM coupon_policies")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// A sale's stock as its confirmed orders say: total minus what they hold,
/// and each buyer's units (both from the same order rows, so they agree with
/// each other; the total never changes after creation). `None` when there is
/// no such sale.
pub async fn sale_seed(pool: &PgPool, sale: Uuid) -> StoreResult<Option<CounterSeed>> {
    let Some((total,)): Option<(i64,)> =
        sqlx::query_as("SELECT total_quantity FROM time_sales WHERE id = $1")
            .bind(sale)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let users: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, sum(quantity)::bigint FROM time_sale_orders
         WHERE time_sale_id = $1 AND status = 'CONFIRMED' GROUP BY user_id",
    )
    .bind(sale)
    .fetch_all(pool)
    .await?;
    let confirmed: i64 = users.iter().map(|(_, n)| n).sum();
    Ok(Some(CounterSeed {
        remaining: (total - confirmed).max(0),
        users,
    }))
}

pub async fn sale_ids(pool: &PgPool) -> StoreResult<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM time_sales")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Rebuilds a policy's admission counters. Without `force` a live counter is
/// kept; returns whether the seed was installed.
pub async fn coupon_policy(
    pool: &PgPool,
    admission: &dyn AdmissionPort,
    policy: Uuid,
    force: bool,
) -> DomainResult<bool> {
    let seed = coupon_seed(pool, policy)
        .await?
        .ok_or_else(|| DomainError::NotFound("coupon policy".into()))?;
    let installed = admission.seed(policy, &seed, force).await?;
    if installed {
        tracing::info!(policy_id = %policy, remaining = seed.remaining, users = seed.users.len(), force, "coupon counters rebuilt");
    }
    Ok(installed)
}

/// Rebuilds every policy's counters (only the missing ones without `force`).
/// Returns how many were installed.
pub async fn coupon_policies(
    pool: &PgPool,
    admission: &dyn AdmissionPort,
    force: bool,
) -> DomainResult<usize> {
    let mut n = 0;
    for id in policy_ids(pool).await? {
        if coupon_policy(pool, admission, id, force).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Rebuilds a sale's stock and per-user totals. Without `force` a live
/// counter is kept; returns whether the seed was installed.
pub async fn sale(
    pool: &PgPool,
    inventory: &dyn InventoryPort,
    sale: Uuid,
    force: bool,
) -> DomainResult<bool> {
    let seed = sale_seed(pool, sale)
        .await?
        .ok_or_else(|| DomainError::NotFound("time sale".into()))?;
    let installed = inventory.seed(sale, &seed, force).await?;
    if installed {
        tracing::info!(sale_id = %sale, remaining = seed.remaining, users = seed.users.len(), force, "timesale inventory rebuilt");
    }
    Ok(installed)
}

/// Rebuilds every sale's counters (only the missing ones without `force`).
/// Returns how many were installed.
pub async fn sales(
    pool: &PgPool,
    inventory: &dyn InventoryPort,
    force: bool,
) -> DomainResult<usize> {
    let mut n = 0;
    for id in sale_ids(pool).await? {
        if self::sale(pool, inventory, id, force).await? {
            n += 1;
        }
    }
    Ok(n)
}
