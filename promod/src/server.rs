//! Starts the enabled roles and runs them until the shutdown token fires, then
//! drains: listeners stop accepting, in-flight requests finish, relays flush.

use crate::config::{Config, ServiceConfig};
use crate::coupon::{self, CouponApi, CouponService};
use crate::db::{self, Schema};
use crate::gateway::rate_limit::{self, RateLimiter};
use crate::gateway::{self, users::Users};
use crate::http::{self as h, ReadyCheck};
use crate::outbox::{self, RelayConfig};
use crate::point::{self, PointApi, PointService};
use crate::roles::Role;
use crate::rpc::breaker::Breaker;
use crate::timesale::{self, TimesaleApi, TimesaleService};
use crate::{discovery, request_id};
use anyhow::Context;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use promo_domain::clock::{OffsetClock, SharedClock};
use promo_store::auth::JwtKeys;
use promo_store::cache;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what} (port in use?)"))
}

/// What a running promod exposes to tests: the bound addresses and the clock.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub gateway_http: Option<SocketAddr>,
    pub coupon_http: Option<SocketAddr>,
    pub coupon_grpc: Option<SocketAddr>,
    pub point_http: Option<SocketAddr>,
    pub point_grpc: Option<SocketAddr>,
    pub timesale_http: Option<SocketAddr>,
    pub timesale_grpc: Option<SocketAddr>,
    /// The clock every role of this process reads; tests move it.
    pub clock: Arc<OffsetClock>,
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (tasks, _bound) = start(cfg, shutdown.clone()).await?;
    join(tasks, shutdown).await
}

/// Waits for shutdown (or a task dying), then drains with a deadline.
pub async fn join(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_err = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(res) = tasks.join_next() => {
            if let Ok(Err(e)) = res {
                first_err = Some(e);
            }
            shutdown.cancel();
        }
    }
    let drain = async {
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "task ended with an error during shutdown");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), drain)
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed, exiting");
    }
    tracing::info!("promod stopped");
    first_err.map_or(Ok(()), Err)
}

fn ready_check(pool: Option<PgPool>, redis: Option<cache::Redis>) -> ReadyCheck {
    Arc::new(move || {
        let pool = pool.clone();
        let redis = redis.clone();
        Box::pin(async move {
            if let Some(pool) = pool {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    sqlx::query("SELECT 1").execute(&pool),
                )
                .await
                .map_err(|_| "postgres timed out".to_owned())?
                .map_err(|e| format!("postgres: {e}"))?;
            }
            if let Some(mut r) = redis {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut r).await;
                pong.map_err(|e| format!("redis: {e}"))?;
            }
            Ok(())
        })
    })
}

/// The middleware every role's REST port shares.
fn edge(router: Router, role: &'static str, cfg: &Config) -> Router {
    let cors = if cfg.gateway.cors_origins.is_empty() {
        CorsLayer::new()
    } else {
        let origins = cfg
            .gateway
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect::<Vec<_>>();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods(tower_http::cors::Any)
            .allow_headers(tower_http::cors::Any)
    };
    router
        .fallback(h::not_found)
        .layer(crate::detach::DetachLayer)
        .layer(from_fn_with_state(role, crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(cfg.gateway.body_limit_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(cfg.gateway.request_timeout_ms),
        ))
        .layer(from_fn(h::json_errors))
        .layer(cors)
        .layer(from_fn(request_id::layer))
}

/// Serves HTTP/1.1 with hyper directly rather than `axum::serve`, which sets
/// no timer and so no header read timeout: a client that sends its request
/// head byte by byte (or nothing at all) would hold its socket for ever.
fn serve_http(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    router: Router,
    cfg: &Config,
    shutdown: CancellationToken,
) {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let header_timeout = Duration::from_millis(cfg.gateway.header_read_timeout_ms);
    tasks.spawn(async move {
        // Every connection holds a receiver; the sender sees them all gone.
        let (conns_tx, conns_rx) = tokio::sync::watch::channel(());
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, usually: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let svc = router.clone().map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                },
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let shutdown = shutdown.clone();
            let conn_guard = conns_rx.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let res = tokio::select! {
                    res = conn.as_mut() => res,
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                drop(conn_guard);
            });
        }
        drop(listener);
        drop(conns_rx);
        conns_tx.closed().await;
        Ok(())
    });
}

