//! PostgreSQL access of the point ledger. Changes are group-committed
//! ([`Points`] in `crate::batcher`): a batch locks its users' balance rows,
//! decides every member in order on the locked balances, and writes the
//! balance rows, ledger rows, outbox events and idempotency records in one
//! statement and one commit.

use crate::batcher::{BatchStore, InsertOutcome};
use crate::error::from_sqlx;
use crate::idempotency::IdemKey;
use crate::outbox::Event;
use chrono::{DateTime, Utc};
use promo_domain::page::{Page, PageRequest};
use promo_domain::point::{self, Transaction, TxType};
use promo_domain::{DomainError, DomainResult};
use promo_store::topics;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const TX_COLUMNS: &str = "id, user_id, type, amount, delta, balance_after, reference, \
    description, cancelled_transaction_id, created_at";

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
}

/// What a stored change answers with: the balance after it and the balance
/// row's version at that point (for the versioned cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub balance: i64,
    pub version: i64,
}

fn event_type(kind: TxType) -> &'static str {
    match kind {
        TxType::Earn => topics::POINT_EARNED,
        TxType::Use => topics::POINT_USED,
        TxType::Cancel => topics::POINT_CANCELLED,
    }
}

/// The event of a stored change (docs/events.md).
fn event(t: &Transaction) -> Event {
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
        }),
    )
}

/// One user's balance row as the batch moves it.
struct Account {
    /// Whether the row existed when the batch locked it.
    existed: bool,
    /// The version read under the lock; the write is conditional on it.
    was: i64,
    balance: i64,
    version: i64,
    at: DateTime<Utc>,
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
) -> Result<Vec<InsertOutcome<Applied>>, sqlx::Error> {
    for _ in 0..RACE_ATTEMPTS {
        if let Some(outcomes) = try_batch(pool, batch).await? {
            return Ok(outcomes);
        }
        metrics::counter!("promo_point_batch_races_total").increment(1);
    }
    Err(sqlx::Error::Protocol(format!(
        "point batch lost a race {RACE_ATTEMPTS} times in a row"
    )))
}

