//! `promoctl check`: the invariants of ARCHITECTURE.md verified against
//! PostgreSQL and Redis directly. Each invariant is one set-based query (or a
//! pipelined Redis scan of the keys PostgreSQL names), so a check stays within
//! seconds on millions of rows.
//!
//! The functions take a pool and a Redis connection and return results, so
//! tests call them without the CLI.

pub mod acks;
pub mod audit;
mod counters;
pub mod coupon;
pub mod events;
pub mod point;
pub mod timesale;
mod users;

use crate::config::{config_dir, pick, FileConfig};
use crate::error::{pg_unreachable, CtlError, CtlResult};
use crate::output::Output;
use clap::Args;
use promo_store::urls;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use counters::OVERDUE;
pub use promo_store::cache::Redis;

#[derive(Debug, Args)]
#[command(after_help = "\
Reads PostgreSQL and Redis directly. No flag checks everything. Exit 0 when every
invariant holds, 1 on a violation, 3 when a store is unreachable.
PostgreSQL and Redis are read one after the other, so on a busy system requests in
flight can show as a Redis difference: rerun (or check a quiet system) to confirm.

Examples:
  promoctl check
  promoctl check --coupon --timesale -o json
  promoctl check --events --max-backlog-age 5m")]
pub struct CheckArgs {
    #[arg(long)]
    pub coupon: bool,
    #[arg(long)]
    pub point: bool,
    #[arg(long)]
    pub timesale: bool,
    #[arg(long)]
    pub events: bool,
    /// The gateway's users: every admin's audit entry. Checked with
    /// --users, or in a run of every check when the gateway's database url
    /// is set
    #[arg(long)]
    pub users: bool,
    #[arg(long = "gateway-database-url", env = "PROMOCTL_GATEWAY_DATABASE_URL")]
    pub gateway_db: Option<String>,
    #[command(flatten)]
    pub stores: Stores,
    /// Unpublished events older than this fail the check (e.g. 5m)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_backlog_age: Option<std::time::Duration>,
    /// Also compare a load run's acknowledgement log (`promoctl load --acks`)
    /// with the databases: nothing acknowledged is missing, nothing
    /// unacknowledged is present
    #[arg(long)]
    pub acks: Option<std::path::PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct Stores {
    #[arg(
        long = "coupon-database-url",
        alias = "coupon-db",
        env = "PROMOCTL_COUPON_DATABASE_URL"
    )]
    pub coupon_db: Option<String>,
    #[arg(
        long = "point-database-url",
        alias = "point-db",
        env = "PROMOCTL_POINT_DATABASE_URL"
    )]
    pub point_db: Option<String>,
    #[arg(
        long = "timesale-database-url",
        alias = "timesale-db",
        env = "PROMOCTL_TIMESALE_DATABASE_URL"
    )]
    pub timesale_db: Option<String>,
    #[arg(long, env = "PROMOCTL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// For `rediss://` with a private CA: the PEM file that signed Redis's certificate
    #[arg(long, env = "PROMOCTL_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
}

impl CheckArgs {
    /// Every check, on these stores.
    pub fn all(stores: Stores) -> CheckArgs {
        CheckArgs {
            coupon: false,
            point: false,
            timesale: false,
            events: false,
            users: false,
            gateway_db: None,
            stores,
            max_backlog_age: None,
            acks: None,
        }
    }
}

/// Offending ids shown per check.
pub const SAMPLE: usize = 5;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CheckResult {
    pub check: String,
    pub examined: i64,
    pub violations: i64,
    /// Up to `SAMPLE` offending ids, each with what is wrong.
    pub sample: Vec<String>,
    /// Context that is not a failure: keys not loaded, backlog.
    pub note: Option<String>,
    /// A condition worth a look that breaks no invariant (e.g. a backlog).
    pub warning: bool,
    /// The check could not run (a missing table, a bad row).
    pub error: Option<String>,
}

impl CheckResult {
    pub fn new(check: &str) -> CheckResult {
        CheckResult {
            check: check.to_owned(),
            ..CheckResult::default()
        }
    }

    pub fn failed(&self) -> bool {
        self.violations > 0 || self.error.is_some()
    }

