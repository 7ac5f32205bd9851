//! Held orders (API.md "Holds"): PENDING orders take the stock and resolve
//! exactly once (confirm, cancel or expiry), against real PostgreSQL and
//! Redis, with the injected clock driving expiry.

use crate::helpers::{concurrently, eventually, tally};
use crate::timesale_helpers::{spawn_timesale_app, TimesaleApp};
use promo_domain::clock::{Clock, OffsetClock};
use promo_store::stock::{Kind, RedisStock, StockPort};
use promod::timesale::TimesaleService;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn count(app: &TimesaleApp, sql: &str, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(id.to_string())
        .fetch_one(&app.db)
        .await
        .unwrap();
    n
}

async fn statuses(app: &TimesaleApp, sale: Uuid, status: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM time_sale_orders WHERE time_sale_id = $1 AND status = $2",
    )
    .bind(sale)
    .bind(status)
    .fetch_one(&app.db)
    .await
    .unwrap();
    n
}

/// Events of `topic` about `sale`'s orders in the outbox.
async fn events(app: &TimesaleApp, sale: Uuid, topic: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM outbox WHERE topic = $2
           AND aggregate_id IN (SELECT id::text FROM time_sale_orders WHERE time_sale_id = $1)",
    )
    .bind(sale)
    .bind(topic)
    .fetch_one(&app.db)
    .await
    .unwrap();
    n
}

/// Another process's view of the same databases: its own service and pool,
/// with its own clock (which a test may set ahead).
async fn second_process(app: &TimesaleApp, clock: Arc<OffsetClock>) -> Arc<TimesaleService> {
    let options = (*app.db.connect_options()).clone();
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    Arc::new(TimesaleService::new(
        pool,
        Arc::new(RedisStock::new(app.redis.clone())),
        clock,
        900,
    ))
}

async fn sweep(svc: &TimesaleService, clock: &dyn Clock) -> usize {
    use promod::sweep::Expire;
    svc.expire_due(clock.now(), 1000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_users_hold_one_hundred_units_and_expiry_returns_each_once() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(100, 1).await;
    let answers = concurrently(200, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            app.hold(sale, &token, 60).await
        }
    })
    .await;
    let (held, sold_out) = tally(&answers, 201, (409, "SOLD_OUT"));
    assert_eq!((held, sold_out), (100, 100));
    assert!(answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .all(|(_, b)| b["status"] == "PENDING" && b["expires_at"].is_string()));
    assert_eq!(statuses(&app, sale, "PENDING").await, 100);
    assert_eq!(app.redis_stock(sale).await, Some(0));
    app.assert_invariant(sale).await;

    app.clock.advance(chrono::Duration::seconds(61));
    eventually("the sweeper expires every hold", || async {
        statuses(&app, sale, "EXPIRED").await == 100
    })
    .await;
    eventually("the units come back", || async {
        app.redis_stock(sale).await == Some(100)
    })
    .await;
    assert_eq!(events(&app, sale, "order.expired").await, 100);
    app.assert_invariant(sale).await;

    // Exactly the 100 units sell again, to new buyers.
    let again = concurrently(200, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            app.order(sale, &token, 1).await
        }
    })
    .await;
    assert_eq!(tally(&again, 201, (409, "SOLD_OUT")), (100, 100));
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(0));
}

#[tokio::test]
async fn a_hold_confirms_once_and_a_late_confirm_is_expired() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(10, 5).await;
    let (_, token) = app.user_token();
    let (s, order) = app.hold(sale, &token, 30).await;
    assert_eq!(s, 201, "{order}");
    let id = order["id"].as_str().unwrap();
    let confirm = format!("/orders/{id}/confirm");
    let (s, b) = app.post(&confirm, &token, json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("CONFIRMED")), "{b}");
    assert!(b["resolved_at"].is_string());
    let (s, b) = app.post(&confirm, &token, json!({})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("ALREADY_RESOLVED"))
    );
    // A confirmed hold is an order as any other: cancel gives the unit back.
    let (s, b) = app
        .post(&format!("/orders/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("CANCELLED")), "{b}");

    let (_, late) = app.hold(sale, &token, 5).await;
    let late = late["id"].as_str().unwrap().to_owned();
    app.clock.advance(chrono::Duration::seconds(5));
    let (s, b) = app
        .post(&format!("/orders/{late}/confirm"), &token, json!({}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("HOLD_EXPIRED")),
        "{b}"
    );
    let (s, b) = app
        .post(&format!("/orders/{late}/cancel"), &token, json!({}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("HOLD_EXPIRED")),
        "{b}"
    );
    eventually("the late hold expires", || async {
        let (_, o) = app.get(&format!("/orders/{late}"), &token).await;
        o["status"] == "EXPIRED"
    })
    .await;
    // Swept or not, a late confirm hears that the hold expired.
    let (s, b) = app
        .post(&format!("/orders/{late}/confirm"), &token, json!({}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("HOLD_EXPIRED"))
    );
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(10));
}

