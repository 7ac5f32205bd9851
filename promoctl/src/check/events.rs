//! Event invariants: the outbox drains (a backlog is a warning until it is
//! older than `--max-backlog-age`) and no event id appears twice, within or
//! across the service databases.

use super::{settle, sql_check_with, CheckResult};
use crate::error::pg_unreachable;
use crate::error::{CtlError, CtlResult};
use futures::TryStreamExt;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

pub const UNIQUE: &str = "events.unique_ids";

pub fn backlog_name(db: &str) -> String {
    format!("events.{db}.published")
}

pub async fn check(
    dbs: &[(&str, &PgPool)],
    max_backlog_age: Option<Duration>,
) -> CtlResult<Vec<CheckResult>> {
    let mut out = Vec::new();
    for (name, pool) in dbs {
        out.push(backlog(name, pool, max_backlog_age).await?);
    }
    out.push(unique_ids(dbs).await?);
    Ok(out)
}

pub async fn backlog(db: &str, pool: &PgPool, max_age: Option<Duration>) -> CtlResult<CheckResult> {
    let name = backlog_name(db);
    // Violations are the pending rows older than the limit; without a limit
    // the backlog is only reported.
    let mut r = sql_check_with(
        pool,
        &name,
        "WITH v AS (SELECT id::text AS what, seq FROM outbox
                    WHERE published_at IS NULL AND $1::float8 IS NOT NULL
                      AND created_at < now() - make_interval(secs => $1::float8))
         SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM v),
                ARRAY(SELECT what FROM v ORDER BY seq LIMIT 5)",
        max_age.map(|d| d.as_secs_f64()),
    )
    .await?;
    if r.error.is_some() {
        return Ok(r);
    }
    let pending: Result<(i64, Option<f64>), _> = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await;
    match pending {
        Ok((0, _)) => {}
        Ok((n, age)) => {
            r.warning = true;
            r.note = Some(format!(
                "backlog {n}, oldest {}",
                humantime::format_duration(Duration::from_secs(age.unwrap_or(0.0).max(0.0) as u64))
            ));
        }
        Err(e) => return settle(r, e),
    }
    Ok(r)
}

/// Streams every id once; the outbox is pruned after a day, so this stays
/// within memory.
pub async fn unique_ids(dbs: &[(&str, &PgPool)]) -> CtlResult<CheckResult> {
    let mut r = CheckResult::new(UNIQUE);
    let mut seen: HashMap<Uuid, &str> = HashMap::new();
    for (name, pool) in dbs {
        let mut rows = sqlx::query_as::<_, (Uuid,)>("SELECT id FROM outbox").fetch(*pool);
        loop {
            match rows.try_next().await {
                Ok(Some((id,))) => {
                    r.examined += 1;
                    if let Some(first) = seen.insert(id, name) {
                        r.violation(format!("{id} (in {first} and {name})"));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if pg_unreachable(&e) {
                        return Err(CtlError::unreachable("postgres", e));
                    }
                    r.error = Some(format!("{name}: {}", super::describe(&e)));
                    return Ok(r);
                }
            }
        }
    }
    Ok(r)
}