    /// Counts a violation, keeping the first few as the sample.
    pub fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(what);
        }
    }

    fn status(&self) -> &'static str {
        if self.error.is_some() {
            "ERROR"
        } else if self.violations > 0 {
            "FAIL"
        } else if self.warning {
            "WARN"
        } else {
            "ok"
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.failed()).count()
    }

    pub fn get(&self, check: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.check == check)
    }

    pub fn render(&self, out: &Output) -> String {
        let v = serde_json::json!({
            "ok": self.failed() == 0,
            "failed": self.failed(),
            "results": self.results,
        });
        if let Some(s) = out.structured(&v) {
            return s;
        }
        let mut t = out.table();
        if out.headers {
            t.set_header(vec![
                "check",
                "status",
                "rows examined",
                "violations",
                "sample",
                "note",
            ]);
        }
        for r in &self.results {
            let note = match (&r.error, &r.note) {
                (Some(e), _) => e.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => String::new(),
            };
            t.add_row(vec![
                r.check.clone(),
                r.status().to_owned(),
                r.examined.to_string(),
                r.violations.to_string(),
                r.sample.join("\n"),
                note,
            ]);
        }
        let verdict = match self.failed() {
            0 => "all invariants hold".to_owned(),
            n => format!("{n} check(s) failed"),
        };
        format!("{}\n{verdict}", out.finish(t))
    }
}

/// An invariant as one query: `with` defines common table expressions that
/// end in `v`, one row per violation with a `what` that names it; the rows
/// examined are counted from `examined` (a table, or a CTE of `with`).
pub struct Invariant {
    pub check: &'static str,
    pub examined: &'static str,
    pub with: &'static str,
}

impl Invariant {
    pub fn sql(&self) -> String {
        invariant_sql(self.with, self.examined)
    }
}

pub(crate) fn invariant_sql(with: &str, examined: &str) -> String {
    format!(
        "WITH {with}
         SELECT (SELECT count(*) FROM {examined}), (SELECT count(*) FROM v),
                ARRAY(SELECT what FROM v ORDER BY what LIMIT {SAMPLE})"
    )
}

/// Runs the invariants one after the other, in their order.
pub async fn invariants(pool: &PgPool, all: &[Invariant]) -> CtlResult<Vec<CheckResult>> {
    let mut out = Vec::with_capacity(all.len());
    for i in all {
        out.push(sql_check(pool, i.check, &i.sql()).await?);
    }
    Ok(out)
}

/// Runs one set-based SQL check. The query returns one row: rows examined
/// (bigint), violations (bigint) and a sample (text[]).
pub async fn sql_check(pool: &PgPool, check: &str, sql: &str) -> CtlResult<CheckResult> {
    let row = sqlx::query_as::<_, (i64, i64, Vec<String>)>(sql)
        .fetch_one(pool)
        .await;
    finish(CheckResult::new(check), row)
}

/// How long past its expiry a hold of any kind (an order, a coupon
/// reservation, a point hold) may stay pending: promod's sweepers run every
/// `holds.sweep_every_ms` (1 s by default) plus a batch's time; the rest is
/// room for a slow pass or a restart. Expiries are promod's clock and the
/// age is PostgreSQL's `now()`, so a promod run with `clock_offset_secs`
/// behind the database needs a larger bound.
pub const SWEEP_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// The holds of one kind, as their "swept" check reads them: rows of
/// `table` whose `status` is `pending` until `deadline`.
pub struct Holds {
    pub check: &'static str,
    pub table: &'static str,
    pub pending: &'static str,
    pub deadline: &'static str,
    /// How a violation's sample names the deadline ("reserved until").
    pub label: &'static str,
}

/// "Holds are swept", the one check of every kind of hold: none still
/// pending more than [`SWEEP_BOUND`] past its deadline (the sweeper is not
/// running, or failing).
pub async fn swept(pool: &PgPool, h: &Holds) -> CtlResult<CheckResult> {
    let bound = Some(SWEEP_BOUND.as_secs_f64());
    sql_check_with(pool, h.check, &swept_sql(h), bound).await
}

/// The query of [`swept`]; the bound, in seconds, is `$1`.
fn swept_sql(h: &Holds) -> String {
    let Holds {
        table,
        pending,
        deadline,
        label,
        ..
    } = h;
    let with = format!(
        "v AS (SELECT id::text || ' ({label} ' || {deadline} || ')' AS what
               FROM {table} WHERE status = '{pending}'
                 AND {deadline} < now() - make_interval(secs => $1::float8))"
    );
    invariant_sql(&with, &format!("{table} WHERE status = '{pending}'"))
}

