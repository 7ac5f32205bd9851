//! Rate limiting through the gateway, with buckets in the real Redis.

use super::helpers::{limit_logins, spawn_app_with};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_limit_gets_429_then_the_bucket_refills() {
    let app = spawn_app_with(|c| {
        c.gateway.rate_limit.enabled = true;
        c.gateway.rate_limit.user_burst = 3;
        c.gateway.rate_limit.user_per_sec = 2.0;
    })
    .await;
    let (_, token) = app.user_token();
    let url = format!("{}/api/v1/points/balance", app.base);
    let balance = |token: &str| app.client.get(&url).bearer_auth(token).send();
    for left in (0..3).rev() {
        let r = balance(&token).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            left.to_string().as_str()
        );
    }
    let r = balance(&token).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // Another user has their own bucket.
    let (_, other) = app.user_token();
    let r = balance(&other).await.unwrap();
    assert_eq!(r.status(), 200);
    // 2 tokens per second: one is back after ~0.5 s.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let r = balance(&token).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_limited_per_client_ip_from_trusted_proxies_only() {
    let app = spawn_app_with(|c| limit_logins(c, &["127.0.0.1"])).await;
    // The test client is the "proxy"; each test run uses fresh client ips.
    let ip = |n: u8| format!("203.0.{}.{n}", rand::random::<u8>());
    let (a, b) = (ip(1), ip(2));
    let login = |client_ip: String| {
        app.client
            .post(format!("{}/api/v1/auth/login", app.base))
            .header("x-forwarded-for", format!("6.6.6.6, {client_ip}"))
            .json(&json!({"email": "nobody@example.com", "password": "wrong-password"}))
            .send()
    };
    assert_eq!(login(a.clone()).await.unwrap().status(), 401);
    assert_eq!(login(a.clone()).await.unwrap().status(), 401);
    let r = login(a.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // The spoofable left-most hop is not the key: a different client is not limited.
    assert_eq!(login(b).await.unwrap().status(), 401);
}
