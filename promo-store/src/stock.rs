//! The stock port: the one atomic admission decision for every scarce thing
//! (a coupon policy's quantity, a time sale's units), taking `quantity` from
//! the remaining counter and adding it to the user's holding together or not
//! at all, within the per-user limit and, if given, a time window.
//!
//! Every taking is journaled with it (an [`Entry`] in a sorted set by admission
//! time, beside the counters): the engine settles it once the row is stored or
//! compensated, and [`reconcile`] gives back what was taken for a row that
//! never came (a crash between admission and commit, a lost reply), exactly
//! once. See ARCHITECTURE.md, "The reservation engine".
//!
//! Implementations: Redis (one Lua script per decision) and in-memory (a
//! mutex). Both run the same contract suite (`promo-store/tests/ports/stock.rs`).

use crate::counters::{CounterKeys, CounterSeed};
use crate::error::{StoreError, StoreResult};
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

    /// A claim's key, inside the counter set's hash tag (one script sees both).
    pub fn claim_key(self, id: Uuid, actor: Uuid, key: &str) -> String {
        match self {
            Kind::Coupon => keys::coupon_claim(id, actor, key),
            Kind::Sale => keys::timesale_claim(id, actor, key),
        }
    }

    /// The keys of one counter set; they share a hash tag.
    pub fn keys(self, id: Uuid) -> CounterKeys {
        match self {
            Kind::Coupon => CounterKeys {
                remaining: keys::coupon_remaining(id),
                users: keys::coupon_users(id),
                staging: keys::coupon_users_staging(id),
                journal: keys::coupon_journal(id),
            },
            Kind::Sale => CounterKeys {
                remaining: keys::timesale_inventory(id),
                users: keys::timesale_users(id),
                staging: keys::timesale_users_staging(id),
                journal: keys::timesale_journal(id),
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

/// The idempotency key of a keyed reservation: while a taking under it is
/// admitted and not yet settled (its row stored, refused or given up), another
/// taking under the same key is refused as [`Decision::InFlight`]. A retry that
/// arrives while its first attempt is still committing must not be decided on
/// its own: it would see the stock that attempt holds as taken and answer
/// `SOLD_OUT` to a client about to own a row. Taken in the admission script
/// itself, so a keyed reservation costs no extra round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// Whose key it is (the caller, maybe an admin acting for a user).
    pub actor: Uuid,
    pub key: &'a str,
    /// How long a claim outlives a holder that never settles it (a crash).
    pub ttl: std::time::Duration,
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
    /// Another attempt under the same [`Claim`] holds a taking.
    InFlight,
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

impl Release {
    /// Nothing to give back: the row was stored.
    pub const NONE: Release = Release {
        stock: false,
        user: false,
    };
}

/// The live remaining counter and per-user holdings of one counter set.
pub type Snapshot = (i64, HashMap<Uuid, i64>);

/// One journaled change: the id of the row it is for, whose holding it
/// changed, and by how much. All of it is in the member, so a reconciler
/// needs nothing else to settle it.
///
/// A taking (admission) is owed back unless its row is stored. A release
/// (`release`: a stored row ending, a cancel or an expired hold, journaled
/// before the row's transaction commits) is owed back only if that
/// transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub reservation: Uuid,
    pub user: Uuid,
    pub quantity: i64,
    pub release: bool,
}

impl Entry {
    pub fn of(ask: &Ask, reservation: Uuid) -> Entry {
        Entry {
            reservation,
            user: ask.user,
            quantity: ask.quantity,
            release: false,
        }
    }

    /// The release of a stored row's units.
    pub fn release_of(row: Uuid, user: Uuid, quantity: i64) -> Entry {
        Entry {
            reservation: row,
            user,
            quantity,
            release: true,
        }
    }

    fn member(&self) -> String {
        let tag = if self.release { ":r" } else { "" };
        format!("{}:{}:{}{tag}", self.reservation, self.user, self.quantity)
    }

    fn parse(member: &str) -> Option<Entry> {
        let mut parts = member.split(':');
        let entry = Entry {
            reservation: parts.next()?.parse().ok()?,
            user: parts.next()?.parse().ok()?,
            quantity: parts.next()?.parse().ok()?,
            release: match parts.next() {
                None => false,
                Some("r") => true,
                Some(_) => return None,
            },
        };
        parts.next().is_none().then_some(entry)
    }
}

/// The journal of one counter set as a reconciler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    /// Entries not yet settled, of any age.
    pub size: u64,
    /// Entries at least as old as asked (at most [`OVERDUE_PAGE`]).
    pub overdue: Vec<Entry>,
}

/// How many overdue entries of one counter set one pass reads.
pub const OVERDUE_PAGE: usize = 1000;

#[async_trait]
pub trait StockPort: Send + Sync + 'static {
    /// The admission decision; a taking is journaled as `reservation` (the id
    /// of the row it is for) in the same atomic step, and holds `claim` until
    /// [`StockPort::release_claim`] (or the claim's TTL).
    async fn take(
        &self,
        ask: &Ask,
        reservation: Uuid,
        claim: Option<&Claim<'_>>,
    ) -> DomainResult<Decision>;
    /// Ends a claim whose taking is settled, off the caller's path: until it
    /// is gone a retry is refused as in flight and finds the stored answer; a
    /// lost release lapses with the TTL.
    fn release_claim(&self, kind: Kind, id: Uuid, actor: Uuid, key: &str);
    /// Removes `entry` from the journal and, only if it was still there, gives
    /// back `what` of it (nothing once the row is stored). Returns whether it
    /// was there: of any number of concurrent settlings of one entry (the
    /// engine's compensation, reconcilers in several processes) exactly one
    /// gives anything back. A missing counter is left missing, as `release`.
    async fn settle(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        what: Release,
    ) -> DomainResult<bool>;
    /// Removes `entry`, giving nothing back, only if it is still at least
    /// `older_than` old by the journal's clock: a reconciler that judged it
    /// not owed must not remove the same member journaled again meanwhile
    /// (a release retried after its first transaction rolled back). Returns
    /// whether it was removed.
    async fn drop_overdue(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        older_than: std::time::Duration,
    ) -> DomainResult<bool>;
    /// Journals releases (`Entry::release_of`) at the journal's clock, before
    /// the transaction that ends their rows commits; settle them after it.
    async fn journal(&self, kind: Kind, id: Uuid, entries: &[Entry]) -> DomainResult<()>;
    /// Settles many entries of one counter set with [`StockPort::settle`]'s
    /// rule (each gives back `what` only if it was still journaled), in one
    /// step where the store allows; returns how many were still there.
    async fn settle_many(
        &self,
        kind: Kind,
        id: Uuid,
        entries: &[Entry],
        what: Release,
    ) -> DomainResult<u64> {
        let mut n = 0;
        for e in entries {
            n += u64::from(self.settle(kind, id, e, what).await?);
        }
        Ok(n)
    }
    /// Removes the journal entry of a row that is stored (nothing to give
    /// back), off the caller's path and batched with others: a lost removal
    /// is harmless, the reconciler finds the row and removes the entry.
    fn settle_stored(&self, kind: Kind, id: Uuid, entry: &Entry);
    /// The journals of counter sets `ids`, with the entries admitted at least
    /// `older_than` ago by the journal's own clock (Redis `TIME`, one clock for
    /// every process).
    async fn journals(
        &self,
        kind: Kind,
        ids: &[Uuid],
        older_than: std::time::Duration,
    ) -> DomainResult<Vec<Journal>>;
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
}

