//! The pacer: one sending rate shared by all transfers of a server, changeable while it runs
//! (the alternate sets it from the capacity it learns). Sans-IO: time in, "send now" or "wait
//! until" out.
//!
//! A token bucket that may go into debt: a batch takes its bytes at once and may go when the
//! bucket is not in debt after it; otherwise it waits until the debt is paid at the rate. A
//! transfer that has to wait has its bytes taken and sleeps until then, and asks again only for
//! its next batch, behind everyone who asked meanwhile; batches are at most [`Pacer::quantum`]
//! bytes, so backlogged transfers take turns in equal slices (round robin: fair in bytes). The
//! bucket counts bytes, so a new rate applies to the debt already there.
//!
//! ```
//! # use bootherd::tftp::ratelimit::Pacer;
//! # use std::time::{Duration, Instant};
//! let pacer = Pacer::new(Some(1_000_000)); // 1 MB/s
//! let now = Instant::now();
//! assert_eq!(pacer.reserve(now, 10_000), None); // within the burst allowance: send now
//! pacer.set_rate(None); // unpaced from now on
//! assert_eq!(pacer.reserve(now, 100_000_000), None);
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What may go out at once beyond the rate: 5 ms of traffic, at least this many bytes.
const MIN_BURST: u64 = 64 * 1024;
/// Longest a batch should take at the rate: transfers waiting on the pacer alternate at about
/// this interval.
const TURN: Duration = Duration::from_millis(1);
/// Largest batch the server sends (one system call, see `net::MAX_BATCH_BYTES`).
const MAX_QUANTUM: usize = 65_507;

/// A server-wide sending rate, shared (`Arc`) by the server's transfers and whoever sets it.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes per second; `None`: unpaced.
    rate: Option<u64>,
    /// Bytes that may go now; negative: the debt of batches waiting for their turn.
    tokens: i128,
    /// When `tokens` was last brought up to date; `None`: the bucket is full.
    updated: Option<Instant>,
    /// Sends held back so far: the union of the waits, and where its last one ends.
    held: Duration,
    held_until: Option<Instant>,
}

impl Pacer {
    /// A pacer at `rate` bytes per second, or unpaced (`None`).
    pub fn new(rate: Option<u64>) -> Self {
        Pacer {
            state: Mutex::new(State {
                rate: rate.map(|r| r.max(1)),
                ..State::default()
            }),
        }
    }

