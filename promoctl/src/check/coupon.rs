//! Coupon invariants: issued counts, per-user limits, admission counters,
//! used coupons with orders, unique codes, redemption codes (each BATCH code
//! redeemed once, each redemption naming a code of its own policy and mode,
//! each policy's codes counted), reservations (held with their order and
//! deadline, swept in time, resolved at most once), and stacking (the
//! coupons on one order).

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
pub const REDEEMED_ONCE: &str = "coupon.codes_redeemed_once";
pub const CODES_MATCH: &str = "coupon.redeemed_codes_match";
pub const CODES_GENERATED: &str = "coupon.codes_generated";
pub const RESERVED: &str = "coupon.reserved_has_order_and_deadline";
pub const SWEPT: &str = "coupon.reservations_swept";
pub const RESOLVED_ONCE: &str = "coupon.reservation_resolved_once";
pub const STACKING: &str = "coupon.stacking";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    let mut out = invariants(pool, &[ISSUED_SQL, PER_USER_SQL]).await?;
    out.push(redis_counters(pool, redis).await?);
    out.extend(
        invariants(
            pool,
            &[
                USED_SQL,
                CODES_SQL,
                REDEEMED_ONCE_SQL,
                CODES_MATCH_SQL,
                CODES_GENERATED_SQL,
                RESERVED_SQL,
                STACKING_SQL,
            ],
        )
        .await?,
    );
    out.push(super::swept(pool, &HOLDS).await?);
    out.extend(invariants(pool, &[RESOLVED_ONCE_SQL]).await?);
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

/// Codes are unique among coupons not redeemed by code: a SHARED policy's
/// coupons all show its shared code, and a BATCH code's uniqueness is
/// `REDEEMED_ONCE_SQL`'s.
const CODES_SQL: Invariant = Invariant {
    check: CODES,
    examined: "coupons WHERE redeemed_code IS NULL",
    with: "v AS (SELECT code || ' (' || count(*) || ' coupons)' AS what FROM coupons
                 WHERE redeemed_code IS NULL GROUP BY code HAVING count(*) > 1)",
};

/// No BATCH code carried by two coupons. The unique index
/// `coupons_redeemed_once` guarantees it; this reads it anyway (a dropped
/// index, a coupon marked shared to slip past it). A code is BATCH if the
/// coupon says so or its row does.
const REDEEMED_ONCE_SQL: Invariant = Invariant {
    check: REDEEMED_ONCE,
    examined: "b",
    with: "b AS (SELECT c.redeemed_code AS code FROM coupons c
                 LEFT JOIN coupon_codes k ON k.code = c.redeemed_code
                 WHERE c.redeemed_code IS NOT NULL
                   AND (NOT c.redeemed_shared OR NOT k.shared)),
           v AS (SELECT code || ' (' || count(*) || ' coupons)' AS what FROM b
                 GROUP BY code HAVING count(*) > 1)",
};

/// A redemption names a code that exists, of the coupon's own policy, as
/// shared as the coupon says, on a policy of that mode (SHARED for a shared
/// code, BATCH otherwise); a SHARED or BATCH policy's coupons all came by
/// code and a GENERATED one's none. The first problem found is named.
const CODES_MATCH_SQL: Invariant = Invariant {
    check: CODES_MATCH,
    examined: "coupons",
    with: "m AS (SELECT c.id, CASE
                   WHEN c.redeemed_code IS NULL THEN
                        CASE WHEN p.code_mode <> 'GENERATED' THEN p.code_mode || ' policy, no code' END
                   WHEN p.code_mode = 'GENERATED' THEN 'code ' || c.redeemed_code || ' on a GENERATED policy'
                   WHEN k.code IS NULL THEN 'code ' || c.redeemed_code || ' does not exist'
                   WHEN k.policy_id <> c.policy_id THEN
                        'code ' || c.redeemed_code || ' is of policy ' || k.policy_id
                   WHEN k.shared <> c.redeemed_shared THEN 'code ' || c.redeemed_code
                        || CASE WHEN k.shared THEN ' is shared, the coupon says batch'
                                ELSE ' is batch, the coupon says shared' END
                   WHEN p.code_mode <> CASE WHEN c.redeemed_shared THEN 'SHARED' ELSE 'BATCH' END
                        THEN 'code ' || c.redeemed_code || ' on a ' || p.code_mode || ' policy'
                 END AS problem
                 FROM coupons c JOIN coupon_policies p ON p.id = c.policy_id
                 LEFT JOIN coupon_codes k ON k.code = c.redeemed_code),
           v AS (SELECT id::text || ' (' || problem || ')' AS what FROM m WHERE problem IS NOT NULL)",
};

