//! PostgreSQL access of the coupon role. Every write commits its outbox event
//! and idempotency record in the same transaction.

use crate::db::{page_of, qualified, Arg, Due, Filter, Listing};
use crate::error::from_sqlx;
use crate::outbox::Event;
use crate::reserve::{Pending, Refusal, Reservable};
use chrono::{DateTime, Utc};
use promo_domain::code::CodeMode;
use promo_domain::coupon::{
    Coupon, CouponQuery, CouponStatus, DiscountType, NewPolicy, OnOrder, Policy, PolicyPatch,
};
use promo_domain::page::{Page, PageRequest};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{StoreError, StoreResult};
use promo_store::stock::Kind;
use promo_store::topics;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub const POLICY_COLUMNS: &str = "id, name, description, discount_type, discount_value, \
    min_order_amount, max_discount_amount, total_quantity, issued_quantity, per_user_limit, \
    valid_from, valid_until, active, created_at, updated_at, code_mode, shared_code, stackable, \
    codes_generated";

pub const COUPON_COLUMNS: &str = "id, code, policy_id, user_id, status, order_id, \
    discount_amount, used_at, expires_at, issued_at, reserved_order_id, reserved_until, \
    released_order_id, redeemed_code, redeemed_shared";

#[derive(sqlx::FromRow)]
pub struct PolicyRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    discount_type: String,
    discount_value: i64,
    min_order_amount: i64,
    max_discount_amount: Option<i64>,
    total_quantity: i64,
    issued_quantity: i64,
    per_user_limit: i32,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    code_mode: String,
    shared_code: Option<String>,
    stackable: bool,
    codes_generated: i64,
}

impl PolicyRow {
    pub fn into_domain(self) -> DomainResult<Policy> {
        let discount_type = DiscountType::parse(&self.discount_type)
            .map_err(|_| StoreError::corrupt("discount type", &self.discount_type))?;
        let code_mode = CodeMode::parse(&self.code_mode)
            .map_err(|_| StoreError::corrupt("code mode", &self.code_mode))?;
        Ok(Policy {
            id: self.id,
            name: self.name,
            description: self.description,
            discount_type,
            discount_value: self.discount_value,
            min_order_amount: self.min_order_amount,
            max_discount_amount: self.max_discount_amount,
            total_quantity: self.total_quantity,
            issued_quantity: self.issued_quantity,
            per_user_limit: self.per_user_limit as i64,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
            code_mode,
            shared_code: self.shared_code,
            stackable: self.stackable,
            codes_generated: self.codes_generated,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct CouponRow {
    id: Uuid,
    code: String,
    policy_id: Uuid,
    user_id: Uuid,
    status: String,
    order_id: Option<String>,
    discount_amount: Option<i64>,
    used_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    issued_at: DateTime<Utc>,
    reserved_order_id: Option<String>,
    reserved_until: Option<DateTime<Utc>>,
    released_order_id: Option<String>,
    redeemed_code: Option<String>,
    redeemed_shared: bool,
}

impl CouponRow {
    /// The stored coupon with its status as seen at `now`.
    pub fn into_domain(self, now: DateTime<Utc>) -> DomainResult<Coupon> {
        let status = CouponStatus::parse(&self.status)
            .map_err(|_| StoreError::corrupt("coupon status", &self.status))?;
        let mut c = Coupon {
            id: self.id,
            code: self.code,
            policy_id: self.policy_id,
            user_id: self.user_id,
            status,
            order_id: self.order_id,
            discount_amount: self.discount_amount,
            used_at: self.used_at,
            expires_at: self.expires_at,
            issued_at: self.issued_at,
            reserved_order_id: self.reserved_order_id,
            reserved_until: self.reserved_until,
            released_order_id: self.released_order_id,
            redeemed_code: self.redeemed_code,
            redeemed_shared: self.redeemed_shared,
        };
        c.status = c.effective_status(now);
        Ok(c)
    }
}

pub async fn insert_policy(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    p: &NewPolicy,
    now: DateTime<Utc>,
) -> DomainResult<Policy> {
    let row: PolicyRow = sqlx::query_as(&format!(
        "INSERT INTO coupon_policies (id, name, description, discount_type, discount_value,
            min_order_amount, max_discount_amount, total_quantity, per_user_limit,
            valid_from, valid_until, created_at, updated_at, code_mode, shared_code, stackable)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$12,$13,$14,$15)
         RETURNING {POLICY_COLUMNS}"
    ))
    .bind(id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.discount_type.as_str())
    .bind(p.discount_value)
    .bind(p.min_order_amount)
    .bind(p.max_discount_amount)
    .bind(p.total_quantity)
    .bind(p.per_user_limit as i32)
    .bind(p.valid_from)
    .bind(p.valid_until)
    .bind(now)
    .bind(p.code_mode.as_str())
    .bind(&p.shared_code)
    .bind(p.stackable)
    .fetch_one(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    if let Some(shared) = &p.shared_code {
        insert_shared_code(tx, id, shared, now).await?;
    }
    row.into_domain()
}

/// A SHARED policy's code in the one key space of codes: taken (by another
/// shared code or a generated one) is a 409.
async fn insert_shared_code(
    tx: &mut Transaction<'_, Postgres>,
    policy: Uuid,
    shared: &str,
    now: DateTime<Utc>,
) -> DomainResult<()> {
    let code = promo_domain::code::normalize(shared)
        .map_err(|_| DomainError::validation("shared_code", "shared_code is not a valid code"))?;
    let taken = sqlx::query(
        "INSERT INTO coupon_codes (code, policy_id, shared, created_at) VALUES ($1, $2, true, $3)
         ON CONFLICT (code) DO NOTHING",
    )
    .bind(&code)
    .bind(policy)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(from_sqlx)?
    .rows_affected()
        == 0;
    if taken {
        return Err(DomainError::Conflict(format!(
            "shared_code {shared} is already taken"
        )));
    }
    Ok(())
}

pub async fn get_policy<'e>(db: impl sqlx::PgExecutor<'e>, id: Uuid) -> DomainResult<Policy> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM coupon_policies WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("coupon policy".into()))?
    .into_domain()
}

