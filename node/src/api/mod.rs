//! The client-facing front ends: [`http`] (the HTTP API, axum) and [`quic`] (the same operations
//! over QUIC). Both parse and authenticate requests and call the actor handles.

pub mod http;
pub mod quic;
