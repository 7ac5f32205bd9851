//! PostgreSQL access of point lots outside the group commit: the lots a
//! cancel gives back to or revokes, the reads of `GET /points/lots` and of
//! the balance's `expiring`, a capture's draws, and the lot sweeper's
//! claim, read and write. Every write runs under the user's balance row
//! lock, taken first, as the batch takes it (ARCHITECTURE.md, "Point lots").

use crate::db::Plan;
use crate::error::from_sqlx;
use crate::outbox::Event;
use chrono::{DateTime, Utc};
use promo_domain::page::Page;
use promo_domain::point::lot::{Draw, DueLot, Expiring, Expiry, Lot, LotBook, LotOp, LotQuery};
use promo_domain::point::{Funds, Transaction, TxType};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{to_json, StoreError};
use promo_store::keys::CachedBalance;
use promo_store::topics;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

const LOT_COLUMNS: &str =
    "id, user_id, earn_transaction_id, amount, remaining, expires_at, earned_at";

#[derive(sqlx::FromRow)]
struct LotRow {
    id: Uuid,
    user_id: Uuid,
    earn_transaction_id: Option<Uuid>,
    amount: i64,
    remaining: i64,
    expires_at: Option<DateTime<Utc>>,
    earned_at: DateTime<Utc>,
}

impl From<LotRow> for Lot {
    fn from(r: LotRow) -> Lot {
        Lot {
            id: r.id,
            user_id: r.user_id,
            earn_transaction_id: r.earn_transaction_id,
            amount: r.amount,
            remaining: r.remaining,
            expires_at: r.expires_at,
            earned_at: r.earned_at,
        }
    }
}

/// The live lots of `users` and the lots `named` (live or not), each once.
pub async fn live_lots(
    db: &mut PgConnection,
    users: &[Uuid],
    named: &[Uuid],
) -> Result<Vec<Lot>, sqlx::Error> {
    let rows: Vec<LotRow> = sqlx::query_as(&format!(
        "SELECT {LOT_COLUMNS} FROM point_lots WHERE user_id = ANY($1) AND remaining > 0
         UNION
         SELECT {LOT_COLUMNS} FROM point_lots WHERE id = ANY($2)"
    ))
    .bind(users)
    .bind(named)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Lot::from).collect())
}

/// What cancelling `original` does to lots. A use gives its draws back; an
/// earn revokes its lot. Changes from before lots have no draws or lot: the
/// cancel of such a use makes a never-expiring lot of its own (`id`), the
/// cancel of such an earn draws like a use.
pub async fn cancel_op(pool: &PgPool, original: &Transaction, id: Uuid) -> DomainResult<LotOp> {
    let op = match original.tx_type {
        TxType::Earn => {
            // An earn's lot has the earn's id.
            let lot: Option<Uuid> = sqlx::query_scalar("SELECT id FROM point_lots WHERE id = $1")
                .bind(original.id)
                .fetch_optional(pool)
                .await
                .map_err(from_sqlx)?;
            lot.map_or(LotOp::Draw, LotOp::Revoke)
        }
        TxType::Use => {
            let draws: Option<serde_json::Value> =
                sqlx::query_scalar("SELECT draws FROM point_transactions WHERE id = $1")
                    .bind(original.id)
                    .fetch_one(pool)
                    .await
                    .map_err(from_sqlx)?;
            match draws {
                None => LotOp::Add {
                    id,
                    expires_at: None,
                },
                Some(d) => LotOp::Return(
                    serde_json::from_value::<Vec<Draw>>(d)
                        .map_err(|e| StoreError::corrupt("point draws", &e.to_string()))?,
                ),
            }
        }
        TxType::Cancel | TxType::Expire => LotOp::None,
    };
    Ok(op)
}

/// A page of the user's live lots, in spend order.
pub async fn page(pool: &PgPool, q: LotQuery) -> DomainResult<Page<Lot>> {
    let rows: Vec<LotRow> = sqlx::query_as(&format!(
        "SELECT {LOT_COLUMNS} FROM point_lots WHERE user_id = $1 AND remaining > 0
         ORDER BY expires_at, earned_at, id LIMIT $2 OFFSET $3"
    ))
    .bind(q.user_id)
    .bind(q.page.limit())
    .bind(q.page.offset())
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM point_lots WHERE user_id = $1 AND remaining > 0")
            .bind(q.user_id)
            .fetch_one(pool)
            .await
            .map_err(from_sqlx)?;
    Ok(Page::new(
        rows.into_iter().map(Lot::from).collect(),
        q.page,
        total,
    ))
}

/// The remainders of the user's next lots to expire (past due ones first:
/// the next sweep takes them).
pub async fn expiring(pool: &PgPool, user: Uuid, n: i64) -> DomainResult<Vec<Expiring>> {
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT remaining, expires_at FROM point_lots
         WHERE user_id = $1 AND remaining > 0 AND expires_at IS NOT NULL
         ORDER BY expires_at, earned_at, id LIMIT $2",
    )
    .bind(user)
    .bind(n)
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(rows
        .into_iter()
        .map(|(amount, expires_at)| Expiring { amount, expires_at })
        .collect())
}

