//! The point role: a loyalty ledger that never goes negative and never loses
//! a transaction. Changes are group-committed ([`store::Points`]): decided in
//! order under the balance rows' locks in PostgreSQL, many per commit; Redis
//! only caches balances for reads.
//! See ARCHITECTURE.md, "Points never go negative".

pub mod balance_cache;
pub mod expiry;
pub mod grpc;
mod hold;
pub mod hold_store;
pub mod http;
pub mod lot_store;
pub mod store;

use crate::audit::Change;
use crate::batcher::{Batcher, InsertOutcome};
use crate::ctx::Ctx;
use async_trait::async_trait;
use balance_cache::BalanceCache;
use chrono::{DateTime, Utc};
use promo_domain::audit::{action, target};
use promo_domain::clock::SharedClock;
use promo_domain::page::Page;
use promo_domain::point::hold::{NewHold, PointHold};
use promo_domain::point::lot::{self, Lot, LotOp, LotQuery};
use promo_domain::point::{self, Balance, HistoryQuery, PointChange, Transaction, TxType};
use promo_domain::{DomainError, DomainResult};
use sqlx::PgPool;
use store::PendingChange;
use uuid::Uuid;

/// What the gateway (in process or over gRPC) and the REST routes call.
#[async_trait]
pub trait PointApi: Send + Sync + 'static {
    /// Admin only. The lot expires at `expires_at` (in the future), or
    /// after the configured default lifetime.
    async fn earn(
        &self,
        ctx: &Ctx,
        change: PointChange,
        expires_at: Option<DateTime<Utc>>,
    ) -> DomainResult<Transaction>;
    /// The user for themself, or an admin for anyone.
    async fn use_points(&self, ctx: &Ctx, change: PointChange) -> DomainResult<Transaction>;
    /// Reverses an EARN or a USE, at most once.
    async fn cancel(&self, ctx: &Ctx, transaction_id: Uuid) -> DomainResult<Transaction>;
    async fn balance(&self, ctx: &Ctx, user_id: Uuid) -> DomainResult<Balance>;
    async fn history(&self, ctx: &Ctx, q: HistoryQuery) -> DomainResult<Page<Transaction>>;
    /// The user's live lots, soonest expiry first.
    async fn lots(&self, ctx: &Ctx, q: LotQuery) -> DomainResult<Page<Lot>>;
    /// Reserves points for a checkout: the user for themself, or an admin.
    async fn create_hold(&self, ctx: &Ctx, hold: NewHold) -> DomainResult<PointHold>;
    /// Spends `amount` (default: all) of a pending hold as a USE; the rest
    /// is released. The owner or an admin.
    async fn capture_hold(
        &self,
        ctx: &Ctx,
        id: Uuid,
        amount: Option<i64>,
    ) -> DomainResult<Transaction>;
    /// Releases a pending hold. The owner or an admin.
    async fn void_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold>;
    async fn get_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold>;
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest amount of one earn or use.
    pub max_amount: i64,
    pub cache_ttl_secs: u64,
    /// A hold's lifetime when the request names none (`holds.default_seconds`).
    pub hold_seconds: i64,
    /// The lifetime of a lot whose earn names no expiry (`None`: never).
    pub lot_lifetime: Option<chrono::Duration>,
}

pub struct PointService {
    pool: PgPool,
    answers: crate::idempotency::Answers,
    batcher: Batcher<store::Points>,
    cache: BalanceCache,
    clock: SharedClock,
    limits: Limits,
}

fn outcome_metric(kind: TxType, outcome: &'static str) {
    metrics::counter!("promo_point_ops_total", "op" => kind.as_str(), "outcome" => outcome)
        .increment(1);
}

impl PointService {
    pub fn new(
        pool: PgPool,
        redis: Option<promo_store::cache::Redis>,
        clock: SharedClock,
        limits: Limits,
    ) -> Self {
        PointService {
            batcher: Batcher::start(pool.clone(), 2),
            answers: crate::idempotency::Answers::start(pool.clone()),
            pool,
            cache: BalanceCache::new(redis, limits.cache_ttl_secs),
            clock,
            limits,
        }
    }

    /// Queues one ledger row for the group commit, which writes it with its
    /// balance change, event and idempotency record; answers after the commit
    /// and refreshes the cache.
    /// An admin's change is recorded in the audit log with it (`audit`).
    async fn write(
        &self,
        ctx: &Ctx,
        mut tx: Transaction,
        lot: LotOp,
        audit: Option<Change>,
    ) -> DomainResult<Transaction> {
        let kind = tx.tx_type;
        let change = PendingChange {
            audit: audit.map(|c| c.entry(Some(ctx.principal.user_id), tx.created_at)),
            tx: tx.clone(),
            idem: ctx.idem.clone().map(|k| (k, ctx.principal.user_id)),
            lot,
        };
        match self.batcher.submit(change).await {
            Ok(InsertOutcome::Stored(applied)) => {
                tx.balance_after = applied.balance;
                self.cache.put(tx.user_id, applied).await;
                outcome_metric(kind, "ok");
                Ok(tx)
            }
            // The key has an answer already; `Answers::keyed` replays it.
            Ok(InsertOutcome::Duplicate) => {
                Err(DomainError::Conflict("idempotent request in flight".into()))
            }
            Ok(InsertOutcome::Refused(e)) | Err(e) => {
                let outcome = match &e {
                    DomainError::InsufficientBalance => "insufficient_balance",
                    e if e.is_business_refusal() => "refused",
                    _ => "error",
                };
                outcome_metric(kind, outcome);
                Err(e)
            }
        }
    }

