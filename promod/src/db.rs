//! PostgreSQL pools with a bounded acquire timeout, and per-service migrations.

use anyhow::Context;
use promo_store::urls::redact;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Schema {
    Gateway,
    Coupon,
    Point,
    Timesale,
}

pub async fn connect(url: &str, max: u32, acquire_timeout_ms: u64) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database url for {}", redact(url)))?;
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_millis(acquire_timeout_ms))
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot connect to postgres at {}", redact(url)))
}

pub async fn migrate(pool: &PgPool, schema: Schema) -> anyhow::Result<()> {
    // Two migrators share one history table; each ignores the other's versions.
    let mut own = match schema {
        Schema::Gateway => sqlx::migrate!("../migrations/gateway"),
        Schema::Coupon => sqlx::migrate!("../migrations/coupon"),
        Schema::Point => sqlx::migrate!("../migrations/point"),
        Schema::Timesale => sqlx::migrate!("../migrations/timesale"),
    };
    own.set_ignore_missing(true);
    if !matches!(schema, Schema::Gateway) {
        let mut common = sqlx::migrate!("../migrations/common");
        common.set_ignore_missing(true);
        common
            .run(pool)
            .await
            .with_context(|| format!("common migrations of {schema:?} failed").to_lowercase())?;
    }
    own.run(pool)
        .await
        .with_context(|| format!("migrations of {schema:?} failed").to_lowercase())
}
