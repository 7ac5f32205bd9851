//! The crash window of a reservation: the real binary killed between a Redis
//! admission and its commit (the `after_admission` failpoint aborts it there,
//! as a kill -9 would), then restarted. The taken slot comes back by itself
//! within the reconciler's bound, exactly once, for coupon issues and for
//! time-sale orders, with no manual rebuild.

use super::helpers::{free_port, fresh_db, redis_url, SECRET};
use super::procs::{spawn_process, wait_http, Proc};
use promo_domain::principal::Role;
use promo_store::stock::{Kind, RedisStock, StockPort};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BOUND_MS: u64 = 1_500;

struct Stack {
    envs: Vec<(&'static str, String)>,
    base: String,
    root: String,
    coupon_db: String,
    timesale_db: String,
}

impl Stack {
    async fn new() -> Stack {
        let (coupon_db, timesale_db) =
            (fresh_db("crash_coupon").await, fresh_db("crash_sale").await);
        let gw = free_port();
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let envs = vec![
            ("PROMO_ROLES", "gateway,coupon,timesale".to_string()),
            ("PROMO_GATEWAY__HTTP_ADDR", addr(gw)),
            ("PROMO_GATEWAY__DATABASE_URL", fresh_db("crash_gw").await),
            ("PROMO_COUPON__HTTP_ADDR", addr(free_port())),
            ("PROMO_COUPON__GRPC_ADDR", addr(free_port())),
            ("PROMO_COUPON__DATABASE_URL", coupon_db.clone()),
            ("PROMO_TIMESALE__HTTP_ADDR", addr(free_port())),
            ("PROMO_TIMESALE__GRPC_ADDR", addr(free_port())),
            ("PROMO_TIMESALE__DATABASE_URL", timesale_db.clone()),
            ("PROMO_RESERVATION__BOUND_MS", BOUND_MS.to_string()),
            ("PROMO_RESERVATION__RECONCILE_EVERY_MS", "200".to_string()),
        ];
        Stack {
            envs,
            base: format!("http://127.0.0.1:{gw}/api/v1"),
            root: format!("http://127.0.0.1:{gw}"),
            coupon_db,
            timesale_db,
        }
    }

    /// Starts promod; with `crash`, it aborts right after its next admission.
    async fn start(&self, crash: bool) -> Proc {
        let mut envs = self.envs.clone();
        if crash {
            envs.push(("PROMO_FAILPOINT", "after_admission".to_string()));
        }
        let p = spawn_process(&envs);
        wait_http(&format!("{}/readyz", self.root)).await;
        p
    }
}

fn token(role: Role) -> (Uuid, String) {
    let keys =
        promo_store::auth::JwtKeys::new(&secrecy::SecretString::from(SECRET.to_owned()), 900);
    let id = Uuid::new_v4();
    (id, keys.issue(id, role).unwrap())
}

async fn post(base: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        // The process died with the request in flight.
        Err(_) => (0, Value::Null),
    }
}

/// Waits for the aborted process to be gone.
fn reap(mut p: Proc) {
    let status = p.0.wait().unwrap();
    assert!(!status.success(), "promod should have aborted: {status}");
}

async fn count(db: &str, sql: &str, id: Uuid) -> i64 {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.unwrap();
    n
}

