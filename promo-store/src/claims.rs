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
pub struct RedisClaims {
    conn: crate::cache::Redis,
    deferred: std::sync::Arc<crate::deferred::Deferred>,
}

impl RedisClaims {
    pub fn new(
        conn: crate::cache::Redis,
        deferred: std::sync::Arc<crate::deferred::Deferred>,
    ) -> Self {
        RedisClaims { conn, deferred }
    }
}

#[async_trait]
impl KeyClaims for RedisClaims {
    async fn claim(&self, key: &str) -> DomainResult<bool> {
        let mut conn = self.conn.clone();
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

    /// Off the answer's path: until the claim is gone, a retry finds the
    /// stored answer; a lost release lapses with the TTL.
    async fn release(&self, key: &str) {
        let mut del = redis::cmd("DEL");
        del.arg(key);
        self.deferred.send(del);
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
