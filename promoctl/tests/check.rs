//! Each invariant of `promoctl check`: clean data passes, then a deliberate
//! corruption of PostgreSQL or Redis fails the check and names the culprit.
//! Every test has fresh databases (`t_ctl_<uuid>`) and Redis keys named by
//! random ids, so tests run in parallel.

use promo_store::keys;
use promoctl::check::{self, coupon, events, point, timesale, CheckResult, Redis};
use sqlx::PgPool;
use uuid::Uuid;

mod common;

use common::{fresh, fresh_with_url, redis_url, Schema};

async fn redis() -> Redis {
    check::connect_redis(&redis_url(), None)
        .await
        .expect("redis for tests")
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}

fn find<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.check == name)
        .unwrap_or_else(|| panic!("no check {name} in {results:#?}"))
}

fn assert_clean(results: &[CheckResult]) {
    for r in results {
        assert!(!r.failed(), "clean data fails {}: {r:#?}", r.check);
    }
}

/// The check failed, and its sample names `culprit` (with `detail`).
fn assert_names(results: &[CheckResult], name: &str, culprit: &str, detail: &str) {
    let r = find(results, name);
    assert!(r.violations > 0, "{name} missed the corruption: {r:#?}");
    assert!(
        r.sample
            .iter()
            .any(|s| s.contains(culprit) && s.contains(detail)),
        "{name} does not name {culprit} ({detail}): {r:#?}"
    );
}

async fn redis_set(r: &mut Redis, key: &str, v: impl redis::ToRedisArgs) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(v)
        .query_async(r)
        .await
        .unwrap();
}

async fn redis_hset(r: &mut Redis, key: &str, field: &str, v: i64) {
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(v)
        .query_async(r)
        .await
        .unwrap();
}

async fn redis_del(r: &mut Redis, keys: &[String]) {
    let _: i64 = redis::cmd("DEL").arg(keys).query_async(r).await.unwrap();
}

// ---------------------------------------------------------------- coupons

/// A policy (total 5, per user 2) with two coupons of `user`, one used.
async fn coupon_world(pool: &PgPool) -> (Uuid, Uuid) {
    let policy = Uuid::new_v4();
    let user = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO coupon_policies (id, name, discount_type, discount_value, total_quantity,
             issued_quantity, per_user_limit, valid_from, valid_until)
         VALUES ($1, 'p', 'FIXED', 100, 5, 2, 2, now() - interval '1 day', now() + interval '1 day')",
    )
    .bind(policy)
    .execute(pool)
    .await
    .unwrap();
    for seq in 1..=2 {
        sqlx::query(
            "INSERT INTO coupons (id, code, policy_id, user_id, user_seq, per_user_limit, status,
                 order_id, discount_amount, used_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, 2, $6, $7, $8, $9, now() + interval '1 day')",
        )
        .bind(Uuid::new_v4())
        .bind(format!("CODE-{}-{seq}", policy.simple()))
        .bind(policy)
        .bind(user)
        .bind(seq)
        .bind(if seq == 1 { "USED" } else { "AVAILABLE" })
        .bind((seq == 1).then_some("order-1"))
        .bind((seq == 1).then_some(100i64))
        .bind((seq == 1).then(chrono::Utc::now))
        .execute(pool)
        .await
        .unwrap();
    }
    // As promod records its creation.
    let created = promo_domain::audit::action::POLICY_CREATED;
    audited(pool, created, policy, serde_json::json!({})).await;
    (policy, user)
}

#[tokio::test]
async fn coupon_issued_quantity_must_match_the_coupons() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, _) = coupon_world(&pool).await;
    let before = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, coupon::ISSUED).examined, 1);

    exec(&pool, "UPDATE coupon_policies SET issued_quantity = 3").await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::ISSUED,
        &policy.to_string(),
        "issued 3, coupons 2",
    );
}

#[tokio::test]
async fn coupon_users_must_stay_within_the_limit() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, user) = coupon_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());

    // The limit shrinks under a user who already holds two.
    exec(&pool, "UPDATE coupon_policies SET per_user_limit = 1").await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::PER_USER,
        &format!("{policy}/{user}"),
        "2 > limit 1",
    );
}

#[tokio::test]
async fn coupon_redis_counters_must_match_postgres() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, user) = coupon_world(&pool).await;
    let (remaining, users) = (keys::coupon_remaining(policy), keys::coupon_users(policy));

    // Not loaded: reported, not a violation.
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(
        find(&res, coupon::REDIS).note.as_deref(),
        Some("1 of 1 not loaded")
    );

    redis_set(&mut r, &remaining, 3).await;
    redis_hset(&mut r, &users, &user.to_string(), 2).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, coupon::REDIS).note, None);

    redis_set(&mut r, &remaining, 4).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        coupon::REDIS,
        &policy.to_string(),
        "remaining 4 in redis",
    );

    redis_set(&mut r, &remaining, 3).await;
    redis_hset(&mut r, &users, &user.to_string(), 1).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        coupon::REDIS,
        &format!("{policy}/{user}"),
        "1 in redis, 2 in postgres",
    );

    // A user Redis knows but PostgreSQL does not.
    redis_hset(&mut r, &users, &user.to_string(), 2).await;
    let ghost = Uuid::new_v4();
    redis_hset(&mut r, &users, &ghost.to_string(), 1).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        coupon::REDIS,
        &ghost.to_string(),
        "1 in redis, 0 in postgres",
    );
    redis_del(&mut r, &[remaining, users]).await;
}

/// A journaled reservation is fine while promod's reconciler may still settle
/// it; one older than the bound plus slack is a taking nobody gave back.
#[tokio::test]
async fn coupon_reservations_unsettled_past_the_bound_are_violations() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, user) = coupon_world(&pool).await;
    let (remaining, users) = (keys::coupon_remaining(policy), keys::coupon_users(policy));
    let journal = keys::coupon_journal(policy);
    redis_set(&mut r, &remaining, 3).await;
    redis_hset(&mut r, &users, &user.to_string(), 2).await;
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut r).await.unwrap();
    let member = |n: u8| format!("{}:{user}:1", Uuid::from_u128(n.into()));
    let young = secs * 1000 - 1_000;
    let _: () = redis::cmd("ZADD")
        .arg(&journal)
        .arg(young)
        .arg(member(1))
        .query_async(&mut r)
        .await
        .unwrap();
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    let old = secs * 1000 - promoctl::check::OVERDUE.as_millis() as i64 - 1_000;
    let _: () = redis::cmd("ZADD")
        .arg(&journal)
        .arg(old)
        .arg(member(2))
        .query_async(&mut r)
        .await
        .unwrap();
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        coupon::REDIS,
        &policy.to_string(),
        "1 reservations unsettled for over 30s",
    );
    redis_del(&mut r, &[remaining, users, journal]).await;
}

