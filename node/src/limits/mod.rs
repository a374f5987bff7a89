//! Limits that protect a node from one client: rate limits (token buckets per user and per
//! client IP). Connection, header, body and idle limits live with the front ends that enforce
//! them (`api::http::server`, `api::quic`).

pub mod rate;

pub use rate::{RateLimited, RateLimits};