/// KEYS = remaining, users, journal, and the claim when there is one; ARGV =
/// user, quantity, limit, journal member, now, start, end (milliseconds; empty
/// without a window), claim TTL (ms; empty without a claim). Returns
/// {remaining, user total} or {negative code}. A held claim refuses first:
/// the retry of a running attempt is not decided on its own; a refused taking
/// sets no claim. It checks before it writes, so
/// the counter never goes below zero (unlike a DECR followed by a compensating
/// INCR). A taking is journaled at Redis's own time in the same step, so no
/// crash can leave a taking that nothing knows of.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[8] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then return {-5} end
if ARGV[5] ~= '' then
  local now = tonumber(ARGV[5])
  if now < tonumber(ARGV[6]) or now >= tonumber(ARGV[7]) then return {-4} end
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
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[4])
if ARGV[8] ~= '' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[8]) end
return {stock - qty, redis.call('HINCRBY', KEYS[2], ARGV[1], qty)}
"#,
    )
});

/// KEYS = remaining, users, journal; ARGV = journal member (empty for a
/// cancel, which has none), user, quantity, stock and user flags. With a
/// member it gives back only if this call removed the entry, so a taking is
/// settled once whoever (engine, reconciler, another process) comes first.
/// A missing counter is left missing: its rebuild counts the units as free.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local qty = tonumber(ARGV[3])
if ARGV[4] == '1' then redis.call('INCRBY', KEYS[1], qty) end
if ARGV[5] == '1' then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -qty)
  if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return 1
