//! The timesale role: products, sales and orders that never oversell.
//!
//! Order = one atomic inventory decision (Redis Lua, [`inventory`]) + a group
//! commit to PostgreSQL ([`batcher`]) whose constraints are the last line of
//! defence. See ARCHITECTURE.md, "Time sales never oversell".

pub mod grpc;
pub mod http;
pub mod store;

use crate::batcher::Batcher;
use crate::ctx::Ctx;
use crate::error::from_sqlx;
use crate::outbox::{self, Event};
use async_trait::async_trait;
use inventory::{Ask, InventoryPort, Release, Reservation};
use promo_domain::clock::SharedClock;
use promo_domain::page::{Page, PageRequest};
use promo_domain::timesale::{
    validate_quantity, NewProduct, NewSale, Order, OrderStatus, Product, Sale, SalePatch,
    SaleStatus,
};
use promo_domain::{DomainError, DomainResult};
use promo_store::inventory;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use store::{InsertOutcome, PendingOrder};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the gateway (in process or over gRPC) and the REST routes call.
#[async_trait]
pub trait TimesaleApi: Send + Sync + 'static {
    async fn create_product(&self, ctx: &Ctx, p: NewProduct) -> DomainResult<Product>;
    async fn get_product(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Product>;
    async fn list_products(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Product>>;
    async fn create_sale(&self, ctx: &Ctx, s: NewSale) -> DomainResult<Sale>;
    async fn get_sale(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Sale>;
    async fn list_sales(
        &self,
        ctx: &Ctx,
        status: Option<SaleStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Sale>>;
    async fn update_sale(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale>;
    async fn order(
        &self,
        ctx: &Ctx,
        sale_id: Uuid,
        user_id: Uuid,
        quantity: i64,
    ) -> DomainResult<Order>;
    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order>;
    async fn list_orders(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        page: PageRequest,
    ) -> DomainResult<Page<Order>>;
    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order>;
}

/// How long a sale read stays in the per-process cache on the order path, so
/// that sold-out refusals never touch PostgreSQL. A PATCH through this process
/// clears it at once; other processes see it within this bound. Quantities
/// never come from this cache: the Lua script is the authority.
const SALE_CACHE_TTL: Duration = Duration::from_secs(1);

/// How long after its end a sale's stock copy keeps being synced: orders can
/// still be cancelled, which gives stock back.
const SYNC_AFTER_END: chrono::Duration = chrono::Duration::days(1);

pub struct TimesaleService {
    pool: PgPool,
    inventory: Arc<dyn InventoryPort>,
    batcher: Batcher<store::Orders>,
    clock: SharedClock,
    /// Concurrent misses of one id share one load: a burst of orders on a
    /// cold cache makes one query, not one per request.
    sales: moka::future::Cache<Uuid, Sale>,
}

impl TimesaleService {
    /// One decision of an order: the stock and the user's share in Redis,
    /// then the group commit.
    async fn order_once(
        &self,
        ctx: &Ctx,
        sale_id: Uuid,
        user_id: Uuid,
        quantity: i64,
    ) -> DomainResult<Order> {
        let sale = self.cached_sale(sale_id).await?;
        validate_quantity(quantity, sale.per_user_limit)?;
        let now = self.clock.now();
        sale.check_orderable(now)?;
        let total_price = sale.total_price(quantity)?;
        if let Err(e) = self.reserve(&sale, user_id, quantity).await {
            outcome_metric(match e {
                DomainError::SoldOut => "sold_out",
                DomainError::LimitExceeded => "limit_exceeded",
                DomainError::NotActive(_) => "not_active",
                _ => "error",
            });
            return Err(e);
        }
        let order = Order {
            id: Uuid::now_v7(),
            time_sale_id: sale_id,
            user_id,
            quantity,
            unit_price: sale.sale_price,
            total_price,
            status: OrderStatus::Confirmed,
            created_at: now,
            cancelled_at: None,
        };
        let pending = PendingOrder {
            order: order.clone(),
            per_user_limit: sale.per_user_limit,
            idem: ctx.idem.clone(),
            actor: ctx.principal.user_id,
        };
        match self.batcher.submit(pending).await {
            Ok(InsertOutcome::Stored(())) => {
                outcome_metric("confirmed");
                Ok(order)
            }
            Ok(InsertOutcome::Duplicate) => {
                self.give_back(sale_id, user_id, quantity, Release::BOTH)
                    .await;
                crate::idempotency::replay(&self.pool, ctx)
                    .await?
                    .ok_or_else(|| DomainError::Conflict("idempotent request in flight".into()))
            }
            Ok(InsertOutcome::Refused(e)) => {
                // The database refused what Redis admitted, so Redis was ahead
                // of the truth. Give back only what was not really taken: a full
                // sale keeps its stock at zero, a user at the limit keeps theirs.
                let what = Release {
                    stock: e != DomainError::SoldOut,
                    user: e != DomainError::LimitExceeded,
                };
                self.give_back(sale_id, user_id, quantity, what).await;
                outcome_metric("refused_by_db");
                Err(match e {
                    // Not a rule the order broke but a write that failed: the
                    // client may retry, and nothing was kept.
                    DomainError::Internal(detail) => {
                        tracing::warn!(sale_id = %sale_id, error = %detail, "order not stored");
                        DomainError::Unavailable("order not stored, retry".into())
                    }
                    other => other,
                })
            }
            Err(e) => {
                self.give_back(sale_id, user_id, quantity, Release::BOTH)
                    .await;
                outcome_metric("error");
                Err(e)
            }
        }
    }

    pub fn new(pool: PgPool, inventory: Arc<dyn InventoryPort>, clock: SharedClock) -> Self {
        let batcher = Batcher::start(pool.clone(), 2);
        TimesaleService {
            pool,
            inventory,
            batcher,
            clock,
            sales: moka::future::Cache::builder()
                .time_to_live(SALE_CACHE_TTL)
                .max_capacity(100_000)
                .build(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn cached_sale(&self, id: Uuid) -> DomainResult<Sale> {
        self.sales
            .try_get_with(id, store::get_sale(&self.pool, id, self.clock.now()))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Rebuilds a sale's stock and per-user totals from PostgreSQL (total minus
    /// the confirmed orders). Without `force` a live counter is kept.
    pub async fn rebuild_inventory(&self, sale_id: Uuid, force: bool) -> DomainResult<bool> {
        promo_store::rebuild::sale(&self.pool, &*self.inventory, sale_id, force).await
    }

    /// Start-up (and `promoctl inventory seed`): rebuilds every missing counter,
    /// or every counter with `force`. Returns how many were installed.
    pub async fn rebuild_all(&self, force: bool) -> DomainResult<usize> {
        promo_store::rebuild::sales(&self.pool, &*self.inventory, force).await
    }

    /// Copies the live stock of recent sales into `remaining_quantity` (reports
    /// read it; it never decides). Sales that ended are copied a last time.
    pub async fn sync_remaining(&self) -> DomainResult<usize> {
        let now = self.clock.now();
        let mut n = 0;
        for id in store::sales_to_sync(&self.pool, now - SYNC_AFTER_END).await? {
            if let Some(left) = self.inventory.remaining(id).await? {
                store::store_remaining(&self.pool, id, left, now).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Runs [`Self::sync_remaining`] every `every` until shutdown.
    pub async fn run_sync(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.sync_remaining().await {
                        tracing::warn!(error = %e, "timesale remaining sync failed");
                    }
                }
            }
        }
        // A last copy, so that a clean stop leaves PostgreSQL current.
        if let Err(e) = self.sync_remaining().await {
            tracing::warn!(error = %e, "timesale remaining sync at shutdown failed");
        }
    }

    /// The sale with the live stock; PostgreSQL's count if Redis cannot answer.
    async fn live(&self, mut sale: Sale) -> Sale {
        sale.remaining_quantity = match self.inventory.remaining(sale.id).await {
            Ok(Some(n)) => n.clamp(0, sale.total_quantity),
            Ok(None) => sale.stored_remaining(),
            Err(e) => {
                tracing::debug!(sale_id = %sale.id, error = %e, "live stock unavailable, using postgres");
                sale.stored_remaining()
            }
        };
        sale
    }

    async fn reserve(&self, sale: &Sale, user: Uuid, quantity: i64) -> DomainResult<()> {
        let ask = Ask {
            sale: sale.id,
            user,
            quantity,
            per_user_limit: sale.per_user_limit,
            start_at: sale.start_at,
            end_at: sale.end_at,
            now: self.clock.now(),
        };
        for _ in 0..2 {
            match self.inventory.try_reserve(ask).await? {
                Reservation::Reserved { .. } => return Ok(()),
                Reservation::SoldOut => return Err(DomainError::SoldOut),
                Reservation::LimitExceeded => return Err(DomainError::LimitExceeded),
                Reservation::NotActive => {
                    return Err(DomainError::NotActive("sale is not active".into()))
                }
                Reservation::Uninitialized => {
                    self.rebuild_inventory(sale.id, false).await?;
                }
            }
        }
        Err(DomainError::Unavailable("inventory unavailable".into()))
    }

    async fn give_back(&self, sale: Uuid, user: Uuid, quantity: i64, what: Release) {
        if let Err(e) = self.inventory.release(sale, user, quantity, what).await {
            // A lost release under-sells (never oversells) until the next rebuild.
            tracing::warn!(sale_id = %sale, user_id = %user, quantity, error = %e, "inventory release failed");
        }
    }
}

fn outcome_metric(outcome: &'static str) {
    metrics::counter!("promo_timesale_order_total", "outcome" => outcome).increment(1);
}

#[async_trait]
impl TimesaleApi for TimesaleService {
    async fn create_product(&self, ctx: &Ctx, p: NewProduct) -> DomainResult<Product> {
        ctx.principal.require_admin()?;
        p.validate()?;
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let product = store::insert_product(&mut tx, Uuid::now_v7(), &p, now).await?;
        crate::idempotency::record_answer(&mut tx, ctx, &product).await?;
        let ev = Event::new(
            "timesale.product_created",
            product.id,
            None,
            now,
            serde_json::to_value(&product).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(product)
    }

    async fn get_product(&self, _ctx: &Ctx, id: Uuid) -> DomainResult<Product> {
        store::get_product(&self.pool, id)
            .await?
            .ok_or_else(|| DomainError::NotFound("product".into()))
    }

    async fn list_products(&self, _ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Product>> {
        store::list_products(&self.pool, page).await
    }

    async fn create_sale(&self, ctx: &Ctx, s: NewSale) -> DomainResult<Sale> {
        ctx.principal.require_admin()?;
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let product = store::get_product(&self.pool, s.product_id)
            .await?
            .ok_or_else(|| DomainError::validation("product_id", "unknown product"))?;
        let now = self.clock.now();
        s.validate(product.price, now)?;
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let sale = store::insert_sale(&mut tx, Uuid::now_v7(), &s, now).await?;
        crate::idempotency::record_answer(&mut tx, ctx, &sale).await?;
        let ev = Event::new(
            "timesale.sale_created",
            sale.id,
            None,
            now,
            serde_json::to_value(&sale).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let seed = inventory::CounterSeed {
            remaining: sale.total_quantity,
            users: Vec::new(),
        };
        if let Err(e) = self.inventory.seed(sale.id, &seed, false).await {
            // The first order rebuilds the counter lazily.
            tracing::warn!(sale_id = %sale.id, error = %e, "timesale inventory not seeded");
        }
        Ok(sale)
    }

    async fn get_sale(&self, _ctx: &Ctx, id: Uuid) -> DomainResult<Sale> {
        let sale = store::get_sale(&self.pool, id, self.clock.now()).await?;
        Ok(self.live(sale).await)
    }

    async fn list_sales(
        &self,
        _ctx: &Ctx,
        status: Option<SaleStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Sale>> {
        let p = store::list_sales(&self.pool, status, page, self.clock.now()).await?;
        let items = futures::future::join_all(p.items.into_iter().map(|s| self.live(s))).await;
        Ok(Page {
            items,
            page: p.page,
            size: p.size,
            total: p.total,
        })
    }

    async fn update_sale(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale> {
        ctx.principal.require_admin()?;
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let after = store::update_sale(&mut tx, id, &patch, now).await?;
        let after = self.live(after).await;
        crate::idempotency::record_answer(&mut tx, ctx, &after).await?;
        let ev = Event::new(
            "timesale.sale_updated",
            id,
            None,
            now,
            serde_json::to_value(&after).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.sales.invalidate(&id).await;
        Ok(after)
    }

    async fn order(
        &self,
        ctx: &Ctx,
        sale_id: Uuid,
        user_id: Uuid,
        quantity: i64,
    ) -> DomainResult<Order> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        if quantity <= 0 {
            return Err(DomainError::validation(
                "quantity",
                "quantity must be greater than 0",
            ));
        }
        let work = self.order_once(ctx, sale_id, user_id, quantity);
        crate::inflight::exclusive(self.inventory.claims(), &self.pool, "timesale", ctx, work).await
    }

    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let o = store::get_order(&self.pool, id).await?;
        ctx.principal.require_owner(o.user_id)?;
        Ok(o)
    }

    async fn list_orders(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        page: PageRequest,
    ) -> DomainResult<Page<Order>> {
        let user_id = ctx.principal.acting_for(Some(user_id))?;
        store::list_orders(&self.pool, user_id, page).await
    }

    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        if let Some(done) = crate::idempotency::replay(&self.pool, ctx).await? {
            return Ok(done);
        }
        let current = store::get_order(&self.pool, id).await?;
        ctx.principal.require_owner(current.user_id)?;
        current.check_cancellable()?;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let Some(order) = store::cancel_order(&mut tx, id, now).await? else {
            return Err(DomainError::AlreadyCancelled);
        };
        crate::idempotency::record_answer(&mut tx, ctx, &order).await?;
        let ev = Event::new(
            "order.cancelled",
            id,
            Some(order.user_id),
            now,
            serde_json::to_value(&order).unwrap_or_default(),
        );
        outbox::append(&mut tx, &[ev]).await.map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        // Only the request that won the conditional UPDATE gets here, once,
        // and only after commit: the units come back exactly once.
        self.give_back(
            order.time_sale_id,
            order.user_id,
            order.quantity,
            Release::BOTH,
        )
        .await;
        Ok(order)
    }
}
