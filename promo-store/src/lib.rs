//! promo-store: what both binaries need to reach the stores, and nothing of
//! the daemon. promoctl checks, seeds and watches the same PostgreSQL, Redis
//! and Kafka that promod writes, so it must use promod's key names, scripts,
//! seed queries, token keys and topic names; linking them from here instead
//! of from `promod` keeps axum, tonic and Swagger UI out of the CLI, and
//! keeps the two from drifting apart.
//!
//! Here: the Redis connection (`cache`), Kafka clients' security (`kafka`), key names (`keys`), the stock port
//! every scarce thing is admitted through, with its Redis and in-memory
//! implementations, claims on idempotency keys in flight, seed queries and
//! rebuilds (`stock`, over `counters`), writes pipelined off the answer's path
//! (`deferred`), access-token keys (`auth`), default store urls (`urls`), settings that stay text (`text`), event
//! topic names (`topics`), the role names (`roles`) and the storage error
//! (`error`).
//!
//! Not here: business rules (`promo-domain`), services, HTTP and gRPC
//! (`promod`), the CLI (`promoctl`).

pub mod audit;
pub mod auth;
pub mod cache;
pub mod counters;
pub mod deferred;
pub mod error;
pub mod kafka;
pub mod keys;
pub mod roles;
pub mod stock;
pub mod text;
pub mod topics;
pub mod urls;

pub use error::StoreError;
