//! Attacks on the REST edge: forged and misused tokens, injection strings,
//! oversized and deeply nested bodies, slow clients, spoofed forwarding
//! headers, and secrets leaking into the logs. Each test first shows the
//! honest request working, so that a refusal means the defence, not a typo.

use super::helpers::{
    free_port, fresh_db, limit_logins, pg_base, spawn_all_roles, spawn_app, spawn_app_with,
    TestApp, SECRET,
};
use super::procs::{promod, wait_http, Proc};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

async fn register_and_login(app: &TestApp, password: &str) -> (String, Value) {
    let email = format!("s{}@example.com", Uuid::new_v4().simple());
    let (s, b) = app
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({"email": email, "password": password, "name": "S"})),
            None,
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, pair) = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
            None,
        )
        .await;
    assert_eq!(s, 200, "{pair}");
    (email, pair)
}

async fn get_with_authorization(app: &TestApp, path: &str, value: &[u8]) -> (u16, Value) {
    let mut req = app.client.get(format!("{}/api/v1{path}", app.base));
    if !value.is_empty() {
        req = req.header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misused_tokens_get_401_with_the_error_shape() {
    let app = spawn_app().await;
    let (_, pair) = register_and_login(&app, "password1").await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/auth/profile", &access).await.0, 200);

    let now = chrono::Utc::now().timestamp();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let claims = |extra: Value| {
        let mut c = json!({"sub": Uuid::new_v4(), "role": "admin", "iat": now,
                           "exp": now + 600, "jti": Uuid::new_v4()});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let hs256 = |c: &Value| encode(&Header::new(Algorithm::HS256), c, &key).unwrap();
    // The honest admin token these forgeries are variations of works.
    let honest = hs256(&claims(json!({})));
    assert_eq!(app.get("/coupon-policies", &honest).await.0, 200);

    // Alg confusion: the header claims RS256 (or "none"), the signature is
    // HMAC with the server's secret, as a confused verifier would compute it.
    let signed_with_header = |header: &str, c: &Value| {
        let msg = format!("{}.{}", B64.encode(header), B64.encode(c.to_string()));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{msg}.{sig}")
    };
    // Role user -> admin in the payload of a real token, signature kept.
    let tampered = {
        let parts: Vec<&str> = access.split('.').collect();
        let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["role"], "user");
        payload["role"] = json!("admin");
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(payload.to_string()),
            parts[2]
        )
    };
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            B64.encode(claims(json!({})).to_string())
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned("none")),
        ("alg None", unsigned("None")),
        ("alg NONE", unsigned("NONE")),
        (
            "rs256 header, hmac signature",
            signed_with_header(r#"{"alg":"RS256","typ":"JWT"}"#, &claims(json!({}))),
        ),
        (
            "es256 header, hmac signature",
            signed_with_header(r#"{"alg":"ES256","typ":"JWT"}"#, &claims(json!({}))),
        ),
        (
            "hs384 with the right secret",
            encode(&Header::new(Algorithm::HS384), &claims(json!({})), &key).unwrap(),
        ),
        (
            "another key",
            encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(b"another-secret-another-secret-another"),
            )
            .unwrap(),
        ),
        ("tampered role", tampered),
        (
            "expired a second ago",
            hs256(&claims(json!({"exp": now - 1}))),
        ),
        ("not yet valid", hs256(&claims(json!({"nbf": now + 3600})))),
        ("unknown role", hs256(&claims(json!({"role": "root"})))),
        ("sub not a uuid", hs256(&claims(json!({"sub": "1 OR 1=1"})))),
        ("refresh token as access token", refresh.clone()),
    ];
    for (name, token) in &cases {
        for path in ["/coupon-policies", "/auth/profile"] {
            let (s, b) = app.get(path, token).await;
            assert_error(s, &b, 401, "UNAUTHORIZED", &format!("{name} on {path}"));
        }
        let (s, b) = app
            .post(
                "/coupon-policies",
                token,
                json!({"name": "forged", "discount_type": "FIXED", "discount_value": 1,
                       "total_quantity": 1, "valid_from": "2020-01-01T00:00:00Z",
                       "valid_until": "2099-01-01T00:00:00Z"}),
            )
            .await;
        assert_error(
            s,
            &b,
            401,
            "UNAUTHORIZED",
            &format!("{name} on an admin write"),
        );
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupon_policies")
        .fetch_one(&app.coupon_db)
        .await
        .unwrap();
    assert_eq!(n, 0, "no forged token created a policy");

    // Missing or garbled Authorization headers.
    let long = format!("Bearer {}", "A".repeat(10_000));
    let garbled: Vec<&[u8]> = vec![
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNzd29yZDE=",
        b"Bearer a.b.c",
        b"Bearer ...",
        b"Bearer \xff\xfe\xfd",
        long.as_bytes(),
    ];
    for value in garbled {
        let (s, b) = get_with_authorization(&app, "/auth/profile", value).await;
        assert_error(
            s,
            &b,
            401,
            "UNAUTHORIZED",
            &format!(
                "authorization {:?}",
                String::from_utf8_lossy(&value[..value.len().min(20)])
            ),
        );
    }
    let scheme = format!("Token {access}");
    let (s, b) = get_with_authorization(&app, "/auth/profile", scheme.as_bytes()).await;
    assert_error(s, &b, 401, "UNAUTHORIZED", "another scheme");

    // An access token is not a refresh token.
    let refresh_with = |t: String| {
        app.call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": t})),
            None,
        )
    };
    let (s, b) = refresh_with(access.clone()).await;
    assert_error(s, &b, 401, "UNAUTHORIZED", "access token as refresh token");

    // Rotation: the old refresh token fails, and its reuse revokes the family
    // (API.md: "the old refresh token stops working"; the whole family goes).
    let (s, next) = refresh_with(refresh.clone()).await;
    assert_eq!(s, 200, "{next}");
    let newer = next["refresh_token"].as_str().unwrap().to_owned();
    let (s, b) = refresh_with(refresh.clone()).await;
    assert_error(s, &b, 401, "UNAUTHORIZED", "rotated refresh token reused");
    let (s, b) = refresh_with(newer).await;
    assert_error(
        s,
        &b,
        401,
        "UNAUTHORIZED",
        "newest token of a revoked family",
    );
}

