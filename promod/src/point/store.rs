//! PostgreSQL access of the point ledger. Changes are group-committed
//! ([`Points`] in `crate::batcher`): a batch locks its users' balance rows,
//! reads what its decision depends on, lets the pure decision
//! (`promo_domain::point::decide_batch`) decide every member in order on the
//! locked balances, and writes the balance rows, ledger rows, outbox events
//! and idempotency records in one statement and one commit.

use crate::batcher::{BatchStore, InsertOutcome};
use crate::error::from_sqlx;
use crate::idempotency::IdemKey;
use crate::outbox::Event;
use chrono::{DateTime, Utc};
use promo_domain::audit::AuditEntry;
use promo_domain::page::{Page, PageRequest};
use promo_domain::point::lot::{Lot, LotBook, LotOp};
use promo_domain::point::{
    self, BalanceRow, BatchDecision, BatchMember, Committed, Decision, Transaction, TxType,
};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{to_json, StoreError, StoreResult};
use promo_store::keys::CachedBalance;
use promo_store::topics;
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const TX_COLUMNS: &str = "id, user_id, type, amount, delta, balance_after, reference, \
    description, cancelled_transaction_id, hold_id, lot_id, created_at";

#[derive(sqlx::FromRow)]
struct TxRow {
    id: Uuid,
    user_id: Uuid,
    #[sqlx(rename = "type")]
    kind: String,
    amount: i64,
    delta: i64,
    balance_after: i64,
    reference: Option<String>,
    description: Option<String>,
    cancelled_transaction_id: Option<Uuid>,
    hold_id: Option<Uuid>,
    lot_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl TxRow {
    fn into_domain(self) -> Transaction {
        Transaction {
            id: self.id,
            user_id: self.user_id,
            tx_type: TxType::parse(&self.kind).unwrap_or(TxType::Earn),
            amount: self.amount,
            delta: self.delta,
            balance_after: self.balance_after,
            reference: self.reference,
            description: self.description,
            cancelled_transaction_id: self.cancelled_transaction_id,
            hold_id: self.hold_id,
            lot_id: self.lot_id,
            created_at: self.created_at,
        }
    }
}

/// A ledger row waiting for the group commit; its `balance_after` is decided
/// in the batch, under the balance row's lock.
#[derive(Debug, Clone)]
pub struct PendingChange {
    pub tx: Transaction,
    /// The idempotency key and its owner (the caller, maybe an admin).
    pub idem: Option<(IdemKey, Uuid)>,
    /// What it does to the user's lots, decided in the batch.
    pub lot: LotOp,
    /// An admin's change: its audit entry, made in the request's task (for
    /// its request id), is stored with the row, the row as `after`.
    pub audit: Option<AuditEntry>,
}

/// What a stored change answers with: the balance after it, what holds
/// reserve of it, and the balance row's version at that point (for the
/// versioned cache).
pub type Applied = CachedBalance;

fn event_type(kind: TxType) -> &'static str {
    match kind {
        TxType::Earn => topics::POINT_EARNED,
        TxType::Use => topics::POINT_USED,
        TxType::Cancel => topics::POINT_CANCELLED,
        TxType::Expire => topics::POINT_EXPIRED,
    }
}

/// The event of a stored change (docs/events.md).
pub fn event(t: &Transaction) -> Event {
    Event::new(
        event_type(t.tx_type),
        t.user_id,
        Some(t.user_id),
        t.created_at,
        serde_json::json!({
            "transaction_id": t.id,
            "user_id": t.user_id,
            "type": t.tx_type.as_str(),
            "amount": t.amount,
            "delta": t.delta,
            "balance_after": t.balance_after,
            "reference": t.reference,
            "cancelled_transaction_id": t.cancelled_transaction_id,
            "hold_id": t.hold_id,
            "lot_id": t.lot_id,
        }),
    )
}

