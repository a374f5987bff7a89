//! Node-local rate limits: GCRA token buckets (`governor`) in concurrent maps (`dashmap`),
//! keyed by client IP and by user. Each node counts on its own: a client spread over N nodes
//! gets up to N times the limits.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use wharf_raft::model::Tier;

use crate::config::RateConfig;

/// A refusal: how long until the same request could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
    pub what: &'static str,
}

/// One limit in two strengths: basic users, and premium and admin users.
struct TierLimiter {
    basic: Option<DefaultKeyedRateLimiter<String>>,
    premium: Option<DefaultKeyedRateLimiter<String>>,
}

impl TierLimiter {
    fn new(per_sec: u64, factor: u32) -> Self {
        Self {
            basic: limiter(per_sec),
            premium: limiter(per_sec.saturating_mul(u64::from(factor))),
        }
    }

    fn get(&self, tier: Tier) -> Option<&DefaultKeyedRateLimiter<String>> {
        match tier {
            Tier::Basic => self.basic.as_ref(),
            Tier::Premium | Tier::Admin => self.premium.as_ref(),
        }
    }

    fn retain_recent(&self) {
        for l in [&self.basic, &self.premium].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// A bucket of `per_sec` a second holding two seconds' worth (`None`: no limit).
fn limiter<K: Clone + std::hash::Hash + Eq>(per_sec: u64) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec.min(u64::from(u32::MAX)) as u32)?;
    let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
    Some(DefaultKeyedRateLimiter::dashmap(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

pub struct RateLimits {
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    user_requests: TierLimiter,
    user_creates: TierLimiter,
    /// Counted in KiB (a bucket holds at most u32 cells).
    user_kib: TierLimiter,
    /// Password tries per share link (whatever address they come from).
    link_passwords: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

/// Password tries a share link takes a minute (a burst of as many).
pub const LINK_PASSWORD_TRIES: u32 = 5;

impl RateLimits {
    pub fn new(c: &RateConfig) -> Self {
        Self {
            ip: limiter(u64::from(c.ip_requests_per_sec)),
            user_requests: TierLimiter::new(u64::from(c.user_requests_per_sec), c.premium_factor),
            user_creates: TierLimiter::new(u64::from(c.user_creates_per_sec), c.premium_factor),
            user_kib: TierLimiter::new(c.user_bytes_per_sec / 1024, c.premium_factor),
            link_passwords: DefaultKeyedRateLimiter::dashmap(Quota::per_minute(
                NonZeroU32::new(LINK_PASSWORD_TRIES).expect("not zero"),
            )),
            clock: DefaultClock::default(),
        }
    }

    fn refusal(
        &self,
        n: &governor::NotUntil<governor::clock::QuantaInstant>,
        what: &'static str,
    ) -> RateLimited {
        // Whole seconds, at least one: what Retry-After can say.
        let wait = n.wait_time_from(self.clock.now());
        RateLimited {
            retry_after: Duration::from_secs(wait.as_secs() + 1),
            what,
        }
    }

    /// One request from `ip`.
    pub fn ip_request(&self, ip: IpAddr) -> Result<(), RateLimited> {
        match &self.ip {
            Some(l) => l
                .check_key(&ip)
                .map_err(|n| self.refusal(&n, "requests from this address")),
            None => Ok(()),
        }
    }

    /// One request of `user`.
    pub fn user_request(&self, user: &str, tier: Tier) -> Result<(), RateLimited> {
        match self.user_requests.get(tier) {
            Some(l) => l
                .check_key(&user.to_string())
                .map_err(|n| self.refusal(&n, "requests of this user")),
            None => Ok(()),
        }
    }

    /// One password try on the share link `token`.
    pub fn link_password(&self, token: &str) -> Result<(), RateLimited> {
        self.link_passwords
            .check_key(&token.to_string())
            .map_err(|n| self.refusal(&n, "password tries on this link"))
    }

    /// One upload creation (session or one-request file) of `user`.
    pub fn user_create(&self, user: &str, tier: Tier) -> Result<(), RateLimited> {
        match self.user_creates.get(tier) {
            Some(l) => l
                .check_key(&user.to_string())
                .map_err(|n| self.refusal(&n, "uploads created by this user")),
            None => Ok(()),
        }
    }

    /// `bytes` of chunk or file body from `user`, checked before they are read.
    pub fn user_bytes(&self, user: &str, tier: Tier, bytes: u64) -> Result<(), RateLimited> {
        let Some(l) = self.user_kib.get(tier) else {
            return Ok(());
        };
        let kib = bytes.div_ceil(1024).clamp(1, u64::from(u32::MAX)) as u32;
        let n = NonZeroU32::new(kib).expect("at least 1");
        let key = user.to_string();
        let checked = match l.check_key_n(&key, n) {
            // Larger than the whole bucket: it takes the whole bucket (once it is full), rather
            // than never passing, or passing free.
            Err(governor::InsufficientCapacity(max)) => {
                let all = NonZeroU32::new(max).expect("a bucket holds at least one cell");
                l.check_key_n(&key, all).expect("the whole bucket fits")
            }
            Ok(r) => r,
        };
        checked.map_err(|not_until| self.refusal(&not_until, "body bytes of this user"))
    }

    /// Forgets buckets that are full again (called now and then: keeps the maps small).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.user_requests.retain_recent();
        self.user_creates.retain_recent();
        self.user_kib.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_are_refused_with_a_retry_time() {
        let limits = RateLimits::new(&RateConfig {
            ip_requests_per_sec: 5,
            ..RateConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            limits.ip_request(ip).unwrap();
        }
        let refused = limits.ip_request(ip).unwrap_err();
        assert!(refused.retry_after >= Duration::from_secs(1));
        // Another address has its own bucket.
        limits.ip_request("192.0.2.2".parse().unwrap()).unwrap();
    }

    #[test]
    fn premium_users_get_the_factor_and_zero_turns_a_limit_off() {
        let limits = RateLimits::new(&RateConfig {
            user_requests_per_sec: 2,
            user_creates_per_sec: 0,
            premium_factor: 4,
            ..RateConfig::default()
        });
        let passed = |tier| {
            (0..100)
                .take_while(|_| limits.user_request("u", tier).is_ok())
                .count()
        };
        assert_eq!(passed(Tier::Basic), 4);
        let limits2 = RateLimits::new(&RateConfig {
            user_requests_per_sec: 2,
            premium_factor: 4,
            ..RateConfig::default()
        });
        let premium = (0..100)
            .take_while(|_| limits2.user_request("p", Tier::Premium).is_ok())
            .count();
        assert_eq!(premium, 16);
        for _ in 0..1000 {
            limits.user_create("u", Tier::Basic).unwrap();
        }
    }

    #[test]
    fn a_body_larger_than_the_bucket_takes_all_of_it() {
        let limits = RateLimits::new(&RateConfig {
            user_bytes_per_sec: 1 << 20,
            ..RateConfig::default()
        });
        limits.user_bytes("u", Tier::Basic, 8 << 20).unwrap();
        assert!(limits.user_bytes("u", Tier::Basic, 8 << 20).is_err());
        assert!(limits.user_bytes("u", Tier::Basic, 1024).is_err());
    }

    #[test]
    fn body_bytes_are_counted_in_kib() {
        let limits = RateLimits::new(&RateConfig {
            user_bytes_per_sec: 4 << 20,
            ..RateConfig::default()
        });
        // Two seconds' worth pass at once, then the bucket is empty.
        limits.user_bytes("u", Tier::Basic, 8 << 20).unwrap();
        assert!(limits.user_bytes("u", Tier::Basic, 1 << 20).is_err());
    }
}
