//! Point lots (API.md "Point lots and expiry") against real PostgreSQL and
//! Redis with the injectable clock: soonest-expiring-first draws, expiry by
//! the sweeper exactly once (also racing uses and a second sweeper), holds
//! keeping priority over expiry, and cancels after expiry.

use super::helpers::{concurrently, spawn_app_with, TestApp};
use chrono::{DateTime, Duration, Utc};
use promo_domain::clock::{Clock, SharedClock};
use promod::point::expiry::LotSweeper;
use promod::point::PointService;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// An app whose own sweepers wait an hour: the tests sweep when they mean to.
async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.point.lots.sweep_every_ms = 3_600_000;
        c.holds.sweep_every_ms = 3_600_000;
    })
    .await
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

impl TestApp {
    /// An earn of `amount` into a lot expiring at `at` (never: `None`).
    async fn earn_lot(&self, user: Uuid, amount: i64, at: Option<DateTime<Utc>>) -> Value {
        let body = json!({"user_id": user, "amount": amount, "expires_at": at.map(ts)});
        self.created("/points/earn", body).await
    }

    /// The user's live lots as (amount, remaining, expires_at) in API order.
    async fn lots_of(&self, token: &str) -> Vec<(i64, i64, Option<String>)> {
        let (s, b) = self.get("/points/lots?size=100", token).await;
        assert_eq!(s, 200, "{b}");
        let n = |l: &Value, f: &str| l[f].as_i64().unwrap();
        let items = b["items"].as_array().unwrap();
        items
            .iter()
            .map(|l| {
                let exp = l["expires_at"].as_str().map(str::to_owned);
                (n(l, "amount"), n(l, "remaining"), exp)
            })
            .collect()
    }

    /// Sweeps expired lots with a sweeper of its own until none is due.
    async fn sweep_lots(&self, svc: &Arc<PointService>) -> usize {
        let one = LotSweeper {
            svc: svc.clone(),
            part: 0,
            parts: 1,
        };
        let clock: SharedClock = self.clock.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        promod::sweep::sweep(&one, &clock, 1_000, &stop).await
    }

    async fn expires_of(&self, lot: Uuid) -> Vec<(i64, i32)> {
        sqlx::query_as(
            "SELECT amount, lot_expiry FROM point_transactions
             WHERE type = 'EXPIRE' AND lot_id = $1 ORDER BY lot_expiry",
        )
        .bind(lot)
        .fetch_all(&self.point_db)
        .await
        .unwrap()
    }

    /// Every balance is the sum of its user's lots and of their ledger.
    async fn assert_lot_invariants(&self) {
        self.assert_ledger_invariant().await;
        let bad: Vec<(Uuid, i64, Option<i64>)> = sqlx::query_as(
            "SELECT b.user_id, b.balance, s.total FROM point_balances b
             LEFT JOIN (SELECT user_id, sum(remaining)::bigint AS total FROM point_lots
                        GROUP BY user_id) s ON s.user_id = b.user_id
             WHERE coalesce(s.total, 0) <> b.balance",
        )
        .fetch_all(&self.point_db)
        .await
        .unwrap();
        assert!(bad.is_empty(), "lots and balances disagree: {bad:?}");
    }
}

async fn redis() -> promo_store::cache::Redis {
    promo_store::cache::connect(&super::helpers::redis_url())
        .await
        .unwrap()
}