/// How often a batch runs again after losing the race for a new balance row
/// or an idempotency key to a concurrent batch (a rerun sees the winner).
const RACE_ATTEMPTS: usize = 3;

/// Stores a batch of changes in one transaction. Refusals (balance, already
/// cancelled, a key already used) are decided per member, in batch order,
/// and never fail the statement, so they cannot spoil the other members.
pub async fn insert_batch(
    pool: &PgPool,
    batch: &[PendingChange],
) -> StoreResult<Vec<InsertOutcome<Applied>>> {
    for _ in 0..RACE_ATTEMPTS {
        if let Some(outcomes) = try_batch(pool, batch).await? {
            return Ok(outcomes);
        }
        metrics::counter!("promo_point_batch_races_total").increment(1);
    }
    Err(StoreError::Invariant(format!(
        "point batch lost a race {RACE_ATTEMPTS} times in a row"
    )))
}

/// One attempt; `None` when a concurrent batch created a balance row or took
/// a key this one meant to write (everything is rolled back).
async fn try_batch(
    pool: &PgPool,
    batch: &[PendingChange],
) -> StoreResult<Option<Vec<InsertOutcome<Applied>>>> {
    let mut db = pool.begin().await?;
    let Read {
        rows,
        cancelled,
        keys,
        lots,
    } = read_committed(&mut db, batch).await?;
    let committed = Committed {
        rows,
        cancelled,
        keys: keys.iter().map(|(o, k)| (*o, k.as_str())).collect(),
        lots: LotBook::new(lots),
    };
    let members: Vec<BatchMember<(Uuid, &str)>> = batch
        .iter()
        .map(|c| BatchMember {
            user_id: c.tx.user_id,
            delta: c.tx.delta,
            cancels: c.tx.cancelled_transaction_id,
            key: c.idem.as_ref().map(|(k, owner)| (*owner, k.key.as_str())),
            at: c.tx.created_at,
            lot: c.lot.clone(),
        })
        .collect();
    let decided = point::decide_batch(committed, &members);
    if !decided.applies_any() {
        // Only refusals, decided on committed data: nothing to make durable.
        return Ok(Some(decided.decisions.into_iter().map(outcome).collect()));
    }
    let rows = Rows::of(batch, &decided)?;
    let counts = rows.write(&mut db).await?;
    if counts != rows.expected() {
        if (counts.0, counts.3) != (rows.expected().0, rows.expected().3) {
            // The lock makes this impossible; refuse to commit rather than guess.
            return Err(StoreError::Invariant(
                "point balance row or lot changed under the batch's lock".into(),
            ));
        }
        // A concurrent batch created a balance row or took a key first.
        return Ok(None);
    }
    db.commit().await?;
    Ok(Some(decided.decisions.into_iter().map(outcome).collect()))
}

fn outcome(d: Decision) -> InsertOutcome<Applied> {
    match d {
        Decision::Applied {
            balance,
            held,
            version,
        } => InsertOutcome::Stored(Applied {
            balance,
            held,
            version,
        }),
        Decision::Duplicate => InsertOutcome::Duplicate,
        Decision::Refused(e) => InsertOutcome::Refused(e),
    }
}

/// What the batch reads of committed data before deciding (the keys owned,
/// so that the decision can borrow them).
struct Read {
    rows: HashMap<Uuid, BalanceRow>,
    cancelled: HashSet<Uuid>,
    keys: Vec<(Uuid, String)>,
    lots: Vec<Lot>,
}

