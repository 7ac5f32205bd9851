//! Rebuilding a role's Redis counters from PostgreSQL, shared by coupon
//! admission and time-sale inventory: a remaining counter and a per-user hash,
//! swapped in by one script that keeps a live counter unless forced. What to
//! install comes from PostgreSQL (`rebuild`).

use crate::cache::Redis;
use crate::error::StoreResult;
use redis::Script;
use std::sync::LazyLock;
use uuid::Uuid;

/// Counters as PostgreSQL knows them.
#[derive(Debug, Clone, Default)]
pub struct CounterSeed {
    pub remaining: i64,
    pub users: Vec<(Uuid, i64)>,
}

/// KEYS = remaining, users, staging users, journal; ARGV = remaining, force.
/// The staging hash is filled first, so the swap is atomic however many users.
/// An installed seed already counts every stored row as taken and every
/// other unit as free, so the journal of reservations not yet settled is
/// cleared with the swap: settling them again would give units back twice.
static INSTALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4])
return 1
"#,
    )
});

const STAGING_TTL_SECS: i64 = 60;

/// The keys one counter set lives under; they share a hash tag.
pub struct CounterKeys {
    pub remaining: String,
    pub users: String,
    pub staging: String,
    /// Reservations admitted but not yet settled (`stock::Entry`).
    pub journal: String,
}

/// Installs `seed`; returns false when a live counter was kept (no `force`).
pub async fn install(
    conn: &Redis,
    keys: CounterKeys,
    seed: &CounterSeed,
    force: bool,
) -> StoreResult<bool> {
    let mut conn = conn.clone();
    // A staging hash of its own: rebuilds started by concurrent requests
    // once shared one, and one's DEL emptied what another was about to swap
    // in, leaving every user at 0 (found by the Redis fault of chaos.sh).
    // The suffix keeps the hash tag; the TTL clears what a dead rebuild left.
    let staging = format!("{}:{}", keys.staging, Uuid::new_v4().simple());
    for chunk in seed.users.chunks(5000) {
        let mut pipe = redis::pipe();
        let hset = pipe.cmd("HSET").arg(&staging);
        for (u, n) in chunk {
            hset.arg(u.to_string()).arg(*n);
        }
        hset.ignore();
        pipe.cmd("EXPIRE")
            .arg(&staging)
            .arg(STAGING_TTL_SECS)
            .ignore();
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let installed: i64 = INSTALL
        .key(keys.remaining)
        .key(keys.users)
        .key(&staging)
        .key(keys.journal)
        .arg(seed.remaining)
        .arg(if force { "1" } else { "0" })
        .invoke_async(&mut conn)
        .await?;
    Ok(installed == 1)
}
