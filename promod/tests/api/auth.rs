//! Auth routes against gateway_db, and the tokens that must be refused.

use super::helpers::{get_status, openapi_paths, spawn_app, SECRET};
use serde_json::json;

#[tokio::test]
async fn register_login_refresh_rotation_reuse_and_logout() {
    let app = spawn_app().await;
    let none = None::<&str>;
    let email = format!("u{}@example.com", uuid::Uuid::new_v4().simple());
    let (s, u) = app
        .call(
            reqwest::Method::POST,
            "/auth/register",
            none,
            Some(json!({"email": email, "password": "password1", "name": "U"})),
            None,
        )
        .await;
    assert_eq!((s, u["role"].as_str()), (201, Some("user")));
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/auth/register",
            none,
            Some(json!({"email": email.to_uppercase(), "password": "password1", "name": "U"})),
            None,
        )
        .await;
    assert_eq!(s, 409, "emails are unique regardless of case");
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/auth/register",
            none,
            Some(json!({"email": "x@y.z", "password": "short", "name": "U"})),
            None,
        )
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("password")));
    let login = |pw: &'static str| {
        app.call(
            reqwest::Method::POST,
            "/auth/login",
            none,
            Some(json!({"email": email, "password": pw})),
            None,
        )
    };
    assert_eq!(login("wrong-password").await.0, 401);
    let (s, pair) = login("password1").await;
    assert_eq!(s, 200);
    let access = pair["access_token"].as_str().unwrap();
    let (s, p) = app.get("/auth/profile", access).await;
    assert_eq!((s, p["email"].as_str()), (200, Some(email.as_str())));

    let refresh = |t: &str| {
        app.call(
            reqwest::Method::POST,
            "/auth/refresh",
            none,
            Some(json!({"refresh_token": t})),
            None,
        )
    };
    let first = pair["refresh_token"].as_str().unwrap().to_owned();
    let (s, pair2) = refresh(&first).await;
    assert_eq!(s, 200);
    let second = pair2["refresh_token"].as_str().unwrap().to_owned();
    // Reusing the rotated token revokes the family, including the new token.
    assert_eq!(refresh(&first).await.0, 401);
    assert_eq!(refresh(&second).await.0, 401);

    let (_, pair3) = login("password1").await;
    let third = pair3["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/auth/logout",
            none,
            Some(json!({"refresh_token": third})),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(refresh(&third).await.0, 401);
}

#[tokio::test]
async fn bad_tokens_get_401() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: Option<i64>| {
        let mut c = json!({"sub": uuid::Uuid::new_v4(), "role": "admin", "iat": now, "jti": uuid::Uuid::new_v4()});
        if let Some(e) = exp {
            c["exp"] = json!(e);
        }
        c
    };
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let expired = encode(
        &Header::new(Algorithm::HS256),
        &claims(Some(now - 10)),
        &key,
    )
    .unwrap();
    let no_exp = encode(&Header::new(Algorithm::HS256), &claims(None), &key).unwrap();
    let other_alg = encode(
        &Header::new(Algorithm::HS512),
        &claims(Some(now + 60)),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &claims(Some(now + 60)),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    let good = encode(
        &Header::new(Algorithm::HS256),
        &claims(Some(now + 60)),
        &key,
    )
    .unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged_payload = b64.encode(r#"{"sub":"00000000-0000-0000-0000-000000000001","role":"admin","exp":9999999999,"iat":1,"jti":"00000000-0000-0000-0000-000000000002"}"#);
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        forged_payload
    );
    for (name, t) in [
        ("expired", expired),
        ("no exp", no_exp),
        ("hs512", other_alg),
        ("other key", other_key),
        ("tampered", tampered),
        ("alg none", alg_none),
    ] {
        let (s, b) = app.get("/coupon-policies", &t).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{name}"
        );
    }
    assert_eq!(app.get("/coupon-policies", &good).await.0, 200);
    assert_eq!(
        app.call(reqwest::Method::GET, "/coupon-policies", None, None, None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn ops_routes_and_openapi() {
    let app = spawn_app().await;
    for base in [&app.base, &app.coupon_base] {
        assert_eq!(
            get_status(&app.client, &format!("{base}/healthz")).await,
            200
        );
        assert_eq!(
            get_status(&app.client, &format!("{base}/readyz")).await,
            200
        );
    }
    app.get("/coupon-policies", &app.admin).await;
    let m = app.metrics().await;
    assert!(m.contains("promo_http_requests_total"), "{m}");
    assert!(m.contains("role=\"gateway\""));
    let paths = openapi_paths(&app.client, &app.base).await;
    // Every route of API.md, with its method.
    for (method, p) in [
        ("post", "/auth/register"),
        ("post", "/auth/login"),
        ("post", "/auth/refresh"),
        ("post", "/auth/logout"),
        ("get", "/auth/profile"),
        ("post", "/coupon-policies"),
        ("get", "/coupon-policies"),
        ("get", "/coupon-policies/{id}"),
        ("patch", "/coupon-policies/{id}"),
        ("post", "/coupons/issue"),
        ("post", "/coupons/{id}/use"),
        ("post", "/coupons/{id}/cancel"),
        ("get", "/coupons"),
        ("get", "/coupons/{id}"),
        ("post", "/points/earn"),
        ("post", "/points/use"),
        ("post", "/points/transactions/{id}/cancel"),
        ("get", "/points/balance"),
        ("get", "/points/history"),
        ("post", "/points/holds"),
        ("get", "/points/holds/{id}"),
        ("post", "/points/holds/{id}/capture"),
        ("post", "/points/holds/{id}/void"),
        ("post", "/products"),
        ("get", "/products"),
        ("get", "/products/{id}"),
        ("post", "/time-sales"),
        ("get", "/time-sales"),
        ("get", "/time-sales/{id}"),
        ("patch", "/time-sales/{id}"),
        ("post", "/time-sales/{id}/orders"),
        ("get", "/orders"),
        ("get", "/orders/{id}"),
        ("post", "/orders/{id}/cancel"),
        // v1.1: holds
        ("post", "/orders/{id}/confirm"),
        ("post", "/coupons/{id}/reserve"),
        // v1.1: coupon codes
        ("post", "/coupon-policies/{id}/codes"),
        ("get", "/coupon-policies/{id}/codes"),
        ("get", "/coupon-policies/{id}/codes/export"),
        ("post", "/coupons/redeem"),
    ] {
        let path = format!("/api/v1{p}");
        assert!(
            paths.get(&path).and_then(|o| o.get(method)).is_some(),
            "{method} {path} missing from openapi"
        );
    }
    let docs = format!("{}/api/docs/", app.base);
    assert_eq!(get_status(&app.client, &docs).await, 200);
    let nope = format!("{}/nope", app.base);
    assert_eq!(get_status(&app.client, &nope).await, 404);
}