/// Same users, same total, counts swapped between two users: only the
/// checksum of the digest can tell, and the detailed comparison names both.
#[tokio::test]
async fn coupon_redis_counts_swapped_between_users_are_caught() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, a) = coupon_world(&pool).await;
    let b = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO coupons (id, code, policy_id, user_id, user_seq, per_user_limit, status, expires_at)
         VALUES ($1, $2, $3, $4, 1, 2, 'AVAILABLE', now() + interval '1 day')",
    )
    .bind(Uuid::new_v4())
    .bind(format!("B-{}", b.simple()))
    .bind(policy)
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    exec(&pool, "UPDATE coupon_policies SET issued_quantity = 3").await;
    let (remaining, users) = (keys::coupon_remaining(policy), keys::coupon_users(policy));
    redis_set(&mut r, &remaining, 2).await;
    redis_hset(&mut r, &users, &a.to_string(), 2).await;
    redis_hset(&mut r, &users, &b.to_string(), 1).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, coupon::REDIS).note, None, "digests agree");

    redis_hset(&mut r, &users, &a.to_string(), 1).await;
    redis_hset(&mut r, &users, &b.to_string(), 2).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        coupon::REDIS,
        &format!("{policy}/{a}"),
        "1 in redis, 2 in postgres",
    );
    assert_names(
        &res,
        coupon::REDIS,
        &format!("{policy}/{b}"),
        "2 in redis, 1 in postgres",
    );
    assert_eq!(
        find(&res, coupon::REDIS).note.as_deref(),
        Some("1 compared user by user")
    );
    redis_del(&mut r, &[remaining, users]).await;
}

#[tokio::test]
async fn coupon_used_needs_an_order() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    coupon_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());

    // An empty order id slips past the table's CHECK; the check catches it.
    let (id,): (Uuid,) =
        sqlx::query_as("UPDATE coupons SET order_id = '' WHERE status = 'USED' RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::USED, &id.to_string(), "");
}

#[tokio::test]
async fn coupon_codes_are_unique() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (policy, _) = coupon_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());

    // A unique index, partial since coupon codes (2003_coupon_codes.sql).
    exec(&pool, "DROP INDEX coupons_code_key").await;
    let code = format!("CODE-{}-1", policy.simple());
    sqlx::query("UPDATE coupons SET code = $1")
        .bind(&code)
        .execute(&pool)
        .await
        .unwrap();
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::CODES, &code, "(2 coupons)");
}

/// A BATCH policy (total 5) with two codes, one redeemed, and a SHARED
/// policy whose code two users redeemed, as promod stores them.
struct CodeWorld {
    batch: Uuid,
    shared: Uuid,
    /// The redeemed BATCH code's coupon, and the SHARED policy's two.
    batch_coupon: Uuid,
    shared_coupons: [Uuid; 2],
}

const BATCH_CODES: [&str; 2] = ["LOADAAAAAAAAAA2", "LOADBBBBBBBBBB3"];

async fn insert_policy(pool: &PgPool, mode: &str, shared_code: Option<&str>, codes: i64) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO coupon_policies (id, name, discount_type, discount_value, total_quantity,
             issued_quantity, per_user_limit, valid_from, valid_until, code_mode, shared_code,
             codes_generated)
         VALUES ($1, 'p', 'FIXED', 100, 5, 0, 1, now() - interval '1 day',
                 now() + interval '1 day', $2, $3, $4)",
    )
    .bind(id)
    .bind(mode)
    .bind(shared_code)
    .bind(codes)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn insert_code(pool: &PgPool, code: &str, policy: Uuid, shared: bool) {
    sqlx::query(
        "INSERT INTO coupon_codes (code, policy_id, shared, created_at) VALUES ($1, $2, $3, now())",
    )
    .bind(code)
    .bind(policy)
    .bind(shared)
    .execute(pool)
    .await
    .unwrap();
}

/// A coupon redeemed with `code` (normalized) showing `shown`.
async fn redeemed(pool: &PgPool, policy: Uuid, shown: &str, code: &str, shared: bool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO coupons (id, code, policy_id, user_id, user_seq, per_user_limit, status,
             expires_at, redeemed_code, redeemed_shared)
         VALUES ($1, $2, $3, $4, 1, 1, 'AVAILABLE', now() + interval '1 day', $5, $6)",
    )
    .bind(id)
    .bind(shown)
    .bind(policy)
    .bind(Uuid::new_v4())
    .bind(code)
    .bind(shared)
    .execute(pool)
    .await
    .unwrap();
    exec(
        pool,
        &format!("UPDATE coupon_policies SET issued_quantity = issued_quantity + 1 WHERE id = '{policy}'"),
    )
    .await;
    id
}

async fn code_world(pool: &PgPool) -> CodeWorld {
    let batch = insert_policy(pool, "BATCH", None, 2).await;
    for code in BATCH_CODES {
        insert_code(pool, code, batch, false).await;
    }
    let batch_coupon = redeemed(pool, batch, BATCH_CODES[0], BATCH_CODES[0], false).await;
    let shared = insert_policy(pool, "SHARED", Some("SPRING-10"), 0).await;
    insert_code(pool, "SPRING10", shared, true).await;
    let mut shared_coupons = [Uuid::nil(); 2];
    for c in &mut shared_coupons {
        *c = redeemed(pool, shared, "SPRING-10", "SPRING10", true).await;
    }
    CodeWorld {
        batch,
        shared,
        batch_coupon,
        shared_coupons,
    }
}

/// Every shared code's coupons show the same code: not a duplicate.
#[tokio::test]
async fn coupon_codes_of_a_world_with_codes_are_clean() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    coupon_world(&pool).await;
    code_world(&pool).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(
        find(&res, coupon::CODES).examined,
        2,
        "only coupons not redeemed by code"
    );
    assert_eq!(find(&res, coupon::REDEEMED_ONCE).examined, 1);
    assert_eq!(find(&res, coupon::CODES_MATCH).examined, 5);
    assert_eq!(find(&res, coupon::CODES_GENERATED).examined, 3);
}

