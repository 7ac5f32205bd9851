//! Pins (issue 17): every server stack runs its handlers detached
//! (`promod/src/detach.rs`), so a write whose caller stops waiting half-way
//! still runs to its end: its row commits, a refused row gives its admission
//! slot back, and the point balance cache follows the write.
//!
//! hyper drops a handler's future when its client hangs up, and so does the
//! timeout layer above it and a gRPC caller's deadline. The last two are used
//! here because they are deterministic: a table lock held by the test keeps
//! the write waiting, and a 5xx answer proves that the layer above has given
//! up on it before the test lets the write go on.

use super::helpers::{
    api_request, eventually, free_port, over_grpc, send_api, spawn_all_roles_with, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The server's request timeout, or the gateway's gRPC deadline: long enough
/// for set-up requests on a loaded machine, short enough to wait for twice a
/// scenario.
const GIVE_UP_MS: u64 = 2_000;

async fn send(
    app: &TestApp,
    base: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let req = api_request(&app.client, base, method, path);
    send_api(req, Some(token), body, key).await
}

/// Runs `sql` (a lock, or DDL that takes one) in a transaction left open.
async fn holding(pool: &PgPool, sql: &str) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    tx
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(pool).await.unwrap();
    n
}

fn gave_up(stack: &str, (s, b): &(u16, Value)) {
    assert!(
        matches!(s, 503 | 504),
        "{stack}: the layer above the handler gave up on the write: {s} {b}"
    );
}

/// A scarce write (coupon issue or time-sale order) through `base`:
/// 1. blocked before admission by `lock_read`, abandoned, then let go: its row
///    commits and a retry with its key gets that row;
/// 2. blocked at its insert by a constraint that refuses it once let go: the
///    handler still gives its slot back, so the same user gets the last one.
///
/// Nothing beyond the total is handed out.
struct Scarce<'a> {
    stack: &'a str,
    base: &'a str,
    pool: &'a PgPool,
    /// Blocks what the write reads before it takes a slot.
    lock_read: &'a str,
    /// The table its rows go to.
    rows: &'a str,
    path: String,
    body: Value,
    /// Counts a user's rows.
    user_rows: &'a str,
}