/// Locks the batch's balance rows and reads what its decision depends on.
async fn read_committed(
    db: &mut PgConnection,
    batch: &[PendingChange],
) -> Result<Read, sqlx::Error> {
    let mut users: Vec<Uuid> = batch.iter().map(|c| c.tx.user_id).collect();
    users.sort_unstable();
    users.dedup();
    // Every writer locks its users' balance rows first, in user id order, so
    // concurrent batches queue and never wait in a cycle. The reads below run
    // after the locks, so they see every committed change of these users.
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
        "SELECT user_id, balance, held, version FROM point_balances
         WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
    )
    .bind(&users)
    .fetch_all(&mut *db)
    .await?;
    // A cancel's user is the original's, whose row this batch holds, so no
    // other cancel of it can commit between this read and the commit.
    let cancels: Vec<Uuid> = batch
        .iter()
        .filter_map(|c| c.tx.cancelled_transaction_id)
        .collect();
    let cancelled = if cancels.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            "SELECT cancelled_transaction_id FROM point_transactions
             WHERE cancelled_transaction_id = ANY($1)",
        )
        .bind(&cancels)
        .fetch_all(&mut *db)
        .await?
        .into_iter()
        .collect()
    };
    // Keys are not covered by those locks: one taken after this read makes
    // the key insert below do nothing, and the batch runs again.
    let (owners, keys): (Vec<Uuid>, Vec<&str>) = batch
        .iter()
        .filter_map(|c| c.idem.as_ref().map(|(k, o)| (*o, k.key.as_str())))
        .unzip();
    let keys = if keys.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT k.user_id, k.key FROM idempotency_keys k
             JOIN unnest($1::uuid[], $2::text[]) AS q(user_id, key)
               ON k.user_id = q.user_id AND k.key = q.key",
        )
        .bind(&owners)
        .bind(&keys)
        .fetch_all(&mut *db)
        .await?
    };
    let lots = batch_lots(db, batch).await?;
    Ok(Read {
        lots,
        rows: rows
            .into_iter()
            .map(|(u, balance, held, version)| {
                let row = BalanceRow {
                    balance,
                    held,
                    version,
                };
                (u, row)
            })
            .collect(),
        cancelled,
        keys,
    })
}

/// The lots a batch decides on, in one query and only when a member needs
/// them (an earn-only batch reads none): every live lot of the users who
/// draw, and the lots given back to or revoked. Runs under the balance rows'
/// locks, which every writer of a user's lots holds, so nothing moves them
/// until the commit. A user with many live lots makes this read all of them;
/// see ARCHITECTURE.md, "Point lots".
async fn batch_lots(
    db: &mut PgConnection,
    batch: &[PendingChange],
) -> Result<Vec<Lot>, sqlx::Error> {
    let mut drawing: Vec<Uuid> = Vec::new();
    let mut named: Vec<Uuid> = Vec::new();
    for c in batch {
        match &c.lot {
            LotOp::Draw => drawing.push(c.tx.user_id),
            LotOp::Return(draws) => named.extend(draws.iter().map(|d| d.lot_id)),
            LotOp::Revoke(id) => named.push(*id),
            LotOp::None | LotOp::Add { .. } => {}
        }
    }
    if drawing.is_empty() && named.is_empty() {
        return Ok(Vec::new());
    }
    drawing.sort_unstable();
    drawing.dedup();
    super::lot_store::live_lots(db, &drawing, &named).await
}

/// The columns of every row a batch writes, one array per column.
#[derive(Default)]
struct Rows<'a> {
    // Balance rows that existed: written only if still at version `was`.
    upd_u: Vec<Uuid>,
    upd_b: Vec<i64>,
    upd_v: Vec<i64>,
    upd_was: Vec<i64>,
    upd_at: Vec<DateTime<Utc>>,
    // Balance rows that are new.
    new_u: Vec<Uuid>,
    new_b: Vec<i64>,
    new_v: Vec<i64>,
    new_at: Vec<DateTime<Utc>>,
    // Ledger rows.
    ids: Vec<Uuid>,
    tx_users: Vec<Uuid>,
    kinds: Vec<&'static str>,
    amounts: Vec<i64>,
    deltas: Vec<i64>,
    afters: Vec<i64>,
    refs: Vec<Option<&'a str>>,
    descs: Vec<Option<&'a str>>,
    origs: Vec<Option<Uuid>>,
    created: Vec<DateTime<Utc>>,
    // Outbox events.
    ev_ids: Vec<Uuid>,
    ev_topics: Vec<String>,
    ev_keys: Vec<String>,
    ev_payloads: Vec<serde_json::Value>,
    // Idempotency records.
    k_owners: Vec<Uuid>,
    k_keys: Vec<&'a str>,
    k_hashes: Vec<&'a str>,
    k_answers: Vec<serde_json::Value>,
    // Lots made by the batch, remainders it moved, and what each debit drew.
    lots: LotColumns,
    upd_lot: Vec<Uuid>,
    upd_lot_left: Vec<i64>,
    upd_lot_was: Vec<i64>,
    // What each ledger row drew from lots (null unless it drew).
    draws: Vec<Option<serde_json::Value>>,
    // Admins' changes.
    audit: Vec<AuditEntry>,
}

