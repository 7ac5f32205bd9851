//! PostgreSQL access of point holds and of the funds they reserve (the
//! `held` column of the balance row). Every hold change runs in one
//! transaction with its balance row locked (`lock_funds`), as the group
//! commit of uses locks it, so a hold and a use of one user never decide on
//! the same funds at once. Lock order, everywhere: a hold's row before
//! balance rows, balance rows in user id order; see ARCHITECTURE.md,
//! "Point holds".

use crate::db::Due;
use crate::error::from_sqlx;
use chrono::{DateTime, Utc};
use promo_domain::point::hold::{HoldStatus, PointHold};
use promo_domain::point::{Funds, Transaction};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::StoreError;
use promo_store::keys::CachedBalance;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;
use uuid::Uuid;

/// A hold's columns; `transaction_id` is the USE that names it, if any.
const HOLD_COLUMNS: &str = "h.id, h.user_id, h.amount, h.status, h.reference, h.expires_at, \
    h.created_at, h.resolved_at, h.captured_amount";

#[derive(sqlx::FromRow)]
struct HoldRow {
    id: Uuid,
    user_id: Uuid,
    amount: i64,
    status: String,
    reference: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    captured_amount: Option<i64>,
    transaction_id: Option<Uuid>,
}

impl HoldRow {
    /// An unknown stored status is corrupt data, never a default.
    fn into_domain(self) -> DomainResult<PointHold> {
        let status = HoldStatus::parse(&self.status)
            .map_err(|_| StoreError::corrupt("point hold status", &self.status))?;
        Ok(PointHold {
            id: self.id,
            user_id: self.user_id,
            amount: self.amount,
            status,
            reference: self.reference,
            expires_at: self.expires_at,
            created_at: self.created_at,
            resolved_at: self.resolved_at,
            captured_amount: self.captured_amount,
            transaction_id: self.transaction_id,
        })
    }
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> DomainResult<PointHold> {
    sqlx::query_as::<_, HoldRow>(&format!(
        "SELECT {HOLD_COLUMNS}, t.id AS transaction_id
         FROM point_holds h LEFT JOIN point_transactions t ON t.hold_id = h.id
         WHERE h.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("point hold".into()))?
    .into_domain()
}

pub async fn insert(db: &mut PgConnection, h: &PointHold) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO point_holds (id, user_id, amount, status, reference, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(h.id)
    .bind(h.user_id)
    .bind(h.amount)
    .bind(h.status.as_str())
    .bind(&h.reference)
    .bind(h.expires_at)
    .bind(h.created_at)
    .execute(db)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Moves a hold out of PENDING, if it still is and has not expired by `now`:
/// the one statement that decides which contender resolves it (the row lock
/// makes later ones wait, then match nothing). `None` when it lost.
pub async fn resolve(
    db: &mut PgConnection,
    id: Uuid,
    to: HoldStatus,
    captured_amount: Option<i64>,
    now: DateTime<Utc>,
) -> DomainResult<Option<PointHold>> {
    let row: Option<HoldRow> = sqlx::query_as(&format!(
        "UPDATE point_holds h SET status = $2, captured_amount = $3, resolved_at = $4
         WHERE h.id = $1 AND h.status = 'PENDING' AND h.expires_at > $4
         RETURNING {HOLD_COLUMNS}, NULL::uuid AS transaction_id"
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(captured_amount)
    .bind(now)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?;
    row.map(HoldRow::into_domain).transpose()
}

/// Expires up to `limit` PENDING holds due at `now`, soonest first. Holds
/// that another transaction has locked (a sweeper, a capture or void in
/// flight) are skipped, never waited for.
pub async fn expire_due(
    db: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> DomainResult<Vec<PointHold>> {
    let returning = format!("{HOLD_COLUMNS}, NULL::uuid AS transaction_id");
    let set = "status = 'EXPIRED', resolved_at = $1";
    let due = Due {
        table: "point_holds",
        pending: "PENDING",
        deadline: "expires_at",
        set,
        returning: &returning,
    };
    let rows: Vec<HoldRow> = due.fetch(db, now, limit).await?;
    rows.into_iter().map(HoldRow::into_domain).collect()
}

/// Locks the balance rows of `users` in user id order (the order of every
/// writer, so none waits in a cycle) and reads their funds. A user without a
/// row has none.
pub async fn lock_funds(
    db: &mut PgConnection,
    users: &[Uuid],
) -> DomainResult<HashMap<Uuid, Funds>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, balance, held FROM point_balances
         WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
    )
    .bind(users)
    .fetch_all(db)
    .await
    .map_err(from_sqlx)?;
    Ok(rows
        .into_iter()
        .map(|(u, balance, held)| (u, Funds { balance, held }))
        .collect())
}

/// Writes funds decided under [`lock_funds`], each a new version; the rows
/// as written. The row's CHECK (`held_within_balance`) stays the last line.
pub async fn write_funds(
    db: &mut PgConnection,
    funds: &[(Uuid, Funds)],
    at: DateTime<Utc>,
) -> DomainResult<Vec<(Uuid, CachedBalance)>> {
    let (users, (balances, helds)): (Vec<Uuid>, (Vec<i64>, Vec<i64>)) =
        funds.iter().map(|(u, f)| (*u, (f.balance, f.held))).unzip();
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
        "UPDATE point_balances b
            SET balance = v.balance, held = v.held, version = b.version + 1, updated_at = $4
           FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS v(user_id, balance, held)
          WHERE b.user_id = v.user_id
         RETURNING b.user_id, b.balance, b.held, b.version",
    )
    .bind(&users)
    .bind(&balances)
    .bind(&helds)
    .bind(at)
    .fetch_all(db)
    .await
    .map_err(from_sqlx)?;
    if rows.len() != funds.len() {
        // Only a user with a row can hold anything, and the row is locked.
        return Err(DomainError::Internal("point balance row missing".into()));
    }
    Ok(rows.into_iter().map(cached).collect())
}

/// A balance row as written (user, balance, held, version), for the cache.
pub(super) fn cached((u, balance, held, version): (Uuid, i64, i64, i64)) -> (Uuid, CachedBalance) {
    let c = CachedBalance {
        balance,
        held,
        version,
    };
    (u, c)
}

/// One user's funds moved by `change` (a domain rule), under the row lock.
pub async fn move_funds(
    db: &mut PgConnection,
    user: Uuid,
    at: DateTime<Utc>,
    change: impl FnOnce(Funds) -> DomainResult<Funds>,
) -> DomainResult<CachedBalance> {
    let now = lock_funds(db, &[user]).await?;
    let next = change(now.get(&user).copied().unwrap_or_default())?;
    let written = write_funds(db, &[(user, next)], at).await?;
    Ok(written[0].1)
}

/// A capture's USE row and what it drew from lots (the batch writes every
/// other ledger row).
pub async fn insert_transaction(
    db: &mut PgConnection,
    t: &Transaction,
    draws: &serde_json::Value,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                                         reference, description, hold_id, created_at, draws)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(t.id)
    .bind(t.user_id)
    .bind(t.tx_type.as_str())
    .bind(t.amount)
    .bind(t.delta)
    .bind(t.balance_after)
    .bind(&t.reference)
    .bind(&t.description)
    .bind(t.hold_id)
    .bind(t.created_at)
    .bind(draws)
    .execute(db)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}
