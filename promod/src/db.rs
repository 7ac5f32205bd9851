//! PostgreSQL pools with a bounded acquire timeout, per-service migrations,
//! and the one shape of a paged listing ([`page_of`]).

use crate::error::from_sqlx;
use anyhow::Context;
use chrono::{DateTime, Utc};
use promo_domain::page::{Page, PageRequest};
use promo_domain::DomainResult;
use promo_store::urls::redact;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Schema {
    Gateway,
    Coupon,
    Point,
    Timesale,
}

pub async fn connect(
    url: &str,
    schema: Schema,
    max: u32,
    acquire_timeout_ms: u64,
) -> anyhow::Result<PgPool> {
    let mut opts = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database url for {}", redact(url)))?;
    if matches!(schema, Schema::Point) {
        // The point batch's statements take arrays of users and lots
        // (`= ANY($1)`, `unnest`). A generic plan, cached once a connection
        // has run a statement five times, is made while the tables are small
        // and keeps its sequential scans as they grow: measured, a 12 s load
        // on fresh databases read 33 million lot rows that way. A custom
        // plan per execution costs a little planning and sees the array and
        // the table as they are. Those plans' costs grow with the arrays (a
        // sweep writes 10,000 lots), and past `jit_above_cost` PostgreSQL
        // compiles each statement with LLVM, which took seconds per sweep;
        // short statements never gain from JIT.
        opts = opts.options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
    }
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_millis(acquire_timeout_ms))
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot connect to postgres at {}", redact(url)))
}

pub async fn migrate(pool: &PgPool, schema: Schema) -> anyhow::Result<()> {
    // The migrators share one history table; each ignores the others'
    // versions. Shared tables come first, so a role's own migrations may
    // read or fill them (the audit log's backfills).
    if !matches!(schema, Schema::Gateway) {
        run(
            pool,
            sqlx::migrate!("../migrations/common"),
            "common",
            schema,
        )
        .await?;
    }
    run(pool, sqlx::migrate!("../migrations/audit"), "audit", schema).await?;
    let own = match schema {
        Schema::Gateway => sqlx::migrate!("../migrations/gateway"),
        Schema::Coupon => sqlx::migrate!("../migrations/coupon"),
        Schema::Point => sqlx::migrate!("../migrations/point"),
        Schema::Timesale => sqlx::migrate!("../migrations/timesale"),
    };
    run(pool, own, "own", schema).await
}

async fn run(
    pool: &PgPool,
    mut m: sqlx::migrate::Migrator,
    which: &str,
    schema: Schema,
) -> anyhow::Result<()> {
    m.set_ignore_missing(true);
    m.run(pool)
        .await
        .with_context(|| format!("{which} migrations of {schema:?} failed").to_lowercase())
}

/// A value a listing's filter binds.
#[derive(Debug, Clone)]
pub enum Arg {
    Id(Uuid),
    Time(DateTime<Utc>),
    Text(String),
}

/// What a paged listing reads: `SELECT {columns} {from} ORDER BY {order_by}`,
/// where `from` holds the table and the filter.
pub struct Listing<'a> {
    pub columns: &'a str,
    pub from: &'a str,
    pub order_by: &'a str,
}

/// The filter of a listing whose conditions are each optional (an admin's
/// search: any of user, parent, status): the conditions given, ANDed, and
/// the values they bind, numbered `$1..` in the order they were added, so
/// every combination is one statement with no unused parameter. A status
/// is spelled into the SQL (a closed enum's names, never input) so that
/// the planner sees it and can match a partial index.
#[derive(Debug, Default)]
pub struct Filter {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Filter {
    /// `cond`, whose one `$` stands for `arg`'s parameter.
    pub fn bind(mut self, cond: &str, arg: Arg) -> Self {
        debug_assert_eq!(cond.matches('$').count(), 1, "{cond}");
        self.args.push(arg);
        let n = self.args.len();
        self.conditions
            .push(cond.replacen('$', &format!("${n}"), 1));
        self
    }

    /// `cond` as it is, binding nothing.
    pub fn and(mut self, cond: &str) -> Self {
        self.conditions.push(cond.to_owned());
        self
    }

    /// `status = 'name'`: a status of a closed enum (its `as_str`), which
    /// is why it may be spelled into the SQL.
    pub fn status(self, name: &'static str) -> Self {
        self.and(&format!("status = '{name}'"))
    }

    /// `column = id` when there is an id; nothing otherwise.
    pub fn id(self, column: &str, id: Option<Uuid>) -> Self {
        match id {
            Some(id) => self.bind(&format!("{column} = $"), Arg::Id(id)),
            None => self,
        }
    }

    /// `FROM table WHERE ...`, a [`Listing`]'s `from`.
    pub fn from(&self, table: &str) -> String {
        if self.conditions.is_empty() {
            return format!("FROM {table}");
        }
        format!("FROM {table} WHERE {}", self.conditions.join(" AND "))
    }

