//! Coupon reservations (API.md "Holds"): reserve, then confirm by a use for
//! the same order, release by a cancel, or expiry by the sweeper; each
//! reservation resolved exactly once. Real PostgreSQL and Redis; the clock is
//! the app's, stepped past deadlines.

use super::helpers::{concurrently, id, openapi_paths, spawn_app_with, TestApp};
use promo_domain::clock::{Clock, SharedClock};
use promo_store::stock::MemoryStock;
use promod::coupon::CouponService;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// An app whose own sweeper stays out of the way (it sweeps once at start,
/// then hourly), so that the tests decide when expiry runs.
async fn app() -> Arc<TestApp> {
    Arc::new(spawn_app_with(|c| c.holds.sweep_every_ms = 3_600_000).await)
}

/// A user's token and a coupon issued to them (10 %, min order 1000).
async fn issued(app: &TestApp) -> (String, String) {
    let policy = app.create_policy(10, 1).await;
    let (_, token) = app.user_token();
    let c = app
        .created_by("/coupons/issue", &token, json!({"policy_id": policy}))
        .await;
    (token, id(&c))
}

fn reserve_body(order: &str, hold: Option<i64>) -> Value {
    let mut body = json!({"order_id": order, "order_amount": 20000});
    if let Some(h) = hold {
        body["hold_seconds"] = json!(h);
    }
    body
}

async fn reserve(
    app: &TestApp,
    token: &str,
    id: &str,
    order: &str,
    hold: Option<i64>,
) -> (u16, Value) {
    let path = format!("/coupons/{id}/reserve");
    app.post(&path, token, reserve_body(order, hold)).await
}

/// `reserve`, which must succeed: the reserved coupon.
async fn reserved(app: &TestApp, token: &str, id: &str, order: &str, hold: i64) -> Value {
    let (s, b) = reserve(app, token, id, order, Some(hold)).await;
    assert_eq!(s, 200, "{b}");
    b["coupon"].clone()
}

async fn use_for(app: &TestApp, token: &str, id: &str, order: &str) -> (u16, Value) {
    let body = json!({"order_id": order, "order_amount": 20000});
    app.post(&format!("/coupons/{id}/use"), token, body).await
}

async fn cancel(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    app.post(&format!("/coupons/{id}/cancel"), token, json!({}))
        .await
}

fn code(b: &Value) -> &str {
    b["error"]["code"].as_str().unwrap_or("")
}

async fn status(app: &TestApp, token: &str, id: &str) -> String {
    let (s, c) = app.get(&format!("/coupons/{id}"), token).await;
    assert_eq!(s, 200, "{c}");
    c["status"].as_str().unwrap().to_owned()
}

/// The coupon's events in outbox order: (topic, data).
async fn events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT topic, payload->'data' FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&app.coupon_db)
    .await
    .unwrap();
    rows
}

/// The events that resolve a hold: a `coupon.used` that confirmed one (its
/// `reserved_until` is set), and every `coupon.reservation_released`.
fn resolutions(events: &[(String, Value)]) -> Vec<&(String, Value)> {
    events
        .iter()
        .filter(|(t, d)| {
            t == "coupon.reservation_released"
                || (t == "coupon.used" && !d["reserved_until"].is_null())
        })
        .collect()
}

/// A second coupon service on the app's database and clock, to sweep with
/// (two of them are two sweeping processes).
fn sweeper(app: &TestApp) -> CouponService {
    CouponService::new(
        app.coupon_db.clone(),
        Arc::new(MemoryStock::default()),
        app.clock.clone(),
        900,
    )
}

async fn sweep(svc: &CouponService, app: &TestApp, batch: i64) -> usize {
    let clock: SharedClock = app.clock.clone();
    promod::sweep::sweep(svc, &clock, batch, &CancellationToken::new()).await
}

