//! Rate limiting at the gateway: a token bucket per client IP on the anonymous
//! auth routes and per user on authenticated routes, shared by every gateway
//! instance through one atomic Redis script. The bucket's clock is Redis's
//! own (`TIME`), so instances with skewed clocks agree.
//!
//! governor was considered: it is in-process only, and buckets must be shared
//! across gateway instances, hence the script.

use crate::client_addr::client_bucket;
use crate::config::RateLimitConfig;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use promo_domain::principal::Principal;
use promo_domain::DomainError;
use promo_store::cache::Redis;
use redis::Script;
use std::sync::{Arc, LazyLock};

/// KEYS[1] = bucket; ARGV = capacity, refill per second.
/// Returns {allowed (0/1), tokens left, ms until one token}.
static BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = cap
  ts = now
end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {allowed, math.floor(tokens), wait}
",
    )
});

/// The route groups with their own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Anonymous auth routes (register, login, refresh), per client IP.
    Auth,
    /// Authenticated routes, per user.
    User,
}

impl Group {
    fn as_str(self) -> &'static str {
        match self {
            Group::Auth => "auth",
            Group::User => "user",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    burst: u32,
    per_sec: f64,
    fail_open: bool,
}

pub struct RateLimiter {
    redis: Redis,
    cfg: RateLimitConfig,
    trusted: Vec<IpNet>,
}

/// What one bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    pub retry_after_ms: u64,
}

impl RateLimiter {
    pub fn new(redis: Redis, cfg: RateLimitConfig, trusted: Vec<IpNet>) -> Self {
        // Registered at zero, so a dashboard's rate reads 0 before the first
        // refusal instead of "no data".
        for g in [Group::Auth, Group::User] {
            metrics::counter!("promo_rate_limited_total", "group" => g.as_str()).increment(0);
        }
        RateLimiter {
            redis,
            cfg,
            trusted,
        }
    }

    fn limit(&self, g: Group) -> Limit {
        match g {
            Group::Auth => Limit {
                burst: self.cfg.auth_burst,
                per_sec: self.cfg.auth_per_sec,
                fail_open: self.cfg.auth_fail_open,
            },
            Group::User => Limit {
                burst: self.cfg.user_burst,
                per_sec: self.cfg.user_per_sec,
                fail_open: self.cfg.user_fail_open,
            },
        }
    }

    /// Takes one token from `subject`'s bucket in `group`.
    pub async fn take(&self, group: Group, subject: &str) -> Result<Decision, redis::RedisError> {
        let l = self.limit(group);
        let key = format!("ratelimit:{}:{subject}", group.as_str());
        let (allowed, remaining, wait): (i64, i64, i64) = BUCKET
            .key(key)
            .arg(l.burst.max(1))
            .arg(l.per_sec.max(0.001))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: l.burst,
            remaining: remaining.max(0) as u64,
            retry_after_ms: wait.max(0) as u64,
        })
    }

    async fn check(&self, group: Group, subject: &str, req: Request, next: Next) -> Response {
        if !self.cfg.enabled {
            return next.run(req).await;
        }
        let decision = match self.take(group, subject).await {
            Ok(d) => d,
            Err(e) => {
                let open = self.limit(group).fail_open;
                tracing::warn!(group = group.as_str(), error = %e, fail_open = open, "rate limiter unavailable");
                metrics::counter!("promo_rate_limit_errors_total", "group" => group.as_str())
                    .increment(1);
                return if open {
                    next.run(req).await
                } else {
                    ApiError(DomainError::Unavailable("rate limiter unavailable".into()))
                        .into_response()
                };
            }
        };
        if !decision.allowed {
            metrics::counter!("promo_rate_limited_total", "group" => group.as_str()).increment(1);
            let secs = decision.retry_after_ms.div_ceil(1000).max(1);
            let mut resp = ApiError(DomainError::RateLimited {
                retry_after_secs: secs,
            })
            .into_response();
            headers(resp.headers_mut(), &decision);
            return resp;
        }
        let mut resp = next.run(req).await;
        headers(resp.headers_mut(), &decision);
        resp
    }
}

/// The `RateLimit-*` headers of draft-ietf-httpapi-ratelimit-headers.
fn headers(h: &mut HeaderMap, d: &Decision) {
    let reset = d.retry_after_ms.div_ceil(1000);
    for (name, v) in [
        ("ratelimit-limit", d.limit as u64),
        ("ratelimit-remaining", d.remaining),
        ("ratelimit-reset", reset),
    ] {
        h.insert(name, HeaderValue::from(v));
    }
}

/// Middleware for the anonymous auth routes: one bucket per client IP.
pub async fn per_ip(State(rl): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let ip = client_bucket(&req, &rl.trusted);
    rl.check(Group::Auth, &ip, req, next).await
}

/// Middleware for authenticated routes (after `require_auth`): one bucket per user.
pub async fn per_user(State(rl): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let Some(user) = req.extensions().get::<Principal>().map(|p| p.user_id) else {
        return next.run(req).await;
    };
    rl.check(Group::User, &user.to_string(), req, next).await
}
