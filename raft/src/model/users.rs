//! Users: quota set by an admin (usage itself moves with uploads and files).

use super::{ApplyResult, ModelError, Outcome, State, Tier, User};
use crate::kv::KvMut;

pub(super) fn set_quota<K: KvMut>(state: &mut State<K>, user: String, quota: u64) -> ApplyResult {
    let mut u = state.user(&user).unwrap_or(User {
        id: user,
        tier: Tier::Basic,
        quota: 0,
        quota_set_by_admin: true,
        used: 0,
        reserved: 0,
        active_uploads: 0,
    });
    let committed = u.used.saturating_add(u.reserved);
    if quota < committed {
        return Err(ModelError::QuotaBelowUsage { quota, committed });
    }
    u.quota = quota;
    u.quota_set_by_admin = true;
    state.put_user(&u);
    state.emit(&u.id, super::events::EventKind::QuotaChanged);
    Ok(Outcome::User(u))
}
