//! Pure domain rules of promo: typed values, validation, discount arithmetic and
//! state machines for coupons, points and time sales.
//!
//! Invariant: this crate performs no IO and depends on no transport or storage
//! crate (sqlx, redis, rdkafka, tonic, axum). Adapters in `promod` implement the
//! ports declared here, so the in-memory and the real implementations must prove
//! the same guarantees.

pub mod audit;
pub mod clock;
pub mod code;
pub mod coupon;
pub mod error;
pub mod hold;
pub mod page;
pub mod point;
pub mod principal;
pub mod timesale;

pub use error::{DomainError, DomainResult};
