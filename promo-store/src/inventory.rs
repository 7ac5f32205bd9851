//! The inventory port: one atomic decision per order, taking `quantity` units
//! of the sale's stock and of the user's allowance together or not at all.
//!
//! Implementations: Redis (one Lua script per decision) and in-memory (a mutex).
//! Both run the same contract suite (`tests/ports/inventory.rs`).

use crate::error::StoreError;
use crate::keys;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promo_domain::DomainResult;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use uuid::Uuid;

/// Which parts of a reservation to give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub stock: bool,
    pub user: bool,
}

impl Release {
    pub const BOTH: Release = Release {
        stock: true,
        user: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved; the stock left after this order.
    Reserved {
        remaining: i64,
    },
    SoldOut,
    LimitExceeded,
    /// `now` is outside `[start_at, end_at)`.
    NotActive,
    /// No live counter: rebuild from PostgreSQL, then ask again.
    Uninitialized,
}

/// One order's request to the port. The window travels with it so that the
/// script, not a racy check before it, is the authority at the injected `now`.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub sale: Uuid,
    pub user: Uuid,
    pub quantity: i64,
    pub per_user_limit: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

pub use crate::counters::CounterSeed;

#[async_trait]
pub trait InventoryPort: Send + Sync + 'static {
    async fn try_reserve(&self, ask: Ask) -> DomainResult<Reservation>;
    /// Gives back `quantity` units of the stock and/or of the user's allowance
    /// (a failed insert, a cancelled order). A missing counter is left missing:
    /// its rebuild from PostgreSQL already counts the units as free.
    async fn release(
        &self,
        sale: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()>;
    /// Installs counters. Without `force` a live counter is never overwritten.
    /// Returns whether the seed was installed.
    async fn seed(&self, sale: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool>;
    /// The live stock, if there is a counter.
    async fn remaining(&self, sale: Uuid) -> DomainResult<Option<i64>>;
    /// The live stock and per-user totals.
    async fn snapshot(&self, sale: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>>;
    /// Claims on idempotency keys of requests in flight (`claims.rs`),
    /// kept where the admission state is.
    fn claims(&self) -> &dyn crate::claims::KeyClaims;
}

/// Returns the stock left (>= 0) or a negative refusal code. It never
/// decrements below zero, unlike a DECR followed by a compensating INCR.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[4])
if now < tonumber(ARGV[5]) or now >= tonumber(ARGV[6]) then return -4 end
local stock = redis.call('GET', KEYS[1])
if not stock then return -3 end
stock = tonumber(stock)
local qty = tonumber(ARGV[2])
if stock <= 0 then return -1 end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + qty > tonumber(ARGV[3]) then return -2 end
if stock < qty then return -1 end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
return stock - qty
"#,
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local qty = tonumber(ARGV[2])
if ARGV[3] == '1' then redis.call('INCRBY', KEYS[1], qty) end
if ARGV[4] == '1' then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -qty)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return 1
"#,
    )
});

#[derive(Clone)]
pub struct RedisInventory {
    conn: crate::cache::Redis,
    claims: crate::claims::RedisClaims,
}

impl RedisInventory {
    pub fn new(conn: crate::cache::Redis) -> Self {
        RedisInventory {
            claims: crate::claims::RedisClaims(conn.clone()),
            conn,
        }
    }
}

