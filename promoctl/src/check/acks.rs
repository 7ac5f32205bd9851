//! What clients saw against what the databases hold, for a load run's
//! acknowledgement log (`promoctl load --acks`). Per kind of write:
//! - lost: acknowledged (2xx) but missing from the database;
//! - unexpected: in the database for the run's fixtures but never
//!   acknowledged. Writes whose outcome the client could not know (no answer
//!   or a 5xx after the last retry) may have committed, so unexpected rows up
//!   to that count are allowed and only reported.
//!
//! Only rows of the run's users count, so writes by others (an operator's
//! probe during a fault) do not blur the comparison.

use super::{settle, CheckResult};
use crate::acks::{Ack, RunFixtures};
use crate::error::CtlResult;
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

/// One kind of write: the routes that make it, and the rows the database
/// holds for the run.
struct Kind<'a> {
    check: &'static str,
    routes: &'a [&'a str],
}

/// A redemption issues a coupon of the run's policy like an issue does.
const ISSUES: Kind = Kind {
    check: "acks.coupons.issued",
    routes: &["coupons/issue", "coupons/redeem"],
};
const USES: Kind = Kind {
    check: "acks.coupons.used",
    routes: &["coupons/use"],
};
const POINTS: Kind = Kind {
    check: "acks.points",
    routes: &["points/earn", "points/use"],
};
const ORDERS: Kind = Kind {
    check: "acks.orders",
    routes: &["time-sales/orders", "time-sales/orders (hold)"],
};
const CONFIRMS: Kind = Kind {
    check: "acks.orders.confirmed",
    routes: &["orders/confirm"],
};

pub async fn check(
    fixtures: &RunFixtures,
    acks: &[Ack],
    coupon: &PgPool,
    point: &PgPool,
    timesale: &PgPool,
) -> CtlResult<Vec<CheckResult>> {
    let mut out = Vec::new();
    if let Some(policy) = fixtures.policy {
        let rows =
            sqlx::query_scalar("SELECT id FROM coupons WHERE policy_id = $1 AND user_id = ANY($2)")
                .bind(policy)
                .bind(&fixtures.users)
                .fetch_all(coupon)
                .await;
        // Coupons issued while setting up were acknowledged there.
        out.push(compare(&ISSUES, acks, rows, &fixtures.coupons)?);
        let used = sqlx::query_scalar(
            "SELECT id FROM coupons WHERE policy_id = $1 AND user_id = ANY($2) AND status = 'USED'",
        )
        .bind(policy)
        .bind(&fixtures.users)
        .fetch_all(coupon)
        .await;
        out.push(compare(&USES, acks, used, &[])?);
    }
    if !fixtures.users.is_empty() && acks.iter().any(|a| POINTS.routes.contains(&&*a.route)) {
        let rows = sqlx::query_scalar("SELECT id FROM point_transactions WHERE user_id = ANY($1)")
            .bind(&fixtures.users)
            .fetch_all(point)
            .await;
        out.push(compare(&POINTS, acks, rows, &[])?);
    }
    if let Some(sale) = fixtures.sale {
        let rows = sqlx::query_scalar(
            "SELECT id FROM time_sale_orders WHERE time_sale_id = $1 AND user_id = ANY($2)",
        )
        .bind(sale)
        .bind(&fixtures.users)
        .fetch_all(timesale)
        .await;
        out.push(compare(&ORDERS, acks, rows, &[])?);
        if acks.iter().any(|a| CONFIRMS.routes.contains(&&*a.route)) {
            // Holds confirmed by the run (nothing else confirms or cancels
            // a confirmed hold of the run's users).
            let rows = sqlx::query_scalar(
                "SELECT id FROM time_sale_orders WHERE time_sale_id = $1 AND user_id = ANY($2)
                   AND status = 'CONFIRMED' AND expires_at IS NOT NULL",
            )
            .bind(sale)
            .bind(&fixtures.users)
            .fetch_all(timesale)
            .await;
            out.push(compare(&CONFIRMS, acks, rows, &[])?);
        }
    }
    Ok(out)
}

