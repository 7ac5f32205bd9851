//! Audit invariants: every admin write that left a row has exactly one audit
//! entry, and no entry names a change that is not there. An entry is written
//! in its change's transaction, so any difference is a defect (or a hand
//! edit), never a race. Action names come from `promo_domain::audit`.

use super::{invariant_sql, sql_check, CheckResult};
use crate::error::CtlResult;
use promo_domain::audit::action;
use sqlx::PgPool;

/// Rows of `table` (those `filter` keeps) that each have exactly one entry
/// of `action`, the entry naming the row by `key` (an expression over
/// `audit_log`).
struct Audited {
    check: &'static str,
    table: &'static str,
    filter: &'static str,
    action: &'static str,
    key: &'static str,
}

impl Audited {
    fn sql(&self) -> String {
        self.sql_with("r.n IS DISTINCT FROM 1")
    }

    /// [`Audited::sql`] where a row may have several entries.
    fn sql_at_least_one(&self) -> String {
        self.sql_with("r.n IS NULL")
    }

    /// `bad` is what makes a row's entries a violation (`r.n`, how many).
    fn sql_with(&self, bad: &str) -> String {
        let Audited {
            table,
            filter,
            action,
            key,
            ..
        } = self;
        let with = format!(
            "r AS (SELECT {key} AS k, count(*) AS n FROM audit_log
                   WHERE action = '{action}' GROUP BY 1),
             x AS (SELECT id::text AS k FROM {table} {filter}),
             v AS (SELECT coalesce(x.k, r.k) || ' (' || coalesce(r.n, 0) || ' audit entries'
                          || CASE WHEN x.k IS NULL THEN ', no such row' ELSE '' END || ')' AS what
                   FROM x FULL JOIN r ON r.k = x.k
                   WHERE x.k IS NULL OR {bad})"
        );
        invariant_sql(&with, "x")
    }
}

const POLICIES: Audited = Audited {
    check: "coupon.audit_policies",
    table: "coupon_policies",
    filter: "",
    action: action::POLICY_CREATED,
    key: "target_id",
};

const PRODUCTS: Audited = Audited {
    check: "timesale.audit_products",
    table: "products",
    filter: "",
    action: action::PRODUCT_CREATED,
    key: "target_id",
};

const SALES: Audited = Audited {
    check: "timesale.audit_sales",
    table: "time_sales",
    filter: "",
    action: action::SALE_CREATED,
    key: "target_id",
};

/// An earn's entry names the user; the transaction is its `after`.
const EARNS: Audited = Audited {
    check: "point.audit_earns",
    table: "point_transactions",
    filter: "WHERE type = 'EARN'",
    action: action::POINTS_EARNED,
    key: "after->>'id'",
};

pub const CODES: &str = "coupon.audit_codes";

/// Each policy's generated codes equal the sum its batches' entries record.
fn codes_sql() -> String {
    let with = format!(
        "g AS (SELECT target_id AS k, sum((after->>'generated')::bigint) AS n FROM audit_log
               WHERE action = '{}' GROUP BY 1),
         v AS (SELECT coalesce(p.id::text, g.k) || ' (' || coalesce(p.codes_generated, 0)
                      || ' codes, ' || coalesce(g.n, 0) || ' audited)' AS what
               FROM coupon_policies p FULL JOIN g ON g.k = p.id::text
               WHERE p.id IS NULL OR p.codes_generated <> coalesce(g.n, 0))",
        action::CODES_GENERATED
    );
    invariant_sql(&with, "coupon_policies")
}

async fn audited(pool: &PgPool, all: &[&Audited]) -> CtlResult<Vec<CheckResult>> {
    let mut out = Vec::with_capacity(all.len());
    for a in all {
        out.push(sql_check(pool, a.check, &a.sql()).await?);
    }
    Ok(out)
}

pub async fn coupon(pool: &PgPool) -> CtlResult<Vec<CheckResult>> {
    let mut out = audited(pool, &[&POLICIES]).await?;
    out.push(sql_check(pool, CODES, &codes_sql()).await?);
    Ok(out)
}

pub async fn timesale(pool: &PgPool) -> CtlResult<Vec<CheckResult>> {
    audited(pool, &[&PRODUCTS, &SALES]).await
}

pub async fn point(pool: &PgPool) -> CtlResult<Vec<CheckResult>> {
    audited(pool, &[&EARNS]).await
}

/// Admins only by promoctl or the configuration, each recorded: no role
/// route demotes, so an admin has at least one entry making it admin, and
/// every such entry names a user.
const ADMINS: Audited = Audited {
    check: "gateway.audit_admins",
    table: "users",
    filter: "WHERE role = 'admin'",
    action: action::ROLE_CHANGED,
    key: "target_id",
};

pub async fn gateway(pool: &PgPool) -> CtlResult<Vec<CheckResult>> {
    Ok(vec![
        sql_check(pool, ADMINS.check, &ADMINS.sql_at_least_one()).await?,
    ])
}
