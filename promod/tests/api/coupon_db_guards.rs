//! Pin (issue 17): PostgreSQL's constraints on coupons are the last line of
//! defence. When Redis admits what it should not (it forgot a user's coupons,
//! or believes more remain than do), the database refuses, and no policy ever
//! holds more than its total or a user more than the per-user limit.
//! (The time-sale twin is `timesale::the_database_refuses_what_a_wrong_redis_admits`.)

use super::helpers::{spawn_app, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// Redis, reached by the counters' key names: the one place this test
/// depends on promod's internals.
struct Counters {
    redis: promo_store::cache::Redis,
    policy: Uuid,
}

impl Counters {
    async fn remaining(&self) -> i64 {
        let mut c = self.redis.clone();
        redis::cmd("GET")
            .arg(promo_store::keys::coupon_remaining(self.policy))
            .query_async(&mut c)
            .await
            .unwrap()
    }

    async fn set_remaining(&self, n: i64) {
        let mut c = self.redis.clone();
        let _: () = redis::cmd("SET")
            .arg(promo_store::keys::coupon_remaining(self.policy))
            .arg(n)
            .query_async(&mut c)
            .await
            .unwrap();
    }

    /// Redis forgets how many coupons `user` holds.
    async fn forget_user(&self, user: Uuid) {
        let mut c = self.redis.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(promo_store::keys::coupon_users(self.policy))
            .arg(user.to_string())
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(removed, 1, "redis held {user}'s coupons under this key");
    }
}

async fn issue(app: &TestApp, token: &str, policy: Uuid) -> (u16, Value) {
    app.post("/coupons/issue", token, json!({"policy_id": policy}))
        .await
}

fn refused(what: &str, (s, b): &(u16, Value), code: &str) {
    assert_eq!(
        (*s, b["error"]["code"].as_str()),
        (409, Some(code)),
        "{what}: {b}"
    );
}

/// (coupons, issued_quantity, most coupons one user holds) in PostgreSQL.
async fn stored(app: &TestApp, policy: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM coupons WHERE policy_id = $1),
                (SELECT issued_quantity FROM coupon_policies WHERE id = $1),
                (SELECT coalesce(max(n), 0) FROM
                   (SELECT count(*) AS n FROM coupons WHERE policy_id = $1 GROUP BY user_id) t)",
    )
    .bind(policy)
    .fetch_one(&app.coupon_db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_coupons_a_wrong_redis_admits() {
    let app = Arc::new(spawn_app().await);
    let policy = app.create_policy(5, 2).await;
    let redis = Counters {
        redis: promo_store::cache::connect(&super::helpers::redis_url())
            .await
            .unwrap(),
        policy,
    };
    let (a, a_token) = app.user_token();
    for _ in 0..2 {
        let (s, b) = issue(&app, &a_token, policy).await;
        assert_eq!(s, 201, "{b}");
    }
    // Redis forgot that user A holds 2: the database refuses a third.
    redis.forget_user(a).await;
    refused(
        "a third for A",
        &issue(&app, &a_token, policy).await,
        "LIMIT_EXCEEDED",
    );
    assert_eq!(
        redis.remaining().await,
        3,
        "the total's slot was real and came back"
    );

    for _ in 0..3 {
        let (_, t) = app.user_token();
        let (s, b) = issue(&app, &t, policy).await;
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(stored(&app, policy).await, (5, 5, 2));

    // Redis believes more remain than do, and forgot A again: concurrent
    // issues (new users and A) are all refused by the database.
    redis.set_remaining(50).await;
    redis.forget_user(a).await;
    let a_token = Arc::new(a_token);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (app, a_token) = (app.clone(), a_token.clone());
        tasks.push(tokio::spawn(async move {
            let token = if i % 4 == 0 {
                a_token.to_string()
            } else {
                app.user_token().1
            };
            issue(&app, &token, policy).await
        }));
    }
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, 409, "a coupon beyond the truth was issued: {b}");
        let code = b["error"]["code"].as_str().unwrap_or_default();
        assert!(code == "SOLD_OUT" || code == "LIMIT_EXCEEDED", "{b}");
    }
    // Redis admitted some (a database SOLD_OUT keeps the taken stock), so
    // the refusals above were the database's, not Redis's.
    assert!(redis.remaining().await < 50, "redis admitted nothing");
    assert_eq!(
        stored(&app, policy).await,
        (5, 5, 2),
        "never more than the total, nor more than the limit for a user"
    );
}