"#,
    )
});

/// KEYS = journal; ARGV = members. Scored at Redis's own time, as takings are.
static JOURNAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local at = t[1] * 1000 + math.floor(t[2] / 1000)
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], at, ARGV[i]) end
return #ARGV
"#,
    )
});

/// KEYS = journal; ARGV = member, age in ms. Removes the member only if it
/// was scored at least that long ago by Redis's clock.
static DROP_OVERDUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if tonumber(score) > now - tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"#,
    )
});

/// GIVE_BACK for many entries: KEYS as GIVE_BACK; ARGV = stock flag, user
/// flag, then (member, user, quantity) triples. Returns how many were there.
static GIVE_BACK_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local live = redis.call('EXISTS', KEYS[1]) == 1
local n = 0
for i = 3, #ARGV, 3 do
  if redis.call('ZREM', KEYS[3], ARGV[i]) == 1 then
    n = n + 1
    local qty = tonumber(ARGV[i + 2])
    if live and ARGV[1] == '1' then redis.call('INCRBY', KEYS[1], qty) end
    if live and ARGV[2] == '1' then
      local left = redis.call('HINCRBY', KEYS[2], ARGV[i + 1], -qty)
      if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[i + 1]) end
    end
  end
end
return n
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
        [-5] => Decision::InFlight,
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
    deferred: Arc<crate::deferred::Deferred>,
}

impl RedisStock {
    async fn give_back(
        &self,
        kind: Kind,
        id: Uuid,
        member: &str,
        user: Uuid,
        quantity: i64,
        what: Release,
    ) -> StoreResult<i64> {
        let keys = kind.keys(id);
        let flag = |on: bool| if on { "1" } else { "0" };
        let reply = GIVE_BACK
            .key(keys.remaining)
            .key(keys.users)
            .key(keys.journal)
            .arg(member)
            .arg(user.to_string())
            .arg(quantity)
            .arg(flag(what.stock))
            .arg(flag(what.user))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(reply)
    }

    pub fn new(conn: crate::cache::Redis) -> Self {
        let deferred = Arc::new(crate::deferred::Deferred::new(conn.clone()));
        RedisStock { conn, deferred }
    }
}

#[async_trait]
impl StockPort for RedisStock {
    async fn take(
        &self,
        ask: &Ask,
        reservation: Uuid,
        claim: Option<&Claim<'_>>,
    ) -> DomainResult<Decision> {
        let keys = ask.kind.keys(ask.id);
        let mut call = TAKE.key(keys.remaining);
        call.key(keys.users)
            .key(keys.journal)
            .arg(ask.user.to_string())
            .arg(ask.quantity)
            .arg(ask.per_user_limit)
            .arg(Entry::of(ask, reservation).member());
        match ask.window {
            Some(w) => call
                .arg(w.now.timestamp_millis())
                .arg(w.start.timestamp_millis())
                .arg(w.end.timestamp_millis()),
            None => call.arg("").arg("").arg(""),
        };
        match claim {
            Some(c) => call
                .key(ask.kind.claim_key(ask.id, c.actor, c.key))
                .arg(c.ttl.as_millis().max(1) as u64),
            None => call.arg(""),
        };
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
        self.give_back(kind, id, "", user, quantity, what).await?;
        Ok(())
    }

