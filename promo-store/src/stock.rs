//! The stock port: the one atomic admission decision for every scarce thing
//! (a coupon policy's quantity, a time sale's units), taking `quantity` from
//! the remaining counter and adding it to the user's holding together or not
//! at all, within the per-user limit and, if given, a time window.
//!
//! Implementations: Redis (one Lua script per decision) and in-memory (a
//! mutex). Both run the same contract suite (`promo-store/tests/ports/stock.rs`).

use crate::counters::{CounterKeys, CounterSeed};
use crate::error::StoreError;
use crate::keys;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promo_domain::DomainResult;
use redis::Script;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use uuid::Uuid;

/// What kind of scarce thing a counter belongs to: it names the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A coupon policy: one unit per issued coupon.
    Coupon,
    /// A time sale's stock.
    Sale,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Coupon => "coupon",
            Kind::Sale => "timesale",
        }
    }

    /// The keys of one counter set; they share a hash tag.
    pub fn keys(self, id: Uuid) -> CounterKeys {
        match self {
            Kind::Coupon => CounterKeys {
                remaining: keys::coupon_remaining(id),
                users: keys::coupon_users(id),
                staging: keys::coupon_users_staging(id),
            },
            Kind::Sale => CounterKeys {
                remaining: keys::timesale_inventory(id),
                users: keys::timesale_users(id),
                staging: keys::timesale_users_staging(id),
            },
        }
    }
}

/// The half-open window `[start, end)` a decision must fall in, with the
/// caller's clock reading: the script, not a racy check before it, decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl Window {
    fn contains_now(&self) -> bool {
        self.start <= self.now && self.now < self.end
    }
}

/// One request to take `quantity` units for `user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub kind: Kind,
    pub id: Uuid,
    pub user: Uuid,
    pub quantity: i64,
    pub per_user_limit: i64,
    pub window: Option<Window>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Taken: the user now holds `user_total` units, `remaining` are left.
    Taken {
        user_total: i64,
        remaining: i64,
    },
    SoldOut,
    LimitExceeded,
    /// Outside the window.
    NotActive,
    /// No live counter: rebuild from PostgreSQL, then ask again.
    Uninitialized,
}

/// Which parts of a taking to give back.
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

/// The live remaining counter and per-user holdings of one counter set.
pub type Snapshot = (i64, HashMap<Uuid, i64>);

#[async_trait]
pub trait StockPort: Send + Sync + 'static {
    async fn take(&self, ask: &Ask) -> DomainResult<Decision>;
    /// Gives back `quantity` units of the stock and/or of the user's holding
    /// (compensation, a cancel). A missing counter is left missing: its
    /// rebuild from PostgreSQL already counts the units as free.
    async fn release(
        &self,
        kind: Kind,
        id: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()>;
    /// Installs counters. Without `force` a live counter is never overwritten.
    /// Returns whether the seed was installed.
    async fn seed(
        &self,
        kind: Kind,
        id: Uuid,
        seed: &CounterSeed,
        force: bool,
    ) -> DomainResult<bool>;
    /// Adds to the remaining counter if it is live (a changed total).
    async fn adjust(&self, kind: Kind, id: Uuid, delta: i64) -> DomainResult<()>;
    /// The live remaining counter, if there is one.
    async fn remaining(&self, kind: Kind, id: Uuid) -> DomainResult<Option<i64>>;
    async fn snapshot(&self, kind: Kind, id: Uuid) -> DomainResult<Option<Snapshot>>;
    /// Claims on idempotency keys of requests in flight (`promod`'s `inflight.rs`),
    /// kept where the admission state is.
    fn claims(&self) -> &dyn crate::claims::KeyClaims;
}

/// KEYS = remaining, users; ARGV = user, quantity, limit, then now, start,
/// end (milliseconds) when there is a window. Returns {remaining, user total}
/// or {negative code}. It checks before it writes, so the counter never goes
/// below zero (unlike a DECR followed by a compensating INCR).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[4] then
  local now = tonumber(ARGV[4])
  if now < tonumber(ARGV[5]) or now >= tonumber(ARGV[6]) then return {-4} end
end
local stock = redis.call('GET', KEYS[1])
if not stock then return {-3} end
stock = tonumber(stock)
local qty = tonumber(ARGV[2])
if stock <= 0 then return {-1} end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + qty > tonumber(ARGV[3]) then return {-2} end
if stock < qty then return {-1} end
redis.call('DECRBY', KEYS[1], qty)
return {stock - qty, redis.call('HINCRBY', KEYS[2], ARGV[1], qty)}
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

static ADJUST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"#,
    )
});