#[tokio::test]
async fn the_same_order_confirms_its_reservation() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    let (s, b) = reserve(&app, &token, &id, "o-1", Some(60)).await;
    assert_eq!((s, &b["discount_amount"]), (200, &json!(2000)), "{b}");
    let c = &b["coupon"];
    assert_eq!(
        (c["status"].as_str(), c["reserved_order_id"].as_str()),
        (Some("RESERVED"), Some("o-1"))
    );
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(c["reserved_until"].clone()).unwrap();
    let expected = app.clock.now() + chrono::Duration::seconds(60);
    assert!(
        (until - expected).num_seconds().abs() <= 2,
        "{until} vs {expected}"
    );
    let (_, page) = app.get("/coupons?status=RESERVED", &token).await;
    assert_eq!(
        (page["total"].as_i64(), page["items"][0]["id"].as_str()),
        (Some(1), Some(&*id))
    );
    let (_, page) = app.get("/coupons?status=AVAILABLE", &token).await;
    assert_eq!(page["total"], 0);

    let (s, b) = reserve(&app, &token, &id, "o-1", None).await;
    assert_eq!((s, code(&b)), (409, "ALREADY_USED"));
    let (s, b) = use_for(&app, &token, &id, "o-2").await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, &b["discount_amount"]), (200, &json!(2000)), "{b}");
    let c = &b["coupon"];
    assert_eq!(
        (c["status"].as_str(), c["order_id"].as_str()),
        (Some("USED"), Some("o-1"))
    );
    assert!(
        c["reserved_order_id"].is_null() && c["reserved_until"].is_null(),
        "{c}"
    );
    // A second confirm of the resolved hold (API.md "Holds"); another
    // order finds the coupon used (v1).
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, code(&b)), (409, "ALREADY_RESOLVED"));
    let (s, b) = use_for(&app, &token, &id, "o-3").await;
    assert_eq!((s, code(&b)), (409, "ALREADY_USED"));

    let ev = events(&app, &id).await;
    let topics: Vec<&str> = ev.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["coupon.issued", "coupon.reserved", "coupon.used"]);
    assert_eq!(ev[1].1["order_id"], "o-1");
    assert_eq!(ev[1].1["discount_amount"], 2000);
    assert_eq!(ev[2].1["reserved_until"], ev[1].1["reserved_until"]);
}

#[tokio::test]
async fn a_cancel_releases_the_reservation_once() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    reserved(&app, &token, &id, "o-1", 60).await;
    let (s, c) = cancel(&app, &token, &id).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("AVAILABLE")), "{c}");
    assert!(
        c["reserved_order_id"].is_null() && c["reserved_until"].is_null(),
        "{c}"
    );
    // The hold is resolved: neither a second release nor a late confirm.
    let (s, b) = cancel(&app, &token, &id).await;
    assert_eq!((s, code(&b)), (409, "ALREADY_RESOLVED"));
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, code(&b)), (409, "ALREADY_RESOLVED"));
    // The coupon itself is free again.
    reserved(&app, &token, &id, "o-2", 60).await;
    let (s, b) = use_for(&app, &token, &id, "o-2").await;
    assert_eq!(
        (s, b["coupon"]["status"].as_str()),
        (200, Some("USED")),
        "{b}"
    );

    let ev = events(&app, &id).await;
    let released: Vec<_> = ev
        .iter()
        .filter(|(t, _)| t == "coupon.reservation_released")
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (&released[0].1["reason"], &released[0].1["order_id"]),
        (&json!("cancelled"), &json!("o-1"))
    );
}

#[tokio::test]
async fn a_lapsed_reservation_is_expired_by_the_sweeper_only_once() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    reserved(&app, &token, &id, "o-1", 30).await;
    let svc = sweeper(&app);
    assert_eq!(sweep(&svc, &app, 100).await, 0, "not due yet");
    app.clock.advance(chrono::Duration::seconds(31));
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"));
    let (s, b) = cancel(&app, &token, &id).await;
    assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"));
    assert_eq!(
        status(&app, &token, &id).await,
        "RESERVED",
        "only the sweeper resolves it"
    );

    assert_eq!(sweep(&svc, &app, 100).await, 1);
    assert_eq!(sweep(&svc, &app, 100).await, 0);
    assert_eq!(status(&app, &token, &id).await, "AVAILABLE");
    // Swept or not, a late confirm or release hears that the hold expired.
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"));
    let (s, b) = cancel(&app, &token, &id).await;
    assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"));
    let ev = events(&app, &id).await;
    let res = resolutions(&ev);
    assert_eq!(res.len(), 1);
    assert_eq!(
        (&res[0].1["reason"], &res[0].1["order_id"]),
        (&json!("expired"), &json!("o-1"))
    );
    reserved(&app, &token, &id, "o-2", 30).await;
}

#[tokio::test]
async fn the_roles_own_sweeper_expires_reservations() {
    let app = spawn_app_with(|c| c.holds.sweep_every_ms = 100).await;
    let (token, id) = issued(&app).await;
    reserved(&app, &token, &id, "o-1", 1).await;
    app.clock.advance(chrono::Duration::seconds(2));
    super::helpers::eventually("the sweeper released the coupon", || async {
        status(&app, &token, &id).await == "AVAILABLE"
    })
    .await;
    assert_eq!(resolutions(&events(&app, &id).await).len(), 1);
}