    async fn settle(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        what: Release,
    ) -> DomainResult<bool> {
        let (member, user, qty) = (entry.member(), entry.user, entry.quantity);
        Ok(self.give_back(kind, id, &member, user, qty, what).await? == 1)
    }

    async fn drop_overdue(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        older_than: std::time::Duration,
    ) -> DomainResult<bool> {
        let removed: i64 = DROP_OVERDUE
            .key(kind.keys(id).journal)
            .arg(entry.member())
            .arg(older_than.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        Ok(removed == 1)
    }

    async fn journal(&self, kind: Kind, id: Uuid, entries: &[Entry]) -> DomainResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut call = JOURNAL.key(kind.keys(id).journal);
        for e in entries {
            call.arg(e.member());
        }
        let _: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn settle_many(
        &self,
        kind: Kind,
        id: Uuid,
        entries: &[Entry],
        what: Release,
    ) -> DomainResult<u64> {
        let keys = kind.keys(id);
        let flag = |on: bool| if on { "1" } else { "0" };
        let mut n = 0;
        for chunk in entries.chunks(1000) {
            let mut call = GIVE_BACK_MANY.key(&keys.remaining);
            call.key(&keys.users)
                .key(&keys.journal)
                .arg(flag(what.stock))
                .arg(flag(what.user));
            for e in chunk {
                call.arg(e.member()).arg(e.user.to_string()).arg(e.quantity);
            }
            let settled: u64 = call
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::from)?;
            n += settled;
        }
        Ok(n)
    }

    fn settle_stored(&self, kind: Kind, id: Uuid, entry: &Entry) {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(kind.keys(id).journal).arg(entry.member());
        self.deferred.send(zrem);
    }

    fn release_claim(&self, kind: Kind, id: Uuid, actor: Uuid, key: &str) {
        let mut del = redis::cmd("DEL");
        del.arg(kind.claim_key(id, actor, key));
        self.deferred.send(del);
    }

    async fn journals(
        &self,
        kind: Kind,
        ids: &[Uuid],
        older_than: std::time::Duration,
    ) -> DomainResult<Vec<Journal>> {
        let mut conn = self.conn.clone();
        // The age is taken by the clock that scored the entries, before the
        // caller looks for their rows (see `reconcile`).
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let cutoff = secs * 1000 + micros / 1000 - older_than.as_millis() as i64;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let journal = kind.keys(*id).journal;
                pipe.cmd("ZCARD").arg(&journal);
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(&journal)
                    .arg("-inf")
                    .arg(cutoff)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(OVERDUE_PAGE);
            }
            let replies: Vec<(u64, Vec<String>)> = pipe
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await
                .map_err(StoreError::from)?
                .chunks(2)
                .map(|pair| redis::from_redis_value(&redis::Value::Array(pair.to_vec())))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?;
            for (size, members) in replies {
                let overdue = members.iter().filter_map(|m| Entry::parse(m)).collect();
                out.push(Journal { size, overdue });
            }
        }
        Ok(out)
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
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    counters: HashMap<(Kind, Uuid), Snapshot>,
    journals: HashMap<(Kind, Uuid), HashMap<Entry, std::time::Instant>>,
    /// Claim key -> when it lapses.
    claims: HashMap<String, std::time::Instant>,
}

