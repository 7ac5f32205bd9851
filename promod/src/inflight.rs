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
/// has one).
///
/// A keyed write reads no stored answer before it runs: that read cost a
/// PostgreSQL round trip per keyed write, half the throughput of unkeyed
/// ones. A retry of a request that already has an answer is decided again
/// instead; the group commit finds its key taken (`InsertOutcome::Duplicate`),
/// gives back what admission took and replays the stored answer, and any
/// refusal (`SOLD_OUT` once the stock is gone, `NOT_ACTIVE` after the end, a
/// mismatching request) finds the stored answer when it tries to record its
/// own (`idempotency::keyed`). So a retry still gets its first answer; the
/// price is that, while it runs, it holds the units it took for a moment, as
/// any concurrent attempt does.
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
    let out = crate::idempotency::keyed(pool, ctx, work).await;
    claims.release(&key).await;
    out
}