pub async fn list_policies(pool: &PgPool, page: PageRequest) -> DomainResult<Page<Policy>> {
    let l = Listing {
        columns: POLICY_COLUMNS,
        from: "FROM coupon_policies",
        order_by: "created_at DESC, id",
    };
    page_of(pool, l, &[], page, PolicyRow::into_domain).await
}

/// A policy under its row lock, until the transaction ends.
pub async fn lock_policy(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> DomainResult<Policy> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM coupon_policies WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("coupon policy".into()))?
    .into_domain()
}

/// Serializes code generations of one policy (a transaction lock, not the
/// policy row's: issues and redemptions of the policy, whose group commit
/// updates that row, must not wait for a million codes to be written).
pub async fn lock_codes(tx: &mut Transaction<'_, Postgres>, policy: Uuid) -> DomainResult<()> {
    advisory_lock(tx, &policy.to_string(), CODES_LOCK_SEED).await
}

const CODES_LOCK_SEED: i64 = 2003;

/// A transaction lock on `key` (hashed with `seed`, one space of keys per
/// seed), released by the commit, the rollback or a lost connection.
/// Another key that hashes alike only waits for it, never errs.
async fn advisory_lock(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    seed: i64,
) -> DomainResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind(key)
        .bind(seed)
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Counts `n` more codes of a policy, last in its transaction so that the
/// row is locked only until the commit; returns its codes. A total lowered
/// meanwhile below them refuses the batch (and `codes_within_total` would).
pub async fn add_codes(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    n: i64,
    now: DateTime<Utc>,
) -> DomainResult<i64> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE coupon_policies SET codes_generated = codes_generated + $2, updated_at = $3
         WHERE id = $1 AND codes_generated + $2 <= total_quantity RETURNING codes_generated",
    )
    .bind(id)
    .bind(n)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    let (total,) = row.ok_or_else(|| {
        DomainError::validation("count", "count exceeds the policy's total_quantity")
    })?;
    Ok(total)
}

/// Applies a patch under a row lock; the CHECK constraint refuses a total below
/// the issued quantity even if a concurrent issue slipped in.
pub async fn update_policy(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    patch: &PolicyPatch,
    now: DateTime<Utc>,
) -> DomainResult<(Policy, Policy)> {
    let before = lock_policy(tx, id).await?;
    patch.validate_against(&before)?;
    let row: PolicyRow = sqlx::query_as(&format!(
        "UPDATE coupon_policies SET
            name = COALESCE($2, name),
            description = COALESCE($3, description),
            total_quantity = COALESCE($4, total_quantity),
            valid_until = COALESCE($5, valid_until),
            active = COALESCE($6, active),
            updated_at = $7
         WHERE id = $1 RETURNING {POLICY_COLUMNS}"
    ))
    .bind(id)
    .bind(&patch.name)
    .bind(&patch.description)
    .bind(patch.total_quantity)
    .bind(patch.valid_until)
    .bind(patch.active)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d)
            if matches!(
                d.constraint(),
                Some("issued_within_total" | "codes_within_total")
            ) =>
        {
            DomainError::validation(
                "total_quantity",
                "total_quantity must be at least the issued quantity and the codes generated",
            )
        }
        _ => from_sqlx(e),
    })?;
    Ok((before, row.into_domain()?))
}

