//! `promoctl inventory seed|show`: the rebuild path of the coupon and timesale
//! roles (`promo_store::stock::rebuild`, the same code promod runs at start-up), and
//! the live counters next to what PostgreSQL says they should be.

use crate::check::Stores;
use crate::check::{connect_pg, connect_redis, store_urls};
use crate::cli::InventoryCmd;
use crate::error::{CtlError, CtlResult};
use crate::output::{render, Output};
use promo_domain::DomainError;
use promo_store::stock::{self, Kind, RedisStock};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct Services {
    coupon_db: PgPool,
    timesale_db: PgPool,
    stock: RedisStock,
    redis: promo_store::cache::Redis,
}

async fn services(stores: &Stores) -> CtlResult<Services> {
    let urls = store_urls(stores)?;
    let redis = connect_redis(&urls.redis, urls.redis_ca_file.as_deref()).await?;
    Ok(Services {
        coupon_db: connect_pg(&urls.coupon).await?,
        timesale_db: connect_pg(&urls.timesale).await?,
        stock: RedisStock::new(redis.clone()),
        redis,
    })
}

fn domain(e: DomainError) -> CtlError {
    match e {
        DomainError::Unavailable(_) => CtlError::unreachable("the store", e),
        other => CtlError::Other(other.into()),
    }
}

pub async fn inventory(cmd: InventoryCmd, out: &Output) -> CtlResult<()> {
    match cmd {
        InventoryCmd::Seed {
            id,
            all,
            force,
            stores,
        } => {
            let s = services(&stores).await?;
            let rows = match (id, all) {
                (Some(id), false) => vec![seed_one(&s, id, force).await?],
                (None, true) => {
                    let sales = stock::rebuild_all(&s.timesale_db, &s.stock, Kind::Sale, force)
                        .await
                        .map_err(domain)?;
                    let policies = stock::rebuild_all(&s.coupon_db, &s.stock, Kind::Coupon, force)
                        .await
                        .map_err(domain)?;
                    vec![
                        json!({"kind": "time sales", "id": "all", "installed": sales}),
                        json!({"kind": "coupon policies", "id": "all", "installed": policies}),
                    ]
                }
                _ => return Err(CtlError::usage("give a sale or policy id, or --all")),
            };
            let v = json!({"items": rows, "page": 1, "size": rows.len(), "total": rows.len()});
            println!("{}", render(&v, &["kind", "id", "installed"], out));
            if !force && rows.iter().any(|r| r["installed"] == json!(false)) {
                eprintln!("a live counter was kept; --force overwrites it from postgresql");
            }
            Ok(())
        }
        InventoryCmd::Show { stores } => {
            let s = services(&stores).await?;
            let rows = show(&s).await?;
            let v = json!({"items": rows, "page": 1, "size": rows.len(), "total": rows.len()});
            println!(
                "{}",
                render(
                    &v,
                    &["kind", "id", "total", "taken", "expected", "redis", "status"],
                    out
                )
            );
            Ok(())
        }
    }
}

/// Seeds a sale, or else a coupon policy, with this id.
async fn seed_one(s: &Services, id: Uuid, force: bool) -> CtlResult<Value> {
    match stock::rebuild(&s.timesale_db, &s.stock, Kind::Sale, id, force).await {
        Ok(installed) => Ok(json!({"kind": "time sale", "id": id, "installed": installed})),
        Err(DomainError::NotFound(_)) => {
            let installed = stock::rebuild(&s.coupon_db, &s.stock, Kind::Coupon, id, force)
                .await
                .map_err(domain)?;
            Ok(json!({"kind": "coupon policy", "id": id, "installed": installed}))
        }
        Err(e) => Err(domain(e)),
    }
}

async fn show(s: &Services) -> CtlResult<Vec<Value>> {
    let pg = |e: sqlx::Error| CtlError::postgres("postgres", e);
    let policies: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT id, total_quantity, issued_quantity FROM coupon_policies ORDER BY created_at DESC",
    )
    .fetch_all(&s.coupon_db)
    .await
    .map_err(pg)?;
    let sales: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT id, total_quantity, sold_quantity FROM time_sales ORDER BY created_at DESC",
    )
    .fetch_all(&s.timesale_db)
    .await
    .map_err(pg)?;
    let keys: Vec<String> = policies
        .iter()
        .map(|p| promo_store::keys::coupon_remaining(p.0))
        .chain(
            sales
                .iter()
                .map(|t| promo_store::keys::timesale_inventory(t.0)),
        )
        .collect();
    let live: Vec<Option<i64>> = if keys.is_empty() {
        Vec::new()
    } else {
        // One key per call: the keys live in different hash slots on a cluster.
        let mut out = Vec::with_capacity(keys.len());
        let mut r = s.redis.clone();
        for k in &keys {
            let v: Option<i64> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut r)
                .await
                .map_err(|e| CtlError::redis("redis", e))?;
            out.push(v);
        }
        out
    };
    let rows = policies
        .iter()
        .map(|p| ("coupon policy", p))
        .chain(sales.iter().map(|t| ("time sale", t)))
        .zip(live)
        .map(|((kind, (id, total, taken)), redis)| {
            let expected = total - taken;
            let status = match redis {
                None => "not loaded",
                Some(r) if r == expected => "ok",
                // Below is an in-flight admission or a lost slot (under-sell),
                // above would let the next requests oversell (the database refuses).
                Some(r) if r < expected => "behind",
                Some(_) => "AHEAD",
            };
            json!({"kind": kind, "id": id, "total": total, "taken": taken,
                   "expected": expected, "redis": redis, "status": status})
        })
        .collect();
    Ok(rows)
}
