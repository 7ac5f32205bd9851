//! Point invariants: the balance is the sum of the ledger and never negative,
//! the Redis cache agrees, no transaction is cancelled twice.

use super::{redis_err, settle, sql_check, CheckResult, Redis};
use crate::error::CtlResult;
use promod::keys;
use sqlx::PgPool;
use uuid::Uuid;

pub const LEDGER: &str = "point.balance_matches_ledger";
pub const NON_NEGATIVE: &str = "point.balance_not_negative";
pub const REDIS: &str = "point.redis_cache";
pub const CANCELLED_ONCE: &str = "point.cancelled_once";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    Ok(vec![
        sql_check(
            pool,
            LEDGER,
            "WITH l AS (SELECT user_id, sum(delta) AS s FROM point_transactions GROUP BY user_id),
             j AS (SELECT coalesce(b.user_id, l.user_id) AS user_id, b.balance, coalesce(l.s, 0) AS s
                   FROM point_balances b FULL JOIN l ON l.user_id = b.user_id),
             v AS (SELECT user_id::text || ' (balance ' || coalesce(balance::text, 'missing')
                          || ', ledger ' || s || ')' AS what
                   FROM j WHERE balance IS DISTINCT FROM s)
             SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        sql_check(
            pool,
            NON_NEGATIVE,
            "WITH l AS (SELECT user_id, sum(delta) AS s FROM point_transactions GROUP BY user_id),
             v AS (SELECT user_id::text || ' (ledger sum ' || s || ')' AS what FROM l WHERE s < 0
                   UNION ALL
                   SELECT user_id::text || ' (balance ' || balance || ')' FROM point_balances
                   WHERE balance < 0)
             SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM v),
                    ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
        redis_cache(pool, redis).await?,
        sql_check(
            pool,
            CANCELLED_ONCE,
            "WITH v AS (SELECT cancelled_transaction_id::text || ' (cancelled ' || count(*)
                               || ' times)' AS what
                        FROM point_transactions WHERE cancelled_transaction_id IS NOT NULL
                        GROUP BY cancelled_transaction_id HAVING count(*) > 1)
             SELECT (SELECT count(*) FROM point_transactions WHERE type = 'CANCEL'),
                    (SELECT count(*) FROM v), ARRAY(SELECT what FROM v ORDER BY what LIMIT 5)",
        )
        .await?,
    ])
}

/// `"{balance}:{version}"`.
pub fn parse_cached(s: &str) -> Option<(i64, i64)> {
    let (b, v) = s.split_once(':')?;
    Some((b.parse().ok()?, v.parse().ok()?))
}

/// Cached balances, where present, equal PostgreSQL. A cache of an older
/// version with the same balance is harmless; a newer version than the
/// database cannot be explained.
pub async fn redis_cache(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let mut r = CheckResult::new(REDIS);
    let rows: Vec<(Uuid, i64, i64)> =
        match sqlx::query_as("SELECT user_id, balance, version FROM point_balances")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) => return settle(r, e),
        };
    r.examined = rows.len() as i64;
    let mut cached = 0usize;
    for chunk in rows.chunks(1000) {
        let mut pipe = redis::pipe();
        for (u, _, _) in chunk {
            pipe.get(keys::point_balance(*u));
        }
        let values: Vec<Option<String>> = pipe.query_async(redis).await.map_err(redis_err)?;
        for ((user, balance, version), v) in chunk.iter().zip(values) {
            let Some(v) = v else { continue };
            cached += 1;
            match parse_cached(&v) {
                Some((b, ver)) if b == *balance && ver <= *version => {}
                Some(_) => r.violation(format!("{user} cached {v}, postgres {balance}:{version}")),
                None => r.violation(format!("{user} unreadable cache {v:?}")),
            }
        }
    }
    r.note = Some(format!("{cached} of {} cached", rows.len()));
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_balances_parse() {
        assert_eq!(super::parse_cached("120:7"), Some((120, 7)));
        assert_eq!(super::parse_cached("120"), None);
        assert_eq!(super::parse_cached("x:1"), None);
    }
}
