//! A token bucket on tokio's clock, shared by the sessions of a pool.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate_per_sec` tokens a second, at most `burst` saved up.
///
/// [`RateLimiter::reserve`] takes a token now and says how long to wait
/// before using it, so a caller never blocks while holding the lock and
/// waiters are served in the order they reserved. It runs on tokio's clock,
/// so tests with paused time see exact waits.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available; negative when waiters have reserved ahead.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `rate_per_sec` (must be positive) with a burst of
    /// `burst` tokens (at least 1), starting full.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate_per_sec: rate_per_sec.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// The configured rate, per second.
    pub fn rate_per_sec(&self) -> f64 {
        self.rate_per_sec
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_sec).min(self.burst);
        bucket.last = now;
    }

    /// Takes a token and returns how long to wait before using it (zero if
    /// one was available).
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut bucket = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut bucket, now);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.rate_per_sec)
        }
    }

    /// Takes a token if one is available now, without waiting.
    pub fn try_acquire(&self) -> bool {
        let now = Instant::now();
        let mut bucket = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_follow_the_rate() {
        let limiter = RateLimiter::new(10.0, 2);
        assert_eq!(limiter.reserve(), Duration::ZERO);
        assert_eq!(limiter.reserve(), Duration::ZERO);
        let third = limiter.reserve();
        assert!((third.as_secs_f64() - 0.1).abs() < 1e-6, "{third:?}");
        let fourth = limiter.reserve();
        assert!((fourth.as_secs_f64() - 0.2).abs() < 1e-6, "{fourth:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire());
    }
}
