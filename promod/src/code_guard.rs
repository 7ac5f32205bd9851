//! The limit on failed code redemptions (API.md, "Coupon codes"): so that
//! codes cannot be guessed, a redemption is refused 429 with `Retry-After`
//! while its user's bucket or its client address's bucket is empty. It is
//! its own limit and stays on when the general rate limits are off, on every
//! port that serves the route (the gateway's and the coupon role's own).
//!
//! - **Per user, strict**: a redemption takes a token when it starts and
//!   gets it back unless it failed as a guess would (a mistyped, unknown or
//!   spent code, marked [`FailedRedemption`] by the route). Guesses sent at
//!   once cannot outrun the bucket: the burst is all a user has in flight.
//! - **Per address, by failures**: checked when a redemption starts, spent
//!   when it failed. Everyone behind one NAT shares it, so it never limits
//!   how many redemptions are in flight, only how many fail; failures sent
//!   at once may overdraw it, with no floor, and the address then waits
//!   until the refill repays the debt: over time it fails no faster than
//!   its refill rate.
//!
//! The buckets' clock is Redis's own `TIME`, as the general limiter's;
//! their keys share one hash tag, so the script's keys live in one Cluster
//! slot. A success costs the entry script and a refund off the answer's
//! path; a failure is counted before it is answered.

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
use std::sync::{Arc, LazyLock};

/// KEYS = the user's bucket, the address's; ARGV[1] = the step: `enter`
/// (take a user token if both buckets have one), `refund` (give the user
/// token back), `fail` (spend an address token); then each bucket's burst
/// and refill per second. Returns the milliseconds until a redemption may
/// start (0: it may, and for `enter` it has).
static BUCKETS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local step = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function read(i)
  local cap, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  return math.min(cap, tokens + math.max(0, now - ts) * rate / 1000), cap, rate
end
local function write(i, tokens, cap, rate)
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - tokens) / rate * 1000) + 1000)
end
local function wait(tokens, rate)
  if tokens >= 1 then return 0 end
  return math.ceil((1 - tokens) * 1000 / rate)
end
local user, ucap, urate = read(1)
local addr, acap, arate = read(2)
if step == 'enter' then
  local w = math.max(wait(user, urate), wait(addr, arate))
  if w == 0 then write(1, user - 1, ucap, urate) end
  return w
elseif step == 'refund' then
  write(1, math.min(ucap, user + 1), ucap, urate)
else
  write(2, addr - 1, acap, arate)
end
return 0
",
    )
});

pub struct CodeGuard {
    redis: Redis,
    cfg: CodeGuardConfig,
    trusted: Vec<IpNet>,
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
        }
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
    match g.step("enter", &user, &addr).await {
        Ok(0) => {}
        Ok(wait) => {
            metrics::counter!("promo_rate_limited_total", "group" => "code_guess").increment(1);
            let retry_after_secs = wait.div_ceil(1000).max(1);
            return ApiError(DomainError::RateLimited { retry_after_secs }).into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "code guard unavailable");
            return unavailable("code guard unavailable");
        }
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<FailedRedemption>().is_some() {
        metrics::counter!("promo_code_redemption_failures_total").increment(1);
        // Before the answer: the sender's next try must see it.
        if let Err(e) = g.step("fail", &user, &addr).await {
            tracing::warn!(error = %e, "failed redemption not counted");
        }
        return resp;
    }
    // Off the answer's path: a lost refund only leaves the user's bucket
    // lower until it refills.
    tokio::spawn(async move {
        if let Err(e) = g.step("refund", &user, &addr).await {
            tracing::warn!(error = %e, "code guard refund lost");
        }
    });
    resp
}

/// Fail closed: a redemption needs Redis for its admission anyway.
fn unavailable(why: &str) -> Response {
    ApiError(DomainError::Unavailable(why.into())).into_response()
}
