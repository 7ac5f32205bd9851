//! The admission port: one atomic decision per issue request, taking a slot of
//! the policy and of the user together or not at all.
//!
//! Implementations: Redis (one Lua script per decision) and in-memory (a mutex).
//! Both run the same contract suite (`tests/ports/admission.rs`).

use crate::error::StoreError;
use crate::keys;
use async_trait::async_trait;
use promo_domain::DomainResult;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub remaining: bool,
    pub user: bool,
}

impl Release {
    pub const BOTH: Release = Release {
        remaining: true,
        user: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted as the user's `user_seq`-th coupon of the policy.
    Admitted {
        user_seq: i64,
    },
    SoldOut,
    LimitExceeded,
    /// No live counter: rebuild from PostgreSQL, then ask again.
    Uninitialized,
}

pub use crate::counters::CounterSeed;

#[async_trait]
pub trait AdmissionPort: Send + Sync + 'static {
    async fn try_reserve(
        &self,
        policy: Uuid,
        user: Uuid,
        per_user_limit: i64,
    ) -> DomainResult<Admission>;
    /// Compensation for a coupon that was never stored: gives back the policy
    /// slot and/or the user's slot.
    async fn release(&self, policy: Uuid, user: Uuid, slot: Release) -> DomainResult<()>;
    /// Installs counters. Without `force` a live counter is never overwritten.
    /// Returns whether the seed was installed.
    async fn seed(&self, policy: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool>;
    /// Adds to the remaining counter if it is live (a PATCH of total_quantity).
    async fn adjust_remaining(&self, policy: Uuid, delta: i64) -> DomainResult<()>;
    /// The live remaining counter and per-user counts.
    async fn snapshot(&self, policy: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>>;
    /// Claims on idempotency keys of requests in flight (`claims.rs`),
    /// kept where the admission state is.
    fn claims(&self) -> &dyn crate::claims::KeyClaims;
}

static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local remaining = redis.call('GET', KEYS[1])
if not remaining then return -3 end
if tonumber(remaining) <= 0 then return -1 end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held >= tonumber(ARGV[2]) then return -2 end
redis.call('DECR', KEYS[1])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"#,
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('INCR', KEYS[1]) end
if ARGV[3] == '1' then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return 1
"#,
    )
});

static ADJUST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"#,
    )
});

#[derive(Clone)]
pub struct RedisAdmission {
    conn: crate::cache::Redis,
    claims: crate::claims::RedisClaims,
}

impl RedisAdmission {
    pub fn new(conn: crate::cache::Redis) -> Self {
        RedisAdmission {
            claims: crate::claims::RedisClaims(conn.clone()),
            conn,
        }
    }
}

#[async_trait]
impl AdmissionPort for RedisAdmission {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &self.claims
    }

    async fn try_reserve(
        &self,
        policy: Uuid,
        user: Uuid,
        per_user_limit: i64,
    ) -> DomainResult<Admission> {
        let mut conn = self.conn.clone();
        let n: i64 = RESERVE
            .key(keys::coupon_remaining(policy))
            .key(keys::coupon_users(policy))
            .arg(user.to_string())
            .arg(per_user_limit)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(match n {
            -1 => Admission::SoldOut,
            -2 => Admission::LimitExceeded,
            -3 => Admission::Uninitialized,
            seq => Admission::Admitted { user_seq: seq },
        })
    }

    async fn release(&self, policy: Uuid, user: Uuid, slot: Release) -> DomainResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(keys::coupon_remaining(policy))
            .key(keys::coupon_users(policy))
            .arg(user.to_string())
            .arg(if slot.remaining { "1" } else { "0" })
            .arg(if slot.user { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn seed(&self, policy: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool> {
        let keys = crate::counters::CounterKeys {
            remaining: keys::coupon_remaining(policy),
            users: keys::coupon_users(policy),
            staging: keys::coupon_users_staging(policy),
        };
        Ok(crate::counters::install(&self.conn, keys, seed, force).await?)
    }

    async fn adjust_remaining(&self, policy: Uuid, delta: i64) -> DomainResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = ADJUST
            .key(keys::coupon_remaining(policy))
            .arg(delta)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn snapshot(&self, policy: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>> {
        let mut conn = self.conn.clone();
        let remaining: Option<i64> = redis::cmd("GET")
            .arg(keys::coupon_remaining(policy))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let Some(remaining) = remaining else {
            return Ok(None);
        };
        let raw: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(keys::coupon_users(policy))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let users = raw
            .into_iter()
            .filter_map(|(k, v)| Uuid::parse_str(&k).ok().map(|u| (u, v)))
            .collect();
        Ok(Some((remaining, users)))
    }
}

/// The in-memory implementation: the same contract, one mutex.
/// Remaining and per-user counts of one policy.
type Counters = (i64, HashMap<Uuid, i64>);

#[derive(Clone, Default)]
pub struct MemoryAdmission {
    state: Arc<Mutex<HashMap<Uuid, Counters>>>,
    claims: Arc<crate::claims::MemoryClaims>,
}

#[async_trait]
impl AdmissionPort for MemoryAdmission {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &*self.claims
    }

    async fn try_reserve(
        &self,
        policy: Uuid,
        user: Uuid,
        per_user_limit: i64,
    ) -> DomainResult<Admission> {
        let mut state = self.state.lock().expect("admission mutex");
        let Some((remaining, users)) = state.get_mut(&policy) else {
            return Ok(Admission::Uninitialized);
        };
        if *remaining <= 0 {
            return Ok(Admission::SoldOut);
        }
        let held = users.entry(user).or_insert(0);
        if *held >= per_user_limit {
            return Ok(Admission::LimitExceeded);
        }
        *remaining -= 1;
        *held += 1;
        Ok(Admission::Admitted { user_seq: *held })
    }

    async fn release(&self, policy: Uuid, user: Uuid, slot: Release) -> DomainResult<()> {
        let mut state = self.state.lock().expect("admission mutex");
        if let Some((remaining, users)) = state.get_mut(&policy) {
            if slot.remaining {
                *remaining += 1;
            }
            if let Some(n) = users.get_mut(&user).filter(|_| slot.user) {
                *n -= 1;
                if *n <= 0 {
                    users.remove(&user);
                }
            }
        }
        Ok(())
    }

    async fn seed(&self, policy: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool> {
        let mut state = self.state.lock().expect("admission mutex");
        if !force && state.contains_key(&policy) {
            return Ok(false);
        }
        state.insert(
            policy,
            (seed.remaining, seed.users.iter().copied().collect()),
        );
        Ok(true)
    }

    async fn adjust_remaining(&self, policy: Uuid, delta: i64) -> DomainResult<()> {
        if let Some((remaining, _)) = self.state.lock().expect("admission mutex").get_mut(&policy) {
            *remaining += delta;
        }
        Ok(())
    }

    async fn snapshot(&self, policy: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>> {
        Ok(self
            .state
            .lock()
            .expect("admission mutex")
            .get(&policy)
            .cloned())
    }
}
