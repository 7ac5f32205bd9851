//! promod: one daemon, four roles (gateway, coupon, point, timesale), chosen at
//! start. `server::run` starts what the config enables and stops on the
//! shutdown token. What promoctl shares with it (Redis keys and ports,
//! rebuilds, token keys, topics) lives in `promo-store`, so the CLI does not
//! link this crate.

pub mod audit;
pub mod batcher;
pub mod client_addr;
pub mod code_guard;
pub mod config;
pub mod coupon;
pub mod ctx;
pub mod db;
pub mod detach;
pub mod discovery;
pub mod error;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod overload;
pub mod point;
pub mod proto;
pub mod reconcile;
pub mod request_id;
pub mod reserve;
pub mod roles;
pub mod rpc;
pub mod server;
pub mod sweep;
pub mod telemetry;
pub mod timesale;
pub mod transact;
