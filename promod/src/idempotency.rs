//! Idempotency keys, stored by each service in the same transaction as the
//! effect, so that a replay after any crash returns the first answer.

// Re-exported so stores that persist keys need not know where `Ctx` lives.
use crate::batcher::{BatchStore, Batcher, InsertOutcome};
use crate::ctx::Ctx;
pub use crate::ctx::IdemKey;
use crate::outbox::{delete_in_chunks, Chunks};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{to_json, StoreError, StoreResult};
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

/// Stores business refusals as their keys' answers. A refusal has no effect
/// to join, so refusals are group-committed among themselves: a sold-out burst
/// of keyed requests would otherwise pay one commit each.
pub struct Answers {
    pool: PgPool,
    refusals: Batcher<Refusals>,
}

impl Answers {
    pub fn start(pool: PgPool) -> Self {
        Answers {
            refusals: Batcher::start(pool.clone(), 2),
            pool,
        }
    }

    /// Runs a keyed write and makes its answer final. A success recorded its
    /// answer with its effect. A business refusal is recorded now, before it
    /// is answered, so that a replay is refused the same way; if the key turns
    /// out to have an answer already (an earlier attempt's), that answer is
    /// returned instead. Any other error replays the stored answer when there
    /// is one, or is returned as it is (it stores nothing: the client may
    /// retry).
    pub async fn keyed<T: DeserializeOwned>(
        &self,
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
        // Set when the key turned out to have an answer: only that answer may
        // be given then.
        let mut answered = false;
        if refused.is_stored_answer() {
            match self.record_refusal(user, key, &refused).await {
                Ok(true) => return Err(refused),
                Ok(false) => answered = true,
                // Answered unrecorded, a retry could be decided otherwise.
                Err(e) => {
                    tracing::warn!(code = refused.code(), error = %e, "refusal not recorded");
                    return Err(DomainError::Unavailable(
                        "answer not recorded, retry".into(),
                    ));
                }
            }
        }
        match lookup(&self.pool, user, key).await {
            Ok(Some(done)) => Ok(done),
            Err(stored)
                if stored.is_stored_answer() || stored == DomainError::IdempotencyMismatch =>
            {
                Err(stored)
            }
            Err(_) if answered => Err(DomainError::Unavailable(
                "stored answer not readable, retry".into(),
            )),
            // No answer stored, or none readable now: this attempt's own.
            Ok(None) | Err(_) => Err(refused),
        }
    }

    /// False when the key already has an answer.
    async fn record_refusal(
        &self,
        user_id: Uuid,
        key: &IdemKey,
        refusal: &DomainError,
    ) -> DomainResult<bool> {
        let body = StoredRefusal {
            code: refusal.code().into(),
            message: refusal.to_string(),
        };
        let body = to_json("stored refusal", &body)?;
        match self.refusals.submit((user_id, key.clone(), body)).await? {
            InsertOutcome::Stored(()) => Ok(true),
            InsertOutcome::Duplicate => Ok(false),
            InsertOutcome::Refused(e) => Err(e),
        }
    }
}

/// Refusals, stored many per transaction.
struct Refusals;

impl BatchStore for Refusals {
    type Item = (Uuid, IdemKey, serde_json::Value);
    type Stored = ();
    const NAME: &'static str = "refusal";

    /// Rows go in in key order, so that two batches with common keys take
    /// their locks in one order instead of deadlocking; of two copies of a
    /// key in the batch, the earlier is stored and the later is `Duplicate`.
    async fn insert_batch(pool: &PgPool, batch: &[Self::Item]) -> StoreResult<Vec<InsertOutcome>> {
        let key = |i: usize| (batch[i].0, batch[i].1.key.as_str());
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| key(i)); // stable: earlier copies first
        order.dedup_by_key(|i| key(*i));
        let rows: Vec<_> = order
            .iter()
            .map(|&i| (batch[i].0, &batch[i].1, batch[i].2.clone()))
            .collect();
        let mut tx = pool.begin().await?;
        let fresh = record_many(&mut tx, &rows, true).await?;
        tx.commit().await?;
        let mut outcomes = vec![InsertOutcome::Duplicate; batch.len()];
        for (i, fresh) in order.into_iter().zip(fresh) {
            if fresh {
                outcomes[i] = InsertOutcome::Stored(());
            }
        }
        Ok(outcomes)
    }

    fn refusal_of(_: &StoreError) -> Option<DomainError> {
        None
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
    let fresh = record_many(tx, &[(user_id, key, body)], false).await?;
    Ok(fresh == [true])
}

/// Records the answers (or refusals) of a batch in one statement inside its
/// transaction; returns, per member, whether its key was fresh. Of two
/// members with the same key, the first wins.
async fn record_many(
    tx: &mut Transaction<'_, Postgres>,
    answers: &[(Uuid, &IdemKey, serde_json::Value)],
    refused: bool,
) -> StoreResult<Vec<bool>> {
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = answers.iter().map(|a| a.0).collect();
    let keys: Vec<&str> = answers.iter().map(|a| a.1.key.as_str()).collect();
    let hashes: Vec<&str> = answers.iter().map(|a| a.1.request_hash.as_str()).collect();
    let bodies: Vec<&serde_json::Value> = answers.iter().map(|a| &a.2).collect();
    let won: Vec<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response, refused)
         SELECT u, k, h, b, $5
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) AS a(u, k, h, b)
         ON CONFLICT DO NOTHING RETURNING user_id, key",
    )
    .bind(&users)
    .bind(&keys)
    .bind(&hashes)
    .bind(&bodies)
    .bind(refused)
    .fetch_all(&mut **tx)
    .await?;
    let mut won: std::collections::HashSet<(Uuid, String)> = won.into_iter().collect();
    Ok(answers
        .iter()
        .map(|(u, k, _)| won.remove(&(*u, k.key.clone())))
        .collect())
}

/// Claims a batch's idempotency keys inside its transaction, in one statement. A member whose key
/// another request already took is `Duplicate` and must not be stored; returns
/// every member's outcome so far and the members to store.
pub async fn claim_keys<'a, T, R: serde::Serialize + 'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &'a [T],
    key: impl Fn(&'a T) -> (uuid::Uuid, Option<&'a IdemKey>, &'a R),
) -> StoreResult<(Vec<InsertOutcome>, Vec<&'a T>)> {
    let mut keyed = Vec::new();
    let mut answers = Vec::new();
    for (i, member) in batch.iter().enumerate() {
        if let (actor, Some(k), answer) = key(member) {
            keyed.push(i);
            answers.push((actor, k, to_json("idempotent response", answer)?));
        }
    }
    let fresh = record_many(tx, &answers, false).await?;
    let mut outcomes = vec![InsertOutcome::Stored(()); batch.len()];
    for (i, fresh) in keyed.into_iter().zip(fresh) {
        if !fresh {
            outcomes[i] = InsertOutcome::Duplicate;
        }
    }
    let stored = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == InsertOutcome::Stored(()))
        .map(|(m, _)| m)
        .collect();
    Ok((outcomes, stored))
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
