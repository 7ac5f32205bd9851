//! Admin search (API.md, "Audit log and admin search"): `GET /coupons` and
//! `GET /orders` across users for an admin, filtered by policy or sale,
//! user and status, newest first; a user still sees only their own; bad
//! filters are 400 naming the field. Each scenario runs in process and with
//! the gateway calling the service roles over gRPC; a shorter one with each
//! role in a process of its own, found through etcd.

use super::helpers::{free_port, id, openapi_paths, over_grpc, spawn_all_roles_with, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

/// Every role in one process; the gateway calls them in process or, with
/// `grpc`, over gRPC on static addresses as split roles do. The hold
/// sweeper stays out of the way (it runs at start, then hourly), so that a
/// clock step decides what is expired.
async fn app(grpc: bool) -> TestApp {
    spawn_all_roles_with(|c| {
        c.holds.sweep_every_ms = 3_600_000;
        if grpc {
            over_grpc(c);
        }
    })
    .await
}

/// A 200 page's items; panics with the body otherwise.
async fn page(app: &TestApp, path: &str, token: &str) -> (i64, Vec<Value>) {
    let (s, b) = app.get(path, token).await;
    assert_eq!(s, 200, "{path}: {b}");
    let items = b["items"].as_array().unwrap().clone();
    (b["total"].as_i64().unwrap(), items)
}

/// The `key` of each item, in page order.
fn all(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[key].as_str().unwrap().to_owned())
        .collect()
}

/// Newest first: `at` never increases down the page.
fn assert_newest_first(items: &[Value], at: &str) {
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        all(items, at).iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
}

/// The ids of `path`'s page for `token`, as a set to compare with.
async fn ids(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let (total, items) = page(app, path, token).await;
    assert_eq!(total as usize, items.len(), "{path}: one page holds all");
    let mut ids = all(&items, "id");
    ids.sort();
    ids
}