    fn new_tx(&self, kind: TxType, change: PointChange) -> Transaction {
        Transaction {
            id: Uuid::now_v7(),
            user_id: change.user_id,
            tx_type: kind,
            delta: change.delta(kind),
            amount: change.amount,
            balance_after: 0,
            reference: change.reference,
            description: change.description,
            cancelled_transaction_id: None,
            hold_id: None,
            lot_id: None,
            created_at: self.clock.now(),
        }
    }

    async fn cancel_once(&self, ctx: &Ctx, transaction_id: Uuid) -> DomainResult<Transaction> {
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let original = store::get_transaction(&self.pool, transaction_id).await?;
        ctx.principal.require_owner(original.user_id)?;
        let delta = point::cancel_delta(&original)?;
        // Reported before a balance refusal; the unique constraint decides races.
        if store::is_cancelled(&self.pool, transaction_id).await? {
            return Err(DomainError::AlreadyCancelled);
        }
        let id = Uuid::now_v7();
        let lot = lot_store::cancel_op(&self.pool, &original, id).await?;
        let tx = Transaction {
            id,
            user_id: original.user_id,
            tx_type: TxType::Cancel,
            amount: original.amount,
            delta,
            balance_after: 0,
            reference: original.reference.clone(),
            description: Some(format!("cancel of {transaction_id}")),
            cancelled_transaction_id: Some(transaction_id),
            hold_id: None,
            lot_id: None,
            created_at: self.clock.now(),
        };
        let audit = match ctx.principal.is_admin() {
            true => Some(
                Change::new(action::POINTS_CANCELLED, target::USER, tx.user_id)
                    .before(&original)?,
            ),
            false => None,
        };
        self.write(ctx, tx, lot, audit).await
    }
}

#[async_trait]
impl PointApi for PointService {
    async fn earn(
        &self,
        ctx: &Ctx,
        change: PointChange,
        expires_at: Option<DateTime<Utc>>,
    ) -> DomainResult<Transaction> {
        ctx.principal.require_admin()?;
        change.validate(self.limits.max_amount)?;
        let tx = self.new_tx(TxType::Earn, change);
        let expires_at = lot::expiry_of(expires_at, self.limits.lot_lifetime, tx.created_at)?;
        let lot = LotOp::Add {
            id: tx.id,
            expires_at,
        };
        let audit = Change::new(action::POINTS_EARNED, target::USER, tx.user_id);
        let work = self.write(ctx, tx, lot, Some(audit));
        self.answers.keyed(ctx, work).await
    }

    async fn use_points(&self, ctx: &Ctx, change: PointChange) -> DomainResult<Transaction> {
        ctx.principal.acting_for(Some(change.user_id))?;
        change.validate(self.limits.max_amount)?;
        let work = self.write(ctx, self.new_tx(TxType::Use, change), LotOp::Draw, None);
        self.answers.keyed(ctx, work).await
    }

    async fn cancel(&self, ctx: &Ctx, transaction_id: Uuid) -> DomainResult<Transaction> {
        self.answers
            .keyed(ctx, self.cancel_once(ctx, transaction_id))
            .await
    }

    async fn balance(&self, ctx: &Ctx, user_id: Uuid) -> DomainResult<Balance> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        // Lots are not cached (what expires next moves with every use), so
        // their read runs beside the cache's, not after it.
        let (cached, expiring) = tokio::join!(
            self.cache.get(user_id),
            lot_store::expiring(&self.pool, user_id, lot::EXPIRING_SHOWN)
        );
        let expiring = expiring?;
        let (balance, held) = match cached {
            Some(hit) => hit,
            None => {
                let row = store::balance(&self.pool, user_id).await?;
                self.cache.put(user_id, row).await;
                (row.balance, row.held)
            }
        };
        Ok(Balance {
            user_id,
            balance,
            held,
            expiring,
        })
    }

    async fn lots(&self, ctx: &Ctx, q: LotQuery) -> DomainResult<Page<Lot>> {
        let user_id = ctx.principal.acting_for(Some(q.user_id))?;
        lot_store::page(&self.pool, LotQuery { user_id, ..q }).await
    }

    async fn history(&self, ctx: &Ctx, q: HistoryQuery) -> DomainResult<Page<Transaction>> {
        let user_id = ctx.principal.acting_for(Some(q.user_id))?;
        store::history(&self.pool, user_id, q.kind, q.page).await
    }

    async fn create_hold(&self, ctx: &Ctx, hold: NewHold) -> DomainResult<PointHold> {
        ctx.principal.acting_for(Some(hold.user_id))?;
        let work = self.create_hold_once(ctx, hold);
        self.hold_op("create", ctx, work).await
    }

    async fn capture_hold(
        &self,
        ctx: &Ctx,
        id: Uuid,
        amount: Option<i64>,
    ) -> DomainResult<Transaction> {
        let work = self.capture_once(ctx, id, amount);
        self.hold_op("capture", ctx, work).await
    }

    async fn void_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        self.hold_op("void", ctx, self.void_once(ctx, id)).await
    }

    async fn get_hold(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        self.get_hold_of(ctx, id).await
    }
}