#[tokio::test]
async fn coupon_batch_codes_are_redeemed_once() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let w = code_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());

    exec(&pool, "DROP INDEX coupons_redeemed_once").await;
    redeemed(&pool, w.batch, BATCH_CODES[0], BATCH_CODES[0], false).await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::REDEEMED_ONCE, BATCH_CODES[0], "(2 coupons)");
}

/// A coupon marked shared slips past the unique index; the code's own
/// row still says BATCH.
#[tokio::test]
async fn coupon_batch_codes_marked_shared_still_count_once() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let w = code_world(&pool).await;
    redeemed(&pool, w.batch, BATCH_CODES[0], BATCH_CODES[0], true).await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::REDEEMED_ONCE, BATCH_CODES[0], "(2 coupons)");
    assert_names(
        &after,
        coupon::CODES_MATCH,
        BATCH_CODES[0],
        "is batch, the coupon says shared",
    );
}

#[tokio::test]
async fn coupon_redeemed_codes_match_their_policy_and_mode() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (generated, _) = coupon_world(&pool).await;
    let w = code_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());
    let update = |sql: String| {
        let pool = pool.clone();
        async move { exec(&pool, &sql).await }
    };

    // A BATCH policy's coupon without its code.
    update(format!(
        "UPDATE coupons SET redeemed_code = NULL WHERE id = '{}'",
        w.batch_coupon
    ))
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_MATCH,
        &w.batch_coupon.to_string(),
        "BATCH policy, no code",
    );

    // A GENERATED policy's coupon carrying a code.
    let (issued,): (Uuid,) =
        sqlx::query_as("SELECT id FROM coupons WHERE policy_id = $1 AND status = 'AVAILABLE'")
            .bind(generated)
            .fetch_one(&pool)
            .await
            .unwrap();
    update(format!(
        "UPDATE coupons SET redeemed_code = '{}' WHERE id = '{issued}'",
        BATCH_CODES[1]
    ))
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_MATCH,
        &issued.to_string(),
        "on a GENERATED policy",
    );

    // A shared coupon that says its code is a batch one.
    let [one, two] = w.shared_coupons;
    update(format!(
        "UPDATE coupons SET redeemed_shared = false WHERE id = '{one}'"
    ))
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_MATCH,
        &one.to_string(),
        "SPRING10 is shared, the coupon says batch",
    );

    // A code of another policy, and one that does not exist.
    update(format!(
        "UPDATE coupons SET redeemed_code = '{}' WHERE id = '{two}'",
        BATCH_CODES[1]
    ))
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_MATCH,
        &two.to_string(),
        &format!("is of policy {}", w.batch),
    );
    // No foreign key stops this: the check is the one that reads it.
    update(format!(
        "UPDATE coupons SET redeemed_code = 'NOSUCHCODE' WHERE id = '{two}'"
    ))
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_MATCH,
        &two.to_string(),
        "NOSUCHCODE does not exist",
    );
    assert_eq!(find(&after, coupon::CODES_MATCH).violations, 4);
}

#[tokio::test]
async fn coupon_codes_generated_counts_each_policys_codes() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let w = code_world(&pool).await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());

    // A count behind the codes.
    exec(
        &pool,
        &format!(
            "UPDATE coupon_policies SET codes_generated = 1 WHERE id = '{}'",
            w.batch
        ),
    )
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_GENERATED,
        &w.batch.to_string(),
        "codes_generated 1, codes 2",
    );

    // A shared code that is not the policy's.
    exec(
        &pool,
        &format!(
            "UPDATE coupon_policies SET shared_code = 'SUMMER-5' WHERE id = '{}'",
            w.shared
        ),
    )
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_GENERATED,
        &w.shared.to_string(),
        "shared code SUMMER5, codes [SPRING10]",
    );

    // A second shared code on a BATCH policy, and codes of no policy.
    insert_code(&pool, "EXTRA2024", w.batch, true).await;
    let ghost = Uuid::new_v4();
    insert_code(&pool, "GHOSTCODE2", ghost, false).await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_GENERATED,
        &ghost.to_string(),
        "1 codes of no policy",
    );
    exec(
        &pool,
        &format!(
            "UPDATE coupon_policies SET codes_generated = 2 WHERE id = '{}'",
            w.batch
        ),
    )
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::CODES_GENERATED,
        &w.batch.to_string(),
        "BATCH policy with shared codes [EXTRA2024]",
    );
}

/// `coupon_world`'s AVAILABLE coupon, reserved for "order-2" until an hour
/// from now: its id.
async fn reserve_one(pool: &PgPool) -> Uuid {
    let (id,): (Uuid,) = sqlx::query_as(
        "UPDATE coupons SET status = 'RESERVED', reserved_order_id = 'order-2',
             reserved_until = now() + interval '1 hour'
         WHERE status = 'AVAILABLE' RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn coupon_reservations_need_an_order_and_a_deadline() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    coupon_world(&pool).await;
    let id = reserve_one(&pool).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, coupon::RESERVED).examined, 1);

    // Only without the table's CHECK can a reservation lose its order.
    exec(
        &pool,
        "ALTER TABLE coupons DROP CONSTRAINT reserved_has_order_and_deadline",
    )
    .await;
    exec(
        &pool,
        "UPDATE coupons SET reserved_order_id = NULL WHERE status = 'RESERVED'",
    )
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::RESERVED, &id.to_string(), "RESERVED");
}

#[tokio::test]
async fn coupon_reservations_past_the_sweep_bound_are_violations() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    coupon_world(&pool).await;
    let id = reserve_one(&pool).await;
    // Due, but within the bound: the sweeper may still be on its way.
    exec(&pool, "UPDATE coupons SET reserved_until = now() - interval '5 seconds' WHERE status = 'RESERVED'").await;
    assert_clean(&coupon::check(&pool, &mut r).await.unwrap());
    let late = format!("UPDATE coupons SET reserved_until = now() - interval '{} seconds' WHERE status = 'RESERVED'",
        promoctl::check::SWEEP_BOUND.as_secs() + 5);
    exec(&pool, &late).await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(&after, coupon::SWEPT, &id.to_string(), "reserved until");
}

/// `coupon_world`'s two coupons both used on "order-1" of 1000, 100 off
/// each, under a stackable policy: an order that keeps the rules.
async fn stacked_order(pool: &PgPool) -> Uuid {
    let (_, user) = coupon_world(pool).await;
    exec(pool, "UPDATE coupon_policies SET stackable = true").await;
    exec(
        pool,
        "UPDATE coupons SET status = 'USED', order_id = 'order-1', order_amount = 1000,
             discount_amount = 100, used_at = coalesce(used_at, now())",
    )
    .await;
    user
}

