//! The coupon role: policies, and issue/use/cancel that never oversell.
//!
//! Issue is a reservation (`crate::reserve`): one atomic admission decision
//! in Redis, then a group commit to PostgreSQL whose constraints are the last
//! line of defence. See ARCHITECTURE.md, "The reservation engine".
//!
//! A coupon may also be held for a checkout (`reserve`), then confirmed by a
//! use for the same order, released by a cancel, or expired by the sweeper
//! (`crate::sweep`); see ARCHITECTURE.md, "Holds resolve exactly once".
//!
//! Uses and reserves decide under a per-order lock whether the coupon may
//! join the ones already on its order, and cut its discount to what they
//! left (`stacked`; ARCHITECTURE.md, "Coupon stacking").

pub mod codes;
pub mod grpc;
pub mod http;
pub mod store;

use crate::audit::Change;
use crate::ctx::Ctx;
use crate::outbox::Event;
use crate::reserve::Engine;
use crate::transact::begin;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promo_domain::audit::{action, target};
use promo_domain::clock::SharedClock;
use promo_domain::code::{self, Code, CodeBatch, CodeMode, CodeQuery, NewCodes, Redeem, Typed};
use promo_domain::coupon::{
    self, CancelKind, Coupon, CouponQuery, CouponReserve, CouponStatus, CouponUse, NewPolicy,
    Policy, PolicyPatch, UseKind,
};
use promo_domain::page::{Page, PageRequest};
use promo_domain::{DomainError, DomainResult};
use promo_store::stock::{Ask, Kind, StockPort};
use promo_store::topics;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::Placing;
use uuid::Uuid;