fn id(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_draw_the_soonest_expiring_lots_first_across_many() {
    let app = app().await;
    let (user, token) = app.user_token();
    let t0 = app.clock.now();
    let day = |d: i64| Some(t0 + Duration::days(d));
    // Earned in this order: a never-expiring lot, then lots in a shuffled
    // expiry order; two expire at the same instant (the older earn first).
    for (amount, at) in [
        (5, None),
        (10, day(9)),
        (20, day(3)),
        (30, day(3)),
        (40, day(1)),
        (50, day(7)),
    ] {
        app.earn_lot(user, amount, at).await;
    }
    let lots = app.lots_of(&token).await;
    let amounts: Vec<i64> = lots.iter().map(|l| l.0).collect();
    assert_eq!(amounts, [40, 20, 30, 50, 10, 5], "spend order");
    let (s, b) = app.get("/points/balance", &token).await;
    assert_eq!(s, 200, "{b}");
    let expiring: Vec<i64> = b["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(
        expiring,
        [40, 20, 30, 50, 10],
        "the next five, never-expiring left out"
    );

    let used = app
        .created_by("/points/use", &token, json!({"amount": 75}))
        .await;
    let lots = app.lots_of(&token).await;
    let left: Vec<(i64, i64)> = lots.iter().map(|l| (l.0, l.1)).collect();
    assert_eq!(left, [(30, 15), (50, 50), (10, 10), (5, 5)]);
    let draws: Vec<(i64,)> = sqlx::query_as(
        "SELECT (d->>'amount')::bigint FROM point_transactions t, jsonb_array_elements(t.draws) d
         JOIN point_lots l ON l.id = (d->>'lot_id')::uuid
         WHERE t.id = $1 ORDER BY l.expires_at, l.earned_at",
    )
    .bind(id(&used))
    .fetch_all(&app.point_db)
    .await
    .unwrap();
    assert_eq!(draws, [(40,), (20,), (15,)]);

    // Spending all but 5 leaves them in the never-expiring lot, spent last.
    app.created_by("/points/use", &token, json!({"amount": 75}))
        .await;
    assert_eq!(app.lots_of(&token).await, [(5, 5, None)]);
    assert_eq!(app.balance_of(&token).await, 5);
    app.assert_lot_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earn_expiring_in_the_past_is_refused_naming_the_field() {
    let app = app().await;
    let (user, token) = app.user_token();
    for past in [app.clock.now() - Duration::seconds(1), app.clock.now()] {
        let body = json!({"user_id": user, "amount": 5, "expires_at": ts(past)});
        let (s, b) = app.post("/points/earn", &app.admin, body).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some("expires_at")),
            "{b}"
        );
    }
    assert_eq!(app.balance_of(&token).await, 0);
    assert!(app.lots_of(&token).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_lifetime_dates_lots_and_an_untouched_earn_cancels() {
    let app = spawn_app_with(|c| {
        c.point.lots.default_lifetime_days = 30;
        c.point.lots.sweep_every_ms = 3_600_000;
    })
    .await;
    let (user, token) = app.user_token();
    let before = app.clock.now();
    let kept = app.earn_lot(user, 10, None).await;
    let spent = app.earn_lot(user, 20, None).await;
    let lots = app.lots_of(&token).await;
    let at: DateTime<Utc> = lots[0].2.as_deref().unwrap().parse().unwrap();
    assert!(at >= before + Duration::days(30) && at <= app.clock.now() + Duration::days(30));
    app.created_by("/points/use", &token, json!({"amount": 5}))
        .await;
    // The first earn's lot gave the 5: it can no longer be cancelled.
    let cancel = |t: &Value| format!("/points/transactions/{}/cancel", id(t));
    let (s, b) = app.post(&cancel(&kept), &app.admin, json!({})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("INSUFFICIENT_BALANCE"))
    );
    let (s, b) = app.post(&cancel(&spent), &app.admin, json!({})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.balance_of(&token).await, 5);
    let left: Vec<i64> = app.lots_of(&token).await.iter().map(|l| l.1).collect();
    assert_eq!(left, [5]);
    app.assert_lot_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_racing_the_expiry_of_its_lot_leaves_the_same_totals_whoever_wins() {
    let app = Arc::new(app().await);
    let sweeper = Arc::new(app.sweeper(redis().await));
    let users: Vec<(Uuid, String)> = (0..20).map(|_| app.user_token()).collect();
    let soon = app.clock.now() + Duration::seconds(30);
    let mut expiring = Vec::new();
    for (u, _) in &users {
        expiring.push(id(&app.earn_lot(*u, 100, Some(soon)).await));
        app.earn_lot(*u, 50, None).await;
    }
    app.clock.advance(Duration::seconds(31));
    // Each use of 80 draws from the lot that just expired, while a sweeper
    // expires it: either the use takes 80 and the sweep the other 20, or the
    // sweep takes all 100 first and the use is refused.
    let users = Arc::new(users);
    let sweep = {
        let (app, sweeper) = (app.clone(), sweeper.clone());
        tokio::spawn(async move { app.sweep_lots(&sweeper).await })
    };
    let uses = concurrently(users.len(), |i| {
        let (app, users) = (app.clone(), users.clone());
        async move {
            let body = json!({"amount": 80});
            app.post("/points/use", &users[i].1, body).await
        }
    })
    .await;
    sweep.await.unwrap();
    app.sweep_lots(&sweeper).await;
    for (((_, token), (s, b)), lot) in users.iter().zip(&uses).zip(&expiring) {
        let expired = app.expires_of(*lot).await;
        match s {
            201 => assert_eq!(expired, [(20, 1)]),
            409 => assert_eq!(expired, [(100, 1)], "{b}"),
            _ => panic!("unexpected {s}: {b}"),
        }
        assert_eq!(app.balance_of(token).await, 50);
    }
    app.assert_lot_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweepers_expire_each_of_ten_thousand_lots_exactly_once() {
    let app = app().await;
    let at = app.clock.now() + Duration::minutes(5);
    // 1,000 users with 10 lots of 1..=10 each, all expiring at one instant,
    // written as the batch would (an EARN, its lot, the balance).
    sqlx::query(
        "WITH u AS (SELECT gen_random_uuid() AS user_id FROM generate_series(1, 1000)),
              e AS (SELECT gen_random_uuid() AS id, user_id, n FROM u, generate_series(1, 10) n),
              t AS (INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after)
                    SELECT id, user_id, 'EARN', n, n, n FROM e),
              l AS (INSERT INTO point_lots (id, user_id, earn_transaction_id, amount, remaining,
                                            expires_at, earned_at)
                    SELECT id, user_id, id, n, n, $1, now() FROM e)
         INSERT INTO point_balances (user_id, balance) SELECT user_id, 55 FROM u",
    )
    .bind(at)
    .execute(&app.point_db)
    .await
    .unwrap();
    app.clock.advance(Duration::minutes(5));
    let (a, b) = (
        Arc::new(app.sweeper(redis().await)),
        Arc::new(app.sweeper(redis().await)),
    );
    let mut total = 0;
    for _ in 0..20 {
        let (n1, n2) = tokio::join!(app.sweep_lots(&a), app.sweep_lots(&b));
        total += n1 + n2;
        if n1 + n2 == 0 {
            break;
        }
    }
    assert_eq!(total, 10_000);
    let (rows, lots, amount): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT lot_id), sum(amount)::bigint FROM point_transactions
         WHERE type = 'EXPIRE'",
    )
    .fetch_one(&app.point_db)
    .await
    .unwrap();
    assert_eq!((rows, lots, amount), (10_000, 10_000, 55_000));
    // One event per user and sweep, listing the user's EXPIREs.
    let (events, listed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(jsonb_array_length(payload->'data'->'expired'))::bigint
         FROM outbox WHERE topic = 'point.expired'",
    )
    .fetch_one(&app.point_db)
    .await
    .unwrap();
    assert_eq!((events, listed), (1_000, 10_000));
    let (left, once): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(balance), 0)::bigint FROM point_balances),
                (SELECT count(*) FROM point_lots WHERE expiries = 1 AND remaining = 0)",
    )
    .fetch_one(&app.point_db)
    .await
    .unwrap();
    assert_eq!((left, once), (0, 10_000));
    app.assert_lot_invariants().await;
}