/// `sql_check` with one nullable float parameter (`$1`).
pub async fn sql_check_with(
    pool: &PgPool,
    check: &str,
    sql: &str,
    arg: Option<f64>,
) -> CtlResult<CheckResult> {
    let row = sqlx::query_as::<_, (i64, i64, Vec<String>)>(sql)
        .bind(arg)
        .fetch_one(pool)
        .await;
    finish(CheckResult::new(check), row)
}

fn finish(
    mut r: CheckResult,
    row: Result<(i64, i64, Vec<String>), sqlx::Error>,
) -> CtlResult<CheckResult> {
    match row {
        Ok((examined, violations, sample)) => {
            r.examined = examined;
            r.violations = violations;
            r.sample = sample;
            Ok(r)
        }
        Err(e) => settle(r, e),
    }
}

/// A dead store aborts the run (exit 3); anything else fails only this check.
pub(crate) fn settle(mut r: CheckResult, e: sqlx::Error) -> CtlResult<CheckResult> {
    if pg_unreachable(&e) {
        return Err(CtlError::unreachable("postgres", e));
    }
    r.error = Some(describe(&e));
    Ok(r)
}

pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        // 42P01: undefined_table, the usual sign of an unmigrated database.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => {
            format!("{} (has promod migrated this database?)", d.message())
        }
        e => format!("query failed: {e}").to_lowercase(),
    }
}

pub(crate) fn redis_err(e: redis::RedisError) -> CtlError {
    CtlError::redis("redis", e)
}

pub async fn connect_pg(url: &str) -> CtlResult<PgPool> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| {
        CtlError::usage(format!(
            "invalid database url {}: {e}",
            promo_store::urls::redact(url)
        ))
    })?;
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(opts)
        .await
        .map_err(|e| CtlError::unreachable(format!("postgres at {}", urls::redact(url)), e))
}

pub async fn connect_redis(url: &str, ca_file: Option<&Path>) -> CtlResult<Redis> {
    // A malformed url or unreadable ca file is the caller's mistake, not a
    // dead server.
    let client = promo_store::cache::Target::new(url, ca_file)
        .client()
        .map_err(|e| CtlError::usage(format!("{e:#}")))?;
    // A whole counter set is read at once; on a big sale that is slower than
    // any request may wait, but nothing here is on a request's path.
    promo_store::cache::connect_client(client, url, std::time::Duration::from_secs(30))
        .await
        .map_err(|e| CtlError::unreachable(format!("redis at {url}"), e))
}

/// The store urls: flags (or env) > config file > promod's defaults.
pub struct StoreUrls {
    pub coupon: String,
    pub point: String,
    pub timesale: String,
    pub redis: String,
    pub redis_ca_file: Option<PathBuf>,
    /// The config file's gateway database, if it names one (its flag is
    /// `check`'s own, not a shared store flag).
    pub gateway_in_file: Option<String>,
}

pub fn store_urls(s: &Stores) -> CtlResult<StoreUrls> {
    let file = FileConfig::load(&config_dir()?)?;
    Ok(StoreUrls {
        coupon: pick(
            s.coupon_db.as_deref(),
            file.coupon_database_url.as_deref(),
            urls::COUPON_DATABASE_URL,
        ),
        point: pick(
            s.point_db.as_deref(),
            file.point_database_url.as_deref(),
            urls::POINT_DATABASE_URL,
        ),
        timesale: pick(
            s.timesale_db.as_deref(),
            file.timesale_database_url.as_deref(),
            urls::TIMESALE_DATABASE_URL,
        ),
        redis: pick(
            s.redis_url.as_deref(),
            file.redis_url.as_deref(),
            urls::REDIS_URL,
        ),
        redis_ca_file: s.redis_ca_file.clone().or(file.redis_ca_file),
        gateway_in_file: file.gateway_database_url,
    })
}

pub async fn run_cli(args: CheckArgs, out: &Output) -> CtlResult<()> {
    let report = run(&args).await?;
    println!("{}", report.render(out));
    match report.failed() {
        0 => Ok(()),
        n => Err(CtlError::CheckFailed(n)),
    }
}

