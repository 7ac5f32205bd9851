//! Shared by the integration tests: fresh databases migrated like promod
//! migrates them.
#![allow(dead_code)]

use sqlx::PgPool;
use uuid::Uuid;

pub fn pg_base() -> String {
    std::env::var("PROMO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Clone, Copy)]
pub enum Schema {
    Coupon,
    Point,
    Timesale,
}

/// An empty fresh database (promod migrates it itself); returns its url.
pub async fn fresh_db(tag: &str) -> String {
    let name = format!("t_ctl_{tag}_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&format!("{}/postgres", pg_base()))
        .await
        .expect("postgres for tests");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    format!("{}/{name}", pg_base())
}

/// A fresh database with the common and the service migrations, as promod
/// runs them (two migrators sharing one history table).
pub async fn fresh(schema: Schema) -> PgPool {
    fresh_with_url(schema).await.0
}

/// `fresh`, with the database url for the binary.
pub async fn fresh_with_url(schema: Schema) -> (PgPool, String) {
    let url = fresh_db("m").await;
    let pool = PgPool::connect(&url).await.expect("connect test database");
    let mut common = sqlx::migrate!("../migrations/common");
    common.set_ignore_missing(true);
    common.run(&pool).await.expect("common migrations");
    let mut own = match schema {
        Schema::Coupon => sqlx::migrate!("../migrations/coupon"),
        Schema::Point => sqlx::migrate!("../migrations/point"),
        Schema::Timesale => sqlx::migrate!("../migrations/timesale"),
    };
    own.set_ignore_missing(true);
    own.run(&pool).await.expect("service migrations");
    (pool, url)
}
