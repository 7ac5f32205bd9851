//! `spawn_timesale_app()`: a promod with the gateway and timesale roles on port
//! 0, fresh databases, the process clock for window tests, and a restart that
//! keeps the databases (and Redis) to prove that stock survives it.

use super::helpers::{
    admin_token, api_request, fresh_db, new_user, send_api, start, test_config, test_keys,
};
use promo_domain::clock::{Clock, OffsetClock};
use promo_store::auth::JwtKeys;
use promod::config::Config;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TimesaleApp {
    pub base: String,
    pub timesale_base: String,
    pub client: reqwest::Client,
    pub keys: JwtKeys,
    pub db: sqlx::PgPool,
    pub redis: promo_store::cache::Redis,
    pub clock: Arc<OffsetClock>,
    pub admin: String,
    cfg: Config,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TimesaleApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn http(addr: Option<SocketAddr>) -> String {
    format!("http://{}", addr.expect("bound"))
}

pub async fn spawn_timesale_app() -> TimesaleApp {
    spawn(false).await
}

/// The same, but the gateway reaches the timesale role over gRPC (a static
/// address, no etcd), as it does when the roles run in separate processes.
pub async fn spawn_timesale_app_over_grpc() -> TimesaleApp {
    spawn(true).await
}

async fn spawn(over_grpc: bool) -> TimesaleApp {
    let mut cfg = test_config();
    cfg.roles = "gateway,timesale".parse().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    cfg.timesale.service.http_addr = any;
    cfg.timesale.service.grpc_addr = any;
    if over_grpc {
        let port = super::helpers::free_port();
        cfg.in_process = false;
        cfg.timesale.service.grpc_addr = SocketAddr::from(([127, 0, 0, 1], port));
        cfg.gateway.timesale_grpc = format!("http://127.0.0.1:{port}");
    }
    cfg.timesale.service.database_url = fresh_db("timesale").await;
    cfg.gateway.database_url = fresh_db("gateway").await;
    cfg.timesale.remaining_sync_interval_secs = 1;
    let (shutdown, running, bound) = start(cfg.clone()).await;
    let keys = test_keys();
    let admin = admin_token(&keys);
    TimesaleApp {
        base: http(bound.gateway_http),
        timesale_base: http(bound.timesale_http),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        keys,
        db: sqlx::PgPool::connect(&cfg.timesale.service.database_url)
            .await
            .unwrap(),
        redis: promo_store::cache::connect(&super::helpers::redis_url())
            .await
            .unwrap(),
        clock: bound.clock.clone(),
        admin,
        cfg,
        shutdown,
        running: Some(running),
    }
}

impl TimesaleApp {
    /// Stops promod (draining) and starts it again on the same databases.
    /// The clock offset is carried over.
    pub async fn restart(&mut self) {
        let offset = self.clock.now() - chrono::Utc::now();
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            let _ = r.await;
        }
        let (shutdown, running, bound) = start(self.cfg.clone()).await;
        bound.clock.set_offset(offset);
        self.base = http(bound.gateway_http);
        self.timesale_base = http(bound.timesale_http);
        self.clock = bound.clock.clone();
        self.shutdown = shutdown;
        self.running = Some(running);
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (u16, Value) {
        let req = api_request(&self.client, &self.base, method, path);
        send_api(req, Some(token), body, idem).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body), None)
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, token, Some(body), None)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None, None)
            .await
    }

    pub fn user_token(&self) -> (Uuid, String) {
        new_user(&self.keys)
    }

    pub async fn create_product(&self, price: i64) -> Uuid {
        let (s, b) = self
            .post(
                "/products",
                &self.admin,
                json!({"name": "test product", "price": price}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().parse().unwrap()
    }

    /// A sale of a product priced 1000, active from a minute ago for a day
    /// (by the app's clock).
    pub async fn create_sale(&self, total: i64, per_user: i64) -> Uuid {
        let now = self.clock.now();
        self.create_sale_at(
            total,
            per_user,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::days(1),
        )
        .await
    }

    pub async fn create_sale_at(
        &self,
        total: i64,
        per_user: i64,
        start_at: chrono::DateTime<chrono::Utc>,
        end_at: chrono::DateTime<chrono::Utc>,
    ) -> Uuid {
        let product = self.create_product(1000).await;
        let (s, b) = self
            .post(
                "/time-sales",
                &self.admin,
                json!({
                    "product_id": product,
                    "total_quantity": total,
                    "sale_price": 700,
                    "per_user_limit": per_user,
                    "start_at": start_at,
                    "end_at": end_at,
                }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().parse().unwrap()
    }

    /// A held order of one unit for `secs` seconds.
    pub async fn hold(&self, sale: Uuid, token: &str, secs: i64) -> (u16, Value) {
        self.post(
            &format!("/time-sales/{sale}/orders"),
            token,
            json!({"quantity": 1, "hold": true, "hold_seconds": secs}),
        )
        .await
    }

    pub async fn order(&self, sale: Uuid, token: &str, quantity: i64) -> (u16, Value) {
        self.post(
            &format!("/time-sales/{sale}/orders"),
            token,
            json!({"quantity": quantity}),
        )
        .await
    }

    /// (sold_quantity, sum of the orders holding units: PENDING and
    /// CONFIRMED) as PostgreSQL has them.
    pub async fn db_sold(&self, sale: Uuid) -> (i64, i64) {
        let (sold,): (i64,) = sqlx::query_as("SELECT sold_quantity FROM time_sales WHERE id = $1")
            .bind(sale)
            .fetch_one(&self.db)
            .await
            .unwrap();
        let (confirmed,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(sum(quantity), 0)::bigint FROM time_sale_orders
             WHERE time_sale_id = $1 AND status IN ('PENDING', 'CONFIRMED')",
        )
        .bind(sale)
        .fetch_one(&self.db)
        .await
        .unwrap();
        (sold, confirmed)
    }

    pub async fn redis_stock(&self, sale: Uuid) -> Option<i64> {
        let mut conn = self.redis.clone();
        redis::cmd("GET")
            .arg(promo_store::keys::timesale_inventory(sale))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Redis stock + confirmed units == total, the sold counter agrees, and no
    /// user is above the limit (in PostgreSQL and in Redis).
    pub async fn assert_invariant(&self, sale: Uuid) {
        let (total, limit): (i64, i32) =
            sqlx::query_as("SELECT total_quantity, per_user_limit FROM time_sales WHERE id = $1")
                .bind(sale)
                .fetch_one(&self.db)
                .await
                .unwrap();
        let (sold, confirmed) = self.db_sold(sale).await;
        assert_eq!(
            sold, confirmed,
            "sold_quantity matches the confirmed orders"
        );
        let (reported,): (i64,) =
            sqlx::query_as("SELECT remaining_quantity FROM time_sales WHERE id = $1")
                .bind(sale)
                .fetch_one(&self.db)
                .await
                .unwrap();
        assert!(
            reported <= total - confirmed,
            "reported remaining {reported} is ahead of total - confirmed"
        );
        let stock = self.redis_stock(sale).await.expect("a live counter");
        assert_eq!(stock + confirmed, total, "stock + confirmed == total");
        let over: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT user_id, sum(quantity)::bigint FROM time_sale_orders
             WHERE time_sale_id = $1 AND status IN ('PENDING', 'CONFIRMED')
             GROUP BY user_id HAVING sum(quantity) > $2",
        )
        .bind(sale)
        .bind(limit as i64)
        .fetch_all(&self.db)
        .await
        .unwrap();
        assert!(over.is_empty(), "users over the limit: {over:?}");
        let mut conn = self.redis.clone();
        let users: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(promo_store::keys::timesale_users(sale))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(users.values().all(|n| *n <= limit as i64), "{users:?}");
        assert_eq!(users.values().sum::<i64>(), confirmed);
    }
}