/// What the gateway (in process or over gRPC) and the REST routes call.
#[async_trait]
pub trait CouponApi: Send + Sync + 'static {
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy>;
    async fn get_policy(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Policy>;
    async fn list_policies(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Policy>>;
    async fn update_policy(&self, ctx: &Ctx, id: Uuid, patch: PolicyPatch) -> DomainResult<Policy>;
    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon>;
    async fn use_coupon(&self, ctx: &Ctx, u: CouponUse) -> DomainResult<(Coupon, i64)>;
    /// Holds an AVAILABLE coupon for an order; its discount for that order.
    async fn reserve(&self, ctx: &Ctx, r: CouponReserve) -> DomainResult<(Coupon, i64)>;
    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon>;
    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon>;
    async fn list_coupons(&self, ctx: &Ctx, q: CouponQuery) -> DomainResult<Page<Coupon>>;
    /// Generates a BATCH policy's codes; answers once all are committed.
    async fn generate_codes(&self, ctx: &Ctx, n: NewCodes) -> DomainResult<CodeBatch>;
    async fn list_codes(&self, ctx: &Ctx, q: CodeQuery) -> DomainResult<Page<Code>>;
    /// A BATCH policy's codes as CSV, streamed.
    async fn export_codes(&self, ctx: &Ctx, policy_id: Uuid) -> DomainResult<codes::CsvStream>;
    /// Issues the coupon a code stands for to `r.user_id`.
    async fn redeem(&self, ctx: &Ctx, r: Redeem) -> DomainResult<Coupon>;
}

/// How long a policy read stays in the per-process cache on the issue path.
/// A PATCH through this process clears it at once; other processes see it
/// within this bound. Quantities never come from this cache.
const POLICY_CACHE_TTL: Duration = Duration::from_secs(1);

pub struct CouponService {
    pool: PgPool,
    answers: crate::idempotency::Answers,
    engine: Engine<store::Issued>,
    clock: SharedClock,
    policies: moka::future::Cache<Uuid, Policy>,
    /// Every shared code and its policy, read at most once per
    /// `POLICY_CACHE_TTL` (shared codes carry no check character).
    shared: moka::future::Cache<(), Arc<HashMap<String, Uuid>>>,
    lookups: crate::batcher::Batcher<codes::Lookups>,
    /// A reservation's lifetime when the request names none.
    hold_default_secs: i64,
}

impl CouponService {
    pub fn new(
        pool: PgPool,
        stock: Arc<dyn StockPort>,
        clock: SharedClock,
        hold_default_secs: i64,
    ) -> Self {
        CouponService {
            engine: Engine::new(pool.clone(), stock),
            answers: crate::idempotency::Answers::start(pool.clone()),
            // One worker: larger batches, fewer statements (16 % more
            // redemptions/s than with two, perf/results/2026-12-07-codes.md).
            lookups: crate::batcher::Batcher::start(pool.clone(), 1),
            pool,
            clock,
            hold_default_secs,
            policies: moka::future::Cache::builder()
                .time_to_live(POLICY_CACHE_TTL)
                .max_capacity(100_000)
                .build(),
            shared: moka::future::Cache::builder()
                .time_to_live(POLICY_CACHE_TTL)
                .build(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Concurrent misses of one id share one load: a thousand requests on a
    /// cold cache make one query, not a queue for the pool.
    async fn cached_policy(&self, id: Uuid) -> DomainResult<Policy> {
        self.policies
            .try_get_with(id, store::get_policy(&self.pool, id))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Start-up reconciliation: counters that are missing are rebuilt.
    pub async fn reconcile_all(&self, force: bool) -> DomainResult<usize> {
        self.engine.rebuild_all(force).await
    }

    /// One decision of an issue: the policy's mode and window, then the engine.
    async fn issue_once(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let policy = self.cached_policy(policy_id).await?;
        policy.check_mode(CodeMode::Generated)?;
        self.take(ctx, &policy, user_id, None).await
    }

    /// Takes one of `policy`'s coupons for `user_id` through the engine;
    /// `redeemed` is the code found for a redemption (issue has none).
    async fn take(
        &self,
        ctx: &Ctx,
        policy: &Policy,
        user_id: Uuid,
        redeemed: Option<codes::Found>,
    ) -> DomainResult<Coupon> {
        let now = self.clock.now();
        policy.check_issuable(now)?;
        let ask = Ask {
            kind: Kind::Coupon,
            id: policy.id,
            user: user_id,
            quantity: 1,
            per_user_limit: policy.per_user_limit,
            window: None,
        };
        // A shared code's coupons show the code itself, a batch code's the
        // code redeemed; an issued one gets a code of its own.
        let code = match &redeemed {
            Some(f) if f.shared => policy.shared_code.clone().unwrap_or_else(|| f.code.clone()),
            Some(f) => f.code.clone(),
            None => coupon::coupon_code(rand::random()),
        };
        self.engine
            .take(ctx, ask, |id| Coupon {
                id,
                code,
                policy_id: policy.id,
                user_id,
                status: CouponStatus::Available,
                order_id: None,
                discount_amount: None,
                used_at: None,
                expires_at: policy.valid_until,
                issued_at: now,
                reserved_order_id: None,
                reserved_until: None,
                released_order_id: None,
                redeemed_shared: redeemed.as_ref().is_some_and(|f| f.shared),
                redeemed_code: redeemed.map(|f| f.code),
            })
            .await
    }

    /// A redemption: the code's policy, found without a query for a shared
    /// code or a mistyped one, then the same taking as an issue. A batch
    /// code redeemed already is refused before admission; two racing for
    /// one are decided by `coupons_redeemed_once`.
    async fn redeem_once(&self, ctx: &Ctx, r: &Redeem) -> DomainResult<Coupon> {
        let found = match code::read_typed(&r.code)? {
            Typed::Checked(c) => codes::lookup(&self.lookups, &c).await?,
            Typed::Unchecked(c) => {
                let shared = self
                    .shared
                    .try_get_with((), async {
                        codes::shared_codes(&self.pool).await.map(Arc::new)
                    })
                    .await
                    .map_err(|e| (*e).clone())?;
                let policy_id = *shared.get(&c).ok_or_else(code::mistyped)?;
                Some(codes::Found {
                    code: c,
                    policy_id,
                    shared: true,
                    redeemed: false,
                })
            }
        };
        let found = found.ok_or_else(|| DomainError::NotFound("code".into()))?;
        if found.redeemed {
            return Err(DomainError::AlreadyRedeemed);
        }
        let policy = self.cached_policy(found.policy_id).await?;
        policy.check_mode(if found.shared {
            CodeMode::Shared
        } else {
            CodeMode::Batch
        })?;
        self.take(ctx, &policy, r.user_id, Some(found)).await
    }

    async fn generate_codes_once(&self, ctx: &Ctx, n: &NewCodes) -> DomainResult<CodeBatch> {
        let prefix = code::validate_prefix(n.prefix.as_deref())?;
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        store::lock_codes(w.tx(), n.policy_id).await?;
        let policy = store::get_policy(&mut **w.tx(), n.policy_id).await?;
        policy.check_mode(CodeMode::Batch)?;
        code::validate_count(n.count, policy.codes_generated, policy.total_quantity)?;
        let generated = codes::generate(w.tx(), n.policy_id, n.count, &prefix, now).await?;
        let total_codes = store::add_codes(w.tx(), n.policy_id, generated, now).await?;
        let batch = CodeBatch {
            policy_id: n.policy_id,
            generated,
            total_codes,
        };
        let data = serde_json::json!({"policy_id": n.policy_id, "count": generated,
            "prefix": prefix, "total_codes": total_codes});
        let ev = Event::new(topics::COUPON_CODES_GENERATED, n.policy_id, None, now, data);
        let change = Change::new(action::CODES_GENERATED, target::POLICY, n.policy_id);
        w.audit(now, change.after(&batch)?).await?;
        w.commit(&batch, &[ev]).await?;
        self.policies.invalidate(&n.policy_id).await;
        Ok(batch)
    }

    /// An admin asking for a BATCH policy's codes (listing, export).
    async fn check_batch_policy(&self, ctx: &Ctx, id: Uuid) -> DomainResult<()> {
        ctx.principal.require_admin()?;
        store::get_policy(&self.pool, id)
            .await?
            .check_mode(CodeMode::Batch)
    }

    async fn update_policy_once(
        &self,
        ctx: &Ctx,
        id: Uuid,
        patch: PolicyPatch,
    ) -> DomainResult<Policy> {
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let (before, after) = store::update_policy(w.tx(), id, &patch, now).await?;
        let ev = Event::of(topics::COUPON_POLICY_UPDATED, id, None, now, &after)?;
        let change = Change::new(action::POLICY_UPDATED, target::POLICY, id);
        w.audit(now, change.before(&before)?.after(&after)?).await?;
        w.commit(&after, &[ev]).await?;
        self.policies.invalidate(&id).await;
        let delta = after.total_quantity - before.total_quantity;
        if delta != 0 {
            if let Err(e) = self.engine.stock().adjust(Kind::Coupon, id, delta).await {
                // A lower Redis counter only under-issues, a higher one is
                // stopped by the CHECK constraint; a rebuild corrects either.
                tracing::warn!(policy_id = %id, delta, error = %e, "remaining counter not adjusted");
            }
        }
        Ok(after)
    }

    /// A use: of an AVAILABLE coupon at once, or the confirm of the order's
    /// own reservation (`Coupon::check_use` decides which). Either way the
    /// discount comes from this request's `order_amount`, cut by the other
    /// coupons on the order (`stacked`). A confirm may restate the amount
    /// its reserve named only while its coupon is alone on the order.
    async fn use_once(&self, ctx: &Ctx, u: CouponUse) -> DomainResult<(Coupon, i64)> {
        let CouponUse {
            id,
            order_id,
            order_amount,
        } = u;
        coupon::validate_order_id(&order_id)?;
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let current = store::get_coupon(&mut **w.tx(), id, now).await?;
        ctx.principal.require_owner(current.user_id)?;
        let kind = current.check_use(&order_id, now)?;
        let policy = store::get_policy(&mut **w.tx(), current.policy_id).await?;
        let want = Placing {
            order_id: &order_id,
            order_amount,
            discount: policy.discount_for(order_amount)?,
        };
        let on = stacked(w.tx(), &current, policy.stackable, want).await?;
        let discount = on.discount;
        let used = match kind {
            UseKind::Direct => {
                match store::mark_used(w.tx(), id, on, now).await? {
                    Some(used) => used,
                    None => {
                        // Lost a race, or expired in between: report what it is now.
                        let again = store::get_coupon(&mut **w.tx(), id, now).await?;
                        again.check_use(&order_id, now)?;
                        return Err(DomainError::AlreadyUsed);
                    }
                }
            }
            // None: a cancel or the sweeper resolved the hold first.
            UseKind::Confirm => store::confirm_reserved(w.tx(), id, on, now)
                .await?
                .ok_or(DomainError::AlreadyResolved)?,
        };
        let data = serde_json::json!({"coupon_id": id, "policy_id": used.policy_id,
            "user_id": used.user_id, "order_id": order_id, "order_amount": order_amount,
            "discount_amount": discount, "reserved_until": current.reserved_until});
        let ev = Event::new(topics::COUPON_USED, id, Some(used.user_id), now, data);
        let answer = (used, discount);
        w.commit(&answer, &[ev]).await?;
        Ok(answer)
    }

    async fn reserve_once(&self, ctx: &Ctx, r: CouponReserve) -> DomainResult<(Coupon, i64)> {
        coupon::validate_order_id(&r.order_id)?;
        let now = self.clock.now();
        // Out of range is refused before anything is read.
        promo_domain::hold::expires_at(r.hold_seconds, self.hold_default_secs, now)?;
        let mut w = begin!(&self.pool, ctx);
        let current = store::get_coupon(&mut **w.tx(), r.id, now).await?;
        ctx.principal.require_owner(current.user_id)?;
        // The request's own input first: a bad order_amount is a 400 naming
        // it, whatever the coupon's state.
        let policy = store::get_policy(&mut **w.tx(), current.policy_id).await?;
        let want = Placing {
            order_id: &r.order_id,
            order_amount: r.order_amount,
            discount: policy.discount_for(r.order_amount)?,
        };
        current.check_reservable(now)?;
        let until = current.reservation_until(r.hold_seconds, self.hold_default_secs, now)?;
        let on = stacked(w.tx(), &current, policy.stackable, want).await?;
        let discount = on.discount;
        let Some(held) = store::mark_reserved(w.tx(), r.id, on, until, now).await? else {
            // Lost a race (used, reserved, expired in between).
            store::get_coupon(&mut **w.tx(), r.id, now)
                .await?
                .check_reservable(now)?;
            return Err(DomainError::AlreadyUsed);
        };
        let data = serde_json::json!({"coupon_id": r.id, "policy_id": held.policy_id,
            "user_id": held.user_id, "order_id": r.order_id, "order_amount": r.order_amount,
            "discount_amount": discount, "reserved_until": held.reserved_until});
        let ev = Event::new(topics::COUPON_RESERVED, r.id, Some(held.user_id), now, data);
        let answer = (held, discount);
        w.commit(&answer, &[ev]).await?;
        Ok(answer)
    }

    /// A cancel: undoes a use, or releases a reservation
    /// (`Coupon::check_cancel` decides which).
    async fn cancel_use_once(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let current = store::get_coupon(&mut **w.tx(), id, now).await?;
        ctx.principal.require_owner(current.user_id)?;
        let (coupon, ev) = match current.check_cancel(now)? {
            CancelKind::UndoUse => {
                let Some((coupon, order_id)) = store::mark_unused(w.tx(), id, now).await? else {
                    return Err(DomainError::AlreadyCancelled);
                };
                let data = serde_json::json!({"coupon_id": id, "policy_id": coupon.policy_id,
                    "user_id": coupon.user_id, "order_id": order_id});
                let user = Some(coupon.user_id);
                let ev = Event::new(topics::COUPON_USE_CANCELLED, id, user, now, data);
                (coupon, ev)
            }
            CancelKind::Release => {
                // A confirm or the sweeper resolved it first.
                let released = store::release_reserved(w.tx(), id, now).await?;
                let coupon = released.ok_or(DomainError::AlreadyResolved)?;
                let ev = store::released_event(&coupon, "cancelled", now);
                (coupon, ev)
            }
        };
        if ctx.principal.is_admin() {
            let change = Change::new(action::COUPON_CANCELLED, target::COUPON, id);
            w.audit(now, change.before(&current)?.after(&coupon)?)
                .await?;
        }
        w.commit(&coupon, &[ev]).await?;
        Ok(coupon)
    }
}

/// `want` as the coupon `c` may take it: under the lock of `c`'s owner's
/// order, taken before any coupon row is locked, the coupons already on the
/// order (`c` itself aside: a confirm moves it, a lost race finds it)
/// decide whether it may join them and cut its discount to what they left.
/// A cancel or expiry needs no such lock: taking a coupon off an order
/// only makes these rules easier (ARCHITECTURE.md, "Coupon stacking").
async fn stacked<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    c: &Coupon,
    stackable: bool,
    want: Placing<'a>,
) -> DomainResult<Placing<'a>> {
    store::lock_order(tx, c.user_id, want.order_id).await?;
    let others = store::on_order(tx, c.user_id, want.order_id, c.id, want.order_amount).await?;
    let discount = coupon::stack(stackable, want.discount, want.order_amount, &others)?;
    Ok(Placing { discount, ..want })
}

/// The sweeper's side of coupon reservations: due ones go back to AVAILABLE.
impl crate::sweep::Expire for CouponService {
    const KIND: &'static str = "coupon";

    async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> DomainResult<usize> {
        store::expire_due(&self.pool, now, limit).await
    }
}

#[async_trait]
impl CouponApi for CouponService {
    async fn create_policy(&self, ctx: &Ctx, mut p: NewPolicy) -> DomainResult<Policy> {
        ctx.principal.require_admin()?;
        p.validate()?;
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let policy = store::insert_policy(w.tx(), Uuid::now_v7(), &p, now).await?;
        let ev = Event::of(topics::COUPON_POLICY_CREATED, policy.id, None, now, &policy)?;
        let change = Change::new(action::POLICY_CREATED, target::POLICY, policy.id);
        w.audit(now, change.after(&policy)?).await?;
        w.commit(&policy, &[ev]).await?;
        self.engine.seed_new(policy.id, policy.total_quantity).await;
        if policy.code_mode == CodeMode::Shared {
            self.shared.invalidate(&()).await;
        }
        Ok(policy)
    }

    async fn get_policy(&self, _ctx: &Ctx, id: Uuid) -> DomainResult<Policy> {
        store::get_policy(&self.pool, id).await
    }

    async fn list_policies(&self, _ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Policy>> {
        store::list_policies(&self.pool, page).await
    }

    async fn update_policy(&self, ctx: &Ctx, id: Uuid, patch: PolicyPatch) -> DomainResult<Policy> {
        ctx.principal.require_admin()?;
        self.answers
            .keyed(ctx, self.update_policy_once(ctx, id, patch))
            .await
    }

    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        let work = self.issue_once(ctx, policy_id, user_id);
        self.answers.keyed(ctx, work).await
    }

    async fn use_coupon(&self, ctx: &Ctx, u: CouponUse) -> DomainResult<(Coupon, i64)> {
        self.answers.keyed(ctx, self.use_once(ctx, u)).await
    }

    async fn reserve(&self, ctx: &Ctx, r: CouponReserve) -> DomainResult<(Coupon, i64)> {
        self.answers.keyed(ctx, self.reserve_once(ctx, r)).await
    }

    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        self.answers.keyed(ctx, self.cancel_use_once(ctx, id)).await
    }

    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let c = store::get_coupon(&self.pool, id, self.clock.now()).await?;
        ctx.principal.require_owner(c.user_id)?;
        Ok(c)
    }

    async fn list_coupons(&self, ctx: &Ctx, q: CouponQuery) -> DomainResult<Page<Coupon>> {
        let q = CouponQuery {
            user_id: ctx.principal.listing_scope(q.user_id)?,
            ..q
        };
        store::list_coupons(&self.pool, q, self.clock.now()).await
    }

    async fn generate_codes(&self, ctx: &Ctx, n: NewCodes) -> DomainResult<CodeBatch> {
        ctx.principal.require_admin()?;
        self.answers
            .keyed(ctx, self.generate_codes_once(ctx, &n))
            .await
    }

    async fn list_codes(&self, ctx: &Ctx, q: CodeQuery) -> DomainResult<Page<Code>> {
        self.check_batch_policy(ctx, q.policy_id).await?;
        codes::list(&self.pool, q).await
    }

    async fn export_codes(&self, ctx: &Ctx, policy_id: Uuid) -> DomainResult<codes::CsvStream> {
        self.check_batch_policy(ctx, policy_id).await?;
        Ok(codes::export(self.pool.clone(), policy_id))
    }

    async fn redeem(&self, ctx: &Ctx, r: Redeem) -> DomainResult<Coupon> {
        let r = Redeem {
            user_id: ctx.principal.acting_for(Some(r.user_id))?,
            ..r
        };
        self.answers.keyed(ctx, self.redeem_once(ctx, &r)).await
    }
}
