//! Starts the enabled roles and runs them until the shutdown token fires, then
//! drains: listeners stop accepting, in-flight requests finish, relays flush.

use crate::audit::{AuditApi, AuditLog};
use crate::client_addr;
use crate::code_guard::CodeGuard;
use crate::config::{Config, GatewayConfig, ServiceConfig};
use crate::coupon::{self, CouponApi, CouponService};
use crate::db::{self, Schema};
use crate::gateway::rate_limit::{self, RateLimiter};
use crate::gateway::{self, users::Users};
use crate::http::{self as h, ReadyCheck};
use crate::outbox::{self, PruneConfig, RelayConfig};
use crate::overload::{AdmissionLayer, Gate};
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
use promo_store::kafka::KafkaSecurity;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
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

/// The tasks of a running promod; any ending early stops it.
pub type Tasks = JoinSet<anyhow::Result<()>>;

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

impl Bound {
    fn set(&mut self, role: Role, http: Option<SocketAddr>, grpc: Option<SocketAddr>) {
        let (h, g) = match role {
            Role::Coupon => (&mut self.coupon_http, &mut self.coupon_grpc),
            Role::Point => (&mut self.point_http, &mut self.point_grpc),
            Role::Timesale => (&mut self.timesale_http, &mut self.timesale_grpc),
            Role::Gateway => {
                self.gateway_http = http;
                return;
            }
        };
        (*h, *g) = (http, grpc);
    }
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (tasks, _bound) = start(cfg, shutdown.clone()).await?;
    join(tasks, shutdown).await
}

/// Waits for shutdown (or a task dying), then drains with a deadline.
pub async fn join(mut tasks: Tasks, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    let gate = Gate::new(role, "rest", &cfg.overload);
    router
        .fallback(h::not_found)
        .layer(crate::detach::DetachLayer)
        .layer(from_fn_with_state(role, crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(cfg.gateway.body_limit_bytes))
        .layer(from_fn_with_state(
            h::Deadlines {
                normal: Duration::from_millis(cfg.gateway.request_timeout_ms),
                bulk: Duration::from_millis(cfg.gateway.bulk_timeout_ms),
            },
            h::deadline,
        ))
        .layer(from_fn(h::json_errors))
        // A refusal skips everything below; CORS and the request id above
        // still mark it, so a browser can read the 503.
        .layer(AdmissionLayer::rest(gate))
        .layer(cors)
        .layer(from_fn(request_id::layer))
}

/// Serves HTTP/1.1 with hyper directly rather than `axum::serve`, which sets
/// no timer and so no header read timeout: a client that sends its request
/// head byte by byte (or nothing at all) would hold its socket for ever.
fn serve_http(
    tasks: &mut Tasks,
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

fn serve_grpc(
    tasks: &mut Tasks,
    listener: TcpListener,
    routes: Routes,
    gate: Gate,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .layer(request_id::GrpcLayer)
            .layer(AdmissionLayer::grpc(gate))
            .layer(crate::detach::DetachLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { shutdown.cancelled().await },
            )
            .await
            .context("grpc server failed")
    });
}