#[tokio::test]
async fn cancelling_a_hold_releases_it_and_bad_holds_change_nothing() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(3, 3).await;
    let (_, token) = app.user_token();
    let (_, other) = app.user_token();
    let path = format!("/time-sales/{sale}/orders");
    for (body, field) in [
        (
            json!({"quantity": 1, "hold": true, "hold_seconds": 0}),
            "hold_seconds",
        ),
        (
            json!({"quantity": 1, "hold": true, "hold_seconds": 86_401}),
            "hold_seconds",
        ),
        (json!({"quantity": 1, "hold_seconds": 60}), "hold_seconds"),
        (json!({"quantity": 1, "hold": "yes"}), "hold"),
    ] {
        let (s, b) = app.post(&path, &token, body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
        assert!(
            b["error"]["field"]
                .as_str()
                .unwrap_or_default()
                .contains(field)
                || b["error"]["message"].as_str().unwrap().contains(field),
            "{b}"
        );
    }
    assert_eq!(
        app.redis_stock(sale).await,
        Some(3),
        "a refused hold takes nothing"
    );

    let (s, order) = app.hold(sale, &token, 60).await;
    assert_eq!(s, 201);
    let id = order["id"].as_str().unwrap();
    let (s, _) = app
        .post(&format!("/orders/{id}/confirm"), &other, json!({}))
        .await;
    assert_eq!(s, 403, "not the owner's");
    let (s, b) = app
        .post(&format!("/orders/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("CANCELLED")), "{b}");
    let (s, b) = app
        .post(&format!("/orders/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("ALREADY_RESOLVED"))
    );
    assert_eq!(app.redis_stock(sale).await, Some(3));
    // An order confirmed at once is no hold.
    let (_, plain) = app.order(sale, &token, 1).await;
    let plain = plain["id"].as_str().unwrap();
    let (s, b) = app
        .post(&format!("/orders/{plain}/confirm"), &token, json!({}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("ALREADY_RESOLVED"))
    );
    app.assert_invariant(sale).await;
}

/// Twenty callers confirm or cancel one hold while two other "processes"
/// whose clocks run ahead (so they see it due) sweep it: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_confirms_cancels_and_sweeps_resolve_a_hold_once() {
    let app = Arc::new(spawn_timesale_app().await);
    for round in 0..5 {
        let sale = app.create_sale(5, 5).await;
        let (_, token) = app.user_token();
        let (_, order) = app.hold(sale, &token, 2).await;
        let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
        let ahead = Arc::new(OffsetClock::default());
        ahead.set_offset(app.clock.now() - chrono::Utc::now() + chrono::Duration::seconds(3));
        let sweepers = [
            second_process(&app, ahead.clone()).await,
            second_process(&app, ahead.clone()).await,
        ];
        let token = Arc::new(token);
        let answers = concurrently(20, |i| {
            let (app, token) = (app.clone(), token.clone());
            let sweeper = sweepers[i % 2].clone();
            let ahead = ahead.clone();
            async move {
                let ok = match i % 3 {
                    0 => sweep(&sweeper, &*ahead).await == 1,
                    1 => {
                        app.post(&format!("/orders/{id}/confirm"), &token, json!({}))
                            .await
                            .0
                            == 200
                    }
                    _ => {
                        app.post(&format!("/orders/{id}/cancel"), &token, json!({}))
                            .await
                            .0
                            == 200
                    }
                };
                (i % 3, ok)
            }
        })
        .await;
        let won = |kind| answers.iter().filter(|(k, ok)| *k == kind && *ok).count() as i64;
        let (swept, confirmed, cancelled) = (won(0), won(1), won(2));
        // The hold resolves once: expired, confirmed, or cancelled while
        // pending; a confirmed order may then be cancelled as any other.
        let resolved = swept + confirmed + if confirmed == 0 { cancelled } else { 0 };
        assert_eq!(resolved, 1, "round {round}: {answers:?}");
        assert!(
            cancelled <= 1 && swept + cancelled <= 1,
            "round {round}: {answers:?}"
        );
        let event = |topic: &'static str| {
            let app = app.clone();
            async move {
                count(
                    &app,
                    &format!(
                        "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND topic = '{topic}'"
                    ),
                    id,
                )
                .await
            }
        };
        assert_eq!(
            (
                event("order.expired").await,
                event("order.confirmed").await,
                event("order.cancelled").await
            ),
            (swept, confirmed, cancelled),
            "round {round}: one event per transition"
        );
        app.assert_invariant(sale).await;
    }
}

/// Two more processes sweep 300 due holds beside the app's own sweeper:
/// each hold expires once, with one event, and every unit comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sweepers_expire_each_hold_once() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(300, 1).await;
    let answers = concurrently(300, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            app.hold(sale, &token, 1).await
        }
    })
    .await;
    assert_eq!(tally(&answers, 201, (409, "SOLD_OUT")), (300, 0));
    let ahead = Arc::new(OffsetClock::default());
    ahead.set_offset(app.clock.now() - chrono::Utc::now() + chrono::Duration::seconds(2));
    let (a, b) = (
        second_process(&app, ahead.clone()).await,
        second_process(&app, ahead.clone()).await,
    );
    let stop = CancellationToken::new();
    let run = |svc: Arc<TimesaleService>| {
        let (clock, stop) = (ahead.clone(), stop.clone());
        tokio::spawn(async move {
            let clock: promo_domain::clock::SharedClock = clock;
            promod::sweep::sweep(&*svc, &clock, 7, &stop).await
        })
    };
    app.clock.advance(chrono::Duration::seconds(2));
    let (ta, tb) = (run(a), run(b));
    let swept = ta.await.unwrap() + tb.await.unwrap();
    eventually("every hold expires", || async {
        statuses(&app, sale, "EXPIRED").await == 300
    })
    .await;
    assert!(swept <= 300, "{swept}");
    assert_eq!(events(&app, sale, "order.expired").await, 300);
    eventually("every unit comes back", || async {
        app.redis_stock(sale).await == Some(300)
    })
    .await;
    app.assert_invariant(sale).await;
}