/// A hold never outlives its coupon: asked past the coupon's expiry, it ends
/// with the coupon.
#[tokio::test]
async fn a_reservation_ends_with_its_coupon() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    let (_, c) = app.get(&format!("/coupons/{id}"), &token).await;
    app.clock
        .advance(chrono::Duration::hours(23) + chrono::Duration::minutes(59));
    let held = reserved(&app, &token, &id, "o-1", 86_400).await;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(held["reserved_until"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(c["expires_at"].as_str().unwrap()).unwrap()
    );
}

/// Ten confirms and ten releases at once: the hold resolves once. A cancel
/// that comes after a confirm has committed is a cancel of that use, and a
/// use after it a new use; both are ordinary changes with their own event,
/// never a second resolution of the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_confirms_and_releases_resolve_the_hold_once() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    reserved(&app, &token, &id, "o-1", 60).await;
    let (token, id) = (Arc::new(token), Arc::new(id));
    let answers = concurrently(20, |i| {
        let (app, token, id) = (app.clone(), token.clone(), id.clone());
        async move {
            if i % 2 == 0 {
                use_for(&app, &token, &id, "o-1").await
            } else {
                cancel(&app, &token, &id).await
            }
        }
    })
    .await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    for (s, b) in answers.iter().filter(|(s, _)| *s != 200) {
        let allowed = ["ALREADY_RESOLVED", "ALREADY_USED", "ALREADY_CANCELLED"];
        assert!(*s == 409 && allowed.contains(&code(b)), "{s} {b}");
    }
    let ev = events(&app, &id).await;
    assert_eq!(resolutions(&ev).len(), 1, "{ev:?}");
    // issued + reserved + one event per success.
    assert_eq!(ev.len(), 2 + ok, "{ev:?}");
}

/// Twenty confirms: one wins, the rest lost the hold's UPDATE or came after
/// it (`ALREADY_RESOLVED` either way).
/// Twenty releases: one wins, every other is `ALREADY_RESOLVED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_confirms_or_twenty_releases_succeed_once() {
    let app = app().await;
    for confirm in [true, false] {
        let (token, id) = issued(&app).await;
        reserved(&app, &token, &id, "o-1", 60).await;
        let (token, id) = (Arc::new(token), Arc::new(id));
        let answers = concurrently(20, |_| {
            let (app, token, id) = (app.clone(), token.clone(), id.clone());
            async move {
                match confirm {
                    true => use_for(&app, &token, &id, "o-1").await,
                    false => cancel(&app, &token, &id).await,
                }
            }
        })
        .await;
        assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 1);
        let allowed: &[&str] = match confirm {
            true => &["ALREADY_RESOLVED"],
            false => &["ALREADY_RESOLVED"],
        };
        for (s, b) in answers.iter().filter(|(s, _)| *s != 200) {
            assert!(*s == 409 && allowed.contains(&code(b)), "{s} {b}");
        }
        let ev = events(&app, &id).await;
        assert_eq!((resolutions(&ev).len(), ev.len()), (1, 3), "{ev:?}");
    }
}

/// At the deadline callers and two sweepers race: every caller is refused
/// (`HOLD_EXPIRED` before the sweep, `ALREADY_RESOLVED` after), and the
/// sweepers release it once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_only_the_sweeper_resolves_the_hold() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    reserved(&app, &token, &id, "o-1", 10).await;
    app.clock.advance(chrono::Duration::seconds(11));
    let (token, id) = (Arc::new(token), Arc::new(id));
    let callers = concurrently(20, |i| {
        let (app, token, id) = (app.clone(), token.clone(), id.clone());
        async move {
            if i % 2 == 0 {
                use_for(&app, &token, &id, "o-1").await
            } else {
                cancel(&app, &token, &id).await
            }
        }
    });
    let (a, b) = (sweeper(&app), sweeper(&app));
    let (answers, swept_a, swept_b) =
        tokio::join!(callers, sweep(&a, &app, 10), sweep(&b, &app, 10));
    assert_eq!(swept_a + swept_b, 1);
    for (s, b) in &answers {
        assert!(
            *s == 409 && ["HOLD_EXPIRED", "ALREADY_RESOLVED"].contains(&code(b)),
            "{s} {b}"
        );
    }
    let ev = events(&app, &id).await;
    assert_eq!((resolutions(&ev).len(), ev.len()), (1, 3), "{ev:?}");
    assert_eq!(status(&app, &token, &id).await, "AVAILABLE");
}

