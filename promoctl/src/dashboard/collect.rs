//! The collectors: role health and metrics over HTTP, stock from Redis,
//! registrations from etcd. Every source has a short timeout and a failure
//! only blanks its own part of the view, so one dead role or store never
//! stalls or kills the dashboard.

use super::prom::{self, Scrape};
use super::state::{
    BreakerState, GatewayView, Health, OutboxView, PointsView, Role, RoleView, RouteView, Snapshot,
    Stock, StockKind,
};
use promo_store::cache::Target;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const HTTP_TIMEOUT: Duration = Duration::from_millis(700);
const STORE_TIMEOUT: Duration = Duration::from_millis(800);
/// A busy shared Redis can hold thousands of keys; the view shows far fewer.
const MAX_STOCK_KEYS: usize = 500;

#[derive(Debug, Clone)]
pub struct Sources {
    pub urls: Vec<(Role, String)>,
    pub redis: Option<String>,
    pub redis_ca_file: Option<std::path::PathBuf>,
    pub etcd: Option<String>,
    pub etcd_prefix: String,
    /// Trusted for https role urls besides the system's roots.
    pub certificate_authority: Option<std::path::PathBuf>,
}

struct RoleProbe {
    role: Role,
    url: String,
    health: Health,
    scrape: Option<(Instant, Scrape)>,
    problem: Option<String>,
}

pub struct Collector {
    sources: Sources,
    http: reqwest::Client,
    redis: Option<redis::aio::MultiplexedConnection>,
    etcd: Option<crate::etcd::Client>,
    prev: HashMap<Role, (Instant, Scrape)>,
}

impl Collector {
    pub fn new(sources: Sources) -> anyhow::Result<Collector> {
        let http = crate::client::http_builder(sources.certificate_authority.as_deref())?
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_millis(300))
            .build()?;
        Ok(Collector {
            sources,
            http,
            redis: None,
            etcd: None,
            prev: HashMap::new(),
        })
    }

    pub async fn collect(&mut self) -> Snapshot {
        let probes = futures::future::join_all(
            self.sources
                .urls
                .iter()
                .map(|(role, url)| probe(&self.http, *role, url.clone())),
        );
        let redis = self.sources.redis.as_deref();
        let redis = redis.map(|url| Target::new(url, self.sources.redis_ca_file.as_deref()));
        let etcd_url = self.sources.etcd.clone();
        let prefix = self.sources.etcd_prefix.clone();
        let (probes, stock, etcd) = tokio::join!(
            probes,
            stocks(&mut self.redis, redis),
            registrations(&mut self.etcd, etcd_url, &prefix),
        );
        let mut problems = Vec::new();
        let inventory = match stock {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("redis: {e}"));
                None
            }
        };
        let instances = match etcd {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("etcd: {e}"));
                None
            }
        };
        problems.extend(probes.iter().filter_map(|p| p.problem.clone()));
        self.build(probes, instances, inventory, problems)
    }

    fn build(
        &mut self,
        probes: Vec<RoleProbe>,
        instances: Option<BTreeMap<String, usize>>,
        inventory: Option<Vec<Stock>>,
        problems: Vec<String>,
    ) -> Snapshot {
        // Each role's scrape with the growth since the previous one.
        let mut views: BTreeMap<Role, View> = BTreeMap::new();
        for p in &probes {
            let Some((at, cur)) = &p.scrape else {
                self.prev.remove(&p.role);
                continue;
            };
            let delta = self.prev.get(&p.role).map(|(t, prev)| {
                let secs = at.duration_since(*t).as_secs_f64().max(0.001);
                (cur.delta(prev), secs)
            });
            views.insert(
                p.role,
                View {
                    cur: cur.clone(),
                    delta,
                },
            );
            self.prev.insert(p.role, (*at, cur.clone()));
        }

        let mut routes = Vec::new();
        let mut roles = Vec::new();
        for p in &probes {
            let mut rv = RoleView {
                role: p.role,
                url: p.url.clone(),
                health: p.health.clone(),
                instances: match p.role {
                    Role::Gateway => None,
                    r => instances
                        .as_ref()
                        .map(|m| m.get(r.as_str()).copied().unwrap_or(0)),
                },
                rps: None,
                err_pct: None,
                busy: None,
                shed_rps: None,
            };
            if let Some(v) = views.get(&p.role) {
                (rv.busy, rv.shed_rps) = admission(p.role, v);
                let (mut r, totals) = route_views(p.role, v);
                rv.rps = totals.map(|t| t.0);
                rv.err_pct = totals.and_then(|t| pct(t.1, t.0));
                routes.append(&mut r);
            }
            roles.push(rv);
        }

        let gateway = views.get(&Role::Gateway).map(gateway_view);
        let points = views.get(&Role::Point).map(points_view);
        let service_views: Vec<&View> = [Role::Coupon, Role::Point, Role::Timesale]
            .iter()
            .filter_map(|r| views.get(r))
            .collect();
        let outbox = (!service_views.is_empty()).then(|| outbox_view(&service_views));

        Snapshot {
            taken_at: chrono::Utc::now(),
            roles,
            routes,
            gateway,
            inventory,
            points,
            outbox,
            problems,
        }
    }
}

