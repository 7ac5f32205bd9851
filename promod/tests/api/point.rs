//! The point ledger through the gateway, against real PostgreSQL and Redis.

use super::helpers::{spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

impl TestApp {
    pub async fn earn(&self, user: Uuid, amount: i64) -> Value {
        let (s, b) = self
            .post(
                "/points/earn",
                &self.admin,
                json!({"user_id": user, "amount": amount}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b
    }

    pub async fn balance_of(&self, token: &str) -> i64 {
        let (s, b) = self.get("/points/balance", token).await;
        assert_eq!(s, 200, "{b}");
        b["balance"].as_i64().unwrap()
    }

    /// Every user's ledger sums to a non-negative balance (the invariant).
    pub async fn assert_ledger_invariant(&self) {
        let bad: Vec<(Uuid, i64, Option<i64>)> = sqlx::query_as(
            "SELECT b.user_id, b.balance, s.total FROM point_balances b
             LEFT JOIN (SELECT user_id, sum(delta)::bigint AS total FROM point_transactions GROUP BY user_id) s
               ON s.user_id = b.user_id
             WHERE s.total IS DISTINCT FROM b.balance OR b.balance < 0",
        )
        .fetch_all(&self.point_db)
        .await
        .unwrap();
        assert!(bad.is_empty(), "ledger and balances disagree: {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earn_use_cancel_balance_and_history() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    let earned = app.earn(user, 500).await;
    assert_eq!(earned["type"], "EARN");
    assert_eq!(earned["amount"], 500);
    assert_eq!(earned["balance_after"], 500);
    assert_eq!(app.balance_of(&token).await, 500);

    let (s, used) = app
        .post(
            "/points/use",
            &token,
            json!({"amount": 120, "reference": "order-1"}),
        )
        .await;
    assert_eq!(s, 201, "{used}");
    assert_eq!(
        (&used["type"], &used["amount"], &used["delta"]),
        (&json!("USE"), &json!(120), &json!(-120))
    );
    assert_eq!(used["balance_after"], 380);
    assert_eq!(app.balance_of(&token).await, 380);

    let path = format!(
        "/points/transactions/{}/cancel",
        used["id"].as_str().unwrap()
    );
    let (s, cancel) = app.post(&path, &token, json!({})).await;
    assert_eq!(s, 201, "{cancel}");
    assert_eq!(cancel["type"], "CANCEL");
    assert_eq!(cancel["cancelled_transaction_id"], used["id"]);
    assert_eq!(cancel["balance_after"], 500);
    assert_eq!(app.balance_of(&token).await, 500);
    let (s, again) = app.post(&path, &token, json!({})).await;
    assert_eq!(
        (s, &again["error"]["code"]),
        (409, &json!("ALREADY_CANCELLED"))
    );
    let cancel_of_cancel = format!(
        "/points/transactions/{}/cancel",
        cancel["id"].as_str().unwrap()
    );
    let (s, b) = app.post(&cancel_of_cancel, &token, json!({})).await;
    assert_eq!((s, &b["error"]["code"]), (409, &json!("CONFLICT")));

    let (s, h) = app.get("/points/history?size=2", &token).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["total"], 3);
    let types: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["CANCEL", "USE"], "newest first");
    let (_, h) = app.get("/points/history?type=EARN", &token).await;
    assert_eq!(h["total"], 1);
    assert_eq!(h["items"][0]["balance_after"], 500);
    app.assert_ledger_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_spent_earn_is_refused() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    let earned = app.earn(user, 100).await;
    let (s, _) = app.post("/points/use", &token, json!({"amount": 60})).await;
    assert_eq!(s, 201);
    let path = format!(
        "/points/transactions/{}/cancel",
        earned["id"].as_str().unwrap()
    );
    let (s, b) = app.post(&path, &app.admin, json!({})).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("INSUFFICIENT_BALANCE"))
    );
    assert_eq!(app.balance_of(&token).await, 40);
    app.assert_ledger_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_fifty_of_a_hundred_concurrent_uses_succeed() {
    let app = Arc::new(spawn_app().await);
    let (user, token) = app.user_token();
    app.earn(user, 500).await;
    let token = Arc::new(token);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (app, token) = (app.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            app.post("/points/use", &token, json!({"amount": 10})).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            201 => ok += 1,
            409 => {
                assert_eq!(b["error"]["code"], "INSUFFICIENT_BALANCE");
                refused += 1
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!((ok, refused), (50, 50));
    assert_eq!(app.balance_of(&token).await, 0);
    app.assert_ledger_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_twenty_concurrent_cancels_succeeds() {
    let app = Arc::new(spawn_app().await);
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let (_, used) = app.post("/points/use", &token, json!({"amount": 30})).await;
    let path = Arc::new(format!(
        "/points/transactions/{}/cancel",
        used["id"].as_str().unwrap()
    ));
    let token = Arc::new(token);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, token, path) = (app.clone(), token.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            app.post(&path, &token, json!({})).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            201 => ok += 1,
            409 => assert_eq!(b["error"]["code"], "ALREADY_CANCELLED"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(app.balance_of(&token).await, 100);
    app.assert_ledger_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_balance_follows_every_write_even_over_a_stale_entry() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    let mut redis = redis::Client::open(super::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = promo_store::keys::point_balance(user);
    // A read fills the cache; each kind of write must move it.
    assert_eq!(app.balance_of(&token).await, 0);
    let earned = app.earn(user, 70).await;
    assert_eq!(app.balance_of(&token).await, 70);
    let (_, used) = app.post("/points/use", &token, json!({"amount": 20})).await;
    assert_eq!(app.balance_of(&token).await, 50);
    let cancel = format!(
        "/points/transactions/{}/cancel",
        used["id"].as_str().unwrap()
    );
    app.post(&cancel, &token, json!({})).await;
    assert_eq!(app.balance_of(&token).await, 70);
    let cached: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(cached.starts_with("70:"), "{cached}");

    // Plant a stale entry (an old version with a wrong balance): the next
    // write replaces it.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("999:1")
        .query_async(&mut redis)
        .await
        .unwrap();
    let cancel_earn = format!(
        "/points/transactions/{}/cancel",
        earned["id"].as_str().unwrap()
    );
    let (s, b) = app.post(&cancel_earn, &app.admin, json!({})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(app.balance_of(&token).await, 0);
    // An unreadable entry is a miss, never an answer: with a non-zero balance
    // in PostgreSQL, a read that trusted it (or read it as 0) would show.
    app.earn(user, 5).await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("garbage")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(app.balance_of(&token).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_idempotency_key_returns_the_first_answer_once() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    app.earn(user, 100).await;
    let body = json!({"amount": 10});
    let first = app
        .call(
            Method::POST,
            "/points/use",
            Some(&token),
            Some(body.clone()),
            Some("use-1"),
        )
        .await;
    let second = app
        .call(
            Method::POST,
            "/points/use",
            Some(&token),
            Some(body),
            Some("use-1"),
        )
        .await;
    assert_eq!(first.0, 201);
    assert_eq!(first, second);
    assert_eq!(app.balance_of(&token).await, 90);
    let (s, b) = app
        .call(
            Method::POST,
            "/points/use",
            Some(&token),
            Some(json!({"amount": 11})),
            Some("use-1"),
        )
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("IDEMPOTENCY_MISMATCH"))
    );
    // Concurrent replays of one key: one effect.
    let app = Arc::new(app);
    let token = Arc::new(token);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, token) = (app.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            app.call(
                Method::POST,
                "/points/use",
                Some(&token),
                Some(json!({"amount": 5})),
                Some("use-2"),
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        if s == 201 {
            ids.insert(b["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!((s, &b["error"]["code"]), (409, &json!("CONFLICT")), "{b}");
        }
    }
    assert_eq!(ids.len(), 1, "one transaction for one key");
    assert_eq!(app.balance_of(&token).await, 85);
    app.assert_ledger_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let (user, token) = app.user_token();
    let (other, other_token) = app.user_token();
    let earned = app.earn(user, 100).await;
    let cases = [
        (json!({"user_id": user, "amount": 0}), "amount"),
        (json!({"user_id": user, "amount": -5}), "amount"),
        (json!({"user_id": user, "amount": 10_000_001}), "amount"),
        (json!({"user_id": user, "amount": "ten"}), "amount"),
        (json!({"user_id": "nope", "amount": 1}), "user_id"),
        (json!({"amount": 1}), "user_id"),
        (
            json!({"user_id": user, "amount": 1, "reference": "x".repeat(201)}),
            "reference",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = app.post("/points/earn", &app.admin, body.clone()).await;
        assert_eq!(s, 400, "{body} -> {b}");
        assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(b["error"]["field"], field, "{body} -> {b}");
    }
    let (s, _) = app
        .post(
            "/points/earn",
            &token,
            json!({"user_id": user, "amount": 5}),
        )
        .await;
    assert_eq!(s, 403, "users cannot earn");
    let (s, _) = app
        .post(
            "/points/use",
            &token,
            json!({"amount": 5, "user_id": other}),
        )
        .await;
    assert_eq!(s, 403, "users cannot spend for others");
    let (s, b) = app
        .post("/points/use", &token, json!({"amount": 101}))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("INSUFFICIENT_BALANCE"))
    );
    let (s, b) = app
        .post("/points/use", &other_token, json!({"amount": 1}))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("INSUFFICIENT_BALANCE")),
        "no row yet"
    );
    let path = format!(
        "/points/transactions/{}/cancel",
        earned["id"].as_str().unwrap()
    );
    let (s, _) = app.post(&path, &other_token, json!({})).await;
    assert_eq!(s, 403, "not yours");
    let (s, b) = app
        .post(
            &format!("/points/transactions/{}/cancel", Uuid::new_v4()),
            &token,
            json!({}),
        )
        .await;
    assert_eq!((s, &b["error"]["code"]), (404, &json!("NOT_FOUND")));
    let (s, b) = app
        .post("/points/transactions/xyz/cancel", &token, json!({}))
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("id")));
    let (s, b) = app.get("/points/history?type=GIFT", &token).await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("type")));
    let (s, _) = app
        .get(&format!("/points/balance?user_id={other}"), &token)
        .await;
    assert_eq!(s, 403);

    // Overflow: a balance near i64::MAX refuses a credit that would wrap.
    sqlx::query("UPDATE point_balances SET balance = $1 WHERE user_id = $2")
        .bind(i64::MAX - 5)
        .bind(user)
        .execute(&app.point_db)
        .await
        .unwrap();
    let (s, b) = app
        .post(
            "/points/earn",
            &app.admin,
            json!({"user_id": user, "amount": 10}),
        )
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("amount")), "{b}");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM point_transactions")
        .fetch_one(&app.point_db)
        .await
        .unwrap();
    assert_eq!(count, 1, "refusals wrote nothing");
}

