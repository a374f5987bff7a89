//! Time helpers, and the metadata handle (which lives in wharf-cluster).

use std::time::Duration;

pub use wharf_cluster::Metadata;

/// Milliseconds since the Unix epoch: the proposer's clock, which commands carry.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