    /// Changes the rate (bytes per second; `None`: unpaced), for batches asked for from now on.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut state = self.lock();
        state.rate = rate.map(|r| r.max(1));
        if state.rate.is_none() {
            state.updated = None;
        }
    }

    /// The current rate.
    pub fn rate(&self) -> Option<u64> {
        self.lock().rate
    }

    /// Most bytes a transfer should put in one batch: about a millisecond at the rate (at
    /// least one datagram), so that waiting transfers take turns; `None` when unpaced.
    pub fn quantum(&self) -> Option<usize> {
        let rate = self.lock().rate?;
        let bytes = u128::from(rate) * TURN.as_nanos() / 1_000_000_000;
        Some((bytes as usize).min(MAX_QUANTUM))
    }

    /// Reserves `bytes` at `now`: `None` to send them now, or the instant to send them at.
    /// They are reserved either way: send them then without asking again.
    pub fn reserve(&self, now: Instant, bytes: usize) -> Option<Instant> {
        let mut state = self.lock();
        let rate = state.rate?;
        let burst = i128::from((rate / 200).max(MIN_BURST));
        state.tokens = match state.updated {
            None => burst,
            Some(updated) => {
                let refill = now.saturating_duration_since(updated).as_nanos() * u128::from(rate)
                    / 1_000_000_000;
                (state.tokens + refill.min(u64::MAX.into()) as i128).min(burst)
            }
        };
        state.updated = Some(state.updated.map_or(now, |u| u.max(now)));
        state.tokens -= bytes as i128;
        if state.tokens >= 0 {
            return None;
        }
        let start = now
            + nanos(
                state.tokens.unsigned_abs().min(u64::MAX.into()) as u64,
                rate,
            );
        // Count the wait once, however many transfers wait at the same time.
        let from = state.held_until.map_or(now, |h| h.max(now));
        state.held += start.saturating_duration_since(from);
        state.held_until = Some(start);
        Some(start)
    }

    /// Time during which sends were held back, since the pacer was made: the wall-clock time in
    /// which at least one transfer waited for its turn, counted when the wait is decided.
    pub fn held(&self) -> Duration {
        self.lock().held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is one assignment of plain values: consistent even after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Time to send `bytes` at `rate` bytes per second.
fn nanos(bytes: u64, rate: u64) -> Duration {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `senders` transfers that always have data, each sending a quantum whenever the pacer
    /// lets it and asking for the next right after, on a fake clock; returns the bytes each
    /// sent in `span`.
    fn backlogged(pacer: &Pacer, start: Instant, senders: usize, span: Duration) -> Vec<u64> {
        let mut sent = vec![0u64; senders];
        // When each sender may send its reserved quantum next.
        let mut ready: Vec<Instant> = vec![start; senders];
        let mut reserved = vec![false; senders];
        loop {
            let (i, &at) = ready.iter().enumerate().min_by_key(|(_, at)| **at).unwrap();
            if at >= start + span {
                return sent;
            }
            let quantum = pacer.quantum().unwrap_or(MAX_QUANTUM);
            if reserved[i] {
                sent[i] += quantum as u64;
                reserved[i] = false;
                // Straight on to the next batch.
                ready[i] = at + Duration::from_nanos(1);
                continue;
            }
            match pacer.reserve(at, quantum) {
                None => {
                    sent[i] += quantum as u64;
                    ready[i] = at + Duration::from_nanos(1);
                }
                Some(later) => {
                    reserved[i] = true;
                    ready[i] = later;
                }
            }
        }
    }

    #[test]
    fn caps_the_rate_and_shares_it_equally() {
        let start = Instant::now();
        let pacer = Pacer::new(Some(10_000_000));
        let sent = backlogged(&pacer, start, 3, Duration::from_secs(2));
        let total: u64 = sent.iter().sum();
        // 2 s at 10 MB/s plus the burst allowance, give or take a batch in flight per sender.
        let quantum = pacer.quantum().unwrap() as u64;
        let expected = 20_000_000 + 65_536;
        assert!(
            total.abs_diff(expected) <= 3 * quantum,
            "{total} vs {expected}"
        );
        for s in &sent {
            assert!(s.abs_diff(total / 3) <= 2 * quantum, "unfair: {sent:?}");
        }
        // Backlogged all along: held back almost all the time.
        assert!(
            pacer.held() > Duration::from_millis(1990),
            "{:?}",
            pacer.held()
        );
    }

    #[test]
    fn the_rate_changes_while_running() {
        let start = Instant::now();
        let pacer = Pacer::new(Some(1_000_000));
        let first = backlogged(&pacer, start, 2, Duration::from_secs(1));
        pacer.set_rate(Some(4_000_000));
        let second = backlogged(
            &pacer,
            start + Duration::from_secs(1),
            2,
            Duration::from_secs(1),
        );
        let (a, b): (u64, u64) = (first.iter().sum(), second.iter().sum());
        assert!((1_000_000..1_100_000).contains(&a), "{a}");
        // At the new rate, after what was reserved at the old one.
        assert!((3_800_000..4_100_000).contains(&b), "{b}");
        pacer.set_rate(None);
        assert_eq!(pacer.quantum(), None);
        assert_eq!(
            pacer.reserve(start + Duration::from_secs(2), usize::MAX),
            None
        );
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let pacer = Pacer::new(Some(10_000_000));
        // The burst allowance (64 KiB here) goes at once; 1 MB more waits for the rate.
        assert_eq!(pacer.reserve(start, 65_536), None);
        let at = pacer.reserve(start, 1_000_000).unwrap();
        assert_eq!(at - start, Duration::from_millis(100));
        let later = start + Duration::from_secs(60);
        assert_eq!(pacer.reserve(later, 65_536), None);
        assert!(
            pacer.reserve(later, 1).is_some(),
            "the burst is 64 KiB, not a minute's worth"
        );
        assert_eq!(
            pacer.held(),
            Duration::from_millis(100) + Duration::from_nanos(100)
        );
    }

    #[test]
    fn unpaced_never_holds_back() {
        let pacer = Pacer::new(None);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(pacer.reserve(now, MAX_QUANTUM), None);
        }
        assert_eq!(pacer.held(), Duration::ZERO);
    }
}
