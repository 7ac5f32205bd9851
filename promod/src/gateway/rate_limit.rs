//! Rate limiting at the gateway: a token bucket per client IP on the anonymous
//! auth routes and per user on authenticated routes, shared by every gateway
//! instance through one atomic Redis script. The bucket's clock is Redis's
//! own (`TIME`), so instances with skewed clocks agree.
//!
//! governor was considered: it is in-process only, and buckets must be shared
//! across gateway instances, hence the script.

use crate::config::RateLimitConfig;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use promo_domain::principal::Principal;
use promo_domain::DomainError;
use promo_store::cache::Redis;
use redis::Script;
use std::net::{IpAddr, SocketAddr};
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

/// Parses trusted proxies: addresses or CIDR blocks.
pub fn parse_trusted(list: &[String]) -> anyhow::Result<Vec<IpNet>> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("invalid trusted proxy {s:?}: not an ip or cidr"))
        })
        .collect()
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not itself trusted.
/// Hops are read from the right only while they are trusted proxies: a hop
/// that is not an address ends the walk at the last proxy, because everything
/// left of it may be the client's own invention.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .collect();
    let mut last_proxy = peer;
    for hop in hops.into_iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => last_proxy = ip,
            Some(ip) => return ip,
            None => return last_proxy,
        }
    }
    last_proxy
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The bucket of a client address. An IPv6 client usually owns a whole /64,
/// so one bucket per address would let it rotate addresses for ever.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
    }
}

impl RateLimiter {
    pub fn new(redis: Redis, cfg: RateLimitConfig, trusted: Vec<IpNet>) -> Self {
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

/// The bucket of a request's client: its peer, or what trusted proxies say
/// (`client_ip`), per address or IPv6 /64 (`ip_bucket`).
pub fn client_bucket(req: &Request, trusted: &[IpNet]) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    ip_bucket(client_ip(peer, req.headers(), trusted))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_trusted_only_from_configured_proxies() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.1.1.1".parse().unwrap(),
        );
        let direct: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_ip(direct, &h, &trusted), direct, "untrusted peer");
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "right-most untrusted hop, not the spoofable left-most"
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert!(parse_trusted(&["nope".into()]).is_err());
        // A hop that is not an address stops the walk at the last proxy.
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, unknown, 10.1.1.1".parse().unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_bucket(a), ip_bucket(b));
        assert_ne!(ip_bucket(a), ip_bucket(c));
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(ip_bucket(mapped), "1.2.3.4");
    }
}
