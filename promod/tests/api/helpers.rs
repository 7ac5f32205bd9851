//! `spawn_app()`: a promod with the gateway, coupon and point roles on port 0, fresh
//! databases named by UUID, and helpers to mint tokens and call the API.

use promo_domain::principal::Role;
use promo_store::auth::JwtKeys;
use promod::config::Config;
use secrecy::SecretString;
use serde_json::Value;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret!";

pub fn pg_base() -> String {
    std::env::var("PROMO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn etcd_url() -> String {
    std::env::var("PROMO_TEST_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

/// Creates an empty database and returns its url.
pub async fn fresh_db(tag: &str) -> String {
    let name = format!("t_{tag}_{}", Uuid::new_v4().simple());
    let admin = format!("{}/postgres", pg_base());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("postgres for tests");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    format!("{}/{name}", pg_base())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every role reached over gRPC on spare ports, not in process.
pub fn over_grpc(c: &mut Config) {
    let (coupon, point, timesale) = (free_port(), free_port(), free_port());
    c.in_process = false;
    c.coupon.grpc_addr = ([127, 0, 0, 1], coupon).into();
    c.point.service.grpc_addr = ([127, 0, 0, 1], point).into();
    c.timesale.service.grpc_addr = ([127, 0, 0, 1], timesale).into();
    c.gateway.coupon_grpc = format!("http://127.0.0.1:{coupon}");
    c.gateway.point_grpc = format!("http://127.0.0.1:{point}");
    c.gateway.timesale_grpc = format!("http://127.0.0.1:{timesale}");
}

pub fn test_config() -> Config {
    let mut c = Config {
        jwt_secret: SecretString::from(SECRET.to_owned()),
        redis_url: redis_url(),
        ..Config::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.gateway.http_addr = any;
    c.coupon.http_addr = any;
    c.coupon.grpc_addr = any;
    c.point.service.http_addr = any;
    c.point.service.grpc_addr = any;
    c.timesale.service.http_addr = any;
    c.timesale.service.grpc_addr = any;
    c.gateway.rate_limit.enabled = false;
    // Every test app shares one Redis and sends from 127.0.0.1: one test's
    // failed redemptions must not lock out another's. code_guard.rs tests
    // the per-IP bucket with addresses of its own.
    c.gateway.code_guard.ip_burst = 1_000_000;
    // Race tests fire a thousand requests at once to test what the engine
    // decides, not what the edge sheds; overload.rs tests the bound.
    c.overload.max_in_flight = 100_000;
    c.overload.adaptive = false;
    c
}

/// The keys every test process signs with (the test secret, 15 minutes).
pub fn test_keys() -> JwtKeys {
    JwtKeys::new(&SecretString::from(SECRET.to_owned()), 900)
}

pub fn admin_token(keys: &JwtKeys) -> String {
    keys.issue(Uuid::new_v4(), Role::Admin).unwrap()
}

/// A fresh user id and its token.
pub fn new_user(keys: &JwtKeys) -> (Uuid, String) {
    let id = Uuid::new_v4();
    (id, keys.issue(id, Role::User).unwrap())
}

/// `{base}/api/v1{path}`, for `send_api`.
pub fn api_request(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    client.request(method, format!("{base}/api/v1{path}"))
}

/// Sends `req` with what is given: the answer's status and its JSON body
/// (`Null` when it has none).
pub async fn send_api(
    mut req: reqwest::RequestBuilder,
    token: Option<&str>,
    body: Option<Value>,
    idem: Option<&str>,
) -> (u16, Value) {
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Starts promod on `cfg`: its shutdown, its running tasks and what it bound.
pub async fn start(
    cfg: Config,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    promod::server::Bound,
) {
    let shutdown = CancellationToken::new();
    let (tasks, bound) = promod::server::start(cfg, shutdown.clone())
        .await
        .expect("promod starts");
    let running = tokio::spawn(promod::server::join(tasks, shutdown.clone()));
    (shutdown, running, bound)
}

/// A plain GET's status (ops routes, docs).
pub async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

/// A plain GET's body, which must be there (`/metrics`).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The paths of the OpenAPI document `base` serves.
pub async fn openapi_paths(client: &reqwest::Client, base: &str) -> serde_json::Map<String, Value> {
    let doc: Value = client
        .get(format!("{base}/api/docs/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["paths"].as_object().expect("openapi paths").clone()
}

/// A created thing's id.
pub fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// Logins limited to a burst of 2 per client ip, hardly refilling, with
/// forwarding headers believed from the `trusted` proxies only.
pub fn limit_logins(c: &mut Config, trusted: &[&str]) {
    c.gateway.rate_limit.enabled = true;
    c.gateway.rate_limit.auth_burst = 2;
    c.gateway.rate_limit.auth_per_sec = 0.01;
    c.gateway.trusted_proxies = trusted.iter().map(|p| p.to_string()).collect();
}

/// Runs `n` tasks made by `task` at once: their outputs, in the order made.
pub async fn concurrently<T, Fut>(n: usize, mut task: impl FnMut(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// How many `answers` have the status `ok`, and how many were refused with
/// `refused` (status, error code); any other answer fails the test.
pub fn tally(answers: &[(u16, Value)], ok: u16, refused: (u16, &str)) -> (usize, usize) {
    let (mut passed, mut refusals) = (0, 0);
    for (s, b) in answers {
        if *s == ok {
            passed += 1;
        } else if (*s, b["error"]["code"].as_str()) == (refused.0, Some(refused.1)) {
            refusals += 1;
        } else {
            panic!("unexpected {s}: {b}");
        }
    }
    (passed, refusals)
}

pub struct TestApp {
    pub base: String,
    pub coupon_base: String,
    pub client: reqwest::Client,
    pub keys: JwtKeys,
    pub coupon_db: sqlx::PgPool,
    pub point_db: sqlx::PgPool,
    pub gateway_db: sqlx::PgPool,
    /// Only when the tweak enabled the timesale role.
    pub timesale_db: Option<sqlx::PgPool>,
    pub clock: std::sync::Arc<promo_domain::clock::OffsetClock>,
    pub shutdown: CancellationToken,
    pub admin: String,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `spawn_app` with a config tweak applied before start.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut cfg = test_config();
    cfg.roles = "gateway,coupon,point".parse().unwrap();
    cfg.coupon.database_url = fresh_db("coupon").await;
    cfg.point.service.database_url = fresh_db("point").await;
    cfg.gateway.database_url = fresh_db("gateway").await;
    let coupon_url = cfg.coupon.database_url.clone();
    let point_url = cfg.point.service.database_url.clone();
    tweak(&mut cfg);
    let gateway_url = cfg.gateway.database_url.clone();
    let timesale_url = cfg
        .roles
        .has(promod::roles::Role::Timesale)
        .then(|| cfg.timesale.service.database_url.clone());
    let (shutdown, _running, bound) = start(cfg).await;
    let keys = test_keys();
    let admin = admin_token(&keys);
    TestApp {
        base: format!("http://{}", bound.gateway_http.unwrap()),
        coupon_base: format!("http://{}", bound.coupon_http.unwrap()),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        keys,
        coupon_db: sqlx::PgPool::connect(&coupon_url).await.unwrap(),
        point_db: sqlx::PgPool::connect(&point_url).await.unwrap(),
        gateway_db: sqlx::PgPool::connect(&gateway_url).await.unwrap(),
        timesale_db: match timesale_url {
            Some(u) => Some(sqlx::PgPool::connect(&u).await.unwrap()),
            None => None,
        },
        clock: bound.clock.clone(),
        shutdown,
        admin,
    }
}

/// `spawn_app` with every role, the timesale one on a fresh database too.
pub async fn spawn_all_roles_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let ts = fresh_db("timesale").await;
    spawn_app_with(move |c| {
        c.roles = "gateway,coupon,point,timesale".parse().unwrap();
        c.timesale.service.database_url = ts;
        tweak(c);
    })
    .await
}

pub async fn spawn_all_roles() -> TestApp {
    spawn_all_roles_with(|_| {}).await
}

impl TestApp {
    pub fn user_token(&self) -> (Uuid, String) {
        new_user(&self.keys)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (u16, Value) {
        let req = api_request(&self.client, &self.base, method, path);
        send_api(req, token, body, idem).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body), None)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None, None)
            .await
    }

    /// POSTs `body` with `token`, which must create (201); the created thing.
    pub async fn created_by(&self, path: &str, token: &str, body: Value) -> Value {
        let (s, b) = self.post(path, token, body).await;
        assert_eq!(s, 201, "{path}: {b}");
        b
    }

    /// `created_by` the admin.
    pub async fn created(&self, path: &str, body: Value) -> Value {
        self.created_by(path, &self.admin, body).await
    }

    pub async fn metrics(&self) -> String {
        get_text(&self.client, &format!("{}/metrics", self.base)).await
    }

    /// A product priced 1000 and a time sale of it at 700, running from a
    /// minute ago for a day: (product, sale) as created.
    pub async fn product_on_sale(&self, total: i64, per_user: i64) -> (Value, Value) {
        let product = self
            .created(
                "/products",
                serde_json::json!({"name": "test product", "price": 1000}),
            )
            .await;
        let now = chrono::Utc::now();
        let sale = self
            .created(
                "/time-sales",
                serde_json::json!({
                    "product_id": product["id"],
                    "total_quantity": total,
                    "sale_price": 700,
                    "per_user_limit": per_user,
                    "start_at": now - chrono::Duration::minutes(1),
                    "end_at": now + chrono::Duration::days(1),
                }),
            )
            .await;
        (product, sale)
    }

    /// `product_on_sale`'s sale id.
    pub async fn create_sale(&self, total: i64, per_user: i64) -> Uuid {
        let (_, sale) = self.product_on_sale(total, per_user).await;
        id(&sale).parse().unwrap()
    }

    pub async fn create_policy(&self, total: i64, per_user: i64) -> Uuid {
        let now = chrono::Utc::now();
        let (s, b) = self
            .post(
                "/coupon-policies",
                &self.admin,
                serde_json::json!({
                    "name": "test policy",
                    "discount_type": "PERCENTAGE",
                    "discount_value": 10,
                    "max_discount_amount": 5000,
                    "min_order_amount": 1000,
                    "total_quantity": total,
                    "per_user_limit": per_user,
                    "valid_from": now - chrono::Duration::minutes(1),
                    "valid_until": now + chrono::Duration::days(1),
                }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().parse().unwrap()
    }
}

/// Holds a key's claim on a counter set as a first attempt still running
/// would (`promo_store::stock::Claim`).
pub async fn hold_claim(
    kind: promo_store::stock::Kind,
    id: uuid::Uuid,
    user: uuid::Uuid,
    key: &str,
    held: bool,
) {
    let mut redis = redis::Client::open(super::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let claim = kind.claim_key(id, user, key);
    let mut cmd = if held {
        redis::cmd("SET")
    } else {
        redis::cmd("DEL")
    };
    cmd.arg(&claim);
    if held {
        cmd.arg(1).arg("PX").arg(60_000);
    }
    let _: () = cmd.query_async(&mut redis).await.unwrap();
}

/// Waits until `probe` holds, failing the test after 15 s with `what`.
pub async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !probe().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "{what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
