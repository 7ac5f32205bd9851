//! The limit on failed code redemptions (API.md, "Coupon codes"): so that
//! codes cannot be guessed, a redemption is refused 429 with `Retry-After`
//! while its user's bucket or its client address's bucket is empty. It is
//! its own limit and stays on when the general rate limits are off, on every
//! port that serves the route (the gateway's and the coupon role's own).
//!
//! - **Per user**: checked when a redemption starts, spent when it failed
//!   as a guess would (a mistyped, unknown or spent code, marked
//!   [`FailedRedemption`] by the route), before that failure is answered.
//!   So that guesses sent at once cannot all pass the check of a full
//!   bucket, each process also lets a user have at most the burst of
//!   redemptions in flight.
//! - **Per address**: the same, but without the bound in flight: everyone
//!   behind one NAT shares it, so it limits only how many fail.
//!
//! Failures sent at once overdraw the buckets with no floor, and their
//! owner waits until the refill repays the debt: over time nobody fails
//! faster than the refill rate. The buckets' clock is Redis's own `TIME`,
//! as the general limiter's; their keys share one hash tag, so the script's
//! keys live in one Cluster slot.
//!
//! A bucket Redis said is empty is remembered in the process until Redis
//! said it would hold a token again (for at most [`REMEMBERED`]): a sender who
//! is refused keeps being refused without a script call, so guessing at
//! full speed costs Redis nothing. Only refusals are remembered, never an
//! open bucket, so the memory can refuse early but never lets through what
//! Redis would refuse.

use crate::client_addr::client_bucket;
use crate::config::CodeGuardConfig;
use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use promo_domain::principal::Principal;
use promo_domain::DomainError;
use promo_store::cache::Redis;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The longest this process remembers that a bucket is empty. Tokens come
/// back only by the refill, so a bucket Redis said is empty until some time
/// stays empty at least until then: at one configuration, remembering it
/// cannot refuse wrongly (a faster refill set meanwhile is heard within
/// this bound).
pub const REMEMBERED: Duration = Duration::from_secs(60);

/// KEYS = the user's bucket, the address's; ARGV[1] = the step: `check`
/// or `fail` (spend a token of each); then each bucket's burst and refill
/// per second. Returns, per bucket, the milliseconds until it holds a token
/// (0: open).
static BUCKETS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waits = {}
for i, key in ipairs(KEYS) do
  local cap, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000)
  if ARGV[1] == 'fail' then
    tokens = tokens - 1
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil((cap - tokens) / rate * 1000) + 1000)
  end
  waits[i] = 0
  if tokens < 1 then
    waits[i] = math.ceil((1 - tokens) * 1000 / rate)
  end
end
return waits
",
    )
});

pub struct CodeGuard {
    redis: Redis,
    cfg: CodeGuardConfig,
    trusted: Vec<IpNet>,
    /// Redemptions in flight in this process, per user.
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    /// Until when each bucket Redis said is empty stays empty, by its key.
    empty: moka::future::Cache<String, Instant>,
}

/// A redemption's two buckets: its user's and its client address's.
type Keys = [String; 2];