/// Redis's counters of one set and the size of its journal.
async fn live(stock: &RedisStock, kind: Kind, id: Uuid) -> (i64, i64, u64) {
    let (left, users) = stock.snapshot(kind, id).await.unwrap().unwrap();
    let held = users.values().sum();
    let journal = stock.journals(kind, &[id], Duration::ZERO).await.unwrap();
    (left, held, journal[0].size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_admission_and_commit_gives_the_slot_back() {
    let stack = Stack::new().await;
    let stock = RedisStock::new(promo_store::cache::connect(&redis_url()).await.unwrap());
    let (_, admin) = token(Role::Admin);
    let (_, user) = token(Role::User);
    let base = stack.base.clone();

    // A coupon issue: admitted, then the process dies before its commit.
    let a = stack.start(true).await;
    let now = chrono::Utc::now();
    let (s, policy) = post(
        &base,
        "/coupon-policies",
        &admin,
        json!({
        "name": "crash", "discount_type": "FIXED", "discount_value": 100,
        "total_quantity": 5, "per_user_limit": 2,
        "valid_from": now - chrono::Duration::minutes(1),
        "valid_until": now + chrono::Duration::days(1)}),
    )
    .await;
    assert_eq!(s, 201, "{policy}");
    let policy: Uuid = policy["id"].as_str().unwrap().parse().unwrap();
    let (s, product) = post(
        &base,
        "/products",
        &admin,
        json!({"name": "p", "price": 1000}),
    )
    .await;
    assert_eq!(s, 201, "{product}");
    let (s, sale) = post(
        &base,
        "/time-sales",
        &admin,
        json!({
        "product_id": product["id"], "total_quantity": 10, "sale_price": 500,
        "per_user_limit": 5, "start_at": now - chrono::Duration::minutes(1),
        "end_at": now + chrono::Duration::hours(1)}),
    )
    .await;
    assert_eq!(s, 201, "{sale}");
    let sale: Uuid = sale["id"].as_str().unwrap().parse().unwrap();
    let (s, b) = post(&base, "/coupons/issue", &user, json!({"policy_id": policy})).await;
    assert_eq!(s, 0, "the issue should have died with the process: {b}");
    reap(a);
    // The crash window: Redis took the slot and journaled it, PostgreSQL has
    // no row.
    assert_eq!(live(&stock, Kind::Coupon, policy).await, (4, 1, 1));
    let coupons = "SELECT count(*) FROM coupons WHERE policy_id = $1";
    assert_eq!(count(&stack.coupon_db, coupons, policy).await, 0);

    // An order, the same way, in a second process.
    let b = stack.start(true).await;
    let orders = format!("/time-sales/{sale}/orders");
    let (s, body) = post(&base, &orders, &user, json!({"quantity": 3})).await;
    assert_eq!(s, 0, "the order should have died with the process: {body}");
    reap(b);
    assert_eq!(live(&stock, Kind::Sale, sale).await, (7, 3, 1));
    let sold = "SELECT count(*) FROM time_sale_orders WHERE time_sale_id = $1";
    assert_eq!(count(&stack.timesale_db, sold, sale).await, 0);

    // Restarted without the failpoint: within the bound both slots are back,
    // with no rebuild, and only once.
    let _c = stack.start(false).await;
    let start = Instant::now();
    let deadline = Duration::from_millis(BOUND_MS * 2 + 5_000);
    loop {
        let coupon = live(&stock, Kind::Coupon, policy).await;
        let order = live(&stock, Kind::Sale, sale).await;
        if coupon == (5, 0, 0) && order == (10, 0, 0) {
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "not given back: coupon {coupon:?}, order {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Later passes give nothing back twice.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(live(&stock, Kind::Coupon, policy).await, (5, 0, 0));
    assert_eq!(live(&stock, Kind::Sale, sale).await, (10, 0, 0));

    // The stock is whole: all five coupons and ten units can be taken, and a
    // stored row's entry is settled, not given back.
    for _ in 0..2 {
        let (s, b) = post(&base, "/coupons/issue", &user, json!({"policy_id": policy})).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = post(&base, &orders, &user, json!({"quantity": 5})).await;
    assert_eq!(s, 201, "{b}");
    tokio::time::sleep(Duration::from_millis(BOUND_MS + 1_000)).await;
    assert_eq!(live(&stock, Kind::Coupon, policy).await, (3, 2, 0));
    assert_eq!(live(&stock, Kind::Sale, sale).await, (5, 5, 0));
    assert_eq!(count(&stack.coupon_db, coupons, policy).await, 2);
    assert_eq!(count(&stack.timesale_db, sold, sale).await, 1);
}
