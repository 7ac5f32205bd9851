//! Pin (issue 17): an `Idempotency-Key` reaches a role in another process. The
//! gateway carries the key and the request's hash over gRPC; the role replays
//! the stored answer for the same request and refuses a different one.

use super::helpers::{
    admin_token, api_request, free_port, fresh_db, new_user, send_api, test_keys,
};
use super::procs::{spawn_process as spawn, wait_http};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

struct Split {
    base: String,
    client: reqwest::Client,
    keys: promo_store::auth::JwtKeys,
    admin: String,
}

impl Split {
    async fn call(&self, path: &str, token: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let req = api_request(&self.client, &self.base, Method::POST, path);
        send_api(req, Some(token), Some(body), key).await
    }

    async fn created(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.call(path, &self.admin, body, None).await;
        assert_eq!(s, 201, "{path}: {b}");
        b
    }

    fn user(&self) -> (Uuid, String) {
        new_user(&self.keys)
    }

    /// The same request twice under one key gives one answer; a different
    /// request under that key is refused.
    async fn replay_and_mismatch(
        &self,
        what: &str,
        path: &str,
        token: &str,
        body: Value,
        other: Value,
    ) -> Value {
        let first = self
            .call(path, token, body.clone(), Some("split-key"))
            .await;
        assert_eq!(first.0, 201, "{what}: {}", first.1);
        let again = self.call(path, token, body, Some("split-key")).await;
        assert_eq!(again, first, "{what}: a replay returns the first answer");
        let (s, b) = self.call(path, token, other, Some("split-key")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (409, Some("IDEMPOTENCY_MISMATCH")),
            "{what}: {b}"
        );
        first.1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_reach_roles_in_another_process() {
    let (coupon, point, timesale) = (free_port(), free_port(), free_port());
    let coupon_url = fresh_db("splitidem_coupon").await;
    let timesale_url = fresh_db("splitidem_timesale").await;
    let (coupon_http, point_http, timesale_http) = (free_port(), free_port(), free_port());
    let _roles = spawn(&[
        ("PROMO_ROLES", "coupon,point,timesale".to_string()),
        (
            "PROMO_COUPON__HTTP_ADDR",
            format!("127.0.0.1:{coupon_http}"),
        ),
        ("PROMO_COUPON__GRPC_ADDR", format!("127.0.0.1:{coupon}")),
        ("PROMO_COUPON__DATABASE_URL", coupon_url.clone()),
        ("PROMO_POINT__HTTP_ADDR", format!("127.0.0.1:{point_http}")),
        ("PROMO_POINT__GRPC_ADDR", format!("127.0.0.1:{point}")),
        (
            "PROMO_POINT__DATABASE_URL",
            fresh_db("splitidem_point").await,
        ),
        (
            "PROMO_TIMESALE__HTTP_ADDR",
            format!("127.0.0.1:{timesale_http}"),
        ),
        ("PROMO_TIMESALE__GRPC_ADDR", format!("127.0.0.1:{timesale}")),
        ("PROMO_TIMESALE__DATABASE_URL", timesale_url.clone()),
    ]);
    let gw = free_port();
    let _gateway = spawn(&[
        ("PROMO_ROLES", "gateway".to_string()),
        ("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{gw}")),
        (
            "PROMO_GATEWAY__DATABASE_URL",
            fresh_db("splitidem_gateway").await,
        ),
        (
            "PROMO_GATEWAY__COUPON_GRPC",
            format!("http://127.0.0.1:{coupon}"),
        ),
        (
            "PROMO_GATEWAY__POINT_GRPC",
            format!("http://127.0.0.1:{point}"),
        ),
        (
            "PROMO_GATEWAY__TIMESALE_GRPC",
            format!("http://127.0.0.1:{timesale}"),
        ),
        ("PROMO_GATEWAY__RATE_LIMIT__ENABLED", "false".to_string()),
    ]);
    let base = format!("http://127.0.0.1:{gw}");
    for port in [coupon_http, point_http, timesale_http] {
        wait_http(&format!("http://127.0.0.1:{port}/readyz")).await;
    }
    wait_http(&format!("{base}/readyz")).await;
    let keys = test_keys();
    let app = Split {
        base,
        client: reqwest::Client::new(),
        admin: admin_token(&keys),
        keys,
    };

    let now = chrono::Utc::now();
    let policy = |n: i64| {
        json!({
            "name": format!("split {n}"), "discount_type": "FIXED", "discount_value": 100,
            "total_quantity": n, "per_user_limit": 3,
            "valid_from": now - chrono::Duration::minutes(1),
            "valid_until": now + chrono::Duration::days(1),
        })
    };
    let (p1, p2) = (
        app.created("/coupon-policies", policy(10)).await["id"].clone(),
        app.created("/coupon-policies", policy(20)).await["id"].clone(),
    );
    let (_, token) = app.user();
    let coupon = app
        .replay_and_mismatch(
            "coupon issue",
            "/coupons/issue",
            &token,
            json!({"policy_id": p1}),
            json!({"policy_id": p2}),
        )
        .await;
    let db = sqlx::PgPool::connect(&coupon_url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupons")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1, "one coupon for one key: {coupon}");

    let product = app
        .created("/products", json!({"name": "split", "price": 1000}))
        .await;
    let sale = app
        .created(
            "/time-sales",
            json!({
                "product_id": product["id"], "total_quantity": 10, "sale_price": 700,
                "per_user_limit": 3,
                "start_at": now - chrono::Duration::minutes(1),
                "end_at": now + chrono::Duration::days(1),
            }),
        )
        .await;
    let (_, token) = app.user();
    app.replay_and_mismatch(
        "time-sale order",
        &format!("/time-sales/{}/orders", sale["id"].as_str().unwrap()),
        &token,
        json!({"quantity": 1}),
        json!({"quantity": 2}),
    )
    .await;
    let db = sqlx::PgPool::connect(&timesale_url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM time_sale_orders")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1, "one order for one key");

    let (user, token) = app.user();
    app.created("/points/earn", json!({"user_id": user, "amount": 100}))
        .await;
    app.replay_and_mismatch(
        "point use",
        "/points/use",
        &token,
        json!({"amount": 10}),
        json!({"amount": 11}),
    )
    .await;
    let req = api_request(&app.client, &app.base, Method::GET, "/points/balance");
    let (s, balance) = send_api(req, Some(&token), None, None).await;
    assert_eq!(s, 200, "{balance}");
    assert_eq!(balance["balance"], 90, "one use for one key: {balance}");

    // A point hold and its capture over gRPC: the hold, the balance's held
    // amount and the capture's hold_id cross the wire.
    let (user, token) = app.user();
    app.created("/points/earn", json!({"user_id": user, "amount": 90}))
        .await;
    let hold = app
        .replay_and_mismatch(
            "point hold",
            "/points/holds",
            &token,
            json!({"amount": 30, "reference": "cart"}),
            json!({"amount": 31}),
        )
        .await;
    let get = |path: String| {
        let req = api_request(&app.client, &app.base, Method::GET, &path);
        send_api(req, Some(&token), None, None)
    };
    let (_, balance) = get("/points/balance".into()).await;
    assert_eq!(
        (balance["available"].as_i64(), balance["held"].as_i64()),
        (Some(60), Some(30))
    );
    let hold_path = format!("/points/holds/{}", hold["id"].as_str().unwrap());
    let (s, used) = app
        .call(
            &format!("{hold_path}/capture"),
            &token,
            json!({"amount": 20}),
            None,
        )
        .await;
    assert_eq!((s, &used["hold_id"]), (201, &hold["id"]), "{used}");
    let (s, again) = app
        .call(&format!("{hold_path}/void"), &token, json!({}), None)
        .await;
    assert_eq!(
        (s, again["error"]["code"].as_str()),
        (409, Some("ALREADY_RESOLVED"))
    );
    let (_, now) = get(hold_path).await;
    assert_eq!(
        (now["status"].as_str(), now["captured_amount"].as_i64()),
        (Some("CAPTURED"), Some(20))
    );
    assert_eq!(now["transaction_id"], used["id"]);
    let (_, balance) = get("/points/balance".into()).await;
    assert_eq!(
        (balance["balance"].as_i64(), balance["held"].as_i64()),
        (Some(70), Some(0))
    );
}