#[async_trait]
impl InventoryPort for RedisInventory {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &self.claims
    }

    async fn try_reserve(&self, ask: Ask) -> DomainResult<Reservation> {
        let mut conn = self.conn.clone();
        let n: i64 = RESERVE
            .key(keys::timesale_inventory(ask.sale))
            .key(keys::timesale_users(ask.sale))
            .arg(ask.user.to_string())
            .arg(ask.quantity)
            .arg(ask.per_user_limit)
            .arg(ask.now.timestamp_millis())
            .arg(ask.start_at.timestamp_millis())
            .arg(ask.end_at.timestamp_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(match n {
            -1 => Reservation::SoldOut,
            -2 => Reservation::LimitExceeded,
            -3 => Reservation::Uninitialized,
            -4 => Reservation::NotActive,
            left => Reservation::Reserved { remaining: left },
        })
    }

    async fn release(
        &self,
        sale: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(keys::timesale_inventory(sale))
            .key(keys::timesale_users(sale))
            .arg(user.to_string())
            .arg(quantity)
            .arg(if what.stock { "1" } else { "0" })
            .arg(if what.user { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn seed(&self, sale: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool> {
        let keys = crate::counters::CounterKeys {
            remaining: keys::timesale_inventory(sale),
            users: keys::timesale_users(sale),
            staging: keys::timesale_users_staging(sale),
        };
        Ok(crate::counters::install(&self.conn, keys, seed, force).await?)
    }

    async fn remaining(&self, sale: Uuid) -> DomainResult<Option<i64>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(keys::timesale_inventory(sale))
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?)
    }

    async fn snapshot(&self, sale: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>> {
        let Some(remaining) = self.remaining(sale).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let raw: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(keys::timesale_users(sale))
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

/// Stock and per-user totals of one sale.
type Counters = (i64, HashMap<Uuid, i64>);

/// The in-memory implementation: the same contract, one mutex.
#[derive(Clone, Default)]
pub struct MemoryInventory {
    state: Arc<Mutex<HashMap<Uuid, Counters>>>,
    claims: Arc<crate::claims::MemoryClaims>,
}

#[async_trait]
impl InventoryPort for MemoryInventory {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &*self.claims
    }

    async fn try_reserve(&self, ask: Ask) -> DomainResult<Reservation> {
        if ask.now < ask.start_at || ask.now >= ask.end_at {
            return Ok(Reservation::NotActive);
        }
        let mut state = self.state.lock().expect("inventory mutex");
        let Some((stock, users)) = state.get_mut(&ask.sale) else {
            return Ok(Reservation::Uninitialized);
        };
        if *stock <= 0 {
            return Ok(Reservation::SoldOut);
        }
        let held = users.entry(ask.user).or_insert(0);
        if *held + ask.quantity > ask.per_user_limit {
            if *held == 0 {
                users.remove(&ask.user);
            }
            return Ok(Reservation::LimitExceeded);
        }
        if *stock < ask.quantity {
            if *held == 0 {
                users.remove(&ask.user);
            }
            return Ok(Reservation::SoldOut);
        }
        *stock -= ask.quantity;
        *held += ask.quantity;
        Ok(Reservation::Reserved { remaining: *stock })
    }

    async fn release(
        &self,
        sale: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()> {
        let mut state = self.state.lock().expect("inventory mutex");
        if let Some((stock, users)) = state.get_mut(&sale) {
            if what.stock {
                *stock += quantity;
            }
            if let Some(n) = users.get_mut(&user).filter(|_| what.user) {
                *n -= quantity;
                if *n <= 0 {
                    users.remove(&user);
                }
            }
        }
        Ok(())
    }

    async fn seed(&self, sale: Uuid, seed: &CounterSeed, force: bool) -> DomainResult<bool> {
        let mut state = self.state.lock().expect("inventory mutex");
        if !force && state.contains_key(&sale) {
            return Ok(false);
        }
        state.insert(sale, (seed.remaining, seed.users.iter().copied().collect()));
        Ok(true)
    }

    async fn remaining(&self, sale: Uuid) -> DomainResult<Option<i64>> {
        Ok(self
            .state
            .lock()
            .expect("inventory mutex")
            .get(&sale)
            .map(|c| c.0))
    }

    async fn snapshot(&self, sale: Uuid) -> DomainResult<Option<(i64, HashMap<Uuid, i64>)>> {
        Ok(self
            .state
            .lock()
            .expect("inventory mutex")
            .get(&sale)
            .cloned())
    }
}

/// Tests (and `promoctl`) simulate a lost Redis for one sale by deleting its keys.
pub async fn forget(conn: &crate::cache::Redis, sale: Uuid) -> DomainResult<()> {
    let mut conn = conn.clone();
    let _: i64 = redis::cmd("DEL")
        .arg(keys::timesale_inventory(sale))
        .arg(keys::timesale_users(sale))
        .arg(keys::timesale_users_staging(sale))
        .query_async(&mut conn)
        .await
        .map_err(StoreError::from)?;
    Ok(())
}
