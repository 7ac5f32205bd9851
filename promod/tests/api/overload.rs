//! Admission control (issue 18, `promod/src/overload.rs`): with a port's
//! bound reached, one more request is refused at once with 503 (gRPC:
//! `Unavailable`) and `Retry-After`, changes nothing, and the port serves
//! again once its work is done. A table lock held by the test keeps the
//! admitted requests in flight.

use super::helpers::{eventually, free_port, spawn_app_with, TestApp};
use promod::proto::{common, coupon as pb};
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::{Duration, Instant};
use uuid::Uuid;

const LIMIT: usize = 2;

/// A bound that does not move, so the test knows when it is full.
fn fixed(max_in_flight: usize) -> promod::config::OverloadConfig {
    promod::config::OverloadConfig {
        max_in_flight,
        adaptive: false,
        ..Default::default()
    }
}
/// A refusal is immediate; this only leaves room for a loaded machine. The
/// admitted requests wait on the lock for as long as the test holds it.
const AT_ONCE: Duration = Duration::from_secs(2);

async fn lock_policies(pool: &PgPool) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE coupon_policies IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Until `n` requests wait on the lock, so they are surely in flight.
async fn waiting_on_lock(pool: &PgPool, n: i64) {
    eventually("the held requests wait on the lock", || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks \
             WHERE NOT granted AND relation = 'coupon_policies'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        waiting == n
    })
    .await;
}

/// An ops route, answered at once even by a full port.
async fn ops_route(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.base))
        .timeout(AT_ONCE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} is never shed: {e}"))
}

/// A series of the process-wide registry, read through the gateway's
/// `/metrics` (which a full port must still answer).
async fn metric(app: &TestApp, name: &str, role: &str, port: &str) -> f64 {
    let text = ops_route(app, "/metrics").await.text().await.unwrap();
    let series = format!("{name}{{role=\"{role}\",port=\"{port}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn issue(app: &TestApp, token: &str, policy: Uuid, timeout: Duration) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/api/v1/coupons/issue", app.base))
        .bearer_auth(token)
        .json(&json!({"policy_id": policy}))
        .timeout(timeout)
        .send()
        .await
        .expect("an answer in time");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn coupons_of(app: &TestApp, policy: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupons WHERE policy_id = $1")
        .bind(policy)
        .fetch_one(&app.coupon_db)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rest_port_sheds_at_once_and_serves_again_when_its_work_is_done() {
    let app = spawn_app_with(|c| c.overload = fixed(LIMIT)).await;
    let policy = app.create_policy(10, 1).await;
    let lock = lock_policies(&app.coupon_db).await;

    // LIMIT reads wait on the lock (one read per connection, where writes
    // would share a batch); their clients give up on them, but the detached
    // work still holds the port's permits.
    let held: Vec<_> = (0..LIMIT)
        .map(|_| {
            let req = app
                .client
                .get(format!("{}/api/v1/coupon-policies/{policy}", app.base))
                .bearer_auth(&app.admin)
                .timeout(Duration::from_secs(3));
            tokio::spawn(req.send())
        })
        .collect();
    waiting_on_lock(&app.coupon_db, LIMIT as i64).await;
    for h in held {
        assert!(
            h.await.unwrap().is_err(),
            "a held read answered while the lock was held"
        );
    }

    let (_, token) = app.user_token();
    let start = Instant::now();
    let resp = app
        .client
        .post(format!("{}/api/v1/coupons/issue", app.base))
        .bearer_auth(&token)
        .json(&json!({"policy_id": policy}))
        .timeout(AT_ONCE)
        .send()
        .await
        .expect("refused at once, not queued behind the lock");
    assert!(start.elapsed() < AT_ONCE);
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");

    let health = ops_route(&app, "/healthz").await;
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        metric(&app, "promo_in_flight", "gateway", "rest").await,
        LIMIT as f64
    );
    assert!(metric(&app, "promo_shed_requests_total", "gateway", "rest").await >= 1.0);
    assert_eq!(
        metric(&app, "promo_in_flight_limit", "gateway", "rest").await,
        LIMIT as f64
    );

    lock.rollback().await.unwrap();
    eventually("the permits come back with the work", || async {
        metric(&app, "promo_in_flight", "gateway", "rest").await == 0.0
    })
    .await;
    assert_eq!(
        coupons_of(&app, policy).await,
        0,
        "the shed request changed nothing"
    );
    let (s, b) = issue(&app, &token, policy, Duration::from_secs(10)).await;
    assert_eq!(s, 201, "served again: {b}");
    assert_eq!(coupons_of(&app, policy).await, 1);
}

fn get_policy(id: Uuid) -> pb::GetByIdRequest {
    pb::GetByIdRequest {
        actor: Some(common::Actor {
            user_id: Uuid::new_v4().to_string(),
            role: "admin".into(),
        }),
        id: id.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_grpc_port_sheds_at_once_with_unavailable() {
    use pb::coupon_service_client::CouponServiceClient;
    let port = free_port();
    let app = spawn_app_with(|c| {
        c.overload = fixed(LIMIT);
        c.coupon.grpc_addr = ([127, 0, 0, 1], port).into();
    })
    .await;
    let policy = app.create_policy(10, 1).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = CouponServiceClient::new(channel);
    let lock = lock_policies(&app.coupon_db).await;
    let held: Vec<_> = (0..LIMIT)
        .map(|_| {
            let mut c = client.clone();
            // The caller gives up (and resets its stream); the detached work
            // keeps its permit.
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(3), c.get_policy(get_policy(policy))).await
            })
        })
        .collect();
    waiting_on_lock(&app.coupon_db, LIMIT as i64).await;
    for h in held {
        assert!(
            h.await.unwrap().is_err(),
            "a held read answered while the lock was held"
        );
    }

    let start = Instant::now();
    let refused = tokio::time::timeout(AT_ONCE, client.clone().get_policy(get_policy(policy)))
        .await
        .expect("refused at once, not queued behind the lock")
        .expect_err("a full port refuses");
    assert!(start.elapsed() < AT_ONCE);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_eq!(
        metric(&app, "promo_in_flight", "coupon", "grpc").await,
        LIMIT as f64
    );
    assert!(metric(&app, "promo_shed_requests_total", "coupon", "grpc").await >= 1.0);

    lock.rollback().await.unwrap();
    eventually("the permits come back with the work", || async {
        metric(&app, "promo_in_flight", "coupon", "grpc").await == 0.0
    })
    .await;
    client
        .clone()
        .get_policy(get_policy(policy))
        .await
        .expect("served again");
}
