//! Roles in separate processes: the real binary, real etcd. The gateway finds
//! coupon instances through etcd, notices one leaving and a new one arriving.
//! Also the start-up failures that must be one clear line and a non-zero exit.

use super::helpers::{admin_token, free_port, fresh_db, get_text, test_keys};
use super::procs::{etcd_gateway, etcd_role_env, promod, spawn_process as spawn, wait_http};
use std::time::{Duration, Instant};

fn coupon_env(prefix: &str, db: &str) -> (Vec<(&'static str, String)>, u16) {
    let http = free_port();
    (etcd_role_env("coupon", prefix, db, http), http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_follows_coupon_instances_through_etcd() {
    let prefix = format!("/promo-test/{}", uuid::Uuid::new_v4().simple());
    let coupon_db = fresh_db("split_coupon").await;
    let (env_a, http_a) = coupon_env(&prefix, &coupon_db);
    let a = spawn(&env_a);
    wait_http(&format!("http://127.0.0.1:{http_a}/readyz")).await;

    let (_gw, base) = etcd_gateway(&prefix).await;

    let admin = admin_token(&test_keys());
    let client = reqwest::Client::new();
    let list = || {
        client
            .get(format!("{base}/api/v1/coupon-policies"))
            .bearer_auth(&admin)
            .send()
    };
    let status_until = |want: u16| {
        let list = &list;
        async move {
            let start = Instant::now();
            loop {
                let s = list().await.map(|r| r.status().as_u16()).unwrap_or(0);
                if s == want {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "never saw {want}, last {s}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    status_until(200).await;

    // The only instance goes away: the gateway answers 503, not a hang or a 500.
    drop(a);
    status_until(503).await;
    let body: serde_json::Value = list().await.unwrap().json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap().to_owned();
    assert!(code == "UNAVAILABLE" || code == "CIRCUIT_OPEN", "{body}");

    // A new instance registers: the gateway finds it without a restart.
    let (env_b, http_b) = coupon_env(&prefix, &coupon_db);
    let _b = spawn(&env_b);
    wait_http(&format!("http://127.0.0.1:{http_b}/readyz")).await;
    status_until(200).await;
}

fn run_to_exit(envs: &[(&str, String)], args: &[&str]) -> (i32, String) {
    let out = promod(envs, args).output().expect("run promod");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_starts_are_one_clear_line_and_a_nonzero_exit() {
    let (code, err) = run_to_exit(&[], &["--roles", "gateway,bogus"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown role `bogus`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let cfg = std::env::temp_dir().join(format!("bad-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&cfg, "roles = [\n").unwrap();
    let (code, err) = run_to_exit(&[], &["--config", cfg.to_str().unwrap()]);
    let _ = std::fs::remove_file(&cfg);
    assert_ne!(code, 0);
    assert!(err.contains("malformed toml"), "{err}");

    let (code, err) = run_to_exit(
        &[(
            "PROMO_COUPON__DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nowhere".into(),
        )],
        &["--roles", "coupon"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to postgres"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, err) = run_to_exit(
        &[
            ("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("PROMO_GATEWAY__DATABASE_URL", fresh_db("portcheck").await),
        ],
        &["--roles", "gateway"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("port in use"), "{err}");
    assert_eq!(
        err.trim().lines().filter(|l| l.contains("promod:")).count(),
        1,
        "{err}"
    );
}

/// One service role process dies: its breaker opens (503 CIRCUIT_OPEN, and
/// the state gauge says open) while the other service keeps answering; when
/// the role comes back on its address, the half-open probe closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_role_opens_its_breaker_only_and_recovery_closes_it() {
    let (coupon_grpc, point_grpc, gw_port) = (free_port(), free_port(), free_port());
    let coupon_env = vec![
        ("PROMO_ROLES", "coupon".to_string()),
        (
            "PROMO_COUPON__HTTP_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "PROMO_COUPON__GRPC_ADDR",
            format!("127.0.0.1:{coupon_grpc}"),
        ),
        ("PROMO_COUPON__DATABASE_URL", fresh_db("brk_coupon").await),
    ];
    let point_http = free_port();
    let _point = spawn(&[
        ("PROMO_ROLES", "point".to_string()),
        ("PROMO_POINT__HTTP_ADDR", format!("127.0.0.1:{point_http}")),
        ("PROMO_POINT__GRPC_ADDR", format!("127.0.0.1:{point_grpc}")),
        ("PROMO_POINT__DATABASE_URL", fresh_db("brk_point").await),
    ]);
    let coupon = spawn(&coupon_env);
    let _gw = spawn(&[
        ("PROMO_ROLES", "gateway".to_string()),
        ("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{gw_port}")),
        ("PROMO_GATEWAY__DATABASE_URL", fresh_db("brk_gateway").await),
        (
            "PROMO_GATEWAY__COUPON_GRPC",
            format!("http://127.0.0.1:{coupon_grpc}"),
        ),
        (
            "PROMO_GATEWAY__POINT_GRPC",
            format!("http://127.0.0.1:{point_grpc}"),
        ),
        ("PROMO_GATEWAY__RATE_LIMIT__ENABLED", "false".to_string()),
        ("PROMO_GATEWAY__BREAKER__MIN_REQUESTS", "3".to_string()),
        (
            "PROMO_GATEWAY__BREAKER__RESET_TIMEOUT_SECS",
            "1".to_string(),
        ),
    ]);
    let base = format!("http://127.0.0.1:{gw_port}");
    wait_http(&format!("{base}/healthz")).await;
    wait_http(&format!("http://127.0.0.1:{point_http}/readyz")).await;
    let admin = admin_token(&test_keys());
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let req = client
            .get(format!("{base}/api/v1{path}"))
            .bearer_auth(&admin);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let until = |path: &'static str, want: (u16, &'static str)| {
        let get = &get;
        async move {
            let start = Instant::now();
            loop {
                let got = get(path).await;
                if got.0 == want.0 && got.1 == want.1 {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "never saw {want:?} on {path}, last {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The state gauge: 1 open, 0 closed.
    let coupon_breaker_is = |state: u8, what: &'static str| {
        let (client, url) = (&client, format!("{base}/metrics"));
        async move {
            let metrics = get_text(client, &url).await;
            let line = format!("promo_circuit_state{{service=\"coupon\"}} {state}");
            assert!(
                metrics.lines().any(|l| l.starts_with(&line)),
                "coupon breaker {what}:\n{metrics}"
            );
        }
    };
    let balance = "/points/balance?user_id=00000000-0000-0000-0000-000000000001";
    until("/coupon-policies", (200, "")).await;
    until(balance, (200, "")).await;

    drop(coupon);
    until("/coupon-policies", (503, "CIRCUIT_OPEN")).await;
    coupon_breaker_is(1, "open in the metrics").await;
    assert_eq!(
        get(balance).await,
        (200, String::new()),
        "point still answers"
    );

    let _coupon_again = spawn(&coupon_env);
    until("/coupon-policies", (200, "")).await;
    coupon_breaker_is(0, "closed again").await;
}
