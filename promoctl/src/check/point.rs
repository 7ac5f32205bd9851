//! Point invariants: the balance is the sum of the ledger and never negative,
//! the Redis cache agrees, no transaction is cancelled twice; `held` is the
//! sum of the pending holds and within the balance, due holds are swept, and
//! each hold is resolved at most once. Lots: the balance is the sum of the
//! lots' remainders, each within its amount, expired lots are swept, each
//! lot expires at most once per expiry, and each debit's draws sum to it.

use super::{invariants, redis_err, settle, CheckResult, Invariant, Redis};
use crate::error::CtlResult;
use promo_store::keys::{self, CachedBalance};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub const LEDGER: &str = "point.balance_matches_ledger";
pub const NON_NEGATIVE: &str = "point.balance_not_negative";
pub const REDIS: &str = "point.redis_cache";
pub const CANCELLED_ONCE: &str = "point.cancelled_once";
pub const HELD: &str = "point.held_matches_holds";
pub const AVAILABLE: &str = "point.available_not_negative";
pub const SWEPT: &str = "point.holds_swept";
pub const RESOLVED_ONCE: &str = "point.holds_resolved_once";
pub const LOTS: &str = "point.balance_matches_lots";
pub const LOTS_WITHIN: &str = "point.lots_within_amount";
pub const LOTS_SWEPT: &str = "point.lots_swept";
pub const EXPIRED_ONCE: &str = "point.lots_expired_once";
pub const DRAWS: &str = "point.draws_match_debits";

pub async fn check(pool: &PgPool, redis: &mut Redis) -> CtlResult<Vec<CheckResult>> {
    let mut out = invariants(pool, &[LEDGER_SQL, NON_NEGATIVE_SQL]).await?;
    out.push(redis_cache(pool, redis).await?);
    let holds = [
        CANCELLED_ONCE_SQL,
        HELD_SQL,
        AVAILABLE_SQL,
        RESOLVED_ONCE_SQL,
    ];
    out.extend(invariants(pool, &holds).await?);
    out.push(super::swept(pool, &HOLDS).await?);
    out.extend(
        invariants(
            pool,
            &[LOTS_SQL, LOTS_WITHIN_SQL, EXPIRED_ONCE_SQL, DRAWS_SQL],
        )
        .await?,
    );
    let bound = Some(super::SWEEP_BOUND.as_secs_f64());
    out.push(super::sql_check_with(pool, LOTS_SWEPT, &LOTS_SWEPT_SQL.sql(), bound).await?);
    Ok(out)
}

/// Lots hold the whole balance: a user's remainders sum to their balance
/// (and so, by `LEDGER`, to their ledger).
const LOTS_SQL: Invariant = Invariant {
    check: LOTS,
    examined: "point_balances",
    with: "r AS (SELECT user_id, sum(remaining) AS s FROM point_lots GROUP BY user_id),
           v AS (SELECT coalesce(b.user_id, r.user_id)::text || ' (balance '
                        || coalesce(b.balance, 0) || ', lots hold ' || coalesce(r.s, 0) || ')' AS what
                 FROM point_balances b FULL JOIN r ON r.user_id = b.user_id
                 WHERE coalesce(b.balance, 0) <> coalesce(r.s, 0))",
};

const LOTS_WITHIN_SQL: Invariant = Invariant {
    check: LOTS_WITHIN,
    examined: "point_lots",
    with: "v AS (SELECT id::text || ' (remaining ' || remaining || ' of ' || amount || ')' AS what
                 FROM point_lots WHERE remaining < 0 OR remaining > amount)",
};

/// No lot keeps a remainder more than the sweep bound (`$1`, seconds) past
/// its expiry, unless pending holds reserve all its user has left.
const LOTS_SWEPT_SQL: Invariant = Invariant {
    check: LOTS_SWEPT,
    examined: "point_lots WHERE expires_at IS NOT NULL",
    with: "v AS (SELECT l.id::text || ' (' || l.remaining || ' left, expired at ' || l.expires_at
                        || ')' AS what
                 FROM point_lots l JOIN point_balances b ON b.user_id = l.user_id
                 WHERE l.remaining > 0 AND b.balance > b.held
                   AND l.expires_at < now() - make_interval(secs => $1::float8))",
};

