//! promoctl: the ops CLI of promo. The binary is a thin wrapper over this
//! library so that tests reach the checks and helpers directly.

pub mod acks;
pub mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod etcd;
pub mod events;
pub mod load;
pub mod output;
pub mod stream;
pub mod time;
