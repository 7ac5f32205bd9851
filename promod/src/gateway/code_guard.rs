//! The limit on failed code redemptions (API.md, "Coupon codes"): so that
//! codes cannot be guessed, each failure (a mistyped, unknown or spent code,
//! as the redemption route marks it with [`FailedRedemption`]) takes a token
//! from its user's and its client IP's bucket, and while either is empty
//! every redemption of its owner is 429 with `Retry-After`. This limit is its
//! own: it stays on when the general rate limits are off.
//!
//! A redemption peeks at both buckets before it runs (one script call, no
//! write) and spends only when it failed, so a successful redemption costs
//! one Redis round trip. Many guesses sent at once all pass the peek of a
//! full bucket; their failures then overdraw it (down to minus its burst),
//! which keeps their owner out for that much longer. The buckets' clock is
//! Redis's own `TIME`, as the general limiter's; their keys share one hash
//! tag, so the script's two keys live in one Cluster slot.

use crate::config::CodeGuardConfig;
use crate::coupon::http::FailedRedemption;
use crate::error::ApiError;
use crate::gateway::rate_limit::client_bucket;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use promo_domain::principal::Principal;
use promo_domain::DomainError;
use promo_store::cache::Redis;
use redis::Script;
use std::sync::{Arc, LazyLock};

/// KEYS = buckets; ARGV[1] = 0 to peek, 1 to spend one token from each;
/// then each bucket's burst and refill per second. Returns the milliseconds
/// until every bucket holds a token again (0: a redemption may run).
static BUCKETS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local spend = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000)
  if spend == 1 then
    tokens = math.max(-cap, tokens - 1)
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(2 * cap / rate * 1000) + 1000)
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
}

impl CodeGuard {
    pub fn new(redis: Redis, cfg: CodeGuardConfig, trusted: Vec<IpNet>) -> Self {
        CodeGuard {
            redis,
            cfg,
            trusted,
        }
    }

    /// Peeks at (`spend` false) or spends from both buckets; the wait in
    /// milliseconds until both hold a token.
    async fn buckets(&self, user: &str, ip: &str, spend: bool) -> Result<u64, redis::RedisError> {
        let c = &self.cfg;
        let wait: i64 = BUCKETS
            .key(format!("codeguard:{{redeem}}:user:{user}"))
            .key(format!("codeguard:{{redeem}}:ip:{ip}"))
            .arg(i64::from(spend))
            .arg(c.user_burst)
            .arg(c.user_per_min / 60.0)
            .arg(c.ip_burst)
            .arg(c.ip_per_min / 60.0)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(wait.max(0) as u64)
    }
}

fn unavailable(e: redis::RedisError) -> Response {
    // Fail closed: a redemption needs Redis for its admission anyway.
    tracing::warn!(error = %e, "code guard unavailable");
    ApiError(DomainError::Unavailable("code guard unavailable".into())).into_response()
}

/// Middleware of the redemption route, inside `require_auth`.
pub async fn guard(State(g): State<Arc<CodeGuard>>, req: Request, next: Next) -> Response {
    let ip = client_bucket(&req, &g.trusted);
    let user = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.user_id.to_string())
        .unwrap_or_default();
    match g.buckets(&user, &ip, false).await {
        Ok(0) => {}
        Ok(wait) => {
            metrics::counter!("promo_rate_limited_total", "group" => "code_guess").increment(1);
            let retry_after_secs = wait.div_ceil(1000).max(1);
            return ApiError(DomainError::RateLimited { retry_after_secs }).into_response();
        }
        Err(e) => return unavailable(e),
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<FailedRedemption>().is_some() {
        metrics::counter!("promo_code_redemption_failures_total").increment(1);
        if let Err(e) = g.buckets(&user, &ip, true).await {
            tracing::warn!(error = %e, "failed redemption not counted");
        }
    }
    resp
}