/// New lots, one array per column.
#[derive(Default)]
struct LotColumns {
    id: Vec<Uuid>,
    user: Vec<Uuid>,
    earn: Vec<Option<Uuid>>,
    amount: Vec<i64>,
    remaining: Vec<i64>,
    expires: Vec<Option<DateTime<Utc>>>,
    earned: Vec<DateTime<Utc>>,
}

impl LotColumns {
    fn push(&mut self, l: &Lot) {
        self.id.push(l.id);
        self.user.push(l.user_id);
        self.earn.push(l.earn_transaction_id);
        self.amount.push(l.amount);
        self.remaining.push(l.remaining);
        self.expires.push(l.expires_at);
        self.earned.push(l.earned_at);
    }
}

impl<'a> Rows<'a> {
    /// The rows of the members decided `Applied`, with their balance after.
    fn of(batch: &'a [PendingChange], decided: &BatchDecision) -> StoreResult<Self> {
        let mut r = Rows::default();
        for row in &decided.rows {
            match row.was {
                Some(was) => {
                    r.upd_u.push(row.user_id);
                    r.upd_b.push(row.balance);
                    r.upd_v.push(row.version);
                    r.upd_was.push(was);
                    r.upd_at.push(row.at);
                }
                None => {
                    r.new_u.push(row.user_id);
                    r.new_b.push(row.balance);
                    r.new_v.push(row.version);
                    r.new_at.push(row.at);
                }
            }
        }
        decided.lots.new.iter().for_each(|l| r.lots.push(l));
        for u in &decided.lots.updated {
            r.upd_lot.push(u.id);
            r.upd_lot_left.push(u.remaining);
            r.upd_lot_was.push(u.was);
        }
        for ((c, d), draws) in batch.iter().zip(&decided.decisions).zip(&decided.draws) {
            let Decision::Applied { balance, .. } = d else {
                continue;
            };
            r.draws.push(match draws.is_empty() {
                true => None,
                false => Some(to_json("draws", draws)?),
            });
            let mut t = c.tx.clone();
            t.balance_after = *balance;
            let e = event(&t);
            r.ev_ids.push(e.id);
            r.ev_topics.push(e.event_type.clone());
            r.ev_keys.push(e.aggregate_id.clone());
            r.ev_payloads.push(to_json("event", &e)?);
            if let Some(a) = &c.audit {
                let after = Some(to_json("audit after", &t)?);
                r.audit.push(AuditEntry { after, ..a.clone() });
            }
            if let Some((k, owner)) = &c.idem {
                r.k_owners.push(*owner);
                r.k_keys.push(k.key.as_str());
                r.k_hashes.push(k.request_hash.as_str());
                r.k_answers.push(to_json("transaction", &t)?);
            }
            r.ids.push(t.id);
            r.tx_users.push(t.user_id);
            r.kinds.push(t.tx_type.as_str());
            r.amounts.push(t.amount);
            r.deltas.push(t.delta);
            r.afters.push(t.balance_after);
            r.refs.push(c.tx.reference.as_deref());
            r.descs.push(c.tx.description.as_deref());
            r.origs.push(t.cancelled_transaction_id);
            r.created.push(t.created_at);
        }
        Ok(r)
    }

