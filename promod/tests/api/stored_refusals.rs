//! Pin (issue 18, API.md Conventions): a business refusal of a keyed write
//! is its stored answer. Replaying the key after the cause went away (stock
//! back, points earned, the coupon free again) is refused the same way and
//! changes nothing; a fresh key is decided anew. A request refused before it
//! started (400) stores nothing.

use super::helpers::{id, spawn_all_roles, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn keyed(app: &TestApp, path: &str, token: &str, body: Value, key: &str) -> (u16, Value) {
    app.call(Method::POST, path, Some(token), Some(body), Some(key))
        .await
}

fn code(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"]["code"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_coupon_issue_replays_sold_out_after_restock() {
    let app = spawn_all_roles().await;
    let policy = app.create_policy(1, 1).await;
    let (_, first) = app.user_token();
    let body = json!({"policy_id": policy});
    assert_eq!(
        app.post("/coupons/issue", &first, body.clone()).await.0,
        201
    );
    let (_, token) = app.user_token();
    let refused = keyed(&app, "/coupons/issue", &token, body.clone(), "k").await;
    assert_eq!(code(&refused), (409, Some("SOLD_OUT")), "{}", refused.1);
    let path = format!("/coupon-policies/{policy}");
    let patch = json!({"total_quantity": 2});
    let (s, b) = app
        .call(Method::PATCH, &path, Some(&app.admin), Some(patch), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let again = keyed(&app, "/coupons/issue", &token, body.clone(), "k").await;
    assert_eq!(again, refused, "the replay is the first answer");
    let fresh = keyed(&app, "/coupons/issue", &token, body, "k2").await;
    assert_eq!(fresh.0, 201, "a new key is decided anew: {}", fresh.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_order_replays_sold_out_after_a_cancel_gives_the_stock_back() {
    let app = spawn_all_roles().await;
    let sale = app.create_sale(1, 1).await;
    let path = format!("/time-sales/{sale}/orders");
    let (_, first) = app.user_token();
    let order = app.created_by(&path, &first, json!({"quantity": 1})).await;
    let (_, token) = app.user_token();
    let refused = keyed(&app, &path, &token, json!({"quantity": 1}), "k").await;
    assert_eq!(code(&refused), (409, Some("SOLD_OUT")), "{}", refused.1);
    let cancel = format!("/orders/{}/cancel", id(&order));
    assert_eq!(app.post(&cancel, &first, json!({})).await.0, 200);
    let again = keyed(&app, &path, &token, json!({"quantity": 1}), "k").await;
    assert_eq!(again, refused, "the replay is the first answer");
    let fresh = keyed(&app, &path, &token, json!({"quantity": 1}), "k2").await;
    assert_eq!(fresh.0, 201, "the stock came back: {}", fresh.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insufficient_point_use_replays_refused_after_an_earn() {
    let app = spawn_all_roles().await;
    let (user, token) = app.user_token();
    let body = json!({"amount": 100});
    let refused = keyed(&app, "/points/use", &token, body.clone(), "k").await;
    assert_eq!(code(&refused), (409, Some("INSUFFICIENT_BALANCE")));
    app.created("/points/earn", json!({"user_id": user, "amount": 1000}))
        .await;
    let again = keyed(&app, "/points/use", &token, body.clone(), "k").await;
    assert_eq!(again, refused, "the replay is the first answer");
    let (_, balance) = app.get("/points/balance", &token).await;
    assert_eq!(balance["balance"], 1000, "the replay spent nothing");
    let fresh = keyed(&app, "/points/use", &token, body, "k2").await;
    assert_eq!(fresh.0, 201, "{}", fresh.1);
}

/// The refusal of a write that runs in its own transaction (not the group
/// commit): a coupon use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_used_coupon_use_replays_refused_after_the_use_is_cancelled() {
    let app = spawn_all_roles().await;
    let policy = app.create_policy(10, 1).await;
    let (_, token) = app.user_token();
    let coupon = app
        .created_by("/coupons/issue", &token, json!({"policy_id": policy}))
        .await;
    let use_path = format!("/coupons/{}/use", id(&coupon));
    let used = app
        .post(
            &use_path,
            &token,
            json!({"order_id": "o1", "order_amount": 20000}),
        )
        .await;
    assert_eq!(used.0, 200, "{}", used.1);
    let body = json!({"order_id": "o2", "order_amount": 20000});
    let refused = keyed(&app, &use_path, &token, body.clone(), "k").await;
    assert_eq!(code(&refused), (409, Some("ALREADY_USED")), "{}", refused.1);
    let cancel = format!("/coupons/{}/cancel", id(&coupon));
    assert_eq!(app.post(&cancel, &token, json!({})).await.0, 200);
    let again = keyed(&app, &use_path, &token, body, "k").await;
    assert_eq!(again, refused, "the replay is the first answer");
    let (_, now) = app.get(&format!("/coupons/{}", id(&coupon)), &token).await;
    assert_eq!(now["status"], "AVAILABLE", "the replay used nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_it_started_stores_nothing() {
    let app = spawn_all_roles().await;
    let sale = app.create_sale(10, 1).await;
    let path = format!("/time-sales/{sale}/orders");
    let (_, token) = app.user_token();
    let bad = keyed(&app, &path, &token, json!({"quantity": 0}), "k").await;
    assert_eq!(code(&bad), (400, Some("VALIDATION_ERROR")), "{}", bad.1);
    // Had the 400 been stored, this would be IDEMPOTENCY_MISMATCH.
    let good = keyed(&app, &path, &token, json!({"quantity": 1}), "k").await;
    assert_eq!(good.0, 201, "{}", good.1);
}

/// Refusals are group-committed: a burst of keyed refusals, each key sent
/// twice at once, stores one answer per key, and every copy is that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_keyed_refusals_stores_one_answer_per_key() {
    let app = spawn_all_roles().await;
    let sale = app.create_sale(1, 1).await;
    let path = format!("/time-sales/{sale}/orders");
    let (_, first) = app.user_token();
    let order = app.created_by(&path, &first, json!({"quantity": 1})).await;
    let tokens: Vec<String> = (0..40).map(|_| app.user_token().1).collect();
    let body = json!({"quantity": 1});
    let burst = tokens.iter().flat_map(|t| [t, t]).map(|t| {
        let (app, path, body) = (&app, &path, body.clone());
        async move { keyed(app, path, t, body, "k").await }
    });
    for answer in futures::future::join_all(burst).await {
        assert_eq!(code(&answer), (409, Some("SOLD_OUT")), "{}", answer.1);
    }
    let cancel = format!("/orders/{}/cancel", id(&order));
    assert_eq!(app.post(&cancel, &first, json!({})).await.0, 200);
    for t in &tokens {
        let again = keyed(&app, &path, t, body.clone(), "k").await;
        assert_eq!(
            code(&again),
            (409, Some("SOLD_OUT")),
            "the replay is the answer"
        );
    }
    let fresh = keyed(&app, &path, &tokens[0], body, "k2").await;
    assert_eq!(fresh.0, 201, "the stock came back: {}", fresh.1);
}
