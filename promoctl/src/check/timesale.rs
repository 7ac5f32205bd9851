//! Time-sale invariants: sold equals confirmed orders within the total, users
//! within their limit, the reported remaining never ahead of the truth, and
//! the Redis stock plus confirmed units equal to the total, and every order
//! placed (by the service's clock) inside its sale's window.

use super::{redis_err, settle, sql_check, CheckResult, Redis};
use crate::error::CtlResult;
use promo_store::keys;
use sqlx::PgPool;
use uuid::Uuid;

pub const SOLD: &str = "timesale.sold_matches_orders";
pub const PER_USER: &str = "timesale.per_user_limit";
pub const REMAINING: &str = "timesale.remaining_not_ahead";
pub const REDIS: &str = "timesale.redis_stock";
pub const USER_TOTALS: &str = "timesale.user_totals_match_orders";
pub const WINDOW: &str = "timesale.orders_within_window";

const CONFIRMED: &str = "c AS (SELECT time_sale_id, sum(quantity) AS q FROM time_sale_orders
                               WHERE status = 'CONFIRMED' GROUP BY time_sale_id)";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    Ok(vec![
        sql_check(
            pool,
            SOLD,
            &format!(
                "WITH {CONFIRMED},
                 v AS (SELECT s.id::text || ' (sold ' || s.sold_quantity || ', confirmed '
                              || coalesce(c.q, 0) || ', total ' || s.total_quantity || ')' AS what
                       FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id
                       WHERE s.sold_quantity <> coalesce(c.q, 0)
                          OR coalesce(c.q, 0) > s.total_quantity)
                 SELECT (SELECT count(*) FROM time_sales), (SELECT count(*) FROM v),
                        ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)"
            ),
        )
        .await?,
        sql_check(
            pool,
            PER_USER,
            "WITH u AS (SELECT time_sale_id, user_id, sum(quantity) AS q FROM time_sale_orders
                        WHERE status = 'CONFIRMED' GROUP BY 1, 2),
             v AS (SELECT u.time_sale_id::text || '/' || u.user_id || ' (' || u.q || ' > limit '
                          || s.per_user_limit || ')' AS what
                   FROM u JOIN time_sales s ON s.id = u.time_sale_id
                   WHERE u.q > s.per_user_limit)
             SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        sql_check(
            pool,
            REMAINING,
            &format!(
                "WITH {CONFIRMED},
                 v AS (SELECT s.id::text || ' (remaining ' || s.remaining_quantity
                              || ' > total - confirmed ' || (s.total_quantity - coalesce(c.q, 0))
                              || ')' AS what
                       FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id
                       WHERE s.remaining_quantity > s.total_quantity - coalesce(c.q, 0))
                 SELECT (SELECT count(*) FROM time_sales), (SELECT count(*) FROM v),
                        ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)"
            ),
        )
        .await?,
        // The per-user totals are what the database's limit constraint
        // guards; they must follow the orders.
        sql_check(
            pool,
            USER_TOTALS,
            "WITH u AS (SELECT time_sale_id, user_id, sum(quantity) AS q FROM time_sale_orders
                        WHERE status = 'CONFIRMED' GROUP BY 1, 2),
             j AS (SELECT coalesce(t.time_sale_id, u.time_sale_id) AS sale,
                          coalesce(t.user_id, u.user_id) AS user_id,
                          coalesce(t.quantity, 0) AS total, coalesce(u.q, 0) AS q
                   FROM time_sale_user_totals t
                   FULL JOIN u ON u.time_sale_id = t.time_sale_id AND u.user_id = t.user_id),
             v AS (SELECT sale::text || '/' || user_id || ' (totals ' || total || ', orders '
                          || q || ')' AS what FROM j WHERE total <> q)
             SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        // Orders carry the service's (injectable) clock, so a clock stepped
        // across a window shows here.
        sql_check(
            pool,
            WINDOW,
            "WITH v AS (SELECT o.id::text || ' (at ' || o.created_at || ', window ' || s.start_at
                              || ' .. ' || s.end_at || ')' AS what
                        FROM time_sale_orders o JOIN time_sales s ON s.id = o.time_sale_id
                        WHERE o.created_at < s.start_at OR o.created_at >= s.end_at)
             SELECT (SELECT count(*) FROM time_sale_orders), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        redis_stock(pool, redis).await?,
    ])
}

/// Where a stock key exists: stock + confirmed == total, and each user's
/// bought quantity in the hash equals their confirmed orders.
pub async fn redis_stock(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let mut r = CheckResult::new(REDIS);
    let sales: Vec<(Uuid, i64, i64)> = match sqlx::query_as(&format!(
        "WITH {CONFIRMED}
         SELECT s.id, s.total_quantity, coalesce(c.q, 0)::bigint
         FROM time_sales s LEFT JOIN c ON c.time_sale_id = s.id ORDER BY s.id"
    ))
    .fetch_all(pool)
    .await
    {
        Ok(s) => s,
        Err(e) => return settle(r, e),
    };
    r.examined = sales.len() as i64;
    let mut loaded = Vec::new();
    for chunk in sales.chunks(500) {
        let mut pipe = redis::pipe();
        for (id, _, _) in chunk {
            pipe.get(keys::timesale_inventory(*id));
        }
        let stock: Vec<Option<i64>> = pipe.query_async(redis).await.map_err(redis_err)?;
        for ((id, total, confirmed), s) in chunk.iter().zip(stock) {
            let Some(s) = s else { continue };
            loaded.push(*id);
            if s + confirmed != *total {
                r.violation(format!(
                    "{id} stock {s} in redis + confirmed {confirmed} != total {total}"
                ));
            }
        }
    }
    let detailed = super::users::compare(
        pool,
        redis,
        &loaded,
        keys::timesale_users,
        "SELECT time_sale_id AS id, user_id, sum(quantity)::bigint AS n FROM time_sale_orders
         WHERE status = 'CONFIRMED' AND time_sale_id = ANY($1) GROUP BY 1, 2",
        &mut r,
    )
    .await?;
    r.note = super::users::note(sales.len() - loaded.len(), sales.len(), detailed);
    Ok(r)
}