/// Issued coupons, as the reservation engine stores them.
pub struct Issued;

impl Reservable for Issued {
    type Row = Coupon;
    const KIND: Kind = Kind::Coupon;
    const NAME: &'static str = "coupon";
    const PARENT: &'static str = "coupon policy";
    const METRIC: &'static str = "promo_coupon_issue_total";
    const STORED: &'static str = "issued";
    const REFUSALS: &'static [(&'static str, Refusal)] = &[
        ("coupons_user_seq_unique", Refusal::LimitExceeded),
        ("user_seq_within_limit", Refusal::LimitExceeded),
        ("issued_within_total", Refusal::SoldOut),
        ("coupons_code_key", Refusal::Collision),
        ("coupons_redeemed_once", Refusal::AlreadyRedeemed),
    ];

    /// The coupons and their policies' issued counters. `user_seq` is the
    /// user's holding after admission, so a Redis that is wrong about a user
    /// collides on `coupons_user_seq_unique` instead of over-issuing.
    async fn write(conn: &mut PgConnection, rows: &[&Pending<Coupon>]) -> StoreResult<()> {
        let ids: Vec<Uuid> = rows.iter().map(|p| p.row.id).collect();
        let codes: Vec<&str> = rows.iter().map(|p| p.row.code.as_str()).collect();
        let policies: Vec<Uuid> = rows.iter().map(|p| p.row.policy_id).collect();
        let users: Vec<Uuid> = rows.iter().map(|p| p.row.user_id).collect();
        let seqs: Vec<i32> = rows.iter().map(|p| p.user_total as i32).collect();
        let limits: Vec<i32> = rows.iter().map(|p| p.per_user_limit as i32).collect();
        let expires: Vec<DateTime<Utc>> = rows.iter().map(|p| p.row.expires_at).collect();
        let issued: Vec<DateTime<Utc>> = rows.iter().map(|p| p.row.issued_at).collect();
        let redeemed: Vec<Option<&str>> = rows
            .iter()
            .map(|p| p.row.redeemed_code.as_deref())
            .collect();
        let shared: Vec<bool> = rows.iter().map(|p| p.row.redeemed_shared).collect();
        sqlx::query(
            "INSERT INTO coupons (id, code, policy_id, user_id, user_seq, per_user_limit, status,
                 expires_at, issued_at, redeemed_code, redeemed_shared)
             SELECT id, code, policy_id, user_id, seq, lim, 'AVAILABLE', exp, iss, red, sh
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int[], $6::int[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bool[])
               AS t(id, code, policy_id, user_id, seq, lim, exp, iss, red, sh)",
        )
        .bind(&ids)
        .bind(&codes)
        .bind(&policies)
        .bind(&users)
        .bind(&seqs)
        .bind(&limits)
        .bind(&expires)
        .bind(&issued)
        .bind(&redeemed)
        .bind(&shared)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE coupon_policies p SET issued_quantity = p.issued_quantity + c.n
             FROM (SELECT pid, count(*) AS n FROM unnest($1::uuid[]) AS pid GROUP BY pid) c
             WHERE p.id = c.pid",
        )
        .bind(&policies)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn event(c: &Coupon) -> StoreResult<Event> {
        let data = serde_json::json!({
            "coupon_id": c.id,
            "code": c.code,
            "redeemed": c.redeemed_code.is_some(),
            "policy_id": c.policy_id,
            "user_id": c.user_id,
            "expires_at": c.expires_at,
        });
        Ok(Event::new(
            topics::COUPON_ISSUED,
            c.id,
            Some(c.user_id),
            c.issued_at,
            data,
        ))
    }
}

pub async fn get_coupon<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    now: DateTime<Utc>,
) -> DomainResult<Coupon> {
    sqlx::query_as::<_, CouponRow>(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupons WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("coupon".into()))?
    .into_domain(now)
}