/// One attempt; `None` when a concurrent batch created a balance row or took
/// a key this one meant to write (everything is rolled back).
async fn try_batch(
    pool: &PgPool,
    batch: &[PendingChange],
) -> Result<Option<Vec<InsertOutcome<Applied>>>, sqlx::Error> {
    let mut users: Vec<Uuid> = batch.iter().map(|c| c.tx.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let mut db = pool.begin().await?;
    // Every writer locks its users' balance rows first, in user id order, so
    // concurrent batches queue and never wait in a cycle. The reads below run
    // after the locks, so they see every committed change of these users.
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, balance, version FROM point_balances
         WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
    )
    .bind(&users)
    .fetch_all(&mut *db)
    .await?;
    let mut accounts: HashMap<Uuid, Account> = rows
        .into_iter()
        .map(|(u, balance, version)| {
            let a = Account {
                existed: true,
                was: version,
                balance,
                version,
                at: DateTime::<Utc>::MIN_UTC,
            };
            (u, a)
        })
        .collect();
    // A cancel's user is the original's, whose row this batch holds, so no
    // other cancel of it can commit between this read and the commit.
    let cancels: Vec<Uuid> = batch
        .iter()
        .filter_map(|c| c.tx.cancelled_transaction_id)
        .collect();
    let mut cancelled: HashSet<Uuid> = if cancels.is_empty() {
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
    let mut taken: HashSet<(Uuid, String)> = if keys.is_empty() {
        HashSet::new()
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
        .into_iter()
        .collect()
    };

    // Members apply in batch order, each on the balance the previous ones
    // left, exactly as if they had committed one by one.
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut stored: Vec<(Transaction, Option<&(IdemKey, Uuid)>)> = Vec::new();
    for c in batch {
        let t = &c.tx;
        if let Some((k, owner)) = &c.idem {
            if taken.contains(&(*owner, k.key.clone())) {
                outcomes.push(InsertOutcome::Duplicate);
                continue;
            }
        }
        if let Some(orig) = t.cancelled_transaction_id {
            if cancelled.contains(&orig) {
                outcomes.push(InsertOutcome::Refused(DomainError::AlreadyCancelled));
                continue;
            }
        }
        let acc = accounts.entry(t.user_id).or_insert(Account {
            existed: false,
            was: 0,
            balance: 0,
            version: 0,
            at: t.created_at,
        });
        match point::apply(acc.balance, t.delta) {
            Err(e) => outcomes.push(InsertOutcome::Refused(e)),
            Ok(balance) => {
                acc.balance = balance;
                acc.version += 1;
                acc.at = acc.at.max(t.created_at);
                // A refused member never claims its key: the client may retry.
                if let Some((k, owner)) = &c.idem {
                    taken.insert((*owner, k.key.clone()));
                }
                if let Some(orig) = t.cancelled_transaction_id {
                    cancelled.insert(orig);
                }
                outcomes.push(InsertOutcome::Stored(Applied {
                    balance,
                    version: acc.version,
                }));
                let mut t = t.clone();
                t.balance_after = balance;
                stored.push((t, c.idem.as_ref()));
            }
        }
    }
    if stored.is_empty() {
        // Only refusals, decided on committed data: nothing to make durable.
        return Ok(Some(outcomes));
    }

    let (mut upd_u, mut upd_b, mut upd_v, mut upd_was, mut upd_at) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut new_u, mut new_b, mut new_v, mut new_at) = (vec![], vec![], vec![], vec![]);
    let mut changed: Vec<(&Uuid, &Account)> =
        accounts.iter().filter(|(_, a)| a.version > a.was).collect();
    // Sorted, so that concurrent first earns of one user meet in one order.
    changed.sort_unstable_by_key(|(u, _)| **u);
    for (u, a) in changed {
        if a.existed {
            upd_u.push(*u);
            upd_b.push(a.balance);
            upd_v.push(a.version);
            upd_was.push(a.was);
            upd_at.push(a.at);
        } else {
            new_u.push(*u);
            new_b.push(a.balance);
            new_v.push(a.version);
            new_at.push(a.at);
        }
    }
    let n = stored.len();
    let (mut ids, mut tx_users, mut kinds, mut amounts, mut deltas, mut afters) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut refs, mut descs, mut origs, mut created) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut ev_ids, mut ev_topics, mut ev_keys, mut ev_payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut k_owners, mut k_keys, mut k_hashes, mut k_answers) = (vec![], vec![], vec![], vec![]);
    let to_json = |what: &str, v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| sqlx::Error::Protocol(format!("serialize {what}: {e}")))
    };
    for (t, idem) in &stored {
        let e = event(t);
        ev_ids.push(e.id);
        ev_topics.push(e.event_type.clone());
        ev_keys.push(e.aggregate_id.clone());
        ev_payloads.push(to_json("event", serde_json::to_value(&e))?);
        if let Some((k, owner)) = idem {
            k_owners.push(*owner);
            k_keys.push(k.key.as_str());
            k_hashes.push(k.request_hash.as_str());
            k_answers.push(to_json("transaction", serde_json::to_value(t))?);
        }
        ids.push(t.id);
        tx_users.push(t.user_id);
        kinds.push(t.tx_type.as_str());
        amounts.push(t.amount);
        deltas.push(t.delta);
        afters.push(t.balance_after);
        refs.push(t.reference.as_deref());
        descs.push(t.description.as_deref());
        origs.push(t.cancelled_transaction_id);
        created.push(t.created_at);
    }
    let (n_upd, n_new, n_keys) = (upd_u.len() as i64, new_u.len() as i64, k_keys.len() as i64);
    // One statement for every row of the batch. Balance rows are written with
    // the values computed above, only if their version is still the one read
    // under the lock; the constraints stay the last line behind that arithmetic.
    let counts: (i64, i64, i64) = sqlx::query_as(
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
                                           reference, description, cancelled_transaction_id, created_at)
           SELECT * FROM unnest($10::uuid[], $11::uuid[], $12::text[], $13::bigint[], $14::bigint[],
                                $15::bigint[], $16::text[], $17::text[], $18::uuid[], $19::timestamptz[])
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
         )
         SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins), (SELECT count(*) FROM k)",
    )
    .bind(&upd_u)
    .bind(&upd_b)
    .bind(&upd_v)
    .bind(&upd_was)
    .bind(&upd_at)
    .bind(&new_u)
    .bind(&new_b)
    .bind(&new_v)
    .bind(&new_at)
    .bind(&ids)
    .bind(&tx_users)
    .bind(&kinds)
    .bind(&amounts)
    .bind(&deltas)
    .bind(&afters)
    .bind(&refs)
    .bind(&descs)
    .bind(&origs)
    .bind(&created)
    .bind(&ev_ids)
    .bind(&ev_topics)
    .bind(&ev_keys)
    .bind(&ev_payloads)
    .bind(&k_owners)
    .bind(&k_keys)
    .bind(&k_hashes)
    .bind(&k_answers)
    .fetch_one(&mut *db)
    .await?;
    if counts != (n_upd, n_new, n_keys) {
        if counts.0 != n_upd {
            // The lock makes this impossible; refuse to commit rather than guess.
            return Err(sqlx::Error::Protocol(
                "point balance row changed under the batch's lock".into(),
            ));
        }
        // A concurrent batch created a balance row or took a key first.
        return Ok(None);
    }
    db.commit().await?;
    Ok(Some(outcomes))
}

/// What a failed batch statement means, if it is a refusal. Refusals are
/// decided before the statement, so this fires only if that reasoning was
/// wrong; the batcher then stores the members one by one.
pub fn refusal_of(e: &sqlx::Error) -> Option<DomainError> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    match (d.code().as_deref(), d.constraint()) {
        (Some("23505"), Some("cancelled_once")) => Some(DomainError::AlreadyCancelled),
        (Some("23514"), Some("balance_not_negative")) => Some(DomainError::InsufficientBalance),
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
    ) -> impl std::future::Future<Output = Result<Vec<InsertOutcome<Applied>>, sqlx::Error>> + Send
    {
        insert_batch(pool, batch)
    }

    fn refusal_of(e: &sqlx::Error) -> Option<DomainError> {
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

/// The balance and its version; a user without a row has (0, 0).
pub async fn balance(pool: &PgPool, user: Uuid) -> DomainResult<(i64, i64)> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT balance, version FROM point_balances WHERE user_id = $1")
            .bind(user)
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?;
    Ok(row.unwrap_or((0, 0)))
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