/// A crash between the commit of a release and its settle in Redis: the
/// reconciler gives the units back (the order did end); a release
/// journaled for a transaction that rolled back gives nothing.
#[tokio::test]
async fn the_reconciler_settles_releases_by_what_committed() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(4, 4).await;
    let (user, token) = app.user_token();
    let (_, ended) = app.hold(sale, &token, 60).await;
    let (_, kept) = app.hold(sale, &token, 60).await;
    let ended: Uuid = ended["id"].as_str().unwrap().parse().unwrap();
    let kept: Uuid = kept["id"].as_str().unwrap().parse().unwrap();
    let stock = RedisStock::new(app.redis.clone());
    let entries = [
        promo_store::stock::Entry::release_of(ended, user, 1),
        promo_store::stock::Entry::release_of(kept, user, 1),
    ];
    stock.journal(Kind::Sale, sale, &entries).await.unwrap();
    // What the committed transaction of `ended` did in PostgreSQL.
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(
        "UPDATE time_sale_orders SET status = 'EXPIRED', resolved_at = now() WHERE id = $1",
    )
    .bind(ended)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE time_sale_user_totals SET quantity = quantity - 1 WHERE time_sale_id = $1")
        .bind(sale)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE time_sales SET sold_quantity = sold_quantity - 1 WHERE id = $1")
        .bind(sale)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.redis_stock(sale).await, Some(2));
    let done = promo_store::stock::reconcile(
        &app.db,
        &stock,
        Kind::Sale,
        &[sale],
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(done.released, 1, "{done:?}");
    assert!(
        done.cleared >= 1,
        "the release of the kept hold is dropped: {done:?}"
    );
    assert_eq!(app.redis_stock(sale).await, Some(3));
    app.assert_invariant(sale).await;
}

/// Confirms are group-committed: fifty at once all succeed, each once with
/// one event; replaying a key gives the same answer, and a confirm of a
/// confirmed hold under a new key is `ALREADY_RESOLVED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_confirms_commit_in_groups_and_replay() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(50, 1).await;
    let holds = concurrently(50, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            let (s, b) = app.hold(sale, &token, 60).await;
            assert_eq!(s, 201, "{b}");
            (b["id"].as_str().unwrap().to_owned(), token)
        }
    })
    .await;
    let holds = Arc::new(holds);
    let confirm = |i: usize, key: String| {
        let (app, holds) = (app.clone(), holds.clone());
        async move {
            let (id, token) = &holds[i];
            let path = format!("/orders/{id}/confirm");
            app.call(
                reqwest::Method::POST,
                &path,
                token,
                Some(json!({})),
                Some(&key),
            )
            .await
        }
    };
    let first = concurrently(50, |i| confirm(i, format!("k-{i}"))).await;
    assert!(
        first
            .iter()
            .all(|(s, b)| *s == 200 && b["status"] == "CONFIRMED"),
        "{first:?}"
    );
    let again = concurrently(50, |i| confirm(i, format!("k-{i}"))).await;
    assert_eq!(first, again, "a replay answers as the first time");
    let (s, b) = confirm(0, "another".into()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("ALREADY_RESOLVED"))
    );
    assert_eq!(events(&app, sale, "order.confirmed").await, 50);
    assert_eq!(statuses(&app, sale, "CONFIRMED").await, 50);
    app.assert_invariant(sale).await;
}