fn compare(
    kind: &Kind,
    acks: &[Ack],
    rows: Result<Vec<Uuid>, sqlx::Error>,
    also_acknowledged: &[Uuid],
) -> CtlResult<CheckResult> {
    let r = CheckResult::new(kind.check);
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return settle(r, e),
    };
    Ok(verdict(
        kind.check,
        kind.routes,
        acks,
        &rows,
        also_acknowledged,
    ))
}

/// The pure comparison, tested without a database.
fn verdict(
    check: &str,
    routes: &[&str],
    acks: &[Ack],
    rows: &[Uuid],
    also_acknowledged: &[Uuid],
) -> CheckResult {
    let mut r = CheckResult::new(check);
    let mine: Vec<&Ack> = acks
        .iter()
        .filter(|a| routes.contains(&a.route.as_str()))
        .collect();
    let present: HashSet<Uuid> = rows.iter().copied().collect();
    let acknowledged: HashSet<Uuid> = mine
        .iter()
        .filter(|a| a.acknowledged())
        .filter_map(|a| a.id)
        .chain(also_acknowledged.iter().copied())
        .collect();
    let unknown = mine.iter().filter(|a| a.unknown()).count();
    r.examined = (mine.len() + rows.len()) as i64;
    let mut lost = 0;
    for a in mine.iter().filter(|a| a.acknowledged()) {
        match a.id {
            Some(id) if present.contains(&id) => continue,
            Some(id) => r.violation(format!("{id}: acknowledged ({}) but missing", a.status)),
            None => r.violation(format!(
                "{}: acknowledged without an id",
                a.key.as_deref().unwrap_or("-")
            )),
        }
        lost += 1;
    }
    let unexpected: Vec<Uuid> = rows
        .iter()
        .filter(|id| !acknowledged.contains(id))
        .copied()
        .collect();
    if unexpected.len() > unknown {
        // Which rows are the excess cannot be told apart: all are shown.
        for id in &unexpected {
            if r.sample.len() < super::SAMPLE {
                r.sample
                    .push(format!("{id}: present but never acknowledged"));
            }
        }
        r.violations += (unexpected.len() - unknown) as i64;
    }
    let retried = mine.iter().filter(|a| a.retries > 0).count();
    // chaos.sh reads these numbers; keep the wording.
    r.note = Some(format!(
        "lost {lost}, unexpected {} (unknown outcomes {unknown}), acknowledged {}, refused {}, retried {retried}",
        unexpected.len(),
        mine.iter().filter(|a| a.acknowledged()).count(),
        mine.iter().filter(|a| !a.acknowledged() && !a.unknown()).count(),
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(status: u16, id: Option<Uuid>) -> Ack {
        Ack {
            route: "coupons/issue".into(),
            key: Some("k".into()),
            status,
            code: None,
            id,
            retries: 0,
        }
    }

    const R: &[&str] = &["coupons/issue"];

    #[test]
    fn matching_acks_and_rows_pass() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let r = verdict("c", R, &[ack(201, Some(a)), ack(409, None)], &[a, b], &[b]);
        assert!(!r.failed(), "{r:?}");
        assert_eq!(r.examined, 4);
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_database_is_lost() {
        let a = Uuid::now_v7();
        let r = verdict("c", R, &[ack(201, Some(a))], &[], &[]);
        assert_eq!(r.violations, 1, "{r:?}");
        assert!(r.sample[0].contains("missing"));
    }

    #[test]
    fn unacknowledged_rows_are_allowed_only_up_to_the_unknown_outcomes() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let one_unknown = [ack(0, None)];
        assert!(!verdict("c", R, &one_unknown, &[a], &[]).failed());
        let r = verdict("c", R, &one_unknown, &[a, b], &[]);
        assert_eq!(r.violations, 1, "{r:?}");
        assert!(r.sample[0].contains("never acknowledged"));
        // A 503 after the last retry is unknown too; a 409 is not.
        assert!(!verdict("c", R, &[ack(503, None)], &[a], &[]).failed());
        assert!(verdict("c", R, &[ack(409, None)], &[a], &[]).failed());
    }

    #[test]
    fn other_routes_are_ignored() {
        let mut other = ack(201, Some(Uuid::now_v7()));
        other.route = "points/earn".into();
        assert!(!verdict("c", R, &[other], &[], &[]).failed());
    }
}