#[tokio::test]
async fn coupon_orders_keep_the_stacking_rules() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let user = stacked_order(&pool).await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, coupon::STACKING).examined, 1);
    let order = format!("{user}/order-1");

    let breaks = [
        (
            "UPDATE coupons SET discount_amount = 600",
            "discounts 1200 > 1000",
        ),
        (
            "UPDATE coupons SET order_amount = 900 WHERE user_seq = 2",
            "2 order amounts",
        ),
        (
            "UPDATE coupon_policies SET stackable = false",
            "not all stackable",
        ),
    ];
    for (corrupt, detail) in breaks {
        exec(&pool, corrupt).await;
        let after = coupon::check(&pool, &mut r).await.unwrap();
        assert_names(&after, coupon::STACKING, &order, detail);
        exec(&pool, "UPDATE coupon_policies SET stackable = true").await;
        exec(
            &pool,
            "UPDATE coupons SET order_amount = 1000, discount_amount = 100",
        )
        .await;
        assert_clean(&coupon::check(&pool, &mut r).await.unwrap());
    }
}

/// Appends hold events of `coupon` to the outbox, in this order.
async fn hold_events(pool: &PgPool, coupon: Uuid, events: &[(&str, bool)]) {
    for (topic, confirmed) in events {
        let until = confirmed.then(|| "2030-01-01T00:00:00Z");
        sqlx::query(
            "INSERT INTO outbox (id, topic, aggregate_id, payload)
             VALUES ($1, $2, $3, jsonb_build_object('data', jsonb_build_object('reserved_until', $4::text)))",
        )
        .bind(Uuid::new_v4())
        .bind(topic)
        .bind(coupon.to_string())
        .bind(until)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn coupon_reservations_resolve_at_most_once() {
    let pool = fresh(Schema::Coupon).await;
    let mut r = redis().await;
    let (reserved, used, released) = (
        "coupon.reserved",
        "coupon.used",
        "coupon.reservation_released",
    );
    // Reserved and confirmed, the use cancelled and used again directly,
    // reserved and released: each reservation resolved once.
    let fine = Uuid::new_v4();
    hold_events(
        &pool,
        fine,
        &[
            (reserved, false),
            (used, true),
            ("coupon.use_cancelled", false),
            (used, false),
            (reserved, false),
            (released, false),
        ],
    )
    .await;
    // What the pruner leaves: the events after a deleted `coupon.reserved`.
    let pruned = Uuid::new_v4();
    hold_events(
        &pool,
        pruned,
        &[(released, false), (reserved, false), (used, true)],
    )
    .await;
    let res = coupon::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(
        find(&res, coupon::RESOLVED_ONCE).examined,
        7,
        "the hold events only"
    );

    let twice = Uuid::new_v4();
    hold_events(
        &pool,
        twice,
        &[(reserved, false), (used, true), (released, false)],
    )
    .await;
    let after = coupon::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        coupon::RESOLVED_ONCE,
        &twice.to_string(),
        "resolved twice",
    );
    assert_eq!(find(&after, coupon::RESOLVED_ONCE).violations, 1);
}

// ---------------------------------------------------------------- points

/// id, type, amount, delta, balance_after, cancelled transaction.
type LedgerRow = (Uuid, &'static str, i64, i64, i64, Option<Uuid>);

/// `user` earned 100 (one lot), used 30 of it, and the use was cancelled
/// (the draw given back): balance 100.
async fn point_world(pool: &PgPool) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    let (earn, used, cancel) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let rows: [LedgerRow; 3] = [
        (earn, "EARN", 100, 100, 100, None),
        (used, "USE", 30, -30, 70, None),
        (cancel, "CANCEL", 30, 30, 100, Some(used)),
    ];
    for (i, (id, kind, amount, delta, after, cancelled)) in rows.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
                 cancelled_transaction_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now() - make_interval(secs => $8))",
        )
        .bind(id)
        .bind(user)
        .bind(kind)
        .bind(amount)
        .bind(delta)
        .bind(after)
        .bind(cancelled)
        .bind(10.0 - i as f64)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO point_balances (user_id, balance, version) VALUES ($1, 100, 3)")
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO point_lots (id, user_id, earn_transaction_id, amount, remaining, earned_at)
         VALUES ($1, $2, $1, 100, 100, now() - interval '10 seconds')",
    )
    .bind(earn)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    draw(pool, used, 30).await;
    (user, used)
}

/// Records that debit `tx` drew `amount` from its user's one lot.
async fn draw(pool: &PgPool, tx: Uuid, amount: i64) {
    sqlx::query(
        "UPDATE point_transactions t SET draws = jsonb_build_array(jsonb_build_object(
             'lot_id', (SELECT id FROM point_lots l WHERE l.user_id = t.user_id), 'amount', $2))
         WHERE t.id = $1",
    )
    .bind(tx)
    .bind(amount)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn point_balance_is_the_sum_of_the_ledger() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::LEDGER).examined, 1);

    exec(&pool, "UPDATE point_balances SET balance = balance + 10").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::LEDGER,
        &user.to_string(),
        "balance 110, ledger 100",
    );

    // A ledger without a balance row is also a mismatch.
    exec(&pool, "DELETE FROM point_balances").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(&after, point::LEDGER, &user.to_string(), "balance missing");
}

#[tokio::test]
async fn point_ledger_never_goes_negative() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    assert_clean(&point::check(&pool, &mut r).await.unwrap());

    sqlx::query(
        "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after)
         VALUES ($1, $2, 'USE', 150, -150, 0)",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    exec(&pool, "UPDATE point_balances SET balance = 0").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::NON_NEGATIVE,
        &user.to_string(),
        "ledger sum -50",
    );
}

#[tokio::test]
async fn point_cache_in_redis_matches_postgres() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    let key = keys::point_balance(user);
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, point::REDIS).examined, 0);

    redis_set(&mut r, &key, "100:3").await;
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, point::REDIS).examined, 1);
    // An older version with the same balance is harmless.
    redis_set(&mut r, &key, "100:2").await;
    assert_clean(&point::check(&pool, &mut r).await.unwrap());

    redis_set(&mut r, &key, "100:4").await;
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        point::REDIS,
        &user.to_string(),
        "cached 100:4, postgres 100:0:3",
    );

    redis_set(&mut r, &key, "90:3").await;
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        point::REDIS,
        &user.to_string(),
        "cached 90:3, postgres 100:0:3",
    );

    // The same balance with another held amount is as wrong.
    redis_set(&mut r, &key, "100:5:3").await;
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_names(&res, point::REDIS, &user.to_string(), "cached 100:5:3");

    redis_set(&mut r, &key, "garbage").await;
    let res = point::check(&pool, &mut r).await.unwrap();
    assert_names(&res, point::REDIS, &user.to_string(), "unreadable");
    redis_del(&mut r, &[key]).await;
}

