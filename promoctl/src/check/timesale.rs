//! Time-sale invariants: sold equals the units orders hold (PENDING holds and
//! CONFIRMED orders) within the total, users within their limit, the reported
//! remaining never ahead of the truth, the Redis stock plus held units equal
//! to the total, every order placed (by the service's clock) inside its
//! sale's window, no hold left PENDING past its expiry plus the sweep bound,
//! and no hold resolved twice.

use super::counters::Counters;
use super::{invariants, CheckResult, Invariant, Redis};
use crate::error::CtlResult;
use promo_store::keys;
use sqlx::PgPool;

pub const SOLD: &str = "timesale.sold_matches_orders";
pub const PER_USER: &str = "timesale.per_user_limit";
pub const REMAINING: &str = "timesale.remaining_not_ahead";
pub const REDIS: &str = "timesale.redis_stock";
pub const USER_TOTALS: &str = "timesale.user_totals_match_orders";
pub const WINDOW: &str = "timesale.orders_within_window";
pub const HOLDS_SWEPT: &str = "timesale.holds_swept";
pub const RESOLVED_ONCE: &str = "timesale.holds_resolved_once";

/// Units orders hold per sale (PENDING and CONFIRMED), as the CTE `c`.
macro_rules! confirmed {
    () => {
        "c AS (SELECT time_sale_id, sum(quantity) AS q FROM time_sale_orders
               WHERE status IN ('PENDING', 'CONFIRMED') GROUP BY time_sale_id)"
    };
}

/// Units held per sale and user, as the CTE `u`.
macro_rules! per_user {
    () => {
        "u AS (SELECT time_sale_id, user_id, sum(quantity) AS q FROM time_sale_orders
               WHERE status IN ('PENDING', 'CONFIRMED') GROUP BY 1, 2)"
    };
}

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    let all = [
        SOLD_SQL,
        PER_USER_SQL,
        REMAINING_SQL,
        USER_TOTALS_SQL,
        WINDOW_SQL,
        RESOLVED_ONCE_SQL,
    ];
    let mut out = invariants(pool, &all).await?;
    out.push(super::swept(pool, &HOLDS).await?);
    out.push(redis_stock(pool, redis).await?);
    Ok(out)
}

const SOLD_SQL: Invariant = Invariant {
    check: SOLD,
    examined: "time_sales",
    with: concat!(
        confirmed!(),
        ",
        v AS (SELECT s.id::text || ' (sold ' || s.sold_quantity || ', confirmed '
                     || coalesce(c.q, 0) || ', total ' || s.total_quantity || ')' AS what
              FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id
              WHERE s.sold_quantity <> coalesce(c.q, 0)
                 OR coalesce(c.q, 0) > s.total_quantity)"
    ),
};

const PER_USER_SQL: Invariant = Invariant {
    check: PER_USER,
    examined: "u",
    with: concat!(
        per_user!(),
        ",
        v AS (SELECT u.time_sale_id::text || '/' || u.user_id || ' (' || u.q || ' > limit '
                     || s.per_user_limit || ')' AS what
              FROM u JOIN time_sales s ON s.id = u.time_sale_id
              WHERE u.q > s.per_user_limit)"
    ),
};

const REMAINING_SQL: Invariant = Invariant {
    check: REMAINING,
    examined: "time_sales",
    with: concat!(
        confirmed!(),
        ",
        v AS (SELECT s.id::text || ' (remaining ' || s.remaining_quantity
                     || ' > total - confirmed ' || (s.total_quantity - coalesce(c.q, 0))
                     || ')' AS what
              FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id
              WHERE s.remaining_quantity > s.total_quantity - coalesce(c.q, 0))"
    ),
};

