//! Integration tests against real PostgreSQL and Redis (and etcd for the
//! split-process tests). One binary; modules only.

mod admin_search;
mod audit;
mod auth;
mod authz;
mod coupon;
mod coupon_codes;
mod coupon_db_guards;
mod coupon_reserve;
mod coupon_stacking;
mod crash;
mod detach;
mod events;
mod fuzz;
mod helpers;
mod monitoring;
mod order_hold;
mod overload;
mod point;
mod point_hold;
mod point_lots;
mod procs;
mod prune;
mod rate_limit;
mod same_key;
mod security;
mod split;
mod split_idempotency;
mod stored_refusals;
mod timesale;
mod timesale_helpers;
mod tls;
