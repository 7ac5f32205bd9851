//! Pin (issue 17): concurrent requests under one `Idempotency-Key` for a
//! coupon issue or a time-sale order make one coupon or order, and each of
//! them is answered with the stored answer or 409 CONFLICT (ask again), never
//! a refusal caused by the first attempt's own slot. (Points: see
//! `point::replaying_an_idempotency_key_returns_the_first_answer_once`.)

use super::helpers::{spawn_all_roles, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

const N: usize = 16;

/// Sends the same keyed request N times at once; returns the one created
/// body after checking that every other answer is it or CONFLICT.
async fn same_key_at_once(app: &Arc<TestApp>, path: String, token: &str, body: Value) -> Value {
    let token = Arc::new(token.to_owned());
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (app, token, path, body, barrier) = (
            app.clone(),
            token.clone(),
            path.clone(),
            body.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.call(
                Method::POST,
                &path,
                Some(&token),
                Some(body),
                Some("same-key"),
            )
            .await
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            201 => {
                if !created.contains(&b) {
                    created.push(b);
                }
            }
            _ => assert_eq!(
                (s, b["error"]["code"].as_str()),
                (409, Some("CONFLICT")),
                "{path}: neither the stored answer nor ask-again: {b}"
            ),
        }
    }
    assert_eq!(
        created.len(),
        1,
        "{path}: one answer for one key: {created:?}"
    );
    created.remove(0)
}

async fn count(pool: &sqlx::PgPool, sql: &str, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(pool).await.unwrap();
    n
}

async fn sale(app: &TestApp, total: i64, per_user: i64) -> Uuid {
    let (s, product) = app
        .post(
            "/products",
            &app.admin,
            json!({"name": "same key", "price": 1000}),
        )
        .await;
    assert_eq!(s, 201, "{product}");
    let now = chrono::Utc::now();
    let (s, b) = app
        .post(
            "/time-sales",
            &app.admin,
            json!({
                "product_id": product["id"], "total_quantity": total, "sale_price": 700,
                "per_user_limit": per_user,
                "start_at": now - chrono::Duration::minutes(1),
                "end_at": now + chrono::Duration::days(1),
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_coupon_issues_make_one_coupon() {
    let app = Arc::new(spawn_all_roles().await);
    let rows = "SELECT count(*) FROM coupons WHERE user_id = $1";
    // Room for many: only the key keeps it to one.
    let roomy = app.create_policy(100, 10).await;
    let (user, token) = app.user_token();
    same_key_at_once(
        &app,
        "/coupons/issue".into(),
        &token,
        json!({"policy_id": roomy}),
    )
    .await;
    assert_eq!(
        count(&app.coupon_db, rows, user).await,
        1,
        "one coupon for one key"
    );
    // Room for one: the retries must not see the first attempt's slot as taken.
    let tight = app.create_policy(1, 1).await;
    let (user, token) = app.user_token();
    let created = same_key_at_once(
        &app,
        "/coupons/issue".into(),
        &token,
        json!({"policy_id": tight}),
    )
    .await;
    assert_eq!(
        count(&app.coupon_db, rows, user).await,
        1,
        "one coupon for one key"
    );
    let last = app
        .call(
            Method::POST,
            "/coupons/issue",
            Some(&token),
            Some(json!({"policy_id": tight})),
            Some("same-key"),
        )
        .await;
    assert_eq!(
        last.0, 201,
        "the stored answer once all are done: {}",
        last.1
    );
    assert_eq!(created, last.1, "the stored answer is the first one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_orders_make_one_order() {
    let app = Arc::new(spawn_all_roles().await);
    let pool = app.timesale_db.clone().expect("timesale role");
    let rows = "SELECT count(*) FROM time_sale_orders WHERE user_id = $1";
    let roomy = sale(&app, 100, 10).await;
    let (user, token) = app.user_token();
    same_key_at_once(
        &app,
        format!("/time-sales/{roomy}/orders"),
        &token,
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(count(&pool, rows, user).await, 1, "one order for one key");
    let tight = sale(&app, 1, 1).await;
    let (user, token) = app.user_token();
    let path = format!("/time-sales/{tight}/orders");
    let created = same_key_at_once(&app, path.clone(), &token, json!({"quantity": 1})).await;
    assert_eq!(count(&pool, rows, user).await, 1, "one order for one key");
    let last = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"quantity": 1})),
            Some("same-key"),
        )
        .await;
    assert_eq!(
        last.0, 201,
        "the stored answer once all are done: {}",
        last.1
    );
    assert_eq!(created, last.1, "the stored answer is the first one");
}
