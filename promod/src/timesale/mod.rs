//! The timesale role: products, sales and orders that never oversell.
//!
//! An order is a reservation (`crate::reserve`): one atomic decision on the
//! sale's stock in Redis, then a group commit to PostgreSQL whose constraints
//! are the last line of defence. See ARCHITECTURE.md, "The reservation engine".

pub mod grpc;
pub mod http;
mod resolve;
pub mod store;

use crate::audit::Change;
use crate::batcher::InsertOutcome;
use crate::ctx::Ctx;
use crate::outbox::Event;
use crate::reserve::Engine;
use crate::transact::begin;
use async_trait::async_trait;
use promo_domain::audit::{action, target};
use promo_domain::clock::SharedClock;
use promo_domain::page::{Page, PageRequest};
use promo_domain::timesale::{
    validate_quantity, NewOrder, NewProduct, NewSale, Order, OrderQuery, Product, Sale, SalePatch,
    SaleQuery,
};
use promo_domain::{DomainError, DomainResult};
use promo_store::stock::{Ask, Kind, StockPort, Window};
use promo_store::topics;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
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
    async fn list_sales(&self, ctx: &Ctx, q: SaleQuery) -> DomainResult<Page<Sale>>;
    async fn update_sale(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale>;
    async fn order(&self, ctx: &Ctx, sale: Uuid, user: Uuid, o: NewOrder) -> DomainResult<Order>;
    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order>;
    async fn list_orders(&self, ctx: &Ctx, q: OrderQuery) -> DomainResult<Page<Order>>;
    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order>;
    /// Confirms a PENDING order (a hold).
    async fn confirm_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order>;
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
    answers: crate::idempotency::Answers,
    engine: Engine<store::Orders>,
    /// Confirms and cancels, group-committed (`resolve.rs`).
    resolutions: crate::batcher::Batcher<resolve::Resolutions>,
    clock: SharedClock,
    /// A hold's lifetime when the request names none.
    hold_seconds: i64,
    /// Concurrent misses of one id share one load: a burst of orders on a
    /// cold cache makes one query, not one per request.
    sales: moka::future::Cache<Uuid, Sale>,
}

impl TimesaleService {
    /// One decision of an order: the sale's rules, then the engine takes the
    /// stock and the user's share and stores the order.
    async fn order_once(
        &self,
        ctx: &Ctx,
        sale_id: Uuid,
        user_id: Uuid,
        new: NewOrder,
    ) -> DomainResult<Order> {
        let quantity = new.quantity;
        let sale = self.cached_sale(sale_id).await?;
        validate_quantity(quantity, sale.per_user_limit)?;
        let now = self.clock.now();
        let (status, expires_at) = new.start(self.hold_seconds, now)?;
        sale.check_orderable(now)?;
        let total_price = sale.total_price(quantity)?;
        let ask = Ask {
            kind: Kind::Sale,
            id: sale_id,
            user: user_id,
            quantity,
            per_user_limit: sale.per_user_limit,
            window: Some(Window {
                start: sale.start_at,
                end: sale.end_at,
                now,
            }),
        };
        self.engine
            .take(ctx, ask, |id| Order {
                id,
                time_sale_id: sale_id,
                user_id,
                quantity,
                unit_price: sale.sale_price,
                total_price,
                status,
                created_at: now,
                expires_at,
                resolved_at: None,
                cancelled_at: None,
            })
            .await
    }

