//! Coupon stacking (API.md "Coupon codes", last paragraph): one user's
//! order carries several coupons only if all are stackable, all name one
//! `order_amount`, and their discounts never sum past it; concurrent uses
//! and reserves on one order are decided one after another. Real
//! PostgreSQL and Redis.

use super::helpers::{concurrently, id, spawn_app_with, tally, TestApp};
use promo_domain::clock::SharedClock;
use promo_store::stock::MemoryStock;
use promod::coupon::CouponService;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An app whose sweeper stays out of the way until a test sweeps.
async fn app() -> Arc<TestApp> {
    Arc::new(spawn_app_with(|c| c.holds.sweep_every_ms = 3_600_000).await)
}

/// A FIXED policy of `value` off any order, 20 coupons a user.
async fn policy(app: &TestApp, stackable: bool, value: i64) -> Uuid {
    let now = chrono::Utc::now();
    let p = app
        .created(
            "/coupon-policies",
            json!({
                "name": format!("fixed {value}"),
                "discount_type": "FIXED",
                "discount_value": value,
                "total_quantity": 1000,
                "per_user_limit": 20,
                "stackable": stackable,
                "valid_from": now - chrono::Duration::minutes(1),
                "valid_until": now + chrono::Duration::days(1),
            }),
        )
        .await;
    assert_eq!(p["stackable"], stackable, "{p}");
    id(&p).parse().unwrap()
}

/// `n` coupons of `policy` issued to the holder of `token`: their ids.
async fn coupons(app: &TestApp, token: &str, policy: Uuid, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let c = app
            .created_by("/coupons/issue", token, json!({"policy_id": policy}))
            .await;
        ids.push(id(&c));
    }
    ids
}

/// One coupon of a fresh policy, issued to the holder of `token`.
async fn coupon(app: &TestApp, token: &str, stackable: bool, value: i64) -> String {
    let p = policy(app, stackable, value).await;
    coupons(app, token, p, 1).await.remove(0)
}

async fn use_on(app: &TestApp, token: &str, id: &str, order: &str, amount: i64) -> (u16, Value) {
    let body = json!({"order_id": order, "order_amount": amount});
    app.post(&format!("/coupons/{id}/use"), token, body).await
}

async fn reserve_on(
    app: &TestApp,
    token: &str,
    id: &str,
    order: &str,
    amount: i64,
) -> (u16, Value) {
    let body = json!({"order_id": order, "order_amount": amount, "hold_seconds": 60});
    app.post(&format!("/coupons/{id}/reserve"), token, body)
        .await
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    app.post(&format!("/coupons/{id}/cancel"), token, json!({}))
        .await
}

/// The discount an answer that must be a 200 gave.
fn granted((s, b): (u16, Value)) -> i64 {
    assert_eq!(s, 200, "{b}");
    b["discount_amount"].as_i64().unwrap()
}

/// The error code of a refusal with status `status`.
fn refused((s, b): (u16, Value), status: u16) -> String {
    assert_eq!(s, status, "{b}");
    b["error"]["code"].as_str().unwrap().to_owned()
}

/// `user`'s coupons on `order` as stored: (status, order_amount, discount).
async fn on_order(app: &TestApp, user: Uuid, order: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT status, order_amount, discount_amount FROM coupons
         WHERE user_id = $1 AND coalesce(order_id, reserved_order_id) = $2
           AND status IN ('USED', 'RESERVED')
         ORDER BY discount_amount DESC",
    )
    .bind(user)
    .bind(order)
    .fetch_all(&app.coupon_db)
    .await
    .unwrap()
}

/// The discounts of `on_order`, largest first.
async fn discounts(app: &TestApp, user: Uuid, order: &str) -> Vec<i64> {
    on_order(app, user, order)
        .await
        .into_iter()
        .map(|(_, _, d)| d)
        .collect()
}

