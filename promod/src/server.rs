//! Starts the enabled roles and runs them until the shutdown token fires, then
//! drains: listeners stop accepting, in-flight requests finish, relays flush.

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::coupon::{self, CouponApi, CouponService};
use crate::db::{self, Schema};
use crate::gateway::breaker::Breaker;
use crate::gateway::{self, users::Users};
use crate::http::{self as h, ReadyCheck};
use crate::outbox::{self, RelayConfig};
use crate::roles::Role;
use crate::timesale::{self, TimesaleApi, TimesaleService};
use crate::{cache, discovery, request_id};
use anyhow::Context;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use promo_domain::clock::{OffsetClock, SharedClock};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
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
        .layer(from_fn_with_state(role, crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(cfg.gateway.body_limit_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(cfg.gateway.request_timeout_ms),
        ))
        .layer(cors)
        .layer(from_fn(request_id::layer))
}

fn serve_http(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("http server failed")
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

/// Starts every enabled role and returns their tasks. Dependencies are checked
/// and ports bound here, so a bad start fails before anything serves.
pub async fn start(
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinSet<anyhow::Result<()>>, Bound)> {
    crate::metrics::handle();
    let offset_clock = Arc::new(OffsetClock::default());
    offset_clock.set_offset(chrono::Duration::seconds(cfg.clock_offset_secs));
    let clock: SharedClock = offset_clock.clone();
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
    let mut tasks = JoinSet::new();
    let mut bound = Bound {
        clock: offset_clock,
        ..Bound::default()
    };
    let mut coupon_api: Option<Arc<dyn CouponApi>> = None;
    let mut timesale_api: Option<Arc<dyn TimesaleApi>> = None;
    let timeout = Duration::from_millis(cfg.gateway.call_timeout_ms);

    if cfg.roles.has(Role::Coupon) {
        let pool = db::connect(
            &cfg.coupon.database_url,
            cfg.db_max_connections,
            cfg.db_acquire_timeout_ms,
        )
        .await?;
        db::migrate(&pool, Schema::Coupon).await?;
        let http_l = bind(cfg.coupon.http_addr, "coupon rest").await?;
        let grpc_l = bind(cfg.coupon.grpc_addr, "coupon grpc").await?;
        bound.coupon_http = http_l.local_addr().ok();
        bound.coupon_grpc = grpc_l.local_addr().ok();
        let admission = Arc::new(coupon::admission::RedisAdmission::new(redis.clone()));
        let svc = Arc::new(CouponService::new(pool.clone(), admission, clock.clone()));
        // Rebuild counters that Redis lost (a restart of Redis, a flush).
        match svc.reconcile_all(false).await {
            Ok(n) if n > 0 => tracing::info!(policies = n, "coupon counters rebuilt at start-up"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "coupon reconciliation at start-up failed"),
        }
        let api: Arc<dyn CouponApi> = svc;
        let router = Router::new()
            .merge(
                coupon::http::routes(api.clone())
                    .layer(from_fn_with_state(keys.clone(), h::require_auth)),
            )
            .merge(h::ops_routes(ready_check(
                Some(pool.clone()),
                Some(redis.clone()),
            )));
        serve_http(
            &mut tasks,
            http_l,
            edge(router, "coupon", &cfg),
            shutdown.clone(),
        );
        let grpc_addr = bound.coupon_grpc;
        serve_grpc(
            &mut tasks,
            grpc_l,
            coupon::grpc::server(api.clone()),
            shutdown.clone(),
        );
        if let (Some(client), Some(addr)) = (&etcd, grpc_addr) {
            let url = format!("http://{}:{}", cfg.advertise_host, addr.port());
            let h = discovery::register(
                client.clone(),
                cfg.etcd_prefix.clone(),
                "coupon",
                url,
                cfg.etcd_lease_ttl_secs,
                shutdown.clone(),
            )
            .await?;
            tasks.spawn(async move {
                let _ = h.await;
                Ok(())
            });
        }
        spawn_relay(&mut tasks, &cfg, "coupon", pool, shutdown.clone());
        coupon_api = Some(api);
        tracing::info!(http = %cfg.coupon.http_addr, grpc = %cfg.coupon.grpc_addr, "coupon role started");
    }

    if cfg.roles.has(Role::Timesale) {
        let (api, http, grpc) = start_timesale_role(
            &cfg,
            clock.clone(),
            keys.clone(),
            redis.clone(),
            etcd.clone(),
            &mut tasks,
            shutdown.clone(),
        )
        .await?;
        bound.timesale_http = Some(http);
        bound.timesale_grpc = Some(grpc);
        timesale_api = Some(api);
    }

    if cfg.roles.has(Role::Gateway) {
        let pool = db::connect(
            &cfg.gateway.database_url,
            cfg.db_max_connections,
            cfg.db_acquire_timeout_ms,
        )
        .await?;
        db::migrate(&pool, Schema::Gateway).await?;
        let http_l = bind(cfg.gateway.http_addr, "gateway rest").await?;
        bound.gateway_http = http_l.local_addr().ok();
        let users = Users::new(pool.clone(), keys.clone(), cfg.gateway.refresh_ttl_secs);
        if let (Some(email), Some(pw)) = (&cfg.bootstrap_admin_email, &cfg.bootstrap_admin_password)
        {
            use secrecy::ExposeSecret;
            users
                .bootstrap_admin(email, pw.expose_secret())
                .await
                .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
        }
        let coupon: Arc<dyn CouponApi> = match (cfg.in_process, coupon_api.clone()) {
            (true, Some(api)) => api,
            _ => {
                let channel = match &etcd {
                    Some(client) => {
                        discovery::watched_channel(
                            client.clone(),
                            &cfg.etcd_prefix,
                            "coupon",
                            timeout,
                            shutdown.clone(),
                        )
                        .await?
                    }
                    None => discovery::static_channel(&cfg.gateway.coupon_grpc, timeout)?,
                };
                let breaker = Arc::new(Breaker::new("coupon", cfg.gateway.breaker.clone()));
                Arc::new(coupon::grpc::Client::new(channel, timeout, breaker))
            }
        };
        let timesale: Arc<dyn TimesaleApi> = match (cfg.in_process, timesale_api.clone()) {
            (true, Some(api)) => api,
            _ => {
                let channel = match &etcd {
                    Some(client) => {
                        discovery::watched_channel(
                            client.clone(),
                            &cfg.etcd_prefix,
                            "timesale",
                            timeout,
                            shutdown.clone(),
                        )
                        .await?
                    }
                    None => discovery::static_channel(&cfg.gateway.timesale_grpc, timeout)?,
                };
                let breaker = Arc::new(Breaker::new("timesale", cfg.gateway.breaker.clone()));
                Arc::new(timesale::grpc::Client::new(channel, timeout, breaker))
            }
        };
        let private = Router::new()
            .merge(gateway::private_routes(users.clone()))
            .merge(coupon::http::routes(coupon))
            .merge(timesale::http::routes(timesale))
            .layer(from_fn_with_state(keys.clone(), h::require_auth));
        let router = Router::new()
            .merge(gateway::public_routes(users))
            .merge(private)
            .merge(gateway::openapi::routes())
            .merge(h::ops_routes(ready_check(Some(pool), Some(redis.clone()))));
        serve_http(
            &mut tasks,
            http_l,
            edge(router, "gateway", &cfg),
            shutdown.clone(),
        );
        tracing::info!(http = %cfg.gateway.http_addr, "gateway role started");
    }
    for role in [Role::Point] {
        if cfg.roles.has(role) {
            tracing::warn!(
                role = role.as_str(),
                "role is not implemented yet, skipping"
            );
        }
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

/// The timesale role, self-contained: pool and migrations, ports bound before
/// serving, inventory rebuilt for counters Redis lost, the remaining-stock sync,
/// REST + gRPC, etcd registration and the outbox relay.
async fn start_timesale_role(
    cfg: &Config,
    clock: SharedClock,
    keys: Arc<JwtKeys>,
    redis: cache::Redis,
    etcd: Option<etcd_client::Client>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<dyn TimesaleApi>, SocketAddr, SocketAddr)> {
    let pool = db::connect(
        &cfg.timesale.service.database_url,
        cfg.db_max_connections,
        cfg.db_acquire_timeout_ms,
    )
    .await?;
    db::migrate(&pool, Schema::Timesale).await?;
    let http_l = bind(cfg.timesale.service.http_addr, "timesale rest").await?;
    let grpc_l = bind(cfg.timesale.service.grpc_addr, "timesale grpc").await?;
    let http_addr = http_l.local_addr()?;
    let grpc_addr = grpc_l.local_addr()?;
    let inventory = Arc::new(timesale::inventory::RedisInventory::new(redis.clone()));
    let svc = Arc::new(TimesaleService::new(pool.clone(), inventory, clock));
    // Rebuild stock counters that Redis lost (a restart of Redis, a flush);
    // live counters are kept, so a restart of promod never resets stock.
    match svc.rebuild_all(false).await {
        Ok(n) if n > 0 => tracing::info!(sales = n, "timesale inventory rebuilt at start-up"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "timesale inventory rebuild at start-up failed"),
    }
    let every = Duration::from_secs(cfg.timesale.remaining_sync_interval_secs.max(1));
    let sync = svc.clone();
    let sync_shutdown = shutdown.clone();
    tasks.spawn(async move {
        sync.run_sync(every, sync_shutdown).await;
        Ok(())
    });
    let api: Arc<dyn TimesaleApi> = svc;
    let router = Router::new()
        .merge(timesale::http::routes(api.clone()).layer(from_fn_with_state(keys, h::require_auth)))
        .merge(h::ops_routes(ready_check(
            Some(pool.clone()),
            Some(redis.clone()),
        )));
    serve_http(
        tasks,
        http_l,
        edge(router, "timesale", cfg),
        shutdown.clone(),
    );
    serve_grpc(
        tasks,
        grpc_l,
        timesale::grpc::server(api.clone()),
        shutdown.clone(),
    );
    if let Some(client) = etcd {
        let url = format!("http://{}:{}", cfg.advertise_host, grpc_addr.port());
        let h = discovery::register(
            client,
            cfg.etcd_prefix.clone(),
            "timesale",
            url,
            cfg.etcd_lease_ttl_secs,
            shutdown.clone(),
        )
        .await?;
        tasks.spawn(async move {
            let _ = h.await;
            Ok(())
        });
    }
    spawn_relay(tasks, cfg, "timesale", pool, shutdown);
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "timesale role started");
    Ok((api, http_addr, grpc_addr))
}