    pub fn args(&self) -> &[Arg] {
        &self.args
    }
}

fn bind<'q, O>(
    mut q: QueryAs<'q, Postgres, O, PgArguments>,
    args: &[Arg],
) -> QueryAs<'q, Postgres, O, PgArguments> {
    for a in args {
        q = match a {
            Arg::Id(v) => q.bind(*v),
            Arg::Time(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.clone()),
        };
    }
    q
}

/// One page of a listing and the count of everything its filter matches.
/// The filter reads `args` as `$1..`; the page binds after them.
pub async fn page_of<R, T>(
    pool: &PgPool,
    l: Listing<'_>,
    args: &[Arg],
    page: PageRequest,
    into: impl FnMut(R) -> DomainResult<T>,
) -> DomainResult<Page<T>>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    let n = args.len();
    let select = format!(
        "SELECT {} {} ORDER BY {} LIMIT ${} OFFSET ${}",
        l.columns,
        l.from,
        l.order_by,
        n + 1,
        n + 2
    );
    let rows: Vec<R> = bind(sqlx::query_as(&select), args)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
    let count = format!("SELECT count(*) {}", l.from);
    let (total,): (i64,) = bind(sqlx::query_as(&count), args)
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?;
    let items = rows.into_iter().map(into).collect::<DomainResult<_>>()?;
    Ok(Page::new(items, page, total))
}

/// The one statement every sweeper resolves its due holds with: it claims
/// the holds of `table` still `pending` whose `deadline` has passed,
/// soonest first, skipping rows another transaction holds, and applies
/// `set` (which may use `$1`, now) to them under the same status condition
/// (rows aliased `h`; `returning` names what comes back, with `h.` before
/// the hold's own columns).
pub struct Due<'a> {
    pub table: &'a str,
    pub pending: &'a str,
    pub deadline: &'a str,
    pub set: &'a str,
    pub returning: &'a str,
}

impl Due<'_> {
    /// Up to `limit` holds due at `now`. The claim must walk the partial
    /// index of pending deadlines in order and stop after `limit`: a plan
    /// that reads every due row and sorts them (what the planner picks
    /// while the table's statistics are older than a burst of holds) makes
    /// each batch cost the whole backlog, and a backlog of 100,000 swept
    /// quadratically. So the claim runs with sequential and bitmap scans
    /// off, in its transaction only.
    pub async fn fetch<R>(
        &self,
        conn: &mut sqlx::PgConnection,
        now: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> promo_domain::DomainResult<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = format!(
            "WITH due AS (
               SELECT id FROM {table} WHERE status = '{pending}' AND {deadline} <= $1
               ORDER BY {deadline} LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE {table} h SET {set}
             FROM due WHERE h.id = due.id AND h.status = '{pending}'
             RETURNING {returning}",
            table = self.table,
            pending = self.pending,
            deadline = self.deadline,
            set = self.set,
            returning = self.returning,
        );
        plan(conn, Plan::Walk).await?;
        let rows = sqlx::query_as(&sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        plan(conn, Plan::Free).await?;
        Ok(rows)
    }
}

/// How the planner may run the statements that follow, for the rest of the
/// transaction: hints by `set_config(..., true)`, since PostgreSQL has no
/// per-statement hints. A plan that cannot avoid a disabled node costs 1e10
/// more, past `jit_above_cost`: the pools without JIT (`connect`) shrug that
/// off, the others only walk, where an index always serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Whatever the planner picks.
    Free,
    /// No sequential or bitmap scans: a claim walks its partial index in
    /// order and stops at its limit, whatever the statistics say (see [`Due`]).
    Walk,
    /// No hash or merge joins: a join of a statement's arrays with a large
    /// table probes its index once per element, rather than reading and
    /// hashing (or sorting) the whole table, which the planner picks once an
    /// array holds a few percent of the table's rows.
    Probe,
}

pub async fn plan(conn: &mut sqlx::PgConnection, p: Plan) -> promo_domain::DomainResult<()> {
    let (scans, joins) = match p {
        Plan::Free => ("on", "on"),
        Plan::Walk => ("off", "on"),
        Plan::Probe => ("on", "off"),
    };
    sqlx::query(&format!(
        "SELECT set_config('enable_seqscan', '{scans}', true),
                set_config('enable_bitmapscan', '{scans}', true),
                set_config('enable_hashjoin', '{joins}', true),
                set_config('enable_mergejoin', '{joins}', true)"
    ))
    .execute(conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// `cols` with each column prefixed by `alias.` (a RETURNING after a join).
pub fn qualified(alias: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_numbers_only_the_values_it_binds() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let f = Filter::default()
            .id("user_id", None)
            .id("policy_id", Some(a))
            .status("AVAILABLE")
            .bind("expires_at > $", Arg::Id(b));
        assert_eq!(
            f.from("coupons"),
            "FROM coupons WHERE policy_id = $1 AND status = 'AVAILABLE' AND expires_at > $2"
        );
        assert_eq!(f.args().len(), 2);
        assert_eq!(Filter::default().id("user_id", None).from("t"), "FROM t");
    }
}
