//! Per-key request rate limits, with [`governor`]: a token bucket (GCRA) per API key, refilled at
//! the plan's rate and holding up to twice that, so short bursts pass and a runaway client gets
//! 429 with the seconds to wait, without slowing anyone else. Plans differ in rate, so there is
//! one keyed limiter per distinct rate, made on first use; keys whose bucket is full again are
//! forgotten now and then (a full bucket is the same as none), so memory stays bounded.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

/// Every this many requests, the limiters forget the keys whose buckets are full again.
const SWEEP_EVERY: u64 = 1024;

/// The bucket holds this many seconds of the rate.
const BURST_SECONDS: NonZeroU32 = NonZeroU32::new(2).unwrap();

/// One rate's buckets, keyed by API key id.
type Keyed<C> =
    governor::RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The gateway's limiter; `C` is the clock (a fake one in tests).
pub struct RateLimiter<C: Clock = DefaultClock> {
    clock: C,
    by_rate: RwLock<HashMap<NonZeroU32, Arc<Keyed<C>>>>,
    taken: AtomicU64,
}

impl<C: Clock + Clone + Default> Default for RateLimiter<C> {
    fn default() -> Self {
        Self::with_clock(C::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            by_rate: RwLock::default(),
            taken: AtomicU64::new(0),
        }
    }

    /// Takes one request from `key`'s bucket at `rate` per second (at least 1; the bucket holds
    /// twice the rate); when empty, answers how long until one is free.
    pub fn take(&self, key: &str, rate: u32) -> Result<(), Duration> {
        let limiter = self.limiter(rate);
        if self.taken.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// The keyed limiter for `rate`, made on first use.
    fn limiter(&self, rate: u32) -> Arc<Keyed<C>> {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        if let Some(limiter) = self.by_rate.read().unwrap_or_else(|p| p.into_inner()).get(&rate) {
            return limiter.clone();
        }
        let mut by_rate = self.by_rate.write().unwrap_or_else(|p| p.into_inner());
        by_rate
            .entry(rate)
            .or_insert_with(|| {
                Arc::new(governor::RateLimiter::new(
                    Quota::per_second(rate).allow_burst(rate.saturating_mul(BURST_SECONDS)),
                    DefaultKeyedStateStore::default(),
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Forgets the keys whose buckets are full again, in every limiter.
    fn sweep(&self) {
        for limiter in self.by_rate.read().unwrap_or_else(|p| p.into_inner()).values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys the limiters remember.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.by_rate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter() -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(clock.clone()), clock)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let (limiter, clock) = limiter();
        for _ in 0..20 {
            assert!(limiter.take("k", 10).is_ok());
        }
        let wait = limiter.take("k", 10).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limiter.take("other", 10).is_ok(), "keys have their own buckets");
        clock.advance(Duration::from_millis(100));
        assert!(limiter.take("k", 10).is_ok());
        assert!(limiter.take("k", 10).is_err());
    }

    #[test]
    fn buckets_refill_to_the_burst_only() {
        let (limiter, clock) = limiter();
        assert!(limiter.take("k", 5).is_ok());
        clock.advance(Duration::from_secs(3600));
        for _ in 0..10 {
            assert!(limiter.take("k", 5).is_ok());
        }
        assert!(limiter.take("k", 5).is_err());
    }

    #[test]
    fn plans_with_other_rates_have_their_own_buckets() {
        let (limiter, _clock) = limiter();
        for _ in 0..2 {
            assert!(limiter.take("slow", 1).is_ok());
        }
        assert_eq!(limiter.take("slow", 1), Err(Duration::from_secs(1)));
        assert_eq!(
            limiter.take("zero", 0),
            Ok(()),
            "a zero rate counts as 1 per second"
        );
        for _ in 0..200 {
            assert!(limiter.take("fast", 100).is_ok());
        }
        assert!(limiter.take("fast", 100).is_err());
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let (limiter, clock) = limiter();
        for i in 0..100 {
            assert!(limiter.take(&format!("idle{i}"), 10).is_ok());
        }
        assert_eq!(limiter.remembered(), 100);
        // Long after, a busy key's requests sweep out those whose buckets are full again.
        clock.advance(Duration::from_secs(60));
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.take("busy", 10);
        }
        assert_eq!(limiter.remembered(), 1, "only the busy key is left");
        assert!(limiter.take("busy", 10).is_err(), "and its bucket is still empty");
    }
}