/// A page of coupons, newest first (by id: UUIDv7s made at admission),
/// with the filters `q` gives: the primary key, or the user's or the
/// policy's index (migrations 2005-2006), walked in that order with the
/// status as a filter (ARCHITECTURE.md, "Admin search").
pub async fn list_coupons(
    pool: &PgPool,
    q: CouponQuery,
    now: DateTime<Utc>,
) -> DomainResult<Page<Coupon>> {
    let f = Filter::default()
        .id("user_id", q.user_id)
        .id("policy_id", q.policy_id);
    // EXPIRED is derived: an AVAILABLE coupon past its expiry.
    let f = match q.status {
        None => f,
        Some(CouponStatus::Available) => f
            .status(CouponStatus::Available.as_str())
            .bind("expires_at > $", Arg::Time(now)),
        Some(CouponStatus::Expired) => f
            .status(CouponStatus::Available.as_str())
            .bind("expires_at <= $", Arg::Time(now)),
        Some(s @ (CouponStatus::Used | CouponStatus::Reserved)) => f.status(s.as_str()),
    };
    let from = f.from("coupons");
    let l = Listing {
        columns: COUPON_COLUMNS,
        from: &from,
        order_by: "id DESC",
    };
    page_of(pool, l, f.args(), q.page, |r: CouponRow| r.into_domain(now)).await
}

/// The seed of the per-order advisory lock keys. Any fixed value works; it
/// only has to be the same in every process.
const ORDER_LOCK_SEED: i64 = 2004;

/// Takes the lock of `user`'s order `order_id` until the transaction ends.
/// Every write that puts a coupon on an order takes it before it reads the
/// order's coupons or locks any coupon row, so writes to one order run one
/// after another (ARCHITECTURE.md, "Coupon stacking"). A hash collision only
/// serializes two unrelated orders. It must be a statement of its own: under
/// READ COMMITTED the next statement's snapshot is taken after the lock is
/// granted, so it sees every write that held the lock before.
pub async fn lock_order(
    tx: &mut Transaction<'_, Postgres>,
    user: Uuid,
    order_id: &str,
) -> DomainResult<()> {
    advisory_lock(tx, &format!("{user}:{order_id}"), ORDER_LOCK_SEED).await
}

/// The query of [`on_order`] (`$1` user, `$2` order, `$3` the coupon
/// itself, `$4` its amount); public for the test that it uses its index.
pub const ON_ORDER: &str =
    "SELECT p.stackable, coalesce(c.order_amount, $4), coalesce(c.discount_amount, 0)
     FROM coupons c JOIN coupon_policies p ON p.id = c.policy_id
     WHERE c.user_id = $1 AND coalesce(c.order_id, c.reserved_order_id) = $2
       AND c.status IN ('USED', 'RESERVED') AND c.id <> $3";

/// `user`'s coupons on order `order_id` (USED for it or RESERVED for it),
/// but `except` itself. The filter spells `coupons_on_order`'s expression
/// and predicate, so the index serves it. A coupon put on its order before
/// amounts were stored (migration 2004) reads as naming `order_amount` and
/// taking nothing; its policy is almost surely not stackable, so it
/// refuses any company before its amount matters.
pub async fn on_order(
    tx: &mut Transaction<'_, Postgres>,
    user: Uuid,
    order_id: &str,
    except: Uuid,
    order_amount: i64,
) -> DomainResult<Vec<OnOrder>> {
    let rows: Vec<(bool, i64, i64)> = sqlx::query_as(ON_ORDER)
        .bind(user)
        .bind(order_id)
        .bind(except)
        .bind(order_amount)
        .fetch_all(&mut **tx)
        .await
        .map_err(from_sqlx)?;
    Ok(rows
        .into_iter()
        .map(|(stackable, order_amount, discount)| OnOrder {
            stackable,
            order_amount,
            discount,
        })
        .collect())
}

/// Where a coupon goes on an order: the order, its amount and the
/// discount the coupon takes off it (cut by `promo_domain::coupon::stack`).
#[derive(Debug, Clone, Copy)]
pub struct Placing<'a> {
    pub order_id: &'a str,
    pub order_amount: i64,
    pub discount: i64,
}

/// AVAILABLE -> USED, only if still AVAILABLE and unexpired at `now`.
pub async fn mark_used(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    on: Placing<'_>,
    now: DateTime<Utc>,
) -> DomainResult<Option<Coupon>> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "UPDATE coupons SET status = 'USED', order_id = $2, discount_amount = $3, used_at = $4,
            order_amount = $5, released_order_id = NULL, reserved_until = NULL
         WHERE id = $1 AND status = 'AVAILABLE' AND expires_at > $4 RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .bind(on.order_id)
    .bind(on.discount)
    .bind(now)
    .bind(on.order_amount)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    row.map(|r| r.into_domain(now)).transpose()
}

