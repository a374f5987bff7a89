//! The cluster's usage for admins: totals per tier, users ordered by bytes used, and each
//! user's file count.
//!
//! `put_user`, `put_file` and `remove_file` keep them in the same apply as the change they
//! count. A data dir of an older wharf has users but none of these: the leader proposes
//! `CountUsage` until it answers `Indexed(None)`, each command counting a bounded batch of
//! users in id order. Until a user has been counted, its changes leave the totals alone (the
//! count reads the user as it is by then), so the totals are exact once counting is done.
//!
//! Keys: `ag/tier/{tier}` the totals of a tier; `uu/{u64::MAX - used:020}/{user}` users, most used first;
//! `uf/{user}` the user's file count (trashed files count until purged, as their bytes do);
//! `ag/counted_through` the last user counted so far; `ag/counted` once all are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::keys;
use super::{ApplyResult, Outcome, State, Tier, User};
use crate::kv::{Kv, KvMut};

const TIERS: &[u8] = b"ag/tier/";
const COUNTED: &[u8] = b"ag/counted";
const COUNTED_THROUGH: &[u8] = b"ag/counted_through";
const BY_USED: &[u8] = b"uu/";

/// What the users of one tier (or all of them) hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierUsage {
    pub users: u64,
    pub used: u64,
    pub reserved: u64,
    pub files: u64,
    /// Uploads in progress.
    pub uploads: u64,
}

impl TierUsage {
    fn add(&mut self, u: &User, files: u64) {
        self.users += 1;
        self.used += u.used;
        self.reserved += u.reserved;
        self.files += files;
        self.uploads += u64::from(u.active_uploads);
    }

    fn sub(&mut self, u: &User, files: u64) {
        let r = super::release;
        r(&mut self.users, 1);
        r(&mut self.used, u.used);
        r(&mut self.reserved, u.reserved);
        r(&mut self.files, files);
        r(&mut self.uploads, u64::from(u.active_uploads));
    }

    fn sum(&mut self, o: &TierUsage) {
        self.users += o.users;
        self.used += o.used;
        self.reserved += o.reserved;
        self.files += o.files;
        self.uploads += o.uploads;
    }
}

/// The cluster's totals, by tier name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub tiers: BTreeMap<String, TierUsage>,
}

impl Totals {
    /// Every tier together.
    pub fn all(&self) -> TierUsage {
        let mut t = TierUsage::default();
        for u in self.tiers.values() {
            t.sum(u);
        }
        t
    }
}

fn tier_key(tier: Tier) -> Vec<u8> {
    [TIERS, tier.as_str().as_bytes()].concat()
}

/// One user as an admin sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    pub id: String,
    pub tier: Tier,
    pub quota: u64,
    pub used: u64,
    pub reserved: u64,
    pub files: u64,
    pub uploads: u32,
}

fn by_used_key(used: u64, user: &str) -> Vec<u8> {
    format!("uu/{:020}/{user}", u64::MAX - used).into_bytes()
}

fn files_key(user: &str) -> Vec<u8> {
    format!("uf/{user}").into_bytes()
}

impl<K: Kv> State<K> {
    /// Whether every user is counted (the totals are exact).
    pub fn usage_counted(&self) -> bool {
        self.kv().get(COUNTED).is_some()
    }

    /// Whether `user`'s changes move the totals: it has been counted.
    fn counted(&self, user: &str) -> bool {
        self.usage_counted()
            || self
                .read_at::<String>(COUNTED_THROUGH)
                .is_some_and(|through| user <= through.as_str())
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        self.kv().scan(TIERS, None, &mut |k, v| {
            if let Ok(u) = crate::codec::decode::<TierUsage>(v) {
                t.tiers
                    .insert(String::from_utf8_lossy(&k[TIERS.len()..]).into_owned(), u);
            }
            true
        });
        t
    }

    fn tier_usage(&self, tier: Tier) -> TierUsage {
        self.read_at(&tier_key(tier)).unwrap_or_default()
    }

