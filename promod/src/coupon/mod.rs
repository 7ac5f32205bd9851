//! The coupon role: policies, and issue/use/cancel that never oversell.
//!
//! Issue is a reservation (`crate::reserve`): one atomic admission decision
//! in Redis, then a group commit to PostgreSQL whose constraints are the last
//! line of defence. See ARCHITECTURE.md, "The reservation engine".
//!
//! A coupon may also be held for a checkout (`reserve`), then confirmed by a
//! use for the same order, released by a cancel, or expired by the sweeper
//! (`crate::sweep`); see ARCHITECTURE.md, "Holds resolve exactly once".

pub mod grpc;
pub mod http;
pub mod store;

use crate::ctx::Ctx;
use crate::outbox::Event;
use crate::reserve::Engine;
use crate::transact::begin;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promo_domain::clock::SharedClock;
use promo_domain::coupon::{
    self, CancelKind, Coupon, CouponQuery, CouponReserve, CouponStatus, CouponUse, NewPolicy,
    Policy, PolicyPatch, UseKind,
};
use promo_domain::page::{Page, PageRequest};
use promo_domain::{DomainError, DomainResult};
use promo_store::stock::{Ask, Kind, StockPort};
use promo_store::topics;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
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
            pool,
            clock,
            hold_default_secs,
            policies: moka::future::Cache::builder()
                .time_to_live(POLICY_CACHE_TTL)
                .max_capacity(100_000)
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

    /// One decision of an issue: the policy's window, then the engine.
    async fn issue_once(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let policy = self.cached_policy(policy_id).await?;
        let now = self.clock.now();
        policy.check_issuable(now)?;
        let ask = Ask {
            kind: Kind::Coupon,
            id: policy_id,
            user: user_id,
            quantity: 1,
            per_user_limit: policy.per_user_limit,
            window: None,
        };
        self.engine
            .take(ctx, ask, |id| Coupon {
                id,
                code: coupon::coupon_code(rand::random()),
                policy_id,
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
            })
            .await
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
    /// discount comes from this request's `order_amount`.
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
        let discount = policy.discount_for(order_amount)?;
        let used = match kind {
            UseKind::Direct => {
                match store::mark_used(w.tx(), id, &order_id, discount, now).await? {
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
            UseKind::Confirm => store::confirm_reserved(w.tx(), id, &order_id, discount, now)
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
        let discount = policy.discount_for(r.order_amount)?;
        current.check_reservable(now)?;
        let until = current.reservation_until(r.hold_seconds, self.hold_default_secs, now)?;
        let Some(held) = store::mark_reserved(w.tx(), r.id, &r.order_id, until, now).await? else {
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
        w.commit(&coupon, &[ev]).await?;
        Ok(coupon)
    }
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
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy> {
        ctx.principal.require_admin()?;
        p.validate()?;
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let policy = store::insert_policy(w.tx(), Uuid::now_v7(), &p, now).await?;
        let ev = Event::of(topics::COUPON_POLICY_CREATED, policy.id, None, now, &policy)?;
        w.commit(&policy, &[ev]).await?;
        self.engine.seed_new(policy.id, policy.total_quantity).await;
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
        let user_id = ctx.principal.acting_for(Some(q.user_id))?;
        store::list_coupons(&self.pool, user_id, q.status, q.page, self.clock.now()).await
    }
}
