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

pub use promod::db::Schema;

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

/// A fresh database migrated by promod's own migrations.
pub async fn fresh(schema: Schema) -> PgPool {
    fresh_with_url(schema).await.0
}

/// `fresh`, with the database url for the binary.
pub async fn fresh_with_url(schema: Schema) -> (PgPool, String) {
    let url = fresh_db("m").await;
    let pool = PgPool::connect(&url).await.expect("connect test database");
    promod::db::migrate(&pool, schema)
        .await
        .expect("migrations");
    (pool, url)
}