fn set(of: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = of.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

async fn issue(app: &TestApp, token: &str, policy: Uuid) -> String {
    let c = app
        .created_by("/coupons/issue", token, json!({"policy_id": policy}))
        .await;
    id(&c)
}

async fn coupons_across_users(grpc: bool) {
    let app = app(grpc).await;
    let (p1, p2) = (
        app.create_policy(10, 2).await,
        app.create_policy(10, 2).await,
    );
    let (a, ta) = app.user_token();
    let (b, tb) = app.user_token();
    let (_, tc) = app.user_token();
    let a1 = issue(&app, &ta, p1).await;
    let a2 = issue(&app, &ta, p2).await;
    let b1 = issue(&app, &tb, p1).await;
    let c2 = issue(&app, &tc, p2).await;
    let used = json!({"order_id": "o-1", "order_amount": 5000});
    let (s, body) = app.post(&format!("/coupons/{a1}/use"), &ta, used).await;
    assert_eq!(s, 200, "{body}");
    let held = json!({"order_id": "o-2", "order_amount": 5000, "hold_seconds": 3600});
    let (s, body) = app.post(&format!("/coupons/{b1}/reserve"), &tb, held).await;
    assert_eq!(s, 200, "{body}");

    let admin = &app.admin;
    let (total, items) = page(&app, "/coupons", admin).await;
    assert_eq!(total, 4);
    assert_newest_first(&items, "issued_at");
    assert_eq!(
        all(&items, "id"),
        [&c2, &b1, &a2, &a1].map(|s| s.as_str()),
        "newest first"
    );
    let (total, second) = page(&app, "/coupons?size=1&page=2", admin).await;
    assert_eq!((total, all(&second, "id")), (4, vec![b1.clone()]));

    let cases = [
        (format!("policy_id={p1}"), set(&[&a1, &b1])),
        (format!("policy_id={p2}"), set(&[&a2, &c2])),
        ("status=USED".into(), set(&[&a1])),
        ("status=RESERVED".into(), set(&[&b1])),
        ("status=AVAILABLE".into(), set(&[&a2, &c2])),
        (format!("user_id={a}"), set(&[&a1, &a2])),
        (format!("user_id={a}&status=USED"), set(&[&a1])),
        (format!("user_id={b}&policy_id={p1}"), set(&[&b1])),
        (format!("user_id={b}&policy_id={p2}"), vec![]),
        (format!("policy_id={p2}&status=AVAILABLE"), set(&[&a2, &c2])),
        (format!("policy_id={p1}&status=AVAILABLE"), vec![]),
        (
            format!("policy_id={p1}&user_id={a}&status=USED"),
            set(&[&a1]),
        ),
    ];
    for (q, want) in cases {
        assert_eq!(
            ids(&app, &format!("/coupons?{q}"), admin).await,
            want,
            "{q}"
        );
    }

    // A user sees their own only, with the same filters.
    assert_eq!(ids(&app, "/coupons", &ta).await, set(&[&a1, &a2]));
    let q = format!("/coupons?policy_id={p1}");
    assert_eq!(ids(&app, &q, &ta).await, set(&[&a1]));
    assert_eq!(
        ids(&app, "/coupons?status=RESERVED", &ta).await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&app, &format!("/coupons?user_id={a}"), &ta).await,
        set(&[&a1, &a2])
    );
    let (s, body) = app.get(&format!("/coupons?user_id={a}"), &tb).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );

    // EXPIRED is derived from the clock; the search follows it.
    app.clock.advance(chrono::Duration::days(2));
    let q = format!("/coupons?policy_id={p2}&status=EXPIRED");
    assert_eq!(ids(&app, &q, admin).await, set(&[&a2, &c2]));
    assert_eq!(
        ids(&app, "/coupons?status=AVAILABLE", admin).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn admin_search_coupons_across_users_with_each_filter() {
    coupons_across_users(false).await;
}

#[tokio::test]
async fn admin_search_coupons_over_grpc() {
    coupons_across_users(true).await;
}

async fn order(app: &TestApp, token: &str, sale: Uuid, hold: bool) -> String {
    let path = format!("/time-sales/{sale}/orders");
    let o = app
        .created_by(&path, token, json!({"quantity": 1, "hold": hold}))
        .await;
    id(&o)
}

async fn orders_across_users(grpc: bool) {
    let app = app(grpc).await;
    let (s1, s2) = (app.create_sale(10, 2).await, app.create_sale(10, 2).await);
    let (a, ta) = app.user_token();
    let (b, tb) = app.user_token();
    let (_, tc) = app.user_token();
    let a1 = order(&app, &ta, s1, false).await;
    let a2 = order(&app, &ta, s2, false).await;
    let b1 = order(&app, &tb, s1, true).await;
    let c2 = order(&app, &tc, s2, false).await;
    let (s, body) = app
        .post(&format!("/orders/{a1}/cancel"), &ta, json!({}))
        .await;
    assert_eq!(s, 200, "{body}");

    let admin = &app.admin;
    let (total, items) = page(&app, "/orders", admin).await;
    assert_eq!(total, 4);
    assert_newest_first(&items, "created_at");
    assert_eq!(
        all(&items, "id"),
        [&c2, &b1, &a2, &a1].map(|s| s.as_str()),
        "newest first"
    );
    let (total, second) = page(&app, "/orders?size=1&page=2", admin).await;
    assert_eq!((total, all(&second, "id")), (4, vec![b1.clone()]));

    let cases = [
        (format!("time_sale_id={s1}"), set(&[&a1, &b1])),
        (format!("time_sale_id={s2}"), set(&[&a2, &c2])),
        ("status=CONFIRMED".into(), set(&[&a2, &c2])),
        ("status=PENDING".into(), set(&[&b1])),
        ("status=CANCELLED".into(), set(&[&a1])),
        ("status=EXPIRED".into(), vec![]),
        (format!("user_id={a}"), set(&[&a1, &a2])),
        (format!("user_id={a}&status=CANCELLED"), set(&[&a1])),
        (format!("user_id={b}&time_sale_id={s1}"), set(&[&b1])),
        (
            format!("time_sale_id={s2}&status=CONFIRMED"),
            set(&[&a2, &c2]),
        ),
        (format!("time_sale_id={s1}&status=CONFIRMED"), vec![]),
        (
            format!("time_sale_id={s2}&user_id={a}&status=CONFIRMED"),
            set(&[&a2]),
        ),
    ];
    for (q, want) in cases {
        assert_eq!(ids(&app, &format!("/orders?{q}"), admin).await, want, "{q}");
    }

    // A user sees their own only, with the same filters.
    assert_eq!(ids(&app, "/orders", &tb).await, set(&[&b1]));
    let q = format!("/orders?time_sale_id={s2}");
    assert_eq!(ids(&app, &q, &ta).await, set(&[&a2]));
    assert_eq!(
        ids(&app, "/orders?status=PENDING", &ta).await,
        Vec::<String>::new()
    );
    let (s, body) = app.get(&format!("/orders?user_id={a}"), &tb).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
}

#[tokio::test]
async fn admin_search_orders_across_users_with_each_filter() {
    orders_across_users(false).await;
}

#[tokio::test]
async fn admin_search_orders_over_grpc() {
    orders_across_users(true).await;
}

/// Malformed filters are refused at the edge, for admins and users alike,
/// naming the parameter; never a 500.
#[tokio::test]
async fn admin_search_bad_filters_are_400_naming_the_field() {
    let app = app(false).await;
    let (_, user) = app.user_token();
    let cases = [
        ("/coupons?user_id=nope", "user_id"),
        ("/coupons?user_id=", "user_id"),
        ("/coupons?policy_id=12", "policy_id"),
        ("/coupons?status=BOGUS", "status"),
        ("/coupons?status=used", "status"),
        ("/coupons?size=0", "size"),
        ("/orders?user_id=nope", "user_id"),
        ("/orders?time_sale_id=x", "time_sale_id"),
        ("/orders?status=SHIPPED", "status"),
        ("/orders?page=0", "page"),
    ];
    for token in [&app.admin, &user] {
        for (path, field) in cases {
            let (s, b) = app.get(path, token).await;
            let got = (s, b["error"]["code"].as_str(), b["error"]["field"].as_str());
            assert_eq!(
                got,
                (400, Some("VALIDATION_ERROR"), Some(field)),
                "{path}: {b}"
            );
        }
    }
    // The OpenAPI document lists the new filters.
    let paths = openapi_paths(&app.client, &app.base).await;
    for (path, want) in [
        ("/api/v1/coupons", ["policy_id", "user_id", "status"]),
        ("/api/v1/orders", ["time_sale_id", "user_id", "status"]),
    ] {
        let params = paths[path]["get"]["parameters"].as_array().unwrap();
        let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
        for w in want {
            assert!(names.contains(&w), "{path}: {names:?}");
        }
    }
}

/// A call to a gateway of its own process: the status and JSON body (0 and
/// null when it cannot be reached).
async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1{path}");
    let mut req = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, Value::Null),
    }
}

