//! Idempotency keys, stored by each service in the same transaction as the
//! effect, so that a replay after any crash returns the first answer.

// Re-exported so stores that persist keys need not know where `Ctx` lives.
use crate::ctx::Ctx;
pub use crate::ctx::IdemKey;
use crate::outbox::{delete_in_chunks, Chunks};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{to_json, StoreResult};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub fn hash_request(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The stored answer for (user, key), if any; a different request under the
/// same key is refused.
pub async fn lookup<T: DeserializeOwned>(
    pool: &PgPool,
    user_id: Uuid,
    key: &IdemKey,
) -> DomainResult<Option<T>> {
    let row: Option<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(&key.key)
    .fetch_optional(pool)
    .await
    .map_err(crate::error::from_sqlx)?;
    match row {
        None => Ok(None),
        Some((hash, _)) if hash != key.request_hash => Err(DomainError::IdempotencyMismatch),
        Some((_, body)) => serde_json::from_value(body)
            .map(Some)
            .map_err(|e| DomainError::Internal(format!("stored idempotent response: {e}"))),
    }
}

/// Records the answer inside the effect's transaction. Returns false when a
/// concurrent request with the same key won: the caller rolls back and replays.
pub async fn record<T: Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    key: &IdemKey,
    response: &T,
) -> StoreResult<bool> {
    let body = to_json("idempotent response", response)?;
    let res = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(body)
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// The stored answer of this request's key, if it carries one.
pub async fn replay<T: DeserializeOwned>(pool: &PgPool, ctx: &Ctx) -> DomainResult<Option<T>> {
    match &ctx.idem {
        Some(k) => lookup(pool, ctx.principal.user_id, k).await,
        None => Ok(None),
    }
}

/// Records this request's answer in the effect's transaction. A concurrent
/// request with the same key that got there first makes this one a conflict,
/// and the caller's transaction rolls back.
pub async fn record_answer<T: Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    ctx: &Ctx,
    response: &T,
) -> DomainResult<()> {
    if let Some(k) = &ctx.idem {
        if !record(tx, ctx.principal.user_id, k, response).await? {
            return Err(DomainError::Conflict(
                "a request with this idempotency key is in flight".into(),
            ));
        }
    }
    Ok(())
}

/// Deletes keys older than the retention, never younger than 24 h (API.md),
/// in chunks on `idempotency_keys_created`. The primary key is composite, so
/// rows are matched by `ctid` (a TID scan; keys are never updated, so it is
/// stable); an `IN` on `(user_id, key)` plans as a scan of the whole table.
pub async fn prune(pool: &PgPool, retention_secs: i64, chunks: Chunks) -> sqlx::Result<u64> {
    delete_in_chunks(
        pool,
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM idempotency_keys WHERE created_at < $1
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
        retention_secs.max(24 * 3600),
        chunks,
    )
    .await
}