/// One EXPIRE per lot and expiry number, and as many as the lot counts.
const EXPIRED_ONCE_SQL: Invariant = Invariant {
    check: EXPIRED_ONCE,
    examined: "point_lots",
    with: "e AS (SELECT lot_id, lot_expiry, count(*) AS n FROM point_transactions
                 WHERE type = 'EXPIRE' GROUP BY lot_id, lot_expiry),
           c AS (SELECT lot_id, sum(n) AS n FROM e GROUP BY lot_id),
           v AS (SELECT lot_id::text || ' (expiry ' || lot_expiry || ' written ' || n || ' times)' AS what
                 FROM e WHERE n > 1
                 UNION ALL
                 SELECT coalesce(l.id, c.lot_id)::text || ' (counts ' || coalesce(l.expiries::text, 'no lot')
                        || ' expiries, ledger ' || coalesce(c.n, 0) || ')'
                 FROM point_lots l FULL JOIN c ON c.lot_id = l.id
                 WHERE l.id IS NULL OR l.expiries <> coalesce(c.n, 0))",
};

/// The draws of a debit (`draws` of its ledger row) sum to its amount, each
/// from a lot of its user, and every USE since lots began (the first lot's
/// earn) has them. Set-based (one pass over the draws, hash joins), and the
/// start of lots is an uncorrelated subquery, computed once whatever the
/// statistics (as a joined CTE, a stale row estimate put it in a nested
/// loop: a scan of every lot per debit).
const DRAWS_SQL: Invariant = Invariant {
    check: DRAWS,
    examined: "point_transactions WHERE delta < 0 AND type <> 'EXPIRE'",
    with: "e AS (SELECT t.id, t.user_id, (x->>'lot_id')::uuid AS lot_id, (x->>'amount')::bigint AS amount
                 FROM point_transactions t, jsonb_array_elements(t.draws) x WHERE t.draws IS NOT NULL),
           s AS (SELECT id, sum(amount) AS s FROM e GROUP BY id),
           v AS (SELECT t.id::text || ' (' || t.type || ' of ' || t.amount || ', draws '
                        || coalesce(s.s::text, 'none') || ')' AS what
                 FROM point_transactions t LEFT JOIN s ON s.id = t.id
                 WHERE t.delta < 0 AND t.type <> 'EXPIRE'
                   AND (s.s <> t.amount OR (t.type = 'USE' AND s.s IS NULL
                        AND t.created_at >= (SELECT min(earned_at) FROM point_lots)))
                 UNION ALL
                 SELECT e.id::text || ' (draws from lot ' || e.lot_id || ', not its user''s)'
                 FROM e LEFT JOIN point_lots l ON l.id = e.lot_id AND l.user_id = e.user_id
                 WHERE l.id IS NULL)",
};

const LEDGER_SQL: Invariant = Invariant {
    check: LEDGER,
    examined: "j",
    with: "l AS (SELECT user_id, sum(delta) AS s FROM point_transactions GROUP BY user_id),
           j AS (SELECT coalesce(b.user_id, l.user_id) AS user_id, b.balance, coalesce(l.s, 0) AS s
                 FROM point_balances b FULL JOIN l ON l.user_id = b.user_id),
           v AS (SELECT user_id::text || ' (balance ' || coalesce(balance::text, 'missing')
                        || ', ledger ' || s || ')' AS what
                 FROM j WHERE balance IS DISTINCT FROM s)",
};

const NON_NEGATIVE_SQL: Invariant = Invariant {
    check: NON_NEGATIVE,
    examined: "l",
    with: "l AS (SELECT user_id, sum(delta) AS s FROM point_transactions GROUP BY user_id),
           v AS (SELECT user_id::text || ' (ledger sum ' || s || ')' AS what FROM l WHERE s < 0
                 UNION ALL
                 SELECT user_id::text || ' (balance ' || balance || ')' FROM point_balances
                 WHERE balance < 0)",
};

const CANCELLED_ONCE_SQL: Invariant = Invariant {
    check: CANCELLED_ONCE,
    examined: "point_transactions WHERE type = 'CANCEL'",
    with: "v AS (SELECT cancelled_transaction_id::text || ' (cancelled ' || count(*)
                        || ' times)' AS what
                 FROM point_transactions WHERE cancelled_transaction_id IS NOT NULL
                 GROUP BY cancelled_transaction_id HAVING count(*) > 1)",
};

const HELD_SQL: Invariant = Invariant {
    check: HELD,
    examined: "j",
    with: "p AS (SELECT user_id, sum(amount) AS s FROM point_holds
                 WHERE status = 'PENDING' GROUP BY user_id),
           j AS (SELECT coalesce(b.user_id, p.user_id) AS user_id, b.held, coalesce(p.s, 0) AS s
                 FROM point_balances b FULL JOIN p ON p.user_id = b.user_id),
           v AS (SELECT user_id::text || ' (held ' || coalesce(held::text, 'missing')
                        || ', pending holds ' || s || ')' AS what
                 FROM j WHERE held IS DISTINCT FROM s)",
};

const AVAILABLE_SQL: Invariant = Invariant {
    check: AVAILABLE,
    examined: "point_balances",
    with:
        "v AS (SELECT user_id::text || ' (balance ' || balance || ', held ' || held || ')' AS what
                 FROM point_balances WHERE held < 0 OR held > balance)",
};