fn serve_grpc<S>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    svc: S,
    shutdown: CancellationToken,
) where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .layer(request_id::GrpcLayer)
            .layer(crate::detach::DetachLayer)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { shutdown.cancelled().await },
            )
            .await
            .context("grpc server failed")
    });
}

fn spawn_relay(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cfg: &Config,
    service: &'static str,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let relay = RelayConfig {
        service,
        brokers: cfg.kafka_brokers.clone(),
        batch_size: cfg.outbox.batch_size,
        poll_interval: Duration::from_millis(cfg.outbox.poll_interval_ms),
        retention_secs: cfg.outbox.retention_secs,
    };
    tasks.spawn(async move {
        outbox::run_relay(pool, relay, shutdown).await;
        Ok(())
    });
}

/// What every role shares while starting.
struct Shared {
    cfg: Config,
    clock: SharedClock,
    keys: Arc<JwtKeys>,
    redis: cache::Redis,
    etcd: Option<etcd_client::Client>,
    shutdown: CancellationToken,
}

/// A service role's database and ports, ready before anything serves.
struct ServicePorts {
    pool: PgPool,
    http: TcpListener,
    grpc: TcpListener,
}

impl Shared {
    async fn prepare(
        &self,
        svc: &ServiceConfig,
        schema: Schema,
        name: &str,
    ) -> anyhow::Result<ServicePorts> {
        let pool = db::connect(
            &svc.database_url,
            self.cfg.db_max_connections,
            self.cfg.db_acquire_timeout_ms,
        )
        .await?;
        db::migrate(&pool, schema).await?;
        let http = bind(svc.http_addr, &format!("{name} rest")).await?;
        let grpc = bind(svc.grpc_addr, &format!("{name} grpc")).await?;
        Ok(ServicePorts { pool, http, grpc })
    }

    /// Serves a service role: its own REST port, gRPC, etcd registration and
    /// the outbox relay.
    async fn launch<S>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        name: &'static str,
        ports: ServicePorts,
        rest: Router,
        grpc: S,
    ) -> anyhow::Result<()>
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let grpc_addr = ports.grpc.local_addr()?;
        let router = Router::new()
            .merge(rest.layer(from_fn_with_state(self.keys.clone(), h::require_auth)))
            .merge(h::ops_routes(ready_check(
                Some(ports.pool.clone()),
                Some(self.redis.clone()),
            )));
        serve_http(
            tasks,
            ports.http,
            edge(router, name, &self.cfg),
            &self.cfg,
            self.shutdown.clone(),
        );
        serve_grpc(tasks, ports.grpc, grpc, self.shutdown.clone());
        if let Some(client) = &self.etcd {
            let url = format!("http://{}:{}", self.cfg.advertise_host, grpc_addr.port());
            let h = discovery::register(
                client.clone(),
                self.cfg.etcd_prefix.clone(),
                name,
                url,
                self.cfg.etcd_lease_ttl_secs,
                self.shutdown.clone(),
            )
            .await?;
            tasks.spawn(async move {
                let _ = h.await;
                Ok(())
            });
        }
        spawn_relay(tasks, &self.cfg, name, ports.pool, self.shutdown.clone());
        Ok(())
    }

    /// The channel a gateway in another process uses to reach a service role:
    /// watched in etcd, or the static address from config.
    async fn remote(
        &self,
        name: &'static str,
        static_url: &str,
    ) -> anyhow::Result<(Channel, Arc<Breaker>, Duration)> {
        let timeout = Duration::from_millis(self.cfg.gateway.call_timeout_ms);
        let channel = match &self.etcd {
            Some(client) => {
                discovery::watched_channel(
                    client.clone(),
                    &self.cfg.etcd_prefix,
                    name,
                    timeout,
                    self.shutdown.clone(),
                )
                .await?
            }
            None => discovery::static_channel(static_url, timeout)?,
        };
        let breaker = Arc::new(Breaker::new(name, self.cfg.gateway.breaker.clone()));
        Ok((channel, breaker, timeout))
    }
}

/// The APIs the gateway routes to: in process, or gRPC clients.
#[derive(Default)]
struct Local {
    coupon: Option<Arc<dyn CouponApi>>,
    point: Option<Arc<dyn PointApi>>,
    timesale: Option<Arc<dyn TimesaleApi>>,
}

