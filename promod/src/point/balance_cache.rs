//! The balance cache at `point:balance:{user}` (5-minute TTL, as in the
//! original). Entries are `"{balance}:{held}:{version}"`
//! ([`CachedBalance`]) and a write only replaces an
//! older version, so concurrent writers and read-through fills can never put a
//! stale balance over a newer one. Decisions never read it: a use is decided
//! by PostgreSQL. Redis errors are logged and ignored (reads fall back).

use promo_store::cache::Redis;
use promo_store::keys::{self, CachedBalance};
use redis::Script;
use std::sync::LazyLock;
use uuid::Uuid;

/// SET if the stored version is older (or the entry is missing or unreadable).
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, ':(%-?%d+)$'))
  if v and v >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
",
    )
});

#[derive(Clone)]
pub struct BalanceCache {
    redis: Option<Redis>,
    ttl_secs: u64,
}

impl BalanceCache {
    pub fn new(redis: Option<Redis>, ttl_secs: u64) -> Self {
        BalanceCache { redis, ttl_secs }
    }

    /// The cached balance and held amount; an unreadable entry is a miss.
    pub async fn get(&self, user: Uuid) -> Option<(i64, i64)> {
        let mut r = self.redis.clone()?;
        let got: Result<Option<String>, _> = redis::cmd("GET")
            .arg(keys::point_balance(user))
            .query_async(&mut r)
            .await;
        match got {
            Ok(Some(s)) => CachedBalance::parse(&s).map(|c| (c.balance, c.held)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(user_id = %user, error = %e, "balance cache read failed");
                None
            }
        }
    }

    pub async fn put(&self, user: Uuid, c: CachedBalance) {
        let Some(mut r) = self.redis.clone() else {
            return;
        };
        let res: Result<i64, _> = PUT
            .key(keys::point_balance(user))
            .arg(c.entry())
            .arg(c.version)
            .arg(self.ttl_secs.max(1))
            .invoke_async(&mut r)
            .await;
        if let Err(e) = res {
            failed(Some(user), &e);
        }
    }

    /// [`BalanceCache::put`] of many rows in one pipeline (the lot sweeper's).
    pub async fn put_many(&self, rows: &[(Uuid, CachedBalance)]) {
        let Some(mut r) = self.redis.clone() else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        // Loaded first in the same pipeline, so each EVALSHA finds it.
        pipe.load_script(&PUT).ignore();
        for (user, c) in rows {
            let mut put = PUT.prepare_invoke();
            put.key(keys::point_balance(*user))
                .arg(c.entry())
                .arg(c.version)
                .arg(self.ttl_secs.max(1));
            pipe.invoke_script(&put).ignore();
        }
        let res: Result<(), _> = pipe.query_async(&mut r).await;
        if let Err(e) = res {
            failed(None, &e);
        }
    }
}

fn failed(user: Option<Uuid>, e: &redis::RedisError) {
    // A stale entry can then live until its TTL; see ARCHITECTURE.md.
    tracing::warn!(user_id = ?user, error = %e, "balance cache update failed");
    metrics::counter!("promo_point_cache_errors_total").increment(1);
}
