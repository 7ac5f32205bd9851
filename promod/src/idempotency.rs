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
use std::future::Future;
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
/// same key is refused. A stored business refusal comes back as that error.
pub async fn lookup<T: DeserializeOwned>(
    pool: &PgPool,
    user_id: Uuid,
    key: &IdemKey,
) -> DomainResult<Option<T>> {
    let row: Option<(String, serde_json::Value, bool)> = sqlx::query_as(
        "SELECT request_hash, response, refused FROM idempotency_keys
         WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(&key.key)
    .fetch_optional(pool)
    .await
    .map_err(crate::error::from_sqlx)?;
    let corrupt =
        |e: serde_json::Error| DomainError::Internal(format!("stored idempotent response: {e}"));
    match row {
        None => Ok(None),
        Some((hash, _, _)) if hash != key.request_hash => Err(DomainError::IdempotencyMismatch),
        Some((_, body, true)) => {
            let r: StoredRefusal = serde_json::from_value(body).map_err(corrupt)?;
            Err(DomainError::from_parts(&r.code, &r.message, None))
        }
        Some((_, body, false)) => serde_json::from_value(body).map(Some).map_err(corrupt),
    }
}

/// How a refusal is kept in `response` (`refused` set).
#[derive(Serialize, serde::Deserialize)]
struct StoredRefusal {
    code: String,
    message: String,
}

/// Records a business refusal as the key's answer, in a transaction of its
/// own (a refusal has no effect to join). False when the key already has an
/// answer.
async fn record_refusal(
    pool: &PgPool,
    user_id: Uuid,
    key: &IdemKey,
    refusal: &DomainError,
) -> StoreResult<bool> {
    let body = StoredRefusal {
        code: refusal.code().into(),
        message: refusal.to_string(),
    };
    insert(pool, user_id, key, to_json("stored refusal", &body)?, true).await
}

/// One key's answer (or refusal); false when the key already has one.
async fn insert<'e>(
    db: impl sqlx::PgExecutor<'e>,
    user_id: Uuid,
    key: &IdemKey,
    body: serde_json::Value,
    refused: bool,
) -> StoreResult<bool> {
    let res = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response, refused)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(body)
    .bind(refused)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Runs a keyed write and makes its answer final. A success recorded its
/// answer with its effect. A business refusal is recorded now, before it is
/// answered, so that a replay is refused the same way; if the key turns out to
/// have an answer already (an earlier attempt's), that answer is returned
/// instead. Any other error replays the stored answer when there is one, or is
/// returned as it is (it stores nothing: the client may retry).
pub async fn keyed<T: DeserializeOwned>(
    pool: &PgPool,
    ctx: &Ctx,
    work: impl Future<Output = DomainResult<T>>,
) -> DomainResult<T> {
    let refused = match work.await {
        Ok(done) => return Ok(done),
        Err(e) => e,
    };
    let Some(key) = &ctx.idem else {
        return Err(refused);
    };
    let user = ctx.principal.user_id;
    if refused.is_stored_answer() {
        match record_refusal(pool, user, key, &refused).await {
            Ok(true) => return Err(refused),
            Ok(false) => {}
            // Answered unrecorded, a retry could be decided otherwise.
            Err(e) => {
                tracing::warn!(code = refused.code(), error = %e, "refusal not recorded");
                return Err(DomainError::Unavailable(
                    "answer not recorded, retry".into(),
                ));
            }
        }
    }
    match lookup(pool, user, key).await {
        Ok(Some(done)) => Ok(done),
        Err(stored) if stored.is_stored_answer() || stored == DomainError::IdempotencyMismatch => {
            Err(stored)
        }
        // No answer stored, or none readable now: this attempt's own.
        Ok(None) | Err(_) => Err(refused),
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
    insert(&mut **tx, user_id, key, body, false).await
}

/// Records the answers of a batch in one statement inside its transaction;
/// returns, per member, whether its key was fresh. Of two members with the
/// same key, the first wins.
pub async fn record_many(
    tx: &mut Transaction<'_, Postgres>,
    answers: &[(Uuid, &IdemKey, serde_json::Value)],
) -> StoreResult<Vec<bool>> {
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = answers.iter().map(|a| a.0).collect();
    let keys: Vec<&str> = answers.iter().map(|a| a.1.key.as_str()).collect();
    let hashes: Vec<&str> = answers.iter().map(|a| a.1.request_hash.as_str()).collect();
    let bodies: Vec<&serde_json::Value> = answers.iter().map(|a| &a.2).collect();
    let won: Vec<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])
         ON CONFLICT DO NOTHING RETURNING user_id, key",
    )
    .bind(&users)
    .bind(&keys)
    .bind(&hashes)
    .bind(&bodies)
    .fetch_all(&mut **tx)
    .await?;
    let mut won: std::collections::HashSet<(Uuid, String)> = won.into_iter().collect();
    Ok(answers
        .iter()
        .map(|(u, k, _)| won.remove(&(*u, k.key.clone())))
        .collect())
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
