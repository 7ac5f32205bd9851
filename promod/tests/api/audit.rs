//! The audit log (API.md, "Audit log and admin search"): every admin write
//! appears once in `GET /audit`, with its actor, request id, before and
//! after, exactly when its change committed; refused writes and replays add
//! nothing; the database refuses to change or remove an entry. Runs in
//! process and with the gateway calling the roles over gRPC.

use super::helpers::{id, over_grpc, spawn_all_roles_with, TestApp};
use promo_domain::principal::Role;
use serde_json::{json, Value};
use uuid::Uuid;

async fn app(grpc: bool) -> TestApp {
    spawn_all_roles_with(|c| {
        if grpc {
            over_grpc(c);
        }
    })
    .await
}

/// An admin whose id the test knows, and its token.
fn admin(app: &TestApp) -> (Uuid, String) {
    let id = Uuid::now_v7();
    (id, app.keys.issue(id, Role::Admin).unwrap())
}

/// POSTs or PATCHes as `token` under request id `rid`.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    rid: &str,
    body: Value,
) -> (u16, Value) {
    let resp = app
        .client
        .request(method, format!("{}/api/v1{path}", app.base))
        .bearer_auth(token)
        .header("x-request-id", rid)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The whole audit log matching `query`, checked to be newest first.
async fn audit(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/audit?size=100&{query}"), token).await;
    assert_eq!(s, 200, "{query}: {b}");
    let items = b["items"].as_array().unwrap().clone();
    assert_eq!(b["total"].as_i64().unwrap() as usize, items.len(), "{b}");
    let at: Vec<chrono::DateTime<chrono::Utc>> = items
        .iter()
        .map(|i| i["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {at:?}");
    items
}

fn policy_body() -> Value {
    let now = chrono::Utc::now();
    json!({"name": "audited", "discount_type": "FIXED", "discount_value": 500,
           "total_quantity": 10, "valid_from": now - chrono::Duration::minutes(1),
           "valid_until": now + chrono::Duration::days(1), "code_mode": "BATCH"})
}

/// Every kind of admin write, each once, under its own request id; the
/// entries name the actor, the request, and what changed.
async fn every_admin_write_is_recorded_once(grpc: bool) {
    let app = app(grpc).await;
    let (actor, t) = admin(&app);
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;
    let (s, policy) = send(
        &app,
        post.clone(),
        "/coupon-policies",
        &t,
        "r-policy",
        policy_body(),
    )
    .await;
    assert_eq!(s, 201, "{policy}");
    let pid = id(&policy);
    let upd = json!({"total_quantity": 20});
    let (s, b) = send(
        &app,
        patch.clone(),
        &format!("/coupon-policies/{pid}"),
        &t,
        "r-patch",
        upd,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let codes = json!({"count": 3});
    let (s, b) = send(
        &app,
        post.clone(),
        &format!("/coupon-policies/{pid}/codes"),
        &t,
        "r-codes",
        codes,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, product) = send(
        &app,
        post.clone(),
        "/products",
        &t,
        "r-product",
        json!({"name": "p", "price": 1000}),
    )
    .await;
    assert_eq!(s, 201, "{product}");
    let now = chrono::Utc::now();
    let sale_body = json!({"product_id": product["id"], "total_quantity": 5, "sale_price": 700,
        "start_at": now - chrono::Duration::minutes(1), "end_at": now + chrono::Duration::days(1)});
    let (s, sale) = send(&app, post.clone(), "/time-sales", &t, "r-sale", sale_body).await;
    assert_eq!(s, 201, "{sale}");
    let sid = id(&sale);
    let (s, b) = send(
        &app,
        patch,
        &format!("/time-sales/{sid}"),
        &t,
        "r-sale-patch",
        json!({"status": "CANCELLED"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (user, ut) = app.user_token();
    let (s, earn) = send(
        &app,
        post.clone(),
        "/points/earn",
        &t,
        "r-earn",
        json!({"user_id": user, "amount": 100}),
    )
    .await;
    assert_eq!(s, 201, "{earn}");
    let (s, b) = send(
        &app,
        post.clone(),
        &format!("/points/transactions/{}/cancel", id(&earn)),
        &t,
        "r-cancel",
        json!({}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // A user's own writes are not admin writes.
    let (s, own) = app.post("/points/use", &ut, json!({"amount": 1})).await;
    assert_eq!(s, 409, "nothing left to use: {own}");

    let all = audit(&app, &t, &format!("actor_id={actor}")).await;
    let got: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target_id"].as_str().unwrap(),
                e["request_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no request id: {e}")),
            )
        })
        .rev()
        .collect();
    let user = user.to_string();
    assert_eq!(
        got,
        vec![
            ("coupon_policy.created", pid.as_str(), "r-policy"),
            ("coupon_policy.updated", pid.as_str(), "r-patch"),
            ("coupon_policy.codes_generated", pid.as_str(), "r-codes"),
            (
                "product.created",
                product["id"].as_str().unwrap(),
                "r-product"
            ),
            ("time_sale.created", sid.as_str(), "r-sale"),
            ("time_sale.updated", sid.as_str(), "r-sale-patch"),
            ("point.earned", user.as_str(), "r-earn"),
            ("point.cancelled", user.as_str(), "r-cancel"),
        ]
    );
    let by = |action: &str| all.iter().find(|e| e["action"] == action).unwrap().clone();
    let upd = by("coupon_policy.updated");
    assert_eq!(
        (
            upd["before"]["total_quantity"].as_i64(),
            upd["after"]["total_quantity"].as_i64()
        ),
        (Some(10), Some(20))
    );
    assert_eq!(upd["actor_id"], actor.to_string());
    assert_eq!(by("coupon_policy.codes_generated")["after"]["generated"], 3);
    assert_eq!(by("time_sale.updated")["after"]["status"], "CANCELLED");
    assert_eq!(by("point.earned")["after"]["id"], earn["id"]);
    assert_eq!(by("point.earned")["after"]["balance_after"], 100);
    assert_eq!(by("point.cancelled")["before"]["id"], earn["id"]);
    assert!(by("coupon_policy.created").get("before").is_none());

    // Filters: one action, one target, a window.
    let one = audit(&app, &t, "action=time_sale.updated").await;
    assert_eq!(one.len(), 1);
    let policy_history = audit(&app, &t, &format!("target_id={pid}")).await;
    assert_eq!(policy_history.len(), 3);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later = later.replace('+', "%2B");
    assert!(audit(&app, &t, &format!("since={later}")).await.is_empty());
    assert_eq!(
        audit(&app, &t, &format!("until={later}&actor_id={actor}"))
            .await
            .len(),
        8
    );
    // Pages of the merged logs: two entries a page, newest first, no gaps.
    let mut paged = Vec::new();
    for page in 1..=4 {
        let (s, b) = app
            .get(&format!("/audit?actor_id={actor}&size=2&page={page}"), &t)
            .await;
        assert_eq!((s, b["total"].as_i64()), (200, Some(8)), "{b}");
        paged.extend(
            b["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
    }
    assert_eq!(
        paged,
        all.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn every_admin_write_is_recorded_once_in_process() {
    every_admin_write_is_recorded_once(false).await;
}

#[tokio::test]
async fn every_admin_write_is_recorded_once_over_grpc() {
    every_admin_write_is_recorded_once(true).await;
}

/// A refused write leaves no entry, a replayed one adds none, and the log
/// itself is for admins, with bad filters refused naming their field.
#[tokio::test]
async fn refusals_and_replays_leave_no_entry_and_only_admins_read_the_log() {
    let app = app(false).await;
    let (actor, t) = admin(&app);
    let policy = app.created_by("/coupon-policies", &t, policy_body()).await;
    let pid = id(&policy);
    let codes = json!({"count": 4});
    app.created_by(&format!("/coupon-policies/{pid}/codes"), &t, codes)
        .await;
    // Below the codes generated: refused, nothing recorded.
    let path = format!("/coupon-policies/{pid}");
    let (s, b) = app
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(&t),
            Some(json!({"total_quantity": 2})),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("total_quantity")),
        "{b}"
    );
    // Over the total: refused, nothing recorded.
    let (s, b) = app
        .post(
            &format!("/coupon-policies/{pid}/codes"),
            &t,
            json!({"count": 7}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (user, _) = app.user_token();
    let earn = json!({"user_id": user, "amount": 5});
    for _ in 0..3 {
        let (s, b) = app
            .call(
                reqwest::Method::POST,
                "/points/earn",
                Some(&t),
                Some(earn.clone()),
                Some("earn-once"),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let actions: Vec<String> = audit(&app, &t, &format!("actor_id={actor}"))
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "point.earned",
            "coupon_policy.codes_generated",
            "coupon_policy.created"
        ]
    );

    let (_, user_token) = app.user_token();
    let (s, b) = app.get("/audit", &user_token).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{b}"
    );
    for (query, field) in [
        ("actor_id=nope", "actor_id"),
        ("since=yesterday", "since"),
        (
            "since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            "until",
        ),
        ("page=101&size=100", "page"),
        ("size=101", "size"),
    ] {
        let (s, b) = app.get(&format!("/audit?{query}"), &t).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {b}"
        );
    }
}

/// The OpenAPI document has the route and every filter of API.md.
#[tokio::test]
async fn the_openapi_document_lists_the_audit_route_and_its_filters() {
    let app = app(false).await;
    let paths = super::helpers::openapi_paths(&app.client, &app.base).await;
    let params = paths["/api/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
    for want in [
        "actor_id",
        "action",
        "target_id",
        "since",
        "until",
        "page",
        "size",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
}

/// An admin's cancel of a user's coupon or order, or confirm of a held
/// order, is recorded with the thing after it (and a coupon's before); the
/// user's own are not.
#[tokio::test]
async fn admin_cancels_and_confirms_of_users_things_are_recorded() {
    let app = app(false).await;
    let (actor, t) = admin(&app);
    let (_, ut) = app.user_token();
    let policy = app.create_policy(10, 5).await;
    let sale = app.create_sale(10, 5).await;
    let mut coupons = Vec::new();
    for n in 0..2 {
        let c = app
            .created_by("/coupons/issue", &ut, json!({"policy_id": policy}))
            .await;
        let used = json!({"order_id": format!("o-{n}"), "order_amount": 5000});
        let (s, b) = app
            .post(&format!("/coupons/{}/use", id(&c)), &ut, used)
            .await;
        assert_eq!(s, 200, "{b}");
        coupons.push(id(&c));
    }
    let order = |hold: bool| {
        let path = format!("/time-sales/{sale}/orders");
        let ut = ut.clone();
        let app = &app;
        async move {
            id(&app
                .created_by(&path, &ut, json!({"quantity": 1, "hold": hold}))
                .await)
        }
    };
    let (held, plain, own) = (order(true).await, order(false).await, order(false).await);
    for (path, token) in [
        (format!("/coupons/{}/cancel", coupons[0]), &t),
        (format!("/coupons/{}/cancel", coupons[1]), &ut),
        (format!("/orders/{held}/confirm"), &t),
        (format!("/orders/{plain}/cancel"), &t),
        (format!("/orders/{own}/cancel"), &ut),
    ] {
        let (s, b) = app.post(&path, token, json!({})).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let got = audit(&app, &t, &format!("actor_id={actor}")).await;
    let got: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|e| {
            let after = e["after"]["status"].as_str().unwrap();
            (
                e["action"].as_str().unwrap(),
                e["target_id"].as_str().unwrap(),
                after,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("order.cancelled", plain.as_str(), "CANCELLED"),
            ("order.confirmed", held.as_str(), "CONFIRMED"),
            ("coupon.cancelled", coupons[0].as_str(), "AVAILABLE"),
        ]
    );
    let coupon = audit(&app, &t, "action=coupon.cancelled").await;
    assert_eq!(coupon[0]["before"]["status"], "USED");
}

/// A role whose log does not answer fails the search, named: a page
/// without its entries would look complete.
#[tokio::test]
async fn a_role_that_does_not_answer_fails_the_search_naming_it() {
    // Gateway, coupon and point run; the timesale role's address is closed.
    let app = super::helpers::spawn_app_with(over_grpc).await;
    let (_, t) = admin(&app);
    app.create_policy(5, 1).await;
    let (s, b) = app.get("/audit", &t).await;
    assert_eq!(s, 503, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.contains("timesale audit log"), "{b}");
}

/// The database itself refuses to change or remove an entry, in every
/// role's database.
#[tokio::test]
async fn the_log_is_append_only_in_every_database() {
    let app = app(false).await;
    app.create_policy(5, 1).await;
    let dbs = [
        &app.coupon_db,
        &app.point_db,
        &app.gateway_db,
        app.timesale_db.as_ref().unwrap(),
    ];
    for db in dbs {
        sqlx::query(
            "INSERT INTO audit_log (id, at, action, target_type, target_id)
                     VALUES ($1, now(), 'test', 'test', 'x')",
        )
        .bind(Uuid::now_v7())
        .execute(db)
        .await
        .unwrap();
        for sql in [
            "UPDATE audit_log SET action = 'forged'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let err = sqlx::query(sql).execute(db).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
    }
}

/// The bootstrap admin's role is recorded without an actor.
#[tokio::test]
async fn the_bootstrap_admin_is_recorded_as_a_role_change() {
    let app = spawn_all_roles_with(|c| {
        c.bootstrap_admin_email = Some("root@promo.test".into());
        c.bootstrap_admin_password = Some("bootstrap-password".to_owned().into());
    })
    .await;
    let (_, t) = admin(&app);
    let all = audit(&app, &t, "action=user.role_changed").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["actor_id"], Value::Null);
    assert_eq!(all[0]["after"]["role"], "admin");
}
