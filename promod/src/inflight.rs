//! Keyed writes in flight. A retry that arrives while the first attempt with
//! the same idempotency key is still running finds no stored answer yet; if
//! it were decided on its own it would see the stock the first attempt holds
//! as taken and answer `SOLD_OUT` to a client that is about to have an order
//! (found by the PostgreSQL fault of `scripts/chaos.sh`). The first attempt
//! claims its key here; until it releases the claim, a retry gets the stored
//! answer if there is one by then, or 409 `CONFLICT` (ask again). The claims
//! themselves (`KeyClaims`) live in `promo_store::claims`.

use crate::ctx::Ctx;
use promo_domain::{DomainError, DomainResult};
use promo_store::claims::KeyClaims;
use promo_store::keys;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::future::Future;

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