#[tokio::test]
async fn point_transactions_are_cancelled_at_most_once() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, used) = point_world(&pool).await;
    assert_clean(&point::check(&pool, &mut r).await.unwrap());

    exec(&pool, "DROP INDEX cancelled_once").await;
    // A second cancel of the same use, with its balance effect, so only this
    // invariant breaks.
    sqlx::query(
        "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
             cancelled_transaction_id)
         VALUES ($1, $2, 'CANCEL', 30, 30, 130, $3)",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(used)
    .execute(&pool)
    .await
    .unwrap();
    exec(
        &pool,
        "UPDATE point_balances SET balance = 130, version = 4",
    )
    .await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert!(!find(&after, point::LEDGER).failed());
    assert_names(
        &after,
        point::CANCELLED_ONCE,
        &used.to_string(),
        "cancelled 2 times",
    );
}

/// `point_world`, plus a pending hold of 20 and a hold of 30 captured for 10
/// (its USE takes the balance to 90): (user, pending hold, captured hold).
async fn hold_world(pool: &PgPool) -> (Uuid, Uuid, Uuid) {
    let (user, _) = point_world(pool).await;
    let (pending, captured) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO point_holds (id, user_id, amount, status, expires_at, created_at,
             resolved_at, captured_amount)
         VALUES ($1, $3, 20, 'PENDING', now() + interval '1 hour', now(), NULL, NULL),
                ($2, $3, 30, 'CAPTURED', now() + interval '1 hour', now(), now(), 10)",
    )
    .bind(pending)
    .bind(captured)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    capture_use(pool, user, captured, 90).await;
    exec(
        pool,
        "UPDATE point_balances SET balance = 90, held = 20, version = 4",
    )
    .await;
    exec(pool, "UPDATE point_lots SET remaining = 90").await;
    (user, pending, captured)
}

/// A USE of 10 naming `hold`, leaving `after`, drawn from the user's lot.
async fn capture_use(pool: &PgPool, user: Uuid, hold: Uuid, after: i64) {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after, hold_id)
         VALUES ($1, $2, 'USE', 10, -10, $3, $4)",
    )
    .bind(id)
    .bind(user)
    .bind(after)
    .bind(hold)
    .execute(pool)
    .await
    .unwrap();
    draw(pool, id, 10).await;
}

#[tokio::test]
async fn point_held_is_the_sum_of_pending_holds_within_the_balance() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, pending, _) = hold_world(&pool).await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::HELD).examined, 1);

    exec(&pool, "UPDATE point_balances SET held = 25").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::HELD,
        &user.to_string(),
        "held 25, pending holds 20",
    );

    // Past the balance: only without the row's CHECK.
    exec(
        &pool,
        "ALTER TABLE point_balances DROP CONSTRAINT held_within_balance",
    )
    .await;
    sqlx::query("UPDATE point_holds SET amount = 95 WHERE id = $1")
        .bind(pending)
        .execute(&pool)
        .await
        .unwrap();
    exec(&pool, "UPDATE point_balances SET held = 95").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert!(!find(&after, point::HELD).failed());
    assert_names(
        &after,
        point::AVAILABLE,
        &user.to_string(),
        "balance 90, held 95",
    );
}

#[tokio::test]
async fn point_holds_are_swept_within_the_bound() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (_, pending, _) = hold_world(&pool).await;
    // Due a moment ago: the sweeper has until the bound.
    sqlx::query("UPDATE point_holds SET expires_at = now() - interval '5 seconds' WHERE id = $1")
        .bind(pending)
        .execute(&pool)
        .await
        .unwrap();
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::SWEPT).examined, 1);

    let late = format!("{} seconds", promoctl::check::SWEEP_BOUND.as_secs() + 5);
    sqlx::query("UPDATE point_holds SET expires_at = now() - $2::interval WHERE id = $1")
        .bind(pending)
        .bind(late)
        .execute(&pool)
        .await
        .unwrap();
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::SWEPT,
        &pending.to_string(),
        "pending, expired at",
    );
}

#[tokio::test]
async fn point_holds_are_resolved_at_most_once() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, pending, captured) = hold_world(&pool).await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::RESOLVED_ONCE).examined, 2);

    // A second USE of the captured hold, with its balance effect, so only
    // this invariant breaks.
    exec(&pool, "DROP INDEX captured_once").await;
    capture_use(&pool, user, captured, 80).await;
    exec(&pool, "UPDATE point_balances SET balance = 80").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert!(!find(&after, point::LEDGER).failed());
    assert_names(
        &after,
        point::RESOLVED_ONCE,
        &captured.to_string(),
        "CAPTURED, 2 uses of 20, captured 10",
    );

    // A use of a hold that was never captured.
    capture_use(&pool, user, pending, 70).await;
    exec(&pool, "UPDATE point_balances SET balance = 70").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::RESOLVED_ONCE,
        &pending.to_string(),
        "PENDING, 1 uses of 10",
    );
}

// ---------------------------------------------------------------- time sales

/// A sale of 10 (limit 3 per user) with `user` holding 2 confirmed units and
/// 1 cancelled; remaining_quantity as last synced: 8.
async fn sale_world(pool: &PgPool) -> (Uuid, Uuid) {
    let product = Uuid::new_v4();
    let sale = Uuid::new_v4();
    let user = Uuid::new_v4();
    sqlx::query("INSERT INTO products (id, name, price) VALUES ($1, 'p', 1000)")
        .bind(product)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO time_sales (id, product_id, total_quantity, sold_quantity, remaining_quantity,
             sale_price, per_user_limit, start_at, end_at, status)
         VALUES ($1, $2, 10, 2, 8, 500, 3, now() - interval '1 hour', now() + interval '1 hour', 'ACTIVE')",
    )
    .bind(sale)
    .bind(product)
    .execute(pool)
    .await
    .unwrap();
    for (q, status) in [(2i64, "CONFIRMED"), (1, "CANCELLED")] {
        sqlx::query(
            "INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price,
                 total_price, status, cancelled_at)
             VALUES ($1, $2, $3, $4, 500, $4 * 500, $5, CASE WHEN $5 = 'CANCELLED' THEN now() END)",
        )
        .bind(Uuid::new_v4())
        .bind(sale)
        .bind(user)
        .bind(q)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO time_sale_user_totals (time_sale_id, user_id, quantity, per_user_limit)
         VALUES ($1, $2, 2, 3)",
    )
    .bind(sale)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    (sale, user)
}

