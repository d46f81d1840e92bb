//! A token bucket that caps a server's sending rate (an alternate configured with a link
//! capacity sends no faster). Sans-IO: time in, "send now" or "wait until" out.

use std::time::{Duration, Instant};

/// Bytes per second with a burst allowance.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Available bytes; negative while in debt.
    tokens: i128,
    last: Instant,
}

impl TokenBucket {
    /// A bucket of `rate` bytes/s that starts full with `rate / 20` bytes (50 ms of traffic).
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1);
        let burst = (rate / 20).max(65_536);
        TokenBucket {
            rate,
            burst,
            tokens: i128::from(burst),
            last: now,
        }
    }

    /// Takes `bytes` at `now`; returns when sending them is within the rate (`None`: now).
    /// The bytes are always taken, so callers wait and then send without asking again.
    pub fn take(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let refill = elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        self.tokens = (self.tokens + refill as i128).min(i128::from(self.burst));
        self.tokens -= bytes as i128;
        if self.tokens >= 0 {
            return None;
        }
        let debt = (-self.tokens) as u128;
        let wait = debt * 1_000_000_000 / u128::from(self.rate);
        Some(now + Duration::from_nanos(wait.min(u128::from(u64::MAX)) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_the_long_run_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, start);
        let mut now = start;
        let mut sent = 0u64;
        // Send 1468-byte packets as fast as the bucket allows for 2 simulated seconds.
        while now < start + Duration::from_secs(2) {
            if let Some(at) = bucket.take(now, 1468) {
                now = at;
            }
            sent += 1468;
        }
        // 2 s at 1 MB/s plus the initial burst.
        let expected = 2_000_000 + 65_536;
        assert!(sent.abs_diff(expected) < 3000, "sent {sent}");
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000_000, start);
        assert_eq!(
            bucket.take(start, 1_000_000),
            Some(start + Duration::from_micros(50_000))
        );
        let later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(later, 500_000), None);
        assert!(
            bucket.take(later, 1).is_some(),
            "burst is 500 kB, not a minute's worth"
        );
    }
}