/// A user's place among their redemptions in flight, given back on drop.
struct Slot {
    user: String,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Marks the answer of a failed redemption (a mistyped, unknown or spent
/// code), which [`guard`] counts against its sender.
#[derive(Debug, Clone, Copy)]
pub struct FailedRedemption;

impl CodeGuard {
    pub fn new(redis: Redis, cfg: CodeGuardConfig, trusted: Vec<IpNet>) -> Self {
        CodeGuard {
            redis,
            cfg,
            trusted,
            in_flight: Arc::default(),
            empty: moka::future::Cache::builder()
                .time_to_live(REMEMBERED)
                .max_capacity(1_000_000)
                .build(),
        }
    }

    fn keys(user: &str, addr: &str) -> Keys {
        [
            format!("codeguard:{{redeem}}:user:{user}"),
            format!("codeguard:{{redeem}}:ip:{addr}"),
        ]
    }

    /// The milliseconds until every bucket remembered empty holds a token
    /// again (0: none is).
    async fn remembered(&self, keys: &Keys) -> u64 {
        let now = Instant::now();
        let mut wait = 0;
        for k in keys {
            if let Some(t) = self.empty.get(k).await {
                wait = wait.max(t.saturating_duration_since(now).as_millis() as u64);
            }
        }
        wait
    }

    /// Remembers the buckets a script call said are empty; returns the
    /// longest wait.
    async fn remember(&self, keys: &Keys, waits: [u64; 2]) -> u64 {
        let now = Instant::now();
        for (k, w) in keys.iter().zip(waits).filter(|(_, w)| *w > 0) {
            let until = now + Duration::from_millis(w).min(REMEMBERED);
            self.empty.insert(k.clone(), until).await;
        }
        waits.into_iter().max().unwrap_or(0)
    }

    /// Whether a redemption may start: from memory, or asking Redis.
    async fn check(&self, keys: &Keys) -> Result<u64, redis::RedisError> {
        let wait = self.remembered(keys).await;
        if wait > 0 {
            return Ok(wait);
        }
        let waits = self.step("check", keys).await?;
        Ok(self.remember(keys, waits).await)
    }

    /// Spends a token of both buckets for a failure.
    async fn fail(&self, keys: &Keys) -> Result<(), redis::RedisError> {
        let waits = self.step("fail", keys).await?;
        self.remember(keys, waits).await;
        Ok(())
    }

    /// A place for one more of `user`'s redemptions, if they have fewer
    /// than the burst in flight here.
    fn slot(&self, user: &str) -> Option<Slot> {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user.to_owned()).or_insert(0);
        if *n >= self.cfg.user_burst {
            return None;
        }
        *n += 1;
        Some(Slot {
            user: user.to_owned(),
            in_flight: self.in_flight.clone(),
        })
    }

    /// One step of the script on a redemption's buckets: each one's wait.
    async fn step(&self, step: &str, keys: &Keys) -> Result<[u64; 2], redis::RedisError> {
        let c = &self.cfg;
        let (user, addr): (i64, i64) = BUCKETS
            .key(&keys[0])
            .key(&keys[1])
            .arg(step)
            .arg(c.user_burst)
            .arg(c.user_per_min / 60.0)
            .arg(c.ip_burst)
            .arg(c.ip_per_min / 60.0)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok([user.max(0) as u64, addr.max(0) as u64])
    }
}

/// Route middleware of `POST /coupons/redeem`, inside the token check. The
/// guard comes from the request's extensions (each port's router adds it);
/// without one the route is closed, never open.
pub async fn guard(req: Request, next: Next) -> Response {
    let Some(g) = req.extensions().get::<Arc<CodeGuard>>().cloned() else {
        return unavailable("code guard missing");
    };
    let addr = client_bucket(&req, &g.trusted);
    let user = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.user_id.to_string())
        .unwrap_or_default();
    let Some(_slot) = g.slot(&user) else {
        return limited(1000);
    };
    let keys = CodeGuard::keys(&user, &addr);
    match g.check(&keys).await {
        Ok(0) => {}
        Ok(wait) => return limited(wait),
        Err(e) => {
            tracing::warn!(error = %e, "code guard unavailable");
            return unavailable("code guard unavailable");
        }
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<FailedRedemption>().is_some() {
        metrics::counter!("promo_code_redemption_failures_total").increment(1);
        // Before the answer (and the slot) go: the sender's next try sees it.
        if let Err(e) = g.fail(&keys).await {
            tracing::warn!(error = %e, "failed redemption not counted");
        }
    }
    resp
}

fn limited(wait_ms: u64) -> Response {
    metrics::counter!("promo_rate_limited_total", "group" => "code_guess").increment(1);
    let retry_after_secs = wait_ms.div_ceil(1000).max(1);
    ApiError(DomainError::RateLimited { retry_after_secs }).into_response()
}

/// Fail closed: a redemption needs Redis for its admission anyway.
fn unavailable(why: &str) -> Response {
    ApiError(DomainError::Unavailable(why.into())).into_response()
}
