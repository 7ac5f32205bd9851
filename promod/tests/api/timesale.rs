//! Time-sale behaviour through the gateway, against real PostgreSQL and Redis.

use super::helpers::{concurrently, tally};
use super::timesale_helpers::{spawn_timesale_app, spawn_timesale_app_over_grpc, TimesaleApp};
use promo_domain::clock::{Clock, SystemClock};
use promo_store::stock::{forget, Kind, RedisStock};
use promod::timesale::TimesaleService;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn remaining(app: &TimesaleApp, sale: Uuid) -> i64 {
    let (s, b) = app.get(&format!("/time-sales/{sale}"), &app.admin).await;
    assert_eq!(s, 200, "{b}");
    b["remaining_quantity"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_of_a_thousand_concurrent_orders_succeed() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(100, 1).await;
    let answers = concurrently(1000, |_| {
        let app = app.clone();
        async move {
            let (_, token) = app.user_token();
            app.order(sale, &token, 1).await
        }
    })
    .await;
    let (ok, sold_out) = tally(&answers, 201, (409, "SOLD_OUT"));
    for (_, b) in answers.iter().filter(|(s, _)| *s == 201) {
        assert_eq!(b["status"], "CONFIRMED");
        assert_eq!(b["total_price"], 700);
    }
    assert_eq!((ok, sold_out), (100, 900));
    assert_eq!(app.db_sold(sale).await, (100, 100));
    assert_eq!(remaining(&app, sale).await, 0);
    app.assert_invariant(sale).await;
    // The periodic sync copies the live stock into PostgreSQL.
    let mut synced = -1;
    for _ in 0..50 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT remaining_quantity FROM time_sales WHERE id = $1")
                .bind(sale)
                .fetch_one(&app.db)
                .await
                .unwrap();
        synced = n;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(synced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_on_two_sales_are_counted_per_sale() {
    let app = Arc::new(spawn_timesale_app().await);
    let sales = [app.create_sale(30, 2).await, app.create_sale(30, 2).await];
    let mut tasks = Vec::new();
    for i in 0..120 {
        let app = app.clone();
        let sale = sales[i % 2];
        tasks.push(tokio::spawn(async move {
            let (_, token) = app.user_token();
            app.order(sale, &token, 1 + (i as i64 / 2) % 2).await.0
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 201 || s == 409, "{s}");
    }
    for sale in sales {
        let (sold, _) = app.db_sold(sale).await;
        assert!((29..=30).contains(&sold), "{sold}");
        app.assert_invariant(sale).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_gets_exactly_the_per_user_limit() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(1000, 2).await;
    let (_, token) = app.user_token();
    let token = Arc::new(token);
    let answers = concurrently(30, |_| {
        let (app, token) = (app.clone(), token.clone());
        async move { app.order(sale, &token, 1).await }
    })
    .await;
    let (ok, _) = tally(&answers, 201, (409, "LIMIT_EXCEEDED"));
    assert_eq!(ok, 2);
    assert_eq!(app.db_sold(sale).await, (2, 2));
    assert_eq!(remaining(&app, sale).await, 998);
    app.assert_invariant(sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_boundaries_follow_the_injected_clock() {
    let app = spawn_timesale_app().await;
    let now = app.clock.now();
    let start = now + chrono::Duration::hours(1);
    let end = now + chrono::Duration::hours(2);
    let sale = app.create_sale_at(10, 5, start, end).await;
    let (_, token) = app.user_token();
    let path = format!("/time-sales/{sale}");

    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")), "{b}");
    assert_eq!(app.get(&path, &token).await.1["status"], "SCHEDULED");
    let (_, listed) = app.get("/time-sales?status=SCHEDULED", &token).await;
    assert_eq!(listed["total"], 1, "{listed}");

    // Exactly at start_at the sale is open.
    app.clock
        .advance(start - app.clock.now() + chrono::Duration::milliseconds(5));
    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.get(&path, &token).await.1["status"], "ACTIVE");
    let (_, listed) = app.get("/time-sales?status=ACTIVE", &token).await;
    assert_eq!(listed["total"], 1, "{listed}");

    // Extending the end keeps it open past the old end.
    let new_end = end + chrono::Duration::hours(1);
    let (s, b) = app
        .patch(&path, &app.admin, json!({"end_at": new_end}))
        .await;
    assert_eq!(s, 200, "{b}");
    app.clock
        .advance(end - app.clock.now() + chrono::Duration::seconds(1));
    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!(s, 201, "{b}");

    // At end_at it is closed, and nothing changed.
    // (The clock keeps milliseconds, so land a little past the boundary.)
    app.clock
        .advance(new_end - app.clock.now() + chrono::Duration::milliseconds(5));
    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")), "{b}");
    let (_, got) = app.get(&path, &token).await;
    assert_eq!(
        (got["status"].clone(), got["remaining_quantity"].clone()),
        (json!("ENDED"), json!(8))
    );
    let (_, listed) = app.get("/time-sales?status=ENDED", &token).await;
    assert_eq!(listed["total"], 1, "{listed}");
    // An ended sale cannot be changed any more.
    let later = new_end + chrono::Duration::hours(1);
    let (s, b) = app.patch(&path, &app.admin, json!({"end_at": later})).await;
    assert_eq!((s, &b["error"]["code"]), (409, &json!("CONFLICT")), "{b}");
    app.assert_invariant(sale).await;
}

/// A taking whose order never came (another process died after admission,
/// or its reply was lost): a restart keeps the live counter with its journal
/// (a rebuild would free the unit now and again when the entry is settled),
/// and reconciliation gives the unit back once, however many reconcilers run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taking_without_an_order_comes_back_once_across_a_restart() {
    use promo_store::stock::{reconcile, Ask, StockPort};
    let mut app = spawn_timesale_app().await;
    let sale = app.create_sale(10, 5).await;
    let (_, token) = app.user_token();
    assert_eq!(app.order(sale, &token, 3).await.0, 201);
    let stock = Arc::new(RedisStock::new(app.redis.clone()));
    let lost = Ask {
        kind: Kind::Sale,
        id: sale,
        user: Uuid::new_v4(),
        quantity: 2,
        per_user_limit: 5,
        window: None,
    };
    stock.take(&lost, Uuid::now_v7(), None).await.unwrap();
    assert_eq!(app.redis_stock(sale).await, Some(5));
    app.restart().await;
    assert_eq!(app.redis_stock(sale).await, Some(5));
    let young = reconcile(
        &app.db,
        &*stock,
        Kind::Sale,
        &[sale],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(young.unwrap().released, 0);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let (db, stock) = (app.db.clone(), stock.clone());
            tokio::spawn(async move {
                reconcile(&db, &*stock, Kind::Sale, &[sale], Duration::ZERO)
                    .await
                    .unwrap()
                    .released
            })
        })
        .collect();
    let mut released = 0;
    for r in runs {
        released += r.await.unwrap();
    }
    assert_eq!(released, 1);
    assert_eq!(app.redis_stock(sale).await, Some(7));
    assert_eq!(app.db_sold(sale).await, (3, 3));
    app.assert_invariant(sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_inventory_is_rebuilt_and_the_invariant_holds() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(50, 3).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (_, token) = app.user_token();
            let (s, b) = app.order(sale, &token, 2).await;
            assert_eq!(s, 201, "{b}");
            (token, b["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut orders = Vec::new();
    for t in tasks {
        orders.push(t.await.unwrap());
    }
    for (token, id) in orders.iter().take(5) {
        let (s, b) = app
            .post(&format!("/orders/{id}/cancel"), token, json!({}))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    app.assert_invariant(sale).await;

    // Simulate FLUSHALL for this sale's keys only (other tests share Redis).
    forget(&app.redis, Kind::Sale, sale).await.unwrap();
    assert_eq!(app.redis_stock(sale).await, None);
    // The GET falls back to PostgreSQL's count meanwhile.
    assert_eq!(remaining(&app, sale).await, 20);
    let svc = TimesaleService::new(
        app.db.clone(),
        Arc::new(RedisStock::new(app.redis.clone())),
        Arc::new(SystemClock),
        900,
    );
    assert!(svc.rebuild_inventory(sale, false).await.unwrap());
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(20));
    // Live counters are kept without force, replaced with it.
    assert!(!svc.rebuild_inventory(sale, false).await.unwrap());
    assert_eq!(svc.rebuild_all(false).await.unwrap(), 0);
    assert_eq!(svc.rebuild_all(true).await.unwrap(), 1);
    app.assert_invariant(sale).await;
    // The per-user totals came back too: a user holding 2 of 3 gets 1 more only.
    let (token, _) = &orders[10];
    assert_eq!(
        app.order(sale, token, 2).await.1["error"]["code"],
        "LIMIT_EXCEEDED"
    );
    assert_eq!(app.order(sale, token, 1).await.0, 201);

    // The lazy path: the first order after a loss rebuilds.
    forget(&app.redis, Kind::Sale, sale).await.unwrap();
    let (_, other) = app.user_token();
    let (s, b) = app.order(sale, &other, 1).await;
    assert_eq!(s, 201, "{b}");
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(18));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_returns_stock_exactly_once_under_concurrency() {
    let app = Arc::new(spawn_timesale_app().await);
    let sale = app.create_sale(10, 5).await;
    let (user, token) = app.user_token();
    let (s, order) = app.order(sale, &token, 3).await;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["user_id"], user.to_string());
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(app.redis_stock(sale).await, Some(7));
    let token = Arc::new(token);
    let answers = concurrently(20, |_| {
        let (app, token, id) = (app.clone(), token.clone(), id.clone());
        async move {
            app.post(&format!("/orders/{id}/cancel"), &token, json!({}))
                .await
        }
    })
    .await;
    let (ok, _) = tally(&answers, 200, (409, "ALREADY_CANCELLED"));
    for (_, b) in answers.iter().filter(|(s, _)| *s == 200) {
        assert_eq!(b["status"], "CANCELLED");
    }
    assert_eq!(ok, 1);
    assert_eq!(app.redis_stock(sale).await, Some(10));
    assert_eq!(app.db_sold(sale).await, (0, 0));
    app.assert_invariant(sale).await;
    // The allowance came back as well: the whole limit is orderable again.
    let (s, b) = app.order(sale, &token, 5).await;
    assert_eq!(s, 201, "{b}");
    // Another user may not see or cancel it; an admin may.
    let (_, stranger) = app.user_token();
    let oid = b["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/orders/{oid}"), &stranger).await.0, 403);
    assert_eq!(
        app.post(&format!("/orders/{oid}/cancel"), &stranger, json!({}))
            .await
            .0,
        403
    );
    let (s, b) = app
        .post(&format!("/orders/{oid}/cancel"), &app.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, page) = app.get("/orders", &token).await;
    assert_eq!((s, page["total"].clone()), (200, json!(2)), "{page}");
    app.assert_invariant(sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let app = spawn_timesale_app().await;
    let product = app.create_product(1000).await;
    let (_, token) = app.user_token();
    let now = app.clock.now();
    let sale_body = |total: serde_json::Value,
                     price: i64,
                     start: chrono::DateTime<chrono::Utc>,
                     end: chrono::DateTime<chrono::Utc>| {
        json!({"product_id": product, "total_quantity": total, "sale_price": price,
               "per_user_limit": 2, "start_at": start, "end_at": end})
    };
    let hour = chrono::Duration::hours(1);
    for (body, field) in [
        (sale_body(json!(0), 500, now, now + hour), "total_quantity"),
        (sale_body(json!(10), 1000, now, now + hour), "sale_price"),
        (sale_body(json!(10), 1500, now, now + hour), "sale_price"),
        (sale_body(json!(10), 500, now + hour, now), "end_at"),
        (
            sale_body(json!(10), 500, now - hour - hour, now - hour),
            "end_at",
        ),
        (
            sale_body(json!("ten"), 500, now, now + hour),
            "total_quantity",
        ),
    ] {
        let (s, b) = app.post("/time-sales", &app.admin, body).await;
        assert_eq!((s, b["error"]["field"].as_str()), (400, Some(field)), "{b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
    }
    let unknown = json!({"product_id": Uuid::new_v4(), "total_quantity": 5, "sale_price": 1,
                         "start_at": now, "end_at": now + hour});
    let (s, b) = app.post("/time-sales", &app.admin, unknown).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("product_id")),
        "{b}"
    );
    let (s, _) = app
        .post("/products", &token, json!({"name": "x", "price": 10}))
        .await;
    assert_eq!(s, 403);
    let (s, b) = app
        .post("/products", &app.admin, json!({"name": "x", "price": 0}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("price")),
        "{b}"
    );
    assert_eq!(
        app.get(&format!("/products/{}", Uuid::new_v4()), &token)
            .await
            .0,
        404
    );
    let (s, _) = app.get("/time-sales?status=BOGUS", &token).await;
    assert_eq!(s, 400);

    let sale = app.create_sale(10, 2).await;
    for (q, field) in [
        (json!(0), "quantity"),
        (json!(-3), "quantity"),
        (json!(3), "quantity"),
        (json!(1e30), "quantity"),
        (json!("1"), "quantity"),
    ] {
        let (s, b) = app
            .post(
                &format!("/time-sales/{sale}/orders"),
                &token,
                json!({"quantity": q}),
            )
            .await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some(field)),
            "{q}: {b}"
        );
    }
    let (s, b) = app.order(Uuid::new_v4(), &token, 1).await;
    assert_eq!((s, &b["error"]["code"]), (404, &json!("NOT_FOUND")), "{b}");
    assert_eq!(app.redis_stock(sale).await, Some(10));

    let path = format!("/time-sales/{sale}");
    let (s, b) = app
        .patch(&path, &app.admin, json!({"status": "ACTIVE"}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("status")),
        "{b}"
    );
    let (s, b) = app
        .patch(&path, &app.admin, json!({"end_at": now - hour}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("end_at")),
        "{b}"
    );
    assert_eq!(
        app.patch(&path, &token, json!({"status": "CANCELLED"}))
            .await
            .0,
        403
    );
    let (s, b) = app
        .patch(&path, &app.admin, json!({"status": "CANCELLED"}))
        .await;
    assert_eq!((s, b["status"].clone()), (200, json!("CANCELLED")), "{b}");
    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")), "{b}");
    let (s, b) = app
        .patch(&path, &app.admin, json!({"status": "CANCELLED"}))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("ALREADY_CANCELLED")),
        "{b}"
    );
    assert_eq!(app.redis_stock(sale).await, Some(10));
    assert_eq!(app.db_sold(sale).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_honour_idempotency_keys_and_emit_events() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(10, 5).await;
    let (_, token) = app.user_token();
    let path = format!("/time-sales/{sale}/orders");
    let order = |q: i64| {
        app.call(
            reqwest::Method::POST,
            &path,
            &token,
            Some(json!({"quantity": q})),
            Some("order-key-1"),
        )
    };
    let (s1, b1) = order(2).await;
    let (s2, b2) = order(2).await;
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    assert_eq!(b1, b2);
    let (s, b) = order(1).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("IDEMPOTENCY_MISMATCH")),
        "{b}"
    );
    assert_eq!(app.db_sold(sale).await, (2, 2));
    app.assert_invariant(sale).await;

    let cancel_path = format!("/orders/{}/cancel", b1["id"].as_str().unwrap());
    let cancel = || {
        app.call(
            reqwest::Method::POST,
            &cancel_path,
            &token,
            Some(json!({})),
            Some("cancel-key-1"),
        )
    };
    let (c1, cb1) = cancel().await;
    let (c2, cb2) = cancel().await;
    assert_eq!((c1, c2), (200, 200), "{cb1} {cb2}");
    assert_eq!(cb1, cb2);
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(10));

    let events: Vec<(String,)> = sqlx::query_as("SELECT topic FROM outbox ORDER BY topic")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        topics,
        vec![
            "order.cancelled",
            "order.created",
            "timesale.product_created",
            "timesale.sale_created"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_after_admission_is_compensated() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(4, 2).await;
    // Make every order insert fail after Redis admitted it.
    sqlx::query(
        "ALTER TABLE time_sale_orders ADD CONSTRAINT break_inserts CHECK (false) NOT VALID",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (_, token) = app.user_token();
    let (s, b) = app.order(sale, &token, 2).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (503, &json!("UNAVAILABLE")),
        "{b}"
    );
    sqlx::query("ALTER TABLE time_sale_orders DROP CONSTRAINT break_inserts")
        .execute(&app.db)
        .await
        .unwrap();
    // The stock and the user's allowance are both back.
    assert_eq!(app.redis_stock(sale).await, Some(4));
    let (s, b) = app.order(sale, &token, 2).await;
    assert_eq!(s, 201, "{b}");
    app.assert_invariant(sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_what_a_wrong_redis_admits() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(5, 2).await;
    let (_, a) = app.user_token();
    let user_a = app.order(sale, &a, 2).await;
    assert_eq!(user_a.0, 201, "{}", user_a.1);
    let owner: Uuid = user_a.1["user_id"].as_str().unwrap().parse().unwrap();
    let mut conn = app.redis.clone();
    // Redis forgot that user A holds 2: the database still refuses a third.
    let _: () = redis::cmd("HDEL")
        .arg(promo_store::keys::timesale_users(sale))
        .arg(owner.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let (s, b) = app.order(sale, &a, 1).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("LIMIT_EXCEEDED")),
        "{b}"
    );
    // The stock slot was real and came back.
    assert_eq!(app.redis_stock(sale).await, Some(3));

    // Sell the rest, then let Redis believe there is more than the truth.
    for _ in 0..3 {
        let (_, t) = app.user_token();
        assert_eq!(app.order(sale, &t, 1).await.0, 201);
    }
    let _: () = redis::cmd("SET")
        .arg(promo_store::keys::timesale_inventory(sale))
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, t) = app.user_token();
    let (s, b) = app.order(sale, &t, 1).await;
    assert_eq!((s, &b["error"]["code"]), (409, &json!("SOLD_OUT")), "{b}");
    assert_eq!(app.db_sold(sale).await, (5, 5));
    // A forced rebuild brings Redis back to the truth.
    let svc = TimesaleService::new(
        app.db.clone(),
        Arc::new(RedisStock::new(app.redis.clone())),
        Arc::new(SystemClock),
        900,
    );
    assert!(svc.rebuild_inventory(sale, true).await.unwrap());
    app.assert_invariant(sale).await;
    assert_eq!(app.redis_stock(sale).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_the_timesale_role_over_grpc() {
    let app = spawn_timesale_app_over_grpc().await;
    let sale = app.create_sale(2, 1).await;
    let (s, listed) = app.get("/products", &app.admin).await;
    assert_eq!((s, listed["total"].clone()), (200, json!(1)), "{listed}");
    let (user, token) = app.user_token();
    let (s, order) = app.order(sale, &token, 1).await;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["user_id"], user.to_string());
    let (s, b) = app.order(sale, &token, 1).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("LIMIT_EXCEEDED")),
        "{b}"
    );
    let (s, b) = app.order(sale, &token, 0).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("quantity")),
        "{b}"
    );
    let (_, other) = app.user_token();
    assert_eq!(app.order(sale, &other, 1).await.0, 201);
    let (_, third) = app.user_token();
    let (s, b) = app.order(sale, &third, 1).await;
    assert_eq!((s, &b["error"]["code"]), (409, &json!("SOLD_OUT")), "{b}");
    let (s, got) = app.get(&format!("/time-sales/{sale}"), &token).await;
    assert_eq!(
        (s, got["remaining_quantity"].clone(), got["status"].clone()),
        (200, json!(0), json!("ACTIVE")),
        "{got}"
    );
    let id = order["id"].as_str().unwrap();
    let (s, b) = app.get(&format!("/orders/{id}"), &token).await;
    assert_eq!((s, b["id"].clone()), (200, order["id"].clone()), "{b}");
    let (s, b) = app
        .post(&format!("/orders/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!((s, b["status"].clone()), (200, json!("CANCELLED")), "{b}");
    assert!(b["cancelled_at"].is_string(), "{b}");
    let (s, b) = app
        .post(&format!("/orders/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("ALREADY_CANCELLED")),
        "{b}"
    );
    let (s, page) = app.get("/orders", &token).await;
    assert_eq!((s, page["total"].clone()), (200, json!(1)), "{page}");
    let path = format!("/time-sales/{sale}");
    let (s, b) = app
        .patch(&path, &app.admin, json!({"status": "CANCELLED"}))
        .await;
    assert_eq!((s, b["status"].clone()), (200, json!("CANCELLED")), "{b}");
    let (s, b) = app.order(sale, &third, 1).await;
    assert_eq!((s, &b["error"]["code"]), (422, &json!("NOT_ACTIVE")), "{b}");
    let (s, page) = app.get("/time-sales?status=CANCELLED", &token).await;
    assert_eq!((s, page["total"].clone()), (200, json!(1)), "{page}");
    app.assert_invariant(sale).await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_time_sale_routes() {
    let app = spawn_timesale_app().await;
    let paths = super::helpers::openapi_paths(&app.client, &app.base).await;
    for p in [
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/time-sales",
        "/api/v1/time-sales/{id}",
        "/api/v1/time-sales/{id}/orders",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/cancel",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi");
    }
    // The role's own port serves the same routes.
    let (_, token) = app.user_token();
    let resp = app
        .client
        .get(format!("{}/api/v1/time-sales", app.timesale_base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// The real binary, roles in separate processes found through etcd: killing
/// the timesale process mid-sale (SIGKILL, no drain) and starting another on
/// the same database keeps the stock, and the gateway finds the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_timesale_process_keeps_its_stock() {
    use super::helpers::{admin_token, free_port, fresh_db, test_keys};
    use super::procs::{etcd_gateway, etcd_role_env, spawn_process, wait_http};
    let prefix = format!("/promo-test/{}", Uuid::new_v4().simple());
    let db = fresh_db("split_timesale").await;
    let timesale_env = |http: u16| etcd_role_env("timesale", &prefix, &db, http);
    let http_a = free_port();
    let a = spawn_process(&timesale_env(http_a));
    wait_http(&format!("http://127.0.0.1:{http_a}/readyz")).await;
    let (_gw, gateway) = etcd_gateway(&prefix).await;
    let base = format!("{gateway}/api/v1");

    let keys = test_keys();
    let admin = admin_token(&keys);
    let client = reqwest::Client::new();
    let post = |path: String, token: String, body: serde_json::Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.post(url).bearer_auth(token).json(&body).send().await;
            match r {
                Ok(r) => (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                ),
                Err(_) => (0, serde_json::Value::Null),
            }
        }
    };
    // Until the gateway has seen the instance in etcd it answers 503.
    let until_created = |path: &'static str, body: serde_json::Value| {
        let (post, admin) = (&post, admin.clone());
        async move {
            let start = std::time::Instant::now();
            loop {
                let (s, b) = post(path.to_owned(), admin.clone(), body.clone()).await;
                if s == 201 {
                    return b;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "{s}: {b}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let product = until_created("/products", json!({"name": "p", "price": 1000})).await;
    let now = chrono::Utc::now();
    let sale = until_created(
        "/time-sales",
        json!({"product_id": product["id"], "total_quantity": 10, "sale_price": 500,
               "per_user_limit": 5, "start_at": now - chrono::Duration::minutes(1),
               "end_at": now + chrono::Duration::hours(1)}),
    )
    .await;
    let sale_id: Uuid = sale["id"].as_str().unwrap().parse().unwrap();
    let user = keys
        .issue(Uuid::new_v4(), promo_domain::principal::Role::User)
        .unwrap();
    let orders = format!("/time-sales/{sale_id}/orders");
    let (s, b) = post(orders.clone(), user.clone(), json!({"quantity": 3})).await;
    assert_eq!(s, 201, "{b}");

    drop(a);
    let http_b = free_port();
    let _b = spawn_process(&timesale_env(http_b));
    wait_http(&format!("http://127.0.0.1:{http_b}/readyz")).await;
    let start = std::time::Instant::now();
    loop {
        let (s, b) = post(orders.clone(), user.clone(), json!({"quantity": 2})).await;
        if s == 201 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s}: {b}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let redis = promo_store::cache::connect(&super::helpers::redis_url())
        .await
        .unwrap();
    let mut conn = redis.clone();
    let stock: i64 = redis::cmd("GET")
        .arg(promo_store::keys::timesale_inventory(sale_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stock, 5);
    // The dead instance stays in etcd until its lease ends: a call may still
    // be routed to it and fail to connect (503, nothing done), so retry those.
    let start = std::time::Instant::now();
    let (s, b) = loop {
        let (s, b) = post(orders.clone(), user.clone(), json!({"quantity": 1})).await;
        if s != 503 || start.elapsed() > Duration::from_secs(20) {
            break (s, b);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("LIMIT_EXCEEDED")),
        "{b}"
    );
}

/// A rough throughput probe of the order path in process (no HTTP): confirmed
/// orders (group-committed) and sold-out refusals (Redis only). Ignored by
/// default; run with `--run-ignored only` on an idle machine.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn order_throughput_probe() {
    use futures::StreamExt;
    use promo_domain::principal::{Principal, Role};
    use promod::ctx::Ctx;
    use promod::timesale::TimesaleApi;
    let app = spawn_timesale_app().await;
    let stock = 10_000;
    let sale = app.create_sale(stock, 1).await;
    let svc = Arc::new(TimesaleService::new(
        app.db.clone(),
        Arc::new(RedisStock::new(app.redis.clone())),
        Arc::new(SystemClock),
        900,
    ));
    let run = |n: usize| {
        let svc = svc.clone();
        async move {
            let started = std::time::Instant::now();
            let results: Vec<bool> = futures::stream::iter(0..n)
                .map(|_| {
                    let svc = svc.clone();
                    async move {
                        let user = Uuid::new_v4();
                        let ctx = Ctx {
                            principal: Principal {
                                user_id: user,
                                role: Role::User,
                            },
                            idem: None,
                        };
                        svc.order(&ctx, sale, user, one()).await.is_ok()
                    }
                })
                .buffer_unordered(512)
                .collect()
                .await;
            (results.iter().filter(|ok| **ok).count(), started.elapsed())
        }
    };
    let (ok, took) = run(stock as usize).await;
    eprintln!(
        "confirmed {ok} in {took:?}: {:.0}/s",
        ok as f64 / took.as_secs_f64()
    );
    assert_eq!(ok, stock as usize);
    let (ok, took) = run(30_000).await;
    eprintln!(
        "sold-out refusals 30000 in {took:?}: {:.0}/s",
        30_000.0 / took.as_secs_f64()
    );
    assert_eq!(ok, 0);
    app.assert_invariant(sale).await;
}

#[tokio::test]
async fn a_retried_order_while_its_first_attempt_runs_is_asked_to_wait_not_refused() {
    let app = spawn_timesale_app().await;
    let sale = app.create_sale(1, 1).await;
    let (_, other) = app.user_token();
    assert_eq!(app.order(sale, &other, 1).await.0, 201);
    let (a, token) = app.user_token();
    let path = format!("/time-sales/{sale}/orders");
    let order = || {
        app.call(
            reqwest::Method::POST,
            &path,
            &token,
            Some(json!({"quantity": 1})),
            Some("k"),
        )
    };
    super::helpers::hold_claim(promo_store::stock::Kind::Sale, sale, a, "k", true).await;
    let (s, b) = order().await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{b}"
    );
    super::helpers::hold_claim(promo_store::stock::Kind::Sale, sale, a, "k", false).await;
    let (s, b) = order().await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("SOLD_OUT")),
        "{b}"
    );
    assert_eq!(app.db_sold(sale).await.0, 1);
    app.assert_invariant(sale).await;
}

/// One unit, confirmed at once.
fn one() -> promo_domain::timesale::NewOrder {
    promo_domain::timesale::NewOrder {
        quantity: 1,
        hold: false,
        hold_seconds: None,
    }
}