/// USED -> AVAILABLE, only if still USED.
pub async fn mark_unused(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    now: DateTime<Utc>,
) -> DomainResult<Option<(Coupon, Option<String>)>> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT order_id FROM coupons WHERE id = $1 AND status = 'USED' FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(from_sqlx)?;
    let Some((order_id,)) = row else {
        return Ok(None);
    };
    let row: CouponRow = sqlx::query_as(&format!(
        "UPDATE coupons SET status = 'AVAILABLE', order_id = NULL, discount_amount = NULL, used_at = NULL,
            order_amount = NULL, released_order_id = NULL, reserved_until = NULL
         WHERE id = $1 RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    Ok(Some((row.into_domain(now)?, order_id)))
}

/// AVAILABLE -> RESERVED for `on.order_id` until `until`, only if still
/// AVAILABLE and unexpired at `now`. The hold keeps its amount and
/// discount, so that later coupons on the order count them.
pub async fn mark_reserved(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    on: Placing<'_>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DomainResult<Option<Coupon>> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "UPDATE coupons SET status = 'RESERVED', reserved_order_id = $2, reserved_until = $3,
            order_amount = $5, discount_amount = $6, released_order_id = NULL
         WHERE id = $1 AND status = 'AVAILABLE' AND expires_at > $4 RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .bind(on.order_id)
    .bind(until)
    .bind(now)
    .bind(on.order_amount)
    .bind(on.discount)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    row.map(|r| r.into_domain(now)).transpose()
}

/// RESERVED -> USED: the confirm of `order_id`'s hold, only if that hold is
/// still pending and not lapsed at `now`. None: another resolution won.
pub async fn confirm_reserved(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    on: Placing<'_>,
    now: DateTime<Utc>,
) -> DomainResult<Option<Coupon>> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "UPDATE coupons SET status = 'USED', order_id = $2, discount_amount = $3, used_at = $4,
            order_amount = $5, released_order_id = reserved_order_id, reserved_order_id = NULL,
            reserved_until = NULL
         WHERE id = $1 AND status = 'RESERVED' AND reserved_order_id = $2 AND reserved_until > $4
         RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .bind(on.order_id)
    .bind(on.discount)
    .bind(now)
    .bind(on.order_amount)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    row.map(|r| r.into_domain(now)).transpose()
}

/// The SET of a release by its holder: back to AVAILABLE, remembering the
/// order, off it (no amount, no discount).
const RELEASE: &str = "status = 'AVAILABLE', released_order_id = reserved_order_id, \
    reserved_order_id = NULL, reserved_until = NULL, order_amount = NULL, discount_amount = NULL";

/// The SET of an expiry: as a release, but the lapsed deadline stays, so
/// that a late confirm or cancel hears `HOLD_EXPIRED` (`Coupon::check_use`).
const EXPIRE: &str = "status = 'AVAILABLE', released_order_id = reserved_order_id, \
    reserved_order_id = NULL, order_amount = NULL, discount_amount = NULL";

/// RESERVED -> AVAILABLE by the holder, only before the hold lapses at
/// `now`. None: another resolution won.
pub async fn release_reserved(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    now: DateTime<Utc>,
) -> DomainResult<Option<Coupon>> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "UPDATE coupons SET {RELEASE}
         WHERE id = $1 AND status = 'RESERVED' AND reserved_until > $2 RETURNING {COUPON_COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    row.map(|r| r.into_domain(now)).transpose()
}

/// Releases up to `limit` reservations due at `now` in one transaction,
/// each with its `coupon.reservation_released` event. Rows another
/// transaction holds (a caller resolving it, another sweeper) are skipped,
/// and the UPDATE checks the status again, so none is released twice.
pub async fn expire_due(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> DomainResult<usize> {
    let mut tx = pool.begin().await.map_err(from_sqlx)?;
    let returning = qualified("h", COUPON_COLUMNS);
    let due = Due {
        table: "coupons",
        pending: "RESERVED",
        deadline: "reserved_until",
        set: EXPIRE,
        returning: &returning,
    };
    let rows: Vec<CouponRow> = due.fetch(&mut tx, now, limit).await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        events.push(released_event(&r.into_domain(now)?, "expired", now));
    }
    crate::outbox::append(&mut tx, &events).await?;
    tx.commit().await.map_err(from_sqlx)?;
    Ok(events.len())
}

/// `coupon.reservation_released` of a coupon just released (`reason`:
/// "cancelled" or "expired"); `released_order_id` is the order that held it.
pub fn released_event(c: &Coupon, reason: &str, now: DateTime<Utc>) -> Event {
    let data = serde_json::json!({"coupon_id": c.id, "policy_id": c.policy_id,
        "user_id": c.user_id, "order_id": c.released_order_id, "reason": reason});
    Event::new(
        topics::COUPON_RESERVATION_RELEASED,
        c.id,
        Some(c.user_id),
        now,
        data,
    )
}
