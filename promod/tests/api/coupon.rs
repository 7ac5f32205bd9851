//! Coupon behaviour through the gateway, against real PostgreSQL and Redis.

use super::helpers::{concurrently, hold_claim, spawn_app, tally};
use promo_store::stock::Kind;
use serde_json::json;
use std::sync::Arc;

async fn db_count(app: &super::helpers::TestApp, policy: uuid::Uuid) -> (i64, i64) {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupons WHERE policy_id = $1")
        .bind(policy)
        .fetch_one(&app.coupon_db)
        .await
        .unwrap();
    let (issued,): (i64,) =
        sqlx::query_as("SELECT issued_quantity FROM coupon_policies WHERE id = $1")
            .bind(policy)
            .fetch_one(&app.coupon_db)
            .await
            .unwrap();
    (count, issued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_of_a_thousand_concurrent_issues_succeed() {
    let app = Arc::new(spawn_app().await);
    let policy = app.create_policy(100, 1).await;
    let answers = concurrently(1000, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            app.post("/coupons/issue", &token, json!({"policy_id": policy}))
                .await
        }
    })
    .await;
    let (ok, sold_out) = tally(&answers, 201, (409, "SOLD_OUT"));
    assert_eq!((ok, sold_out), (100, 900));
    assert_eq!(db_count(&app, policy).await, (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_gets_exactly_the_per_user_limit() {
    let app = Arc::new(spawn_app().await);
    let policy = app.create_policy(1000, 2).await;
    let (_, token) = app.user_token();
    let token = Arc::new(token);
    let answers = concurrently(50, |_| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            app.post("/coupons/issue", &token, json!({"policy_id": policy}))
                .await
        }
    })
    .await;
    let (ok, _) = tally(&answers, 201, (409, "LIMIT_EXCEEDED"));
    assert_eq!(ok, 2);
    assert_eq!(db_count(&app, policy).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_and_cancels_succeed_once() {
    let app = Arc::new(spawn_app().await);
    let policy = app.create_policy(10, 1).await;
    let (_, token) = app.user_token();
    let (s, c) = app
        .post("/coupons/issue", &token, json!({"policy_id": policy}))
        .await;
    assert_eq!(s, 201);
    let id = c["id"].as_str().unwrap().to_owned();
    let token = Arc::new(token);
    let race = |path: String, body: serde_json::Value| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            concurrently(10, |_| {
                let (app, token, path, body) =
                    (app.clone(), token.clone(), path.clone(), body.clone());
                async move { app.post(&path, &token, body).await }
            })
            .await
        }
    };
    let uses = race(
        format!("/coupons/{id}/use"),
        json!({"order_id": "o-1", "order_amount": 20000}),
    )
    .await;
    let ok: Vec<_> = uses.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].1["discount_amount"], 2000);
    assert!(uses
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(_, b)| b["error"]["code"] == "ALREADY_USED"));
    let cancels = race(format!("/coupons/{id}/cancel"), json!({})).await;
    assert_eq!(cancels.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert!(cancels
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(_, b)| b["error"]["code"] == "ALREADY_CANCELLED"));
    let (s, c) = app.get(&format!("/coupons/{id}"), &token).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("AVAILABLE")));
}

#[tokio::test]
async fn use_rules_and_cross_user_access() {
    let app = spawn_app().await;
    let policy = app.create_policy(10, 1).await;
    let (_, alice) = app.user_token();
    let (_, bob) = app.user_token();
    let (_, c) = app
        .post("/coupons/issue", &alice, json!({"policy_id": policy}))
        .await;
    let id = c["id"].as_str().unwrap();
    let (s, b) = app
        .post(
            &format!("/coupons/{id}/use"),
            &alice,
            json!({"order_id": "o", "order_amount": 999}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("order_amount"))
    );
    let (s, _) = app
        .post(
            &format!("/coupons/{id}/use"),
            &bob,
            json!({"order_id": "o", "order_amount": 5000}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app.get(&format!("/coupons/{id}"), &bob).await;
    assert_eq!(s, 403);
    let (s, b) = app.get("/coupons?status=AVAILABLE", &bob).await;
    assert_eq!((s, b["total"].as_i64()), (200, Some(0)));
    let (s, b) = app.get("/coupons", &alice).await;
    assert_eq!((s, b["total"].as_i64()), (200, Some(1)));
    let (s, _) = app.post("/coupon-policies", &alice, json!({})).await;
    assert_eq!(s, 403, "users cannot reach admin routes");
    let (s, b) = app.get("/coupons/not-a-uuid", &alice).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    let (s, b) = app
        .post("/coupons/issue", &alice, json!({"policy_id": 5}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("policy_id")));
    let (s, b) = app.post("/coupons/issue", &alice, json!({})).await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("policy_id")));
}