/// The checks `args` asks for (all of them when it names none).
pub async fn run(args: &CheckArgs) -> CtlResult<Report> {
    let acks = match &args.acks {
        Some(path) => Some(crate::acks::read(path).map_err(|e| {
            CtlError::Usage(format!("cannot read the ack log {}: {e}", path.display()))
        })?),
        None => None,
    };
    let all = !(args.coupon || args.point || args.timesale || args.events || args.users);
    let (c, p, t, e) = (
        all || args.coupon,
        all || args.point,
        all || args.timesale,
        all || args.events,
    );
    let a = acks.is_some();
    let urls = store_urls(&args.stores)?;
    let mut redis = connect_if(
        c || p || t,
        connect_redis(&urls.redis, urls.redis_ca_file.as_deref()),
    )
    .await?;
    let coupon_pool = connect_if(c || e || a, connect_pg(&urls.coupon)).await?;
    let point_pool = connect_if(p || e || a, connect_pg(&urls.point)).await?;
    let timesale_pool = connect_if(t || e || a, connect_pg(&urls.timesale)).await?;
    let mut report = Report::default();
    if let Some(url) = gateway_url(args, all, &urls) {
        let pool = connect_pg(&url).await?;
        report.results.extend(audit::gateway(&pool).await?);
    }
    if let (true, Some(pool), Some(r)) = (c, &coupon_pool, redis.as_mut()) {
        report.results.extend(coupon::check(pool, r).await?);
        report.results.extend(audit::coupon(pool).await?);
    }
    if let (true, Some(pool), Some(r)) = (p, &point_pool, redis.as_mut()) {
        report.results.extend(point::check(pool, r).await?);
        report.results.extend(audit::point(pool).await?);
    }
    if let (true, Some(pool), Some(r)) = (t, &timesale_pool, redis.as_mut()) {
        report.results.extend(timesale::check(pool, r).await?);
        report.results.extend(audit::timesale(pool).await?);
    }
    let (Some(cp), Some(pp), Some(tp)) = (&coupon_pool, &point_pool, &timesale_pool) else {
        return Ok(report);
    };
    if e {
        let dbs = [("coupon", cp), ("point", pp), ("timesale", tp)];
        report
            .results
            .extend(events::check(&dbs, args.max_backlog_age).await?);
    }
    if let Some((fixtures, acks)) = &acks {
        report
            .results
            .extend(acks::check(fixtures, acks, cp, pp, tp).await?);
    }
    Ok(report)
}

/// The gateway's database, when asked for (`--users`: the url given or
/// the default) or, in a run of every check, when its url is given (flag,
/// env or config file): a deployment's gateway database is often not where
/// the defaults say, and a check of every service must not fail on that.
fn gateway_url(args: &CheckArgs, all: bool, stores: &StoreUrls) -> Option<String> {
    let given = args.gateway_db.clone().or(stores.gateway_in_file.clone());
    match (args.users, all, given) {
        (true, _, url) => Some(url.unwrap_or_else(|| urls::GATEWAY_DATABASE_URL.to_owned())),
        (false, true, url) => url,
        (false, false, _) => None,
    }
}

/// Connects only to what the checks asked for will read.
async fn connect_if<T>(
    wanted: bool,
    connect: impl std::future::Future<Output = CtlResult<T>>,
) -> CtlResult<Option<T>> {
    if !wanted {
        return Ok(None);
    }
    connect.await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    #[test]
    fn every_swept_check_reads_the_sweep_bound_as_its_parameter() {
        for h in [&point::HOLDS, &coupon::HOLDS, &timesale::HOLDS] {
            let sql = swept_sql(h);
            assert!(sql.contains("make_interval(secs => $1::float8)"), "{sql}");
            assert!(sql.contains(&format!("status = '{}'", h.pending)), "{sql}");
        }
    }

    #[test]
    fn a_report_fails_on_violations_and_errors_not_warnings() {
        let mut ok = CheckResult::new("a");
        ok.examined = 3;
        let mut warn = CheckResult::new("b");
        warn.warning = true;
        warn.note = Some("backlog 2".into());
        let mut bad = CheckResult::new("c");
        for i in 0..7 {
            bad.violation(format!("id{i}"));
        }
        assert_eq!(bad.violations, 7);
        assert_eq!(bad.sample.len(), SAMPLE);
        let report = Report {
            results: vec![ok.clone(), warn.clone()],
        };
        assert_eq!(report.failed(), 0);
        assert!(report
            .render(&Output::plain(Format::Table))
            .ends_with("all invariants hold"));
        let report = Report {
            results: vec![ok, warn, bad],
        };
        assert_eq!(report.failed(), 1);
        let table = report.render(&Output::plain(Format::Table));
        assert!(table.contains("FAIL") && table.contains("WARN") && table.contains("id4"));
        assert!(!table.contains("id5"), "only the sample is shown");
        let json: serde_json::Value =
            serde_json::from_str(&report.render(&Output::plain(Format::Json))).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["results"][2]["violations"], 7);
    }
}
