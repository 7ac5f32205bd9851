//! Authorization on every owner-scoped and admin route of API.md: user B can
//! neither see nor touch what belongs to user A, users never reach admin
//! routes, and nothing answers without a token.

use super::helpers::{id, spawn_all_roles};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_reach_each_others_things_nor_admin_routes() {
    let app = spawn_all_roles().await;
    let (a, a_token) = app.user_token();
    let (_, b_token) = app.user_token();

    // A's things: a coupon, a point transaction, an order.
    let policy = app.create_policy(10, 1).await;
    let coupon = app
        .created_by("/coupons/issue", &a_token, json!({"policy_id": policy}))
        .await;
    app.created("/points/earn", json!({"user_id": a, "amount": 100}))
        .await;
    let used = app
        .created_by("/points/use", &a_token, json!({"amount": 10}))
        .await;
    let (_, sale) = app.product_on_sale(5, 1).await;
    let order = app
        .created_by(
            &format!("/time-sales/{}/orders", id(&sale)),
            &a_token,
            json!({"quantity": 1}),
        )
        .await;

    let (c, t, o, p, sl) = (id(&coupon), id(&used), id(&order), policy, id(&sale));
    let owner_scoped: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/coupons/{c}"), None),
        (
            Method::POST,
            format!("/coupons/{c}/use"),
            Some(json!({"order_id": "o-1", "order_amount": 5000})),
        ),
        (
            Method::POST,
            format!("/coupons/{c}/cancel"),
            Some(json!({})),
        ),
        (Method::GET, format!("/coupons?user_id={a}"), None),
        (
            Method::POST,
            "/coupons/issue".into(),
            Some(json!({"policy_id": p, "user_id": a})),
        ),
        (
            Method::POST,
            format!("/points/transactions/{t}/cancel"),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/points/use".into(),
            Some(json!({"amount": 1, "user_id": a})),
        ),
        (Method::GET, format!("/points/balance?user_id={a}"), None),
        (Method::GET, format!("/points/history?user_id={a}"), None),
        (Method::GET, format!("/orders/{o}"), None),
        (Method::GET, format!("/orders?user_id={a}"), None),
        (
            Method::POST,
            format!("/time-sales/{sl}/orders"),
            Some(json!({"quantity": 1, "user_id": a})),
        ),
        (Method::POST, format!("/orders/{o}/cancel"), Some(json!({}))),
    ];
    for (m, path, body) in &owner_scoped {
        let (s, b) = app
            .call(m.clone(), path, Some(&b_token), body.clone(), None)
            .await;
        assert_eq!(s, 403, "{m} {path} as another user: {b}");
        assert_eq!(b["error"]["code"], "FORBIDDEN", "{m} {path}");
        let (s, _) = app.call(m.clone(), path, None, body.clone(), None).await;
        assert_eq!(s, 401, "{m} {path} without a token");
    }
    // Lists show only the caller's own things.
    for path in ["/coupons", "/points/history", "/orders"] {
        let (s, b) = app.get(path, &b_token).await;
        assert_eq!((s, &b["total"]), (200, &json!(0)), "{path}: {b}");
    }
    let (_, bal) = app.get("/points/balance", &b_token).await;
    assert_eq!(bal["balance"], 0);

    let admin_only: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/coupon-policies".into(), json!({})),
        (
            Method::PATCH,
            format!("/coupon-policies/{p}"),
            json!({"total_quantity": 1000}),
        ),
        (
            Method::POST,
            "/points/earn".into(),
            json!({"user_id": a, "amount": 5}),
        ),
        (
            Method::POST,
            "/products".into(),
            json!({"name": "x", "price": 5}),
        ),
        (Method::POST, "/time-sales".into(), json!({})),
        (
            Method::PATCH,
            format!("/time-sales/{sl}"),
            json!({"status": "CANCELLED"}),
        ),
    ];
    for (m, path, body) in &admin_only {
        let (s, b) = app
            .call(m.clone(), path, Some(&a_token), Some(body.clone()), None)
            .await;
        assert_eq!(
            (s, &b["error"]["code"]),
            (403, &json!("FORBIDDEN")),
            "{m} {path}"
        );
    }

    // Nothing changed: A's coupon is still AVAILABLE, the order CONFIRMED,
    // the balance 90, the policy's total 10, the sale not cancelled.
    let (_, cpn) = app.get(&format!("/coupons/{c}"), &a_token).await;
    assert_eq!(cpn["status"], "AVAILABLE");
    let (_, ord) = app.get(&format!("/orders/{o}"), &a_token).await;
    assert_eq!(ord["status"], "CONFIRMED");
    let (_, orders) = app.get("/orders", &a_token).await;
    assert_eq!(orders["total"], 1, "no order was placed for A: {orders}");
    let (_, coupons) = app.get("/coupons", &a_token).await;
    assert_eq!(coupons["total"], 1, "no coupon was issued to A: {coupons}");
    let (_, bal) = app.get("/points/balance", &a_token).await;
    assert_eq!(bal["balance"], 90);
    let (_, pol) = app.get(&format!("/coupon-policies/{p}"), &a_token).await;
    assert_eq!(pol["total_quantity"], 10);
    let (_, s) = app.get(&format!("/time-sales/{sl}"), &a_token).await;
    assert_ne!(s["status"], "CANCELLED");
}
