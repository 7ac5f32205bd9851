//! Claims on idempotency keys of writes in flight. A retry that arrives while
//! the first attempt with the same key is still running must not be decided
//! on its own (promod's `inflight::exclusive` says why); the first attempt
//! holds a claim here until it is done. Kept next to the admission state, so
//! each port hands out its own (`AdmissionPort::claims`).

use crate::error::StoreError;
use async_trait::async_trait;
use promo_domain::DomainResult;
use std::collections::HashSet;
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
            .map_err(StoreError::from)?;
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