fn decision(reply: &[i64]) -> DomainResult<Decision> {
    Ok(match reply {
        [-1] => Decision::SoldOut,
        [-2] => Decision::LimitExceeded,
        [-3] => Decision::Uninitialized,
        [-4] => Decision::NotActive,
        [remaining, user_total] => Decision::Taken {
            user_total: *user_total,
            remaining: *remaining,
        },
        other => {
            return Err(promo_domain::DomainError::Internal(format!(
                "unexpected stock script reply {other:?}"
            )))
        }
    })
}

#[derive(Clone)]
pub struct RedisStock {
    conn: crate::cache::Redis,
    claims: crate::claims::RedisClaims,
}

impl RedisStock {
    pub fn new(conn: crate::cache::Redis) -> Self {
        RedisStock {
            claims: crate::claims::RedisClaims(conn.clone()),
            conn,
        }
    }
}

#[async_trait]
impl StockPort for RedisStock {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &self.claims
    }

    async fn take(&self, ask: &Ask) -> DomainResult<Decision> {
        let keys = ask.kind.keys(ask.id);
        let mut call = TAKE.key(keys.remaining);
        call.key(keys.users)
            .arg(ask.user.to_string())
            .arg(ask.quantity)
            .arg(ask.per_user_limit);
        if let Some(w) = ask.window {
            call.arg(w.now.timestamp_millis())
                .arg(w.start.timestamp_millis())
                .arg(w.end.timestamp_millis());
        }
        let reply: Vec<i64> = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        decision(&reply)
    }

    async fn release(
        &self,
        kind: Kind,
        id: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()> {
        let keys = kind.keys(id);
        let _: i64 = RELEASE
            .key(keys.remaining)
            .key(keys.users)
            .arg(user.to_string())
            .arg(quantity)
            .arg(if what.stock { "1" } else { "0" })
            .arg(if what.user { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn seed(
        &self,
        kind: Kind,
        id: Uuid,
        seed: &CounterSeed,
        force: bool,
    ) -> DomainResult<bool> {
        Ok(crate::counters::install(&self.conn, kind.keys(id), seed, force).await?)
    }

    async fn adjust(&self, kind: Kind, id: Uuid, delta: i64) -> DomainResult<()> {
        let _: i64 = ADJUST
            .key(kind.keys(id).remaining)
            .arg(delta)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn remaining(&self, kind: Kind, id: Uuid) -> DomainResult<Option<i64>> {
        let left = redis::cmd("GET")
            .arg(kind.keys(id).remaining)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        Ok(left)
    }

    async fn snapshot(&self, kind: Kind, id: Uuid) -> DomainResult<Option<Snapshot>> {
        let Some(remaining) = self.remaining(kind, id).await? else {
            return Ok(None);
        };
        let raw: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(kind.keys(id).users)
            .query_async(&mut self.conn.clone())
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
#[derive(Clone, Default)]
pub struct MemoryStock {
    state: Arc<Mutex<HashMap<(Kind, Uuid), Snapshot>>>,
    claims: Arc<crate::claims::MemoryClaims>,
}

impl MemoryStock {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(Kind, Uuid), Snapshot>) -> R) -> R {
        f(&mut self.state.lock().expect("stock mutex"))
    }
}

#[async_trait]
impl StockPort for MemoryStock {
    fn claims(&self) -> &dyn crate::claims::KeyClaims {
        &*self.claims
    }

    async fn take(&self, ask: &Ask) -> DomainResult<Decision> {
        if ask.window.is_some_and(|w| !w.contains_now()) {
            return Ok(Decision::NotActive);
        }
        Ok(self.with(|state| {
            let Some((stock, users)) = state.get_mut(&(ask.kind, ask.id)) else {
                return Decision::Uninitialized;
            };
            // The script's order of checks.
            let held = users.get(&ask.user).copied().unwrap_or(0);
            if *stock <= 0 {
                return Decision::SoldOut;
            }
            if held + ask.quantity > ask.per_user_limit {
                return Decision::LimitExceeded;
            }
            if *stock < ask.quantity {
                return Decision::SoldOut;
            }
            *stock -= ask.quantity;
            users.insert(ask.user, held + ask.quantity);
            Decision::Taken {
                user_total: held + ask.quantity,
                remaining: *stock,
            }
        }))
    }

    async fn release(
        &self,
        kind: Kind,
        id: Uuid,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> DomainResult<()> {
        self.with(|state| {
            let Some((stock, users)) = state.get_mut(&(kind, id)) else {
                return;
            };
            if what.stock {
                *stock += quantity;
            }
            if let Some(n) = users.get_mut(&user).filter(|_| what.user) {
                *n -= quantity;
                if *n <= 0 {
                    users.remove(&user);
                }
            }
        });
        Ok(())
    }

    async fn seed(
        &self,
        kind: Kind,
        id: Uuid,
        seed: &CounterSeed,
        force: bool,
    ) -> DomainResult<bool> {
        Ok(self.with(|state| {
            if !force && state.contains_key(&(kind, id)) {
                return false;
            }
            let users = seed.users.iter().copied().collect();
            state.insert((kind, id), (seed.remaining, users));
            true
        }))
    }

    async fn adjust(&self, kind: Kind, id: Uuid, delta: i64) -> DomainResult<()> {
        self.with(|state| {
            if let Some((remaining, _)) = state.get_mut(&(kind, id)) {
                *remaining += delta;
            }
        });
        Ok(())
    }

    async fn remaining(&self, kind: Kind, id: Uuid) -> DomainResult<Option<i64>> {
        Ok(self.with(|state| state.get(&(kind, id)).map(|c| c.0)))
    }

    async fn snapshot(&self, kind: Kind, id: Uuid) -> DomainResult<Option<Snapshot>> {
        Ok(self.with(|state| state.get(&(kind, id)).cloned()))
    }
}

/// The counters of one set as PostgreSQL, the source of truth, knows them:
/// what is left of the total after the stored rows, and each user's holding.
/// A coupon policy counts its coupons (`issued_quantity` is kept with them in
/// each batch); a sale counts the units of its confirmed orders, from the
/// same rows as the per-user sums so the two agree.
pub async fn seed_of(pool: &PgPool, kind: Kind, id: Uuid) -> DomainResult<CounterSeed> {
    let (total_sql, users_sql, what) = match kind {
        Kind::Coupon => (
            "SELECT total_quantity - issued_quantity FROM coupon_policies WHERE id = $1",
            "SELECT user_id, count(*) FROM coupons WHERE policy_id = $1 GROUP BY user_id",
            "coupon policy",
        ),
        Kind::Sale => (
            "SELECT total_quantity - (SELECT coalesce(sum(quantity), 0)::bigint
               FROM time_sale_orders WHERE time_sale_id = $1 AND status = 'CONFIRMED')
             FROM time_sales WHERE id = $1",
            "SELECT user_id, sum(quantity)::bigint FROM time_sale_orders
             WHERE time_sale_id = $1 AND status = 'CONFIRMED' GROUP BY user_id",
            "time sale",
        ),
    };
    let (left,): (i64,) = sqlx::query_as(total_sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| promo_domain::DomainError::NotFound(what.into()))?;
    let users: Vec<(Uuid, i64)> = sqlx::query_as(users_sql)
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?;
    Ok(CounterSeed {
        remaining: left.max(0),
        users,
    })
}

/// Rebuilds one counter set from PostgreSQL: the roles' path at start-up
/// and on a missing counter, and `promoctl inventory seed`'s. Without
/// `force` a live counter is kept; returns whether the seed was installed.
pub async fn rebuild(
    pool: &PgPool,
    stock: &dyn StockPort,
    kind: Kind,
    id: Uuid,
    force: bool,
) -> DomainResult<bool> {
    let seed = seed_of(pool, kind, id).await?;
    let installed = stock.seed(kind, id, &seed, force).await?;
    if installed {
        tracing::info!(kind = kind.as_str(), %id, remaining = seed.remaining, users = seed.users.len(), force, "counters rebuilt");
    }
    Ok(installed)
}

/// Rebuilds every counter set of `kind`; returns how many were installed.
pub async fn rebuild_all(
    pool: &PgPool,
    stock: &dyn StockPort,
    kind: Kind,
    force: bool,
) -> DomainResult<usize> {
    let sql = match kind {
        Kind::Coupon => "SELECT id FROM coupon_policies",
        Kind::Sale => "SELECT id FROM time_sales",
    };
    let ids: Vec<(Uuid,)> = sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?;
    let mut n = 0;
    for (id,) in ids {
        if rebuild(pool, stock, kind, id, force).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes one counter set, as a lost or flushed Redis would (tests and
/// fault drills).
pub async fn forget(conn: &crate::cache::Redis, kind: Kind, id: Uuid) -> DomainResult<()> {
    let keys = kind.keys(id);
    let _: i64 = redis::cmd("DEL")
        .arg(keys.remaining)
        .arg(keys.users)
        .arg(keys.staging)
        .query_async(&mut conn.clone())
        .await
        .map_err(StoreError::from)?;
    Ok(())
}
