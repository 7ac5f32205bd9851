//! `promoctl load <scenario>`: open-loop (constant arrival rate) or
//! closed-loop (fixed concurrency) load against the gateway, with HDR
//! percentiles, live progress, a JSON report and k6-like thresholds.

mod codes;
pub mod file;
pub mod pacing;
pub mod scenario;
pub mod stats;

use crate::acks::{self, Ack, AckLog, RunFixtures};
use crate::check::{self, CheckArgs, Stores};
use crate::error::{CtlError, CtlResult};
use crate::output::Output;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Client;
use scenario::{Api, Auth, Fixtures, Plan, Req, Scenario};
use secrecy::SecretString;
use serde::Serialize;
use stats::{classify, Outcome, Stats, Summary, Thresholds};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  promoctl load coupon-issue --rate 2000 --duration 30s
  promoctl load timesale-order --concurrency 64 --duration 10s --stock 1000
  promoctl load mixed --rate 300 --duration 5s --p95-max 200ms --error-rate-max 0.01 --check
  promoctl load --file perf/scenarios/target-coupon.toml --rate 2000
  promoctl load redeem --rate 500 --duration 10s --check   # a BATCH code per request

A --file (perf/scenarios/*.toml) fills what the command line leaves unset;
flags given explicitly win.")]
pub struct LoadArgs {
    /// What to load (may come from --file instead).
    #[arg(value_enum, required_unless_present = "file")]
    pub scenario: Option<Scenario>,
    /// A scenario file (TOML, perf/scenarios/); explicit flags override it.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Open loop: arrivals per second.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many workers, each sending as soon as it has an answer.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Send at the same pacing for this long first, without recording it.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Open loop: arrivals beyond this many requests in flight are counted as missed.
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Coupon total or sale stock (default: coupons never run out, sales have 1000).
    #[arg(long)]
    pub stock: Option<i64>,
    /// redeem: the codes to generate [default: the run's requests plus 5 % and 100]
    #[arg(long)]
    pub codes: Option<u64>,
    /// Mint tokens with the gateway's signing secret instead of registering users.
    #[arg(long, env = "PROMO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The admin that creates the fixtures [default: the config file's email,
    /// else admin@promo.local]
    #[arg(long, env = "PROMOCTL_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// [default: the config file's password, else admin-password]
    #[arg(long, env = "PROMOCTL_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Fail if p95 is above this (e.g. 200ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub p95_max: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub p99_max: Option<Duration>,
    /// Fail if (failed + missed) / attempted is above this; refusals are not errors.
    #[arg(long)]
    pub error_rate_max: Option<f64>,
    #[arg(long)]
    pub min_rps: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Run `promoctl check` after the run; its failure fails the run.
    #[arg(long)]
    pub check: bool,
    /// The stores `--check` reads.
    #[command(flatten)]
    pub stores: Stores,
    /// No progress bar (CI logs).
    #[arg(long)]
    pub quiet: bool,
    /// Send every write with its own `Idempotency-Key`, so that a retry
    /// cannot apply it twice.
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Resend a write whose outcome is unknown (no answer, 5xx, 429) with the
    /// same key until this long after its first try (needs --idempotency-keys).
    #[arg(long, value_parser = humantime::parse_duration, requires = "idempotency_keys")]
    pub retry_for: Option<Duration>,
    /// Give up on one try after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Write every write's final answer here (JSON lines) for `promoctl check --acks`.
    #[arg(long)]
    pub acks: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub mode: String,
    pub users: usize,
    pub summary: Summary,
    pub routes: BTreeMap<&'static str, Summary>,
    pub thresholds: Thresholds,
    pub violations: Vec<String>,
    /// Tries resent because the outcome was unknown (--retry-for).
    pub retries: u64,
}

/// What every sender shares: the client, the fixtures and the counters.
struct Shared {
    client: Client,
    base: String,
    scenario: Scenario,
    fixtures: Fixtures,
    stats: Mutex<Stats>,
    routes: Mutex<BTreeMap<&'static str, Stats>>,
    in_flight: AtomicU64,
    /// The end of the warm-up: requests meant to be sent earlier are not recorded.
    measured_from: Instant,
    retries: AtomicU64,
    /// Idempotency keys are `{run}-{i}`.
    run: Option<String>,
    retry_for: Duration,
    acks: Option<AckLog>,
}

/// What one try got back.
struct Answer {
    status: Option<u16>,
    code: Option<String>,
    id: Option<uuid::Uuid>,
}

impl Shared {
    fn request(&self, i: u64) -> Req {
        self.scenario.request(&self.fixtures, i)
    }

    async fn attempt(&self, r: &Req, key: Option<&str>) -> Answer {
        let mut rb = self
            .client
            .request(r.method.clone(), format!("{}{}", self.base, r.path))
            .bearer_auth(&*r.token);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = &r.body {
            rb = rb.json(b);
        }
        let Ok(resp) = rb.send().await else {
            return Answer {
                status: None,
                code: None,
                id: None,
            };
        };
        let status = resp.status().as_u16();
        if status < 300 && self.acks.is_none() && r.then.is_none() {
            // Drain the body so the connection is reused.
            let _ = resp.bytes().await;
            return Answer {
                status: Some(status),
                code: None,
                id: None,
            };
        }
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        Answer {
            status: Some(status),
            code: v["error"]["code"].as_str().map(str::to_owned),
            id: acks::id_in(&v),
        }
    }

    /// Tries until the outcome is known or `--retry-for` runs out; the
    /// retries resend the same key, so they cannot apply a write twice.
    async fn answer(&self, r: &Req, key: Option<&str>) -> (Answer, u32) {
        let give_up = Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut retries = 0u32;
        loop {
            let a = self.attempt(r, key).await;
            if !acks::retryable(a.status, a.code.as_deref())
                || key.is_none()
                || Instant::now() + backoff > give_up
            {
                return (a, retries);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            retries += 1;
        }
    }

    /// Sends the i-th request, then its follow-up on the row it created
    /// (a hold's confirm or cancel), each recorded as a request.
    async fn send(&self, r: Req, i: u64, intended: Instant) {
        let key = self.run.as_ref().map(|run| format!("{run}-{i}"));
        let (then, token) = (r.then, r.token.clone());
        let answer = self.send_one(r, key.clone(), intended).await;
        if let (Some(then), Some(201), Some(id)) = (then, answer.status, answer.id) {
            let key = key.map(|k| format!("{k}-then"));
            self.send_one(then.request(id, &token), key, Instant::now())
                .await;
        }
    }

    async fn send_one(&self, r: Req, key: Option<String>, intended: Instant) -> Answer {
        let route = r.route;
        let write = r.method != reqwest::Method::GET;
        let key = key.filter(|_| write);
        let (answer, retries) = self.answer(&r, key.as_deref()).await;
        let outcome = match answer.status {
            Some(s) => classify(s, answer.code.as_deref()),
            None => Outcome::Failed,
        };
        if let (Some(log), true) = (&self.acks, write) {
            let ack = Ack {
                route: route.to_owned(),
                key,
                status: answer.status.unwrap_or(0),
                code: answer.code.clone(),
                id: answer.id,
                retries,
            };
            if let Err(e) = log.record(ack) {
                eprintln!("cannot write the ack log: {e}");
            }
        }
        if intended >= self.measured_from {
            let latency = intended.elapsed();
            self.stats.lock().expect("stats").record(outcome, latency);
            self.routes
                .lock()
                .expect("stats")
                .entry(route)
                .or_default()
                .record(outcome, latency);
        }
        answer
    }

    /// (completed, p99 in ms, failed + missed) so far.
    fn progress(&self) -> (u64, f64, u64) {
        let s = self.stats.lock().expect("stats");
        (
            s.completed(),
            s.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            s.shed + s.failed + s.missed,
        )
    }

    fn report(&self, args: &LoadArgs, mode: String, elapsed: Duration) -> Report {
        let summary = self.stats.lock().expect("stats").summary(elapsed);
        let thresholds = Thresholds {
            p95_max: args.p95_max,
            p99_max: args.p99_max,
            error_rate_max: args.error_rate_max,
            min_rps: args.min_rps,
        };
        let violations = thresholds.violations(&summary);
        let routes = self
            .routes
            .lock()
            .expect("stats")
            .iter()
            .map(|(r, s)| (*r, s.summary(elapsed)))
            .collect();
        Report {
            scenario: self.scenario,
            mode,
            users: args.users,
            summary,
            routes,
            thresholds,
            violations,
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

fn progress(args: &LoadArgs) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new((args.warmup + args.duration).as_secs().max(1));
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .expect("template"),
    );
    pb
}

/// Updates the progress bar twice a second until aborted.
fn ticker(shared: Arc<Shared>, pb: ProgressBar, start: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (done, p99, errors) = shared.progress();
            let rps = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), done);
            pb.set_position(start.elapsed().as_secs());
            if Instant::now() < shared.measured_from {
                pb.set_message("warming up");
                continue;
            }
            pb.set_message(format!(
                "{rps:>8.0} req/s  p99 {p99:>7.1} ms  errors {errors}"
            ));
        }
    })
}

/// Runs the load. A failed `--check` is `CheckFailed`, else broken
/// thresholds are `ThresholdsBroken` (exit 4, like k6's own code for it):
/// the report already printed them.
pub async fn run(
    args: LoadArgs,
    gateway: &str,
    ca: Option<&std::path::Path>,
    out: &Output,
) -> CtlResult<()> {
    let scenario = args
        .scenario
        .ok_or_else(|| CtlError::usage("no scenario: name one or set `scenario` in the --file"))?;
    let client = crate::client::http_builder(ca)?
        .pool_max_idle_per_host(4096)
        .timeout(args.request_timeout)
        .build()
        .map_err(|e| CtlError::other("cannot build the http client", e))?;
    let base = gateway.trim_end_matches('/').to_owned();
    let fixtures = fixtures(&args, scenario, &client, &base).await?;
    let acks = ack_log(&args, &fixtures)?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        base,
        scenario,
        fixtures,
        stats: Mutex::new(Stats::default()),
        routes: Mutex::new(BTreeMap::new()),
        in_flight: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        run: args
            .idempotency_keys
            .then(|| format!("load-{}", uuid::Uuid::now_v7().simple())),
        retry_for: args.retry_for.unwrap_or_default(),
        acks,
        measured_from: start + args.warmup,
    });
    let pb = progress(&args);
    let ticker = ticker(shared.clone(), pb.clone(), start);
    let mode = drive(&shared, &args, start).await;
    let elapsed = shared.measured_from.elapsed();
    ticker.abort();
    if let Some(log) = &shared.acks {
        log.finish().context("cannot write the ack log")?;
    }
    pb.finish_and_clear();
    let report = shared.report(&args, mode, elapsed);
    match out.structured(&report) {
        Some(s) => println!("{s}"),
        None => print_report(&report),
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    if args.check && !check_after(&args, out).await {
        return Err(CtlError::CheckFailed(1));
    }
    match report.violations.len() {
        0 => Ok(()),
        n => Err(CtlError::ThresholdsBroken(n)),
    }
}

/// The mint or login of the run's sessions, then the scenario's fixtures.
async fn fixtures(
    args: &LoadArgs,
    scenario: Scenario,
    client: &Client,
    base: &str,
) -> CtlResult<Fixtures> {
    let auth = match &args.jwt_secret {
        Some(s) => Auth::Secret(Box::new(promo_store::auth::JwtKeys::new(
            &SecretString::from(s.clone()),
            3600,
        ))),
        None => Auth::Login {
            email: args.admin_email.clone().unwrap_or_default(),
            password: args.admin_password.clone().unwrap_or_default(),
        },
    };
    // The warm-up's requests need fixtures too.
    let sending = args.warmup + args.duration;
    let planned = match args.rate {
        Some(rate) => pacing::planned(rate, sending),
        // Closed loop: enough distinct work for a fast server.
        None => (sending.as_secs_f64() * 5000.0) as u64,
    };
    eprintln!("setting up {scenario:?} fixtures ({} users)", args.users);
    let api = Api { client, base };
    let plan = Plan {
        requests: planned,
        stock: args.stock,
        codes: args.codes,
    };
    scenario
        .setup(&api, &auth, args.users, plan)
        .await
        .map_err(|e| e.context("fixtures"))
}

fn ack_log(args: &LoadArgs, fixtures: &Fixtures) -> CtlResult<Option<AckLog>> {
    let Some(path) = &args.acks else {
        return Ok(None);
    };
    let log = AckLog::create(path, run_fixtures(fixtures))
        .with_context(|| format!("cannot write the ack log {}", path.display()))?;
    Ok(Some(log))
}

/// Sends for the warm-up and the run, then waits for the stragglers; the
/// mode, as the report names it.
async fn drive(shared: &Arc<Shared>, args: &LoadArgs, start: Instant) -> String {
    let sending = args.warmup + args.duration;
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            open_loop(shared, rate, start, args).await;
            format!("open loop, {rate} req/s")
        }
        (None, c) => {
            let c = c.unwrap_or(64);
            closed_loop(shared, c, start + sending).await;
            format!("closed loop, {c} workers")
        }
    };
    while shared.in_flight.load(Ordering::Acquire) > 0
        && start.elapsed() < sending + Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mode
}

/// `promoctl check` (every invariant, the stores as `check` finds them) in
/// this process; false when it failed or could not run.
async fn check_after(args: &LoadArgs, out: &Output) -> bool {
    // With -o json the check's report follows the load's: two documents.
    match check::run_cli(CheckArgs::all(args.stores.clone()), out).await {
        Ok(()) => return true,
        // The report already said what failed.
        Err(CtlError::CheckFailed(_)) => {}
        Err(e) => eprintln!("promoctl: {e:#}"),
    }
    eprintln!("promoctl check failed after the load");
    false
}

fn run_fixtures(f: &Fixtures) -> RunFixtures {
    RunFixtures {
        policy: f.policy,
        sale: f.sale,
        users: f.users.iter().map(|(id, _)| *id).collect(),
        coupons: f.coupons.iter().map(|(id, _)| *id).collect(),
    }
}

async fn open_loop(shared: &Arc<Shared>, rate: f64, start: Instant, args: &LoadArgs) {
    let total = pacing::planned(rate, args.warmup + args.duration);
    let mut sent = 0u64;
    while sent < total {
        let due = pacing::due(start.elapsed(), rate).min(total);
        while sent < due {
            let intended = start + pacing::intended(sent, rate);
            if shared.in_flight.load(Ordering::Acquire) >= args.max_in_flight {
                if intended >= shared.measured_from {
                    shared.stats.lock().expect("stats").missed += 1;
                }
            } else {
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                let (shared, req, i) = (shared.clone(), shared.request(sent), sent);
                tokio::spawn(async move {
                    shared.send(req, i, intended).await;
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                });
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn closed_loop(shared: &Arc<Shared>, workers: usize, deadline: Instant) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (shared, next) = (shared.clone(), next.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    shared.send(shared.request(i), i, Instant::now()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

fn print_report(r: &Report) {
    let s = &r.summary;
    println!(
        "scenario   {:?} ({}, {} users)",
        r.scenario, r.mode, r.users
    );
    println!(
        "requests   {} attempted: {} ok, {} refused, {} shed (503), {} failed, {} missed",
        s.attempted, s.succeeded, s.refused, s.shed, s.failed, s.missed
    );
    println!("throughput {:.0} req/s over {:.1} s", s.rps, s.elapsed_secs);
    println!(
        "latency ms p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
    println!(
        "split p99  ok {:.2} ms  shed {:.2} ms (max {:.2})",
        s.ok_p99_ms, s.shed_p99_ms, s.shed_max_ms
    );
    println!("error rate {:.4}", s.error_rate);
    if r.retries > 0 {
        println!(
            "retries    {} (unknown outcomes resent with the same key)",
            r.retries
        );
    }
    if r.routes.len() > 1 {
        for (route, s) in &r.routes {
            println!(
                "  {route:<18} {:>7} ok {:>7} refused {:>5} failed  {:>8.0} req/s  p99 {:.2} ms",
                s.succeeded, s.refused, s.failed, s.rps, s.p99_ms
            );
        }
    }
    if r.violations.is_empty() {
        println!("thresholds ok");
    } else {
        for v in &r.violations {
            println!("threshold  FAILED: {v}");
        }
    }
}
