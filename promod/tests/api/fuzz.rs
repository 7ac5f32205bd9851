//! Property-based fuzzing of every REST write route and every list query:
//! any JSON for any field (wrong types, missing and extra fields, huge,
//! negative and zero numbers, i64 overflow, unicode, NUL, empty and 10k-char
//! strings, bad UUIDs and dates, reversed windows) must get a 2xx or a 4xx with
//! the contract's error body naming the field, never a 5xx; and a refused
//! request must change nothing in PostgreSQL or the Redis counters.
//!
//! `PROMO_FUZZ_CASES` scales the number of cases per route (default 24).

use super::helpers::{id, spawn_all_roles, TestApp};
use chrono::{Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Map, Value};
use uuid::Uuid;

fn cases(weight: u32) -> u32 {
    let base: u32 = std::env::var("PROMO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    (base * weight / 4).max(1)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..PropConfig::default()
    })
}

/// Strings that break naive code: empty, huge, unicode, NUL, SQL, almost-UUIDs
/// and almost-dates, and arbitrary printable text.
fn nasty_string() -> BoxedStrategy<String> {
    let now = Utc::now();
    let dates: Vec<String> = [-36_500, -1, 0, 1, 36_500]
        .iter()
        .map(|d| (now + Duration::days(*d)).to_rfc3339())
        .collect();
    let fixed: Vec<String> = [
        "",
        " ",
        "\u{0}",
        "a\u{0}b",
        "🎉🔥",
        "\u{202e}rtl",
        "\u{feff}",
        "' OR '1'='1",
        "'; DROP TABLE coupons; --",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-00000000000g",
        "2024-13-45T25:61:61Z",
        "2024-02-30T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "1970-01-01",
        "FIXED",
        "PERCENTAGE",
        "fixed",
        "-1",
        "9223372036854775808",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    prop_oneof![
        proptest::sample::select(fixed),
        proptest::sample::select(dates),
        Just("x".repeat(10_000)),
        Just("é".repeat(5_000)),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        "\\PC{0,40}",
    ]
    .boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(100),
            Just(101),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>(),
        ]
        .prop_map(Value::from),
        Just(json!(u64::MAX)),
        prop_oneof![Just(0.5f64), Just(-1e19), Just(1e300), Just(-0.0)].prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

#[derive(Debug, Clone)]
enum FieldCase {
    Valid,
    Missing,
    Value(Value),
    /// Raw JSON number text that `Value` cannot hold (overflow, exponents).
    Raw(&'static str),
}

#[derive(Debug, Clone)]
enum BodyCase {
    Object {
        fields: Vec<FieldCase>,
        extra: Option<(String, Value)>,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    body: BodyCase,
    /// `None` keeps the route's real id; otherwise a replacement path segment.
    path_id: Option<String>,
    idem: Option<String>,
}

fn field_case() -> BoxedStrategy<FieldCase> {
    prop_oneof![
        6 => Just(FieldCase::Valid),
        1 => Just(FieldCase::Missing),
        3 => any_json().prop_map(FieldCase::Value),
        1 => proptest::sample::select(vec![
            "1e400", "-1e400", "100000000000000000000000", "-9223372036854775809", "1.0", "-0", "1E2",
        ])
        .prop_map(FieldCase::Raw),
    ]
    .boxed()
}

fn case_strategy(n_fields: usize, has_id: bool) -> BoxedStrategy<Case> {
    let raw_bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"[1,2]".to_vec(),
        b"\"text\"".to_vec(),
        b"42".to_vec(),
        b"{".to_vec(),
        b"{\"a\":1}}".to_vec(),
        b"{} trailing".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"a\":\"\\ud800\"}".to_vec(),
    ];
    let body = prop_oneof![
        9 => (
            proptest::collection::vec(field_case(), n_fields),
            proptest::option::weighted(0.2, ("[a-z_]{1,10}", any_json())),
        )
            .prop_map(|(fields, extra)| BodyCase::Object { fields, extra }),
        1 => proptest::sample::select(raw_bodies).prop_map(BodyCase::Raw),
    ];
    let path_id = if has_id {
        proptest::option::weighted(
            0.15,
            nasty_string().prop_filter("non-empty", |s| !s.is_empty()),
        )
        .boxed()
    } else {
        Just(None).boxed()
    };
    let idem = proptest::option::weighted(
        0.15,
        proptest::sample::select(vec![
            String::new(),
            "k".to_owned(),
            "a".repeat(255),
            "a".repeat(256),
            "' OR 1=1 --".to_owned(),
        ]),
    );
    (body, path_id, idem)
        .prop_map(|(body, path_id, idem)| Case {
            body,
            path_id,
            idem,
        })
        .boxed()
}

/// One write route of API.md with a valid value for each field.
struct Route {
    method: Method,
    /// With `{id}` where the path has one.
    path: &'static str,
    id: Option<String>,
    token: Option<String>,
    fields: Vec<(&'static str, Value)>,
    weight: u32,
}

impl Route {
    fn body(&self, case: &BodyCase) -> Vec<u8> {
        match case {
            BodyCase::Raw(b) => b.clone(),
            BodyCase::Object { fields, extra } => {
                let mut obj = Map::new();
                let mut raws = Vec::new();
                for ((name, valid), c) in self.fields.iter().zip(fields) {
                    match c {
                        FieldCase::Valid => {
                            obj.insert(name.to_string(), valid.clone());
                        }
                        FieldCase::Missing => {}
                        FieldCase::Value(v) => {
                            obj.insert(name.to_string(), v.clone());
                        }
                        FieldCase::Raw(r) => {
                            let marker = format!("__raw_{}__", raws.len());
                            obj.insert(name.to_string(), Value::from(marker.clone()));
                            raws.push((marker, *r));
                        }
                    }
                }
                if let Some((k, v)) = extra {
                    if !self.fields.iter().any(|(n, _)| n == k) {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                let mut text = Value::Object(obj).to_string();
                for (marker, raw) in raws {
                    text = text.replace(&format!("\"{marker}\""), raw);
                }
                text.into_bytes()
            }
        }
    }
}

fn encode_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A digest of every row a write could touch (gateway, coupon, point and
/// timesale databases) and of the Redis admission counters. Columns that a
/// background job rewrites (the sale's reported remaining stock) are left out.
struct Digest<'a> {
    app: &'a TestApp,
    redis_keys: Vec<String>,
}

impl Digest<'_> {
    async fn take(&self, with_refresh_tokens: bool) -> String {
        async fn tables(pool: &sqlx::PgPool, exprs: &[(&str, &str)]) -> String {
            let mut out = String::new();
            for (table, expr) in exprs {
                let sql = format!(
                    "SELECT coalesce(md5(string_agg({expr}, '|' ORDER BY {expr})), '') FROM {table} t"
                );
                let h: String = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap();
                out.push_str(table);
                out.push('=');
                out.push_str(&h);
                out.push(' ');
            }
            out
        }
        // A keyed business refusal stores its answer (API.md, Conventions):
        // that row is not a change; any other stored refusal is.
        let common = [
            ("outbox", "t::text"),
            (
                "idempotency_keys",
                "CASE WHEN t.refused AND t.response->>'code' IN ('NOT_FOUND', 'SOLD_OUT', \
                 'LIMIT_EXCEEDED', 'ALREADY_USED', 'ALREADY_CANCELLED', 'INSUFFICIENT_BALANCE', \
                 'HOLD_EXPIRED', 'ALREADY_RESOLVED', 'ALREADY_REDEEMED', 'NOT_STACKABLE', \
                 'NOT_ACTIVE') THEN NULL ELSE t::text END",
            ),
        ];
        let mut gateway = vec![("users", "t::text")];
        if with_refresh_tokens {
            gateway.push(("refresh_tokens", "t::text"));
        }
        let mut d = tables(&self.app.gateway_db, &gateway).await;
        let coupon = [
            ("coupon_policies", "t::text"),
            ("coupons", "t::text"),
            ("coupon_codes", "t::text"),
        ];
        d += &tables(&self.app.coupon_db, &[&coupon[..], &common[..]].concat()).await;
        let point = [
            ("point_balances", "t::text"),
            ("point_transactions", "t::text"),
            ("point_holds", "t::text"),
        ];
        d += &tables(&self.app.point_db, &[&point[..], &common[..]].concat()).await;
        let ts = [
            ("products", "t::text"),
            (
                "time_sales",
                "(t.id, t.total_quantity, t.sold_quantity, t.sale_price, t.per_user_limit, t.start_at, t.end_at, t.status)::text",
            ),
            ("time_sale_orders", "t::text"),
            ("time_sale_user_totals", "t::text"),
        ];
        d += &tables(
            self.app.timesale_db.as_ref().unwrap(),
            &[&ts[..], &common[..]].concat(),
        )
        .await;
        let mut redis = promo_store::cache::connect(&super::helpers::redis_url())
            .await
            .unwrap();
        for k in &self.redis_keys {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP")
                .arg(k)
                .query_async(&mut redis)
                .await
                .unwrap();
            d += &format!("{k}={:?} ", dump.as_deref().map(fingerprint));
        }
        d
    }
}

/// A cheap stable fingerprint of bytes (no crypto needed here).
fn fingerprint(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What every answer must satisfy. Returns whether the request was refused.
fn check_answer(
    what: &str,
    status: u16,
    text: &str,
    allowed_fields: &[&str],
) -> Result<bool, TestCaseError> {
    prop_assert!(
        status < 500,
        "{what}: server error {status}: {}",
        &text[..text.len().min(400)]
    );
    if status < 400 {
        return Ok(false);
    }
    let body: Value = serde_json::from_str(text).map_err(|_| {
        TestCaseError::fail(format!("{what}: {status} without a json body: {text}"))
    })?;
    let err = &body["error"];
    prop_assert!(
        err["code"].is_string() && err["message"].is_string(),
        "{what}: {status} without the error shape: {body}"
    );
    if status == 400 {
        let field = err["field"].as_str().unwrap_or_default();
        let head = field.split(['.', '[']).next().unwrap_or_default();
        prop_assert!(
            allowed_fields.contains(&head),
            "{what}: 400 names {field:?}, not one of {allowed_fields:?}: {body}"
        );
    }
    Ok(true)
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    idem: Option<&str>,
) -> (u16, String) {
    let mut req = app
        .client
        .request(method, format!("{}/api/v1{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Fixtures: a policy with one coupon of the user's, points with a USE
/// transaction, a product with a running sale and one order of the user's.
struct World {
    user: Uuid,
    user_token: String,
    refresh_token: String,
    policy: String,
    coupon: String,
    transaction: String,
    hold: String,
    product: String,
    sale: String,
    order: String,
    /// A BATCH policy with codes, and one of its codes.
    batch: String,
    code: String,
}

async fn world(app: &TestApp) -> World {
    let (user, user_token) = app.user_token();
    let now = Utc::now();
    let policy = app.create_policy(1_000_000, 1_000).await.to_string();
    let coupon = app
        .created_by("/coupons/issue", &user_token, json!({"policy_id": policy}))
        .await;
    app.created(
        "/points/earn",
        json!({"user_id": user, "amount": 1_000_000}),
    )
    .await;
    let tx = app
        .created_by("/points/use", &user_token, json!({"amount": 1}))
        .await;
    let hold = app
        .created_by("/points/holds", &user_token, json!({"amount": 5}))
        .await;
    let product = app
        .created("/products", json!({"name": "p", "price": 100_000}))
        .await;
    let sale = app
        .created(
            "/time-sales",
            json!({"product_id": id(&product), "total_quantity": 1_000_000, "sale_price": 500,
                   "per_user_limit": 1_000,
                   "start_at": now - Duration::minutes(1), "end_at": now + Duration::days(1)}),
        )
        .await;
    let order = app
        .created_by(
            &format!("/time-sales/{}/orders", id(&sale)),
            &user_token,
            json!({"quantity": 1}),
        )
        .await;
    let (batch, code) = batch_code(app).await;
    let email = format!("f{}@example.com", Uuid::new_v4().simple());
    let none = None::<&str>;
    let (s, _) = app
        .call(
            Method::POST,
            "/auth/register",
            none,
            Some(json!({"email": email, "password": "password1", "name": "F"})),
            None,
        )
        .await;
    assert_eq!(s, 201);
    let (s, pair) = app
        .call(
            Method::POST,
            "/auth/login",
            none,
            Some(json!({"email": email, "password": "password1"})),
            None,
        )
        .await;
    assert_eq!(s, 200);
    World {
        user,
        user_token,
        refresh_token: pair["refresh_token"].as_str().unwrap().to_owned(),
        policy,
        coupon: id(&coupon),
        transaction: id(&tx),
        hold: id(&hold),
        product: id(&product),
        sale: id(&sale),
        order: id(&order),
        batch,
        code,
    }
}

/// A BATCH policy with room for more codes, and one of its codes.
async fn batch_code(app: &TestApp) -> (String, String) {
    let now = Utc::now();
    let policy = app
        .created(
            "/coupon-policies",
            json!({"name": "batch", "discount_type": "FIXED", "discount_value": 100,
                   "total_quantity": 1_000_000, "code_mode": "BATCH",
                   "valid_from": now - Duration::minutes(1), "valid_until": now + Duration::days(1)}),
        )
        .await;
    let policy = id(&policy);
    let path = format!("/coupon-policies/{policy}/codes");
    app.created(&path, json!({"count": 10})).await;
    let (_, page) = app.get(&path, &app.admin).await;
    let code = page["items"][0]["code"].as_str().unwrap().to_owned();
    (policy, code)
}

fn write_routes(app: &TestApp, w: &World) -> Vec<Route> {
    let now = Utc::now();
    let admin = Some(app.admin.clone());
    let user = Some(w.user_token.clone());
    let route = |method: Method,
                 path: &'static str,
                 id: Option<&String>,
                 token: &Option<String>,
                 fields: Vec<(&'static str, Value)>,
                 weight: u32| Route {
        method,
        path,
        id: id.cloned(),
        token: token.clone(),
        fields,
        weight,
    };
    vec![
        // Argon2 makes the auth routes slow in debug builds: fewer cases.
        route(
            Method::POST,
            "/auth/register",
            None,
            &None,
            vec![
                (
                    "email",
                    json!(format!("r{}@example.com", Uuid::new_v4().simple())),
                ),
                ("password", json!("password1")),
                ("name", json!("R")),
            ],
            1,
        ),
        route(
            Method::POST,
            "/auth/login",
            None,
            &None,
            vec![
                ("email", json!("nobody@example.com")),
                ("password", json!("password1")),
            ],
            1,
        ),
        route(
            Method::POST,
            "/auth/refresh",
            None,
            &None,
            vec![("refresh_token", json!(w.refresh_token))],
            2,
        ),
        route(
            Method::POST,
            "/auth/logout",
            None,
            &None,
            vec![("refresh_token", json!("not-a-token"))],
            2,
        ),
        route(
            Method::POST,
            "/coupon-policies",
            None,
            &admin,
            vec![
                ("name", json!("fuzz")),
                ("description", json!("d")),
                ("discount_type", json!("PERCENTAGE")),
                ("discount_value", json!(10)),
                ("min_order_amount", json!(0)),
                ("max_discount_amount", json!(1000)),
                ("total_quantity", json!(10)),
                ("per_user_limit", json!(1)),
                ("valid_from", json!(now - Duration::days(1))),
                ("valid_until", json!(now + Duration::days(1))),
                ("code_mode", json!("GENERATED")),
                ("stackable", json!(true)),
            ],
            8,
        ),
        route(
            Method::PATCH,
            "/coupon-policies/{id}",
            Some(&w.policy),
            &admin,
            vec![
                ("name", json!("renamed")),
                ("description", json!("d")),
                ("total_quantity", json!(2_000_000)),
                ("valid_until", json!(now + Duration::days(2))),
                ("active", json!(true)),
            ],
            6,
        ),
        route(
            Method::POST,
            "/coupons/issue",
            None,
            &user,
            vec![("policy_id", json!(w.policy))],
            4,
        ),
        route(
            Method::POST,
            "/coupon-policies/{id}/codes",
            Some(&w.batch),
            &admin,
            vec![("count", json!(3)), ("prefix", json!("FZ"))],
            4,
        ),
        route(
            Method::POST,
            "/coupons/redeem",
            None,
            &admin,
            vec![("code", json!(w.code)), ("user_id", json!(w.user))],
            4,
        ),
        route(
            Method::POST,
            "/coupons/{id}/use",
            Some(&w.coupon),
            &user,
            vec![
                ("order_id", json!("order-1")),
                ("order_amount", json!(5000)),
            ],
            4,
        ),
        route(
            Method::POST,
            "/coupons/{id}/reserve",
            Some(&w.coupon),
            &user,
            vec![
                ("order_id", json!("order-1")),
                ("order_amount", json!(5000)),
                ("hold_seconds", json!(60)),
            ],
            4,
        ),
        route(
            Method::POST,
            "/coupons/{id}/cancel",
            Some(&w.coupon),
            &user,
            vec![],
            2,
        ),
        route(
            Method::POST,
            "/points/earn",
            None,
            &admin,
            vec![
                ("user_id", json!(w.user)),
                ("amount", json!(10)),
                ("reference", json!("ref")),
                ("description", json!("d")),
            ],
            6,
        ),
        route(
            Method::POST,
            "/points/use",
            None,
            &user,
            vec![
                ("amount", json!(1)),
                ("reference", json!("ref")),
                ("description", json!("d")),
            ],
            6,
        ),
        route(
            Method::POST,
            "/points/transactions/{id}/cancel",
            Some(&w.transaction),
            &user,
            vec![],
            2,
        ),
        route(
            Method::POST,
            "/points/holds",
            None,
            &user,
            vec![
                ("amount", json!(1)),
                ("reference", json!("ref")),
                ("hold_seconds", json!(60)),
            ],
            6,
        ),
        route(
            Method::POST,
            "/points/holds/{id}/capture",
            Some(&w.hold),
            &user,
            vec![("amount", json!(1))],
            4,
        ),
        route(
            Method::POST,
            "/products",
            None,
            &admin,
            vec![
                ("name", json!("p")),
                ("description", json!("d")),
                ("price", json!(1000)),
            ],
            4,
        ),
        route(
            Method::POST,
            "/time-sales",
            None,
            &admin,
            vec![
                ("product_id", json!(w.product)),
                ("total_quantity", json!(10)),
                ("sale_price", json!(500)),
                ("per_user_limit", json!(1)),
                ("start_at", json!(now - Duration::minutes(1))),
                ("end_at", json!(now + Duration::hours(1))),
            ],
            8,
        ),
        route(
            Method::PATCH,
            "/time-sales/{id}",
            Some(&w.sale),
            &admin,
            vec![("end_at", json!(now + Duration::days(3)))],
            4,
        ),
        route(
            Method::POST,
            "/time-sales/{id}/orders",
            Some(&w.sale),
            &user,
            vec![("quantity", json!(1))],
            4,
        ),
        route(
            Method::POST,
            "/orders/{id}/cancel",
            Some(&w.order),
            &user,
            vec![],
            2,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_write_bodies_never_5xx_and_refusals_change_nothing() {
    let app = spawn_all_roles().await;
    let w = world(&app).await;
    let digest = Digest {
        app: &app,
        redis_keys: {
            let p: Uuid = w.policy.parse().unwrap();
            let s: Uuid = w.sale.parse().unwrap();
            vec![
                promo_store::keys::coupon_remaining(p),
                promo_store::keys::coupon_users(p),
                promo_store::keys::timesale_inventory(s),
                promo_store::keys::timesale_users(s),
            ]
        },
    };
    let handle = tokio::runtime::Handle::current();
    for route in write_routes(&app, &w) {
        let mut allowed: Vec<&str> = route.fields.iter().map(|(n, _)| *n).collect();
        allowed.extend(["body", "id", "Idempotency-Key", "user_id"]);
        let strategy = case_strategy(route.fields.len(), route.id.is_some());
        // Refusing a rotated refresh token revokes its family on purpose.
        let with_refresh = route.path != "/auth/refresh";
        let result = tokio::task::block_in_place(|| {
            runner(cases(route.weight))
                .run(&strategy, |case| {
                    handle.block_on(async {
                        let id = match (&case.path_id, &route.id) {
                            (Some(fake), _) => encode_segment(fake),
                            (None, Some(real)) => real.clone(),
                            (None, None) => String::new(),
                        };
                        let path = route.path.replace("{id}", &id);
                        let before = digest.take(with_refresh).await;
                        let (status, text) = send(
                            &app,
                            route.method.clone(),
                            &path,
                            route.token.as_deref(),
                            Some(route.body(&case.body)),
                            case.idem.as_deref(),
                        )
                        .await;
                        let what = format!("{} {path}", route.method);
                        // An unknown field is ignored, but a NUL in it is
                        // still refused, by its own name.
                        let mut allowed = allowed.clone();
                        if let BodyCase::Object {
                            extra: Some((k, _)),
                            ..
                        } = &case.body
                        {
                            allowed.push(k.split(['.', '[']).next().unwrap_or_default());
                        }
                        if check_answer(&what, status, &text, &allowed)? {
                            let after = digest.take(with_refresh).await;
                            prop_assert_eq!(
                                &before,
                                &after,
                                "{}: refused with {} ({}) but something changed",
                                what,
                                status,
                                &text[..text.len().min(300)]
                            );
                        }
                        Ok::<(), TestCaseError>(())
                    })
                })
                .map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            panic!("{} {}: {e}", route.method, route.path);
        }
    }
}

/// Query values: numbers out of range, overflow, signs, floats, unicode,
/// SQL, bad UUIDs, percent-garbage.
fn query_value() -> BoxedStrategy<String> {
    prop_oneof![
        proptest::sample::select(vec![
            "0",
            "-1",
            "1",
            "100",
            "101",
            "1000001",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "1e3",
            " 1",
            "",
            "AVAILABLE",
            "USED",
            "EXPIRED",
            "SCHEDULED",
            "ACTIVE",
            "ENDED",
            "EARN",
            "USE",
            "CANCEL",
            "active",
        ])
        .prop_map(str::to_owned),
        nasty_string(),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
    ]
    .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_list_queries_never_5xx_and_name_the_parameter() {
    let app = spawn_all_roles().await;
    let w = world(&app).await;
    // The strategy wants 'static paths; one leaked string per test run.
    let codes: &'static str = format!("/coupon-policies/{}/codes", w.batch).leak();
    let lists = [
        "/coupon-policies",
        "/coupons",
        codes,
        "/points/history",
        "/points/balance",
        "/products",
        "/time-sales",
        "/orders",
    ];
    let params = [
        "page",
        "size",
        "status",
        "type",
        "user_id",
        "policy_id",
        "time_sale_id",
        "q",
    ];
    let strategy = (
        proptest::sample::select(lists.to_vec()),
        proptest::collection::vec(
            (proptest::sample::select(params.to_vec()), query_value()),
            0..4,
        ),
        any::<bool>(),
        proptest::option::weighted(0.1, Just("%zz&&=&page")),
    );
    let handle = tokio::runtime::Handle::current();
    let allowed = [
        "page",
        "size",
        "status",
        "type",
        "user_id",
        "policy_id",
        "time_sale_id",
        "query",
    ];
    let result = tokio::task::block_in_place(|| {
        runner(cases(16))
            .run(&strategy, |(path, pairs, as_admin, junk)| {
                handle.block_on(async {
                    let mut q: String = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                        .finish();
                    if let Some(j) = junk {
                        q.push('&');
                        q.push_str(j);
                    }
                    let token = if as_admin { &app.admin } else { &w.user_token };
                    let url = format!("{path}?{q}");
                    let (status, text) =
                        send(&app, Method::GET, &url, Some(token), None, None).await;
                    let what = format!("GET {url}");
                    if !check_answer(&what, status, &text, &allowed)? && path != "/points/balance" {
                        let body: Value = serde_json::from_str(&text).unwrap();
                        let size = body["size"].as_u64().unwrap_or(0);
                        prop_assert!(
                            (1..=100).contains(&size)
                                && body["items"]
                                    .as_array()
                                    .is_some_and(|i| i.len() as u64 <= size),
                            "{what}: not a page: {body}"
                        );
                    }
                    Ok::<(), TestCaseError>(())
                })
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