/// The per-user totals are what the database's limit constraint guards;
/// they must follow the orders.
const USER_TOTALS_SQL: Invariant = Invariant {
    check: USER_TOTALS,
    examined: "j",
    with: concat!(
        per_user!(),
        ",
        j AS (SELECT coalesce(t.time_sale_id, u.time_sale_id) AS sale,
                     coalesce(t.user_id, u.user_id) AS user_id,
                     coalesce(t.quantity, 0) AS total, coalesce(u.q, 0) AS q
              FROM time_sale_user_totals t
              FULL JOIN u ON u.time_sale_id = t.time_sale_id AND u.user_id = t.user_id),
        v AS (SELECT sale::text || '/' || user_id || ' (totals ' || total || ', orders '
                     || q || ')' AS what FROM j WHERE total <> q)"
    ),
};

/// Orders carry the service's (injectable) clock, so a clock stepped across
/// a window shows here.
const WINDOW_SQL: Invariant = Invariant {
    check: WINDOW,
    examined: "time_sale_orders",
    with: "v AS (SELECT o.id::text || ' (at ' || o.created_at || ', window ' || s.start_at
                        || ' .. ' || s.end_at || ')' AS what
                 FROM time_sale_orders o JOIN time_sales s ON s.id = o.time_sale_id
                 WHERE o.created_at < s.start_at OR o.created_at >= s.end_at)",
};

pub(crate) const HOLDS: super::Holds = super::Holds {
    check: HOLDS_SWEPT,
    table: "time_sale_orders",
    pending: "PENDING",
    deadline: "expires_at",
    label: "pending, expired at",
};

/// A hold ends once: per order, in commit order (`seq`; each change of an
/// order holds its row lock), at most one of each resolution event, an
/// expired hold neither confirmed nor cancelled, and no confirm after the
/// order was cancelled or expired (its units released, then sold: an
/// oversell). A confirmed hold may later be cancelled, as any confirmed
/// order. Read from the outbox, which keeps published events for its
/// retention; pruning only removes a prefix, so it hides, never invents, a
/// violation.
const RESOLVED_ONCE_SQL: Invariant = Invariant {
    check: RESOLVED_ONCE,
    examined: "a",
    with: "e AS (SELECT aggregate_id, topic,
                        count(*) FILTER (WHERE topic IN ('order.cancelled', 'order.expired'))
                          OVER (PARTITION BY aggregate_id ORDER BY seq
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ended_before
                 FROM outbox
                 WHERE topic IN ('order.confirmed', 'order.cancelled', 'order.expired')),
           a AS (SELECT aggregate_id,
                        count(*) FILTER (WHERE topic = 'order.confirmed') AS confirmed,
                        count(*) FILTER (WHERE topic = 'order.cancelled') AS cancelled,
                        count(*) FILTER (WHERE topic = 'order.expired') AS expired,
                        bool_or(topic = 'order.confirmed' AND ended_before > 0) AS late_confirm
                 FROM e GROUP BY aggregate_id),
           v AS (SELECT aggregate_id::text || ' (confirmed ' || confirmed || ', cancelled '
                        || cancelled || ', expired ' || expired
                        || CASE WHEN late_confirm THEN ', confirmed after it ended' ELSE '' END
                        || ')' AS what
                 FROM a
                 WHERE confirmed > 1 OR cancelled > 1 OR expired > 1 OR late_confirm
                    OR (expired > 0 AND confirmed + cancelled > 0))",
};

/// Where a stock key exists: stock + confirmed == total, and each user's
/// bought quantity in the hash equals their confirmed orders.
pub async fn redis_stock(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let counters = Counters {
        check: REDIS,
        rows: concat!(
            "WITH ",
            confirmed!(),
            " SELECT s.id, s.total_quantity, coalesce(c.q, 0)::bigint
             FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id ORDER BY s.id"
        ),
        key: keys::timesale_inventory,
        describe: |id, stock, total, confirmed| {
            format!("{id} stock {stock} in redis + confirmed {confirmed} != total {total}")
        },
        users_key: keys::timesale_users,
        per_user: "SELECT time_sale_id AS id, user_id, sum(quantity)::bigint AS n
                   FROM time_sale_orders
                   WHERE status IN ('PENDING', 'CONFIRMED') AND time_sale_id = ANY($1)
                   GROUP BY 1, 2",
        journal_key: keys::timesale_journal,
    };
    counters.check(pool, redis).await
}