/// POSTs until created (201): until the gateway has found the role in etcd
/// it answers 503.
async fn created_once_found(base: &str, path: &str, token: &str, body: Value) -> String {
    let start = std::time::Instant::now();
    loop {
        let (s, b) = call(base, "POST", path, token, Some(body.clone())).await;
        if s == 201 {
            return id(&b);
        }
        assert!(start.elapsed().as_secs() < 30, "{path}: {s} {b}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The real binary: coupon, timesale and gateway roles each in a process of
/// its own, found through etcd. The search's filters and its scope cross
/// the processes as they do in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_search_across_split_processes() {
    use super::helpers::{admin_token, fresh_db, test_keys};
    use super::procs::{etcd_gateway, etcd_role_env, spawn_process, wait_http};
    let prefix = format!("/promo-test/{}", Uuid::new_v4().simple());
    let mut roles = Vec::new();
    for role in ["coupon", "timesale"] {
        let http = free_port();
        let db = fresh_db(&format!("split_{role}")).await;
        roles.push(spawn_process(&etcd_role_env(role, &prefix, &db, http)));
        wait_http(&format!("http://127.0.0.1:{http}/readyz")).await;
    }
    let (_gw, base) = etcd_gateway(&prefix).await;
    let keys = test_keys();
    let admin = admin_token(&keys);
    let (a, ta) = super::helpers::new_user(&keys);
    let (b, tb) = super::helpers::new_user(&keys);
    let now = chrono::Utc::now();
    let window = (
        now - chrono::Duration::minutes(1),
        now + chrono::Duration::days(1),
    );
    let policy = json!({"name": "p", "discount_type": "FIXED", "discount_value": 100,
        "total_quantity": 10, "valid_from": window.0, "valid_until": window.1});
    let policy = created_once_found(&base, "/coupon-policies", &admin, policy).await;
    let product = json!({"name": "p", "price": 1000});
    let product = created_once_found(&base, "/products", &admin, product).await;
    let sale = json!({"product_id": product, "total_quantity": 10, "sale_price": 500,
        "start_at": window.0, "end_at": window.1});
    let sale = created_once_found(&base, "/time-sales", &admin, sale).await;
    for user in [a, b] {
        let body = json!({"policy_id": policy, "user_id": user});
        created_once_found(&base, "/coupons/issue", &admin, body).await;
    }
    for token in [&ta, &tb] {
        let path = format!("/time-sales/{sale}/orders");
        created_once_found(&base, &path, token, json!({"quantity": 1})).await;
    }

    let total = |path: String, token: String| {
        let base = base.clone();
        async move {
            let (s, body) = call(&base, "GET", &path, &token, None).await;
            assert_eq!(s, 200, "{path}: {body}");
            body["total"].as_i64().unwrap()
        }
    };
    let admin_sees = [
        format!("/coupons?policy_id={policy}&status=AVAILABLE"),
        format!("/orders?time_sale_id={sale}&status=CONFIRMED"),
    ];
    for path in admin_sees {
        assert_eq!(total(path, admin.clone()).await, 2);
    }
    assert_eq!(
        total(format!("/coupons?user_id={b}"), admin.clone()).await,
        1
    );
    assert_eq!(
        total(format!("/orders?time_sale_id={sale}"), ta.clone()).await,
        1
    );
    let (s, body) = call(&base, "GET", &format!("/coupons?user_id={b}"), &ta, None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    let (s, body) = call(&base, "GET", "/orders?status=LOST", &admin, None).await;
    assert_eq!((s, body["error"]["field"].as_str()), (400, Some("status")));
}