fn spawn_relay(
    tasks: &mut Tasks,
    cfg: &Config,
    service: &'static str,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let relay = RelayConfig {
        service,
        brokers: cfg.kafka_brokers.clone(),
        security: cfg.kafka.clone(),
        batch_size: cfg.outbox.batch_size,
        poll_interval: Duration::from_millis(cfg.outbox.poll_interval_ms),
    };
    // Pruning runs beside the relay, never inside it: see `outbox::run_pruner`.
    let prune = PruneConfig::new(service, cfg.outbox.retention_secs);
    let (prune_pool, prune_shutdown) = (pool.clone(), shutdown.clone());
    tasks.spawn(async move {
        outbox::run_pruner(prune_pool, prune, prune_shutdown).await;
        Ok(())
    });
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
    /// A role's pool, its schema migrated.
    async fn database(&self, url: &str, schema: Schema) -> anyhow::Result<PgPool> {
        let pool = db::connect(
            url,
            schema,
            self.cfg.db_max_connections,
            self.cfg.db_acquire_timeout_ms,
        )
        .await?;
        db::migrate(&pool, schema).await?;
        Ok(pool)
    }

    async fn prepare(
        &self,
        svc: &ServiceConfig,
        schema: Schema,
        name: &str,
    ) -> anyhow::Result<ServicePorts> {
        let pool = self.database(&svc.database_url, schema).await?;
        let http = bind(svc.http_addr, &format!("{name} rest")).await?;
        let grpc = bind(svc.grpc_addr, &format!("{name} grpc")).await?;
        Ok(ServicePorts { pool, http, grpc })
    }

    /// Serves a service role: its own REST port, gRPC, etcd registration and
    /// the outbox relay.
    /// The limit on failed code redemptions, for every port that serves the
    /// route.
    fn code_guard(&self) -> anyhow::Result<Arc<CodeGuard>> {
        let g = &self.cfg.gateway;
        let trusted = client_addr::parse_trusted(&g.trusted_proxies)?;
        let guard = CodeGuard::new(self.redis.clone(), g.code_guard.clone(), trusted);
        Ok(Arc::new(guard))
    }

    async fn launch(
        &self,
        tasks: &mut Tasks,
        name: &'static str,
        ports: ServicePorts,
        rest: Router,
        grpc: Routes,
    ) -> anyhow::Result<()> {
        let grpc_addr = ports.grpc.local_addr()?;
        let log = Arc::new(AuditLog::new(ports.pool.clone()));
        let grpc = grpc.add_service(crate::audit::grpc::server(log));
        let rest = rest.layer(axum::Extension(self.code_guard()?));
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
        let gate = Gate::new(name, "grpc", &self.cfg.overload);
        serve_grpc(tasks, ports.grpc, grpc, gate, self.shutdown.clone());
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

    /// The API and audit log a gateway routes to for role `R`: the ones in
    /// this process when calls stay in process, else gRPC clients whose
    /// channel is watched in etcd, or the static address from config.
    async fn api<R: ServiceRole>(
        &self,
        local: Option<Reached<R::Api>>,
    ) -> anyhow::Result<Reached<R::Api>> {
        if let Some(reached) = local.filter(|_| self.cfg.in_process) {
            return Ok(reached);
        }
        let name = R::ROLE.as_str();
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
            None => discovery::static_channel(R::static_url(&self.cfg.gateway), timeout)?,
        };
        let breaker = Arc::new(Breaker::new(name, self.cfg.gateway.breaker.clone()));
        let audit = crate::audit::grpc::Client::new(channel.clone(), timeout, breaker.clone());
        Ok(Reached {
            api: R::client(channel, timeout, breaker),
            audit: Arc::new(audit),
        })
    }
}

/// A service role as the gateway reaches it: its API and its audit log.
struct Reached<A: ?Sized> {
    api: Arc<A>,
    audit: Arc<dyn AuditApi>,
}

/// The roles this process runs, for a gateway that calls them in process.
#[derive(Default)]
struct Local {
    coupon: Option<Reached<dyn CouponApi>>,
    point: Option<Reached<dyn PointApi>>,
    timesale: Option<Reached<dyn TimesaleApi>>,
}