#[tokio::test]
async fn timesale_sold_quantity_matches_confirmed_orders() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, _) = sale_world(&pool).await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    exec(&pool, "UPDATE time_sales SET sold_quantity = 3").await;
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        timesale::SOLD,
        &sale.to_string(),
        "sold 3, confirmed 2",
    );
}

#[tokio::test]
async fn timesale_users_stay_within_the_limit() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, user) = sale_world(&pool).await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    // Two more units for the user: 4 > 3, written past the user totals table.
    sqlx::query(
        "INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price,
             total_price, status)
         VALUES ($1, $2, $3, 2, 500, 1000, 'CONFIRMED')",
    )
    .bind(Uuid::new_v4())
    .bind(sale)
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    exec(
        &pool,
        "UPDATE time_sales SET sold_quantity = 4, remaining_quantity = 6",
    )
    .await;
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert!(!find(&after, timesale::SOLD).failed());
    assert_names(
        &after,
        timesale::PER_USER,
        &format!("{sale}/{user}"),
        "4 > limit 3",
    );
}

#[tokio::test]
async fn timesale_user_totals_follow_the_orders() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, user) = sale_world(&pool).await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    exec(&pool, "UPDATE time_sale_user_totals SET quantity = 1").await;
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        timesale::USER_TOTALS,
        &format!("{sale}/{user}"),
        "totals 1, orders 2",
    );
}

#[tokio::test]
async fn timesale_orders_fall_inside_their_window() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    sale_world(&pool).await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    let order: Uuid = sqlx::query_scalar(
        "UPDATE time_sale_orders SET created_at = now() - interval '2 hours'
         WHERE status = 'CONFIRMED' RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(&after, timesale::WINDOW, &order.to_string(), "window");
}

/// A PENDING hold holds stock like a confirmed order; one left PENDING
/// past its expiry plus the sweep bound is a violation, as is a hold whose
/// outbox shows two resolutions.
#[tokio::test]
async fn timesale_holds_are_swept_and_resolved_once() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, user) = sale_world(&pool).await;
    let hold = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price,
             total_price, status, expires_at)
         VALUES ($1, $2, $3, 1, 500, 500, 'PENDING', now() + interval '1 minute')",
    )
    .bind(hold)
    .bind(sale)
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    exec(
        &pool,
        "UPDATE time_sales SET sold_quantity = 3, remaining_quantity = 7",
    )
    .await;
    exec(&pool, "UPDATE time_sale_user_totals SET quantity = 3").await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    let stale = format!("{} seconds", promoctl::check::SWEEP_BOUND.as_secs() + 5);
    sqlx::query("UPDATE time_sale_orders SET expires_at = now() - $1::interval WHERE id = $2")
        .bind(&stale)
        .bind(hold)
        .execute(&pool)
        .await
        .unwrap();
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        timesale::HOLDS_SWEPT,
        &hold.to_string(),
        "pending, expired at",
    );

    for topic in ["order.expired", "order.confirmed"] {
        sqlx::query(
            "INSERT INTO outbox (id, topic, aggregate_id, payload) VALUES ($1, $2, $3, '{}')",
        )
        .bind(Uuid::new_v4())
        .bind(topic)
        .bind(hold.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        timesale::RESOLVED_ONCE,
        &hold.to_string(),
        "confirmed 1, cancelled 0, expired 1",
    );
}

#[tokio::test]
async fn timesale_remaining_is_never_ahead_of_the_truth() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, _) = sale_world(&pool).await;
    // Behind the truth is fine: the copy is periodic.
    exec(&pool, "UPDATE time_sales SET remaining_quantity = 5").await;
    assert_clean(&timesale::check(&pool, &mut r).await.unwrap());

    exec(&pool, "UPDATE time_sales SET remaining_quantity = 9").await;
    let after = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        timesale::REMAINING,
        &sale.to_string(),
        "remaining 9 > total - confirmed 8",
    );
}

#[tokio::test]
async fn timesale_redis_stock_plus_confirmed_is_the_total() {
    let pool = fresh(Schema::Timesale).await;
    let mut r = redis().await;
    let (sale, user) = sale_world(&pool).await;
    let (stock, users) = (keys::timesale_inventory(sale), keys::timesale_users(sale));
    let res = timesale::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(
        find(&res, timesale::REDIS).note.as_deref(),
        Some("1 of 1 not loaded")
    );

    redis_set(&mut r, &stock, 8).await;
    redis_hset(&mut r, &users, &user.to_string(), 2).await;
    let res = timesale::check(&pool, &mut r).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, timesale::REDIS).note, None, "digests agree");

    redis_set(&mut r, &stock, 9).await;
    let res = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        timesale::REDIS,
        &sale.to_string(),
        "stock 9 in redis + confirmed 2 != total 10",
    );

    redis_set(&mut r, &stock, 8).await;
    redis_hset(&mut r, &users, &user.to_string(), 3).await;
    let res = timesale::check(&pool, &mut r).await.unwrap();
    assert_names(
        &res,
        timesale::REDIS,
        &format!("{sale}/{user}"),
        "3 in redis, 2 in postgres",
    );
    redis_del(&mut r, &[stock, users]).await;
}

// ---------------------------------------------------------------- events

