//! Point holds (API.md "Holds") through the gateway, against real PostgreSQL
//! and Redis, with the injectable clock: what a hold reserves, capture, void,
//! expiry by the sweeper, and that every hold resolves exactly once.

use super::helpers::{concurrently, spawn_app, spawn_app_with, TestApp};
use chrono::Duration;
use promo_domain::clock::{Clock, SharedClock};
use promod::point::{Limits, PointService};
use promod::sweep::Expire;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// The resolution events of holds; each hold gets exactly one.
const RESOLUTIONS: &str = "('point.hold_captured', 'point.hold_voided', 'point.hold_expired')";

impl TestApp {
    /// (balance, available, held) of the token's user, as the API shows them.
    async fn funds(&self, token: &str) -> (i64, i64, i64) {
        let (s, b) = self.get("/points/balance", token).await;
        assert_eq!(s, 200, "{b}");
        let n = |f: &str| b[f].as_i64().unwrap_or_else(|| panic!("no {f} in {b}"));
        (n("balance"), n("available"), n("held"))
    }

    /// A pending hold of `amount` for the token's user.
    async fn hold(&self, token: &str, amount: i64) -> Value {
        let b = self
            .created_by("/points/holds", token, json!({"amount": amount}))
            .await;
        assert_eq!(b["status"], "PENDING", "{b}");
        b
    }

    async fn hold_call(&self, hold: &Value, verb: &str, token: &str, body: Value) -> (u16, Value) {
        let path = format!("/points/holds/{}/{verb}", hold["id"].as_str().unwrap());
        self.post(&path, token, body).await
    }

    async fn hold_now(&self, hold: &Value, token: &str) -> Value {
        let (s, b) = self
            .get(
                &format!("/points/holds/{}", hold["id"].as_str().unwrap()),
                token,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn outbox_count(&self, topics: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM outbox WHERE topic IN {topics}"
        ))
        .fetch_one(&self.point_db)
        .await
        .unwrap()
    }

    /// `held` of every balance row is the sum of its user's pending holds,
    /// and the ledger sums to the balance.
    async fn assert_hold_invariants(&self) {
        let bad: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT b.user_id, b.held, coalesce(p.s, 0)::bigint FROM point_balances b
             LEFT JOIN (SELECT user_id, sum(amount) AS s FROM point_holds
                        WHERE status = 'PENDING' GROUP BY user_id) p ON p.user_id = b.user_id
             WHERE b.held IS DISTINCT FROM coalesce(p.s, 0) OR b.held > b.balance",
        )
        .fetch_all(&self.point_db)
        .await
        .unwrap();
        assert!(bad.is_empty(), "held disagrees with the holds: {bad:?}");
        self.assert_ledger_invariant().await;
    }

    /// Another point service over this app's point database, as a second
    /// process would run one (its hold and lot sweepers).
    pub fn sweeper(&self, redis: promo_store::cache::Redis) -> PointService {
        let limits = Limits {
            max_amount: 1_000_000,
            cache_ttl_secs: 300,
            hold_seconds: 900,
            lot_lifetime: None,
        };
        let clock: SharedClock = self.clock.clone();
        PointService::new(self.point_db.clone(), Some(redis), clock, limits)
    }
}

async fn redis() -> promo_store::cache::Redis {
    promo_store::cache::connect(&super::helpers::redis_url())
        .await
        .unwrap()
}