impl Scarce<'_> {
    async fn write(&self, app: &TestApp, token: &str, key: Option<&str>) -> (u16, Value) {
        let body = Some(self.body.clone());
        send(app, self.base, &self.path, token, body, key).await
    }

    async fn run(&self, app: &TestApp) {
        let stack = self.stack;
        let (u1, t1) = app.user_token();
        let lock = holding(self.pool, self.lock_read).await;
        let first = self.write(app, &t1, Some("k1")).await;
        gave_up(stack, &first);
        lock.rollback().await.unwrap();
        eventually(
            &format!("{stack}: an abandoned write commits its row"),
            || async { count(self.pool, self.user_rows, u1).await == 1 },
        )
        .await;
        let (s, b) = self.write(app, &t1, Some("k1")).await;
        assert_eq!(s, 201, "{stack}: the retry gets the stored answer: {b}");
        let (id,): (Uuid,) =
            sqlx::query_as(&format!("SELECT id FROM {} WHERE user_id = $1", self.rows))
                .bind(u1)
                .fetch_one(self.pool)
                .await
                .unwrap();
        assert_eq!(
            b["id"],
            json!(id),
            "{stack}: the retry names the committed row"
        );

        let (_, t2) = app.user_token();
        let refuse = holding(
            self.pool,
            &format!(
                "ALTER TABLE {} ADD CONSTRAINT break_inserts CHECK (false) NOT VALID",
                self.rows
            ),
        )
        .await;
        let second = self.write(app, &t2, None).await;
        gave_up(stack, &second);
        // The waiting insert goes first, meets the constraint and is refused;
        // the DROP waits for it.
        refuse.commit().await.unwrap();
        sqlx::query(&format!(
            "ALTER TABLE {} DROP CONSTRAINT break_inserts",
            self.rows
        ))
        .execute(self.pool)
        .await
        .unwrap();
        // The refused write's answer goes nowhere, so wait for its slots.
        let started = Instant::now();
        loop {
            let (s, b) = self.write(app, &t2, None).await;
            if s == 201 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{stack}: the refused write did not give back its slots (the user's and the total's): {s} {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let (_, t3) = app.user_token();
        let (s, b) = self.write(app, &t3, None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (409, Some("SOLD_OUT")),
            "{stack}: no slot beyond the total: {b}"
        );
    }
}

/// A coupon policy of 2, one per user, through `base`.
async fn coupon_issue(app: &TestApp, stack: &str, base: &str) {
    let policy = app.create_policy(2, 1).await;
    Scarce {
        stack,
        base,
        pool: &app.coupon_db,
        lock_read: "LOCK TABLE coupon_policies IN ACCESS EXCLUSIVE MODE",
        rows: "coupons",
        path: "/coupons/issue".into(),
        body: json!({"policy_id": policy}),
        user_rows: "SELECT count(*) FROM coupons WHERE user_id = $1",
    }
    .run(app)
    .await;
    let n = count(
        &app.coupon_db,
        "SELECT count(*) FROM coupons WHERE policy_id = $1",
        policy,
    )
    .await;
    assert_eq!(n, 2, "{stack}: coupons stored");
}

/// A time sale of 2 units, one per user, through `base`.
async fn time_sale_order(app: &TestApp, stack: &str, base: &str) {
    let pool = app.timesale_db.as_ref().expect("timesale role");
    let sale = app.create_sale(2, 1).await;
    Scarce {
        stack,
        base,
        pool,
        lock_read: "LOCK TABLE time_sales IN ACCESS EXCLUSIVE MODE",
        rows: "time_sale_orders",
        path: format!("/time-sales/{sale}/orders"),
        body: json!({"quantity": 1}),
        user_rows: "SELECT count(*) FROM time_sale_orders WHERE user_id = $1",
    }
    .run(app)
    .await;
    let n = count(
        pool,
        "SELECT count(*) FROM time_sale_orders WHERE time_sale_id = $1 AND status = 'CONFIRMED'",
        sale,
    )
    .await;
    assert_eq!(n, 2, "{stack}: orders stored");
}

/// An earn abandoned at its insert still commits and refreshes the cached
/// balance (a stale cache would answer the old balance for minutes).
async fn point_earn(app: &TestApp, stack: &str, base: &str) {
    let (user, token) = app.user_token();
    let earn = |amount: i64| json!({"user_id": user, "amount": amount});
    let (s, b) = send(app, base, "/points/earn", &app.admin, Some(earn(100)), None).await;
    assert_eq!(s, 201, "{stack}: {b}");
    let balance = || async {
        let (s, b) = send(app, base, "/points/balance", &token, None, None).await;
        assert_eq!(s, 200, "{stack}: {b}");
        b["balance"].as_i64().unwrap()
    };
    assert_eq!(balance().await, 100, "{stack}: the balance is cached now");
    let lock = holding(
        &app.point_db,
        "LOCK TABLE point_transactions IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    gave_up(
        stack,
        &send(app, base, "/points/earn", &app.admin, Some(earn(50)), None).await,
    );
    lock.rollback().await.unwrap();
    let rows = "SELECT count(*) FROM point_transactions WHERE user_id = $1";
    eventually(&format!("{stack}: an abandoned earn commits"), || async {
        count(&app.point_db, rows, user).await == 2
    })
    .await;
    eventually(
        &format!("{stack}: the cached balance follows the abandoned earn"),
        || async { balance().await == 150 },
    )
    .await;
}

/// The reservation reconciler would give a leaked slot back too, within
/// its bound: push it past the test's waits, so that only the detached
/// handler's own compensation can pass the slot checks.
fn no_reconciler_in_time(c: &mut promod::config::Config) {
    c.reservation.bound_ms = 600_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rest_stack_finishes_abandoned_writes() {
    let app = spawn_all_roles_with(|c| {
        c.gateway.request_timeout_ms = GIVE_UP_MS;
        no_reconciler_in_time(c);
    })
    .await;
    let base = app.base.clone();
    coupon_issue(&app, "gateway rest", &base).await;
    time_sale_order(&app, "gateway rest", &base).await;
    point_earn(&app, "gateway rest", &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_roles_rest_port_finishes_abandoned_writes() {
    let (timesale, point) = (free_port(), free_port());
    let app = spawn_all_roles_with(|c| {
        // Every REST port shares the gateway's request timeout.
        c.gateway.request_timeout_ms = GIVE_UP_MS;
        no_reconciler_in_time(c);
        c.timesale.service.http_addr = ([127, 0, 0, 1], timesale).into();
        c.point.service.http_addr = ([127, 0, 0, 1], point).into();
    })
    .await;
    let coupon_base = app.coupon_base.clone();
    coupon_issue(&app, "coupon rest", &coupon_base).await;
    time_sale_order(
        &app,
        "timesale rest",
        &format!("http://127.0.0.1:{timesale}"),
    )
    .await;
    point_earn(&app, "point rest", &format!("http://127.0.0.1:{point}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_roles_grpc_server_finishes_abandoned_writes() {
    let app = spawn_all_roles_with(|c| {
        // The gateway reaches its own roles over gRPC; its deadline is what
        // gives up on the role's handler.
        over_grpc(c);
        c.gateway.call_timeout_ms = GIVE_UP_MS;
        no_reconciler_in_time(c);
    })
    .await;
    let base = app.base.clone();
    coupon_issue(&app, "coupon grpc", &base).await;
    time_sale_order(&app, "timesale grpc", &base).await;
    point_earn(&app, "point grpc", &base).await;
}