    /// `user`'s files (those counted so far, for a user not yet counted: 0).
    pub fn user_files(&self, user: &str) -> u64 {
        self.read_at(&files_key(user)).unwrap_or(0)
    }

    pub fn user_usage(&self, user: &str) -> Option<UserUsage> {
        let u = self.user(user)?;
        Some(UserUsage {
            files: self.user_files(&u.id),
            id: u.id,
            tier: u.tier,
            quota: u.quota,
            used: u.used,
            reserved: u.reserved,
            uploads: u.active_uploads,
        })
    }

    /// Up to `limit` users, most bytes used first, after the cursor `after` (from an earlier
    /// page); the cursor of the next page when there may be more.
    pub fn users_by_used(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<UserUsage>, Option<String>) {
        let from = after.map(|a| [BY_USED, a.as_bytes()].concat());
        let mut ids = Vec::new();
        let mut last = None;
        if limit > 0 {
            self.kv().scan(BY_USED, from.as_deref(), &mut |k, _| {
                let tail = String::from_utf8_lossy(&k[BY_USED.len()..]).into_owned();
                if let Some((_, id)) = tail.split_once('/') {
                    ids.push(id.to_string());
                }
                last = Some(tail);
                ids.len() < limit
            });
        }
        let next = (ids.len() == limit).then_some(last).flatten();
        let users = ids.iter().filter_map(|id| self.user_usage(id)).collect();
        (users, next)
    }
}

impl<K: KvMut> State<K> {
    /// `user` is about to be written over `old`: the totals and the index follow.
    pub(super) fn count_user(&mut self, old: Option<&User>, new: &User) {
        if !self.counted(&new.id) {
            return;
        }
        let files = self.user_files(&new.id);
        if let Some(o) = old.filter(|o| o.tier != new.tier) {
            let mut t = self.tier_usage(o.tier);
            t.sub(o, files);
            self.write_at(&tier_key(o.tier), &t);
        }
        let mut t = self.tier_usage(new.tier);
        if let Some(o) = old.filter(|o| o.tier == new.tier) {
            t.sub(o, files);
        }
        t.add(new, files);
        self.write_at(&tier_key(new.tier), &t);
        let old_used = old.map(|o| o.used);
        if old_used != Some(new.used) {
            if let Some(used) = old_used {
                self.delete_at(&by_used_key(used, &new.id));
            }
            self.write_at(&by_used_key(new.used, &new.id), &());
        }
    }

    /// `owner` gained (`true`) or lost a file record.
    pub(super) fn count_file(&mut self, owner: &str, added: bool) {
        if !self.counted(owner) {
            return;
        }
        let mut files = self.user_files(owner);
        if added {
            files += 1;
        } else {
            super::release(&mut files, 1);
        }
        // A user written for the first time after their first file brings its count into the
        // totals then (`count_user`).
        if let Some(u) = self.user(owner) {
            let mut t = self.tier_usage(u.tier);
            if added {
                t.files += 1;
            } else {
                super::release(&mut t.files, 1);
            }
            self.write_at(&tier_key(u.tier), &t);
        }
        if files == 0 {
            self.delete_at(&files_key(owner));
        } else {
            self.write_at(&files_key(owner), &files);
        }
    }
}