/// Two sweepers over the same thirty due reservations, in batches of seven:
/// each reservation is released by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweepers_release_each_due_reservation_once() {
    let app = app().await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        let (token, id) = issued(&app).await;
        reserved(&app, &token, &id, "o-1", 5).await;
        ids.push(id);
    }
    app.clock.advance(chrono::Duration::seconds(6));
    let (a, b) = (sweeper(&app), sweeper(&app));
    let (na, nb) = tokio::join!(sweep(&a, &app, 7), sweep(&b, &app, 7));
    assert_eq!(na + nb, 30);
    let (released, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT aggregate_id) FROM outbox
         WHERE topic = 'coupon.reservation_released' AND aggregate_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&app.coupon_db)
    .await
    .unwrap();
    assert_eq!((released, distinct), (30, 30));
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupons WHERE status = 'RESERVED'")
        .fetch_one(&app.coupon_db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_keyed_reserve_replays_its_answer() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    let path = format!("/coupons/{id}/reserve");
    let call = |key: &'static str, body: Value| {
        let (app, token, path) = (app.clone(), token.clone(), path.clone());
        async move {
            app.call(
                reqwest::Method::POST,
                &path,
                Some(&token),
                Some(body),
                Some(key),
            )
            .await
        }
    };
    let first = call("k1", reserve_body("o-1", Some(60))).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(call("k1", reserve_body("o-1", Some(60))).await, first);
    let (s, b) = call("k1", reserve_body("o-2", Some(60))).await;
    assert_eq!((s, code(&b)), (409, "IDEMPOTENCY_MISMATCH"));
    // A refusal is a stored answer too: still refused after the release.
    let (s, b) = call("k2", reserve_body("o-3", Some(60))).await;
    assert_eq!((s, code(&b)), (409, "ALREADY_USED"));
    assert_eq!(cancel(&app, &token, &id).await.0, 200);
    let (s, b) = call("k2", reserve_body("o-3", Some(60))).await;
    assert_eq!((s, code(&b)), (409, "ALREADY_USED"));
    let reserves = events(&app, &id)
        .await
        .into_iter()
        .filter(|(t, _)| t == "coupon.reserved")
        .count();
    assert_eq!(reserves, 1);
}

#[tokio::test]
async fn refused_reservations_change_nothing() {
    let app = app().await;
    let (token, id) = issued(&app).await;
    let path = format!("/coupons/{id}/reserve");
    let with = |patch: Value| {
        let mut body = reserve_body("o-1", None);
        body.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        body
    };
    for (body, field) in [
        (with(json!({"hold_seconds": 0})), "hold_seconds"),
        (with(json!({"hold_seconds": 86_401})), "hold_seconds"),
        (with(json!({"hold_seconds": "soon"})), "hold_seconds"),
        (with(json!({"order_amount": 999})), "order_amount"),
        (with(json!({"order_amount": -1})), "order_amount"),
        (with(json!({"order_id": ""})), "order_id"),
    ] {
        let (s, b) = app.post(&path, &token, body.clone()).await;
        assert_eq!(
            (s, code(&b), b["error"]["field"].as_str()),
            (400, "VALIDATION_ERROR", Some(field)),
            "{body}: {b}"
        );
    }
    let (_, stranger) = app.user_token();
    assert_eq!(app.post(&path, &stranger, with(json!({}))).await.0, 403);
    app.clock.advance(chrono::Duration::days(2));
    let (s, b) = app.post(&path, &token, with(json!({}))).await;
    assert_eq!((s, code(&b)), (422, "NOT_ACTIVE"));
    assert_eq!(status(&app, &token, &id).await, "EXPIRED");
    let topics: Vec<String> = events(&app, &id)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(topics, ["coupon.issued"]);
}

/// The gateway calling the coupon role over gRPC: the new fields, the route
/// and the refusals cross the wire unchanged.
#[tokio::test]
async fn reservations_work_over_grpc() {
    let app = spawn_app_with(|c| {
        super::helpers::over_grpc(c);
        c.holds.sweep_every_ms = 3_600_000;
    })
    .await;
    let (token, id) = issued(&app).await;
    let (s, b) = reserve(&app, &token, &id, "o-1", Some(0)).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("hold_seconds")),
        "{b}"
    );
    let held = reserved(&app, &token, &id, "o-1", 30).await;
    assert_eq!(
        (held["status"].as_str(), held["reserved_order_id"].as_str()),
        (Some("RESERVED"), Some("o-1"))
    );
    assert!(held["reserved_until"].is_string(), "{held}");
    let (_, page) = app.get("/coupons?status=RESERVED", &token).await;
    assert_eq!(page["total"], 1);
    let (s, b) = use_for(&app, &token, &id, "o-2").await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));
    app.clock.advance(chrono::Duration::seconds(31));
    let (s, b) = use_for(&app, &token, &id, "o-1").await;
    assert_eq!((s, code(&b)), (409, "HOLD_EXPIRED"));
    let paths = openapi_paths(&app.client, &app.base).await;
    assert!(paths["/api/v1/coupons/{id}/reserve"].get("post").is_some());
}
