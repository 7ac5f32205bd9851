//! PostgreSQL access of the timesale role. Every write commits its outbox event
//! and idempotency record in the same transaction.

use crate::db::{page_of, qualified, Arg, Due, Filter, Listing};
use crate::error::from_sqlx;
use crate::outbox::Event;
use crate::reserve::{Pending, Refusal, Reservable};
use chrono::{DateTime, Utc};
use promo_domain::page::{Page, PageRequest};
use promo_domain::timesale::{
    NewProduct, NewSale, Order, OrderQuery, OrderStatus, Product, Sale, SalePatch, SaleStatus,
};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{StoreError, StoreResult};
use promo_store::stock::Kind;
use promo_store::topics;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub const PRODUCT_COLUMNS: &str = "id, name, description, price, created_at, updated_at";

pub const SALE_COLUMNS: &str = "id, product_id, total_quantity, sold_quantity, \
    remaining_quantity, sale_price, per_user_limit, start_at, end_at, status, created_at, updated_at";

pub const ORDER_COLUMNS: &str = "id, time_sale_id, user_id, quantity, unit_price, total_price, \
    status, created_at, expires_at, resolved_at, cancelled_at";

#[derive(sqlx::FromRow)]
pub struct ProductRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    price: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Self {
        Product {
            id: r.id,
            name: r.name,
            description: r.description,
            price: r.price,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct SaleRow {
    id: Uuid,
    product_id: Uuid,
    total_quantity: i64,
    sold_quantity: i64,
    remaining_quantity: i64,
    sale_price: i64,
    per_user_limit: i32,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SaleRow {
    /// The stored sale with its status as seen at `now`.
    pub fn into_domain(self, now: DateTime<Utc>) -> DomainResult<Sale> {
        let stored = SaleStatus::parse(&self.status)
            .map_err(|_| StoreError::corrupt("sale status", &self.status))?;
        Ok(Sale {
            id: self.id,
            product_id: self.product_id,
            total_quantity: self.total_quantity,
            sold_quantity: self.sold_quantity,
            remaining_quantity: self.remaining_quantity,
            sale_price: self.sale_price,
            per_user_limit: self.per_user_limit as i64,
            start_at: self.start_at,
            end_at: self.end_at,
            status: stored,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .at(now))
    }
}

#[derive(sqlx::FromRow)]
pub struct OrderRow {
    id: Uuid,
    time_sale_id: Uuid,
    user_id: Uuid,
    quantity: i64,
    unit_price: i64,
    total_price: i64,
    status: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

impl TryFrom<OrderRow> for Order {
    type Error = DomainError;

    fn try_from(r: OrderRow) -> DomainResult<Self> {
        let status = OrderStatus::parse(&r.status)
            .map_err(|_| StoreError::corrupt("order status", &r.status))?;
        Ok(Order {
            id: r.id,
            time_sale_id: r.time_sale_id,
            user_id: r.user_id,
            quantity: r.quantity,
            unit_price: r.unit_price,
            total_price: r.total_price,
            status,
            created_at: r.created_at,
            expires_at: r.expires_at,
            resolved_at: r.resolved_at,
            cancelled_at: r.cancelled_at,
        })
    }
}

pub async fn insert_product(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    p: &NewProduct,
    now: DateTime<Utc>,
) -> DomainResult<Product> {
    let row: ProductRow = sqlx::query_as(&format!(
        "INSERT INTO products (id, name, description, price, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING {PRODUCT_COLUMNS}"
    ))
    .bind(id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.price)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    Ok(row.into())
}

pub async fn get_product<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> DomainResult<Option<Product>> {
    let row: Option<ProductRow> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?;
    Ok(row.map(Product::from))
}

pub async fn list_products(pool: &PgPool, page: PageRequest) -> DomainResult<Page<Product>> {
    let l = Listing {
        columns: PRODUCT_COLUMNS,
        from: "FROM products",
        order_by: "created_at DESC, id",
    };
    page_of(pool, l, &[], page, |r: ProductRow| Ok(r.into())).await
}

pub async fn insert_sale(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    s: &NewSale,
    now: DateTime<Utc>,
) -> DomainResult<Sale> {
    let row: SaleRow = sqlx::query_as(&format!(
        "INSERT INTO time_sales (id, product_id, total_quantity, remaining_quantity, sale_price,
            per_user_limit, start_at, end_at, status, created_at, updated_at)
         VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {SALE_COLUMNS}"
    ))
    .bind(id)
    .bind(s.product_id)
    .bind(s.total_quantity)
    .bind(s.sale_price)
    .bind(s.per_user_limit as i32)
    .bind(s.start_at)
    .bind(s.end_at)
    .bind(promo_domain::timesale::status_at(false, s.start_at, s.end_at, now).as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            DomainError::validation("product_id", "unknown product")
        }
        _ => from_sqlx(e),
    })?;
    row.into_domain(now)
}

pub async fn get_sale<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    now: DateTime<Utc>,
) -> DomainResult<Sale> {
    sqlx::query_as::<_, SaleRow>(&format!(
        "SELECT {SALE_COLUMNS} FROM time_sales WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("time sale".into()))?
    .into_domain(now)
}

/// The status filter as SQL over the stored columns at `$1` (now): only
/// CANCELLED is stored, the rest follows the clock.
fn status_filter(status: Option<SaleStatus>) -> &'static str {
    match status {
        None => "($1::timestamptz IS NOT NULL)",
        Some(SaleStatus::Scheduled) => "status <> 'CANCELLED' AND $1 < start_at",
        Some(SaleStatus::Active) => "status <> 'CANCELLED' AND start_at <= $1 AND $1 < end_at",
        Some(SaleStatus::Ended) => "status <> 'CANCELLED' AND end_at <= $1",
        Some(SaleStatus::Cancelled) => "status = 'CANCELLED' AND ($1::timestamptz IS NOT NULL)",
    }
}

pub async fn list_sales(
    pool: &PgPool,
    status: Option<SaleStatus>,
    page: PageRequest,
    now: DateTime<Utc>,
) -> DomainResult<Page<Sale>> {
    let from = format!("FROM time_sales WHERE {}", status_filter(status));
    let l = Listing {
        columns: SALE_COLUMNS,
        from: &from,
        order_by: "start_at DESC, id",
    };
    page_of(pool, l, &[Arg::Time(now)], page, |r: SaleRow| {
        r.into_domain(now)
    })
    .await
}

/// Applies a patch under a row lock, so that the rules see the current sale.
pub async fn update_sale(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    patch: &SalePatch,
    now: DateTime<Utc>,
) -> DomainResult<(Sale, Sale)> {
    let before: SaleRow = sqlx::query_as(&format!(
        "SELECT {SALE_COLUMNS} FROM time_sales WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("time sale".into()))?;
    let before = before.into_domain(now)?;
    patch.validate_against(&before, now)?;
    let end_at = patch.end_at.unwrap_or(before.end_at);
    let status = if patch.status == Some(SaleStatus::Cancelled) {
        SaleStatus::Cancelled
    } else {
        promo_domain::timesale::status_at(false, before.start_at, end_at, now)
    };
    let row: SaleRow = sqlx::query_as(&format!(
        "UPDATE time_sales SET end_at = $2, status = $3, updated_at = $4
         WHERE id = $1 RETURNING {SALE_COLUMNS}"
    ))
    .bind(id)
    .bind(end_at)
    .bind(status.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    Ok((before, row.into_domain(now)?))
}

/// Orders, as the reservation engine stores them.
pub struct Orders;

impl Reservable for Orders {
    type Row = Order;
    const KIND: Kind = Kind::Sale;
    const NAME: &'static str = "order";
    const PARENT: &'static str = "time sale";
    const METRIC: &'static str = "promo_timesale_order_total";
    const STORED: &'static str = "confirmed";
    const REFUSALS: &'static [(&'static str, Refusal)] = &[
        ("user_within_limit", Refusal::LimitExceeded),
        ("sold_within_total", Refusal::SoldOut),
    ];

    /// The orders, the users' totals and the sales' sold counters.
    async fn write(conn: &mut PgConnection, rows: &[&Pending<Order>]) -> StoreResult<()> {
        let ids: Vec<Uuid> = rows.iter().map(|p| p.row.id).collect();
        let sales: Vec<Uuid> = rows.iter().map(|p| p.row.time_sale_id).collect();
        let users: Vec<Uuid> = rows.iter().map(|p| p.row.user_id).collect();
        let qtys: Vec<i64> = rows.iter().map(|p| p.row.quantity).collect();
        let units: Vec<i64> = rows.iter().map(|p| p.row.unit_price).collect();
        let totals: Vec<i64> = rows.iter().map(|p| p.row.total_price).collect();
        let limits: Vec<i32> = rows.iter().map(|p| p.per_user_limit as i32).collect();
        let created: Vec<DateTime<Utc>> = rows.iter().map(|p| p.row.created_at).collect();
        let status: Vec<&str> = rows.iter().map(|p| p.row.status.as_str()).collect();
        let expires: Vec<Option<DateTime<Utc>>> = rows.iter().map(|p| p.row.expires_at).collect();
        sqlx::query(
            "INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price, total_price,
                status, created_at, expires_at)
             SELECT id, sid, uid, q, unit, total, st, at, exp
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::bigint[],
                         $7::timestamptz[], $8::text[], $9::timestamptz[])
               AS t(id, sid, uid, q, unit, total, at, st, exp)",
        )
        .bind(&ids)
        .bind(&sales)
        .bind(&users)
        .bind(&qtys)
        .bind(&units)
        .bind(&totals)
        .bind(&created)
        .bind(&status)
        .bind(&expires)
        .execute(&mut *conn)
        .await?;
        // Sorted so that concurrent batches lock the rows in the same order.
        sqlx::query(
            "INSERT INTO time_sale_user_totals (time_sale_id, user_id, quantity, per_user_limit)
             SELECT sid, uid, sum(q), max(lim)
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[]) AS t(sid, uid, q, lim)
             GROUP BY sid, uid ORDER BY sid, uid
             ON CONFLICT (time_sale_id, user_id)
             DO UPDATE SET quantity = time_sale_user_totals.quantity + EXCLUDED.quantity",
        )
        .bind(&sales)
        .bind(&users)
        .bind(&qtys)
        .bind(&limits)
        .execute(&mut *conn)
        .await?;
        let mut distinct = sales.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            // Several sales in one batch: lock them in id order, so that two
            // batches over the same sales cannot deadlock.
            sqlx::query(
                "SELECT id FROM time_sales WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(&distinct)
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(
            // The reported copy is lowered with the sale, so it is never
            // ahead of the truth between two syncs.
            "UPDATE time_sales s SET sold_quantity = s.sold_quantity + c.n,
                remaining_quantity = GREATEST(LEAST(s.remaining_quantity,
                    s.total_quantity - s.sold_quantity - c.n), 0)
             FROM (SELECT sid, sum(q) AS n FROM unnest($1::uuid[], $2::bigint[]) AS t(sid, q) GROUP BY sid) c
             WHERE s.id = c.sid",
        )
        .bind(&sales)
        .bind(&qtys)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn event(o: &Order) -> StoreResult<Event> {
        Event::of(
            topics::ORDER_CREATED,
            o.id,
            Some(o.user_id),
            o.created_at,
            o,
        )
    }
}

pub async fn get_order<'e>(db: impl sqlx::PgExecutor<'e>, id: Uuid) -> DomainResult<Order> {
    sqlx::query_as::<_, OrderRow>(&format!(
        "SELECT {ORDER_COLUMNS} FROM time_sale_orders WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| DomainError::NotFound("order".into()))?
    .try_into()
}

/// A page of orders, newest first (by id: UUIDv7s made at admission), with
/// the filters `q` gives: the primary key, or the user's or the sale's
/// index (migrations 2003-2004), walked in that order with the status as a
/// filter (ARCHITECTURE.md, "Admin search").
pub async fn list_orders(pool: &PgPool, q: OrderQuery) -> DomainResult<Page<Order>> {
    let f = Filter::default()
        .id("user_id", q.user_id)
        .id("time_sale_id", q.time_sale_id);
    let f = match q.status {
        Some(s) => f.status(s.as_str()),
        None => f,
    };
    let from = f.from("time_sale_orders");
    let l = Listing {
        columns: ORDER_COLUMNS,
        from: &from,
        order_by: "id DESC",
    };
    page_of(pool, l, f.args(), q.page, |r: OrderRow| r.try_into()).await
}

/// Up to `limit` PENDING orders due at `now` -> EXPIRED (the caller lowers
/// the counters with [`untake`]). Orders locked by a confirm, a cancel or
/// another sweeper are skipped, never waited for.
pub async fn expire_due(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    limit: i64,
) -> DomainResult<Vec<Order>> {
    let returning = qualified("h", ORDER_COLUMNS);
    let set = "status = 'EXPIRED', resolved_at = $1";
    let due = Due {
        table: "time_sale_orders",
        pending: "PENDING",
        deadline: "expires_at",
        set,
        returning: &returning,
    };
    let rows: Vec<OrderRow> = due.fetch(tx, now, limit).await?;
    rows.into_iter().map(Order::try_from).collect()
}

/// Lowers the users' totals, then the sales' sold counts, by the units of
/// `orders` that just ended: each table in key order, the group commit's
/// lock order, so that no two of them deadlock. Marks the sales changed, so
/// that the reconciler keeps visiting a sale whose orders still end (holds
/// expire, orders are cancelled) long after its window.
pub async fn untake(tx: &mut Transaction<'_, Postgres>, orders: &[Order]) -> DomainResult<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let sales: Vec<Uuid> = orders.iter().map(|o| o.time_sale_id).collect();
    let users: Vec<Uuid> = orders.iter().map(|o| o.user_id).collect();
    let qtys: Vec<i64> = orders.iter().map(|o| o.quantity).collect();
    if orders.len() > 1 {
        // An UPDATE .. FROM locks in whatever order its plan reads; these
        // SELECTs lock in key order first.
        sqlx::query(
            "SELECT 1 FROM time_sale_user_totals t
             JOIN unnest($1::uuid[], $2::uuid[]) AS u(sid, uid)
               ON t.time_sale_id = u.sid AND t.user_id = u.uid
             ORDER BY t.time_sale_id, t.user_id FOR UPDATE OF t",
        )
        .bind(&sales)
        .bind(&users)
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        sqlx::query("SELECT id FROM time_sales WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&sales)
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
    }
    sqlx::query(
        "UPDATE time_sale_user_totals t SET quantity = t.quantity - c.n
         FROM (SELECT sid, uid, sum(q) AS n FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])
               AS u(sid, uid, q) GROUP BY sid, uid ORDER BY sid, uid) c
         WHERE t.time_sale_id = c.sid AND t.user_id = c.uid",
    )
    .bind(&sales)
    .bind(&users)
    .bind(&qtys)
    .execute(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    sqlx::query(
        "UPDATE time_sales s SET sold_quantity = s.sold_quantity - c.n, updated_at = now()
         FROM (SELECT sid, sum(q) AS n FROM unnest($1::uuid[], $2::bigint[]) AS u(sid, q)
               GROUP BY sid ORDER BY sid) c
         WHERE s.id = c.sid",
    )
    .bind(&sales)
    .bind(&qtys)
    .execute(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Sales whose stock copy may still change: not ended before `since` (orders
/// can be cancelled after the end, so ended sales keep being synced a while).
pub async fn sales_to_sync(pool: &PgPool, since: DateTime<Utc>) -> DomainResult<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM time_sales WHERE end_at >= $1")
        .bind(since)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Stores the live stock and the clock-derived status (CANCELLED is sticky).
/// The copy is capped by total - sold, so it is never ahead of the truth even
/// when Redis is (a forced rebuild with orders in flight). Unchanged rows are
/// not rewritten, so an idle sale costs no write per tick.
pub async fn store_remaining(
    pool: &PgPool,
    sale: Uuid,
    remaining: i64,
    now: DateTime<Utc>,
) -> DomainResult<()> {
    // Computed from the row being updated (not a snapshot of it), so a batch
    // committing meanwhile is taken into account.
    sqlx::query(
        "UPDATE time_sales SET remaining_quantity = LEAST(GREATEST($2, 0), total_quantity - sold_quantity),
            status = CASE WHEN status = 'CANCELLED' THEN status
                          WHEN $3 < start_at THEN 'SCHEDULED'
                          WHEN $3 < end_at THEN 'ACTIVE'
                          ELSE 'ENDED' END
         WHERE id = $1
           AND (remaining_quantity <> LEAST(GREATEST($2, 0), total_quantity - sold_quantity)
                OR status <> CASE WHEN status = 'CANCELLED' THEN status
                                  WHEN $3 < start_at THEN 'SCHEDULED'
                                  WHEN $3 < end_at THEN 'ACTIVE'
                                  ELSE 'ENDED' END)",
    )
    .bind(sale)
    .bind(remaining)
    .bind(now)
    .execute(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}