async fn start_coupon(
    sh: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    bound: &mut Bound,
) -> anyhow::Result<Arc<dyn CouponApi>> {
    let ports = sh.prepare(&sh.cfg.coupon, Schema::Coupon, "coupon").await?;
    bound.coupon_http = ports.http.local_addr().ok();
    bound.coupon_grpc = ports.grpc.local_addr().ok();
    let admission = Arc::new(promo_store::stock::RedisStock::new(
        sh.redis.clone(),
    ));
    let svc = Arc::new(CouponService::new(
        ports.pool.clone(),
        admission,
        sh.clock.clone(),
    ));
    // Rebuild counters that Redis lost (a restart of Redis, a flush).
    match svc.reconcile_all(false).await {
        Ok(n) if n > 0 => tracing::info!(policies = n, "coupon counters rebuilt at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "coupon reconciliation at start-up failed"),
    }
    let api: Arc<dyn CouponApi> = svc;
    sh.launch(
        tasks,
        "coupon",
        ports,
        coupon::http::routes(api.clone()),
        coupon::grpc::server(api.clone()),
    )
    .await?;
    tracing::info!(http = %sh.cfg.coupon.http_addr, grpc = %sh.cfg.coupon.grpc_addr, "coupon role started");
    Ok(api)
}

async fn start_point(
    sh: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    bound: &mut Bound,
) -> anyhow::Result<Arc<dyn PointApi>> {
    let cfg = &sh.cfg.point;
    let ports = sh.prepare(&cfg.service, Schema::Point, "point").await?;
    bound.point_http = ports.http.local_addr().ok();
    bound.point_grpc = ports.grpc.local_addr().ok();
    let svc = PointService::new(
        ports.pool.clone(),
        Some(sh.redis.clone()),
        sh.clock.clone(),
        point::Limits {
            max_amount: cfg.max_earn_amount,
            cache_ttl_secs: cfg.cache_ttl_secs,
        },
    );
    let api: Arc<dyn PointApi> = Arc::new(svc);
    sh.launch(
        tasks,
        "point",
        ports,
        point::http::routes(api.clone()),
        point::grpc::server(api.clone()),
    )
    .await?;
    tracing::info!(http = %cfg.service.http_addr, grpc = %cfg.service.grpc_addr, "point role started");
    Ok(api)
}

async fn start_gateway(
    sh: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    bound: &mut Bound,
    local: Local,
) -> anyhow::Result<()> {
    let cfg = &sh.cfg;
    let pool = db::connect(
        &cfg.gateway.database_url,
        cfg.db_max_connections,
        cfg.db_acquire_timeout_ms,
    )
    .await?;
    db::migrate(&pool, Schema::Gateway).await?;
    let http_l = bind(cfg.gateway.http_addr, "gateway rest").await?;
    bound.gateway_http = http_l.local_addr().ok();
    let users = Users::new(pool.clone(), sh.keys.clone(), cfg.gateway.refresh_ttl_secs);
    if let (Some(email), Some(pw)) = (&cfg.bootstrap_admin_email, &cfg.bootstrap_admin_password) {
        use secrecy::ExposeSecret;
        users
            .bootstrap_admin(email, pw.expose_secret())
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
    }
    let coupon: Arc<dyn CouponApi> = match cfg.in_process.then_some(local.coupon).flatten() {
        Some(api) => api,
        None => {
            let (ch, br, t) = sh.remote("coupon", &cfg.gateway.coupon_grpc).await?;
            Arc::new(coupon::grpc::Client::new(ch, t, br))
        }
    };
    let point_api: Arc<dyn PointApi> = match cfg.in_process.then_some(local.point).flatten() {
        Some(api) => api,
        None => {
            let (ch, br, t) = sh.remote("point", &cfg.gateway.point_grpc).await?;
            Arc::new(point::grpc::Client::new(ch, t, br))
        }
    };
    let limiter = Arc::new(RateLimiter::new(
        sh.redis.clone(),
        cfg.gateway.rate_limit.clone(),
        rate_limit::parse_trusted(&cfg.gateway.trusted_proxies)?,
    ));
    // require_auth is the outer layer, so the per-user bucket knows the user.
    let timesale_api: Arc<dyn TimesaleApi> =
        match cfg.in_process.then_some(local.timesale).flatten() {
            Some(api) => api,
            None => {
                let (ch, br, t) = sh.remote("timesale", &cfg.gateway.timesale_grpc).await?;
                Arc::new(timesale::grpc::Client::new(ch, t, br))
            }
        };
    let private = Router::new()
        .merge(gateway::private_routes(users.clone()))
        .merge(coupon::http::routes(coupon))
        .merge(point::http::routes(point_api))
        .merge(timesale::http::routes(timesale_api))
        .layer(from_fn_with_state(limiter.clone(), rate_limit::per_user))
        .layer(from_fn_with_state(sh.keys.clone(), h::require_auth));
    let router = Router::new()
        .merge(gateway::public_routes(users).layer(from_fn_with_state(limiter, rate_limit::per_ip)))
        .merge(private)
        .merge(gateway::openapi::routes())
        .merge(h::ops_routes(ready_check(
            Some(pool),
            Some(sh.redis.clone()),
        )));
    serve_http(
        tasks,
        http_l,
        edge(router, "gateway", cfg),
        cfg,
        sh.shutdown.clone(),
    );
    tracing::info!(http = %cfg.gateway.http_addr, "gateway role started");
    Ok(())
}

/// Starts every enabled role and returns their tasks. Dependencies are checked
/// and ports bound here, so a bad start fails before anything serves.
pub async fn start(
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinSet<anyhow::Result<()>>, Bound)> {
    crate::metrics::handle();
    let clock = Arc::new(OffsetClock::default());
    clock.set_offset(chrono::Duration::seconds(cfg.clock_offset_secs));
    let keys = Arc::new(JwtKeys::new(&cfg.jwt_secret, cfg.gateway.access_ttl_secs));
    let redis = cache::connect(&cfg.redis_url).await?;
    let etcd = if cfg.etcd_endpoints.is_empty() {
        None
    } else {
        Some(discovery::connect(&cfg.etcd_endpoints).await?)
    };
    if !cfg.kafka_brokers.is_empty() {
        check_kafka(&cfg.kafka_brokers).await?;
    }
    let sh = Shared {
        clock: clock.clone(),
        cfg,
        keys,
        redis,
        etcd,
        shutdown,
    };
    let mut tasks = JoinSet::new();
    let mut bound = Bound {
        clock,
        ..Bound::default()
    };
    let mut local = Local::default();
    let roles = sh.cfg.roles.clone();
    if roles.has(Role::Coupon) {
        local.coupon = Some(start_coupon(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Point) {
        local.point = Some(start_point(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Timesale) {
        local.timesale = Some(start_timesale(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Gateway) {
        start_gateway(&sh, &mut tasks, &mut bound, local).await?;
    }
    Ok((tasks, bound))
}

/// A configured broker that does not answer is a start-up error.
async fn check_kafka(brokers: &str) -> anyhow::Result<()> {
    use rdkafka::producer::Producer;
    let p = outbox::producer(brokers)?;
    tokio::task::spawn_blocking(move || {
        p.client()
            .fetch_metadata(None, Duration::from_secs(3))
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("kafka did not answer: {e}"))
    })
    .await?
    .map_err(|e| anyhow::anyhow!(e.to_string().to_lowercase()))
    .with_context(|| format!("cannot reach kafka brokers {brokers}"))
}

async fn start_timesale(
    sh: &Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    bound: &mut Bound,
) -> anyhow::Result<Arc<dyn TimesaleApi>> {
    let cfg = &sh.cfg.timesale;
    let ports = sh
        .prepare(&cfg.service, Schema::Timesale, "timesale")
        .await?;
    bound.timesale_http = ports.http.local_addr().ok();
    bound.timesale_grpc = ports.grpc.local_addr().ok();
    let inventory = Arc::new(promo_store::stock::RedisStock::new(
        sh.redis.clone(),
    ));
    let svc = Arc::new(TimesaleService::new(
        ports.pool.clone(),
        inventory,
        sh.clock.clone(),
    ));
    // Rebuild stock counters that Redis lost (a restart of Redis, a flush);
    // live counters are kept, so a restart of promod never resets stock.
    match svc.rebuild_all(false).await {
        Ok(n) if n > 0 => tracing::info!(sales = n, "timesale inventory rebuilt at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "timesale inventory rebuild at start-up failed"),
    }
    let every = Duration::from_secs(cfg.remaining_sync_interval_secs.max(1));
    let (sync, sync_shutdown) = (svc.clone(), sh.shutdown.clone());
    tasks.spawn(async move {
        sync.run_sync(every, sync_shutdown).await;
        Ok(())
    });
    let api: Arc<dyn TimesaleApi> = svc;
    sh.launch(
        tasks,
        "timesale",
        ports,
        timesale::http::routes(api.clone()),
        timesale::grpc::server(api.clone()),
    )
    .await?;
    tracing::info!(http = %cfg.service.http_addr, grpc = %cfg.service.grpc_addr, "timesale role started");
    Ok(api)
}