pub(crate) const HOLDS: super::Holds = super::Holds {
    check: SWEPT,
    table: "point_holds",
    pending: "PENDING",
    deadline: "expires_at",
    label: "pending, expired at",
};

/// A captured hold has exactly one USE naming it, of the captured amount;
/// no other hold has any.
const RESOLVED_ONCE_SQL: Invariant = Invariant {
    check: RESOLVED_ONCE,
    examined: "point_holds",
    with: "t AS (SELECT hold_id, count(*) AS n, sum(amount) AS spent FROM point_transactions
                 WHERE hold_id IS NOT NULL GROUP BY hold_id),
           v AS (SELECT h.id::text || ' (' || h.status || ', ' || coalesce(t.n, 0)
                        || ' uses of ' || coalesce(t.spent::text, 'nothing') || ', captured '
                        || coalesce(h.captured_amount::text, 'nothing') || ')' AS what
                 FROM point_holds h LEFT JOIN t ON t.hold_id = h.id
                 WHERE CASE WHEN h.status = 'CAPTURED'
                            THEN t.n IS DISTINCT FROM 1 OR t.spent IS DISTINCT FROM h.captured_amount
                            ELSE t.n IS NOT NULL END
                 UNION ALL
                 SELECT t.hold_id::text || ' (' || t.n || ' uses of a missing hold)'
                 FROM t LEFT JOIN point_holds h ON h.id = t.hold_id WHERE h.id IS NULL)",
};

/// Cached balances, where present, equal PostgreSQL. A cache of an older
/// version with the same balance is harmless; a newer version than the
/// database cannot be explained.
///
/// The cache holds recently read users only, so the keys are found with SCAN
/// and PostgreSQL is asked about those users alone. A cached user this
/// database does not know (another deployment sharing Redis, a test) is
/// counted in the note, not judged.
pub async fn redis_cache(pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
    let mut r = CheckResult::new(REDIS);
    let nil = Uuid::nil().to_string();
    let sample = keys::point_balance(Uuid::nil());
    let Some(prefix) = sample.strip_suffix(&nil) else {
        r.error = Some(format!("cannot derive the key prefix from {sample}"));
        return Ok(r);
    };
    let pattern = format!("{}*", glob_escape(prefix));
    let mut seen = HashSet::new();
    let mut unknown = 0usize;
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(2000)
            .query_async(redis)
            .await
            .map_err(redis_err)?;
        // SCAN may return a key twice; judge each user once.
        let users: Vec<Uuid> = found
            .iter()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|u| Uuid::parse_str(u).ok())
            .filter(|u| seen.insert(*u))
            .collect();
        if !users.is_empty() {
            match judge(pool, redis, &users, &mut r).await? {
                Some(n) => unknown += n,
                None => return Ok(r),
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if unknown > 0 {
        r.note = Some(format!("{unknown} cached for users not in this database"));
    }
    Ok(r)
}

/// Judges the cached balances of `users` against PostgreSQL; how many of
/// them this database does not know, or `None` when the query failed (the
/// error is in `r`).
async fn judge(
    pool: &PgPool,
    redis: &mut Redis,
    users: &[Uuid],
    r: &mut CheckResult,
) -> CtlResult<Option<usize>> {
    let mut pipe = redis::pipe();
    for u in users {
        pipe.get(keys::point_balance(*u));
    }
    let values: Vec<Option<String>> = pipe.query_async(redis).await.map_err(redis_err)?;
    let rows: Vec<(Uuid, i64, i64, i64)> = match sqlx::query_as(
        "SELECT user_id, balance, held, version FROM point_balances WHERE user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            *r = settle(std::mem::take(r), e)?;
            return Ok(None);
        }
    };
    let pg: HashMap<Uuid, CachedBalance> = rows
        .into_iter()
        .map(|(u, balance, held, version)| {
            let row = CachedBalance {
                balance,
                held,
                version,
            };
            (u, row)
        })
        .collect();
    let mut unknown = 0;
    for (user, v) in users.iter().zip(values) {
        // Expired between SCAN and GET.
        let Some(v) = v else { continue };
        let Some(row) = pg.get(user).copied() else {
            unknown += 1;
            continue;
        };
        r.examined += 1;
        match CachedBalance::parse(&v) {
            Some(c)
                if (c.balance, c.held) == (row.balance, row.held) && c.version <= row.version => {}
            Some(_) => r.violation(format!("{user} cached {v}, postgres {}", row.entry())),
            None => r.violation(format!("{user} unreadable cache {v:?}")),
        }
    }
    Ok(Some(unknown))
}

/// Escapes the glob characters of SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_are_escaped() {
        assert_eq!(super::glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
