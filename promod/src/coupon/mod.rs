//! The coupon role: policies, and issue/use/cancel that never oversell.
//!
//! Issue = one atomic admission decision (Redis Lua, [`admission`]) + a group
//! commit to PostgreSQL ([`batcher`]) whose constraints are the last line of
//! defence. See ARCHITECTURE.md, "Coupons never oversell".

pub mod grpc;
pub mod http;
pub mod store;

use crate::batcher::Batcher;
use crate::ctx::Ctx;
use crate::error::from_sqlx;
use crate::outbox::{self, Event};
use admission::{Admission, AdmissionPort, Release};
use async_trait::async_trait;
use promo_domain::clock::SharedClock;
use promo_domain::coupon::{self, Coupon, CouponStatus, NewPolicy, Policy, PolicyPatch};
use promo_domain::page::{Page, PageRequest};
use promo_domain::{DomainError, DomainResult};
use promo_store::admission;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use store::{InsertOutcome, PendingCoupon};
use uuid::Uuid;

/// What the gateway (in process or over gRPC) and the REST routes call.
#[async_trait]
pub trait CouponApi: Send + Sync + 'static {
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy>;
    async fn get_policy(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Policy>;
    async fn list_policies(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Policy>>;
    async fn update_policy(&self, ctx: &Ctx, id: Uuid, patch: PolicyPatch) -> DomainResult<Policy>;
    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon>;
    async fn use_coupon(
        &self,
        ctx: &Ctx,
        id: Uuid,
        order_id: String,
        order_amount: i64,
    ) -> DomainResult<(Coupon, i64)>;
    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon>;
    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon>;
    async fn list_coupons(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        status: Option<CouponStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Coupon>>;
}

/// How long a policy read stays in the per-process cache on the issue path.
/// A PATCH through this process clears it at once; other processes see it
/// within this bound. Quantities never come from this cache.
const POLICY_CACHE_TTL: Duration = Duration::from_secs(1);

pub struct CouponService {
    pool: PgPool,
    admission: Arc<dyn AdmissionPort>,
    batcher: Batcher<store::Coupons>,
    clock: SharedClock,
    policies: moka::future::Cache<Uuid, Policy>,
}

impl CouponService {
    pub fn new(pool: PgPool, admission: Arc<dyn AdmissionPort>, clock: SharedClock) -> Self {
        let batcher = Batcher::start(pool.clone(), 2);
        CouponService {
            pool,
            admission,
            batcher,
            clock,
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

    /// Rebuilds a policy's admission counters from PostgreSQL. Without `force`
    /// a live counter is kept.
    pub async fn reconcile(&self, policy: Uuid, force: bool) -> DomainResult<bool> {
        promo_store::rebuild::coupon_policy(&self.pool, &*self.admission, policy, force).await
    }

    /// Start-up reconciliation: counters that are missing are rebuilt.
    pub async fn reconcile_all(&self, force: bool) -> DomainResult<usize> {
        promo_store::rebuild::coupon_policies(&self.pool, &*self.admission, force).await
    }

    async fn admit(&self, policy: &Policy, user: Uuid) -> DomainResult<i64> {
        for _ in 0..2 {
            match self
                .admission
                .try_reserve(policy.id, user, policy.per_user_limit)
                .await?
            {
                Admission::Admitted { user_seq } => return Ok(user_seq),
                Admission::SoldOut => return Err(DomainError::SoldOut),
                Admission::LimitExceeded => return Err(DomainError::LimitExceeded),
                Admission::Uninitialized => {
                    self.reconcile(policy.id, false).await?;
                }
            }
        }
        Err(DomainError::Unavailable(
            "admission counters unavailable".into(),
        ))
    }
}

fn outcome_metric(outcome: &'static str) {
    metrics::counter!("promo_coupon_issue_total", "outcome" => outcome).increment(1);
}

#[async_trait]
impl CouponApi for CouponService {
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy> {
        ctx.principal.require_admin()?;
        p.validate()?;
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let policy = store::insert_policy(&mut tx, Uuid::now_v7(), &p, now).await?;
        crate::idempotency::record_answer(&mut tx, ctx, &policy).await?;
        let ev = Event::new(
            "coupon.policy_created",
            policy.id,
            None,
            now,
            serde_json::to_value(&policy).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let seed = admission::CounterSeed {
            remaining: policy.total_quantity,
            users: Vec::new(),
        };
        if let Err(e) = self.admission.seed(policy.id, &seed, false).await {
            // The first issue rebuilds the counters lazily.
            tracing::warn!(policy_id = %policy.id, error = %e, "coupon counters not seeded");
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
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let (before, after) = store::update_policy(&mut tx, id, &patch, now).await?;
        crate::idempotency::record_answer(&mut tx, ctx, &after).await?;
        let ev = Event::new(
            "coupon.policy_updated",
            id,
            None,
            now,
            serde_json::to_value(&after).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.policies.invalidate(&id).await;
        let delta = after.total_quantity - before.total_quantity;
        if delta != 0 {
            if let Err(e) = self.admission.adjust_remaining(id, delta).await {
                // A lower Redis counter only under-issues, a higher one is
                // stopped by the CHECK constraint; a rebuild corrects either.
                tracing::warn!(policy_id = %id, delta, error = %e, "remaining counter not adjusted");
            }
        }
        Ok(after)
    }

    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        let work = self.issue_once(ctx, policy_id, user_id);
        crate::inflight::exclusive(self.admission.claims(), &self.pool, "coupon", ctx, work).await
    }

    async fn use_coupon(
        &self,
        ctx: &Ctx,
        id: Uuid,
        order_id: String,
        order_amount: i64,
    ) -> DomainResult<(Coupon, i64)> {
        coupon::validate_order_id(&order_id)?;
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let current = store::get_coupon(&self.pool, id, now).await?;
        ctx.principal.require_owner(current.user_id)?;
        current.check_usable(now)?;
        let policy = store::get_policy(&self.pool, current.policy_id).await?;
        let discount = policy.discount_for(order_amount)?;
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let Some(used) = store::mark_used(&mut tx, id, &order_id, discount, now).await? else {
            // Lost a race, or expired in between: report what it is now.
            let again = store::get_coupon(&self.pool, id, now).await?;
            again.check_usable(now)?;
            return Err(DomainError::AlreadyUsed);
        };
        let result = (used.clone(), discount);
        crate::idempotency::record_answer(&mut tx, ctx, &result).await?;
        let ev = Event::new(
            "coupon.used",
            id,
            Some(used.user_id),
            now,
            serde_json::json!({"coupon_id": id, "policy_id": used.policy_id, "user_id": used.user_id,
                               "order_id": order_id, "order_amount": order_amount, "discount_amount": discount}),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(result)
    }

    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let current = store::get_coupon(&self.pool, id, now).await?;
        ctx.principal.require_owner(current.user_id)?;
        current.check_cancellable()?;
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let Some((coupon, order_id)) = store::mark_unused(&mut tx, id, now).await? else {
            return Err(DomainError::AlreadyCancelled);
        };
        crate::idempotency::record_answer(&mut tx, ctx, &coupon).await?;
        let ev = Event::new(
            "coupon.use_cancelled",
            id,
            Some(coupon.user_id),
            now,
            serde_json::json!({"coupon_id": id, "policy_id": coupon.policy_id, "user_id": coupon.user_id, "order_id": order_id}),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(coupon)
    }

    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let c = store::get_coupon(&self.pool, id, self.clock.now()).await?;
        ctx.principal.require_owner(c.user_id)?;
        Ok(c)
    }

    async fn list_coupons(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        status: Option<CouponStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Coupon>> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        store::list_coupons(&self.pool, user_id, status, page, self.clock.now()).await
    }
}

impl CouponService {
    /// One decision of an issue: admission, then the group commit.
    async fn issue_once(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let policy = self.cached_policy(policy_id).await?;
        let now = self.clock.now();
        policy.check_issuable(now)?;
        let user_seq = match self.admit(&policy, user_id).await {
            Ok(seq) => seq,
            Err(e) => {
                outcome_metric(match e {
                    DomainError::SoldOut => "sold_out",
                    DomainError::LimitExceeded => "limit_exceeded",
                    _ => "error",
                });
                return Err(e);
            }
        };
        let coupon = Coupon {
            id: Uuid::now_v7(),
            code: coupon::coupon_code(rand::random()),
            policy_id,
            user_id,
            status: CouponStatus::Available,
            order_id: None,
            discount_amount: None,
            used_at: None,
            expires_at: policy.valid_until,
            issued_at: now,
        };
        let pending = PendingCoupon {
            coupon: coupon.clone(),
            user_seq,
            per_user_limit: policy.per_user_limit,
            idem: ctx.idem.clone(),
            actor: ctx.principal.user_id,
        };
        let outcome = self.batcher.submit(pending).await;
        match outcome {
            Ok(InsertOutcome::Stored(())) => {
                outcome_metric("issued");
                Ok(coupon)
            }
            Ok(InsertOutcome::Duplicate) => {
                self.compensate(policy_id, user_id, Release::BOTH).await;
                crate::idempotency::replay(&self.pool, ctx)
                    .await?
                    .ok_or_else(|| DomainError::Conflict("idempotent request in flight".into()))
            }
            Ok(InsertOutcome::Refused(e)) => {
                // The database refused what Redis admitted, so Redis was behind
                // the truth. Give back only the slot that was not really taken:
                // a full policy keeps remaining, a user at the limit keeps theirs.
                let slot = Release {
                    remaining: e != DomainError::SoldOut,
                    user: e != DomainError::LimitExceeded,
                };
                self.compensate(policy_id, user_id, slot).await;
                outcome_metric("refused_by_db");
                Err(e)
            }
            Err(e) => {
                self.compensate(policy_id, user_id, Release::BOTH).await;
                outcome_metric("error");
                Err(e)
            }
        }
    }

    async fn compensate(&self, policy: Uuid, user: Uuid, slot: Release) {
        if let Err(e) = self.admission.release(policy, user, slot).await {
            // A lost release under-issues (never oversells) until the next rebuild.
            tracing::warn!(policy_id = %policy, user_id = %user, error = %e, "admission release failed");
        }
    }
}
