//! Per-key request rate limits: a token bucket per API key, refilled at the plan's rate and
//! holding up to twice that, so short bursts pass and a runaway client gets 429 with the seconds
//! to wait, without slowing anyone else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets untouched this long are forgotten (a full bucket is the same as none).
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one request from `key`'s bucket at `rate` per second; when empty, answers how long
    /// until one is free.
    pub fn take(&self, key: &str, rate: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(rate.max(1));
        let burst = 2.0 * rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(limiter.take("k", 10, t0).is_ok());
        }
        let wait = limiter.take("k", 10, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.take("other", 10, t0).is_ok(),
            "keys have their own buckets"
        );
        assert!(limiter.take("k", 10, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.take("k", 10, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn buckets_refill_to_the_burst_only() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.take("k", 5, t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(limiter.take("k", 5, later).is_ok());
        }
        assert!(limiter.take("k", 5, later).is_err());
    }
}