/// Runs every call of `ids` at once: `call(app, token, id)`.
async fn all_at_once<F, Fut>(
    app: &Arc<TestApp>,
    token: &str,
    ids: &[String],
    call: F,
) -> Vec<(u16, Value)>
where
    F: Fn(Arc<TestApp>, String, String, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, Value)> + Send + 'static,
{
    let call = Arc::new(call);
    concurrently(ids.len(), |i| {
        let (app, token, id, call) = (app.clone(), token.to_owned(), ids[i].clone(), call.clone());
        async move { call(app, token, id, i).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_uses_of_non_stackable_coupons_leave_one_on_the_order() {
    let app = app().await;
    let (user, token) = app.user_token();
    let p = policy(&app, false, 100).await;
    let ids = coupons(&app, &token, p, 10).await;
    let answers = all_at_once(&app, &token, &ids, |app, token, id, _| async move {
        use_on(&app, &token, &id, "o-1", 1000).await
    })
    .await;
    assert_eq!(tally(&answers, 200, (409, "NOT_STACKABLE")), (1, 9));
    let on = on_order(&app, user, "o-1").await;
    assert_eq!(on, [("USED".to_owned(), 1000, 100)]);
    let (available,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM coupons WHERE user_id = $1 AND status = 'AVAILABLE'")
            .bind(user)
            .fetch_one(&app.coupon_db)
            .await
            .unwrap();
    assert_eq!(available, 9, "a refusal changes nothing");
}

#[tokio::test]
async fn a_later_stackable_coupon_gets_what_is_left() {
    let app = app().await;
    let (user, token) = app.user_token();
    let p = policy(&app, true, 400).await;
    let ids = coupons(&app, &token, p, 4).await;
    let mut got = Vec::new();
    for id in &ids {
        got.push(granted(use_on(&app, &token, id, "o-1", 1000).await));
    }
    assert_eq!(got, [400, 400, 200, 0]);
    assert_eq!(discounts(&app, user, "o-1").await, [400, 400, 200, 0]);
    // The events carry the cut discount.
    let (cut,): (Value,) = sqlx::query_as(
        "SELECT payload->'data'->'discount_amount' FROM outbox
         WHERE topic = 'coupon.used' AND aggregate_id = $1",
    )
    .bind(&ids[2])
    .fetch_one(&app.coupon_db)
    .await
    .unwrap();
    assert_eq!(cut, json!(200));
}

/// Ten stackable coupons of 300 each on an order of 1000, half used and
/// half reserved, all at once: decided one after another, so three take
/// 300, one the 100 left and six nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stackable_coupons_never_exceed_the_order() {
    let app = app().await;
    let (user, token) = app.user_token();
    let p = policy(&app, true, 300).await;
    let ids = coupons(&app, &token, p, 10).await;
    let answers = all_at_once(&app, &token, &ids, |app, token, id, i| async move {
        if i % 2 == 0 {
            use_on(&app, &token, &id, "o-1", 1000).await
        } else {
            reserve_on(&app, &token, &id, "o-1", 1000).await
        }
    })
    .await;
    let mut got: Vec<i64> = answers.into_iter().map(granted).collect();
    got.sort_unstable_by(|a, b| b.cmp(a));
    let expected = [300, 300, 300, 100, 0, 0, 0, 0, 0, 0];
    assert_eq!(got, expected);
    assert_eq!(discounts(&app, user, "o-1").await, expected);
}

#[tokio::test]
async fn every_coupon_on_an_order_names_the_same_amount() {
    let app = app().await;
    let (_, token) = app.user_token();
    let p = policy(&app, true, 100).await;
    let ids = coupons(&app, &token, p, 2).await;
    granted(use_on(&app, &token, &ids[0], "o-1", 1000).await);
    for answer in [
        use_on(&app, &token, &ids[1], "o-1", 900).await,
        reserve_on(&app, &token, &ids[1], "o-1", 1100).await,
    ] {
        assert_eq!(answer.0, 400, "{}", answer.1);
        assert_eq!(answer.1["error"]["field"], "order_amount", "{}", answer.1);
    }
    assert_eq!(
        granted(use_on(&app, &token, &ids[1], "o-1", 1000).await),
        100
    );
}

#[tokio::test]
async fn stackable_and_not_stackable_never_share_an_order() {
    let app = app().await;
    let (user, token) = app.user_token();
    let (st, not) = (
        policy(&app, true, 100).await,
        policy(&app, false, 100).await,
    );
    let st = coupons(&app, &token, st, 2).await;
    let not = coupons(&app, &token, not, 2).await;
    // A stackable first, then one that is not; and the other way round.
    granted(use_on(&app, &token, &st[0], "o-1", 1000).await);
    let refusal = refused(use_on(&app, &token, &not[0], "o-1", 1000).await, 409);
    assert_eq!(refusal, "NOT_STACKABLE");
    granted(use_on(&app, &token, &not[1], "o-2", 1000).await);
    let refusal = refused(reserve_on(&app, &token, &st[1], "o-2", 1000).await, 409);
    assert_eq!(refusal, "NOT_STACKABLE");
    assert_eq!(discounts(&app, user, "o-1").await, [100]);
    assert_eq!(discounts(&app, user, "o-2").await, [100]);
    // An order is one user's: another user's "o-2" is another order.
    let (_, other) = app.user_token();
    let theirs = coupon(&app, &other, false, 100).await;
    granted(use_on(&app, &other, &theirs, "o-2", 1000).await);
}

#[tokio::test]
async fn a_reservation_is_on_its_order() {
    let app = app().await;
    let (user, token) = app.user_token();
    let held = coupon(&app, &token, false, 100).await;
    let other = coupon(&app, &token, false, 100).await;
    let b = reserve_on(&app, &token, &held, "o-1", 1000).await;
    assert_eq!(granted(b), 100);
    assert_eq!(
        on_order(&app, user, "o-1").await,
        [("RESERVED".into(), 1000, 100)]
    );
    let refusal = refused(use_on(&app, &token, &other, "o-1", 1000).await, 409);
    assert_eq!(refusal, "NOT_STACKABLE");
    let refusal = refused(reserve_on(&app, &token, &other, "o-1", 1000).await, 409);
    assert_eq!(refusal, "NOT_STACKABLE");
    // Its own confirm is no second coupon.
    assert_eq!(granted(use_on(&app, &token, &held, "o-1", 1000).await), 100);
}

/// A reserved 600 and a used 600 on 1000: the use gets the 400 left, the
/// confirm keeps its 600, and a confirm restating the amount is refused
/// while another coupon is on the order (alone, it may restate it).
#[tokio::test]
async fn a_confirm_is_cut_by_the_others_and_keeps_their_amount() {
    let app = app().await;
    let (user, token) = app.user_token();
    let p = policy(&app, true, 600).await;
    let ids = coupons(&app, &token, p, 3).await;
    assert_eq!(
        granted(reserve_on(&app, &token, &ids[0], "o-1", 1000).await),
        600
    );
    assert_eq!(
        granted(use_on(&app, &token, &ids[1], "o-1", 1000).await),
        400
    );
    let restated = use_on(&app, &token, &ids[0], "o-1", 2000).await;
    assert_eq!(
        restated.1["error"]["field"], "order_amount",
        "{}",
        restated.1
    );
    assert_eq!(
        granted(use_on(&app, &token, &ids[0], "o-1", 1000).await),
        600
    );
    assert_eq!(discounts(&app, user, "o-1").await, [600, 400]);

    assert_eq!(
        granted(reserve_on(&app, &token, &ids[2], "o-2", 1000).await),
        600
    );
    assert_eq!(
        granted(use_on(&app, &token, &ids[2], "o-2", 500).await),
        500
    );
    assert_eq!(
        on_order(&app, user, "o-2").await,
        [("USED".into(), 500, 500)]
    );
}

/// A second coupon service on the app's database and clock, to sweep with.
async fn sweep(app: &TestApp) -> usize {
    let svc = CouponService::new(
        app.coupon_db.clone(),
        Arc::new(MemoryStock::default()),
        app.clock.clone(),
        900,
    );
    let clock: SharedClock = app.clock.clone();
    promod::sweep::sweep(&svc, &clock, 100, &CancellationToken::new()).await
}

/// Whether the coupon carries no order amount and no discount.
async fn off_every_order(app: &TestApp, id: &str) -> bool {
    let (amount, discount): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT order_amount, discount_amount FROM coupons WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.coupon_db)
            .await
            .unwrap();
    amount.is_none() && discount.is_none()
}

#[tokio::test]
async fn an_order_left_by_its_coupon_takes_a_new_one() {
    let app = app().await;
    let (_, token) = app.user_token();
    let p = policy(&app, false, 100).await;
    let ids = coupons(&app, &token, p, 6).await;
    // An undone use, a released reservation and an expired one.
    granted(use_on(&app, &token, &ids[0], "o-1", 1000).await);
    granted(reserve_on(&app, &token, &ids[2], "o-2", 1000).await);
    let body = json!({"order_id": "o-3", "order_amount": 1000, "hold_seconds": 5});
    let (s, b) = app
        .post(&format!("/coupons/{}/reserve", ids[4]), &token, body)
        .await;
    assert_eq!(s, 200, "{b}");
    for (order, next) in [("o-1", &ids[1]), ("o-2", &ids[3]), ("o-3", &ids[5])] {
        let refusal = refused(use_on(&app, &token, next, order, 1000).await, 409);
        assert_eq!(refusal, "NOT_STACKABLE", "{order}");
    }
    for id in [&ids[0], &ids[2]] {
        let (s, c) = cancel(&app, &token, id).await;
        assert_eq!((s, c["status"].as_str()), (200, Some("AVAILABLE")), "{c}");
    }
    app.clock.advance(chrono::Duration::seconds(6));
    assert_eq!(sweep(&app).await, 1);
    for (order, gone, next) in [
        ("o-1", &ids[0], &ids[1]),
        ("o-2", &ids[2], &ids[3]),
        ("o-3", &ids[4], &ids[5]),
    ] {
        assert!(off_every_order(&app, gone).await, "{order}");
        assert_eq!(granted(use_on(&app, &token, next, order, 1000).await), 100);
    }
}

/// The read every use and reserve makes under the order's lock finds the
/// order's coupons through `coupons_on_order` (sequential scans are turned
/// off, so a plan that cannot use the index still shows one).
#[tokio::test]
async fn the_order_read_uses_its_index() {
    let app = app().await;
    let mut tx = app.coupon_db.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let explain = format!("EXPLAIN {}", promod::coupon::store::ON_ORDER);
    let plan: Vec<(String,)> = sqlx::query_as(&explain)
        .bind(Uuid::new_v4())
        .bind("o-1")
        .bind(Uuid::new_v4())
        .bind(1000i64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|(l,)| l).collect();
    // The order in the index condition, not only the user: a filter that
    // spells the expression differently would still use the index by user.
    let by_order = |l: &String| {
        l.contains("Index Cond") && l.contains("COALESCE(order_id, reserved_order_id) =")
    };
    assert!(
        plan.iter().any(|l| l.contains("using coupons_on_order")),
        "{plan:#?}"
    );
    assert!(plan.iter().any(by_order), "{plan:#?}");
}

#[tokio::test]
async fn the_openapi_document_names_not_stackable() {
    let app = app().await;
    let paths = super::helpers::openapi_paths(&app.client, &app.base).await;
    for route in ["use", "reserve"] {
        let conflict =
            &paths[&format!("/api/v1/coupons/{{id}}/{route}")]["post"]["responses"]["409"];
        let text = conflict["description"].as_str().unwrap_or_default();
        assert!(text.contains("NOT_STACKABLE"), "{route}: {conflict}");
    }
}