    pub fn new(
        pool: PgPool,
        stock: Arc<dyn StockPort>,
        clock: SharedClock,
        hold_seconds: i64,
    ) -> Self {
        TimesaleService {
            hold_seconds,
            engine: Engine::new(pool.clone(), stock),
            resolutions: crate::batcher::Batcher::start(pool.clone(), 2),
            answers: crate::idempotency::Answers::start(pool.clone()),
            pool,
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
        self.engine.rebuild(sale_id, force).await
    }

    /// Start-up (and `promoctl inventory seed`): rebuilds every missing counter,
    /// or every counter with `force`. Returns how many were installed.
    pub async fn rebuild_all(&self, force: bool) -> DomainResult<usize> {
        self.engine.rebuild_all(force).await
    }

    /// Copies the live stock of recent sales into `remaining_quantity` (reports
    /// read it; it never decides). Sales that ended are copied a last time.
    pub async fn sync_remaining(&self) -> DomainResult<usize> {
        let now = self.clock.now();
        let mut n = 0;
        for id in store::sales_to_sync(&self.pool, now - SYNC_AFTER_END).await? {
            if let Some(left) = self.engine.stock().remaining(Kind::Sale, id).await? {
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
        sale.remaining_quantity = match self.engine.stock().remaining(Kind::Sale, sale.id).await {
            Ok(Some(n)) => n.clamp(0, sale.total_quantity),
            Ok(None) => sale.stored_remaining(),
            Err(e) => {
                tracing::debug!(sale_id = %sale.id, error = %e, "live stock unavailable, using postgres");
                sale.stored_remaining()
            }
        };
        sale
    }

    async fn update_sale_once(&self, ctx: &Ctx, id: Uuid, patch: SalePatch) -> DomainResult<Sale> {
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let (before, after) = store::update_sale(w.tx(), id, &patch, now).await?;
        let change = Change::new(action::SALE_UPDATED, target::SALE, id);
        w.audit(now, change.before(&before)?.after(&after)?).await?;
        let after = self.live(after).await;
        let ev = Event::of(topics::TIMESALE_SALE_UPDATED, id, None, now, &after)?;
        w.commit(&after, &[ev]).await?;
        self.sales.invalidate(&id).await;
        Ok(after)
    }

    /// A confirm or cancel, group-committed with others (`resolve.rs`).
    async fn resolve(&self, ctx: &Ctx, id: Uuid, action: resolve::Action) -> DomainResult<Order> {
        let now = self.clock.now();
        let audit = ctx.principal.is_admin().then(|| {
            let name = match action {
                resolve::Action::Confirm => action::ORDER_CONFIRMED,
                resolve::Action::Cancel => action::ORDER_CANCELLED,
            };
            Change::new(name, target::ORDER, id).entry(Some(ctx.principal.user_id), now)
        });
        let member = resolve::Resolve {
            order: id,
            action,
            audit,
            principal: ctx.principal,
            idem: ctx.idem.clone(),
            now,
            stock: self.engine.stock().clone(),
        };
        match self.resolutions.submit(member).await? {
            InsertOutcome::Stored(order) => Ok(order),
            InsertOutcome::Refused(e) => Err(e),
            // `Answers::keyed` replays the answer the key already has.
            InsertOutcome::Duplicate => Err(DomainError::Conflict(
                "a request with this idempotency key is in flight".into(),
            )),
        }
    }
}

/// What an ended order gives back: (sale, order, user, units).
fn units(o: &Order) -> (Uuid, Uuid, Uuid, i64) {
    (o.time_sale_id, o.id, o.user_id, o.quantity)
}

/// Expiry of held orders: each due PENDING order becomes EXPIRED once, with
/// its `order.expired` event, and its units come back.
impl crate::sweep::Expire for TimesaleService {
    const KIND: &'static str = "order";

    async fn expire_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> DomainResult<usize> {
        let mut tx = self.pool.begin().await.map_err(crate::error::from_sqlx)?;
        let orders = store::expire_due(&mut tx, now, limit).await?;
        if orders.is_empty() {
            return Ok(0);
        }
        let releases = self
            .engine
            .journal_releases(orders.iter().map(units))
            .await?;
        store::untake(&mut tx, &orders).await?;
        let events = orders
            .iter()
            .map(|o| Event::of(topics::ORDER_EXPIRED, o.id, Some(o.user_id), now, o))
            .collect::<Result<Vec<_>, _>>()?;
        crate::outbox::append(&mut tx, &events).await?;
        releases.check_deadline()?;
        tx.commit().await.map_err(crate::error::from_sqlx)?;
        releases.settle().await;
        Ok(orders.len())
    }
}

#[async_trait]
impl TimesaleApi for TimesaleService {
    async fn create_product(&self, ctx: &Ctx, p: NewProduct) -> DomainResult<Product> {
        ctx.principal.require_admin()?;
        p.validate()?;
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let product = store::insert_product(w.tx(), Uuid::now_v7(), &p, now).await?;
        let ev = Event::of(
            topics::TIMESALE_PRODUCT_CREATED,
            product.id,
            None,
            now,
            &product,
        )?;
        let change = Change::new(action::PRODUCT_CREATED, target::PRODUCT, product.id);
        w.audit(now, change.after(&product)?).await?;
        w.commit(&product, &[ev]).await?;
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
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let product = store::get_product(&mut **w.tx(), s.product_id)
            .await?
            .ok_or_else(|| DomainError::validation("product_id", "unknown product"))?;
        s.validate(product.price, now)?;
        let sale = store::insert_sale(w.tx(), Uuid::now_v7(), &s, now).await?;
        let ev = Event::of(topics::TIMESALE_SALE_CREATED, sale.id, None, now, &sale)?;
        let change = Change::new(action::SALE_CREATED, target::SALE, sale.id);
        w.audit(now, change.after(&sale)?).await?;
        w.commit(&sale, &[ev]).await?;
        self.engine.seed_new(sale.id, sale.total_quantity).await;
        Ok(sale)
    }

    async fn get_sale(&self, _ctx: &Ctx, id: Uuid) -> DomainResult<Sale> {
        let sale = store::get_sale(&self.pool, id, self.clock.now()).await?;
        Ok(self.live(sale).await)
    }

    async fn list_sales(&self, _ctx: &Ctx, q: SaleQuery) -> DomainResult<Page<Sale>> {
        let p = store::list_sales(&self.pool, q.status, q.page, self.clock.now()).await?;
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
        self.answers
            .keyed(ctx, self.update_sale_once(ctx, id, patch))
            .await
    }

    async fn order(&self, ctx: &Ctx, sale: Uuid, user: Uuid, o: NewOrder) -> DomainResult<Order> {
        let user = ctx.principal.acting_for(Some(user))?;
        if o.quantity <= 0 {
            return Err(DomainError::validation(
                "quantity",
                "quantity must be greater than 0",
            ));
        }
        let work = self.order_once(ctx, sale, user, o);
        self.answers.keyed(ctx, work).await
    }

    async fn get_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        let o = store::get_order(&self.pool, id).await?;
        ctx.principal.require_owner(o.user_id)?;
        Ok(o)
    }

    async fn list_orders(&self, ctx: &Ctx, q: OrderQuery) -> DomainResult<Page<Order>> {
        let q = OrderQuery {
            user_id: ctx.principal.listing_scope(q.user_id)?,
            ..q
        };
        store::list_orders(&self.pool, q).await
    }

    async fn cancel_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        self.answers
            .keyed(ctx, self.resolve(ctx, id, resolve::Action::Cancel))
            .await
    }

    async fn confirm_order(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Order> {
        self.answers
            .keyed(ctx, self.resolve(ctx, id, resolve::Action::Confirm))
            .await
    }
}