async fn outbox_row(pool: &PgPool, id: Uuid, published: bool, age_secs: f64) {
    sqlx::query(
        "INSERT INTO outbox (id, topic, aggregate_id, payload, created_at, published_at)
         VALUES ($1, 'coupon.issued', 'agg', '{}'::jsonb, now() - make_interval(secs => $2),
                 CASE WHEN $3 THEN now() END)",
    )
    .bind(id)
    .bind(age_secs)
    .bind(published)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn events_backlog_warns_and_fails_only_past_the_age_limit() {
    let pool = fresh(Schema::Coupon).await;
    outbox_row(&pool, Uuid::new_v4(), true, 5.0).await;
    let r = events::backlog("coupon", &pool, None).await.unwrap();
    assert!(!r.failed() && !r.warning, "{r:#?}");
    assert_eq!(r.examined, 1);

    let stale = Uuid::new_v4();
    outbox_row(&pool, stale, false, 3600.0).await;
    let r = events::backlog("coupon", &pool, None).await.unwrap();
    assert!(!r.failed() && r.warning, "{r:#?}");
    assert!(
        r.note
            .as_deref()
            .is_some_and(|n| n.starts_with("backlog 1, oldest 1h")),
        "{r:#?}"
    );
    let within = events::backlog("coupon", &pool, Some(std::time::Duration::from_secs(7200)))
        .await
        .unwrap();
    assert!(!within.failed(), "{within:#?}");

    let r = events::backlog("coupon", &pool, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    assert_names(
        &[r],
        &events::backlog_name("coupon"),
        &stale.to_string(),
        "",
    );
}

#[tokio::test]
async fn events_ids_are_unique_across_databases() {
    let coupon_db = fresh(Schema::Coupon).await;
    let point_db = fresh(Schema::Point).await;
    let timesale_db = fresh(Schema::Timesale).await;
    let shared = Uuid::new_v4();
    outbox_row(&coupon_db, shared, true, 1.0).await;
    outbox_row(&point_db, Uuid::new_v4(), true, 1.0).await;
    let dbs = [
        ("coupon", &coupon_db),
        ("point", &point_db),
        ("timesale", &timesale_db),
    ];
    let res = events::check(&dbs, None).await.unwrap();
    assert_clean(&res);
    assert_eq!(find(&res, events::UNIQUE).examined, 2);

    outbox_row(&timesale_db, shared, true, 1.0).await;
    let res = events::check(&dbs, None).await.unwrap();
    assert_names(
        &res,
        events::UNIQUE,
        &shared.to_string(),
        "in coupon and timesale",
    );
}

#[tokio::test]
async fn a_dead_postgres_is_unreachable_not_a_violation() {
    let e = check::connect_pg("postgres://postgres@127.0.0.1:1/nothing")
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 3);
    let Err(e) = check::connect_redis("redis://127.0.0.1:1", None).await else {
        panic!("redis on port 1 answered");
    };
    assert_eq!(e.exit_code(), 3);
}

#[tokio::test]
async fn the_binary_exits_0_when_clean_and_1_on_a_violation() {
    let (pool, url) = fresh_with_url(Schema::Coupon).await;
    let (policy, _) = coupon_world(&pool).await;
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_promoctl"))
            .args([
                "check",
                "--coupon",
                "--coupon-db",
                &url,
                "--redis-url",
                &redis_url(),
                "-o",
                "json",
            ])
            .env(
                "PROMOCTL_CONFIG_DIR",
                std::env::temp_dir().join(format!("promoctl-chk-{}", Uuid::new_v4())),
            )
            .output()
    };
    let out = run().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);

    exec(&pool, "UPDATE coupon_policies SET issued_quantity = 1").await;
    let out = run().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 1);
    let text = report.to_string();
    assert!(
        text.contains(&policy.to_string()) && text.contains(coupon::ISSUED),
        "{text}"
    );
}

// ---------------------------------------------------------------- point lots

/// The id of `user`'s one lot.
async fn lot_of(pool: &PgPool, user: Uuid) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM point_lots WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test]
async fn point_lots_hold_the_balance_each_within_its_amount() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::LOTS).examined, 1);
    assert_eq!(find(&before, point::LOTS_WITHIN).examined, 1);

    exec(&pool, "UPDATE point_lots SET remaining = 95").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    let u = user.to_string();
    assert_names(&after, point::LOTS, &u, "balance 100, lots hold 95");

    // Past its amount: only without the lot's CHECK.
    let lot = lot_of(&pool, user).await;
    exec(
        &pool,
        "ALTER TABLE point_lots DROP CONSTRAINT lot_within_amount",
    )
    .await;
    exec(&pool, "UPDATE point_lots SET remaining = 120").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(&after, point::LOTS_WITHIN, &lot, "remaining 120 of 100");
    exec(&pool, "UPDATE point_lots SET remaining = -1").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(&after, point::LOTS_WITHIN, &lot, "remaining -1 of 100");
}

#[tokio::test]
async fn point_expired_lots_are_swept_unless_holds_keep_them() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    exec(
        &pool,
        "UPDATE point_lots SET expires_at = now() - interval '10 seconds'",
    )
    .await;
    let recent = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&recent);
    assert_eq!(find(&recent, point::LOTS_SWEPT).examined, 1);

    exec(
        &pool,
        "UPDATE point_lots SET expires_at = now() - interval '5 minutes'",
    )
    .await;
    let late = point::check(&pool, &mut r).await.unwrap();
    let lot = lot_of(&pool, user).await;
    assert_names(&late, point::LOTS_SWEPT, &lot, "100 left");

    // A pending hold of everything keeps the remainder from expiring.
    exec(&pool, "UPDATE point_balances SET held = balance").await;
    let held = point::check(&pool, &mut r).await.unwrap();
    assert!(!find(&held, point::LOTS_SWEPT).failed());
}

/// Expires `user`'s lot of 100 as the sweeper would: balance 0.
async fn expire_lot(pool: &PgPool, user: Uuid, n: i32) {
    sqlx::query(
        "INSERT INTO point_transactions (id, user_id, type, amount, delta, balance_after,
             lot_id, lot_expiry)
         SELECT $1, $2, 'EXPIRE', 100, -100, 0, id, $3 FROM point_lots WHERE user_id = $2",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn point_lots_expire_at_most_once_per_expiry() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (user, _) = point_world(&pool).await;
    expire_lot(&pool, user, 1).await;
    exec(
        &pool,
        "UPDATE point_lots SET remaining = 0, expiries = 1, expired_at = now()",
    )
    .await;
    exec(&pool, "UPDATE point_balances SET balance = 0").await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);

    // A second EXPIRE of the same expiry: only without the unique index.
    let lot = lot_of(&pool, user).await;
    exec(&pool, "DROP INDEX expired_once").await;
    expire_lot(&pool, user, 1).await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(
        &after,
        point::EXPIRED_ONCE,
        &lot,
        "expiry 1 written 2 times",
    );
    assert_names(
        &after,
        point::EXPIRED_ONCE,
        &lot,
        "counts 1 expiries, ledger 2",
    );
}