/// Counts up to `limit` users not yet counted (see the module's text); answers the last one
/// counted, or `None` once every user is. Where to go on from is in the state, so a retried
/// proposal never counts a user twice.
pub(super) fn count<K: KvMut>(state: &mut State<K>, limit: u32) -> ApplyResult {
    if state.usage_counted() {
        return Ok(Outcome::Indexed(None));
    }
    let limit = (limit as usize).max(1);
    let through: Option<String> = state.read_at(COUNTED_THROUGH);
    let users = state.users(through.as_deref(), limit);
    for u in &users {
        let mut files = 0u64;
        state.kv().scan(&keys::files_of(&u.id), None, &mut |_, _| {
            files += 1;
            true
        });
        if files > 0 {
            state.write_at(&files_key(&u.id), &files);
        }
        state.write_at(&by_used_key(u.used, &u.id), &());
        let mut t = state.tier_usage(u.tier);
        t.add(u, files);
        state.write_at(&tier_key(u.tier), &t);
    }
    match users.last() {
        Some(last) if users.len() == limit => {
            state.write_at(COUNTED_THROUGH, &last.id);
            Ok(Outcome::Indexed(Some(last.id.clone())))
        }
        _ => {
            state.delete_at(COUNTED_THROUGH);
            state.write_at(COUNTED, &());
            Ok(Outcome::Indexed(None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Command, State, Tier};
    use super::*;

    use super::super::fixtures::LIMITS;

    fn store(owner: &str, file: &str, size: u64, tier: Tier) -> Command {
        Command::StoreFile {
            upload_id: format!("up-{file}"),
            file_id: file.into(),
            owner: owner.into(),
            tier,
            limits: LIMITS,
            name: format!("{file}.bin"),
            mime: None,
            size,
            blake3: format!("hash-{file}"),
            idempotency_key: None,
            object_key: format!("obj-{file}"),
            scan: false,
            now: 1,
        }
    }

    /// What the totals must be: the users' own records summed.
    fn recount(s: &State) -> TierUsage {
        let mut t = TierUsage::default();
        for u in s.users(None, usize::MAX) {
            let files = s.files_page(&u.id, None, usize::MAX).len() as u64;
            t.add(&u, files);
        }
        t
    }

    #[test]
    fn totals_count_users_stored_before_and_after_a_batched_count() {
        let mut s = State::default();
        // An older data dir: three users with files, nothing counted.
        apply(&mut s, store("ann", "f1", 10, Tier::Basic)).unwrap();
        apply(&mut s, store("bob", "f2", 30, Tier::Premium)).unwrap();
        apply(&mut s, store("bob", "f3", 5, Tier::Premium)).unwrap();
        apply(&mut s, store("cat", "f4", 7, Tier::Basic)).unwrap();
        assert!(!s.usage_counted());
        assert_eq!(s.totals(), Totals::default());
        // One user per command; between commands, changes to users counted and not counted.
        let out = apply(&mut s, Command::CountUsage { limit: 1 }).unwrap();
        assert_eq!(out, Outcome::Indexed(Some("ann".into())));
        apply(&mut s, store("ann", "f5", 1, Tier::Basic)).unwrap();
        apply(&mut s, store("cat", "f6", 2, Tier::Basic)).unwrap();
        apply(&mut s, Command::CountUsage { limit: 1 }).unwrap();
        let out = apply(&mut s, Command::CountUsage { limit: 2 }).unwrap();
        assert_eq!(out, Outcome::Indexed(None));
        assert!(s.usage_counted());
        assert_eq!(s.totals().all(), recount(&s));
        // Counted: every change moves the totals, a retried count changes nothing.
        apply(&mut s, store("dan", "f7", 100, Tier::Basic)).unwrap();
        apply(
            &mut s,
            Command::DeleteFile {
                owner: "bob".into(),
                file_id: "f3".into(),
                now: 2,
            },
        )
        .unwrap();
        apply(&mut s, Command::CountUsage { limit: 1 }).unwrap();
        let all = s.totals().all();
        assert_eq!(all, recount(&s));
        assert_eq!((all.users, all.files, all.used), (4, 6, 150));
        assert_eq!(s.totals().tiers["premium"].users, 1);
        // Most used first, one page at a time.
        let (page, next) = s.users_by_used(None, 2);
        let ids: Vec<_> = page.iter().map(|u| (u.id.as_str(), u.used)).collect();
        assert_eq!(ids, vec![("dan", 100), ("bob", 30)]);
        let (page, next) = s.users_by_used(next.as_deref(), 2);
        let ids: Vec<_> = page.iter().map(|u| (u.id.as_str(), u.files)).collect();
        assert_eq!(ids, vec![("ann", 2), ("cat", 2)]);
        let (page, _) = s.users_by_used(next.as_deref(), 2);
        assert!(page.is_empty());
    }
}