    /// How many balance rows updated, balance rows inserted, keys stored and
    /// lots updated the statement must report.
    fn expected(&self) -> (i64, i64, i64, i64) {
        (
            self.upd_u.len() as i64,
            self.new_u.len() as i64,
            self.k_keys.len() as i64,
            self.upd_lot.len() as i64,
        )
    }

    /// One statement for every row of the batch. Balance rows are written with
    /// the values decided, only if their version is still the one read under
    /// the lock; the constraints stay the last line behind that arithmetic.
    async fn write(&self, db: &mut PgConnection) -> Result<(i64, i64, i64, i64), sqlx::Error> {
        sqlx::query_as(
            "WITH upd AS (
               UPDATE point_balances b
                  SET balance = v.balance, version = v.version, updated_at = v.at
                 FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[])
                      AS v(user_id, balance, version, was, at)
                WHERE b.user_id = v.user_id AND b.version = v.was
               RETURNING 1
             ),
             ins AS (
               INSERT INTO point_balances (user_id, balance, version, updated_at)
               SELECT * FROM unnest($6::uuid[], $7::bigint[], $8::bigint[], $9::timestamptz[])
               ON CONFLICT (user_id) DO NOTHING
               RETURNING 1
             ),
             t AS (
               INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                                               reference, description, cancelled_transaction_id, created_at,
                                               draws)
               SELECT * FROM unnest($10::uuid[], $11::uuid[], $12::text[], $13::bigint[], $14::bigint[],
                                    $15::bigint[], $16::text[], $17::text[], $18::uuid[], $19::timestamptz[],
                                    $38::jsonb[])
             ),
             o AS (
               INSERT INTO outbox (id, topic, aggregate_id, payload)
               SELECT * FROM unnest($20::uuid[], $21::text[], $22::text[], $23::jsonb[])
             ),
             k AS (
               INSERT INTO idempotency_keys (user_id, key, request_hash, response)
               SELECT * FROM unnest($24::uuid[], $25::text[], $26::text[], $27::jsonb[]) ORDER BY 1, 2
               ON CONFLICT DO NOTHING
               RETURNING 1
             ),
             nl AS (
               INSERT INTO point_lots (id, user_id, earn_transaction_id, amount, remaining,
                                       expires_at, earned_at)
               SELECT * FROM unnest($28::uuid[], $29::uuid[], $30::uuid[], $31::bigint[],
                                    $32::bigint[], $33::timestamptz[], $34::timestamptz[])
             ),
             ul AS (
               UPDATE point_lots l SET remaining = v.remaining
                 FROM unnest($35::uuid[], $36::bigint[], $37::bigint[]) AS v(id, remaining, was)
                WHERE l.id = v.id AND l.remaining = v.was
               RETURNING 1
             ),
             a AS (
               INSERT INTO audit_log
               SELECT * FROM jsonb_populate_recordset(NULL::audit_log, $39::jsonb)
             )
             SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins), (SELECT count(*) FROM k),
                    (SELECT count(*) FROM ul)",
        )
        .bind(&self.upd_u)
        .bind(&self.upd_b)
        .bind(&self.upd_v)
        .bind(&self.upd_was)
        .bind(&self.upd_at)
        .bind(&self.new_u)
        .bind(&self.new_b)
        .bind(&self.new_v)
        .bind(&self.new_at)
        .bind(&self.ids)
        .bind(&self.tx_users)
        .bind(&self.kinds)
        .bind(&self.amounts)
        .bind(&self.deltas)
        .bind(&self.afters)
        .bind(&self.refs)
        .bind(&self.descs)
        .bind(&self.origs)
        .bind(&self.created)
        .bind(&self.ev_ids)
        .bind(&self.ev_topics)
        .bind(&self.ev_keys)
        .bind(&self.ev_payloads)
        .bind(&self.k_owners)
        .bind(&self.k_keys)
        .bind(&self.k_hashes)
        .bind(&self.k_answers)
        .bind(&self.lots.id)
        .bind(&self.lots.user)
        .bind(&self.lots.earn)
        .bind(&self.lots.amount)
        .bind(&self.lots.remaining)
        .bind(&self.lots.expires)
        .bind(&self.lots.earned)
        .bind(&self.upd_lot)
        .bind(&self.upd_lot_left)
        .bind(&self.upd_lot_was)
        .bind(&self.draws)
        .bind(sqlx::types::Json(&self.audit))
        .fetch_one(&mut *db)
        .await
    }
}