/// What differs between the service roles while starting; the rest is
/// [`start_service`] (the gateway's side is [`Shared::api`]).
trait ServiceRole {
    type Api: ?Sized + Send + Sync + 'static;
    const ROLE: Role;
    const SCHEMA: Schema;
    fn config(cfg: &Config) -> &ServiceConfig;
    /// The gRPC address a gateway in another process dials without etcd.
    fn static_url(gateway: &GatewayConfig) -> &str;
    /// The service on its database, its start-up work done and its background
    /// tasks spawned.
    async fn service(sh: &Shared, pool: PgPool, tasks: &mut Tasks) -> Arc<Self::Api>;
    fn rest(api: Arc<Self::Api>) -> Router;
    fn grpc(api: Arc<Self::Api>) -> Routes;
    fn client(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Arc<Self::Api>;
}

/// Implements [`ServiceRole`] for each role from what names its parts; the
/// role modules share one layout (`http::routes`, `grpc::server`,
/// `grpc::Client`).
macro_rules! service_roles {
    ($($ty:ident {
        api: $api:ident, role: $role:ident, module: $m:ident,
        config: $($cfg:ident).+, static_url: $url:ident, service: $build:ident $(,)?
    })*) => {$(
        struct $ty;

        impl ServiceRole for $ty {
            type Api = dyn $api;
            const ROLE: Role = Role::$role;
            const SCHEMA: Schema = Schema::$role;
            fn config(cfg: &Config) -> &ServiceConfig {
                &cfg.$($cfg).+
            }
            fn static_url(gateway: &GatewayConfig) -> &str {
                &gateway.$url
            }
            async fn service(sh: &Shared, pool: PgPool, tasks: &mut Tasks) -> Arc<dyn $api> {
                $build(sh, pool, tasks).await
            }
            fn rest(api: Arc<dyn $api>) -> Router {
                $m::http::routes(api)
            }
            fn grpc(api: Arc<dyn $api>) -> Routes {
                Routes::new($m::grpc::server(api))
            }
            fn client(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Arc<dyn $api> {
                Arc::new($m::grpc::Client::new(channel, timeout, breaker))
            }
        }
    )*};
}

service_roles! {
    CouponRole {
        api: CouponApi, role: Coupon, module: coupon,
        config: coupon, static_url: coupon_grpc, service: coupon_service,
    }
    PointRole {
        api: PointApi, role: Point, module: point,
        config: point.service, static_url: point_grpc, service: point_service,
    }
    TimesaleRole {
        api: TimesaleApi, role: Timesale, module: timesale,
        config: timesale.service, static_url: timesale_grpc, service: timesale_service,
    }
}

async fn coupon_service(sh: &Shared, pool: PgPool, tasks: &mut Tasks) -> Arc<dyn CouponApi> {
    let admission = Arc::new(promo_store::stock::RedisStock::new(sh.redis.clone()));
    let (kind, cfg) = (promo_store::stock::Kind::Coupon, &sh.cfg.reservation);
    let reconciled = (pool.clone(), admission.clone(), sh.shutdown.clone());
    crate::reconcile::spawn(tasks, reconciled.0, reconciled.1, kind, cfg, reconciled.2);
    let hold_secs = sh.cfg.holds.default_seconds;
    let svc = Arc::new(CouponService::new(
        pool,
        admission,
        sh.clock.clone(),
        hold_secs,
    ));
    // Rebuild counters that Redis lost (a restart of Redis, a flush).
    match svc.reconcile_all(false).await {
        Ok(n) if n > 0 => tracing::info!(policies = n, "coupon counters rebuilt at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "coupon reconciliation at start-up failed"),
    }
    // Due reservations go back to AVAILABLE, in every process of the role.
    crate::sweep::spawn(
        tasks,
        svc.clone(),
        sh.clock.clone(),
        sh.cfg.holds.pace(),
        sh.shutdown.clone(),
    );
    svc
}

async fn point_service(sh: &Shared, pool: PgPool, tasks: &mut Tasks) -> Arc<dyn PointApi> {
    let limits = point::Limits {
        max_amount: sh.cfg.point.max_earn_amount,
        cache_ttl_secs: sh.cfg.point.cache_ttl_secs,
        hold_seconds: sh.cfg.holds.default_seconds,
        lot_lifetime: sh.cfg.point.lots.default_lifetime(),
    };
    let redis = Some(sh.redis.clone());
    let svc = Arc::new(PointService::new(pool, redis, sh.clock.clone(), limits));
    let (clock, shutdown) = (sh.clock.clone(), sh.shutdown.clone());
    let pace = sh.cfg.holds.pace();
    crate::sweep::spawn(tasks, svc.clone(), clock.clone(), pace, shutdown.clone());
    point::expiry::spawn(tasks, svc.clone(), clock, &sh.cfg.point.lots, shutdown);
    svc
}

async fn timesale_service(sh: &Shared, pool: PgPool, tasks: &mut Tasks) -> Arc<dyn TimesaleApi> {
    let inventory = Arc::new(promo_store::stock::RedisStock::new(sh.redis.clone()));
    let (kind, cfg) = (promo_store::stock::Kind::Sale, &sh.cfg.reservation);
    let reconciled = (pool.clone(), inventory.clone(), sh.shutdown.clone());
    crate::reconcile::spawn(tasks, reconciled.0, reconciled.1, kind, cfg, reconciled.2);
    let holds = &sh.cfg.holds;
    let svc = Arc::new(TimesaleService::new(
        pool,
        inventory,
        sh.clock.clone(),
        holds.default_seconds,
    ));
    crate::sweep::spawn(
        tasks,
        svc.clone(),
        sh.clock.clone(),
        holds.pace(),
        sh.shutdown.clone(),
    );
    // Rebuild stock counters that Redis lost (a restart of Redis, a flush);
    // live counters are kept, so a restart of promod never resets stock.
    match svc.rebuild_all(false).await {
        Ok(n) if n > 0 => tracing::info!(sales = n, "timesale inventory rebuilt at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "timesale inventory rebuild at start-up failed"),
    }
    let every = Duration::from_secs(sh.cfg.timesale.remaining_sync_interval_secs.max(1));
    let (sync, sync_shutdown) = (svc.clone(), sh.shutdown.clone());
    tasks.spawn(async move {
        sync.run_sync(every, sync_shutdown).await;
        Ok(())
    });
    svc
}

/// Starts a service role: its database and ports first, then its service,
/// REST and gRPC ports, etcd registration and outbox relay.
async fn start_service<R: ServiceRole>(
    sh: &Shared,
    tasks: &mut Tasks,
    bound: &mut Bound,
) -> anyhow::Result<Reached<R::Api>> {
    let (name, cfg) = (R::ROLE.as_str(), R::config(&sh.cfg));
    let ports = sh.prepare(cfg, R::SCHEMA, name).await?;
    let audit = Arc::new(AuditLog::new(ports.pool.clone()));
    bound.set(
        R::ROLE,
        ports.http.local_addr().ok(),
        ports.grpc.local_addr().ok(),
    );
    let api = R::service(sh, ports.pool.clone(), tasks).await;
    sh.launch(
        tasks,
        name,
        ports,
        R::rest(api.clone()),
        R::grpc(api.clone()),
    )
    .await?;
    tracing::info!(http = %cfg.http_addr, grpc = %cfg.grpc_addr, "{name} role started");
    Ok(Reached { api, audit })
}

/// The APIs the gateway routes to, in process or over gRPC, and every
/// audit log it searches (its own first).
struct Apis {
    coupon: Arc<dyn CouponApi>,
    point: Arc<dyn PointApi>,
    timesale: Arc<dyn TimesaleApi>,
    audit: crate::audit::http::Logs,
}

async fn start_gateway(
    sh: &Shared,
    tasks: &mut Tasks,
    bound: &mut Bound,
    local: Local,
) -> anyhow::Result<()> {
    let cfg = &sh.cfg;
    let pool = sh
        .database(&cfg.gateway.database_url, Schema::Gateway)
        .await?;
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
    let coupon = sh.api::<CouponRole>(local.coupon).await?;
    let point = sh.api::<PointRole>(local.point).await?;
    let timesale = sh.api::<TimesaleRole>(local.timesale).await?;
    let own: Arc<dyn AuditApi> = Arc::new(AuditLog::new(pool.clone()));
    let apis = Apis {
        audit: Arc::new(vec![
            (Role::Gateway.as_str(), own),
            (Role::Coupon.as_str(), coupon.audit),
            (Role::Point.as_str(), point.audit),
            (Role::Timesale.as_str(), timesale.audit),
        ]),
        coupon: coupon.api,
        point: point.api,
        timesale: timesale.api,
    };
    let router = gateway_router(sh, users, pool, apis)?;
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

/// The gateway's routes: auth and users, every role's REST API behind the
/// token check and the rate limits, OpenAPI and the ops routes.
fn gateway_router(sh: &Shared, users: Users, pool: PgPool, apis: Apis) -> anyhow::Result<Router> {
    let cfg = &sh.cfg.gateway;
    let limiter = Arc::new(RateLimiter::new(
        sh.redis.clone(),
        cfg.rate_limit.clone(),
        client_addr::parse_trusted(&cfg.trusted_proxies)?,
    ));
    // require_auth is the outer layer, so the per-user bucket knows the user.
    let private = Router::new()
        .merge(gateway::private_routes(users.clone()))
        .merge(coupon::http::routes(apis.coupon))
        .merge(point::http::routes(apis.point))
        .merge(timesale::http::routes(apis.timesale))
        .merge(crate::audit::http::routes(apis.audit))
        .layer(from_fn_with_state(limiter.clone(), rate_limit::per_user))
        .layer(axum::Extension(sh.code_guard()?))
        .layer(from_fn_with_state(sh.keys.clone(), h::require_auth));
    Ok(Router::new()
        .merge(gateway::public_routes(users).layer(from_fn_with_state(limiter, rate_limit::per_ip)))
        .merge(private)
        .merge(gateway::openapi::routes())
        .merge(h::ops_routes(ready_check(
            Some(pool),
            Some(sh.redis.clone()),
        ))))
}

/// Starts every enabled role and returns their tasks. Dependencies are checked
/// and ports bound here, so a bad start fails before anything serves.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<(Tasks, Bound)> {
    crate::metrics::handle();
    let clock = Arc::new(OffsetClock::default());
    clock.set_offset(chrono::Duration::seconds(cfg.clock_offset_secs));
    let keys = Arc::new(JwtKeys::new(&cfg.jwt_secret, cfg.gateway.access_ttl_secs));
    let redis = cache::connect(cache::Target::new(
        &cfg.redis_url,
        cfg.redis_ca_file.as_deref(),
    ))
    .await?;
    let etcd = if cfg.etcd_endpoints.is_empty() {
        None
    } else {
        Some(discovery::connect(&cfg.etcd_endpoints).await?)
    };
    if !cfg.kafka_brokers.is_empty() {
        check_kafka(&cfg.kafka_brokers, &cfg.kafka).await?;
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
        local.coupon = Some(start_service::<CouponRole>(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Point) {
        local.point = Some(start_service::<PointRole>(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Timesale) {
        local.timesale = Some(start_service::<TimesaleRole>(&sh, &mut tasks, &mut bound).await?);
    }
    if roles.has(Role::Gateway) {
        start_gateway(&sh, &mut tasks, &mut bound, local).await?;
    }
    Ok((tasks, bound))
}

/// A configured broker that does not answer is a start-up error.
async fn check_kafka(brokers: &str, security: &KafkaSecurity) -> anyhow::Result<()> {
    use rdkafka::producer::Producer;
    let p = outbox::producer(brokers, security)?;
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