/// An app, a sweeper of its own, and a user (their token) with one lot of
/// 100 (its id) that expires in 10 s.
async fn a_lot_of_100_expiring_in_10s() -> (TestApp, Arc<PointService>, String, Uuid) {
    let app = app().await;
    let svc = Arc::new(app.sweeper(redis().await));
    let (user, token) = app.user_token();
    let soon = app.clock.now() + Duration::seconds(10);
    let lot = id(&app.earn_lot(user, 100, Some(soon)).await);
    (app, svc, token, lot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_cancelled_after_its_lot_expired_expires_again_once() {
    let (app, svc, token, lot) = a_lot_of_100_expiring_in_10s().await;
    let used = app
        .created_by("/points/use", &token, json!({"amount": 30}))
        .await;
    app.clock.advance(Duration::seconds(11));
    assert_eq!(app.sweep_lots(&svc).await, 1);
    assert_eq!(app.balance_of(&token).await, 0);
    assert_eq!(app.expires_of(lot).await, [(70, 1)]);

    // The cancel gives the 30 back to the lot it came from, past its expiry.
    let path = format!("/points/transactions/{}/cancel", id(&used));
    app.created(&path, json!({})).await;
    assert_eq!(app.balance_of(&token).await, 30);
    let lots = app.lots_of(&token).await;
    assert_eq!((lots.len(), lots[0].1), (1, 30));
    assert_eq!(app.sweep_lots(&svc).await, 1);
    assert_eq!(
        app.sweep_lots(&svc).await,
        0,
        "expired once more, not twice"
    );
    assert_eq!(app.expires_of(lot).await, [(70, 1), (30, 2)]);
    assert_eq!(app.balance_of(&token).await, 0);
    app.assert_lot_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_leaves_what_a_hold_reserves_and_the_capture_draws_it() {
    let (app, svc, token, lot) = a_lot_of_100_expiring_in_10s().await;
    let hold = app
        .created_by("/points/holds", &token, json!({"amount": 60}))
        .await;
    app.clock.advance(Duration::seconds(11));
    assert_eq!(app.sweep_lots(&svc).await, 1);
    assert_eq!(app.expires_of(lot).await, [(40, 1)]);
    assert_eq!(app.sweep_lots(&svc).await, 0, "the held 60 waits");
    let path = format!("/points/holds/{}/capture", id(&hold));
    let tx = app.created_by(&path, &token, json!({"amount": 50})).await;
    let (drawn,): (i64,) = sqlx::query_as(
        "SELECT (draws->0->>'amount')::bigint FROM point_transactions WHERE id = $1",
    )
    .bind(id(&tx))
    .fetch_one(&app.point_db)
    .await
    .unwrap();
    assert_eq!(drawn, 50);
    // The 10 the capture released expire at the next sweep.
    assert_eq!(app.sweep_lots(&svc).await, 1);
    assert_eq!(app.expires_of(lot).await, [(40, 1), (10, 2)]);
    assert_eq!(app.balance_of(&token).await, 0);
    app.assert_lot_invariants().await;
}
