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

/// Sends the same keyed request N times at once: one is created, every other
/// answer is that one or CONFLICT; once all are done the key replays it.
async fn same_key_at_once(app: &Arc<TestApp>, path: String, token: &str, body: Value) {
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
    // Once all are done, the key answers with what it stored.
    let last = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(body),
            Some("same-key"),
        )
        .await;
    assert_eq!(
        last,
        (201, created[0].clone()),
        "{path}: the stored answer once all are done"
    );
}

async fn count(pool: &sqlx::PgPool, sql: &str, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(pool).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_coupon_issues_make_one_coupon() {
    let app = Arc::new(spawn_all_roles().await);
    let rows = "SELECT count(*) FROM coupons WHERE user_id = $1";
    // Room for many, so only the key keeps it to one; then room for one, so
    // a retry that saw the first attempt's slot as taken would be SOLD_OUT.
    for (total, per_user) in [(100, 10), (1, 1)] {
        let policy = app.create_policy(total, per_user).await;
        let (user, token) = app.user_token();
        let body = json!({"policy_id": policy});
        same_key_at_once(&app, "/coupons/issue".into(), &token, body).await;
        let n = count(&app.coupon_db, rows, user).await;
        assert_eq!(n, 1, "one coupon for one key (policy of {total})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_orders_make_one_order() {
    let app = Arc::new(spawn_all_roles().await);
    let pool = app.timesale_db.clone().expect("timesale role");
    let rows = "SELECT count(*) FROM time_sale_orders WHERE user_id = $1";
    for (total, per_user) in [(100, 10), (1, 1)] {
        let sale = app.create_sale(total, per_user).await;
        let (user, token) = app.user_token();
        let path = format!("/time-sales/{sale}/orders");
        same_key_at_once(&app, path, &token, json!({"quantity": 1})).await;
        let n = count(&pool, rows, user).await;
        assert_eq!(n, 1, "one order for one key (sale of {total})");
    }
}

/// A keyed write reads no stored answer before it runs (`inflight.rs`), so
/// a retry is decided again; whatever refuses it then (the policy closed,
/// the stock gone, another request under the key) must still answer with
/// the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_now_still_gets_its_first_answer() {
    let app = Arc::new(spawn_all_roles().await);
    let policy = app.create_policy(1, 1).await;
    let (_, token) = app.user_token();
    let issue = |body: Value| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            app.call(
                Method::POST,
                "/coupons/issue",
                Some(&token),
                Some(body),
                Some("k1"),
            )
            .await
        }
    };
    let first = issue(json!({"policy_id": policy})).await;
    assert_eq!(first.0, 201, "{}", first.1);
    // Sold out (total 1) and at the user's limit: the retry is refused by
    // admission, and answers with what it stored.
    assert_eq!(issue(json!({"policy_id": policy})).await, first);
    // Closed: refused before admission, same answer.
    let path = format!("/coupon-policies/{policy}");
    let closed = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"active": false})),
            None,
        )
        .await;
    assert_eq!(closed.0, 200, "{}", closed.1);
    assert_eq!(issue(json!({"policy_id": policy})).await, first);
    // Another request under the same key is still a mismatch, not a refusal.
    let other = issue(json!({"policy_id": Uuid::new_v4()})).await;
    assert_eq!(
        (other.0, other.1["error"]["code"].as_str()),
        (409, Some("IDEMPOTENCY_MISMATCH")),
        "{}",
        other.1
    );
}