const INJECTIONS: [&str; 8] = [
    "' OR '1'='1",
    "'; DROP TABLE coupons; --",
    "1; SELECT pg_sleep(3); --",
    "\" OR 1=1 --",
    "') UNION SELECT id, email, password_hash FROM users --",
    "%' OR '%'='",
    "$1::text",
    "\\'; TRUNCATE point_transactions; --",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_is_refused_or_stored_as_text() {
    let app = spawn_all_roles().await;
    let (user, token) = app.user_token();
    let policy = app.create_policy(100, 10).await;
    let (s, coupon) = app
        .post("/coupons/issue", &token, json!({"policy_id": policy}))
        .await;
    assert_eq!(s, 201, "{coupon}");
    let coupon = coupon["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .post(
            "/points/earn",
            &app.admin,
            json!({"user_id": user, "amount": 1000}),
        )
        .await;
    assert_eq!(s, 201);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();

    for inj in INJECTIONS {
        // Filters and page parameters: refused, naming the parameter.
        for (path, param) in [
            ("/coupons", "status"),
            ("/coupons", "user_id"),
            ("/coupons", "policy_id"),
            ("/points/history", "type"),
            ("/points/history", "user_id"),
            ("/points/balance", "user_id"),
            ("/time-sales", "status"),
            ("/orders", "user_id"),
            ("/orders", "time_sale_id"),
            ("/orders", "status"),
            ("/coupon-policies", "page"),
            ("/products", "size"),
        ] {
            let start = Instant::now();
            let (s, b) = app
                .get(&format!("{path}?{param}={}", enc(inj)), &app.admin)
                .await;
            assert_error(
                s,
                &b,
                400,
                "VALIDATION_ERROR",
                &format!("{path}?{param}={inj}"),
            );
            assert_eq!(b["error"]["field"], param, "{path}: {b}");
            assert!(start.elapsed() < Duration::from_secs(2), "pg_sleep ran");
        }
        // Path segments: never reach SQL as anything but a UUID.
        for path in [
            "/coupons/{}",
            "/coupons/{}/use",
            "/coupon-policies/{}",
            "/orders/{}",
            "/products/{}",
            "/time-sales/{}",
            "/points/transactions/{}/cancel",
        ] {
            let p = path.replace("{}", &enc(inj).replace('+', "%20"));
            let m = if path.ends_with("/use") || path.ends_with("/cancel") {
                Method::POST
            } else {
                Method::GET
            };
            let (s, b) = app.call(m, &p, Some(&token), Some(json!({})), None).await;
            assert!(s == 400 || s == 404, "{p}: {s} {b}");
            assert!(b["error"]["code"].is_string(), "{p}: {b}");
        }
        // String fields: stored verbatim, read back verbatim.
        let (s, b) = app
            .post(
                "/products",
                &app.admin,
                json!({"name": inj, "description": inj, "price": 1000}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (_, back) = app
            .get(&format!("/products/{}", b["id"].as_str().unwrap()), &token)
            .await;
        assert_eq!(
            (&back["name"], &back["description"]),
            (&json!(inj), &json!(inj))
        );
        let (s, b) = app
            .post(
                "/points/use",
                &token,
                json!({"amount": 1, "reference": inj, "description": inj}),
            )
            .await;
        assert_eq!((s, &b["reference"]), (201, &json!(inj)), "{b}");
        let (s, b) = app
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": inj, "password": inj})),
                None,
            )
            .await;
        assert_error(s, &b, 401, "UNAUTHORIZED", "login with injection");
        let (s, b) = app
            .call(
                Method::POST,
                "/auth/register",
                None,
                Some(json!({"email": format!("{inj}@x.io"), "password": "password1", "name": inj})),
                None,
            )
            .await;
        assert!(s == 201 || s == 400, "register {inj}: {s} {b}");
    }
    let (s, b) = app
        .post(
            &format!("/coupons/{coupon}/use"),
            &token,
            json!({"order_id": INJECTIONS[1], "order_amount": 5000}),
        )
        .await;
    assert_eq!(
        (s, &b["coupon"]["order_id"]),
        (200, &json!(INJECTIONS[1])),
        "{b}"
    );

    // NUL cannot be stored in PostgreSQL text: a 400 naming the field, not a 500.
    let nul = "a\u{0}b";
    for (path, tok, body, field) in [
        (
            "/products",
            &app.admin,
            json!({"name": nul, "price": 1000}),
            "name",
        ),
        (
            "/points/use",
            &token,
            json!({"amount": 1, "reference": nul}),
            "reference",
        ),
        (
            &format!("/coupons/{coupon}/use") as &str,
            &token,
            json!({"order_id": nul, "order_amount": 5000}),
            "order_id",
        ),
        (
            "/auth/login",
            &token,
            json!({"email": nul, "password": "password1"}),
            "email",
        ),
        (
            "/auth/refresh",
            &token,
            json!({"refresh_token": nul}),
            "refresh_token",
        ),
    ] {
        let (s, b) = app.post(path, tok, body).await;
        assert_error(s, &b, 400, "VALIDATION_ERROR", &format!("nul in {path}"));
        assert_eq!(b["error"]["field"], field, "{path}: {b}");
    }

    // The schema is intact and holds exactly what the accepted requests wrote.
    let count = |pool: &sqlx::PgPool, table: &'static str| {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(count(&app.coupon_db, "coupons").await, 1);
    assert_eq!(count(&app.coupon_db, "coupon_policies").await, 1);
    let ts = app.timesale_db.as_ref().unwrap();
    assert_eq!(count(ts, "products").await, INJECTIONS.len() as i64);
    // One earn and one use per injection string.
    assert_eq!(
        count(&app.point_db, "point_transactions").await,
        1 + INJECTIONS.len() as i64
    );
    assert!(count(&app.gateway_db, "users").await <= INJECTIONS.len() as i64);
    let (_, bal) = app.get("/points/balance", &token).await;
    assert_eq!(bal["balance"], 1000 - INJECTIONS.len() as i64);
}

/// Sends raw bytes on a fresh connection and returns the raw response.
async fn raw_http(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn json_of(raw: &str) -> Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_with_the_error_body() {
    let app = spawn_app().await;
    let (_, token) = app.user_token();
    let big = json!({"amount": 1, "description": "x".repeat(100 * 1024)});
    let small = json!({"amount": 1, "description": "x".repeat(400)});
    // Just under the limit is fine (409: no points), just over is refused.
    let (s, b) = app.post("/points/use", &token, small).await;
    assert_error(s, &b, 409, "INSUFFICIENT_BALANCE", "small body");
    for (path, tok) in [
        ("/points/use", Some(token.as_str())),
        ("/coupon-policies", Some(app.admin.as_str())),
        ("/auth/register", None),
        ("/auth/login", None),
    ] {
        let (s, b) = app
            .call(Method::POST, path, tok, Some(big.clone()), None)
            .await;
        assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE", path);
        // Without Content-Length (chunked), the limit still holds.
        let chunk = big.to_string();
        let auth = tok
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /api/v1{path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let raw = raw_http(&app.base, req.as_bytes()).await;
        assert!(
            raw.starts_with("HTTP/1.1 413"),
            "chunked {path}: {raw:.200}"
        );
        assert_eq!(
            json_of(&raw)["error"]["code"],
            "PAYLOAD_TOO_LARGE",
            "{raw:.300}"
        );
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM coupon_policies")
        .fetch_one(&app.coupon_db)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_a_400_not_a_stack_overflow() {
    // A limit large enough for 100k brackets, so the parser sees them all.
    let app = spawn_app_with(|c| c.gateway.body_limit_bytes = 1 << 20).await;
    let (_, token) = app.user_token();
    let arrays = "[".repeat(100_000);
    let objects = "{\"a\":".repeat(50_000);
    for (path, tok) in [
        ("/points/use", Some(token.as_str())),
        ("/coupon-policies", Some(app.admin.as_str())),
        ("/auth/login", None),
    ] {
        for (name, body) in [("arrays", &arrays), ("objects", &objects)] {
            let mut req = app
                .client
                .post(format!("{}/api/v1{path}", app.base))
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(t) = tok {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("the server is still there");
            let s = r.status().as_u16();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            assert_error(s, &b, 400, "VALIDATION_ERROR", &format!("{name} on {path}"));
        }
    }
    // A nested value inside a field is refused the same way.
    let body = format!(
        "{{\"amount\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = app
        .client
        .post(format!("{}/api/v1/points/use", app.base))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.get("/points/balance", &token).await.0, 200);
}

/// Connects, sends `opening`, then one more byte every 100 ms. Returns how
/// long the server took to close the connection (None: still open at `give_up`).
/// The bounds are loose because a loaded test machine is slow; without a
/// header read timeout the connection is never closed at all.
async fn slow_client(
    addr: SocketAddr,
    opening: &'static [u8],
    give_up: Duration,
) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    if s.write_all(opening).await.is_err() {
        return Some(start.elapsed());
    }
    let mut buf = [0u8; 1024];
    while start.elapsed() < give_up {
        tokio::select! {
            r = s.read(&mut buf) => {
                // EOF, an error, or the server's last words before closing.
                match r {
                    Ok(0) | Err(_) => return Some(start.elapsed()),
                    Ok(_) => continue,
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !opening.is_empty() && s.write_all(b"a").await.is_err() {
                    return Some(start.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_do_not_starve_others() {
    let app = spawn_app_with(|c| c.gateway.header_read_timeout_ms = 1_000).await;
    let addr: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let give_up = Duration::from_secs(15);
    let mut clients = Vec::new();
    for i in 0..200 {
        let opening: &'static [u8] = match i % 3 {
            0 => b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            1 => b"POST /api/v1/auth/login HTTP/1.1\r\nHo",
            _ => b"",
        };
        clients.push(tokio::spawn(slow_client(addr, opening, give_up)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile, normal clients are served promptly.
    for _ in 0..20 {
        let start = Instant::now();
        let r = reqwest::Client::new()
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    let (_, token) = app.user_token();
    assert_eq!(app.get("/points/balance", &token).await.0, 200);
    // Every slow or silent connection is closed soon after the timeout.
    for c in clients {
        let closed = c.await.unwrap();
        assert!(
            closed.is_some_and(|d| d < Duration::from_secs(10)),
            "a slow connection was held: {closed:?}"
        );
    }
    // A keep-alive connection that went quiet after a request is closed too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "idle keep-alive connection held");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );
}

/// Fresh forwarding headers for each attempt.
type HeaderMaker = Box<dyn Fn() -> Vec<(&'static str, String)>>;

fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap()
}

fn random_loopback() -> IpAddr {
    let b: [u8; 3] = rand::random();
    IpAddr::V4(Ipv4Addr::new(127, b[0] | 1, b[1], b[2].max(2)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_do_not_evade_the_ip_limit() {
    let app = spawn_app_with(|c| limit_logins(c, &["127.0.0.1", "10.0.0.0/8"])).await;
    let login = |client: reqwest::Client, headers: Vec<(&'static str, String)>| {
        let url = format!("{}/api/v1/auth/login", app.base);
        async move {
            let mut req = client
                .post(url)
                .json(&json!({"email": "nobody@example.com", "password": "wrong-password"}));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            (s, b)
        }
    };
    let rand_ip = || {
        let b: [u8; 4] = rand::random();
        format!("{}.{}.{}.{}", b[0] | 1, b[1], b[2], b[3])
    };
    let r = || rand::random::<u16>();
    let attacks: Vec<(&str, IpAddr, HeaderMaker)> = vec![
        (
            "untrusted peer rotating every forwarding header",
            random_loopback(),
            Box::new(move || {
                vec![
                    ("x-forwarded-for", rand_ip()),
                    ("x-real-ip", rand_ip()),
                    ("forwarded", format!("for={}", rand_ip())),
                    ("true-client-ip", rand_ip()),
                ]
            }),
        ),
        (
            "ipv6 addresses of one /64 through a trusted proxy",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            {
                let (a, b) = (r(), r());
                Box::new(move || {
                    vec![(
                        "x-forwarded-for",
                        format!("2001:db8:{a:x}:{b:x}:{:x}::1", r()),
                    )]
                })
            },
        ),
        (
            "a junk hop hiding a spoofed address",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            {
                let proxy = format!("10.{}.{}.{}", r() % 256, r() % 256, r() % 256);
                Box::new(move || {
                    vec![(
                        "x-forwarded-for",
                        format!("{}, unknown, {proxy}", rand_ip()),
                    )]
                })
            },
        ),
    ];
    for (name, peer, headers) in &attacks {
        let client = client_from(*peer);
        for i in 0..2 {
            let (s, b) = login(client.clone(), headers()).await;
            assert_error(s, &b, 401, "UNAUTHORIZED", &format!("{name}: attempt {i}"));
        }
        let (s, b) = login(client.clone(), headers()).await;
        assert_error(s, &b, 429, "RATE_LIMITED", name);
    }
    // A different real client behind the proxy still gets its own bucket.
    let (s, _) = login(
        client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        vec![("x-forwarded-for", format!("6.6.6.6, {}", rand_ip()))],
    )
    .await;
    assert_eq!(s, 401);
}

/// Replaces (or adds) the password in a postgres url: (url, password).
fn with_db_password(base: &str) -> (String, String) {
    let (scheme, rest) = base.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    match userinfo.split_once(':') {
        Some((_, pw)) => (base.to_owned(), pw.to_owned()),
        // Local test servers trust loopback, so any password connects.
        None => {
            let pw = format!("db-pw-{}", Uuid::new_v4().simple());
            (format!("{scheme}://{userinfo}:{pw}@{host}"), pw)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let (pg, db_password) = with_db_password(&pg_base());
    let db = |url: String| url.replacen(&pg_base(), &pg, 1);
    let admin_password = format!("admin-pw-{}", Uuid::new_v4().simple());
    let user_password = format!("user-pw-{}", Uuid::new_v4().simple());
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("promod-logs-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let env = vec![
        ("PROMO_ROLES", "gateway,point".to_string()),
        ("PROMO_LOG__LEVEL", "debug".to_string()),
        ("PROMO_GATEWAY__HTTP_ADDR", format!("127.0.0.1:{port}")),
        (
            "PROMO_GATEWAY__DATABASE_URL",
            db(fresh_db("logs_gateway").await),
        ),
        (
            "PROMO_POINT__DATABASE_URL",
            db(fresh_db("logs_point").await),
        ),
        (
            "PROMO_POINT__HTTP_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "PROMO_POINT__GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "PROMO_BOOTSTRAP_ADMIN_EMAIL",
            "root@example.com".to_string(),
        ),
        ("PROMO_BOOTSTRAP_ADMIN_PASSWORD", admin_password.clone()),
    ];
    let proc = Proc(
        promod(&env, &[])
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn promod"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/readyz")).await;
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut req = client.request(method, format!("{base}/api/v1{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let email = format!("l{}@example.com", Uuid::new_v4().simple());
    let creds = json!({"email": email, "password": user_password, "name": "L"});
    let (s, _) = call(Method::POST, "/auth/register", None, Some(creds.clone())).await;
    assert_eq!(s, 201);
    let (s, pair) = call(Method::POST, "/auth/login", None, Some(creds.clone())).await;
    assert_eq!(s, 200);
    let (s, admin) = call(
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": "root@example.com", "password": admin_password})),
    )
    .await;
    assert_eq!(s, 200, "{admin}");
    let mut secrets = vec![
        ("user password", user_password.clone()),
        ("admin password", admin_password.clone()),
        ("jwt secret", SECRET.to_string()),
        ("database password", db_password.clone()),
    ];
    let token = |p: &Value, k: &str| p[k].as_str().unwrap().to_owned();
    let access = token(&pair, "access_token");
    let admin_access = token(&admin, "access_token");
    let (_, profile) = call(Method::GET, "/auth/profile", Some(&access), None).await;
    let user_id = profile["id"].as_str().unwrap().to_owned();
    call(
        Method::POST,
        "/points/earn",
        Some(&admin_access),
        Some(json!({"user_id": user_id, "amount": 10})),
    )
    .await;
    call(
        Method::POST,
        "/points/use",
        Some(&access),
        Some(json!({"amount": 100})),
    )
    .await;
    call(Method::GET, "/points/history", Some(&access), None).await;
    let refresh = |t: String| {
        let body = json!({"refresh_token": t});
        call(Method::POST, "/auth/refresh", None, Some(body))
    };
    let (_, next) = refresh(token(&pair, "refresh_token")).await;
    // Reuse of the rotated token: the warning path.
    refresh(token(&pair, "refresh_token")).await;
    call(
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": email, "password": format!("{user_password}-wrong")})),
    )
    .await;
    call(
        Method::GET,
        "/auth/profile",
        Some(&format!("{access}x")),
        None,
    )
    .await;
    call(
        Method::POST,
        "/auth/logout",
        None,
        Some(json!({"refresh_token": token(&next, "refresh_token")})),
    )
    .await;
    for (name, p, k) in [
        ("access token", &pair, "access_token"),
        ("refresh token", &pair, "refresh_token"),
        ("rotated access token", &next, "access_token"),
        ("rotated refresh token", &next, "refresh_token"),
        ("admin access token", &admin, "access_token"),
        ("admin refresh token", &admin, "refresh_token"),
    ] {
        let t = token(p, k);
        // The signature alone is as good as the token.
        let tail = t.rsplit('.').next().unwrap().to_owned();
        secrets.push((name, t));
        secrets.push((name, tail));
    }
    // Stop it gracefully so that everything buffered is written.
    let pid = proc.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(proc);
    let logs =
        std::fs::read_to_string(&out_path).unwrap() + &std::fs::read_to_string(&err_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        logs.contains("DEBUG") && logs.lines().count() > 20,
        "debug logging was not on: {logs:.2000}"
    );
    for (name, secret) in &secrets {
        if let Some(at) = logs.find(secret.as_str()) {
            let from = at.saturating_sub(200);
            panic!(
                "the {name} is in the logs: ...{}...",
                &logs[from..(at + 50).min(logs.len())]
            );
        }
    }
}
