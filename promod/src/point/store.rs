//! PostgreSQL access of the point ledger. A change is ONE statement: the
//! conditional balance update, the ledger row, the outbox event and the
//! idempotency record commit together or not at all, in one round trip.

use crate::error::from_sqlx;
use crate::idempotency::IdemKey;
use crate::outbox::Event;
use chrono::{DateTime, Utc};
use promo_domain::page::{Page, PageRequest};
use promo_domain::point::{Transaction, TxType};
use promo_domain::{DomainError, DomainResult};
use sqlx::PgPool;
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

/// A ledger row about to be written; `balance_after` is filled in by the
/// database.
pub struct Change<'a> {
    pub tx: Transaction,
    pub event: Event,
    /// The idempotency key and its owner (the caller, maybe an admin).
    pub idem: Option<(&'a IdemKey, Uuid)>,
}

/// The outcome of [`apply`].
pub enum Applied {
    /// Committed: the balance after, and the balance row's version.
    Done { balance: i64, version: i64 },
    /// Another request with the same idempotency key committed first.
    DuplicateKey,
}

/// Credits may create the balance row; debits only update an existing row
/// whose balance covers them. A debit is never a plain upsert: PostgreSQL
/// checks the proposed row's constraints before it looks for a conflict.
const CREDIT: &str = "INSERT INTO point_balances AS b (user_id, balance, version, updated_at)
     VALUES ($2, $5, 1, $10)
     ON CONFLICT (user_id) DO UPDATE
       SET balance = b.balance + EXCLUDED.balance, version = b.version + 1,
           updated_at = EXCLUDED.updated_at
     RETURNING balance, version";

const DEBIT: &str = "UPDATE point_balances
       SET balance = balance + $5, version = version + 1, updated_at = $10
     WHERE user_id = $2 AND balance + $5 >= 0
     RETURNING balance, version";

/// Applies one change atomically. `Ok(None)` means the balance does not cover
/// a debit.
pub async fn apply(pool: &PgPool, c: &Change<'_>) -> DomainResult<Option<Applied>> {
    let t = &c.tx;
    let balance_stmt = if t.delta > 0 { CREDIT } else { DEBIT };
    let sql = format!(
        "WITH bal AS ({balance_stmt}),
         t AS (
           INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                                           reference, description, cancelled_transaction_id, created_at)
           SELECT $1, $2, $3, $4, $5, bal.balance, $6, $7, $8, $10 FROM bal
         ),
         o AS (
           INSERT INTO outbox (id, topic, aggregate_id, payload)
           SELECT $11, $12, $2::text, jsonb_set($13::jsonb, '{{data,balance_after}}', to_jsonb(bal.balance))
           FROM bal
         ),
         k AS (
           INSERT INTO idempotency_keys (user_id, key, request_hash, response)
           SELECT $14, $15, $16, jsonb_set($9::jsonb, '{{balance_after}}', to_jsonb(bal.balance))
           FROM bal WHERE $15::text IS NOT NULL
         )
         SELECT balance, version FROM bal"
    );
    let response = serde_json::to_value(t)
        .map_err(|e| DomainError::Internal(format!("serialize transaction: {e}")))?;
    let payload = serde_json::to_value(&c.event)
        .map_err(|e| DomainError::Internal(format!("serialize event: {e}")))?;
    let res: Result<Option<(i64, i64)>, sqlx::Error> = sqlx::query_as(&sql)
        .bind(t.id)
        .bind(t.user_id)
        .bind(t.tx_type.as_str())
        .bind(t.amount)
        .bind(t.delta)
        .bind(&t.reference)
        .bind(&t.description)
        .bind(t.cancelled_transaction_id)
        .bind(response)
        .bind(t.created_at)
        .bind(c.event.id)
        .bind(&c.event.event_type)
        .bind(payload)
        .bind(c.idem.map(|(_, owner)| owner))
        .bind(c.idem.map(|(k, _)| k.key.as_str()))
        .bind(c.idem.map(|(k, _)| k.request_hash.as_str()))
        .fetch_optional(pool)
        .await;
    match res {
        Ok(Some((balance, version))) => Ok(Some(Applied::Done { balance, version })),
        Ok(None) => Ok(None),
        Err(e) => match refusal_of(&e) {
            Some(Refusal::DuplicateKey) => Ok(Some(Applied::DuplicateKey)),
            Some(Refusal::Domain(d)) => Err(d),
            None => Err(from_sqlx(e)),
        },
    }
}

enum Refusal {
    DuplicateKey,
    Domain(DomainError),
}

/// What a failed change statement means.
fn refusal_of(e: &sqlx::Error) -> Option<Refusal> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    match (d.code().as_deref(), d.constraint()) {
        (Some("23505"), Some("idempotency_keys_pkey")) => Some(Refusal::DuplicateKey),
        (Some("23505"), Some("cancelled_once")) => {
            Some(Refusal::Domain(DomainError::AlreadyCancelled))
        }
        (Some("23514"), Some("balance_not_negative")) => {
            Some(Refusal::Domain(DomainError::InsufficientBalance))
        }
        // bigint out of range: the balance would overflow.
        (Some("22003"), _) => Some(Refusal::Domain(DomainError::validation(
            "amount",
            "amount would overflow the balance",
        ))),
        _ => None,
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
