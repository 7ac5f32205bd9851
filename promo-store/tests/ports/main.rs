//! One contract suite per port (the stock port), run on every
//! implementation: in-memory, and Redis at `PROMO_TEST_REDIS`.

mod stock;

pub fn redis_url() -> String {
    std::env::var("PROMO_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
