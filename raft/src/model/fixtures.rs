//! Builders the model's unit tests share.

use super::{Command, Millis, Tier, TierLimits};

/// Room for anything a unit test does.
pub const LIMITS: TierLimits = TierLimits {
    quota: 1 << 30,
    max_file_size: 1 << 30,
    max_concurrent_uploads: 10,
};

/// `owner`'s upload `id` of 10 bytes in chunks of 4, made at `now`.
pub fn create_upload(owner: &str, id: &str, now: Millis) -> Command {
    Command::CreateUpload {
        upload_id: id.into(),
        owner: owner.into(),
        tier: Tier::Basic,
        limits: LIMITS,
        name: format!("{id}.bin"),
        mime: None,
        size: 10,
        chunk_size: 4,
        blake3: None,
        idempotency_key: None,
        ttl_ms: 60_000,
        now,
    }
}