/// Random interleavings of earn, use and cancel from several tasks at once
/// keep every balance equal to its ledger and never negative. The seed is
/// fixed, so a failure replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_operations_keep_the_ledger_invariant() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    #[derive(Debug, Clone)]
    enum Op {
        Earn(i64),
        Use(i64),
        /// Cancel the n-th transaction this task has made so far.
        Cancel(usize),
    }
    let op = prop_oneof![
        (1i64..200).prop_map(Op::Earn),
        (1i64..300).prop_map(Op::Use),
        (0usize..10).prop_map(Op::Cancel),
    ];
    // Per case: 3 users, 4 tasks, each task a sequence of ops on one user.
    let strategy = proptest::collection::vec((0usize..3, proptest::collection::vec(op, 5..25)), 4);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let app = Arc::new(spawn_app().await);
    for _case in 0..6 {
        let plan = strategy.new_tree(&mut runner).unwrap().current();
        let users: Vec<(Uuid, String)> = (0..3).map(|_| app.user_token()).collect();
        let mut tasks = Vec::new();
        for (u, ops) in plan {
            let app = app.clone();
            let (user, token) = users[u].clone();
            tasks.push(tokio::spawn(async move {
                let mut mine: Vec<String> = Vec::new();
                for op in ops {
                    let (s, b) = match op {
                        Op::Earn(a) => {
                            app.post(
                                "/points/earn",
                                &app.admin,
                                json!({"user_id": user, "amount": a}),
                            )
                            .await
                        }
                        Op::Use(a) => app.post("/points/use", &token, json!({"amount": a})).await,
                        Op::Cancel(n) => match mine.get(n) {
                            Some(id) => {
                                app.post(
                                    &format!("/points/transactions/{id}/cancel"),
                                    &token,
                                    json!({}),
                                )
                                .await
                            }
                            None => continue,
                        },
                    };
                    match s {
                        201 => mine.push(b["id"].as_str().unwrap().to_owned()),
                        409 => assert!(
                            ["INSUFFICIENT_BALANCE", "ALREADY_CANCELLED", "CONFLICT"]
                                .contains(&b["error"]["code"].as_str().unwrap()),
                            "{b}"
                        ),
                        other => panic!("unexpected {other}: {b}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        app.assert_ledger_invariant().await;
        for (_, token) in &users {
            let (s, b) = app.get("/points/balance", token).await;
            assert_eq!(s, 200);
            assert!(b["balance"].as_i64().unwrap() >= 0);
        }
    }
}

/// A change as the service queues it, for driving the group commit directly.
fn pending(
    user: Uuid,
    // For a cancel, the kind of the transaction it cancels.
    kind: promo_domain::point::TxType,
    amount: i64,
    cancels: Option<Uuid>,
    key: Option<&str>,
) -> promod::point::store::PendingChange {
    use promo_domain::point::lot::LotOp;
    use promo_domain::point::{Transaction, TxType};
    let delta = match kind {
        TxType::Earn => amount,
        TxType::Use => -amount,
        _ => panic!("a cancel is given the kind it cancels"),
    };
    let (tx_type, delta) = match cancels {
        Some(_) => (TxType::Cancel, -delta),
        None => (kind, delta),
    };
    let id = Uuid::now_v7();
    // Lots as the service names them; cancels here are of earns only.
    let lot = match (cancels, kind) {
        (Some(earn), _) => LotOp::Revoke(earn),
        (None, TxType::Earn) => LotOp::Add {
            id,
            expires_at: None,
        },
        (None, _) => LotOp::Draw,
    };
    promod::point::store::PendingChange {
        lot,
        audit: None,
        tx: Transaction {
            id,
            user_id: user,
            tx_type,
            amount,
            delta,
            balance_after: 0,
            reference: None,
            description: None,
            cancelled_transaction_id: cancels,
            hold_id: None,
            lot_id: None,
            created_at: chrono::Utc::now(),
        },
        idem: key.map(|k| {
            (
                promod::idempotency::IdemKey::parse(k, format!("hash-{k}")).unwrap(),
                user,
            )
        }),
    }
}

/// In one batch, one user's changes apply in order on the running balance,
/// and refusals (balance, a second cancel, a key used twice) neither stop
/// the members after them nor claim anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applies_one_users_changes_in_order() {
    use promo_domain::point::TxType::{Earn, Use};
    use promo_domain::DomainError;
    use promod::batcher::InsertOutcome::{Duplicate, Refused, Stored};
    use promod::point::store::{insert_batch, Applied};
    let app = spawn_app().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    let first = pending(u, Earn, 30, None, None);
    let earned = first.tx.id;
    let out = insert_batch(&app.point_db, &[first]).await.unwrap();
    assert_eq!(
        out,
        [Stored(Applied {
            balance: 30,
            held: 0,
            version: 1
        })]
    );

    let mut batch = [
        pending(u, Use, 40, None, None),          // 30 - 40 < 0: refused
        pending(u, Earn, 100, None, None),        // 130
        pending(v, Use, 1, None, None),           // no row: refused
        pending(u, Use, 60, None, Some("k1")),    // 70
        pending(u, Use, 60, None, Some("k1")),    // same key: duplicate
        pending(u, Use, 500, None, Some("k2")),   // refused, k2 stays free
        pending(u, Earn, 30, Some(earned), None), // cancel of the earn: 40
        pending(u, Earn, 30, Some(earned), None), // second cancel: refused
        pending(v, Earn, 5, None, None),          // creates v's row: 5
        pending(u, Use, 40, None, Some("k2")),    // k2 now applies: 0
        pending(v, Use, 5, None, None),           // 0
    ];
    // The 100 expire first, so the uses leave the first earn's lot untouched
    // and it may be cancelled.
    let soon = Some(chrono::Utc::now() + chrono::Duration::days(1));
    if let promo_domain::point::lot::LotOp::Add { expires_at, .. } = &mut batch[1].lot {
        *expires_at = soon;
    }
    let out = insert_batch(&app.point_db, &batch).await.unwrap();
    let s = |balance, version| {
        Stored(Applied {
            balance,
            held: 0,
            version,
        })
    };
    assert_eq!(
        out,
        [
            Refused(DomainError::InsufficientBalance),
            s(130, 2),
            Refused(DomainError::InsufficientBalance),
            s(70, 3),
            Duplicate,
            Refused(DomainError::InsufficientBalance),
            s(40, 4),
            Refused(DomainError::AlreadyCancelled),
            s(5, 1),
            s(0, 5),
            s(0, 2),
        ]
    );
    let ledger: std::collections::HashMap<Uuid, i64> =
        sqlx::query_as("SELECT id, balance_after FROM point_transactions WHERE user_id = $1")
            .bind(u)
            .fetch_all(&app.point_db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let want: std::collections::HashMap<Uuid, i64> = [(earned, 30)]
        .into_iter()
        .chain([(1, 130), (3, 70), (6, 40), (9, 0)].map(|(i, b)| (batch[i].tx.id, b)))
        .collect();
    assert_eq!(ledger, want);
    // The events carry the same running balances, in ledger order.
    let events: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->'data'->>'balance_after')::bigint FROM outbox
         WHERE aggregate_id = $1 ORDER BY seq",
    )
    .bind(u.to_string())
    .fetch_all(&app.point_db)
    .await
    .unwrap();
    assert_eq!(events, [30, 130, 70, 40, 0]);
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, balance, version FROM point_balances WHERE user_id = ANY($1) ORDER BY balance, version",
    )
    .bind(vec![u, v])
    .fetch_all(&app.point_db)
    .await
    .unwrap();
    assert_eq!(rows, [(v, 0, 2), (u, 0, 5)]);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key")
        .fetch_all(&app.point_db)
        .await
        .unwrap();
    assert_eq!(keys, ["k1", "k2"]);
    app.assert_ledger_invariant().await;
}

/// Two batches over the same users in opposite orders, run at the same time
/// many times (straight to the store, without the batcher's rerun on a
/// deadlock): every change commits, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_same_users_in_opposite_orders_do_not_deadlock() {
    use promo_domain::point::TxType::{Earn, Use};
    use promod::batcher::InsertOutcome;
    use promod::point::store::insert_batch;
    let app = spawn_app().await;
    let users: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let seed: Vec<_> = users
        .iter()
        .map(|u| pending(*u, Earn, 1000, None, None))
        .collect();
    insert_batch(&app.point_db, &seed).await.unwrap();
    let pool = app.point_db.clone();
    for _ in 0..25 {
        let forward: Vec<_> = users
            .iter()
            .map(|u| pending(*u, Use, 1, None, None))
            .collect();
        let backward: Vec<_> = users
            .iter()
            .rev()
            .map(|u| pending(*u, Use, 2, None, None))
            .collect();
        let (a, b) = tokio::join!(
            insert_batch(&pool, &forward),
            insert_batch(&pool, &backward)
        );
        for out in [a.expect("forward batch"), b.expect("backward batch")] {
            assert!(out.iter().all(|o| matches!(o, InsertOutcome::Stored(_))));
        }
    }
    let balances: Vec<i64> =
        sqlx::query_scalar("SELECT balance FROM point_balances WHERE user_id = ANY($1)")
            .bind(&users)
            .fetch_all(&app.point_db)
            .await
            .unwrap();
    assert_eq!(balances, vec![1000 - 25 * 3; 40]);
    app.assert_ledger_invariant().await;
}

/// After concurrent changes of a few users through the API (so several land
/// in one batch), each cached entry is the database's balance and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_ends_at_the_databases_balance_and_version() {
    let app = Arc::new(spawn_app().await);
    let users: Vec<(Uuid, String)> = (0..4).map(|_| app.user_token()).collect();
    for (u, _) in &users {
        app.earn(*u, 1000).await;
    }
    let mut tasks = Vec::new();
    for i in 0..120 {
        let app = app.clone();
        let (user, token) = users[i % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                app.earn(user, 7).await;
            } else {
                let (s, b) = app.post("/points/use", &token, json!({"amount": 11})).await;
                assert_eq!(s, 201, "{b}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut redis = redis::Client::open(super::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (u, _) in &users {
        let (balance, version): (i64, i64) =
            sqlx::query_as("SELECT balance, version FROM point_balances WHERE user_id = $1")
                .bind(u)
                .fetch_one(&app.point_db)
                .await
                .unwrap();
        assert_eq!(balance, 1000 + 10 * 7 - 20 * 11);
        let cached: String = redis::cmd("GET")
            .arg(promo_store::keys::point_balance(*u))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(cached, format!("{balance}:0:{version}"));
    }
    app.assert_ledger_invariant().await;
}