#[tokio::test]
async fn point_draws_sum_to_each_debit() {
    let pool = fresh(Schema::Point).await;
    let mut r = redis().await;
    let (_, used) = point_world(&pool).await;
    let before = point::check(&pool, &mut r).await.unwrap();
    assert_clean(&before);
    assert_eq!(find(&before, point::DRAWS).examined, 1);

    draw(&pool, used, 20).await;
    let after = point::check(&pool, &mut r).await.unwrap();
    let u = used.to_string();
    assert_names(&after, point::DRAWS, &u, "USE of 30, draws 20");

    exec(&pool, "UPDATE point_transactions SET draws = NULL").await;
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(&after, point::DRAWS, &u, "USE of 30, draws none");

    // Drawn from a lot that is not the user's.
    sqlx::query(
        "UPDATE point_transactions SET draws = jsonb_build_array(jsonb_build_object(
             'lot_id', $2::uuid, 'amount', 30)) WHERE id = $1",
    )
    .bind(used)
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    let after = point::check(&pool, &mut r).await.unwrap();
    assert_names(&after, point::DRAWS, &u, "not its user's");
}

/// An audit entry of `action` naming `target`, as promod writes it.
async fn audited(pool: &PgPool, action: &str, target: Uuid, after: serde_json::Value) {
    let entry = promo_domain::audit::AuditEntry {
        id: Uuid::now_v7(),
        at: chrono::Utc::now(),
        actor_id: Some(Uuid::new_v4()),
        action: action.into(),
        target_type: "coupon_policy".into(),
        target_id: target.to_string(),
        request_id: None,
        before: None,
        after: Some(after),
    };
    let mut db = pool.acquire().await.unwrap();
    promo_store::audit::insert(&mut db, &[entry]).await.unwrap();
}

#[tokio::test]
async fn coupon_admin_writes_must_have_their_audit_entries() {
    use promo_domain::audit::action;
    let pool = fresh(Schema::Coupon).await;
    let plain = insert_policy(&pool, "GENERATED", None, 0).await;
    let batch = insert_policy(&pool, "BATCH", None, 3).await;
    for p in [plain, batch] {
        audited(&pool, action::POLICY_CREATED, p, serde_json::json!({})).await;
    }
    for n in [1, 2] {
        let after = serde_json::json!({"generated": n});
        audited(&pool, action::CODES_GENERATED, batch, after).await;
    }
    assert_clean(&check::audit::coupon(&pool).await.unwrap());

    // A policy with no entry, an entry with no policy, codes not audited.
    let silent = insert_policy(&pool, "GENERATED", None, 0).await;
    let ghost = Uuid::new_v4();
    audited(&pool, action::POLICY_CREATED, ghost, serde_json::json!({})).await;
    exec(
        &pool,
        &format!("UPDATE coupon_policies SET codes_generated = 4 WHERE id = '{batch}'"),
    )
    .await;
    let results = check::audit::coupon(&pool).await.unwrap();
    let policies = "coupon.audit_policies";
    assert_names(&results, policies, &silent.to_string(), "0 audit entries");
    assert_names(&results, policies, &ghost.to_string(), "no such row");
    assert_eq!(find(&results, policies).violations, 2);
    assert_names(
        &results,
        "coupon.audit_codes",
        &batch.to_string(),
        "4 codes, 3 audited",
    );
}

#[tokio::test]
async fn gateway_admins_must_have_their_role_entries() {
    let pool = fresh(Schema::Gateway).await;
    let user = |role: &'static str| {
        let pool = pool.clone();
        async move {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, name, role)
                 VALUES ($1, $2, 'x', 'n', $3)",
            )
            .bind(id)
            .bind(format!("{id}@check.test"))
            .bind(role)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };
    let entry = |id| promo_domain::audit::role_change(id, Some("user"), chrono::Utc::now());
    let (admin, _plain) = (user("admin").await, user("user").await);
    let mut db = pool.acquire().await.unwrap();
    // Promoted twice: more than one entry is fine.
    promo_store::audit::insert(&mut db, &[entry(admin), entry(admin)])
        .await
        .unwrap();
    assert_clean(&check::audit::gateway(&pool).await.unwrap());

    let silent = user("admin").await;
    let ghost = Uuid::now_v7();
    promo_store::audit::insert(&mut db, &[entry(ghost)])
        .await
        .unwrap();
    let results = check::audit::gateway(&pool).await.unwrap();
    let name = "gateway.audit_admins";
    assert_names(&results, name, &silent.to_string(), "0 audit entries");
    assert_names(&results, name, &ghost.to_string(), "no such row");
    assert_eq!(find(&results, name).violations, 2);
}

#[tokio::test]
async fn timesale_and_point_admin_writes_must_have_their_audit_entries() {
    use promo_domain::audit::action;
    let ts = fresh(Schema::Timesale).await;
    let (sale, _) = sale_world(&ts).await;
    let product: Uuid = sqlx::query_scalar("SELECT product_id FROM time_sales WHERE id = $1")
        .bind(sale)
        .fetch_one(&ts)
        .await
        .unwrap();
    let results = check::audit::timesale(&ts).await.unwrap();
    assert_names(
        &results,
        "timesale.audit_products",
        &product.to_string(),
        "0 audit entries",
    );
    assert_names(
        &results,
        "timesale.audit_sales",
        &sale.to_string(),
        "0 audit entries",
    );
    audited(&ts, action::PRODUCT_CREATED, product, serde_json::json!({})).await;
    audited(&ts, action::SALE_CREATED, sale, serde_json::json!({})).await;
    assert_clean(&check::audit::timesale(&ts).await.unwrap());

    let points = fresh(Schema::Point).await;
    let (user, _) = point_world(&points).await;
    let earn: Uuid = sqlx::query_scalar("SELECT id FROM point_transactions WHERE type = 'EARN'")
        .fetch_one(&points)
        .await
        .unwrap();
    let results = check::audit::point(&points).await.unwrap();
    assert_names(
        &results,
        "point.audit_earns",
        &earn.to_string(),
        "0 audit entries",
    );
    // An earn's entry names the user and carries the transaction as `after`.
    audited(
        &points,
        action::POINTS_EARNED,
        user,
        serde_json::json!({"id": earn}),
    )
    .await;
    assert_clean(&check::audit::point(&points).await.unwrap());
    audited(
        &points,
        action::POINTS_EARNED,
        user,
        serde_json::json!({"id": earn}),
    )
    .await;
    let results = check::audit::point(&points).await.unwrap();
    assert_names(
        &results,
        "point.audit_earns",
        &earn.to_string(),
        "2 audit entries",
    );
}