/// Draws a capture's USE (`tx`) from the user's lots, whose balance row the
/// capture holds locked; the draws, for its ledger row.
pub async fn draw_for(db: &mut PgConnection, tx: &Transaction) -> DomainResult<serde_json::Value> {
    let lots = live_lots(db, &[tx.user_id], &[]).await.map_err(from_sqlx)?;
    let mut book = LotBook::new(lots);
    let draws = book.apply(tx.user_id, tx.created_at, tx.amount, &LotOp::Draw)?;
    let moved = book.changes().updated;
    let (ids, (left, was)): (Vec<Uuid>, (Vec<i64>, Vec<i64>)) =
        moved.iter().map(|u| (u.id, (u.remaining, u.was))).unzip();
    let updated = sqlx::query(
        "UPDATE point_lots l SET remaining = m.left_over
           FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS m(id, left_over, was)
          WHERE l.id = m.id AND l.remaining = m.was",
    )
    .bind(&ids)
    .bind(&left)
    .bind(&was)
    .execute(db)
    .await
    .map_err(from_sqlx)?
    .rows_affected();
    if updated != ids.len() as u64 {
        return Err(DomainError::Internal(
            "point lot changed under its balance lock".into(),
        ));
    }
    Ok(to_json("draws", &draws)?)
}

/// Claims users with lots due at `now` for one sweep: the users of the
/// `limit` soonest-due lots in this sweeper's share (`part` of `parts`, by
/// the user id's last byte), whose balance rows it locks in user id order,
/// skipping rows another writer holds (it never waits, so it never
/// deadlocks). Users whose whole balance is held are left out: nothing of
/// theirs can expire until a hold resolves. Their funds, by user.
///
/// The claim walks the partial index `point_lots_due` in order and stops at
/// its limit (`db::Plan::Walk`), so that a sweep costs its size and not the
/// backlog, whatever the statistics say. The rest of the sweep's
/// transaction joins its arrays by index probes (`db::Plan::Probe`).
pub async fn claim_due(
    db: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    (part, parts): (i32, i32),
) -> DomainResult<Vec<(Uuid, Funds)>> {
    crate::db::plan(db, Plan::Walk).await?;
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT b.user_id, b.balance, b.held FROM point_balances b
         WHERE b.user_id IN (
           SELECT l.user_id FROM point_lots l
           WHERE l.remaining > 0 AND l.expires_at IS NOT NULL AND l.expires_at <= $1
             AND get_byte(uuid_send(l.user_id), 15) % $3 = $4
             AND EXISTS (SELECT 1 FROM point_balances a
                         WHERE a.user_id = l.user_id AND a.balance > a.held)
           ORDER BY l.expires_at LIMIT $2)
         ORDER BY b.user_id FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(now)
    .bind(limit)
    .bind(parts)
    .bind(part)
    .fetch_all(&mut *db)
    .await
    .map_err(from_sqlx)?;
    crate::db::plan(db, Plan::Probe).await?;
    Ok(rows
        .into_iter()
        .map(|(u, balance, held)| (u, Funds { balance, held }))
        .collect())
}

/// The due lots of `users` (whose balance rows the caller holds, in user id
/// order), grouped by user, each user's in spend order. One probe of the
/// spend index per user: a sweep reads its users' lots, not every due lot.
pub async fn due_lots(
    db: &mut PgConnection,
    users: &[Uuid],
    now: DateTime<Utc>,
) -> DomainResult<Vec<DueLot>> {
    let rows: Vec<(Uuid, Uuid, i64, i32)> = sqlx::query_as(
        "SELECT l.id, u.id, l.remaining, l.expiries
           FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)
           CROSS JOIN LATERAL (
             SELECT id, remaining, expiries, expires_at, earned_at FROM point_lots
              WHERE user_id = u.id AND remaining > 0 AND expires_at <= $2) l
          ORDER BY u.n, l.expires_at, l.earned_at, l.id",
    )
    .bind(users)
    .bind(now)
    .fetch_all(db)
    .await
    .map_err(from_sqlx)?;
    Ok(rows
        .into_iter()
        .map(|(id, user_id, remaining, expiries)| DueLot {
            id,
            user_id,
            remaining,
            expiries,
        })
        .collect())
}

