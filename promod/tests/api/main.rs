//! Integration tests against real PostgreSQL and Redis (and etcd for the
//! split-process tests). One binary; modules only.

mod auth;
mod authz;
mod coupon;
mod events;
mod fuzz;
mod helpers;
mod point;
mod rate_limit;
mod security;
mod split;
mod stock_contract;
mod timesale;
mod timesale_helpers;
