//! Limits that protect a node from one client: rate limits (token buckets per user and per
//! client IP) and counted places (connections per address, per user). Connection, header, body and idle limits live with the front ends that enforce
//! them (`api::http::server`, `api::quic`).

pub mod rate;
pub mod slots;

pub use rate::{RateLimited, RateLimits};
pub use slots::{Slot, Slots};