fn code(b: &Value) -> &str {
    b["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reserves_points_and_a_partial_capture_releases_the_rest() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let before = app.clock.now();
    let hold = app
        .created_by(
            "/points/holds",
            &token,
            json!({"amount": 60, "reference": "cart-1"}),
        )
        .await;
    assert_eq!(hold["user_id"], user.to_string());
    assert_eq!(
        (hold["amount"].as_i64(), hold["reference"].as_str()),
        (Some(60), Some("cart-1"))
    );
    let expires: chrono::DateTime<chrono::Utc> =
        hold["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = expires - before;
    assert!(
        (Duration::seconds(899)..=Duration::seconds(901)).contains(&lifetime),
        "{lifetime}"
    );
    // The balance is unchanged; only what is available drops.
    assert_eq!(app.funds(&token).await, (100, 40, 60));

    let (s, b) = app.post("/points/use", &token, json!({"amount": 41})).await;
    assert_eq!((s, code(&b)), (409, "INSUFFICIENT_BALANCE"), "{b}");
    let (s, b) = app
        .post("/points/holds", &token, json!({"amount": 41}))
        .await;
    assert_eq!((s, code(&b)), (409, "INSUFFICIENT_BALANCE"), "{b}");

    let (s, used) = app
        .hold_call(&hold, "capture", &token, json!({"amount": 25}))
        .await;
    assert_eq!(s, 201, "{used}");
    assert_eq!(
        (used["type"].as_str(), used["amount"].as_i64()),
        (Some("USE"), Some(25))
    );
    assert_eq!(
        (used["delta"].as_i64(), used["balance_after"].as_i64()),
        (Some(-25), Some(75))
    );
    assert_eq!(used["hold_id"], hold["id"]);
    assert_eq!(used["reference"], "cart-1");
    assert_eq!(app.funds(&token).await, (75, 75, 0));

    let now = app.hold_now(&hold, &token).await;
    assert_eq!(now["status"], "CAPTURED");
    assert_eq!(now["captured_amount"], 25);
    assert_eq!(now["transaction_id"], used["id"]);
    assert!(now["resolved_at"].is_string(), "{now}");
    for verb in ["capture", "void"] {
        let (s, b) = app.hold_call(&hold, verb, &token, json!({})).await;
        assert_eq!((s, code(&b)), (409, "ALREADY_RESOLVED"), "{verb}: {b}");
    }
    let (_, history) = app.get("/points/history?type=USE", &token).await;
    assert_eq!(history["items"][0]["hold_id"], hold["id"], "{history}");

    // The capture's events: the USE as every use, then the hold's, both
    // keyed by the user.
    let events: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT topic, aggregate_id, payload FROM outbox WHERE topic LIKE 'point.%' ORDER BY id",
    )
    .fetch_all(&app.point_db)
    .await
    .unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        topics,
        [
            "point.earned",
            "point.held",
            "point.used",
            "point.hold_captured"
        ]
    );
    assert!(events.iter().all(|e| e.1 == user.to_string()));
    assert_eq!(events[2].2["data"]["hold_id"], hold["id"]);
    let captured = &events[3].2["data"];
    assert_eq!(
        (captured["id"].as_str(), captured["status"].as_str()),
        (hold["id"].as_str(), Some("CAPTURED"))
    );
    assert_eq!(captured["transaction_id"], used["id"]);
    app.assert_hold_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_takes_all_by_default_and_a_void_releases() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    // The capture draws from the older earn's lot, so this one stays
    // untouched and may be cancelled (ARCHITECTURE.md, "Point lots").
    let earned = app.earn(user, 50).await;
    let (first, second) = (app.hold(&token, 30).await, app.hold(&token, 90).await);
    let (s, used) = app.hold_call(&first, "capture", &token, json!({})).await;
    assert_eq!((s, used["amount"].as_i64()), (201, Some(30)), "{used}");
    assert_eq!(app.funds(&token).await, (120, 30, 90));

    // Cancelling the earn would leave less than the hold reserves.
    let cancel = format!(
        "/points/transactions/{}/cancel",
        earned["id"].as_str().unwrap()
    );
    let (s, b) = app.post(&cancel, &app.admin, json!({})).await;
    assert_eq!((s, code(&b)), (409, "INSUFFICIENT_BALANCE"), "{b}");

    let (s, voided) = app.hold_call(&second, "void", &token, json!({})).await;
    assert_eq!(
        (s, voided["status"].as_str()),
        (200, Some("VOIDED")),
        "{voided}"
    );
    assert!(voided["captured_amount"].is_null() && voided["resolved_at"].is_string());
    assert_eq!(app.funds(&token).await, (120, 120, 0));
    let (s, b) = app.post(&cancel, &app.admin, json!({})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.funds(&token).await, (70, 70, 0));
    assert_eq!(app.outbox_count("('point.hold_voided')").await, 1);
    app.assert_hold_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_admin_touches_a_hold() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    let (_, other) = app.user_token();
    app.earn(user, 100).await;
    let hold = app.hold(&token, 10).await;
    for verb in ["capture", "void"] {
        let (s, b) = app.hold_call(&hold, verb, &other, json!({})).await;
        assert_eq!(s, 403, "{verb}: {b}");
    }
    let path = format!("/points/holds/{}", hold["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &other).await.0, 403);
    let (s, b) = app
        .post(
            "/points/holds",
            &other,
            json!({"amount": 1, "user_id": user}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // An admin holds for the user, and resolves the user's holds.
    let by_admin = app
        .created("/points/holds", json!({"amount": 20, "user_id": user}))
        .await;
    assert_eq!(by_admin["user_id"], user.to_string());
    assert_eq!(app.funds(&token).await, (100, 70, 30));
    let (s, b) = app.hold_call(&hold, "void", &app.admin, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app
        .hold_call(&by_admin, "capture", &app.admin, json!({}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.funds(&token).await, (80, 80, 0));
    let missing = format!("/points/holds/{}", Uuid::new_v4());
    assert_eq!(app.get(&missing, &token).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_is_refused_to_callers_and_released_once_by_the_sweeper() {
    let app = spawn_app_with(|c| c.holds.sweep_every_ms = 100).await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let hold = app
        .created_by(
            "/points/holds",
            &token,
            json!({"amount": 70, "hold_seconds": 60}),
        )
        .await;
    app.clock.advance(Duration::seconds(60));
    // Due now: no caller may resolve it, whatever the sweeper has done yet.
    for verb in ["capture", "void"] {
        let (s, b) = app.hold_call(&hold, verb, &token, json!({})).await;
        assert!(
            (s, code(&b)) == (409, "HOLD_EXPIRED") || (s, code(&b)) == (409, "ALREADY_RESOLVED"),
            "{verb}: {s} {b}"
        );
    }
    super::helpers::eventually("the sweeper expires the hold", || async {
        app.hold_now(&hold, &token).await["status"] == "EXPIRED"
    })
    .await;
    assert_eq!(app.funds(&token).await, (100, 100, 0));
    // Swept or not, a late capture or void hears that the hold expired.
    for verb in ["capture", "void"] {
        let (s, b) = app.hold_call(&hold, verb, &token, json!({})).await;
        assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"), "{verb}: {b}");
    }
    // More sweeps find nothing: the release and its event happened once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.outbox_count("('point.hold_expired')").await, 1);
    assert_eq!(app.outbox_count(RESOLUTIONS).await, 1);
    assert_eq!(app.funds(&token).await, (100, 100, 0));
    app.assert_hold_invariants().await;
}

/// Twenty callers capture or void one hold while the clock passes its
/// expiry and a sweeper runs: exactly one resolves it, the others are told
/// it is resolved or expired, and one resolution event is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_captures_voids_and_expiry_resolve_a_hold_exactly_once() {
    // The test drives its own sweeper.
    let app = Arc::new(
        spawn_app_with(|c| {
            c.holds.sweep_every_ms = 3_600_000;
            // Twenty writers wait on one hold's row lock at once.
            c.db_max_connections = 32;
        })
        .await,
    );
    let sweeper = Arc::new(app.sweeper(redis().await));
    let (user, token) = app.user_token();
    app.earn(user, 1_000).await;
    for round in 0..5i64 {
        let hold = app
            .created_by(
                "/points/holds",
                &token,
                json!({"amount": 100, "hold_seconds": 1}),
            )
            .await;
        let answers = concurrently(20, |i| {
            let (app, sweeper, token, hold) =
                (app.clone(), sweeper.clone(), token.clone(), hold.clone());
            async move {
                if i == 10 {
                    // Half of them race the moment the hold falls due.
                    app.clock.advance(Duration::seconds(1));
                    let n = sweeper.expire_due(app.clock.now(), 100).await.unwrap();
                    return (if n == 1 { 200 } else { 0 }, Value::Null);
                }
                let verb = if i % 2 == 0 { "capture" } else { "void" };
                app.hold_call(&hold, verb, &token, json!({"amount": 40}))
                    .await
            }
        })
        .await;
        let won = answers
            .iter()
            .filter(|(s, _)| *s == 200 || *s == 201)
            .count();
        for (s, b) in &answers {
            assert!(
                [200, 201, 0].contains(s)
                    || ["ALREADY_RESOLVED", "HOLD_EXPIRED"].contains(&code(b)),
                "round {round}: {s} {b}"
            );
        }
        // If no caller won, the hold is due: the next sweep expires it.
        let late = sweeper.expire_due(app.clock.now(), 100).await.unwrap();
        assert_eq!(won + late, 1, "round {round}: {answers:?}");
        assert_eq!(app.outbox_count(RESOLUTIONS).await, round + 1);
        assert_ne!(app.hold_now(&hold, &token).await["status"], "PENDING");
    }
    let (_, available, held) = app.funds(&token).await;
    assert_eq!((available >= 500, held), (true, 0));
    app.assert_hold_invariants().await;
}

/// Two sweepers (two processes of the role) over 500 due holds of 10 users:
/// each hold expires once, with one event, and every user's points return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweepers_expire_each_due_hold_exactly_once() {
    let app = Arc::new(spawn_app_with(|c| c.holds.sweep_every_ms = 3_600_000).await);
    let users: Vec<(Uuid, String)> = (0..10).map(|_| app.user_token()).collect();
    for (u, _) in &users {
        app.earn(*u, 1_000).await;
    }
    let users = Arc::new(users);
    for _ in 0..25 {
        // Ten users, two holds each at a time.
        let created = concurrently(20, |i| {
            let (app, users) = (app.clone(), users.clone());
            async move {
                let (_, token) = &users[i % users.len()];
                let body = json!({"amount": 1 + (i as i64 % 5), "hold_seconds": 30});
                app.post("/points/holds", token, body).await
            }
        })
        .await;
        assert!(created.iter().all(|(s, _)| *s == 201), "{created:?}");
    }
    app.clock.advance(Duration::seconds(30));
    let (a, b) = (
        Arc::new(app.sweeper(redis().await)),
        Arc::new(app.sweeper(redis().await)),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let clock: SharedClock = app.clock.clone();
    let (n1, n2) = tokio::join!(
        promod::sweep::sweep(&*a, &clock, 25, &stop),
        promod::sweep::sweep(&*b, &clock, 25, &stop),
    );
    assert_eq!(n1 + n2, 500, "{n1} + {n2}");
    let (events, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload->'data'->>'id') FROM outbox
         WHERE topic = 'point.hold_expired'",
    )
    .fetch_one(&app.point_db)
    .await
    .unwrap();
    assert_eq!((events, distinct), (500, 500));
    for (_, token) in users.iter() {
        assert_eq!(app.funds(token).await, (1_000, 1_000, 0));
    }
    app.assert_hold_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_writes_replay_under_their_idempotency_key() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let keyed = |path: &str, body: Value, key: &str| {
        let (path, key) = (path.to_owned(), key.to_owned());
        let (app, token) = (&app, token.clone());
        async move {
            app.call(Method::POST, &path, Some(&token), Some(body), Some(&key))
                .await
        }
    };
    let first = keyed("/points/holds", json!({"amount": 40}), "h-1").await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(
        keyed("/points/holds", json!({"amount": 40}), "h-1").await,
        first
    );
    assert_eq!(app.funds(&token).await, (100, 60, 40), "held once");
    let (s, b) = keyed("/points/holds", json!({"amount": 41}), "h-1").await;
    assert_eq!((s, code(&b)), (409, "IDEMPOTENCY_MISMATCH"));

    let capture = format!("/points/holds/{}/capture", first.1["id"].as_str().unwrap());
    let used = keyed(&capture, json!({"amount": 10}), "c-1").await;
    assert_eq!(used.0, 201, "{}", used.1);
    assert_eq!(keyed(&capture, json!({"amount": 10}), "c-1").await, used);
    assert_eq!(app.funds(&token).await, (90, 90, 0), "captured once");

    // Refusals are answers too: a replay after the balance grew is still refused.
    let refused = keyed("/points/holds", json!({"amount": 500}), "h-2").await;
    assert_eq!((refused.0, code(&refused.1)), (409, "INSUFFICIENT_BALANCE"));
    let void = format!("/points/holds/{}/void", first.1["id"].as_str().unwrap());
    let late = keyed(&void, json!({}), "v-1").await;
    assert_eq!((late.0, code(&late.1)), (409, "ALREADY_RESOLVED"));
    app.earn(user, 1_000).await;
    assert_eq!(
        keyed("/points/holds", json!({"amount": 500}), "h-2").await,
        refused
    );
    assert_eq!(keyed(&void, json!({}), "v-1").await, late);
    assert_eq!(app.outbox_count("('point.held')").await, 1);
    app.assert_hold_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hold_requests_change_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let hold = app.hold(&token, 50).await;
    let long = "r".repeat(201);
    for (body, field) in [
        (json!({"amount": 0}), "amount"),
        (json!({"amount": -5}), "amount"),
        (json!({}), "amount"),
        (json!({"amount": "ten"}), "amount"),
        (json!({"amount": 5, "hold_seconds": 0}), "hold_seconds"),
        (json!({"amount": 5, "hold_seconds": 86_401}), "hold_seconds"),
        (json!({"amount": 5, "reference": long}), "reference"),
    ] {
        let (s, b) = app.post("/points/holds", &token, body.clone()).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {b}"
        );
    }
    for amount in [0, -1, 51] {
        let (s, b) = app
            .hold_call(&hold, "capture", &token, json!({"amount": amount}))
            .await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some("amount")),
            "{amount}: {b}"
        );
    }
    let (s, b) = app
        .post("/points/holds/not-a-uuid/void", &token, json!({}))
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("id")), "{b}");

    assert_eq!(app.funds(&token).await, (100, 50, 50));
    assert_eq!(app.hold_now(&hold, &token).await["status"], "PENDING");
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM point_holds")
        .fetch_one(&app.point_db)
        .await
        .unwrap();
    assert_eq!(holds, 1);
    assert_eq!(
        app.outbox_count("('point.held', 'point.used')").await
            + app.outbox_count(RESOLUTIONS).await,
        1
    );
    app.assert_hold_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_holding_more_than_the_balance() {
    let app = spawn_app().await;
    let (user, _) = app.user_token();
    app.earn(user, 10).await;
    let err = sqlx::query("UPDATE point_balances SET held = 11 WHERE user_id = $1")
        .bind(user)
        .execute(&app.point_db)
        .await
        .unwrap_err();
    let constraint = err
        .as_database_error()
        .and_then(|d| d.constraint().map(str::to_owned));
    assert_eq!(constraint.as_deref(), Some("held_within_balance"));
}