/// Writes a sweep in one statement: each lot's remainder and expiry count
/// (only if it is still at the count read), its EXPIRE row (unique per lot
/// and count), the users' balances and the events. Returns the balance rows
/// as written, for the cache.
pub async fn write_expiries(
    db: &mut PgConnection,
    expiries: &[Expiry],
    funds: &[(Uuid, Funds)],
    now: DateTime<Utc>,
) -> DomainResult<Vec<(Uuid, CachedBalance)>> {
    let x = ExpiryColumns::of(expiries, now)?;
    let (users, balances): (Vec<Uuid>, Vec<i64>) =
        funds.iter().map(|(u, f)| (*u, f.balance)).unzip();
    let rows: Vec<(Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "WITH ul AS (
           UPDATE point_lots l SET remaining = v.remaining, expiries = v.n, expired_at = $8
             FROM unnest($1::uuid[], $2::bigint[], $3::int[]) AS v(id, remaining, n)
            WHERE l.id = v.id AND l.expiries = v.n - 1
           RETURNING 1
         ),
         t AS (
           INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                                           lot_id, lot_expiry, created_at)
           SELECT x.id, x.user_id, 'EXPIRE', x.amount, -x.amount, x.after, x.lot_id, x.n, $8
             FROM unnest($4::uuid[], $5::uuid[], $6::bigint[], $7::bigint[], $1::uuid[], $3::int[])
                  AS x(id, user_id, amount, after, lot_id, n)
         ),
         o AS (
           INSERT INTO outbox (id, topic, aggregate_id, payload)
           SELECT * FROM unnest($11::uuid[], $12::text[], $13::text[], $14::jsonb[])
         ),
         b AS (
           UPDATE point_balances b SET balance = v.balance, version = b.version + 1, updated_at = $8
             FROM unnest($9::uuid[], $10::bigint[]) AS v(user_id, balance)
            WHERE b.user_id = v.user_id
           RETURNING b.user_id, b.balance, b.held, b.version
         )
         SELECT b.user_id, b.balance, b.held, b.version, (SELECT count(*) FROM ul) FROM b",
    )
    .bind(&x.lots)
    .bind(&x.remaining)
    .bind(&x.number)
    .bind(&x.ids)
    .bind(&x.users)
    .bind(&x.amounts)
    .bind(&x.afters)
    .bind(now)
    .bind(&users)
    .bind(&balances)
    .bind(&x.ev_ids)
    .bind(&x.ev_topics)
    .bind(&x.ev_keys)
    .bind(&x.ev_payloads)
    .fetch_all(db)
    .await
    .map_err(from_sqlx)?;
    let lots_moved = rows.first().map_or(0, |r| r.4);
    if rows.len() != funds.len() || lots_moved != expiries.len() as i64 {
        // The balance locks make this impossible; refuse to commit.
        return Err(DomainError::Internal(
            "point lot or balance changed under the sweep's lock".into(),
        ));
    }
    let written = rows.into_iter().map(|(u, b, h, v, _)| (u, b, h, v));
    Ok(written.map(super::hold_store::cached).collect())
}

/// A sweep's rows, one array per column.
#[derive(Default)]
struct ExpiryColumns {
    lots: Vec<Uuid>,
    remaining: Vec<i64>,
    number: Vec<i32>,
    ids: Vec<Uuid>,
    users: Vec<Uuid>,
    amounts: Vec<i64>,
    afters: Vec<i64>,
    ev_ids: Vec<Uuid>,
    ev_topics: Vec<String>,
    ev_keys: Vec<String>,
    ev_payloads: Vec<serde_json::Value>,
}

impl ExpiryColumns {
    /// Each expiry's lot and EXPIRE row, and one `point.expired` event per
    /// user listing the user's EXPIREs of this sweep (docs/events.md): a
    /// sweep of a million lots writes an event per user, not per lot.
    fn of(expiries: &[Expiry], now: DateTime<Utc>) -> DomainResult<Self> {
        let mut x = ExpiryColumns::default();
        for e in expiries {
            x.lots.push(e.lot_id);
            x.remaining.push(e.remaining);
            x.number.push(e.number);
            x.ids.push(Uuid::now_v7());
            x.users.push(e.user_id);
            x.amounts.push(e.amount);
            x.afters.push(e.balance_after);
        }
        let rows: Vec<(&Expiry, Uuid)> = expiries.iter().zip(x.ids.clone()).collect();
        // `lot::expire` keeps the order of the due lots, grouped by user.
        for user in rows.chunk_by(|a, b| a.0.user_id == b.0.user_id) {
            let ev = expired_event(user, now);
            x.ev_ids.push(ev.id);
            x.ev_topics.push(ev.event_type.clone());
            x.ev_keys.push(ev.aggregate_id.clone());
            x.ev_payloads.push(to_json("event", &ev)?);
        }
        Ok(x)
    }
}

/// The `point.expired` event of one user's EXPIREs (`(expiry, its
/// transaction id)`, at least one) in one sweep.
fn expired_event(user: &[(&Expiry, Uuid)], now: DateTime<Utc>) -> Event {
    let (last, _) = user[user.len() - 1];
    let expired: Vec<serde_json::Value> = user
        .iter()
        .map(|(e, id)| {
            serde_json::json!({
                "transaction_id": id,
                "lot_id": e.lot_id,
                "amount": e.amount,
                "balance_after": e.balance_after,
            })
        })
        .collect();
    Event::new(
        topics::POINT_EXPIRED,
        last.user_id,
        Some(last.user_id),
        now,
        serde_json::json!({
            "user_id": last.user_id,
            "amount": user.iter().map(|(e, _)| e.amount).sum::<i64>(),
            "balance_after": last.balance_after,
            "expired": expired,
        }),
    )
}