/// Every policy's `codes_generated` is the count of its BATCH codes (and
/// within its total); a SHARED policy has exactly one shared code, its
/// `shared_code` normalized (upper case, no hyphens or spaces), and no
/// other policy has one. `coupon_codes` has no foreign key to the policies
/// (a batch is a million rows), so codes of no policy are named too.
const CODES_GENERATED_SQL: Invariant = Invariant {
    check: CODES_GENERATED,
    examined: "j",
    with: "k AS (SELECT policy_id, count(*) FILTER (WHERE NOT shared) AS batch,
                        array_agg(code ORDER BY code) FILTER (WHERE shared) AS shared
                 FROM coupon_codes GROUP BY policy_id),
           j AS (SELECT coalesce(p.id, k.policy_id) AS id, p.id IS NULL AS orphan, p.code_mode,
                        p.codes_generated, p.total_quantity,
                        upper(replace(replace(p.shared_code, '-', ''), ' ', '')) AS want,
                        coalesce(k.batch, 0) AS batch, coalesce(k.shared, '{}') AS shared
                 FROM coupon_policies p FULL JOIN k ON k.policy_id = p.id),
           m AS (SELECT id, CASE
                   WHEN orphan THEN (batch + cardinality(shared)) || ' codes of no policy'
                   WHEN codes_generated <> batch THEN
                        'codes_generated ' || codes_generated || ', codes ' || batch
                   WHEN codes_generated > total_quantity THEN
                        'codes_generated ' || codes_generated || ' > total ' || total_quantity
                   WHEN code_mode = 'SHARED' AND shared IS DISTINCT FROM ARRAY[want] THEN
                        'shared code ' || coalesce(want, '-') || ', codes ['
                        || array_to_string(shared, ',') || ']'
                   WHEN code_mode <> 'SHARED' AND cardinality(shared) > 0 THEN
                        code_mode || ' policy with shared codes [' || array_to_string(shared, ',') || ']'
                 END AS problem FROM j),
           v AS (SELECT id::text || ' (' || problem || ')' AS what FROM m WHERE problem IS NOT NULL)",
};

/// The database's CHECK ties RESERVED to an order and a deadline; this
/// reads it anyway (a dropped or altered constraint), and that nothing else
/// carries an order, nor a deadline unless it lapsed (an expired hold keeps
/// it, with the order it held in `released_order_id`).
const RESERVED_SQL: Invariant = Invariant {
    check: RESERVED,
    examined: "coupons WHERE status = 'RESERVED'",
    with: "v AS (SELECT id::text || ' (' || status || ')' AS what FROM coupons
                 WHERE (status = 'RESERVED' AND (reserved_order_id IS NULL
                        OR btrim(reserved_order_id) = '' OR reserved_until IS NULL))
                    OR (status <> 'RESERVED' AND (reserved_order_id IS NOT NULL
                        OR (reserved_until IS NOT NULL AND released_order_id IS NULL))))",
};

/// The coupons on one order (one user's, USED for it or RESERVED for it;
/// API.md "Stacking"): several only if all are stackable, all with one
/// `order_amount`, and their discounts never past it. Examined: every
/// order carrying a coupon. promod decides each use and reserve under the
/// order's lock, and the statement reads one snapshot, so a live system
/// passes it exactly (coupons used before migration 2004 carry no amount
/// and are not compared).
const STACKING_SQL: Invariant = Invariant {
    check: STACKING,
    examined: "o",
    with: "o AS (SELECT c.user_id, coalesce(c.order_id, c.reserved_order_id) AS order_id,
                        count(*) AS n, bool_and(p.stackable) AS stackable,
                        count(DISTINCT c.order_amount) AS amounts,
                        min(c.order_amount) AS amount, sum(c.discount_amount) AS discounts
                 FROM coupons c JOIN coupon_policies p ON p.id = c.policy_id
                 WHERE c.status IN ('USED', 'RESERVED')
                 GROUP BY 1, 2),
           v AS (SELECT o.user_id::text || '/' || o.order_id || ' (' || o.n || ' coupons: '
                        || concat_ws(', ',
                             CASE WHEN o.n > 1 AND NOT o.stackable THEN 'not all stackable' END,
                             CASE WHEN o.amounts > 1 THEN o.amounts || ' order amounts' END,
                             CASE WHEN o.discounts > o.amount
                                  THEN 'discounts ' || o.discounts || ' > ' || o.amount END)
                        || ')' AS what
                 FROM o
                 WHERE (o.n > 1 AND NOT o.stackable) OR o.amounts > 1
                    OR o.discounts > o.amount)",
};

pub(crate) const HOLDS: super::Holds = super::Holds {
    check: SWEPT,
    table: "coupons",
    pending: "RESERVED",
    deadline: "reserved_until",
    label: "reserved until",
};

/// Each reservation resolves at most once, read from the outbox: among a
/// coupon's hold events in commit order (`coupon.reserved`, a
/// `coupon.used` that confirmed one, `coupon.reservation_released`), every
/// resolution follows a `coupon.reserved`, never another resolution. Per
/// coupon, `seq` follows commit order (each write takes the coupon's row
/// lock before it appends). Counting reserved against resolved events would
/// not be sound: the pruner deletes published events past the retention, so
/// a `coupon.reserved` may be gone while its resolution remains. It deletes
/// the oldest, so what remains of a coupon's events is a suffix of them,
/// and a suffix of a valid sequence passes this check (only its first event
/// may lack its predecessor); a second resolution of one reservation fails
/// it unless the first was pruned.
const RESOLVED_ONCE_SQL: Invariant = Invariant {
    check: RESOLVED_ONCE,
    examined: "h",
    with: "h AS (SELECT aggregate_id, seq, topic <> 'coupon.reserved' AS resolution,
                        lag(topic <> 'coupon.reserved')
                            OVER (PARTITION BY aggregate_id ORDER BY seq) AS after_resolution
                 FROM outbox
                 WHERE topic IN ('coupon.reserved', 'coupon.reservation_released')
                    OR (topic = 'coupon.used'
                        AND payload->'data'->>'reserved_until' IS NOT NULL)),
           v AS (SELECT aggregate_id || ' (resolved twice, outbox seq ' || seq || ')' AS what
                 FROM h WHERE resolution AND after_resolution)",
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