async fn probe(http: &reqwest::Client, role: Role, base: String) -> RoleProbe {
    let base = base.trim_end_matches('/');
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    let (health, ready, metrics) = tokio::join!(get("/healthz"), get("/readyz"), async {
        let resp = get("/metrics").await?.error_for_status()?;
        resp.text().await
    });
    let health = match health {
        Ok(r) if r.status().is_success() => match ready {
            Ok(r) if r.status().is_success() => Health::Up,
            _ => Health::Unready,
        },
        Ok(r) => Health::Down(format!("healthz answered {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Health::Down("timed out".into()),
        Err(_) => Health::Down("unreachable".into()),
    };
    let mut problem = None;
    let scrape = match (&health, metrics) {
        (Health::Down(_), _) => None,
        (_, Ok(text)) => match Scrape::parse(&text) {
            Ok(s) => Some((Instant::now(), s)),
            Err(e) => {
                problem = Some(format!("{} metrics: {e}", role.as_str()));
                None
            }
        },
        (_, Err(e)) => {
            problem = Some(format!("{} metrics: {e}", role.as_str()));
            None
        }
    };
    RoleProbe {
        role,
        url: base.to_owned(),
        health,
        scrape,
        problem,
    }
}

struct View {
    cur: Scrape,
    /// Growth since the previous scrape and the seconds between them.
    delta: Option<(Scrape, f64)>,
}

fn pct(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

/// Strips what every REST route shares, to leave room on a narrow terminal.
fn short_route(route: &str) -> String {
    route.strip_prefix("/api/v1").unwrap_or(route).to_owned()
}

/// Per-route rows of one role, and its (req/s, 5xx/s) totals.
fn route_views(role: Role, v: &View) -> (Vec<RouteView>, Option<(f64, f64)>) {
    // Roles of one process share one registry: keep only this role's series.
    // Probes and scrapes (this dashboard's own among them) would drown the
    // traffic that matters, so the ops routes are left out.
    let mine = |s: &prom::Series| {
        s.label("role") == Some(role.as_str())
            && !matches!(s.label("route"), Some("/healthz" | "/readyz" | "/metrics"))
    };
    let key = |s: &prom::Series| {
        (
            s.label("method").unwrap_or("").to_owned(),
            s.label("route").unwrap_or("").to_owned(),
        )
    };
    let mut known: BTreeSet<(String, String)> = BTreeSet::new();
    for (s, _) in v.cur.metric("promo_http_requests_total") {
        if mine(s) {
            known.insert(key(s));
        }
    }
    let mut counts: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut buckets: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    if let Some((d, _)) = &v.delta {
        for (s, n) in d
            .metric("promo_http_requests_total")
            .filter(|(s, _)| mine(s))
        {
            let c = counts.entry(key(s)).or_default();
            c.0 += n;
            if s.label("status").is_some_and(|st| st.starts_with('5')) {
                c.1 += n;
            }
        }
        for (s, n) in d
            .metric("promo_http_request_duration_seconds_bucket")
            .filter(|(s, _)| mine(s))
        {
            if let Some(le) = s.label("le").and_then(prom::parse_value) {
                buckets.entry(key(s)).or_default().push((le, n));
            }
        }
    }
    let secs = v.delta.as_ref().map(|(_, s)| *s);
    let mut total = (0.0, 0.0);
    let rows = known
        .into_iter()
        .map(|k| {
            let c = counts.get(&k).copied().unwrap_or_default();
            total.0 += c.0;
            total.1 += c.1;
            let b = buckets.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            RouteView {
                role,
                method: k.0.clone(),
                route: short_route(&k.1),
                rps: secs.map(|s| c.0 / s),
                p50: prom::quantile(0.5, b),
                p99: prom::quantile(0.99, b),
                err_pct: pct(c.1, c.0),
            }
        })
        .collect();
    (rows, secs.map(|s| (total.0 / s, total.1 / s)))
}

/// A role's busiest port as (in flight, bound), and its refusals per second
/// over all its ports (`promod/src/overload.rs`).
fn admission(role: Role, v: &View) -> (Option<(f64, f64)>, Option<f64>) {
    let mine = |s: &prom::Series| s.label("role") == Some(role.as_str());
    let mut ports: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (s, n) in v.cur.metric("promo_in_flight").filter(|(s, _)| mine(s)) {
        ports
            .entry(s.label("port").unwrap_or("").to_owned())
            .or_default()
            .0 = n;
    }
    for (s, n) in v
        .cur
        .metric("promo_in_flight_limit")
        .filter(|(s, _)| mine(s))
    {
        ports
            .entry(s.label("port").unwrap_or("").to_owned())
            .or_default()
            .1 = n;
    }
    let busy = ports
        .into_values()
        .filter(|(_, limit)| *limit > 0.0)
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    let shed = v.delta.as_ref().map(|(d, secs)| {
        d.metric("promo_shed_requests_total")
            .filter(|(s, _)| mine(s))
            .fold(0.0, |a, (_, n)| a + n)
            / secs
    });
    (busy, shed)
}

fn gateway_view(v: &View) -> GatewayView {
    let breakers = v
        .cur
        .metric("promo_circuit_state")
        .map(|(s, val)| {
            (
                s.label("service").unwrap_or("?").to_owned(),
                BreakerState::from_gauge(val),
            )
        })
        .collect();
    let rate_limited = grouped(v, "promo_rate_limited_total", "group");
    GatewayView {
        breakers,
        rate_limited,
    }
}

/// (label value, per second, total) of a counter, summed by one label.
fn grouped(v: &View, metric: &str, label: &str) -> Vec<(String, Option<f64>, f64)> {
    let mut out: BTreeMap<String, (Option<f64>, f64)> = BTreeMap::new();
    for (s, n) in v.cur.metric(metric) {
        let e = out
            .entry(s.label(label).unwrap_or("").to_owned())
            .or_default();
        e.1 += n;
    }
    if let Some((d, secs)) = &v.delta {
        for (s, n) in d.metric(metric) {
            let e = out
                .entry(s.label(label).unwrap_or("").to_owned())
                .or_default();
            e.0 = Some(e.0.unwrap_or(0.0) + n / secs);
        }
    }
    out.into_iter().map(|(k, (r, t))| (k, r, t)).collect()
}

fn points_view(v: &View) -> PointsView {
    let ops = grouped(v, "promo_point_ops_total", "op");
    let rps = v.delta.as_ref().map(|(d, secs)| {
        d.metric("promo_point_ops_total")
            .map(|(_, n)| n)
            .fold(0.0, |a, n| a + n)
            / secs
    });
    PointsView { ops, rps }
}

fn outbox_view(views: &[&View]) -> OutboxView {
    let mut backlog: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    // Roles sharing a process expose the same process-wide published
    // counter; the set of relays a scrape reports tells the processes apart,
    // so each process is counted once.
    let mut processes: BTreeMap<Vec<String>, (f64, Option<f64>)> = BTreeMap::new();
    for v in views {
        let mut services = Vec::new();
        for (s, n) in v.cur.metric("promo_outbox_backlog") {
            let svc = s.label("service").unwrap_or("?").to_owned();
            services.push(svc.clone());
            backlog.entry(svc).or_default().0 = n;
        }
        for (s, n) in v.cur.metric("promo_outbox_oldest_age_seconds") {
            let svc = s.label("service").unwrap_or("?").to_owned();
            backlog.entry(svc).or_default().1 = n;
        }
        services.sort();
        let total = v
            .cur
            .metric("promo_outbox_published_total")
            .map(|(_, n)| n)
            .fold(0.0, |a, n| a + n);
        let rate = v.delta.as_ref().map(|(d, secs)| {
            d.metric("promo_outbox_published_total")
                .map(|(_, n)| n)
                .fold(0.0, |a, n| a + n)
                / secs
        });
        processes.entry(services).or_insert((total, rate));
    }
    let published_total = processes.values().fold(0.0, |a, p| a + p.0);
    let rates: Vec<f64> = processes.values().filter_map(|p| p.1).collect();
    OutboxView {
        backlog: backlog.into_iter().map(|(k, (b, a))| (k, b, a)).collect(),
        published_rps: (!rates.is_empty()).then(|| rates.iter().fold(0.0, |a, r| a + r)),
        published_total,
    }
}

async fn stocks(
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    target: Option<Target<'_>>,
) -> anyhow::Result<Option<Vec<Stock>>> {
    let Some(target) = target else {
        return Ok(None);
    };
    let res = tokio::time::timeout(STORE_TIMEOUT, async {
        if conn.is_none() {
            let client = target.client()?;
            *conn = Some(client.get_multiplexed_async_connection().await?);
        }
        let c = conn.as_mut().expect("connected above");
        // The braces are literal in the key names, so they are escaped here.
        let mut out = scan_stock(c, r"\{coupon:policy:*\}:remaining", StockKind::Coupon).await?;
        out.extend(scan_stock(c, r"\{timesale:inventory:*\}", StockKind::Sale).await?);
        out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        anyhow::Ok(out)
    })
    .await;
    match res {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(e)) => {
            *conn = None;
            Err(e)
        }
        Err(_) => {
            *conn = None;
            anyhow::bail!("timed out")
        }
    }
}

async fn scan_stock(
    c: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
    kind: StockKind,
) -> anyhow::Result<Vec<Stock>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= MAX_STOCK_KEYS {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys.truncate(MAX_STOCK_KEYS);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    Ok(keys
        .iter()
        .zip(values)
        .filter_map(|(k, v)| {
            let id = stock_id(k, kind)?;
            let remaining = v?.trim().parse().ok()?;
            Some(Stock {
                kind,
                id,
                remaining,
            })
        })
        .collect())
}

/// The id inside a stock key, for the two layouts of `promo_store::keys`.
fn stock_id(key: &str, kind: StockKind) -> Option<String> {
    let inner = match kind {
        StockKind::Coupon => key
            .strip_prefix("{coupon:policy:")?
            .strip_suffix("}:remaining")?,
        StockKind::Sale => key
            .strip_prefix("{timesale:inventory:")?
            .strip_suffix('}')?,
    };
    Some(inner.to_owned())
}

/// Instances per role registered under `<prefix>/<role>/<instance>`.
async fn registrations(
    client: &mut Option<crate::etcd::Client>,
    url: Option<String>,
    prefix: &str,
) -> anyhow::Result<Option<BTreeMap<String, usize>>> {
    let Some(url) = url else { return Ok(None) };
    let dir = format!("{}/", prefix.trim_end_matches('/'));
    let res = tokio::time::timeout(STORE_TIMEOUT, async {
        if client.is_none() {
            let opts = crate::etcd::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(STORE_TIMEOUT);
            *client = Some(crate::etcd::Client::connect([url.as_str()], Some(opts)).await?);
        }
        let c = client.as_mut().expect("connected above");
        let resp = c
            .get(
                dir.as_str(),
                Some(
                    crate::etcd::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or_default();
            if let Some((role, _instance)) = key.strip_prefix(&dir).and_then(|r| r.split_once('/'))
            {
                *out.entry(role.to_owned()).or_insert(0) += 1;
            }
        }
        anyhow::Ok(out)
    })
    .await;
    match res {
        Ok(Ok(m)) => Ok(Some(m)),
        Ok(Err(e)) => {
            *client = None;
            Err(e)
        }
        Err(_) => {
            *client = None;
            anyhow::bail!("timed out")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_ids_come_out_of_both_key_layouts() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            stock_id(&promo_store::keys::coupon_remaining(id), StockKind::Coupon),
            Some(id.to_string())
        );
        assert_eq!(
            stock_id(&promo_store::keys::timesale_inventory(id), StockKind::Sale),
            Some(id.to_string())
        );
        assert_eq!(
            stock_id(&promo_store::keys::timesale_users(id), StockKind::Sale),
            None
        );
    }

    fn view(cur: &str, prev: Option<&str>) -> View {
        let cur = Scrape::parse(cur).unwrap();
        let delta = prev.map(|p| (cur.delta(&Scrape::parse(p).unwrap()), 2.0));
        View { cur, delta }
    }

    #[test]
    fn routes_keep_their_role_only_and_count_5xx_as_errors() {
        let prev = r#"promo_http_requests_total{role="gateway",method="GET",route="/api/v1/x",status="200"} 10
promo_http_requests_total{role="coupon",method="GET",route="/api/v1/y",status="200"} 10
"#;
        let cur = r#"promo_http_requests_total{role="gateway",method="GET",route="/api/v1/x",status="200"} 28
promo_http_requests_total{role="gateway",method="GET",route="/api/v1/x",status="503"} 2
promo_http_requests_total{role="coupon",method="GET",route="/api/v1/y",status="200"} 99
"#;
        let (rows, totals) = route_views(Role::Gateway, &view(cur, Some(prev)));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].route, "/x");
        assert_eq!(rows[0].rps, Some(10.0));
        assert_eq!(rows[0].err_pct, Some(10.0));
        assert_eq!(totals, Some((10.0, 1.0)));
    }

    fn scraped(role: Role, at: Instant, gateway_gets: u32) -> RoleProbe {
        let text = format!(
            "promo_http_requests_total{{role=\"gateway\",method=\"GET\",route=\"/api/v1/x\",status=\"200\"}} {gateway_gets}\n\
             promo_outbox_published_total 0\n"
        );
        RoleProbe {
            role,
            url: format!("http://127.0.0.1:{}", 4000 + role as u16),
            health: Health::Up,
            scrape: Some((at, Scrape::parse(&text).unwrap())),
            problem: None,
        }
    }

    /// All roles of one process share one registry, so every role's scrape
    /// holds the gateway's series; the gateway's rate must still come from
    /// two scrapes of the gateway, whatever the other roles saw in between.
    #[test]
    fn a_role_rate_comes_from_two_scrapes_of_that_role() {
        let mut c = Collector::new(Sources {
            urls: Vec::new(),
            redis: None,
            redis_ca_file: None,
            etcd: None,
            etcd_prefix: String::new(),
            certificate_authority: None,
        })
        .unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let first = c.build(
            vec![
                scraped(Role::Gateway, at(0), 10),
                scraped(Role::Coupon, at(5), 10),
                scraped(Role::Point, at(10), 11),
            ],
            None,
            None,
            Vec::new(),
        );
        assert_eq!(first.routes[0].rps, None, "one scrape is no rate");
        let second = c.build(
            vec![
                scraped(Role::Gateway, at(2000), 30),
                scraped(Role::Coupon, at(2005), 30),
                scraped(Role::Point, at(2010), 31),
            ],
            None,
            None,
            Vec::new(),
        );
        let gw: Vec<_> = second
            .routes
            .iter()
            .filter(|r| r.role == Role::Gateway)
            .collect();
        assert_eq!(gw.len(), 1);
        assert_eq!(gw[0].route, "/x");
        assert_eq!(gw[0].rps, Some(10.0));
        assert_eq!(second.role(Role::Gateway).unwrap().rps, Some(10.0));
        // The other roles serve none of the gateway's routes.
        assert_eq!(second.role(Role::Coupon).unwrap().rps, Some(0.0));
    }

    #[test]
    fn admission_shows_the_busiest_port_and_all_refusals() {
        let prev = r#"promo_shed_requests_total{role="coupon",port="rest"} 10
promo_shed_requests_total{role="coupon",port="grpc"} 0
"#;
        let cur = r#"promo_in_flight{role="coupon",port="rest"} 16
promo_in_flight_limit{role="coupon",port="rest"} 256
promo_in_flight{role="coupon",port="grpc"} 250
promo_in_flight_limit{role="coupon",port="grpc"} 256
promo_in_flight{role="gateway",port="rest"} 1
promo_in_flight_limit{role="gateway",port="rest"} 256
promo_shed_requests_total{role="coupon",port="rest"} 14
promo_shed_requests_total{role="coupon",port="grpc"} 6
promo_shed_requests_total{role="gateway",port="rest"} 99
"#;
        let (busy, shed) = admission(Role::Coupon, &view(cur, Some(prev)));
        assert_eq!(busy, Some((250.0, 256.0)));
        assert_eq!(shed, Some(5.0));
        let (busy, shed) = admission(Role::Point, &view(cur, None));
        assert_eq!((busy, shed), (None, None));
    }

    #[test]
    fn one_process_publishing_counts_once() {
        let text = r#"promo_outbox_backlog{service="coupon"} 3
promo_outbox_backlog{service="point"} 0
promo_outbox_oldest_age_seconds{service="coupon"} 1.5
promo_outbox_published_total 40
"#;
        let prev = "promo_outbox_published_total 20\n";
        let a = view(text, Some(prev));
        let b = view(text, Some(prev));
        let o = outbox_view(&[&a, &b]);
        assert_eq!(o.published_total, 40.0);
        assert_eq!(o.published_rps, Some(10.0));
        assert_eq!(
            o.backlog,
            vec![("coupon".into(), 3.0, 1.5), ("point".into(), 0.0, 0.0)]
        );
    }
}
