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
//! keys live in one Cluster slot. A success costs one read-only script
//! call.

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

/// KEYS = the user's bucket, the address's; ARGV[1] = the step: `check`
/// or `fail` (spend a token of each); then each bucket's burst and refill
/// per second. Returns the milliseconds until both hold a token (0: a
/// redemption may start).
static BUCKETS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
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
  if tokens < 1 then
    wait = math.max(wait, math.ceil((1 - tokens) * 1000 / rate))
  end
end
return wait
",
    )
});

pub struct CodeGuard {
    redis: Redis,
    cfg: CodeGuardConfig,
    trusted: Vec<IpNet>,
    /// Redemptions in flight in this process, per user.
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

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
        }
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

    /// One step of the script on `user`'s and `addr`'s buckets.
    async fn step(&self, step: &str, user: &str, addr: &str) -> Result<u64, redis::RedisError> {
        let c = &self.cfg;
        let wait: i64 = BUCKETS
            .key(format!("codeguard:{{redeem}}:user:{user}"))
            .key(format!("codeguard:{{redeem}}:ip:{addr}"))
            .arg(step)
            .arg(c.user_burst)
            .arg(c.user_per_min / 60.0)
            .arg(c.ip_burst)
            .arg(c.ip_per_min / 60.0)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(wait.max(0) as u64)
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
    match g.step("check", &user, &addr).await {
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
        if let Err(e) = g.step("fail", &user, &addr).await {
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
