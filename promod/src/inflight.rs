//! Keyed writes in flight. A retry that arrives while the first attempt with
//! the same idempotency key is still running finds no stored answer yet; if
//! it were decided on its own it would see the stock the first attempt holds
//! as taken and answer `SOLD_OUT` to a client that is about to have an order
//! (found by the PostgreSQL fault of `scripts/chaos.sh`). The first attempt
//! claims its key here; until it releases the claim, a retry gets the stored
//! answer if there is one by then, or 409 `CONFLICT` (ask again).

use crate::ctx::Ctx;
use crate::keys;
use async_trait::async_trait;
use promo_domain::{DomainError, DomainResult};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

/// A claim outlives a crashed holder by at most this long.
const CLAIM_TTL_MS: u64 = 60_000;

#[async_trait]
pub trait KeyClaims: Send + Sync {
    /// True when this caller now holds `key`.
    async fn claim(&self, key: &str) -> DomainResult<bool>;
    async fn release(&self, key: &str);
}

#[derive(Clone)]
pub struct RedisClaims(pub crate::cache::Redis);

#[async_trait]
impl KeyClaims for RedisClaims {
    async fn claim(&self, key: &str) -> DomainResult<bool> {
        let mut conn = self.0.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(CLAIM_TTL_MS)
            .query_async(&mut conn)
            .await
            .map_err(crate::error::from_redis)?;
        Ok(set.is_some())
    }

    async fn release(&self, key: &str) {
        let mut conn = self.0.clone();
        let res: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
        if let Err(e) = res {
            // The claim then lapses with its TTL; retries get 409 until then.
            tracing::warn!(error = %e, "idempotency claim not released");
        }
    }
}

#[derive(Default)]
pub struct MemoryClaims(Mutex<HashSet<String>>);

#[async_trait]
impl KeyClaims for MemoryClaims {
    async fn claim(&self, key: &str) -> DomainResult<bool> {
        Ok(self.0.lock().expect("claims mutex").insert(key.to_owned()))
    }

    async fn release(&self, key: &str) {
        self.0.lock().expect("claims mutex").remove(key);
    }
}

/// Runs `work` as the only attempt of this request's idempotency key (when it
/// has one). A stored answer is replayed instead, checked after the claim so
/// that an attempt finishing in between is seen.
pub async fn exclusive<T, F>(
    claims: &dyn KeyClaims,
    pool: &PgPool,
    scope: &str,
    ctx: &Ctx,
    work: F,
) -> DomainResult<T>
where
    T: DeserializeOwned,
    F: Future<Output = DomainResult<T>>,
{
    let Some(idem) = &ctx.idem else {
        return work.await;
    };
    let key = keys::idempotency_claim(scope, ctx.principal.user_id, &idem.key);
    if !claims.claim(&key).await? {
        return crate::idempotency::replay(pool, ctx).await?.ok_or_else(|| {
            DomainError::Conflict("a request with this idempotency key is in flight".into())
        });
    }
    let out = match crate::idempotency::replay(pool, ctx).await {
        Ok(Some(done)) => Ok(done),
        Ok(None) => work.await,
        Err(e) => Err(e),
    };
    claims.release(&key).await;
    out
}
