//! Coupon invariants: issued counts, per-user limits, admission counters,
//! used coupons with orders, unique codes.

use super::{redis_err, settle, sql_check, CheckResult, Redis};
use crate::error::CtlResult;
use promo_store::keys;
use sqlx::PgPool;
use uuid::Uuid;

pub const ISSUED: &str = "coupon.issued_matches_coupons";
pub const PER_USER: &str = "coupon.per_user_limit";
pub const REDIS: &str = "coupon.redis_counters";
pub const USED: &str = "coupon.used_has_order";
pub const CODES: &str = "coupon.unique_codes";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    Ok(vec![
        sql_check(
            pool,
            ISSUED,
            "WITH c AS (SELECT policy_id, count(*) AS n FROM coupons GROUP BY policy_id),
             v AS (SELECT p.id::text || ' (issued ' || p.issued_quantity || ', coupons '
                          || coalesce(c.n, 0) || ', total ' || p.total_quantity || ')' AS what
                   FROM coupon_policies p LEFT JOIN c ON c.policy_id = p.id
                   WHERE p.issued_quantity <> coalesce(c.n, 0)
                      OR coalesce(c.n, 0) > p.total_quantity
                      OR p.issued_quantity > p.total_quantity)
             SELECT (SELECT count(*) FROM coupon_policies), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        sql_check(
            pool,
            PER_USER,
            "WITH u AS (SELECT policy_id, user_id, count(*) AS n FROM coupons GROUP BY 1, 2),
             v AS (SELECT u.policy_id::text || '/' || u.user_id || ' (' || u.n || ' > limit '
                          || p.per_user_limit || ')' AS what
                   FROM u JOIN coupon_policies p ON p.id = u.policy_id
                   WHERE u.n > p.per_user_limit)
             SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        redis_counters(pool, redis).await?,
        sql_check(
            pool,
            USED,
            "WITH v AS (SELECT id::text AS what FROM coupons
                        WHERE status = 'USED' AND (order_id IS NULL OR btrim(order_id) = ''))
             SELECT (SELECT count(*) FROM coupons WHERE status = 'USED'), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        sql_check(
            pool,
            CODES,
            "WITH v AS (SELECT code || ' (' || count(*) || ' coupons)' AS what FROM coupons
                        GROUP BY code HAVING count(*) > 1)
             SELECT (SELECT count(*) FROM coupons), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
    ])
}

/// Live admission counters against PostgreSQL: remaining == total - issued,
/// and each user's count == their coupons. A policy without a counter is not
/// loaded yet (promod rebuilds it on demand), which is no violation.
pub async fn redis_counters(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let mut r = CheckResult::new(REDIS);
    let policies: Vec<(Uuid, i64, i64)> = match sqlx::query_as(
        "SELECT id, total_quantity, issued_quantity FROM coupon_policies ORDER BY id",
    )
    .fetch_all(pool)
    .await
    {
        Ok(p) => p,
        Err(e) => return settle(r, e),
    };
    r.examined = policies.len() as i64;
    let mut loaded = Vec::new();
    for chunk in policies.chunks(500) {
        let mut pipe = redis::pipe();
        for (id, _, _) in chunk {
            pipe.get(keys::coupon_remaining(*id));
        }
        let remaining: Vec<Option<i64>> = pipe.query_async(redis).await.map_err(redis_err)?;
        for ((id, total, issued), rem) in chunk.iter().zip(remaining) {
            let Some(rem) = rem else { continue };
            loaded.push(*id);
            if rem != total - issued {
                r.violation(format!(
                    "{id} remaining {rem} in redis, total - issued = {} in postgres",
                    total - issued
                ));
            }
        }
    }
    let detailed = super::users::compare(
        pool,
        redis,
        &loaded,
        keys::coupon_users,
        "SELECT policy_id AS id, user_id, count(*)::bigint AS n FROM coupons
         WHERE policy_id = ANY($1) GROUP BY 1, 2",
        &mut r,
    )
    .await?;
    r.note = super::users::note(policies.len() - loaded.len(), policies.len(), detailed);
    Ok(r)
}