#[tokio::test]
async fn idempotent_replay_and_mismatch() {
    let app = spawn_app().await;
    let policy = app.create_policy(10, 3).await;
    let (_, token) = app.user_token();
    let body = json!({"policy_id": policy});
    let post = |b: serde_json::Value| {
        app.call(
            reqwest::Method::POST,
            "/coupons/issue",
            Some(&token),
            Some(b),
            Some("key-1"),
        )
    };
    let (s1, b1) = post(body.clone()).await;
    let (s2, b2) = post(body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(b1, b2, "a replay returns the first body");
    assert_eq!(db_count(&app, policy).await, (1, 1));
    let other = app.create_policy(10, 1).await;
    let (s, b) = post(json!({"policy_id": other})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("IDEMPOTENCY_MISMATCH"))
    );
}

#[tokio::test]
async fn lost_counters_are_rebuilt_from_postgres() {
    let app = spawn_app().await;
    let policy = app.create_policy(3, 1).await;
    for _ in 0..2 {
        let (_, t) = app.user_token();
        assert_eq!(
            app.post("/coupons/issue", &t, json!({"policy_id": policy}))
                .await
                .0,
            201
        );
    }
    // Redis loses the counters (a flush or a restart of Redis).
    let mut r = promo_store::cache::connect(&super::helpers::redis_url())
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(promo_store::keys::coupon_remaining(policy))
        .arg(promo_store::keys::coupon_users(policy))
        .query_async(&mut r)
        .await
        .unwrap();
    let mut ok = 0;
    for _ in 0..5 {
        let (_, t) = app.user_token();
        if app
            .post("/coupons/issue", &t, json!({"policy_id": policy}))
            .await
            .0
            == 201
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "only the one slot PostgreSQL still had");
    assert_eq!(db_count(&app, policy).await, (3, 3));
}

#[tokio::test]
async fn a_failed_insert_after_admission_is_compensated() {
    let app = spawn_app().await;
    let policy = app.create_policy(2, 1).await;
    // Make every coupon insert fail after Redis admitted it.
    sqlx::query("ALTER TABLE coupons ADD CONSTRAINT break_inserts CHECK (false) NOT VALID")
        .execute(&app.coupon_db)
        .await
        .unwrap();
    let (_, t) = app.user_token();
    let (s, _) = app
        .post("/coupons/issue", &t, json!({"policy_id": policy}))
        .await;
    assert!(s >= 400);
    sqlx::query("ALTER TABLE coupons DROP CONSTRAINT break_inserts")
        .execute(&app.coupon_db)
        .await
        .unwrap();
    // Both slots are still there, and the same user can still get one.
    assert_eq!(
        app.post("/coupons/issue", &t, json!({"policy_id": policy}))
            .await
            .0,
        201
    );
    let (_, t2) = app.user_token();
    assert_eq!(
        app.post("/coupons/issue", &t2, json!({"policy_id": policy}))
            .await
            .0,
        201
    );
    assert_eq!(db_count(&app, policy).await, (2, 2));
}

#[tokio::test]
async fn policy_patch_never_goes_below_issued_and_events_are_written() {
    let app = spawn_app().await;
    let policy = app.create_policy(5, 1).await;
    for _ in 0..2 {
        let (_, t) = app.user_token();
        app.post("/coupons/issue", &t, json!({"policy_id": policy}))
            .await;
    }
    let path = format!("/coupon-policies/{policy}");
    let patch = |b| {
        app.call(
            reqwest::Method::PATCH,
            &path,
            Some(&app.admin),
            Some(b),
            None,
        )
    };
    let (s, b) = patch(json!({"total_quantity": 1})).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("total_quantity"))
    );
    let (s, b) = patch(json!({"total_quantity": 2})).await;
    assert_eq!((s, b["remaining_quantity"].as_i64()), (200, Some(0)));
    let (_, t) = app.user_token();
    let (s, b) = app
        .post("/coupons/issue", &t, json!({"policy_id": policy}))
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("SOLD_OUT")));
    let (s, _) = patch(json!({"active": false})).await;
    assert_eq!(s, 200);
    let (events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE topic = 'coupon.issued'")
            .fetch_one(&app.coupon_db)
            .await
            .unwrap();
    assert_eq!(events, 2, "one event per issued coupon, written with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validity_window_follows_the_injected_clock() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let (s, p) = app
        .post(
            "/coupon-policies",
            &app.admin,
            json!({
                "name": "tomorrow", "discount_type": "FIXED", "discount_value": 500,
                "total_quantity": 10,
                "valid_from": now + chrono::Duration::days(1),
                "valid_until": now + chrono::Duration::days(2),
            }),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let body = json!({"policy_id": p["id"]});
    let (_, token) = app.user_token();
    let (s, b) = app.post("/coupons/issue", &token, body.clone()).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")));
    app.clock.advance(chrono::Duration::hours(25));
    let (s, b) = app.post("/coupons/issue", &token, body.clone()).await;
    assert_eq!(s, 201, "{b}");
    app.clock.advance(chrono::Duration::days(1));
    let (_, late) = app.user_token();
    let (s, b) = app.post("/coupons/issue", &late, body).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")));
}

/// Two coupon-role processes (two promods on one coupon database and one
/// Redis) issuing against the same policy: the shared admission script and
/// the database constraints hold across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coupon_processes_never_oversell_one_policy() {
    let a = Arc::new(spawn_app().await);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&a.coupon_db)
        .await
        .unwrap();
    let url = format!("{}/{db}", super::helpers::pg_base());
    let b = Arc::new(super::helpers::spawn_app_with(|c| c.coupon.database_url = url).await);
    let policy = a.create_policy(100, 2).await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (_, token) = a.user_token();
        tasks.push(tokio::spawn(async move {
            app.post("/coupons/issue", &token, json!({"policy_id": policy}))
                .await
        }));
    }
    // One user on both processes at once: at most per_user_limit in all.
    let (_, greedy) = a.user_token();
    let greedy = Arc::new(greedy);
    for i in 0..20 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = greedy.clone();
        tasks.push(tokio::spawn(async move {
            app.post("/coupons/issue", &token, json!({"policy_id": policy}))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            201 => ok += 1,
            409 => assert!(
                ["SOLD_OUT", "LIMIT_EXCEEDED"].contains(&b["error"]["code"].as_str().unwrap()),
                "{b}"
            ),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 100, "exactly the total, across both processes");
    assert_eq!(db_count(&a, policy).await, (100, 100));
    let (most,): (i64,) = sqlx::query_as(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM coupons WHERE policy_id = $1 GROUP BY user_id) t",
    )
    .bind(policy)
    .fetch_one(&a.coupon_db)
    .await
    .unwrap();
    assert!(most <= 2, "a user holds {most} coupons");
}

