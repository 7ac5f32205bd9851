//! promod: one daemon, four roles (gateway, coupon, point, timesale), chosen at
//! start. `server::run` starts what the config enables and stops on the
//! shutdown token. promoctl links this library for the code it shares
//! (Redis keys, rebuild paths, REST views).

pub mod auth;
pub mod batcher;
pub mod cache;
pub mod config;
pub mod counters;
pub mod coupon;
pub mod db;
pub mod detach;
pub mod discovery;
pub mod error;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod inflight;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod point;
pub mod proto;
pub mod request_id;
pub mod reserve;
pub mod roles;
pub mod server;
pub mod stock;
pub mod telemetry;
pub mod timesale;
pub mod transact;