impl MemoryState {
    fn give_back(&mut self, kind: Kind, id: Uuid, user: Uuid, quantity: i64, what: Release) {
        let Some((stock, users)) = self.counters.get_mut(&(kind, id)) else {
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
    }
}

impl MemoryStock {
    fn with<R>(&self, f: impl FnOnce(&mut MemoryState) -> R) -> R {
        f(&mut self.state.lock().expect("stock mutex"))
    }
}

#[async_trait]
impl StockPort for MemoryStock {
    async fn take(
        &self,
        ask: &Ask,
        reservation: Uuid,
        claim: Option<&Claim<'_>>,
    ) -> DomainResult<Decision> {
        let now = std::time::Instant::now();
        let claim = claim.map(|c| (ask.kind.claim_key(ask.id, c.actor, c.key), now + c.ttl));
        Ok(self.with(|state| {
            // The script's order of checks, under one lock as the script is atomic.
            if claim
                .as_ref()
                .is_some_and(|(c, _)| state.claims.get(c).is_some_and(|until| *until > now))
            {
                return Decision::InFlight;
            }
            if ask.window.is_some_and(|w| !w.contains_now()) {
                return Decision::NotActive;
            }
            let Some((stock, users)) = state.counters.get_mut(&(ask.kind, ask.id)) else {
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
            let remaining = *stock;
            state
                .journals
                .entry((ask.kind, ask.id))
                .or_default()
                .insert(Entry::of(ask, reservation), std::time::Instant::now());
            state.claims.extend(claim);
            Decision::Taken {
                user_total: held + ask.quantity,
                remaining,
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
        self.with(|state| state.give_back(kind, id, user, quantity, what));
        Ok(())
    }

    async fn settle(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        what: Release,
    ) -> DomainResult<bool> {
        Ok(self.with(|state| {
            let removed = state
                .journals
                .get_mut(&(kind, id))
                .and_then(|j| j.remove(entry))
                .is_some();
            if removed {
                state.give_back(kind, id, entry.user, entry.quantity, what);
            }
            removed
        }))
    }

    async fn drop_overdue(
        &self,
        kind: Kind,
        id: Uuid,
        entry: &Entry,
        older_than: std::time::Duration,
    ) -> DomainResult<bool> {
        Ok(self.with(|state| {
            let Some(j) = state.journals.get_mut(&(kind, id)) else {
                return false;
            };
            match j.get(entry) {
                Some(at) if at.elapsed() >= older_than => j.remove(entry).is_some(),
                _ => false,
            }
        }))
    }

    async fn journal(&self, kind: Kind, id: Uuid, entries: &[Entry]) -> DomainResult<()> {
        let now = std::time::Instant::now();
        self.with(|state| {
            let j = state.journals.entry((kind, id)).or_default();
            j.extend(entries.iter().map(|e| (*e, now)));
        });
        Ok(())
    }

    fn release_claim(&self, kind: Kind, id: Uuid, actor: Uuid, key: &str) {
        let claim = kind.claim_key(id, actor, key);
        self.with(|state| state.claims.remove(&claim));
    }

    fn settle_stored(&self, kind: Kind, id: Uuid, entry: &Entry) {
        self.with(|state| {
            if let Some(j) = state.journals.get_mut(&(kind, id)) {
                j.remove(entry);
            }
        });
    }

    async fn journals(
        &self,
        kind: Kind,
        ids: &[Uuid],
        older_than: std::time::Duration,
    ) -> DomainResult<Vec<Journal>> {
        Ok(self.with(|state| {
            ids.iter()
                .map(|id| {
                    let Some(j) = state.journals.get(&(kind, *id)) else {
                        return Journal::default();
                    };
                    Journal {
                        size: j.len() as u64,
                        overdue: j
                            .iter()
                            .filter(|(_, at)| at.elapsed() >= older_than)
                            .map(|(e, _)| *e)
                            .take(OVERDUE_PAGE)
                            .collect(),
                    }
                })
                .collect()
        }))
    }

    async fn seed(
        &self,
        kind: Kind,
        id: Uuid,
        seed: &CounterSeed,
        force: bool,
    ) -> DomainResult<bool> {
        Ok(self.with(|state| {
            if !force && state.counters.contains_key(&(kind, id)) {
                return false;
            }
            let users = seed.users.iter().copied().collect();
            state.counters.insert((kind, id), (seed.remaining, users));
            state.journals.remove(&(kind, id));
            true
        }))
    }

    async fn adjust(&self, kind: Kind, id: Uuid, delta: i64) -> DomainResult<()> {
        self.with(|state| {
            if let Some((remaining, _)) = state.counters.get_mut(&(kind, id)) {
                *remaining += delta;
            }
        });
        Ok(())
    }

    async fn remaining(&self, kind: Kind, id: Uuid) -> DomainResult<Option<i64>> {
        Ok(self.with(|state| state.counters.get(&(kind, id)).map(|c| c.0)))
    }

    async fn snapshot(&self, kind: Kind, id: Uuid) -> DomainResult<Option<Snapshot>> {
        Ok(self.with(|state| state.counters.get(&(kind, id)).cloned()))
    }
}

/// The counters of one set as PostgreSQL, the source of truth, knows them:
/// each user's holding (a policy's coupons, a sale's confirmed units) and
/// what is left of the total after them. Remaining is derived from the same
/// rows as the holdings, so a batch committing between two reads cannot make
/// the two disagree.
pub async fn seed_of(pool: &PgPool, kind: Kind, id: Uuid) -> DomainResult<CounterSeed> {
    let (total_sql, users_sql, what) = match kind {
        Kind::Coupon => (
            "SELECT total_quantity FROM coupon_policies WHERE id = $1",
            "SELECT user_id, count(*) FROM coupons WHERE policy_id = $1 GROUP BY user_id",
            "coupon policy",
        ),
        Kind::Sale => (
            "SELECT total_quantity FROM time_sales WHERE id = $1",
            "SELECT user_id, sum(quantity)::bigint FROM time_sale_orders
             WHERE time_sale_id = $1 AND status IN ('PENDING', 'CONFIRMED') GROUP BY user_id",
            "time sale",
        ),
    };
    let (total,): (i64,) = sqlx::query_as(total_sql)
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
    let held: i64 = users.iter().map(|(_, n)| n).sum();
    Ok(CounterSeed {
        remaining: (total - held).max(0),
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

/// What one reconciliation pass over a kind found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Journal entries not yet settled, of any age, before the pass.
    pub journaled: u64,
    /// Overdue entries without a row: their units were given back.
    pub released: u64,
    /// Overdue entries whose row exists (the engine's settle was lost).
    pub cleared: u64,
}

/// The counter sets that may hold journal entries. Entries are written only
/// while a policy or sale is open, and a running reconciler settles them
/// within its bound; counter sets closed for longer than `lookback` (and
/// not changed since) are left out, except in a full pass (`None`), which a
/// reconciler makes when it starts, after any downtime.
pub async fn journaled_sets(
    pool: &PgPool,
    kind: Kind,
    lookback: Option<std::time::Duration>,
) -> DomainResult<Vec<Uuid>> {
    let sql = match kind {
        Kind::Coupon => {
            "SELECT id FROM coupon_policies WHERE $1::float8 IS NULL
               OR valid_until > now() - make_interval(secs => $1)
               OR updated_at > now() - make_interval(secs => $1)"
        }
        Kind::Sale => {
            "SELECT id FROM time_sales WHERE $1::float8 IS NULL
               OR end_at > now() - make_interval(secs => $1)
               OR updated_at > now() - make_interval(secs => $1)"
        }
    };
    let ids: Vec<(Uuid,)> = sqlx::query_as(sql)
        .bind(lookback.map(|d| d.as_secs_f64()))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// Settles the journal entries of `ids` admitted at least `bound` ago: an
/// entry whose row is stored is removed, one whose row is not gives its
/// units back (stock and the user's holding) and is removed, in one step
/// that only one settler of an entry can win ([`StockPort::settle`]).
///
/// Why this never gives back a unit whose row is stored or will be: the ages
/// are read before the rows are looked for, and `bound` exceeds the longest
/// time after admission in which a row can still commit (the engine refuses
/// to commit a row older than its commit deadline, half the bound). A row
/// absent when looked for, more than `bound` after its admission, never
/// comes. See ARCHITECTURE.md, "The reservation engine".
pub async fn reconcile(
    pool: &PgPool,
    stock: &dyn StockPort,
    kind: Kind,
    ids: &[Uuid],
    bound: std::time::Duration,
) -> DomainResult<Reconciled> {
    let mut done = Reconciled::default();
    let journals = stock.journals(kind, ids, bound).await?;
    for (id, journal) in ids.iter().zip(journals) {
        done.journaled += journal.size;
        if journal.overdue.is_empty() {
            continue;
        }
        let owed = owed_back(pool, kind, &journal.overdue).await?;
        for entry in &journal.overdue {
            if !owed.contains(&(entry.reservation, entry.release)) {
                // Not owed as of the row just read; dropped only if nobody
                // journaled it again since.
                if stock.drop_overdue(kind, *id, entry, bound).await? {
                    done.cleared += 1;
                }
            } else if stock.settle(kind, *id, entry, Release::BOTH).await? {
                tracing::info!(kind = kind.as_str(), %id, reservation = %entry.reservation, user_id = %entry.user, quantity = entry.quantity, release = entry.release, "unsettled entry given back");
                done.released += 1;
            }
        }
    }
    Ok(done)
}

/// The overdue entries (row id, whether a release) whose units are owed
/// back: a taking whose row was
/// never stored, and a release whose row did end (its transaction
/// committed; a release journaled for a transaction that rolled back is
/// owed nothing).
async fn owed_back(
    pool: &PgPool,
    kind: Kind,
    entries: &[Entry],
) -> DomainResult<std::collections::HashSet<(Uuid, bool)>> {
    let (takings, releases): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| !e.release);
    let (stored_sql, ended_sql) = match kind {
        Kind::Coupon => (
            "SELECT id FROM coupons WHERE id = ANY($1)",
            // Coupons give nothing back once stored.
            "SELECT id FROM coupons WHERE id = ANY($1) AND false",
        ),
        Kind::Sale => (
            "SELECT id FROM time_sale_orders WHERE id = ANY($1)",
            "SELECT id FROM time_sale_orders WHERE id = ANY($1)
               AND status IN ('CANCELLED', 'EXPIRED')",
        ),
    };
    let ids = |es: &[&Entry]| es.iter().map(|e| e.reservation).collect::<Vec<Uuid>>();
    let stored = rows(pool, stored_sql, &ids(&takings)).await?;
    let ended = rows(pool, ended_sql, &ids(&releases)).await?;
    let owed_takings = takings
        .iter()
        .filter(|e| !stored.contains(&e.reservation))
        .map(|e| (e.reservation, false));
    let owed_releases = ended.into_iter().map(|r| (r, true));
    Ok(owed_takings.chain(owed_releases).collect())
}

async fn rows(
    pool: &PgPool,
    sql: &str,
    ids: &[Uuid],
) -> DomainResult<std::collections::HashSet<Uuid>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(sqlx::query_as::<_, (Uuid,)>(sql)
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|(r,)| r)
        .collect())
}

/// Deletes one counter set, as a lost or flushed Redis would (tests and
/// fault drills).
pub async fn forget(conn: &crate::cache::Redis, kind: Kind, id: Uuid) -> DomainResult<()> {
    let keys = kind.keys(id);
    let _: i64 = redis::cmd("DEL")
        .arg(keys.remaining)
        .arg(keys.users)
        .arg(keys.staging)
        .arg(keys.journal)
        .query_async(&mut conn.clone())
        .await
        .map_err(StoreError::from)?;
    Ok(())
}