/// What a failed batch statement means, if it is a refusal. Refusals are
/// decided before the statement, so this fires only if that reasoning was
/// wrong; the batcher then stores the members one by one.
pub fn refusal_of(e: &StoreError) -> Option<DomainError> {
    let d = e.database()?;
    match (d.code().as_deref(), d.constraint()) {
        (Some("23505"), Some("cancelled_once")) => Some(DomainError::AlreadyCancelled),
        (
            Some("23514"),
            Some("balance_not_negative" | "held_within_balance" | "lot_within_amount"),
        ) => Some(DomainError::InsufficientBalance),
        // bigint out of range: the balance would overflow.
        (Some("22003"), _) => Some(DomainError::validation(
            "amount",
            "amount would overflow the balance",
        )),
        _ => None,
    }
}

/// The group commit of point changes (`crate::batcher`).
pub struct Points;

impl BatchStore for Points {
    type Item = PendingChange;
    type Stored = Applied;
    const NAME: &'static str = "point";

    fn insert_batch(
        pool: &PgPool,
        batch: &[PendingChange],
    ) -> impl std::future::Future<Output = StoreResult<Vec<InsertOutcome<Applied>>>> + Send {
        insert_batch(pool, batch)
    }

    fn refusal_of(e: &StoreError) -> Option<DomainError> {
        refusal_of(e)
    }
}

pub async fn get_transaction(pool: &PgPool, id: Uuid) -> DomainResult<Transaction> {
    sqlx::query_as::<_, TxRow>(&format!(
        "SELECT {TX_COLUMNS} FROM point_transactions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(from_sqlx)?
    .map(TxRow::into_domain)
    .ok_or_else(|| DomainError::NotFound("point transaction".into()))
}

pub async fn is_cancelled(pool: &PgPool, id: Uuid) -> DomainResult<bool> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM point_transactions WHERE cancelled_transaction_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?;
    Ok(row.is_some())
}

/// The balance, what holds reserve of it, and its version; a user without a
/// row has nothing, at version 0.
pub async fn balance(pool: &PgPool, user: Uuid) -> DomainResult<CachedBalance> {
    let row: Option<(i64, i64, i64)> =
        sqlx::query_as("SELECT balance, held, version FROM point_balances WHERE user_id = $1")
            .bind(user)
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?;
    let (balance, held, version) = row.unwrap_or((0, 0, 0));
    Ok(CachedBalance {
        balance,
        held,
        version,
    })
}

pub async fn history(
    pool: &PgPool,
    user: Uuid,
    kind: Option<TxType>,
    page: PageRequest,
) -> DomainResult<Page<Transaction>> {
    let kind = kind.map(|k| k.as_str());
    let rows: Vec<TxRow> = sqlx::query_as(&format!(
        "SELECT {TX_COLUMNS} FROM point_transactions
         WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user)
    .bind(kind)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?;
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM point_transactions WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)",
    )
    .bind(user)
    .bind(kind)
    .fetch_one(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(Page::new(
        rows.into_iter().map(TxRow::into_domain).collect(),
        page,
        total,
    ))
}
