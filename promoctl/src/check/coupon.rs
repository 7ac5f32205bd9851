//! Coupon invariants: issued counts, per-user limits, admission counters,
//! used coupons with orders, unique codes.

use super::counters::Counters;
use super::{invariants, CheckResult, Invariant, Redis};
use crate::error::CtlResult;
use promo_store::keys;
use sqlx::PgPool;

pub const ISSUED: &str = "coupon.issued_matches_coupons";
pub const PER_USER: &str = "coupon.per_user_limit";
pub const REDIS: &str = "coupon.redis_counters";
pub const USED: &str = "coupon.used_has_order";
pub const CODES: &str = "coupon.unique_codes";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    let mut out = invariants(pool, &[ISSUED_SQL, PER_USER_SQL]).await?;
    out.push(redis_counters(pool, redis).await?);
    out.extend(invariants(pool, &[USED_SQL, CODES_SQL]).await?);
    Ok(out)
}

const ISSUED_SQL: Invariant = Invariant {
    check: ISSUED,
    examined: "coupon_policies",
    with: "c AS (SELECT policy_id, count(*) AS n FROM coupons GROUP BY policy_id),
           v AS (SELECT p.id::text || ' (issued ' || p.issued_quantity || ', coupons '
                        || coalesce(c.n, 0) || ', total ' || p.total_quantity || ')' AS what
                 FROM coupon_policies p LEFT JOIN c ON c.policy_id = p.id
                 WHERE p.issued_quantity <> coalesce(c.n, 0)
                    OR coalesce(c.n, 0) > p.total_quantity
                    OR p.issued_quantity > p.total_quantity)",
};

const PER_USER_SQL: Invariant = Invariant {
    check: PER_USER,
    examined: "u",
    with: "u AS (SELECT policy_id, user_id, count(*) AS n FROM coupons GROUP BY 1, 2),
           v AS (SELECT u.policy_id::text || '/' || u.user_id || ' (' || u.n || ' > limit '
                        || p.per_user_limit || ')' AS what
                 FROM u JOIN coupon_policies p ON p.id = u.policy_id
                 WHERE u.n > p.per_user_limit)",
};

const USED_SQL: Invariant = Invariant {
    check: USED,
    examined: "coupons WHERE status = 'USED'",
    with: "v AS (SELECT id::text AS what FROM coupons
                 WHERE status = 'USED' AND (order_id IS NULL OR btrim(order_id) = ''))",
};

const CODES_SQL: Invariant = Invariant {
    check: CODES,
    examined: "coupons",
    with: "v AS (SELECT code || ' (' || count(*) || ' coupons)' AS what FROM coupons
                 GROUP BY code HAVING count(*) > 1)",
};

/// Live admission counters against PostgreSQL: remaining == total - issued,
/// and each user's count == their coupons. A policy without a counter is not
/// loaded yet (promod rebuilds it on demand), which is no violation.
pub async fn redis_counters(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let counters = Counters {
        check: REDIS,
        rows: "SELECT id, total_quantity, issued_quantity FROM coupon_policies ORDER BY id",
        key: keys::coupon_remaining,
        describe: |id, remaining, total, issued| {
            format!(
                "{id} remaining {remaining} in redis, total - issued = {} in postgres",
                total - issued
            )
        },
        users_key: keys::coupon_users,
        per_user: "SELECT policy_id AS id, user_id, count(*)::bigint AS n FROM coupons
                   WHERE policy_id = ANY($1) GROUP BY 1, 2",
        journal_key: keys::coupon_journal,
    };
    counters.check(pool, redis).await
}