#[tokio::test]
async fn a_retry_while_its_first_attempt_runs_is_asked_to_wait_not_refused() {
    let app = spawn_app().await;
    let policy = app.create_policy(1, 1).await;
    let (_, other) = app.user_token();
    assert_eq!(
        app.post("/coupons/issue", &other, json!({"policy_id": policy}))
            .await
            .0,
        201
    );
    // Sold out now; a's first attempt (key k) "holds" the last coupon.
    let (a, token) = app.user_token();
    let issue = |key: &'static str| {
        app.call(
            reqwest::Method::POST,
            "/coupons/issue",
            Some(&token),
            Some(json!({"policy_id": policy})),
            Some(key),
        )
    };
    hold_claim(Kind::Coupon, policy, a, "k", true).await;
    let (s, b) = issue("k").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{b}"
    );
    // Once it is done (here: without an answer), the retry is decided.
    hold_claim(Kind::Coupon, policy, a, "k", false).await;
    let (s, b) = issue("k").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("SOLD_OUT")),
        "{b}"
    );
    assert_eq!(db_count(&app, policy).await, (1, 1));

    // A claim left behind by an attempt that did answer: the answer is replayed.
    let roomy = app.create_policy(5, 1).await;
    let (b_user, b_token) = app.user_token();
    let post = || {
        app.call(
            reqwest::Method::POST,
            "/coupons/issue",
            Some(&b_token),
            Some(json!({"policy_id": roomy})),
            Some("k2"),
        )
    };
    let first = post().await;
    assert_eq!(first.0, 201);
    hold_claim(Kind::Coupon, roomy, b_user, "k2", true).await;
    assert_eq!(post().await, first);
    hold_claim(Kind::Coupon, roomy, b_user, "k2", false).await;
    assert_eq!(db_count(&app, roomy).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rebuilds_install_every_user_once() {
    use promo_store::counters::{install, CounterSeed};
    let url = super::helpers::redis_url();
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(promo_store::cache::connect(&url).await.unwrap());
    }
    let seed = Arc::new(CounterSeed {
        remaining: 5,
        users: (0..300).map(|_| (uuid::Uuid::new_v4(), 3)).collect(),
    });
    // As when many requests find the counter gone at once; the interleaving
    // that lost users is timing-dependent, so try many times.
    for _ in 0..30 {
        let policy = uuid::Uuid::new_v4();
        let keys = move || promo_store::stock::Kind::Coupon.keys(policy);
        let tasks: Vec<_> = conns
            .iter()
            .map(|c| {
                let (c, seed) = (c.clone(), seed.clone());
                tokio::spawn(async move { install(&c, keys(), &seed, false).await.unwrap() })
            })
            .collect();
        let mut installed = 0;
        for t in tasks {
            installed += t.await.unwrap() as usize;
        }
        assert_eq!(installed, 1);
        let mut conn = conns[0].clone();
        let users: i64 = redis::cmd("HLEN")
            .arg(promo_store::keys::coupon_users(policy))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(users, 300, "every user's count is installed");
        let ttl: i64 = redis::cmd("TTL")
            .arg(promo_store::keys::coupon_users(policy))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "the live hash does not expire");
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!(
                "{}*",
                promo_store::keys::coupon_users_staging(policy)
            ))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left.is_empty(), "staging left behind: {left:?}");
    }
}
